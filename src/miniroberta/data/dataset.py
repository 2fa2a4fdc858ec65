"""The on-disk MLM dataset: a directory of memory-mapped numpy arrays plus a JSON manifest.

Layout of ``<dataset_path>/`` (the ``--dataset_path`` name is kept, e.g. ``x_seq128_dataset.pt``)::

    manifest.json     format, format_version, tool_version, vocab_sha256, vocab_size, seq_length,
                      processor, full_sentences, dynamic_masking, dup_factor, whole_word_masking,
                      span_masking, span_geo_prob, span_max_length, seed, counts
                      (num_documents, num_instances, num_tokens, continuation_windows, unk_tokens),
                      corpus {path, sha256, size}, dtype, created,
                      chunk_hashes {algorithm, chunk_bytes, files {name: {size, sha256: [per chunk]}}}
                      (see ``chunks.py``: the arrays are verified chunk by chunk as they are read)
    tokens.npy        1-D uint16 (uint32 if the vocab has > 65535 entries): every instance's ids,
                      unpadded, concatenated in instance order
    offsets.npy       1-D int64, num_instances + 1 entries: instance i = tokens[offsets[i]:offsets[i+1]]
    word_starts.npy   (only with whole-word masking) 1-D uint8 aligned with tokens.npy:
                      1 where a token starts a (jieba) word, 0 where it continues one

Padding is applied at batch time, never stored. Training opens the arrays with ``mmap_mode='r'``
and never loads the dataset into memory; each 1 MiB chunk of the arrays is checked against its
SHA-256 the first time it is read. A directory is complete only once ``manifest.json`` exists;
writers build it under a temporary name and rename it into place.
"""
from __future__ import annotations

import datetime
import json
import os
from typing import Any, Sequence

import numpy as np

from miniroberta.version import __version__
from miniroberta.data import chunks
from miniroberta.data.chunks import DatasetError
from miniroberta.utils import atomic_dir, log, sha256_bytes

FORMAT = "miniroberta-mlm-dataset"
FORMAT_VERSION = 1


UNK_WARN_RATE = 0.05


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 65536 else np.dtype(np.uint32)


def manifest_hash(manifest: dict[str, Any]) -> str:
    """Identity of a dataset's *content* (what resume checks), independent of where it lives."""
    keys = ("format_version", "vocab_sha256", "seq_length", "processor", "full_sentences", "num_instances",
            "num_tokens", "corpus_sha256", "whole_word_masking", "span_masking", "dynamic_masking", "dup_factor")
    d = {k: manifest.get(k) for k in keys}
    d["corpus_sha256"] = (manifest.get("corpus") or {}).get("sha256")
    return sha256_bytes(json.dumps(d, sort_keys=True).encode())


UNVERIFIED_WARNING = ("{path} was written without chunk hashes (by an older miniroberta): its arrays are read "
                      "unverified, so a damaged byte would go unnoticed -- re-run `miniroberta preprocess` with "
                      "--overwrite to add them")


class MlmDataset:
    """Read-only, memory-mapped view of a preprocessed dataset, verified as it is read.

    A dataset written with chunk hashes (``chunks.py``; every dataset this version writes) is verified
    lazily: opening it checks the file sizes and hashes the first and last chunk of each array (a few MiB
    whatever the dataset's size); ``ds[i]`` and ``word_start_flags(i)`` hash each chunk they touch the
    first time (1 MiB chunks, a flag per chunk), so training verifies the whole dataset during its first
    pass over it, and a damaged byte is refused before the instance holding it is used. ``tokens`` /
    ``offsets`` / ``word_starts`` are the raw memory maps: reading them directly bypasses the check
    (``verify_all()`` first for whole-array work).

    A dataset without chunk hashes (written by an older version) is read unverified with a warning, after a full
    pass of value-range checks at open (as before). ``verify=False`` reads any dataset that way
    (benchmarks measure the cost of verification with it)."""

    def __init__(self, path: str | os.PathLike, verify: bool = True) -> None:
        self.path = os.fspath(path)
        self.manifest = self._read_manifest()
        found = self.manifest.get(chunks.KEY)
        hashes: dict[str, Any] = found if isinstance(found, dict) else {}
        self.verified = bool(verify and isinstance(found, dict))
        if self.verified:
            chunks.check_sizes(self.path, hashes)
        try:
            self.tokens = np.load(os.path.join(self.path, "tokens.npy"), mmap_mode="r")
            self.offsets = np.load(os.path.join(self.path, "offsets.npy"), mmap_mode="r")
        except (OSError, ValueError) as e:
            raise DatasetError(f"{self.path}: cannot open tokens.npy/offsets.npy ({e}); re-run preprocess") from None
        ws = os.path.join(self.path, "word_starts.npy")
        self.word_starts = np.load(ws, mmap_mode="r") if os.path.isfile(ws) else None
        self.warnings: list[str] = []
        self._vt = self._vo = self._vw = None
        if self.verified:
            self._vt = chunks.ChunkVerifier.open(self.path, "tokens.npy", self.tokens, hashes, self._check_tokens)
            self._vo = chunks.ChunkVerifier.open(self.path, "offsets.npy", self.offsets, hashes, self._check_offsets)
            if self.word_starts is not None:
                self._vw = chunks.ChunkVerifier.open(self.path, "word_starts.npy", self.word_starts, hashes)
            for v in (self._vt, self._vo, self._vw):
                if v is not None:
                    v.first_and_last()          # the .npy headers, offsets[-1], the first instances
        self._check_lengths()
        if not self.verified:
            if verify:
                self.warnings.append(UNVERIFIED_WARNING.format(path=self.path))
                log(f"warning: {self.warnings[-1]}")
            self.check_ranges()
        self.warnings += self.check_degenerate()

    def _read_manifest(self) -> dict[str, Any]:
        mpath = os.path.join(self.path, "manifest.json")
        if not os.path.isdir(self.path):
            raise DatasetError(f"{self.path}: no such dataset directory (run `miniroberta preprocess` first)")
        if not os.path.isfile(mpath):
            raise DatasetError(f"{self.path}: incomplete dataset (no manifest.json); re-run `miniroberta preprocess`")
        try:
            with open(mpath, encoding="utf-8") as f:
                manifest: dict[str, Any] = json.load(f)
        except (OSError, ValueError) as e:
            raise DatasetError(f"{mpath}: unreadable manifest ({e}); the dataset is damaged -- re-run "
                               f"`miniroberta preprocess` with --overwrite") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
            raise DatasetError(f"{mpath}: not a miniroberta dataset (format {got!r})")
        if int(manifest.get("format_version", -1)) > FORMAT_VERSION:
            raise DatasetError(f"{mpath}: format_version {manifest['format_version']} is newer than this "
                               f"miniroberta understands ({FORMAT_VERSION}); upgrade miniroberta")
        return manifest

    def _check_lengths(self) -> None:
        n = int(self.manifest["num_instances"])
        if len(self.offsets) != n + 1 or int(self.offsets[-1]) != len(self.tokens) \
                or len(self.tokens) != int(self.manifest["num_tokens"]):
            raise DatasetError(f"{self.path}: arrays do not match the manifest (instances {len(self.offsets) - 1} vs "
                               f"{n}, tokens {len(self.tokens)} vs {self.manifest['num_tokens']}); the dataset is "
                               f"corrupt -- re-run preprocess with --overwrite")
        if self.word_starts is not None and len(self.word_starts) != len(self.tokens):
            raise DatasetError(f"{self.path}: word_starts.npy length {len(self.word_starts)} != tokens {len(self.tokens)}")

    # --------------------------------------------------------------- checks
    def check_ranges(self) -> None:
        """Token ids in ``[0, vocab_size)`` and offsets that start at 0, never decrease and cut instances
        of 1..seq_length tokens -- vectorised over the memory map (one pass, no copy of the dataset). A
        verified dataset runs the same checks chunk by chunk as it is read."""
        self._check_tokens(0, len(self.tokens))
        self._check_offsets(0, len(self.offsets))

    def _check_tokens(self, a: int, b: int) -> None:
        V = int(self.manifest.get("vocab_size") or 0)
        if b <= a or V <= 0:
            return
        t = np.asarray(self.tokens[a:b])
        if int(t.max()) < V and not (t.dtype.kind == "i" and int(t.min()) < 0):
            return
        bad = np.flatnonzero((t >= V) | (t < 0))
        i = a + int(bad[0])
        raise DatasetError(f"{os.path.join(self.path, 'tokens.npy')}: {len(bad):,} token id(s) outside the vocab "
                           f"[0, {V}), the first {int(self.tokens[i])} at position {i:,} (instance "
                           f"{int(np.searchsorted(self.offsets, i, side='right')) - 1:,}); the dataset is corrupt or "
                           f"was built with another vocab -- re-run preprocess with --overwrite")

    def _check_offsets(self, a: int, b: int) -> None:
        """Offsets ``[a, b)``, each against the one before it."""
        off_file = os.path.join(self.path, "offsets.npy")
        lo = max(0, a - 1)
        off = np.asarray(self.offsets[lo:b])
        if a == 0 and len(off) and int(off[0]) != 0:
            raise DatasetError(f"{off_file}: the first offset is {int(off[0])}, not 0; the dataset is corrupt -- "
                               f"re-run preprocess with --overwrite")
        lens = np.diff(off)
        S = int(self.manifest.get("seq_length") or 0)
        bad = np.flatnonzero((lens < 1) | ((lens > S) if S > 0 else False))
        if len(bad):
            k = int(bad[0])
            i = lo + k
            raise DatasetError(f"{off_file}: instance {i:,} has {int(lens[k])} tokens (offsets {int(off[k])} -> "
                               f"{int(off[k + 1])}); every instance must hold 1..{S} (seq_length); the dataset "
                               f"is corrupt -- re-run preprocess with --overwrite")

    def check_degenerate(self, sample: int = 1 << 20) -> list[str]:
        """Warnings (also logged) for data a model cannot learn from: one id everywhere (e.g. all zeros
        -- the loss drops to 0 and means nothing), or a high [UNK] rate (the vocab does not fit the
        corpus). Looks at an evenly strided sample of at most ``sample`` tokens (of a verified dataset:
        from 4 evenly spaced chunks, first and last included, verified first)."""
        out: list[str] = []
        n = len(self.tokens)
        if n == 0:
            return out
        ids = self._sample_tokens(sample)
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

    def _sample_tokens(self, sample: int) -> np.ndarray:
        n = len(self.tokens)
        if self._vt is None:
            return np.asarray(self.tokens[::max(1, n // sample)], dtype=np.int64)
        v = self._vt
        k = len(v.ok)
        parts = []
        for c in sorted({int(x) for x in np.linspace(0, k - 1, min(4, k))}):   # whole file chunks
            a = min(n, max(0, -(-(c * v.chunk - v.header) // v.itemsize)))
            b = min(n, max(0, -(-((c + 1) * v.chunk - v.header) // v.itemsize)))
            if b <= a:
                continue
            v.elements(a, b)
            parts.append(np.asarray(self.tokens[a:b], dtype=np.int64))
        ids = np.concatenate(parts)
        return ids[::max(1, len(ids) // sample)]

    def verify_all(self) -> None:
        """Verify every chunk now (one pass over the arrays); a no-op for an unverified dataset."""
        for v in (self._vt, self._vo, self._vw):
            if v is not None:
                v.verify_all()

    def verification(self) -> dict[str, Any]:
        """How much of the dataset has been verified so far (``{file: [verified, total] chunks}``)."""
        return {name: [v.verified_chunks, len(v.ok)] for name, v in
                (("tokens.npy", self._vt), ("offsets.npy", self._vo), ("word_starts.npy", self._vw)) if v is not None}

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

    def _span(self, i: int) -> tuple[int, int]:
        """Token range of instance ``i`` (its offsets verified)."""
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"instance {i} out of range (the dataset has {len(self)})")
        if self._vo is not None:
            self._vo.elements(i, i + 2)
        return int(self.offsets[i]), int(self.offsets[i + 1])

    def __getitem__(self, i: int) -> np.ndarray:
        a, b = self._span(i)
        if self._vt is not None:
            self._vt.elements(a, b)
        return np.asarray(self.tokens[a:b], dtype=np.int64)

    def word_start_flags(self, i: int) -> np.ndarray | None:
        if self.word_starts is None:
            return None
        a, b = self._span(i)
        if self._vw is not None:
            self._vw.elements(a, b)
        return np.asarray(self.word_starts[a:b], dtype=bool)

    def lengths(self) -> np.ndarray:
        if self._vo is not None:
            self._vo.verify_all()
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
        m[chunks.KEY] = chunks.hash_dir_arrays(tmp)
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
           "FORMAT", "FORMAT_VERSION", "UNVERIFIED_WARNING"]
