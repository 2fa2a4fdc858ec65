"""Task distillation: ``miniroberta distill`` -- pre-trained distillation (PD).

Turc, Chang, Lee and Toutanova, "Well-Read Students Learn Better: On the Importance of
Pre-training Compact Models" (2019, arXiv:1908.08962): a compact model that was first pretrained
with MLM, then trained on a large fine-tuned teacher's soft predictions over unlabeled in-domain
text, beats the same compact model fine-tuned directly on the labels. The 24 miniature sizes come
from that paper.

A distillation run is a fine-tuning run (same engine, data readers, epochs, dev selection,
resume, precision, HF export) whose training examples are the task's train texts plus optional
unlabeled transfer texts (``--transfer_path``: one text, or one tab-separated pair, per line), and
whose loss is::

    (1 - alpha) * T^2 * CE(softmax(teacher / T), softmax(student / T))  +  alpha * CE(gold, student)

summed over examples (the hard term only where a gold label exists; ``alpha = 0`` is pure
distillation). The teacher (any HF ``BertForSequenceClassification`` directory with the same
vocabulary) is run once over the training examples; its logits are cached on disk as ``.npy``
(memory-mapped), keyed by the teacher's weights, the exact token ids and the label order, so
several students -- and a resumed run -- reuse them, and any change to the teacher or the data
computes them again.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from miniroberta.data import tasks as T
from miniroberta.utils import atomic_write, log

CACHE_VERSION = 1


def distill_loss_sum(student: torch.Tensor, teacher: torch.Tensor, gold: torch.Tensor, temperature: float,
                     alpha: float) -> torch.Tensor:
    """The summed loss of a batch: soft cross-entropy to the teacher at ``temperature`` (times
    T^2, so gradients keep their scale across temperatures; Hinton et al. 2015) and, with weight
    ``alpha``, cross-entropy to the gold labels where ``gold >= 0``."""
    t = float(temperature)
    soft = -(F.softmax(teacher.float() / t, -1) * F.log_softmax(student.float() / t, -1)).sum() * (t * t)
    loss = (1.0 - alpha) * soft
    if alpha > 0:
        labelled = gold >= 0
        if bool(labelled.any()):
            loss = loss + alpha * F.cross_entropy(student.float()[labelled], gold[labelled], reduction="sum")
    return loss


def read_transfer(path: str, n_fields: int) -> T.TaskData:
    """Unlabeled transfer texts: one text (or ``n_fields`` tab-separated texts) per line; blank
    lines are skipped; a line with another number of fields is an error naming it."""
    from miniroberta.textio import read_text_lines
    texts: list[list[str]] = [[] for _ in range(n_fields)]
    lines = []
    for lineno, line in read_text_lines(path):
        parts = line.split("\t")
        if len(parts) != n_fields:
            raise T.TaskDataError(f"{path}:{lineno}: expected {n_fields} tab-separated text(s) (the task's text "
                                  f"fields), found {len(parts)}; fix the line or remove it")
        for k in range(n_fields):
            texts[k].append(parts[k])
        lines.append(lineno)
    if not lines:
        raise T.TaskDataError(f"{path}: no texts (one text, or one tab-separated pair, per line)")
    fields = tuple(f"text_{chr(ord('a') + k)}" for k in range(n_fields))
    return T.TaskData(path=os.path.abspath(path), text_fields=fields, texts=texts, labels=None,
                      ids=list(range(len(lines))), lines=lines)


def concat_encoded(a: T.Encoded, b: T.Encoded) -> T.Encoded:
    offs = np.concatenate([a.offsets, a.offsets[-1] + b.offsets[1:]])
    return T.Encoded(np.concatenate([a.ids, b.ids]), offs, np.concatenate([a.type_split, b.type_split]))


def _encoded_digest(enc: T.Encoded) -> str:
    h = hashlib.sha256()
    for arr in (enc.ids, enc.offsets, enc.type_split):
        h.update(np.ascontiguousarray(arr).view(np.uint8))
    return h.hexdigest()


def teacher_info(teacher_path: str) -> dict[str, Any]:
    from miniroberta.finetune.grid import model_fingerprint
    from miniroberta.interop.checkpoint import find_model_dir, load_weights
    path = find_model_dir(teacher_path)
    cfg, _, meta = load_weights(path)
    fp = model_fingerprint(path)
    return dict(path=fp["path"], sha256=fp["sha256"], name=cfg.name,
                num_parameters=cfg.num_parameters(mlm_head=False, pooler=True))


def teacher_logits(teacher_path: str, enc: T.Encoded, labels: Sequence[str], vocab_sha256: str, pad_id: int,
                   cache_dir: str | None, device: torch.device, batch_size: int = 128,
                   say=log) -> tuple[np.ndarray, dict[str, Any]]:
    """The teacher's logits (N, len(labels)) over ``enc``, columns in the student's label order;
    from the cache when the same teacher already scored the same token ids."""
    from miniroberta.finetune.inference import predict_logits
    from miniroberta.interop.checkpoint import find_model_dir, load_finetuned
    from miniroberta.modeling.tokenizer import BertTokenizer
    path = find_model_dir(teacher_path)
    info = teacher_info(path)
    tvocab = os.path.join(path, "vocab.txt")
    if os.path.isfile(tvocab) and BertTokenizer(tvocab).sha256 != vocab_sha256:
        raise ValueError(f"--teacher {teacher_path}: its vocab.txt differs from the student's vocabulary; the "
                         f"teacher must read the same token ids (distil between models of one vocabulary)")
    key_obj = dict(v=CACHE_VERSION, teacher=info["sha256"], tokens=_encoded_digest(enc), labels=list(labels))
    key = hashlib.sha256(json.dumps(key_obj, sort_keys=True).encode()).hexdigest()[:24]
    cache_dir = T.default_cache_dir() if cache_dir is None else cache_dir
    cpath = os.path.join(cache_dir, "teacher_logits", f"{key}.npy") if cache_dir else None
    if cpath and os.path.isfile(cpath):
        try:
            arr = np.load(cpath, mmap_mode="r")
            if arr.shape == (len(enc), len(labels)):
                say(f"teacher logits: cached {cpath}")
                return arr, dict(info, cache=cpath, cached=True)
        except (OSError, ValueError):
            pass   # unreadable: compute again
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
    if cpath:
        try:
            with atomic_write(cpath, "wb") as f:
                np.save(f, out)
            out = np.load(cpath, mmap_mode="r")
        except OSError:
            pass  # a read-only cache is not an error
    return out, dict(info, cache=cpath, cached=False)


# --------------------------------------------------------------------------------- CLI
def configure(p: argparse.ArgumentParser) -> None:
    from miniroberta.finetune.trainer import configure as ft_configure
    ft_configure(p)
    g = p.add_argument_group("distillation")
    g.add_argument("--teacher", required=True,
                   help="fine-tuned teacher: an HF BertForSequenceClassification directory (ours or another tool's)")
    g.add_argument("--student", default=None,
                   help="the student's starting weights (checkpoint, HF dir, UER .bin) or a preset (tiny, L2_H128 ...) "
                        "for the no-pretraining ablation; same as --pretrained_model_path / --config_path")
    g.add_argument("--temperature", type=float, default=2.0, help="softmax temperature of the soft targets")
    g.add_argument("--alpha", type=float, default=0.0,
                   help="weight of the gold-label cross-entropy (0 = soft targets only)")
    g.add_argument("--transfer_path", default=None,
                   help="unlabeled in-domain texts added to the train texts: one text (or tab-separated pair) per line")


def run(args: argparse.Namespace) -> int:
    from miniroberta.finetune.trainer import config_from_args, print_result, run_finetune
    if args.student:
        if os.path.exists(args.student):
            args.pretrained_model_path = args.student
        else:
            args.config_path = args.student
    args.teacher_path = args.teacher
    cfg = config_from_args(args)
    res = run_finetune(cfg)
    return print_result(res)


__all__ = ["distill_loss_sum", "read_transfer", "teacher_logits", "teacher_info", "concat_encoded", "configure", "run"]
