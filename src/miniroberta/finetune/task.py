"""Sequence classification as an engine task (``engine.trainer.Task``): fine-tuning and task distillation.

Epoch ``e`` visits the training set in the order of a permutation seeded by ``(seed, e)``, so the data
position is a function of the step and a run resumes exactly from any step. Dev accuracy after every
epoch decides the best epoch, whose weights are kept (in the training state too).

When the state is written (the engine calls :meth:`ClassifierTask.save`, then :meth:`state_dict`): every
``save_every_s`` seconds of training (so a killed run loses at most that much: the default 120 s bounds the
loss to about two minutes whatever the model size or machine speed -- a step count could not: 2 minutes are
~1,800 tiny steps but ~25 base steps on a 2-core CPU), every ``save_steps`` steps if given, at epoch ends
when ``save_every_s`` is 0, at the last step and when the run is stopped. A state that is slow to write
stretches the interval so saving stays under ~10 % of the run (said in the log). The engine's loop writes
the last and the stopping state; this task asks for the others from :meth:`after_step`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from miniroberta.engine.metrics import RunLog
from miniroberta.engine.trainer import Trainer
from miniroberta.finetune.config import FinetuneConfig
from miniroberta.finetune.data import FinetuneData
from miniroberta.finetune.inference import classification_metrics, mean_cross_entropy, predict_logits, to_device
from miniroberta.modeling.bert import BertForSequenceClassification
from miniroberta.modeling.loss import soft_target_loss_sum
from miniroberta.utils import format_duration

TASK_STATE_VERSION = 2   # 2: settings from settings.result_dict, the data identity, the partial epoch's sums


@dataclass
class ClassifierBatch:
    ids: np.ndarray          # (B, L) padded to the batch's longest
    types: np.ndarray        # (B, L)
    mask: np.ndarray         # (B, L)
    labels: np.ndarray       # (B,); -1 = unlabeled (a transfer text)
    real_index: np.ndarray   # flat indices of the real tokens (the padding-free path)
    cls_rows: np.ndarray     # where each sequence's [CLS] sits among them
    soft: np.ndarray | None = None   # (B, C) teacher logits (distillation)

    @classmethod
    def make(cls, ids: np.ndarray, types: np.ndarray, mask: np.ndarray, labels: np.ndarray,
             soft: np.ndarray | None = None) -> "ClassifierBatch":
        lengths = mask.sum(1)
        cls_rows = np.zeros(len(lengths), dtype=np.int64)
        np.cumsum(lengths[:-1], out=cls_rows[1:])
        return cls(ids, types, mask, labels, np.flatnonzero(mask.reshape(-1)), cls_rows,
                   None if soft is None else np.ascontiguousarray(soft, dtype=np.float32))

    @property
    def units(self) -> int:
        return len(self.labels)

    @property
    def real_tokens(self) -> int:
        return int(self.mask.sum())

    @property
    def padded_tokens(self) -> int:
        return int(self.mask.size)


class ClassifierTask:
    """See the module docstring. ``state_path``: where :meth:`after_step` asks the engine to write the
    intermediate states (None: no intermediate states); ``advice``: the engine's divergence advice."""
    name = "finetune"

    def __init__(self, cfg: FinetuneConfig, model: BertForSequenceClassification, data: FinetuneData,
                 device: torch.device, state_path: str | None = None, advice: str = "") -> None:
        self.cfg, self.model, self.device = cfg, model, device
        self.pad_id, self.num_labels = data.tok.pad_id, len(data.labels)
        self.enc_train, self.y_train, self.enc_dev, self.y_dev = data.enc_train, data.y_train, data.enc_dev, data.y_dev
        self.soft = data.soft
        self.identity = data.identity()
        self.state_path, self.advice = state_path, advice
        self.n = len(self.enc_train)
        self.steps_per_epoch = math.ceil(self.n / cfg.batch_size)
        self.eval_bs = cfg.eval_batch_size or max(64, 2 * cfg.batch_size)
        self.epochs: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self._perm: tuple[int, np.ndarray] | None = None
        self._epoch_t0 = time.time()
        self._epoch_counts = [0, 0]            # examples, real tokens of the running epoch (this session)
        self._mark = (0.0, 0.0)                # session loss/units sums where the running epoch began
        self._saved_at = time.monotonic()
        self._save_interval = float(cfg.save_every_s)
        self._partial_at_save = (0.0, 0.0)
        self._eval_s: float | None = None      # the last dev pass's duration

    # ------------------------------------------------------------------ data
    def permutation(self, epoch: int) -> np.ndarray:
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.cfg.seed, epoch, 0xF17E]).permutation(self.n))
        return self._perm[1]

    def batches(self, step: int) -> list[ClassifierBatch]:
        epoch, b = divmod(step, self.steps_per_epoch)
        idx = self.permutation(epoch)[b * self.cfg.batch_size:(b + 1) * self.cfg.batch_size]
        ids, types, mask = self.enc_train.batch(idx, self.pad_id)
        return [ClassifierBatch.make(ids, types, mask, self.y_train[idx],
                                     None if self.soft is None else self.soft[idx])]

    def loss(self, model: torch.nn.Module, b: ClassifierBatch) -> tuple[torch.Tensor, torch.Tensor]:
        ids, types, mask, gold, real, cls_rows = to_device(self.device, b.ids, b.types, b.mask, b.labels,
                                                           b.real_index, b.cls_rows)
        if self.cfg.unpad:
            logits = model(ids, mask, types, real, cls_rows).float()
        else:
            logits = model(ids, attention_mask=mask, token_type_ids=types).logits.float()
        self._epoch_counts[0] += len(b.labels)
        self._epoch_counts[1] += b.real_tokens
        if b.soft is not None:   # distillation; "accuracy" = agreement with the teacher
            teacher = torch.from_numpy(b.soft).to(self.device, non_blocking=True)
            loss = soft_target_loss_sum(logits, teacher, gold, self.cfg.temperature, self.cfg.alpha)
            return loss, (logits.detach().argmax(-1) == teacher.argmax(-1)).sum()
        loss = F.cross_entropy(logits, gold, reduction="sum")
        return loss, (logits.detach().argmax(-1) == gold).sum()

    # ------------------------------------------------------------------ hooks
    def report_fields(self, trainer: Trainer, log: RunLog) -> dict[str, Any]:
        return {"epoch": trainer.step / self.steps_per_epoch, "eta_extra_s": self.eta_extra_s(trainer)}

    def eta_extra_s(self, trainer: Trainer) -> float:
        """Seconds of dev evaluation still to come (the engine's ETA counts training steps): the last dev pass's
        duration, or before the first an estimate from the training rate, times the epoch ends left."""
        left = math.ceil(trainer.total_steps / self.steps_per_epoch) - len(self.epochs)
        if left <= 0:
            return 0.0
        if self._eval_s is not None:
            return left * self._eval_s
        elapsed = max(1e-9, time.time() - self._epoch_t0)
        rate = self._epoch_counts[0] / elapsed           # training examples/s; a forward is ~1/3 of a step
        return left * len(self.enc_dev) / (3 * rate) if rate > 0 else 0.0

    def after_step(self, trainer: Trainer, log: RunLog) -> None:
        epoch_end = trainer.step % self.steps_per_epoch == 0 or trainer.step == trainer.total_steps
        if epoch_end:
            self.evaluate(trainer, log)
        if trainer.step == trainer.total_steps or not self.state_path:
            return                                        # the engine writes the last state
        every_n = self.cfg.save_steps and trainer.step % self.cfg.save_steps == 0
        timed = self.cfg.save_every_s and time.monotonic() - self._saved_at >= self._save_interval
        if (epoch_end and not self.cfg.save_every_s) or every_n or timed:
            t0 = time.monotonic()
            trainer.save(self, log, self.state_path, final=False, advice=self.advice)
            self._saved_at = time.monotonic()             # the interval counts training time, not saving time
            self._bound_save_overhead(self._saved_at - t0, log)

    def _bound_save_overhead(self, took: float, log: RunLog) -> None:
        """Keep timed saves under ~10 % of the run: a state that takes longer than a tenth of the interval to
        write (a base model's 1.6 GB on a slow disk) stretches the interval to ten times the save, once said."""
        if self.cfg.save_every_s and 10 * took > self._save_interval:
            if self._save_interval == self.cfg.save_every_s:
                log.say(f"writing the training state takes {took:.1f} s: saving it every {10 * took:.0f} s (not "
                        f"{self.cfg.save_every_s:g}) keeps that under 10 % of the run")
            self._save_interval = 10 * took

    def evaluate(self, trainer: Trainer, log: RunLog) -> None:
        """The dev pass of an epoch end: metrics, the epoch record, the best epoch's weights."""
        epoch = math.ceil(trainer.step / self.steps_per_epoch)
        tot = trainer.totals()
        ep_time = time.time() - self._epoch_t0
        t_ev = time.time()
        logits = predict_logits(self.model, self.enc_dev, self.eval_bs, self.device, self.pad_id)
        m = classification_metrics(self.y_dev, logits.argmax(1), self.num_labels)
        self._eval_s = time.time() - t_ev
        rec = dict(epoch=epoch, train_loss=(tot.loss - self._mark[0]) / max(1.0, tot.units - self._mark[1]),
                   dev_loss=mean_cross_entropy(logits, self.y_dev), dev_acc=m["acc"], dev_macro_f1=m["macro_f1"],
                   dev_correct=m["correct"], dev_total=m["total"], train_time_s=ep_time, eval_time_s=self._eval_s,
                   train_examples_per_s=self._epoch_counts[0] / max(ep_time, 1e-9),
                   train_tokens_per_s=self._epoch_counts[1] / max(ep_time, 1e-9))
        self.epochs.append(rec)
        log.write("epoch", trainer.step, **rec)
        improved = self.best is None or m["acc"] > self.best["dev_acc"]
        log.say(f"epoch {epoch}: train loss {rec['train_loss']:.4f}, dev acc {m['acc']:.4f} ({m['correct']}/"
                f"{m['total']}), macro-F1 {m['macro_f1']:.4f}, {format_duration(ep_time)}"
                f"{'  *best*' if improved else ''}")
        if improved:
            self.best = dict(rec, confusion=m["confusion"], predictions=logits.argmax(1).tolist())
            self.best_state = trainer.precision.state_dict()
        self._mark = (tot.loss, tot.units)
        self._epoch_t0 = time.time()
        self._epoch_counts = [0, 0]

    # ------------------------------------------------------------------ state
    def save(self, trainer: Trainer, final: bool) -> str | None:
        """Called by the engine as it writes the training state: note the running epoch's sums (they go into
        the state). The best epoch's weights are written once training ends (``finetune.run``)."""
        tot = trainer.totals()
        self._partial_at_save = (tot.loss - self._mark[0], tot.units - self._mark[1])
        self._saved_at = time.monotonic()
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"version": TASK_STATE_VERSION, "epochs": self.epochs, "best": self.best,
                "best_state": self.best_state, "settings": self.cfg.resume_key(), "data": self.identity,
                "partial_epoch": list(self._partial_at_save)}

    def load_state_dict(self, st: dict[str, Any]) -> None:
        self.epochs, self.best, self.best_state = st["epochs"], st["best"], st["best_state"]
        loss, units = st.get("partial_epoch", (0.0, 0.0))
        self._mark = (-float(loss), -float(units))     # this session's sums start at 0, mid-epoch


__all__ = ["ClassifierBatch", "ClassifierTask", "TASK_STATE_VERSION"]
