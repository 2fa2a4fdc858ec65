"""Where a study keeps its files, and the small file helpers its steps share (corpus listing, input
hashes, step checkpoints)."""
from __future__ import annotations

import dataclasses
import hashlib
import os

from miniroberta.utils import sha256_file

HELDOUT_SEQ = 128            # the held-out file is scored in windows of the fine-tuning length


def corpus_files(corpus: str) -> list[str]:
    """A file, or the ``*.txt`` files of a directory in name order (what preprocess reads)."""
    if os.path.isdir(corpus):
        files = sorted(os.path.join(corpus, f) for f in os.listdir(corpus)
                       if f.endswith(".txt") and os.path.isfile(os.path.join(corpus, f)))
        if not files:
            raise FileNotFoundError(f"--corpus {corpus}: the directory has no *.txt files")
        return files
    if os.path.isfile(corpus):
        return [corpus]
    raise FileNotFoundError(f"--corpus {corpus}: no such file or directory (default: ../shared/data/corpus)")


def hash_files(paths: list[str]) -> str:
    """One SHA-256 over the names and contents of ``paths`` (in order)."""
    h = hashlib.sha256()
    for p in paths:
        h.update(os.path.basename(p).encode() + b"\0" + sha256_file(p).encode() + b"\n")
    return h.hexdigest()


def checkpoint_step(path: str) -> int:
    tail = path.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def list_checkpoints(prefix: str) -> list[str]:
    """``<prefix>-<step>`` files, by step."""
    d, base = os.path.split(prefix)
    if not os.path.isdir(d):
        return []
    found = [os.path.join(d, f) for f in os.listdir(d) if f.startswith(base + "-") and f[len(base) + 1:].isdigit()]
    return sorted(found, key=checkpoint_step)


@dataclasses.dataclass
class Paths:
    """The layout of a study's ``--out`` folder."""
    out: str

    def dataset(self, seq: int, source: str = "corpus") -> str:
        return os.path.join(self.out, "data", f"seq{seq}" if source == "corpus" else f"{source}_seq{seq}")

    @property
    def heldout(self) -> str:
        return os.path.join(self.out, "data", f"heldout_seq{HELDOUT_SEQ}")

    @property
    def heldout_split(self) -> str:
        """The user's corpus less a held-out slice, and the slice (when no held-out file was found)."""
        return os.path.join(self.out, "data", "heldout_split")

    def model_dir(self, m: str) -> str:
        return os.path.join(self.out, "models", m)

    def stage_prefix(self, m: str, stage: str) -> str:
        return os.path.join(self.model_dir(m), stage, "model.safetensors")

    def metrics(self, m: str, stage: str) -> str:
        return os.path.join(self.model_dir(m), stage, "metrics.jsonl")

    def hf(self, m: str) -> str:
        return os.path.join(self.model_dir(m), "hf")

    def grid(self, m: str) -> str:
        return os.path.join(self.model_dir(m), "grid")

    @property
    def report(self) -> str:
        return os.path.join(self.out, "report")


__all__ = ["Paths", "corpus_files", "hash_files", "checkpoint_step", "list_checkpoints", "HELDOUT_SEQ"]
