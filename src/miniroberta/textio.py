"""Reading one-text-per-line ``--input`` files with errors that name ``file:line``.

``read_text_lines(path)`` returns ``(line number, text)`` pairs, so that a later error about a text can
name the line it came from (``texts.py:4``), not its position among the kept texts. A line that is not
UTF-8 is an ``InputError`` naming the file, the line and the byte.
"""
from __future__ import annotations

import os


class InputError(ValueError):
    """An input file that cannot be read, naming ``file:line`` and the fix."""


def read_text_lines(path: str | os.PathLike, keep_blank: bool = False) -> list[tuple[int, str]]:
    """(1-based line number, text) of every line of ``path`` (UTF-8, an optional BOM, ``\\n`` or
    ``\\r\\n`` endings). Blank lines are dropped unless ``keep_blank`` (then they are empty texts, so
    row i of an output is line i of the input)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"--input {path}: no such file")
    out: list[tuple[int, str]] = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(f"{path}:{lineno}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column "
                                 f"{e.start + 1}); convert the file to UTF-8, e.g. `iconv -f GB18030 -t UTF-8`") from None
            line = line.rstrip("\r\n")
            if line.strip() or keep_blank:
                out.append((lineno, line))
    return out


def where(path: str, numbered: list[tuple[int, str]], index: int) -> str:
    """``file:line`` of the ``index``-th kept text (for error messages about that text)."""
    return f"{path}:{numbered[index][0]}"


__all__ = ["read_text_lines", "where", "InputError"]
