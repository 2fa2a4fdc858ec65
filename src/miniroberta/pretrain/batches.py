"""Which instances each update sees, prepared ahead in threads.

Data order: the training stream is the concatenation of per-epoch permutations of the
whole dataset (``numpy`` generator seeded by ``(seed, epoch)``). Micro-batch ``j`` covers
stream positions ``[j*W*B, (j+1)*W*B)``; rank ``r`` takes the ``r``-th slice of ``B``. So
the instances (and, masking being a pure function of ``(seed, epoch, index)``, their masks)
of a micro-batch are the same at any world size with the same global batch, and the data
position is a function of the step alone -- resuming needs no loader state.
"""
from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from miniroberta.data.dataset import MlmDataset
from miniroberta.data.masking import MaskingConfig, MlmBatch, SpecialIds, collate


class Stream:
    """Instance order: per-epoch seeded permutations of the dataset, concatenated."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed
        self._cache: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def perm(self, epoch: int) -> np.ndarray:
        with self._lock:
            p = self._cache.get(epoch)
            if p is None:
                p = np.random.default_rng([self.seed, epoch, 0x5EED]).permutation(self.n)
                if len(self._cache) > 2:
                    self._cache.pop(min(self._cache))
                self._cache[epoch] = p
            return p

    def items(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        g = np.arange(start, start + count, dtype=np.int64)
        ep, off = g // self.n, g % self.n
        idx = np.empty(count, dtype=np.int64)
        for e in np.unique(ep):
            sel = ep == e
            idx[sel] = self.perm(int(e))[off[sel]]
        return idx, ep


class BatchSource:
    """Micro-batches for one rank from micro-batch ``j0`` on, prepared ahead in threads."""

    def __init__(self, ds: MlmDataset, stream: Stream, special: SpecialIds, masking: MaskingConfig,
                 batch_size: int, world: int, rank: int, j0: int, workers: int, pad_multiple: int,
                 pin: bool = False) -> None:
        self.ds, self.stream, self.special, self.masking = ds, stream, special, masking
        self.B, self.W, self.rank, self.j = batch_size, world, rank, j0
        self.pad_multiple = pad_multiple
        self.pin = pin  # also prepare pinned CPU tensors (for non-blocking copies to a GPU)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="batches") if workers > 0 else None
        self.ahead: deque = deque()
        self.depth = max(2, 2 * workers)

    def make(self, j: int) -> MlmBatch:
        idx, ep = self.stream.items((j * self.W + self.rank) * self.B, self.B)
        inst = [self.ds[int(i)] for i in idx]
        ws = [self.ds.word_start_flags(int(i)) for i in idx] if self.masking.whole_word else None
        b = collate(inst, idx, ep, self.special, self.masking, ws, self.pad_multiple)
        if self.pin:
            b.pinned = b.to_torch(None, pin=True)
        return b

    def next(self) -> MlmBatch:
        if self.pool is None:
            b = self.make(self.j)
            self.j += 1
            return b
        while len(self.ahead) < self.depth:
            self.ahead.append(self.pool.submit(self.make, self.j + len(self.ahead)))
        b = self.ahead.popleft().result()
        self.ahead.append(self.pool.submit(self.make, self.j + len(self.ahead) + 1))
        self.j += 1
        return b

    def close(self) -> None:
        if self.pool is not None:
            for f in self.ahead:
                f.cancel()
            self.pool.shutdown(wait=True, cancel_futures=True)


__all__ = ["Stream", "BatchSource"]
