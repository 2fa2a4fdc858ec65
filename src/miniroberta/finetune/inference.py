"""Classifier inference and scoring shared by fine-tuning, distillation, ``predict`` and the grid:
logits over encoded examples, accuracy / macro-F1 / confusion, the majority-class check, and the
prediction files (CLUE JSON lines or UER's TSV)."""
from __future__ import annotations

import json
import math
from typing import Any, Callable, Sequence

import numpy as np
import torch

from miniroberta.data.tasks import Encoded
from miniroberta.modeling.bert import BertForSequenceClassification
from miniroberta.utils import atomic_write


def classification_metrics(gold: np.ndarray, pred: np.ndarray, num_labels: int) -> dict[str, Any]:
    """Accuracy, macro-F1 (over classes present in gold or predictions, as scikit-learn) and
    the confusion matrix (rows = gold, columns = predicted)."""
    gold = np.asarray(gold, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    conf = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(conf, (gold, pred), 1)
    tp = np.diag(conf).astype(np.float64)
    gold_n = conf.sum(1).astype(np.float64)
    pred_n = conf.sum(0).astype(np.float64)
    present = (gold_n + pred_n) > 0
    f1 = np.where(gold_n + pred_n > 0, 2 * tp / np.maximum(gold_n + pred_n, 1), 0.0)
    return dict(acc=float(tp.sum() / max(len(gold), 1)),
                macro_f1=float(f1[present].mean()) if present.any() else 0.0,
                correct=int(tp.sum()), total=int(len(gold)), confusion=conf.tolist())


def mean_cross_entropy(logits: np.ndarray, gold: np.ndarray) -> float:
    z = logits - logits.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return float(-logp[np.arange(len(gold)), gold].mean())


def to_device(device: torch.device, *arrays: np.ndarray) -> list[torch.Tensor]:
    return [torch.from_numpy(a).to(device, non_blocking=True) for a in arrays]


def in_length_order(enc: Encoded, batch_size: int, pad_id: int, num_labels: int | None,
                    run: "Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]") -> np.ndarray:
    """``run(ids, types, mask) -> logits`` over ``enc`` in length-sorted batches (less padding), the
    logits (N, num_labels; None: from the first batch) put back in the original order as float32 -- the one loop of every classifier
    inference (fine-tuning's dev passes, the teacher's logits, ``predict``, the server)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = np.argsort(enc.lengths(), kind="stable")
    out = np.zeros((len(enc), num_labels), dtype=np.float32) if num_labels else None
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        logits = run(*enc.batch(idx, pad_id))
        if out is None:                      # the number of classes from the first batch
            out = np.zeros((len(enc), logits.shape[1]), dtype=np.float32)
        out[idx] = logits
    return out if out is not None else np.zeros((0, num_labels or 0), dtype=np.float32)


@torch.no_grad()
def predict_logits(model: BertForSequenceClassification, enc: Encoded, batch_size: int,
                   device: torch.device, pad_id: int = 0) -> np.ndarray:
    """Logits (N, num_labels) as float32 in the original order, in the model's own precision."""
    was = model.training
    model.eval()

    def run(ids: np.ndarray, types: np.ndarray, mask: np.ndarray) -> np.ndarray:
        i, t, m = to_device(device, ids, types, mask)
        return model(i, attention_mask=m, token_type_ids=t).logits.float().cpu().numpy()

    try:
        return in_length_order(enc, batch_size, pad_id, model.num_labels, run)
    finally:
        model.train(was)


def majority_class(gold: np.ndarray, num_labels: int) -> tuple[int, float]:
    """(the most frequent class of ``gold``, its share): the accuracy of always predicting it."""
    counts = np.bincount(np.asarray(gold, dtype=np.int64), minlength=num_labels)
    k = int(counts.argmax())
    return k, float(counts[k] / max(1, counts.sum()))


def at_chance(acc: float, majority_rate: float, n: int) -> bool:
    """Whether ``acc`` on ``n`` examples is at, or within the 95 % sampling margin above, the majority-class
    rate: a model that learned nothing usable (it may predict one class for everything)."""
    margin = 1.96 * math.sqrt(max(majority_rate * (1.0 - majority_rate), 1e-12) / max(1, n))
    return acc <= majority_rate + margin


def write_predictions(path: str, ids: Sequence[Any], labels: Sequence[str], submission: str = "tsv",
                      probs: np.ndarray | None = None) -> str:
    """``clue``: JSON lines ``{"id", "label"}`` (the CLUE submission format); ``tsv``: UER-py's
    ``run_classifier_infer.py`` layout (a ``label`` column, and ``prob`` when ``probs`` is given)."""
    if submission not in ("clue", "tsv"):
        raise ValueError(f"unknown output format {submission!r} (clue or tsv)")
    with atomic_write(path, "w", encoding="utf-8") as f:
        if submission == "clue":
            for i, lab in zip(ids, labels):
                f.write(json.dumps({"id": i, "label": lab}, ensure_ascii=False) + "\n")
        else:
            f.write("label" + ("\tprob" if probs is not None else "") + "\n")
            for r, lab in enumerate(labels):
                f.write(lab + ("\t" + " ".join(f"{p:.6f}" for p in probs[r]) if probs is not None else "") + "\n")
    return path


__all__ = ["classification_metrics", "mean_cross_entropy", "predict_logits", "in_length_order", "to_device", "majority_class",
           "at_chance", "write_predictions"]
