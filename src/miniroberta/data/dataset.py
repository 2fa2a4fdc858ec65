"""The on-disk MLM dataset: a directory of memory-mapped numpy arrays plus a JSON manifest.

Layout of ``<dataset_path>/`` (the ``--dataset_path`` name is kept, e.g. ``x_seq128_dataset.pt``)::

    manifest.json     format, format_version, tool_version, vocab_sha256, vocab_size, seq_length,
                      processor, full_sentences, dynamic_masking, dup_factor, whole_word_masking,
                      span_masking, span_geo_prob, span_max_length, seed, counts
                      (num_documents, num_instances, num_tokens, continuation_windows, unk_tokens),
                      corpus {path, sha256, size}, dtype, created
    tokens.npy        1-D uint16 (uint32 if the vocab has > 65535 entries): every instance's ids,
                      unpadded, concatenated in instance order
    offsets.npy       1-D int64, num_instances + 1 entries: instance i = tokens[offsets[i]:offsets[i+1]]
    word_starts.npy   (only with whole-word masking) 1-D uint8 aligned with tokens.npy:
                      1 where a token starts a (jieba) word, 0 where it continues one

Padding is applied at batch time, never stored. Training opens the arrays with ``mmap_mode='r'``
and never loads the dataset into memory. A directory is complete only once ``manifest.json``
exists; writers build it under a temporary name and rename it into place.
"""
from __future__ import annotations

import datetime
import json
import os
from typing import Any, Sequence

import numpy as np

from miniroberta import __version__
from miniroberta.utils import atomic_dir, sha256_bytes

FORMAT = "miniroberta-mlm-dataset"
FORMAT_VERSION = 1


UNK_WARN_RATE = 0.05


class DatasetError(ValueError):
    """A dataset directory that is missing, incomplete or does not fit the run."""


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 65536 else np.dtype(np.uint32)


def manifest_hash(manifest: dict[str, Any]) -> str:
    """Identity of a dataset's *content* (what resume checks), independent of where it lives."""
    keys = ("format_version", "vocab_sha256", "seq_length", "processor", "full_sentences", "num_instances",
            "num_tokens", "corpus_sha256", "whole_word_masking", "span_masking", "dynamic_masking", "dup_factor")
    d = {k: manifest.get(k) for k in keys}
    d["corpus_sha256"] = (manifest.get("corpus") or {}).get("sha256")
    return sha256_bytes(json.dumps(d, sort_keys=True).encode())


class MlmDataset:
    """Read-only, memory-mapped view of a preprocessed dataset."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        mpath = os.path.join(self.path, "manifest.json")
        if not os.path.isdir(self.path):
            raise DatasetError(f"{self.path}: no such dataset directory (run `miniroberta preprocess` first)")
        if not os.path.isfile(mpath):
            raise DatasetError(f"{self.path}: incomplete dataset (no manifest.json); re-run `miniroberta preprocess`")
        try:
            with open(mpath, encoding="utf-8") as f:
                self.manifest: dict[str, Any] = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise DatasetError(f"{mpath}: unreadable manifest ({e})") from None
        if self.manifest.get("format") != FORMAT:
            raise DatasetError(f"{mpath}: not a miniroberta dataset (format {self.manifest.get('format')!r})")
        if int(self.manifest.get("format_version", -1)) > FORMAT_VERSION:
            raise DatasetError(f"{mpath}: format_version {self.manifest['format_version']} is newer than this "
                               f"miniroberta understands ({FORMAT_VERSION}); upgrade miniroberta")
        try:
            self.tokens = np.load(os.path.join(self.path, "tokens.npy"), mmap_mode="r")
            self.offsets = np.load(os.path.join(self.path, "offsets.npy"), mmap_mode="r")
        except (OSError, ValueError) as e:
            raise DatasetError(f"{self.path}: cannot open tokens.npy/offsets.npy ({e}); re-run preprocess") from None
        ws = os.path.join(self.path, "word_starts.npy")
        self.word_starts = np.load(ws, mmap_mode="r") if os.path.isfile(ws) else None
        n = int(self.manifest["num_instances"])
        if len(self.offsets) != n + 1 or int(self.offsets[-1]) != len(self.tokens) \
                or len(self.tokens) != int(self.manifest["num_tokens"]):
            raise DatasetError(f"{self.path}: arrays do not match the manifest (instances {len(self.offsets) - 1} vs "
                               f"{n}, tokens {len(self.tokens)} vs {self.manifest['num_tokens']}); the dataset is "
                               f"corrupt -- re-run preprocess with --overwrite")
        if self.word_starts is not None and len(self.word_starts) != len(self.tokens):
            raise DatasetError(f"{self.path}: word_starts.npy length {len(self.word_starts)} != tokens {len(self.tokens)}")
        self.check_ranges()
        self.warnings = self.check_degenerate()

    # --------------------------------------------------------------- checks
    def check_ranges(self) -> None:
        """Token ids in ``[0, vocab_size)`` and offsets that start at 0, never decrease and cut instances
        of 1..seq_length tokens -- vectorised over the memory map (one pass, no copy of the dataset)."""
        V = int(self.manifest.get("vocab_size") or 0)
        tok_file = os.path.join(self.path, "tokens.npy")
        off_file = os.path.join(self.path, "offsets.npy")
        if len(self.tokens) and V > 0:
            hi = int(self.tokens.max())
            if hi >= V or (self.tokens.dtype.kind == "i" and int(self.tokens.min()) < 0):
                bad = np.flatnonzero((np.asarray(self.tokens) >= V) | (np.asarray(self.tokens) < 0))
                i = int(bad[0])
                raise DatasetError(f"{tok_file}: {len(bad):,} token id(s) outside the vocab [0, {V}), the first "
                                   f"{int(self.tokens[i])} at position {i:,} (instance "
                                   f"{int(np.searchsorted(self.offsets, i, side='right')) - 1:,}); the dataset is "
                                   f"corrupt or was built with another vocab -- re-run preprocess with --overwrite")
        off = np.asarray(self.offsets)
        if len(off) and int(off[0]) != 0:
            raise DatasetError(f"{off_file}: the first offset is {int(off[0])}, not 0; the dataset is corrupt -- "
                               f"re-run preprocess with --overwrite")
        lens = np.diff(off)
        if len(lens):
            S = int(self.manifest.get("seq_length") or 0)
            bad = np.flatnonzero((lens < 1) | ((lens > S) if S > 0 else False))
            if len(bad):
                i = int(bad[0])
                raise DatasetError(f"{off_file}: instance {i:,} has {int(lens[i])} tokens (offsets {int(off[i])} -> "
                                   f"{int(off[i + 1])}); every instance must hold 1..{S} (seq_length); the dataset "
                                   f"is corrupt -- re-run preprocess with --overwrite")

    def check_degenerate(self, sample: int = 1 << 20) -> list[str]:
        """Warnings (also logged) for data a model cannot learn from: one id everywhere (e.g. all zeros
        -- the loss drops to 0 and means nothing), or a high [UNK] rate (the vocab does not fit the
        corpus). Looks at an evenly strided sample of at most ``sample`` tokens."""
        from miniroberta.utils import log
        out: list[str] = []
        n = len(self.tokens)
        if n == 0:
            return out
        step = max(1, n // sample)
        ids = np.asarray(self.tokens[::step], dtype=np.int64)
        counts = np.bincount(ids)
        top = int(counts.argmax())
        share = counts[top] / len(ids)
        if share >= 0.9:
            out.append(f"{self.path}: {100 * share:.1f}% of the tokens are id {top} -- degenerate data (a model "
                       f"trained on it learns nothing useful and its loss means nothing); check the corpus and "
                       f"re-run preprocess")
        unk = self.manifest.get("unk_tokens")
        if isinstance(unk, (int, float)) and n and unk / n > UNK_WARN_RATE:
            out.append(f"{self.path}: {100 * unk / n:.1f}% of the tokens are [UNK] -- the vocab does not fit the "
                       f"corpus; preprocess again with the right --vocab_path")
        for w in out:
            log(f"warning: {w}")
        return out

    # --------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def seq_length(self) -> int:
        return int(self.manifest["seq_length"])

    @property
    def vocab_sha256(self) -> str:
        return self.manifest["vocab_sha256"]

    @property
    def content_hash(self) -> str:
        return manifest_hash(self.manifest)

    def __getitem__(self, i: int) -> np.ndarray:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return np.asarray(self.tokens[a:b], dtype=np.int64)

    def word_start_flags(self, i: int) -> np.ndarray | None:
        if self.word_starts is None:
            return None
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return np.asarray(self.word_starts[a:b], dtype=bool)

    def lengths(self) -> np.ndarray:
        return np.diff(np.asarray(self.offsets))

    def check_vocab(self, vocab_sha256: str, vocab_path: str = "") -> None:
        if vocab_sha256 != self.vocab_sha256:
            raise DatasetError(f"{self.path} was built with a different vocab (sha256 {self.vocab_sha256[:12]}…) "
                               f"than {vocab_path or 'the one given'} ({vocab_sha256[:12]}…); pass the same "
                               f"--vocab_path as preprocess, or re-run preprocess")


def write_dataset(path: str | os.PathLike, instances: Sequence[Sequence[int]], manifest: dict[str, Any],
                  word_starts: Sequence[Sequence[int]] | None = None, overwrite: bool = False) -> str:
    """Write a small dataset from in-memory instances (tests, tools). ``manifest`` supplies at least
    ``vocab_sha256``, ``vocab_size`` and ``seq_length``; counts and format fields are filled in."""
    vocab_size = int(manifest["vocab_size"])
    dt = token_dtype(vocab_size)
    lengths = np.array([len(x) for x in instances], dtype=np.int64)
    offsets = np.zeros(len(instances) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = np.fromiter((t for x in instances for t in x), dtype=np.int64, count=int(offsets[-1]))
    if len(tokens) and (tokens.min() < 0 or tokens.max() >= vocab_size):
        raise DatasetError(f"{os.fspath(path)}: token ids outside [0, {vocab_size}) (min {int(tokens.min())}, "
                           f"max {int(tokens.max())}); pass ids of the vocab the manifest names")
    m = default_manifest(**manifest)
    m.update(num_instances=len(instances), num_tokens=int(offsets[-1]), dtype=dt.name,
             whole_word_masking=bool(word_starts is not None) or bool(m.get("whole_word_masking")))
    with atomic_dir(path, overwrite=overwrite) as tmp:
        np.save(os.path.join(tmp, "tokens.npy"), tokens.astype(dt))
        np.save(os.path.join(tmp, "offsets.npy"), offsets)
        if word_starts is not None:
            ws = np.fromiter((int(t) for x in word_starts for t in x), dtype=np.uint8, count=int(offsets[-1]))
            np.save(os.path.join(tmp, "word_starts.npy"), ws)
        with open(os.path.join(tmp, "manifest.json"), "w", encoding="utf-8") as f:
            json.dump(m, f, indent=2, ensure_ascii=False, sort_keys=True)
    return os.fspath(path)


def default_manifest(**kw: Any) -> dict[str, Any]:
    m: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tool_version": __version__,
        "processor": "mlm",
        "full_sentences": False,
        "dynamic_masking": True,
        "dup_factor": 1,
        "whole_word_masking": False,
        "span_masking": False,
        "span_geo_prob": 0.2,
        "span_max_length": 10,
        "seed": 7,
        "num_documents": None,
        "continuation_windows": None,
        "corpus": None,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    m.update(kw)
    return m


__all__ = ["MlmDataset", "write_dataset", "default_manifest", "DatasetError", "token_dtype", "manifest_hash",
           "FORMAT", "FORMAT_VERSION"]
