"""The teacher's soft targets for task distillation, and their on-disk cache.

The teacher (any HF ``BertForSequenceClassification`` directory with the student's vocabulary) is run
once over the training examples; its logits, columns in the student's label order, are cached as a
memory-mapped ``.npy`` under ``<cache_dir>/teacher_logits/``, keyed by the teacher's weights (SHA-256),
the exact token ids and the label order, so several students -- and a resumed run -- reuse them, and any
change to the teacher or the data computes them again.

Nothing in the cache is used unverified: an entry is written with a SHA-256 manifest
(``X.npy.sha256.json``) and read only if it matches it, has the expected shape and holds finite logits of
a plausible size (``|x| <= MAX_ABS_LOGIT``). A damaged entry (a flipped byte, a truncated copy, a missing
manifest) is computed again, and the log says so.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from typing import Any, Callable, Sequence

import numpy as np
import torch

from miniroberta.data.tasks import Encoded, default_cache_dir
from miniroberta.finetune.inference import predict_logits
from miniroberta.integrity import atomic_write_bytes, verify_file
from miniroberta.interop.checkpoint import find_model_dir, load_finetuned, load_weights, model_fingerprint
from miniroberta.modeling.tokenizer import BertTokenizer
from miniroberta.utils import OutputWriteError, log

CACHE_VERSION = 2          # 2: a SHA-256 manifest beside each entry
MAX_ABS_LOGIT = 1e4        # a classifier's logits are tens at most; beyond this an entry is damaged


def teacher_info(teacher_path: str) -> dict[str, Any]:
    """Path, weights SHA-256, name and size of a fine-tuned teacher."""
    path = find_model_dir(teacher_path)
    cfg, _, _ = load_weights(path)
    fp = model_fingerprint(path)
    return dict(path=fp["path"], sha256=fp["sha256"], name=cfg.name,
                num_parameters=cfg.num_parameters(mlm_head=False, pooler=True))


def logits_problem(arr: np.ndarray, shape: tuple[int, int]) -> str | None:
    """Why ``arr`` cannot be a teacher's logits of ``shape``, or None."""
    if arr.shape != shape:
        return f"shape {arr.shape}, expected {shape}"
    a = np.asarray(arr)
    if not np.isfinite(a).all():
        return f"{int((~np.isfinite(a)).sum())} non-finite value(s)"
    big = float(np.abs(a).max()) if a.size else 0.0
    if big > MAX_ABS_LOGIT:
        return f"a logit of {big:.3g} (a classifier's are far below {MAX_ABS_LOGIT:g})"
    return None


def _cache_path(info: dict[str, Any], enc: Encoded, labels: Sequence[str], cache_dir: str | None) -> str | None:
    cache_dir = default_cache_dir() if cache_dir is None else cache_dir
    if not cache_dir:
        return None
    key_obj = dict(v=CACHE_VERSION, teacher=info["sha256"], tokens=enc.digest(), labels=list(labels))
    key = hashlib.sha256(json.dumps(key_obj, sort_keys=True).encode()).hexdigest()[:24]
    return os.path.join(cache_dir, "teacher_logits", f"{key}.npy")


def _read_cached(cpath: str, shape: tuple[int, int]) -> tuple[np.ndarray | None, str]:
    """(the verified cached logits, "") or (None, why the entry cannot be used)."""
    try:
        if not verify_file(cpath):
            return None, "no integrity manifest"
        arr = np.load(cpath, mmap_mode="r", allow_pickle=False)
    except Exception as e:  # noqa: BLE001 -- a wrong hash, a truncated or unreadable file
        return None, f"{type(e).__name__}: {str(e)[:200]}"
    why = logits_problem(arr, shape)
    return (None, why) if why else (arr, "")


def _score(path: str, teacher_path: str, info: dict[str, Any], enc: Encoded, labels: Sequence[str], pad_id: int,
           device: torch.device, batch_size: int, say: Callable[[str], None]) -> np.ndarray:
    model, ft = load_finetuned(path, str(device))
    tl = [str(x) for x in ft["labels"]]
    missing = [x for x in labels if x not in tl]
    if missing or len(tl) != len(labels):
        raise ValueError(f"--teacher {teacher_path}: its labels {tl[:10]} do not match the task's {list(labels)[:10]} "
                         f"(missing {missing[:10]}); distil with a teacher fine-tuned on the same task")
    if model.config.max_position_embeddings < int(enc.lengths().max()):
        raise ValueError(f"--teacher {teacher_path}: sequences of {int(enc.lengths().max())} tokens exceed its "
                         f"{model.config.max_position_embeddings} positions")
    say(f"teacher logits: scoring {len(enc):,} examples with {info['name']} ({path})")
    raw = predict_logits(model, enc, batch_size, device, pad_id)
    out = raw[:, [tl.index(x) for x in labels]].astype(np.float32)
    why = logits_problem(out, (len(enc), len(labels)))
    if why:
        raise ValueError(f"--teacher {teacher_path}: its logits are unusable ({why}); the teacher's weights may be "
                         f"damaged -- re-export or re-train it")
    return out


def teacher_logits(teacher_path: str, enc: Encoded, labels: Sequence[str], vocab_sha256: str, pad_id: int,
                   cache_dir: str | None, device: torch.device, batch_size: int = 128,
                   say: Callable[[str], None] = log) -> tuple[np.ndarray, dict[str, Any]]:
    """The teacher's logits (N, len(labels)) over ``enc``, columns in the student's label order; from the
    cache when the same teacher already scored the same token ids and the entry verifies."""
    path = find_model_dir(teacher_path)
    info = teacher_info(path)
    tvocab = os.path.join(path, "vocab.txt")
    if os.path.isfile(tvocab) and BertTokenizer(tvocab).sha256 != vocab_sha256:
        raise ValueError(f"--teacher {teacher_path}: its vocab.txt differs from the student's vocabulary; the "
                         f"teacher must read the same token ids (distil between models of one vocabulary)")
    shape = (len(enc), len(labels))
    cpath = _cache_path(info, enc, labels, cache_dir)
    if cpath and os.path.exists(cpath):
        arr, why = _read_cached(cpath, shape)
        if arr is not None:
            say(f"teacher logits: cached {cpath} (verified)")
            return arr, dict(info, cache=cpath, cached=True)
        say(f"warning: the teacher-logits cache entry {cpath} is damaged ({why}); computing it again")
    out = _score(path, teacher_path, info, enc, labels, pad_id, device, batch_size, say)
    if cpath:
        buf = io.BytesIO()
        np.save(buf, out)
        try:
            atomic_write_bytes(cpath, buf.getvalue())     # the entry, then its SHA-256 manifest
            out = np.load(cpath, mmap_mode="r")
        except (OSError, OutputWriteError) as e:
            say(f"warning: cannot write the teacher-logits cache ({e}); continuing without it")
    return out, dict(info, cache=cpath, cached=False)


__all__ = ["teacher_logits", "teacher_info", "logits_problem", "MAX_ABS_LOGIT"]
