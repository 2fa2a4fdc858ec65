"""Classifier inference and scoring shared by fine-tuning, ``predict`` and the grid."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from miniroberta.data.tasks import Encoded
from miniroberta.modeling.bert import BertForSequenceClassification


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


@torch.no_grad()
def predict_logits(model: BertForSequenceClassification, enc: Encoded, batch_size: int,
                   device: torch.device, pad_id: int = 0) -> np.ndarray:
    """Logits (N, num_labels) as float32 in the original order, in the model's own precision;
    batches are length-sorted for speed."""
    was = model.training
    model.eval()
    order = np.argsort(enc.lengths(), kind="stable")
    out = np.zeros((len(enc), model.num_labels), dtype=np.float32)
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        ids, types, mask = to_device(device, *enc.batch(idx, pad_id))
        logits = model(ids, attention_mask=mask, token_type_ids=types).logits
        out[idx] = logits.float().cpu().numpy()
    model.train(was)
    return out


__all__ = ["classification_metrics", "mean_cross_entropy", "predict_logits", "to_device"]
