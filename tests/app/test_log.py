"""reconciler.app.log: the structlog pipeline the CLI configures, rendering real events to
stderr: JSON lines off a TTY, `node` on every event (threads included), and the redaction
processor as the last guard against credentials anywhere in an event."""

from __future__ import annotations

import json
import threading

import pytest
import structlog

from reconciler.app import log as logging_setup
from reconciler.app.log import REDACTED, Redactor, redact_text

TOKEN = "planted-Tok3n-4f1d9c2b7e"


@pytest.fixture
def events(capsys, monkeypatch):
    monkeypatch.setenv("ORIGIN_TOKEN", TOKEN)
    logging_setup.configure(json=True, level="debug", node="gpu-07")
    yield lambda: [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    logging_setup.set_node(None)
    structlog.contextvars.clear_contextvars()


def test_json_lines_carry_node_also_from_threads(events) -> None:
    log = structlog.get_logger("t")
    log.info("in the main thread", dataset="llama", version="v2", revision="a" * 40)
    t = threading.Thread(target=lambda: log.warning("in a thread", dataset="llama"))
    t.start()
    t.join()
    main, thread = events()
    assert main["node"] == thread["node"] == "gpu-07"
    assert main["dataset"] == "llama" and main["version"] == "v2"
    assert main["revision"] == "a" * 40 and main["level"] == "info" and "timestamp" in main


def test_a_token_planted_in_an_error_message_never_reaches_the_output(events) -> None:
    log = structlog.get_logger("t")
    err = RuntimeError(f"GET http://o.example/a.bin with Authorization: Bearer {TOKEN} -> 500")
    log.error("origin read failed", dataset="llama", error=str(err))
    try:
        raise err
    except RuntimeError:
        log.exception("with a traceback", dataset="llama")
    log.warning("headers", headers={"Authorization": f"Bearer {TOKEN}", "Accept": "*/*"},
                nested=[{"url": f"https://u:{TOKEN}@h.example/x"}], exc=err)
    log.info(f"an event text with {TOKEN} in it", token=TOKEN, password="hunter2hunter2")
    out = events()
    assert len(out) == 4
    text = json.dumps(out)
    assert TOKEN not in text and "hunter2" not in text
    # a header value runs to the end of the line or quote: all of it goes
    assert out[0]["error"] == f"GET http://o.example/a.bin with Authorization: {REDACTED}"
    assert TOKEN not in out[1]["exception"] and "RuntimeError" in out[1]["exception"]
    assert out[2]["headers"] == {"Authorization": REDACTED, "Accept": "*/*"}
    assert out[2]["nested"] == [{"url": f"https://{REDACTED}@h.example/x"}]
    assert out[3]["token"] == REDACTED and out[3]["password"] == REDACTED


@pytest.mark.parametrize("raw, redacted", [
    ("https://user:pa55word@s3.example/b/k", f"https://{REDACTED}@s3.example/b/k"),
    ("https://b.s3.example/k?X-Amz-Algorithm=AWS4&X-Amz-Signature=abcdef0123&part=2",
     f"https://b.s3.example/k?X-Amz-Algorithm={REDACTED}&X-Amz-Signature={REDACTED}&part=2"),
    ("https://h.example/f?sig=xyz&se=2024&token=abc", f"https://h.example/f?sig={REDACTED}"
     f"&se={REDACTED}&token={REDACTED}"),
    ("proxy said Proxy-Authorization: Basic dXNlcjpwYXNzd29yZA==",
     f"proxy said Proxy-Authorization: {REDACTED}"),
    ("Cookie: session=abc; other=1", f"Cookie: {REDACTED}"),
    ("key hf_abcdefghijklmnopqrstuvwxyz0123 used", f"key {REDACTED} used"),
    ("aws AKIAABCDEFGHIJKLMNOP denied", f"aws {REDACTED} denied"),
    # ordinary words stay: no false alarms on what operators need to read
    ("the token was rejected; HF_TOKEN is not set; basic auth", None),
    ("http://127.0.0.1:8080/a.bin: 401 Unauthorized", None),
])
def test_redact_text(raw: str, redacted: str | None) -> None:
    assert redact_text(raw) == (raw if redacted is None else redacted)


def test_secrets_from_the_environment_are_redacted_wherever_they_appear() -> None:
    r = Redactor({"ORIGIN_TOKEN": TOKEN, "HOME": "/root", "SHORT_TOKEN": "abc"})
    ev = r(None, "info", {"event": f"x{TOKEN}y", "path": "/root/abc"})
    assert ev == {"event": f"x{REDACTED}y", "path": "/root/abc"}


def test_console_lines_on_a_terminal_are_readable_and_redacted(capsys, monkeypatch) -> None:
    monkeypatch.setenv("ORIGIN_TOKEN", TOKEN)
    logging_setup.configure(json=False, level="info", node="gpu-07")
    try:
        structlog.get_logger("t").warning("origin read failed", dataset="llama",
                                          error=f"Authorization: Bearer {TOKEN}")
    finally:
        logging_setup.set_node(None)
    err = capsys.readouterr().err
    assert not err.lstrip().startswith("{") and "origin read failed" in err
    assert "node=gpu-07" in err and "dataset=llama" in err and TOKEN not in err
