"""The worker side of preprocessing: one :class:`ByteRange` of the corpus -> small shard files.

Each range is read, decoded (invalid UTF-8 per ``on_error``), tokenized in batches of about 512 KB of
lines and appended to three shard files in the dataset's temporary folder: token ids (the dataset's
dtype), document lengths (int64) and, with whole-word masking, word-start bits (uint8). Every line is
processed on its own, so the shards' concatenation does not depend on how the corpus was cut or how many
processes ran. Memory is bounded by the range size, never by the corpus size.
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Iterator

import numpy as np

from miniroberta.data.dataset import token_dtype
from miniroberta.data.preprocess.corpus import ByteRange
from miniroberta.data.preprocess.tokenize import CorpusTokenizer, jieba_word_starts, word_start_bits
from miniroberta.modeling.tokenizer import read_vocab

_BATCH_BYTES = 1 << 19       # lines are tokenized and written in batches of about this many bytes
MAX_REPORTED_LINES = 10


@dataclass
class WorkerOptions:
    """Everything a worker needs to turn a byte range of the corpus into shard files."""
    vocab_path: str
    seq_length: int = 128
    full_sentences: bool = False
    whole_word_masking: bool = False
    on_error: str = "fail"
    lowercase: bool = True


@dataclass
class RangeResult:
    """What a worker did with one byte range (summed into the manifest's counts and stats)."""
    index: int
    file_index: int
    bytes: int = 0
    lines: int = 0
    documents: int = 0
    empty_lines: int = 0
    tokens: int = 0
    instances: int = 0
    continuation_windows: int = 0
    unk_tokens: int = 0
    nul_lines: int = 0
    fallback_lines: int = 0
    max_line_bytes: int = 0
    invalid_lines: list[int] = field(default_factory=list)   # 0-based line numbers inside the range
    invalid_count: int = 0
    validated_only: bool = False


class AlwaysSet:
    """A stop event that is always set (one process: after a bad line, the rest is only validated)."""

    def is_set(self) -> bool:
        return True

    def set(self) -> None:
        pass


# per-process worker state, filled by init_worker
_W: dict[str, Any] = {}


def init_worker(opts: WorkerOptions, tmpdir: str, stop_event: Any, limit_threads: bool) -> None:
    if limit_threads:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        os.environ.setdefault("RAYON_NUM_THREADS", "1")
    vocab = read_vocab(opts.vocab_path)
    _W.update(opts=opts, tmpdir=tmpdir, stop=stop_event, tok=CorpusTokenizer(vocab, lowercase=opts.lowercase),
              cls=vocab["[CLS]"], sep=vocab["[SEP]"], unk=vocab["[UNK]"], dtype=token_dtype(len(vocab)))
    if opts.whole_word_masking:
        import jieba  # noqa: PLC0415 -- optional (jieba): whole-word masking only
        jieba.setLogLevel(logging.WARNING)
        jieba.initialize()


def stop_all() -> None:
    """From now on, ranges are only validated (one process, after a bad line under ``on_error fail``)."""
    _W["stop"] = AlwaysSet()


@contextlib.contextmanager
def in_process(opts: WorkerOptions, tmpdir: str) -> Iterator[None]:
    """Run the worker side in this process for the block (the previous worker state is restored after)."""
    saved = dict(_W)
    init_worker(opts, tmpdir, None, limit_threads=False)
    try:
        yield
    finally:
        _W.clear()
        _W.update(saved)


def shard_paths(tmpdir: str, index: int) -> dict[str, str]:
    base = os.path.join(tmpdir, f"shard-{index:07d}")
    return {"tokens": base + ".tokens", "docs": base + ".docs", "ws": base + ".ws"}


def _decode_lines(raw_lines: list[bytes], res: RangeResult, on_error: str, validate_only: bool) -> list[str | None]:
    """Decode lines; an invalid line is recorded and becomes None (skip/fail) or is decoded with U+FFFD."""
    out: list[str | None] = []
    for i, b in enumerate(raw_lines):
        try:
            out.append(b.decode("utf-8"))
        except UnicodeDecodeError:
            res.invalid_count += 1
            if len(res.invalid_lines) < MAX_REPORTED_LINES:
                res.invalid_lines.append(i)
            out.append(b.decode("utf-8", "replace") if on_error == "replace" and not validate_only else None)
    return out


def _read_lines(r: ByteRange, res: RangeResult, opts: WorkerOptions) -> tuple[list[str | None], list[int]] | None:
    """The decoded lines of ``r`` and their sizes in bytes; None when the range is only validated (another
    range had invalid UTF-8 under ``on_error fail``, or this one has)."""
    with open(r.path, "rb") as f:
        f.seek(r.start)
        data = f.read(r.end - r.start)
    if r.start == 0 and data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]                                       # UTF-8 BOM
    raw_lines = data.split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()                                       # the range ends with a newline
    del data
    res.lines = len(raw_lines)
    stop = _W["stop"]
    validate_only = stop is not None and stop.is_set()
    # fast path: the whole range is valid UTF-8 (the common case)
    try:
        lines: list[str | None] = [b.decode("utf-8") for b in raw_lines] if not validate_only else []
    except UnicodeDecodeError:
        lines = _decode_lines(raw_lines, res, opts.on_error, validate_only)
    if validate_only:
        _decode_lines(raw_lines, res, opts.on_error, True)
        res.validated_only = True
        return None
    if res.invalid_count and opts.on_error == "fail":
        if stop is not None:
            stop.set()                                        # other ranges only validate from now on
        res.validated_only = True
        return None
    res.max_line_bytes = max((len(b) for b in raw_lines), default=0)
    res.nul_lines = sum(1 for b in raw_lines if b"\x00" in b)
    return lines, [len(b) + 1 for b in raw_lines]


def _encode(batch: list[str], res: RangeResult, opts: WorkerOptions) -> tuple[Any, list[int], list[int]]:
    """(``[CLS] ids [SEP]`` of every non-empty line, concatenated; their lengths; word-start bits)."""
    tok: CorpusTokenizer = _W["tok"]
    cls_id, sep_id = _W["cls"], _W["sep"]
    if opts.whole_word_masking:
        buf: list[int] = []
        lens: list[int] = []
        wsbuf: list[int] = []
        for line, (ids, offs, wids) in zip(batch, tok.encode_with_word_ids(batch)):
            if not ids:
                res.empty_lines += 1
                continue
            bits = word_start_bits(line, offs, wids, jieba_word_starts(line))
            buf.extend([cls_id, *ids, sep_id])
            wsbuf.extend([1, *bits, 1])                        # [CLS] and [SEP] are words of their own
            lens.append(len(ids) + 2)
        return buf, lens, wsbuf
    flat, counts = tok.encode_batch(batch)
    res.empty_lines += int(np.count_nonzero(counts == 0))
    doc_lens = counts[counts > 0] + 2
    ends = np.cumsum(doc_lens)
    out = np.empty(int(ends[-1]) if len(ends) else 0, dtype=np.int64)
    body = np.ones(len(out), dtype=bool)
    body[ends - doc_lens] = False
    body[ends - 1] = False
    out[ends - doc_lens] = cls_id
    out[ends - 1] = sep_id
    out[body] = flat
    return out, doc_lens.tolist(), []


def _write_batch(buf: Any, lens: list[int], wsbuf: list[int], res: RangeResult, opts: WorkerOptions,
                 files: tuple[BinaryIO, BinaryIO, BinaryIO | None]) -> None:
    ftok, fdoc, fws = files
    arr = np.array(buf, dtype=_W["dtype"])
    res.unk_tokens += int(np.count_nonzero(arr == _W["unk"]))
    ftok.write(arr.tobytes())
    la = np.array(lens, dtype=np.int64)
    fdoc.write(la.tobytes())
    if fws is not None:
        fws.write(np.array(wsbuf, dtype=np.uint8).tobytes())
    res.documents += len(lens)
    res.tokens += len(arr)
    if not opts.full_sentences and len(la):
        k = (la + opts.seq_length - 1) // opts.seq_length
        res.instances += int(k.sum())
        res.continuation_windows += int((k - 1).sum())


def process_range(r: ByteRange) -> RangeResult:
    """Tokenize one byte range of the corpus and write its shard files (runs in a worker)."""
    opts: WorkerOptions = _W["opts"]
    res = RangeResult(index=r.index, file_index=r.file_index, bytes=r.end - r.start)
    read = _read_lines(r, res, opts)
    if read is None:
        return res
    lines, sizes = read
    tok: CorpusTokenizer = _W["tok"]
    fallbacks0 = tok.fallbacks
    paths = shard_paths(_W["tmpdir"], r.index)
    with open(paths["tokens"], "wb") as ftok, open(paths["docs"], "wb") as fdoc, \
            (open(paths["ws"], "wb") if opts.whole_word_masking else contextlib.nullcontext()) as fws:
        i, n = 0, len(lines)
        while i < n:
            j, nbytes = i, 0
            while j < n and (j == i or nbytes < _BATCH_BYTES):
                nbytes += sizes[j]
                j += 1
            batch = [ln[:-1] if ln and ln.endswith("\r") else ln for ln in lines[i:j] if ln is not None]
            buf, lens, wsbuf = _encode(batch, res, opts)
            _write_batch(buf, lens, wsbuf, res, opts, (ftok, fdoc, fws))
            i = j
    res.fallback_lines = tok.fallbacks - fallbacks0
    return res


__all__ = ["WorkerOptions", "RangeResult", "AlwaysSet", "init_worker", "in_process", "stop_all", "process_range",
           "shard_paths", "MAX_REPORTED_LINES"]
