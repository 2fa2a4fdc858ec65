"""The yardstick a held-out MLM score is read against: the unigram baseline.

A model that has learnt nothing but token frequencies -- the *unigram plateau* every MLM run passes
through (held-out loss ~6.2, accuracy ~0.046 on c3_documents.txt for the Chinese vocab) -- predicts each
masked token from how often it occurs in the training data, whatever its context. This module scores
exactly that predictor on the held-out masks a run is evaluated with (``data.masking.eval_masking``:
the same windows, the same positions), so "held-out accuracy 0.14" can be read as "3x the unigram
baseline measured on the same positions", and a run still on the plateau can be told apart from one
that has left it.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from miniroberta.data.dataset import MlmDataset
from miniroberta.data.masking import EVAL_EPOCH, MaskingConfig, SpecialIds, collate

# a held-out accuracy this many times the unigram baseline's, or more, counts as "left the plateau"
# (runs on the plateau measure 0.95-1.05x; the quickstart's 8,000 steps measured 3.0x, docs/quality.md)
LEFT_PLATEAU_RATIO = 1.5


def token_counts(ds: MlmDataset, vocab_size: int, special: SpecialIds, block: int = 4096) -> np.ndarray:
    """How often each token id occurs in ``ds`` as a maskable token (not [CLS]/[SEP]/[PAD])."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for a in range(0, len(ds), block):
        ids = np.concatenate([np.asarray(ds[i], dtype=np.int64) for i in range(a, min(len(ds), a + block))])
        counts += np.bincount(ids, minlength=vocab_size)[:vocab_size]
    for s in (special.cls, special.sep, special.pad):
        counts[s] = 0
    return counts


def unigram_baseline(train: MlmDataset, heldout: MlmDataset, special: SpecialIds, masking: MaskingConfig,
                     vocab_size: int, max_instances: int | None = None, batch_size: int = 256) -> dict[str, Any]:
    """Held-out MLM loss and accuracy of the unigram predictor (add-one smoothed frequencies of
    ``train``) on the masked positions of ``heldout`` under ``masking`` (pass ``eval_masking()``, as the
    training run's evaluation does). Returns ``{loss, mlm_accuracy, masked_tokens, top_token}``."""
    counts = token_counts(train, vocab_size, special).astype(np.float64) + 1.0
    for s in (special.cls, special.sep, special.pad):
        counts[s] = 0.0
    logp = np.log(counts / counts.sum(), where=counts > 0, out=np.full(vocab_size, -np.inf))
    top = int(np.argmax(counts))
    n = min(len(heldout), max_instances) if max_instances else len(heldout)
    nll = 0.0
    correct = masked = 0
    for a in range(0, n, batch_size):
        idx = np.arange(a, min(n, a + batch_size))
        b = collate([heldout[int(i)] for i in idx], idx, EVAL_EPOCH, special, masking, None, 8)
        labels = np.asarray(b.labels, dtype=np.int64)
        nll -= float(logp[labels].sum())
        correct += int((labels == top).sum())
        masked += len(labels)
    return {"loss": nll / max(1, masked), "mlm_accuracy": correct / max(1, masked), "masked_tokens": masked,
            "top_token": top, "instances": n}


def left_plateau(model_accuracy: float, unigram_accuracy: float) -> bool:
    return model_accuracy >= LEFT_PLATEAU_RATIO * unigram_accuracy


__all__ = ["token_counts", "unigram_baseline", "left_plateau", "LEFT_PLATEAU_RATIO"]
