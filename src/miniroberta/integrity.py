"""Integrity manifests: the SHA-256 of every checkpoint / training-state file, checked when it is read.

A file written by miniroberta gets a small JSON manifest, written last and atomically:

* a single file ``X`` (a native checkpoint, a UER-py ``.bin``, a training-state ``.pt``) -> ``X.sha256.json``
  beside it;
* a folder (an HF export) -> ``integrity.json`` inside it, listing **every** file of the folder (weights,
  ``config.json``, ``vocab.txt``, tokenizer files, ``finetune.json``, the card) with ``"complete": true``.

Both read ``{"format": "miniroberta-integrity/1", "files": {name: {"sha256": ..., "size": ...}}}``.
``verify_file(X)`` compares size and hash and raises ``IntegrityError`` naming the damaged file; a file
without a manifest (written by another tool, or before manifests existed) is accepted unverified.
``verify_dir(D)`` checks every file a folder's manifest lists and, when the manifest is complete, refuses a
file a loader reads (``LOADER_FILES``) that it does not list (added or replaced after the export). A folder
exported before manifests were complete lists only its weights: that one file is checked, as before.
Loading an HF folder (``interop.checkpoint.load_weights``) calls it. A writer that changes one file of a
finished folder (``reproduce`` writing the card) records it with ``update_dir``.

For a writer: write ``X`` to a temp file, ``forget(X)`` just before renaming it into place (so a crash
between the steps cannot pair a new file with an old hash), then ``record(X)`` -- ``atomic_write_bytes``. ``atomic_torch_save`` /
``verified_torch_load`` do all of it for a training-state file.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from typing import Any

from miniroberta.utils import atomic_write, atomic_write_json, sha256_file

FORMAT = "miniroberta-integrity/1"
DIR_MANIFEST = "integrity.json"
SUFFIX = ".sha256.json"


class IntegrityError(ValueError):
    """A file whose content no longer matches the hash recorded when it was written."""


def sidecar(path: str) -> str:
    return os.fspath(path) + SUFFIX


def forget(path: str | os.PathLike) -> None:
    """Drop the manifest of ``path`` (before it is rewritten)."""
    try:
        os.unlink(sidecar(os.fspath(path)))
    except FileNotFoundError:
        pass


def record(path: str | os.PathLike, sha256: str | None = None) -> str:
    """Write ``path``'s manifest (``sha256`` if already known, e.g. hashed from the bytes written)."""
    path = os.fspath(path)
    entry = {"sha256": sha256 or sha256_file(path), "size": os.path.getsize(path)}
    m = sidecar(path)
    atomic_write_json(m, {"format": FORMAT, "files": {os.path.basename(path): entry}})
    return m


def _entry(path: str) -> dict[str, Any]:
    return {"sha256": sha256_file(path), "size": os.path.getsize(path)}


def record_dir(folder: str | os.PathLike, names: list[str] | None = None) -> str:
    """Write ``integrity.json`` inside ``folder`` (a folder being built by ``atomic_dir``): for every file in
    it (``names`` None: the manifest is then *complete*), or for the files ``names`` only."""
    folder = os.fspath(folder)
    complete = names is None
    if names is None:
        names = sorted(n for n in os.listdir(folder) if n != DIR_MANIFEST and os.path.isfile(os.path.join(folder, n)))
    files = {n: _entry(os.path.join(folder, n)) for n in names if os.path.isfile(os.path.join(folder, n))}
    p = os.path.join(folder, DIR_MANIFEST)
    with open(p, "w", encoding="utf-8") as f:          # inside a folder being built by atomic_dir
        json.dump({"format": FORMAT, "files": files, "complete": complete}, f, indent=2, sort_keys=True)
    return p


def read_dir_manifest(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The folder's ``integrity.json`` (None when there is none); a damaged one is an ``IntegrityError``."""
    m = os.path.join(os.fspath(folder), DIR_MANIFEST)
    if not os.path.isfile(m):
        return None
    try:
        with open(m, encoding="utf-8") as f:
            d = json.load(f)
    except (OSError, ValueError) as e:
        raise IntegrityError(f"{m}: unreadable integrity manifest ({e}); it was damaged -- re-export the folder, "
                             f"or delete it to load the folder unverified") from None
    if not isinstance(d, dict) or not isinstance(d.get("files"), dict):
        raise IntegrityError(f"{m}: not an integrity manifest (no \"files\"); re-export the folder, or delete it "
                             f"to load the folder unverified")
    return d


def update_dir(folder: str | os.PathLike, names: list[str]) -> str:
    """Record the new content of the files ``names`` of a finished folder in its ``integrity.json`` (atomically;
    the other entries and the ``complete`` flag are kept). A folder without a manifest gets a partial one."""
    folder = os.fspath(folder)
    d = read_dir_manifest(folder) or {"format": FORMAT, "files": {}, "complete": False}
    for n in names:
        d["files"][n] = _entry(os.path.join(folder, n))
    p = os.path.join(folder, DIR_MANIFEST)
    atomic_write_json(p, d)
    return p


# what the loaders of an HF folder read: in a complete manifest, each of these must be listed
LOADER_FILES = ("config.json", "model.safetensors", "pytorch_model.bin", "vocab.txt", "tokenizer.json",
                "tokenizer_config.json", "special_tokens_map.json", "finetune.json")


def verify_dir(folder: str | os.PathLike, skip: tuple[str, ...] = ()) -> bool:
    """Check every file ``folder``'s ``integrity.json`` lists (but ``skip``, e.g. the weights already checked):
    True when verified, False when the folder has no manifest; ``IntegrityError`` naming the first damaged,
    missing or (complete manifests only) unlisted file a loader reads."""
    folder = os.fspath(folder)
    d = read_dir_manifest(folder)
    if d is None:
        return False
    m = os.path.join(folder, DIR_MANIFEST)
    for name, entry in sorted(d["files"].items()):
        if name in skip:
            continue
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise IntegrityError(f"{path}: missing -- {m} lists it; restore it from a copy or re-export the folder")
        _check(path, entry, m)
    if d.get("complete"):
        extra = [n for n in LOADER_FILES if n not in d["files"] and n not in skip
                 and os.path.isfile(os.path.join(folder, n))]
        if extra:
            raise IntegrityError(f"{os.path.join(folder, extra[0])}: not in {m} -- added or replaced after the export; "
                                 f"re-export the folder (or remove the file)")
    return True


def expected(path: str) -> tuple[dict[str, Any] | None, str | None]:
    """(entry, manifest path) recorded for ``path``, or (None, None)."""
    path = os.fspath(path)
    name = os.path.basename(path)
    for m in (sidecar(path), os.path.join(os.path.dirname(os.path.abspath(path)), DIR_MANIFEST)):
        if not os.path.isfile(m):
            continue
        try:
            with open(m, encoding="utf-8") as f:
                d = json.load(f)
        except (OSError, ValueError) as e:
            raise IntegrityError(f"{m}: unreadable integrity manifest ({e}); it was damaged -- delete it to "
                                 f"load {path} unverified") from None
        entry = (d.get("files") or {}).get(name) if isinstance(d, dict) else None
        if entry is not None:
            return entry, m
    return None, None


def verify_file(path: str | os.PathLike) -> bool:
    """Check ``path`` against its manifest: True when verified, False when there is none; raises
    ``IntegrityError`` naming the file when the size or hash differ."""
    path = os.fspath(path)
    entry, m = expected(path)
    if entry is None or m is None:
        return False
    _check(path, entry, m)
    return True


def _check(path: str, entry: dict[str, Any], m: str) -> None:
    size = os.path.getsize(path)
    if size != entry.get("size"):
        raise IntegrityError(f"{path}: damaged or truncated -- {size:,} bytes, but {entry.get('size'):,} were "
                             f"written (recorded in {m}); restore it from a copy, resume from an earlier "
                             f"checkpoint, or re-create it")
    got = sha256_file(path)
    if got != entry.get("sha256"):
        raise IntegrityError(f"{path}: damaged -- its SHA-256 {got[:16]}... differs from the {str(entry.get('sha256'))[:16]}... "
                             f"recorded when it was written ({m}); restore it from a copy, resume from an earlier "
                             f"checkpoint, or re-create it")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> str:
    """Write ``data`` atomically to ``path`` and record its hash (forgetting the old one first)."""
    path = os.fspath(path)
    # the old manifest goes only once the new bytes are safely on disk: a failed write (disk full) leaves
    # the previous file with its manifest; a crash between the steps leaves a file without one (unverified),
    # never a file paired with another file's hash
    with atomic_write(path, "wb", before_replace=lambda: forget(path)) as f:
        f.write(data)
    record(path, hashlib.sha256(data).hexdigest())
    return path


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> str:
    """``torch.save`` to a temp file, rename, then record the hash (for training-state files)."""
    import torch  # noqa: PLC0415 -- the integrity checks of datasets and exports run where torch is not loaded
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def verified_torch_load(path: str | os.PathLike, **kw: Any) -> Any:
    """``verify_file`` then ``torch.load`` (``map_location='cpu'``, ``weights_only=True`` by default)."""
    import torch  # noqa: PLC0415 -- see atomic_torch_save
    verify_file(path)
    kw.setdefault("map_location", "cpu")
    kw.setdefault("weights_only", True)
    return torch.load(os.fspath(path), **kw)


__all__ = ["IntegrityError", "record", "record_dir", "update_dir", "read_dir_manifest", "verify_dir", "forget",
           "verify_file", "expected", "atomic_write_bytes", "atomic_torch_save", "verified_torch_load", "DIR_MANIFEST",
           "SUFFIX", "LOADER_FILES"]
