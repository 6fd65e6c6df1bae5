"""core.paths: one definition of a safe relative path and of a torrent-safe path element."""

from __future__ import annotations

import pytest

from reconciler.core.paths import (
    MAX_ELEMENT_BYTES,
    check_element,
    check_raw_element,
    is_clean_relative,
    path_problem,
    split_torrent_path,
)


@pytest.mark.parametrize("path", ["a", "a/b.txt", "é/ü", "a..b", ".hidden"])
def test_clean_paths(path: str) -> None:
    assert path_problem(path) is None and is_clean_relative(path)


@pytest.mark.parametrize("path, words", [
    ("", "must not be empty"), ("a\0b", "NUL"), ("/etc/passwd", "relative, not absolute"),
    ("a/../b", "'..' segments"), ("a//b", "empty segments"), ("a/", "empty segments"),
    ("./a", "'.' segments"),
])
def test_unclean_paths(path: str, words: str) -> None:
    problem = path_problem(path, "key")
    assert problem is not None and problem.startswith("key must") and words in problem
    assert not is_clean_relative(path)


def test_long_paths_are_clipped_in_messages() -> None:
    problem = path_problem("/" + "x" * 500)
    assert problem is not None and len(problem) < 200 and problem.endswith("...')")


@pytest.mark.parametrize("element", ["", ".", "..", "a/b", "a\\b", "a\x00", "\x7f", "\x85",
                                     "a\u200bb", "\ufeff", "x" * (MAX_ELEMENT_BYTES + 1), "\ud800"])
def test_torrent_unsafe_elements(element: str) -> None:
    with pytest.raises(ValueError, match="what"):
        check_element(element, "what")


def test_torrent_safe_elements() -> None:
    assert check_element("é", "w") == "é".encode()
    assert check_element("x" * MAX_ELEMENT_BYTES, "w") == b"x" * MAX_ELEMENT_BYTES
    assert check_raw_element("日本".encode(), "w") == "日本"
    with pytest.raises(ValueError, match="UTF-8"):
        check_raw_element(b"\xff", "w")


def test_split_torrent_path() -> None:
    assert split_torrent_path("a/é") == (b"a", "é".encode())
    for bad in ("/a", "a//b", "a/../b", 3):
        with pytest.raises(ValueError):
            split_torrent_path(bad)  # type: ignore[arg-type]
