"""The daemon's log lines end to end: JSON lines (stderr is not a TTY) that all carry `node`,
and no credential in any of them, even when an origin that was given one fails and its error
is logged: an `Authorization: Bearer ${TOKEN}` header, URL userinfo, a signed URL's query."""

from __future__ import annotations

import json

from harness import NodeHome, StateRepo, nodes_yaml, pseudo_random, until, write_data
from origin_server import OriginServer

TOKEN = "planted-Tok3n-4f1d9c2b7e"
PASSWORD = "Us3rPassw0rd-91ab"
SIGNATURE = "S1gnatureS3cret0a9f"
AWS_KEY = "AKIAQWERTYUIOPASDFGH"
SECRETS = (TOKEN, PASSWORD, SIGNATURE, AWS_KEY)


def test_daemon_logs_json_with_node_and_never_a_credential(tmp_path, daemons) -> None:
    server = OriginServer(write_data(tmp_path / "origin", {"a.bin": pseudo_random(1 << 16, "l")}),
                          token="the-right-token-is-something-else").start()
    try:
        host = server.url.removeprefix("http://")
        signed = (f"http://{host}/a.bin?X-Amz-Algorithm=AWS4-HMAC-SHA256"
                  f"&X-Amz-Credential={AWS_KEY}%2F20240101&X-Amz-Signature={SIGNATURE}")
        userinfo = f"http://alice:{PASSWORD}@{host}/a.bin"
        repo = StateRepo.create(tmp_path / "state")
        repo.write("nodes.yaml", nodes_yaml(["l1"], first_ip=221))
        repo.write("ds.yaml", f"""\
            apiVersion: syncbit/v1
            kind: Dataset
            metadata:
              name: secretive
            spec:
              version: v1
              source:
                http:
                  urls: ["{signed}"]
                  headers: {{Authorization: "Bearer ${{ORIGIN_TOKEN}}"}}
              placement: {{all: true}}
              path: secretive
            ---
            apiVersion: syncbit/v1
            kind: Dataset
            metadata:
              name: userinfo
            spec:
              version: v1
              source:
                http:
                  urls: ["{userinfo}"]
              placement: {{all: true}}
              path: userinfo
            """)
        repo.commit("an origin that refuses our credentials")
        home = NodeHome("l1", tmp_path / "l1", repo.root).write_config()
        d = daemons(home, env={"ORIGIN_TOKEN": TOKEN}, level="debug")

        def failed_and_logged() -> bool:
            assert d.proc.poll() is None, d.logs()
            failed = {json.loads(line).get("dataset") for line in d.logs().splitlines()
                      if line.startswith("{") and json.loads(line).get("level") == "error"}
            return {"secretive", "userinfo"} <= failed
        until(failed_and_logged, 60, "the origin's failure logged")
        assert d.stop() == 0
        text = d.logs()
        for s in SECRETS:
            assert s not in text, f"{s} in the daemon's log:\n{text}"
        lines = [json.loads(line) for line in text.splitlines() if line.strip()]
        assert lines and all(e.get("node") == "l1" for e in lines), [
            e for e in lines if e.get("node") != "l1"][:3]
        assert all({"event", "level", "timestamp"} <= e.keys() for e in lines)
        assert any(e.get("event") == "daemon starting" for e in lines)
        # the status file and the metrics file do not carry them either
        for f in (home.status_file, home.state_dir / "syncbit.prom"):
            if f.exists():
                body = f.read_text()
                assert not any(s in body for s in SECRETS), f
    finally:
        server.stop()
