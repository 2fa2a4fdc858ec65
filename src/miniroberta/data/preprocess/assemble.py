"""The parent side of preprocessing: the workers' shard files -> ``tokens.npy`` / ``offsets.npy`` /
``word_starts.npy``, streamed in corpus order, hashed per 1 MiB chunk as they are written.

The shards are concatenated in range order (the ``.npy`` header first, then 1 MiB copies); offsets are
computed per shard from the document lengths (``mlm``: each document cut into ``seq_length`` windows;
``full_sentences``: the whole stream cut into windows). Every byte written passes through a
``chunks.ChunkHasher``, so the dataset's chunk hashes cost no second pass over the arrays.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from miniroberta.data import chunks
from miniroberta.data.preprocess.shards import RangeResult, shard_paths


@dataclass
class Assembled:
    num_instances: int
    num_tokens: int
    continuation_windows: int
    chunk_hashes: dict[str, Any]     # the manifest's ``chunk_hashes``


def _write_npy_header(f: Any, dtype: np.dtype | type[np.generic], n: int) -> None:
    np.lib.format.write_array_header_1_0(
        f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": (n,)})


def _copy_stream(src: BinaryIO, dst: Any) -> int:
    n = 0
    while True:
        b = src.read(1 << 20)
        if not b:
            return n
        dst.write(b)
        n += len(b)


def _concat_shards(tmp: str, results: list[RangeResult], key: str, out_path: str, dtype: np.dtype,
                   n: int) -> dict[str, Any]:
    """Concatenate the workers' ``key`` shard files, in range order, into one ``.npy`` of ``n`` items;
    returns its chunk-hash entry."""
    with open(out_path, "wb") as f:
        h = chunks.ChunkHasher(f)
        _write_npy_header(h, dtype, n)
        for r in results:
            p = shard_paths(tmp, r.index)[key]
            if os.path.exists(p):
                with open(p, "rb") as src:
                    _copy_stream(src, h)
                os.unlink(p)
    return h.entry()


def _window_lengths(doc_lens: np.ndarray, S: int) -> np.ndarray:
    """Instance lengths of documents cut into consecutive windows of S tokens."""
    k = (doc_lens + S - 1) // S
    out = np.full(int(k.sum()), S, dtype=np.int64)
    last = np.cumsum(k) - 1
    out[last] = doc_lens - (k - 1) * S
    return out


def _doc_lengths(tmp: str, results: list[RangeResult]):
    """The document lengths of each range, in order (from the ``docs`` shards)."""
    for r in results:
        p = shard_paths(tmp, r.index)["docs"]
        if os.path.exists(p):
            yield np.fromfile(p, dtype=np.int64)


def _packed_offsets(tmp: str, results: list[RangeResult], S: int, num_tokens: int) -> tuple[int, int, dict]:
    """``full_sentences``: the stream cut every S tokens. Returns (instances, continuation windows, hashes)."""
    num_instances = (num_tokens + S - 1) // S
    starts_aligned = 0                                 # documents that begin a window
    pos = 0
    for lens in _doc_lengths(tmp, results):
        starts = pos + np.concatenate(([0], np.cumsum(lens)[:-1])) if len(lens) else lens
        starts_aligned += int(np.count_nonzero(starts % S == 0))
        pos += int(lens.sum())
    with open(os.path.join(tmp, "offsets.npy"), "wb") as f:
        h = chunks.ChunkHasher(f)
        _write_npy_header(h, np.int64, num_instances + 1)
        for a in range(0, num_instances + 1, 1 << 20):
            b = min(num_instances + 1, a + (1 << 20))
            h.write(np.minimum(np.arange(a, b, dtype=np.int64) * S, num_tokens))
    return num_instances, num_instances - starts_aligned, h.entry()


def _document_offsets(tmp: str, results: list[RangeResult], S: int, num_tokens: int) -> tuple[int, int, dict]:
    """``mlm``: every document cut into windows of S. Returns (instances, continuation windows, hashes)."""
    num_instances = sum(r.instances for r in results)
    with open(os.path.join(tmp, "offsets.npy"), "wb") as f:
        h = chunks.ChunkHasher(f)
        _write_npy_header(h, np.int64, num_instances + 1)
        h.write(np.zeros(1, dtype=np.int64))
        pos = 0
        for lens in _doc_lengths(tmp, results):
            w = _window_lengths(lens, S)
            h.write(pos + np.cumsum(w))
            pos += int(w.sum())
    if pos != num_tokens:
        raise RuntimeError(f"internal error: the windows hold {pos} tokens, the shards {num_tokens}")
    return num_instances, sum(r.continuation_windows for r in results), h.entry()


def assemble(tmp: str, results: list[RangeResult], dtype: np.dtype, seq_length: int, full_sentences: bool,
             whole_word_masking: bool) -> Assembled:
    """Concatenate the shard files into tokens.npy / offsets.npy / word_starts.npy (streaming), hashing
    them per chunk; the shards are removed."""
    num_tokens = sum(r.tokens for r in results)
    files = {"tokens.npy": _concat_shards(tmp, results, "tokens", os.path.join(tmp, "tokens.npy"), dtype, num_tokens)}
    if whole_word_masking:
        files["word_starts.npy"] = _concat_shards(tmp, results, "ws", os.path.join(tmp, "word_starts.npy"),
                                                  np.dtype(np.uint8), num_tokens)
    offsets = _packed_offsets if full_sentences else _document_offsets
    num_instances, continuation, files["offsets.npy"] = offsets(tmp, results, seq_length, num_tokens)
    for r in results:
        p = shard_paths(tmp, r.index)["docs"]
        if os.path.exists(p):
            os.unlink(p)
    return Assembled(num_instances, num_tokens, continuation, chunks.manifest_entry(files))


__all__ = ["assemble", "Assembled"]
