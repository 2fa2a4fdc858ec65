"""The corpus side of preprocessing: which files, which byte ranges, their hash, and whether the vocab fits.

The corpus (a file, a directory of ``*.txt`` or a list of files, read as one stream) is cut into
:class:`ByteRange` s that end at line boundaries and never cross files; each is tokenized on its own by a
worker (``shards.py``), so the output does not depend on how the corpus is cut.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import BinaryIO, Sequence

from miniroberta.data.dataset import UNK_WARN_RATE
from miniroberta.data.paths import default_vocab_path
from miniroberta.utils import log


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``[start, end)`` of corpus file ``path`` (number ``file_index``), the ``index``-th range of the
    corpus; ``start`` and ``end`` sit at line boundaries."""
    index: int
    file_index: int
    path: str
    start: int
    end: int


def resolve_corpus(corpus_path: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """A file, a directory (all ``*.txt`` in sorted order) or a list of files -> list of files."""
    if isinstance(corpus_path, (str, os.PathLike)):
        p = os.fspath(corpus_path)
        if os.path.isdir(p):
            files = sorted(os.path.join(p, n) for n in os.listdir(p)
                           if n.endswith(".txt") and os.path.isfile(os.path.join(p, n)))
            if not files:
                raise ValueError(f"{p}: the corpus directory holds no *.txt files (one document per line)")
        else:
            files = [p]
    else:
        files = [os.fspath(f) for f in corpus_path]
        if not files:
            raise ValueError("the corpus file list is empty; pass at least one corpus file")
    for f in files:
        if not os.path.isfile(f):
            raise FileNotFoundError(f"corpus file {f!r} does not exist (pass --corpus_path with a text file, "
                                    f"one document per line, or a directory of *.txt files)")
    return files


def _find_newline_after(f: BinaryIO, pos: int, size: int, block: int = 1 << 16) -> int:
    """Offset just past the first newline at or after ``pos`` (``size`` if there is none)."""
    f.seek(pos)
    while pos < size:
        b = f.read(block)
        if not b:
            break
        k = b.find(b"\n")
        if k >= 0:
            return pos + k + 1
        pos += len(b)
    return size


def _find_newline_before(f: BinaryIO, limit: int, block: int = 1 << 16) -> int:
    """Offset just past the last newline in ``[0, limit)`` (0 if there is none)."""
    end = limit
    while end > 0:
        start = max(0, end - block)
        f.seek(start)
        b = f.read(end - start)
        k = b.rfind(b"\n")
        if k >= 0:
            return start + k + 1
        end = start
    return 0


def bytes_used(files: list[str], max_bytes: int | None) -> list[int]:
    """Bytes used of each file: all of them, or the first ``max_bytes`` of the corpus cut at a line end."""
    sizes = [os.path.getsize(f) for f in files]
    budget = sum(sizes) if max_bytes is None else int(max_bytes)
    used: list[int] = []
    for f, size in zip(files, sizes):
        if budget <= 0:
            used.append(0)
            continue
        if size <= budget:
            u = size
        else:
            with open(f, "rb") as fh:
                u = _find_newline_before(fh, budget)
        used.append(u)
        budget -= u
        if u < size:
            budget = 0                                   # the slice ends inside this file
    return used


def plan_ranges(files: list[str], processes_num: int, max_bytes: int | None,
                range_bytes: int | None = None) -> tuple[list[ByteRange], list[int]]:
    """Byte ranges ending at line boundaries (about ``range_bytes`` each; default: 8 per process, 256 KiB
    to 4 MiB); returns the ranges and the bytes used of each file."""
    used = bytes_used(files, max_bytes)
    total = sum(used)
    if range_bytes is None:
        range_bytes = min(4 << 20, max(256 << 10, total // max(1, 8 * processes_num)))
    ranges: list[ByteRange] = []
    for fi, (f, u) in enumerate(zip(files, used)):
        if u == 0:
            continue
        with open(f, "rb") as fh:
            pos = 0
            while pos < u:
                end = u if pos + range_bytes >= u else min(u, _find_newline_after(fh, pos + range_bytes - 1, u))
                ranges.append(ByteRange(len(ranges), fi, f, pos, end))
                pos = end
    return ranges, used


# the old names (bench/bench_preprocess.py imports plan_tasks)
plan_tasks = plan_ranges


def hash_corpus(files: list[str], used: list[int], out: dict[str, str]) -> None:
    """SHA-256 of the bytes used, into ``out["sha256"]`` (run in a thread beside the workers)."""
    h = hashlib.sha256()
    for f, u in zip(files, used):
        left = u
        with open(f, "rb") as fh:
            while left > 0:
                b = fh.read(min(left, 1 << 20))
                if not b:
                    break
                h.update(b)
                left -= len(b)
    out["sha256"] = h.hexdigest()


def _cjk_share(files: list[str], sample_bytes: int = 1 << 16) -> float:
    """Share of CJK ideographs among the non-space characters of the corpus's first bytes."""
    text = ""
    for f in files[:3]:
        with open(f, "rb") as fh:
            text += fh.read(sample_bytes).decode("utf-8", "replace")
    chars = [c for c in text if not c.isspace()]
    if not chars:
        return 0.0
    return sum(1 for c in chars if "\u4e00" <= c <= "\u9fff" or "\u3400" <= c <= "\u4dbf") / len(chars)


def suggest_vocab(files: list[str], vocab_path: str) -> str:
    """A hint naming the vocab that fits the corpus (the shared Chinese BERT vocab for Chinese text)."""
    if _cjk_share(files) > 0.3:
        zh = str(default_vocab_path())
        if os.path.isfile(zh) and os.path.abspath(zh) != os.path.abspath(vocab_path):
            return f"the corpus is Chinese: use a Chinese BERT vocab, e.g. --vocab_path {zh}"
        return "the corpus is Chinese: use a Chinese BERT vocab (e.g. google_zh_vocab.txt, 21,128 tokens)"
    return "use the vocab the model was (or will be) trained with, one that covers the corpus's script"


def warn_unk_rate(rate: float, unk: int, num_tokens: int, vocab_path: str, files: list[str]) -> bool:
    """Warn when more than ``UNK_WARN_RATE`` of the tokens are [UNK]: the vocab does not fit the corpus."""
    if rate <= UNK_WARN_RATE:
        return False
    log(f"warning: {100 * rate:.1f}% of the {num_tokens:,} tokens are [UNK] ({unk:,}): the vocab {vocab_path} "
        f"does not fit this corpus; a model trained on it learns mostly [UNK]. {suggest_vocab(files, vocab_path)}, "
        f"and re-run with --overwrite")
    return True


__all__ = ["ByteRange", "resolve_corpus", "bytes_used", "plan_ranges", "plan_tasks", "hash_corpus",
           "suggest_vocab", "warn_unk_rate", "UNK_WARN_RATE"]
