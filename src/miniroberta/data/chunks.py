"""Per-chunk SHA-256 of a dataset's arrays: recorded when they are written, verified as they are read.

A dataset's ``manifest.json`` records, for each array file (``tokens.npy``, ``offsets.npy``,
``word_starts.npy``), the SHA-256 of every ``chunk_bytes`` (1 MiB) chunk of the file, header included::

    "chunk_hashes": {"algorithm": "sha256", "chunk_bytes": 1048576,
                     "files": {"tokens.npy": {"size": 41234567, "sha256": ["9f2c…", …]}, …}}

Writers hash while they write (:class:`ChunkHasher` wraps the output file; the preprocess assembler streams
gigabytes through it without a second pass) or afterwards (:func:`hash_file_chunks`). Readers keep one
:class:`ChunkVerifier` per file: before elements are handed out, the chunks holding them are hashed
and compared, once each (a flag per chunk remembers it), so opening a 14 GB dataset costs a few chunks
and training verifies each chunk the first time one of its instances is drawn. A mismatch is one
``DatasetError`` line naming the file, the byte range and the fix.
"""
from __future__ import annotations

import hashlib
import os
import threading
from typing import Any, Callable

import numpy as np

ALGORITHM = "sha256"
CHUNK_BYTES = 1 << 20
KEY = "chunk_hashes"
ARRAY_FILES = ("tokens.npy", "offsets.npy", "word_starts.npy")


class DatasetError(ValueError):
    """A dataset directory that is missing, incomplete, damaged or does not fit the run."""


class ChunkHasher:
    """A binary file wrapper: ``write`` passes the bytes on and hashes them in ``chunk_bytes`` chunks of
    the file (counted from its first byte). ``entry()`` gives the manifest entry once writing is done."""

    def __init__(self, f: Any, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.f, self.chunk = f, int(chunk_bytes)
        self.h = hashlib.sha256()
        self.fill = self.size = 0
        self.digests: list[str] = []

    def write(self, data: Any) -> int:
        mv = memoryview(data).cast("B")
        self.f.write(mv)
        pos, n = 0, len(mv)
        while pos < n:
            take = min(n - pos, self.chunk - self.fill)
            self.h.update(mv[pos:pos + take])
            self.fill += take
            pos += take
            if self.fill == self.chunk:
                self.digests.append(self.h.hexdigest())
                self.h, self.fill = hashlib.sha256(), 0
        self.size += n
        return n

    def entry(self) -> dict[str, Any]:
        digests = self.digests + ([self.h.hexdigest()] if self.fill else [])
        return {"size": self.size, "sha256": digests}


def hash_file_chunks(path: str, chunk_bytes: int = CHUNK_BYTES) -> dict[str, Any]:
    """The manifest entry of an existing file (``{"size", "sha256": [per chunk]}``)."""
    with open(path, "rb") as f:
        h = ChunkHasher(_NullSink(), chunk_bytes)
        while True:
            b = f.read(chunk_bytes)
            if not b:
                break
            h.write(b)
    return h.entry()


class _NullSink:
    def write(self, b: Any) -> None:
        pass


def manifest_entry(files: dict[str, dict[str, Any]], chunk_bytes: int = CHUNK_BYTES) -> dict[str, Any]:
    """The ``chunk_hashes`` value of a manifest from the per-file entries."""
    return {"algorithm": ALGORITHM, "chunk_bytes": int(chunk_bytes), "files": files}


def hash_dir_arrays(folder: str, chunk_bytes: int = CHUNK_BYTES) -> dict[str, Any]:
    """``chunk_hashes`` of the array files present in ``folder`` (for writers of small datasets)."""
    return manifest_entry({n: hash_file_chunks(os.path.join(folder, n), chunk_bytes)
                           for n in ARRAY_FILES if os.path.isfile(os.path.join(folder, n))}, chunk_bytes)


def check_sizes(folder: str, hashes: dict[str, Any]) -> None:
    """Refuse an array file whose size differs from the one recorded (truncated, extended) -- before
    anything maps it."""
    for name, entry in (hashes.get("files") or {}).items():
        path = os.path.join(folder, name)
        want = entry.get("size") if isinstance(entry, dict) else None
        size = os.path.getsize(path) if os.path.isfile(path) else None
        if size is None:
            raise DatasetError(f"{path}: missing, but the dataset was written with it (manifest.json); re-run "
                               f"`miniroberta preprocess` with --overwrite")
        if size != want:
            raise DatasetError(f"{path}: {size:,} bytes, but {want:,} were written (manifest.json); the file was "
                               f"truncated or changed -- re-run `miniroberta preprocess` with --overwrite")


class ChunkVerifier:
    """Verifies the chunks of one ``.npy`` file as its elements are read, each chunk once.

    ``arr`` is the file's memory-mapped array (``np.load(mmap_mode='r')``); ``check(a, b)``, when given,
    runs content checks (value ranges) on elements ``[a, b)`` of a chunk before its hash is compared, so
    that a value a reader cannot use is named as such. Thread-safe in effect: two threads may hash the same
    chunk at once (harmless; the flags are updated under a lock); no element is handed out before its chunk has passed."""

    def __init__(self, path: str, arr: np.ndarray, entry: dict[str, Any], chunk_bytes: int,
                 dataset: str, check: Callable[[int, int], None] | None = None) -> None:
        self.path, self.arr, self.dataset, self.check = path, arr, dataset, check
        self.chunk = int(chunk_bytes)
        self.size = int(entry["size"])
        self.expected = list(entry["sha256"])
        self.header = int(arr.offset) if isinstance(arr, np.memmap) else 0
        self.itemsize = arr.dtype.itemsize
        self.raw = np.memmap(path, dtype=np.uint8, mode="r") if self.size else np.zeros(0, np.uint8)
        self.ok = bytearray(len(self.expected))
        self.left = len(self.expected)
        self._lock = threading.Lock()
        self.all = self.left == 0

    @classmethod
    def open(cls, folder: str, name: str, arr: np.ndarray, hashes: dict[str, Any],
             check: Callable[[int, int], None] | None = None) -> "ChunkVerifier":
        """The verifier of ``folder/name`` from the manifest's ``chunk_hashes``; refuses a file whose size or
        hash list does not fit the manifest."""
        path = os.path.join(folder, name)
        mpath = os.path.join(folder, "manifest.json")
        entry = (hashes.get("files") or {}).get(name)
        chunk = hashes.get("chunk_bytes")
        if hashes.get("algorithm") != ALGORITHM or not isinstance(chunk, int) or chunk <= 0 \
                or not isinstance(entry, dict) or not isinstance(entry.get("sha256"), list) \
                or not isinstance(entry.get("size"), int):
            raise DatasetError(f"{mpath}: chunk_hashes has no valid entry for {name}; the manifest is damaged -- "
                               f"re-run `miniroberta preprocess` with --overwrite")
        size = os.path.getsize(path)
        if size != entry["size"]:
            raise DatasetError(f"{path}: {size:,} bytes, but {entry['size']:,} were written (manifest.json); the "
                               f"file was truncated or changed -- re-run `miniroberta preprocess` with --overwrite")
        if len(entry["sha256"]) != -(-size // chunk):
            raise DatasetError(f"{mpath}: chunk_hashes lists {len(entry['sha256'])} chunk(s) for {name} of {size:,} "
                               f"bytes; the manifest is damaged -- re-run `miniroberta preprocess` with --overwrite")
        return cls(path, arr, entry, chunk, folder, check)

    # ------------------------------------------------------------------ verification
    def elements(self, a: int, b: int) -> None:
        """Verify the chunks that hold elements ``[a, b)`` (each chunk only the first time)."""
        if self.all:
            return
        lo = self.header + a * self.itemsize
        hi = max(lo + 1, self.header + b * self.itemsize)
        for c in range(lo // self.chunk, min(len(self.ok), (hi - 1) // self.chunk + 1)):
            if not self.ok[c]:
                self.verify_chunk(c)

    def verify_chunk(self, c: int) -> None:
        lo, hi = c * self.chunk, min((c + 1) * self.chunk, self.size)
        if self.check is not None:
            n = len(self.arr)
            a = min(n, max(0, -(-(lo - self.header) // self.itemsize)))
            b = min(n, max(0, -(-(hi - self.header) // self.itemsize)))
            if b > a:
                self.check(a, b)
        if hashlib.sha256(self.raw[lo:hi].data).hexdigest() != self.expected[c]:   # .data: the bytes, no copy
            raise DatasetError(f"{self.path}: bytes {lo:,}-{hi:,} (chunk {c + 1} of {len(self.ok)}) differ from the "
                               f"SHA-256 recorded when the dataset was written; the file is damaged -- re-run "
                               f"`miniroberta preprocess` with --overwrite to rebuild {self.dataset}")
        with self._lock:
            if not self.ok[c]:
                self.ok[c] = 1
                self.left -= 1
                self.all = self.left == 0

    def verify_all(self) -> None:
        for c in range(len(self.ok)):
            if not self.ok[c]:
                self.verify_chunk(c)

    def first_and_last(self) -> None:
        """Verify the first chunk (the ``.npy`` header lies in it) and the last one."""
        if len(self.ok):
            for c in {0, len(self.ok) - 1}:
                if not self.ok[c]:
                    self.verify_chunk(c)

    @property
    def verified_chunks(self) -> int:
        return len(self.ok) - self.left


__all__ = ["ChunkHasher", "ChunkVerifier", "DatasetError", "check_sizes", "hash_file_chunks", "hash_dir_arrays", "manifest_entry",
           "ALGORITHM", "CHUNK_BYTES", "KEY", "ARRAY_FILES"]
