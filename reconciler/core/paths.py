"""Relative-path checks, in one place for the state repo, the sources and the torrent code.

Two strengths, one module: `path_problem` says whether a '/'-separated path stays inside its
root (for paths written by people: spec files, keys, requested names), `check_element` whether a
path element survives a round trip through a torrent unchanged (libtorrent silently drops or
replaces some characters when it loads one, which would move files under a different name).
"""

from __future__ import annotations

# Characters libtorrent drops or replaces with "_" when it loads a torrent (torrent_info.cpp:
# valid_path_character / filter_path_character).
_INVISIBLE = frozenset(
    [0x061C, 0xFEFF, *range(0x200B, 0x2010), *range(0x202A, 0x202F), *range(0x2060, 0x2065),
     *range(0x2066, 0x206A)])
#: libtorrent truncates longer path elements (counted in UTF-8 bytes).
MAX_ELEMENT_BYTES = 240


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def path_problem(path: str, what: str = "path") -> str | None:
    """None if `path` is a clean relative '/'-separated path; else a message saying why not.

    Clean: not empty, no NUL, not absolute, and no '', '.' or '..' segment, so that joining it
    to a root can neither escape the root nor name the root itself.
    """
    if path == "":
        return f"{what} must not be empty"
    if "\0" in path:
        return f"{what} must not contain NUL characters"
    if path.startswith("/"):
        return f"{what} must be relative, not absolute (got '{_clip(path)}')"
    segments = path.split("/")
    if ".." in segments:
        return f"{what} must not contain '..' segments (got '{_clip(path)}')"
    if "" in segments:
        return (f"{what} must not contain empty segments: no '//' and no trailing '/' "
                f"(got '{_clip(path)}')")
    if "." in segments:
        return f"{what} must not contain '.' segments (got '{_clip(path)}')"
    return None


def is_clean_relative(path: str) -> bool:
    """Whether `path_problem` finds nothing wrong with `path`."""
    return path_problem(path) is None


def check_element(element: str, what: str) -> bytes:
    """One torrent path element as UTF-8; ValueError if libtorrent would not read it back unchanged.

    Stricter than `path_problem` (which it implies for one element): also no control or
    invisible characters, no backslash, at most MAX_ELEMENT_BYTES bytes.
    """
    if element in ("", ".", ".."):
        raise ValueError(f"{what}: empty, '.' or '..' path element")
    for ch in element:
        c = ord(ch)
        if c < 32 or c == 0x7F or 0x80 <= c <= 0x9F or ch in "\\/" or c in _INVISIBLE:
            raise ValueError(f"{what}: path element {element!r} contains character U+{c:04X}, "
                             "which libtorrent would drop or replace")
    try:
        raw = element.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what}: path element {element!r} is not valid Unicode") from None
    if len(raw) > MAX_ELEMENT_BYTES:
        raise ValueError(f"{what}: path element longer than {MAX_ELEMENT_BYTES} bytes")
    return raw


def check_raw_element(raw: bytes, what: str) -> str:
    """A path element read from a torrent (bytes): valid UTF-8 and `check_element`-clean."""
    try:
        element = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{what}: path element {raw!r} is not valid UTF-8") from None
    check_element(element, what)
    return element


def split_torrent_path(path: str) -> tuple[bytes, ...]:
    """A relative '/'-separated path as the UTF-8 elements a torrent stores; ValueError if unsafe."""
    if not isinstance(path, str):
        raise ValueError(f"file path must be a str, got {type(path).__name__}")
    if path.startswith("/"):
        raise ValueError(f"{path!r}: absolute path; paths are relative to the torrent's top dir")
    return tuple(check_element(e, repr(path)) for e in path.split("/"))
