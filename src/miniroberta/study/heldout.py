"""The held-out text of a study: the fixed yardstick every pretraining stage is scored on, never trained on.

``data.heldout`` names a file. :func:`resolve_heldout` looks for it, in order: as given (a path), in the
corpus directory, then in the data folder's ``corpus/`` (``data.paths.find_data_root``) -- so a study on the
user's own corpus (``--corpus FILE``) is still scored on the shared held-out file when it is there. A file
found inside the training corpus is left out of it.

When a bare file name is found nowhere (or names the whole corpus), the study sets a **held-out slice of
the user's corpus** aside instead (:func:`split_heldout`): every document (line) whose SHA-256 is 0 modulo
``SLICE_EVERY`` is held out -- about one in twenty, spread over the whole corpus, deterministic, and an
identical copy of a held-out document elsewhere in the corpus is held out too, so nothing held out is also
trained on. The held-out file is the first ``HELDOUT_BYTES`` of those documents; the training copy is the
rest, cut to ``data.max_bytes``. The log and the step's manifest say which of the two was done.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any

from miniroberta.data.paths import find_data_root
from miniroberta.utils import atomic_write, write_error

HELDOUT_BYTES = 400_000       # the held-out file's first 400 kB are scored
HELDOUT_WINDOWS = 2048        # windows scored per evaluation
SLICE_EVERY = 20              # a held-out slice: one document in SLICE_EVERY


@dataclasses.dataclass(frozen=True)
class HeldoutPlan:
    """``kind``: ``none`` (data.heldout = ""), ``file`` (a held-out file; ``file`` is its path) or ``slice``
    (documents of the user's corpus set aside by :func:`split_heldout`). ``why``: one line for the log."""
    kind: str
    file: str | None
    why: str

    def file_path(self) -> str:
        """The held-out file of a ``file`` plan."""
        if self.file is None:
            raise ValueError(f"held-out plan {self.kind!r} has no file ({self.why})")
        return self.file


def _candidates(spec: str, corpus: str, data_root: str | os.PathLike | None) -> list[str]:
    cands = [spec]
    if os.path.isdir(corpus):
        cands.append(os.path.join(corpus, spec))
    if data_root is not None:
        cands.append(os.path.join(os.fspath(data_root), "corpus", spec))
    out: list[str] = []
    for c in cands:   # distinct, in order
        if os.path.abspath(c) not in map(os.path.abspath, out):
            out.append(c)
    return out


def resolve_heldout(spec: str, corpus: str, files: list[str],
                    data_root: str | os.PathLike | None | bool = True) -> HeldoutPlan:
    """Where the held-out text of a study on ``corpus`` (its ``files``) comes from; see the module docstring.
    ``data_root``: the data folder to look in (True: ``find_data_root()``; None/False: none)."""
    if not spec:
        return HeldoutPlan("none", None, "data.heldout is \"\": no held-out text is scored")
    root = find_data_root() if data_root is True else (data_root or None)
    cands = _candidates(spec, corpus, root)
    found = next((os.path.abspath(c) for c in cands if os.path.isfile(c)), None)
    real = {os.path.realpath(f) for f in files}
    if found is not None and real != {os.path.realpath(found)}:
        inside = os.path.realpath(found) in real
        return HeldoutPlan("file", found, f"held-out file {found}" + (" (left out of the training corpus)"
                                                                         if inside else ""))
    if found is None and (os.sep in spec or (os.altsep and os.altsep in spec)):
        raise FileNotFoundError(f"data.heldout {spec!r}: no such file (looked at {', '.join(cands)}); give a file "
                                f"name in the corpus directory or the data folder, a path, or \"\" for none")
    why = ("it is the whole corpus" if found is not None else f"{spec} is neither a path nor in "
           f"{' or '.join(os.path.dirname(os.path.abspath(c)) for c in cands[1:]) or 'the corpus directory'}")
    return HeldoutPlan("slice", None, f"data.heldout {spec!r}: {why}; a held-out slice of the corpus is set aside "
                                      f"instead (one document in {SLICE_EVERY}, chosen by its hash, never trained on)")


def held_out(line: bytes, every: int = SLICE_EVERY) -> bool:
    """Whether a document (one corpus line, surrounding whitespace ignored) belongs to the held-out slice."""
    doc = line.strip()
    return bool(doc) and int.from_bytes(hashlib.sha256(doc).digest()[:8], "big") % every == 0


def split_heldout(files: list[str], out_dir: str, max_bytes: int | None = None, cap: int = HELDOUT_BYTES,
                  every: int = SLICE_EVERY) -> dict[str, Any]:
    """Write ``out_dir/heldout.txt`` (the first ``cap`` bytes of the held-out documents, whole lines) and
    ``out_dir/train/<name>`` per corpus file (its other lines, all files together cut to ``max_bytes``).
    Reading stops once both are full. Returns the file lists and counts (for the step's manifest)."""
    train_dir = os.path.join(out_dir, "train")
    held_path = os.path.join(out_dir, "heldout.txt")
    budget = max_bytes or None
    stats = {"held_docs": 0, "held_bytes": 0, "set_aside": 0, "train_bytes": 0, "train_lines": 0, "train_full": 0}
    train_files: list[str] = []
    try:
        os.makedirs(train_dir, exist_ok=True)
        with atomic_write(held_path, "wb") as held:
            for path in files:
                if stats["train_full"] and stats["held_bytes"] >= cap:
                    break
                dst = os.path.join(train_dir, os.path.basename(path))
                if _split_file(path, dst, held, stats, budget, cap, every):
                    train_files.append(dst)
    except OSError as e:
        raise write_error(out_dir, e, False) from None
    if not stats["held_docs"]:
        raise ValueError(f"the corpus ({len(files)} file(s)) has no document for a held-out slice (one in {every} "
                         f"by hash); give a held-out file with data.heldout or --set data.heldout='\"\"' for none")
    if not train_files:
        raise ValueError("nothing is left to train on once the held-out slice is set aside; use a larger corpus")
    return {"train_files": train_files, "heldout": held_path, "heldout_documents": stats["held_docs"],
            "heldout_bytes": stats["held_bytes"], "set_aside": stats["set_aside"], "train_bytes": stats["train_bytes"],
            "train_lines": stats["train_lines"], "every": every, "cap": cap,
            "rule": f"documents whose SHA-256 is 0 mod {every}; the first {cap:,} bytes of them are scored"}


def _split_file(path: str, dst: str, held: Any, stats: dict[str, int], budget: int | None, cap: int,
                every: int) -> bool:
    """One corpus file of :func:`split_heldout`; True when its training copy holds anything."""
    wrote = False
    with open(path, "rb") as src, atomic_write(dst, "wb") as out:
        for line in src:
            if not line.endswith(b"\n"):
                line += b"\n"
            if held_out(line, every):
                stats["set_aside"] += 1
                if stats["held_bytes"] < cap:
                    held.write(line)
                    stats["held_docs"] += 1
                    stats["held_bytes"] += len(line)
            elif not stats["train_full"] and (budget is None or stats["train_bytes"] + len(line) <= budget):
                out.write(line)
                wrote = True
                stats["train_bytes"] += len(line)
                stats["train_lines"] += 1
            else:
                stats["train_full"] = 1       # the training copy is the first max_bytes, cut at a line
                if stats["held_bytes"] >= cap:
                    break   # both full
    if not wrote:
        os.unlink(dst)
    return wrote


__all__ = ["HeldoutPlan", "resolve_heldout", "split_heldout", "held_out", "HELDOUT_BYTES", "HELDOUT_WINDOWS",
           "SLICE_EVERY"]
