"""Where the shared data lives: THE data-root resolver and THE vocab resolver.

The data folder holds ``vocab/``, ``corpus/``, ``tasks/`` (and ``uer/``). It is found, in order:

1. ``$MINIROBERTA_DATA`` (when set, it is used as given, existing or not: an explicit choice is never
   silently replaced by a guess);
2. ``../shared/data`` beside the repository checkout (the folder holding ``pyproject.toml`` above this
   file, for an editable install);
3. ``../shared/data`` from the current directory (an installed package run from a checkout).

``<checkout>/shared/data`` is *not* a candidate: the data sits beside the checkout, never inside it.

The vocab of a model is resolved by :func:`resolve_vocab` alone: ``--vocab_path`` if given; else
``vocab.txt`` beside (or inside) the model; else the vocab path recorded in the checkpoint's metadata;
else the shared Chinese BERT vocab (:func:`default_vocab_path`). When the checkpoint recorded the
vocab's SHA-256, the chosen file must match it.

This module imports nothing from the package (``miniroberta.utils`` re-exports ``find_data_root``
under its old name), so every layer may use it.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

ENV = "MINIROBERTA_DATA"
TASKS_ENV = "MINIROBERTA_DATA_DIR"       # a tasks folder (overrides <data root>/tasks)
VOCAB_NAME = "google_zh_vocab.txt"       # the shared Chinese BERT vocab (21,128 tokens)
_MARKERS = ("vocab", "corpus", "tasks")


def _checkout() -> Path | None:
    """The repository checkout this module runs from (the folder with ``pyproject.toml`` above it)."""
    for d in Path(__file__).resolve().parents:
        if (d / "pyproject.toml").is_file() and (d / "src" / "miniroberta").is_dir():
            return d
    return None


def candidates() -> list[Path]:
    """The data folders looked at, in order (see the module docstring)."""
    env = os.environ.get(ENV)
    if env:
        return [Path(env)]
    out = []
    repo = _checkout()
    if repo is not None:
        out.append(repo.parent / "shared" / "data")
    out.append(Path.cwd().parent / "shared" / "data")
    return list(dict.fromkeys(p.resolve() for p in out))


def find_data_root() -> Path | None:
    """The first candidate that holds ``vocab/``, ``corpus/`` or ``tasks/``; None when there is none."""
    for c in candidates():
        if any((c / m).is_dir() for m in _MARKERS):
            return c
    return None


def data_root() -> Path:
    """The data folder, or where it is expected (the first candidate) when none exists -- for defaults
    and for messages that name the place to put it."""
    return find_data_root() or candidates()[0]


def default_vocab_path() -> Path:
    """``<data root>/vocab/google_zh_vocab.txt`` (may not exist)."""
    return data_root() / "vocab" / VOCAB_NAME


def default_tasks_dir() -> Path:
    """``$MINIROBERTA_DATA_DIR`` (a tasks folder), else ``<data root>/tasks``."""
    env = os.environ.get(TASKS_ENV)
    return Path(env) if env else data_root() / "tasks"


def vocab_candidates(input_path: str | os.PathLike | None, recorded: str | None = None) -> list[str]:
    """Where :func:`resolve_vocab` looks when no ``--vocab_path`` is given, in order."""
    cands = []
    if input_path is not None:
        p = os.path.abspath(os.fspath(input_path))
        d = p if os.path.isdir(p) else os.path.dirname(p)
        cands.append(os.path.join(d, "vocab.txt"))
    if isinstance(recorded, str) and recorded:
        cands.append(recorded)
    cands.append(str(default_vocab_path()))
    return list(dict.fromkeys(cands))


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve_vocab(input_path: str | os.PathLike | None, vocab_path: str | os.PathLike | None = None,
                  meta: dict[str, Any] | None = None) -> str:
    """The vocab file of the model at ``input_path`` (see the module docstring); raises
    ``FileNotFoundError`` naming every place looked at, or ``ValueError`` when the file's SHA-256 differs
    from the one the checkpoint recorded."""
    if vocab_path:
        chosen = os.fspath(vocab_path)
        if not os.path.isfile(chosen):
            raise FileNotFoundError(f"--vocab_path {chosen}: no such file")
    else:
        cands = vocab_candidates(input_path, (meta or {}).get("vocab_path"))
        found = [c for c in cands if os.path.isfile(c)]
        if not found:
            raise FileNotFoundError(f"no vocab found for {input_path} (looked for {', '.join(cands)}); "
                                    f"pass --vocab_path")
        chosen = found[0]
    want = (meta or {}).get("vocab_sha256")
    if isinstance(want, str) and want and _sha256(chosen) != want:
        raise ValueError(f"{chosen}: SHA-256 differs from the vocab the checkpoint was trained with "
                         f"({want[:12]}...); pass --vocab_path with that vocab")
    return chosen


__all__ = ["find_data_root", "data_root", "default_vocab_path", "default_tasks_dir", "resolve_vocab",
           "vocab_candidates", "candidates", "ENV", "TASKS_ENV", "VOCAB_NAME"]
