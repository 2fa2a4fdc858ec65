"""The masked-LM task on the training engine, and its held-out evaluation.

:class:`MlmTask` is what ``engine.Trainer.fit`` trains: batches from the data stream
(``pretrain.batches``), the loss on the masked positions only (the decoder fused into the
cross-entropy, ``modeling.loss``), held-out evaluation with fixed masks at report steps, native
checkpoints. With a teacher (general distillation) the loss adds ``distill_alpha * T^2 *
KL(teacher || student)`` over the masked positions.

Loss: summed cross-entropy over the masked tokens of the whole optimizer step (all ranks,
all micro-batches) divided by their count -- token-weighted, so two processes with batch B
equal one process with batch 2B (the reference averages per-batch means instead).
"""
from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from torch import nn

from miniroberta.data.dataset import MlmDataset
from miniroberta.data.masking import EVAL_EPOCH, MaskingConfig, MlmBatch, SpecialIds, collate
from miniroberta.engine.metrics import RunLog
from miniroberta.engine.trainer import Trainer
from miniroberta.interop.checkpoint import CheckpointError, find_model_dir, load_model, save_native
from miniroberta.modeling.config import ConfigError, ModelConfig
from miniroberta.modeling.loss import cross_entropy_sum, kl_div_sum
from miniroberta.modeling.tokenizer import BertTokenizer
from miniroberta.modeling.unpad import UnpaddedMLM
from miniroberta.pretrain.batches import BatchSource
from miniroberta.pretrain.config import PretrainConfig, PretrainError, RunOptions


class MlmTask:
    """Masked-LM pretraining for the engine: batches from the stream, loss on the masked
    positions only (fused cross-entropy), held-out evaluation, native checkpoints."""
    name = "pretrain"

    def __init__(self, cfg: PretrainConfig, opts: RunOptions, model: nn.Module, mc: ModelConfig, ds: MlmDataset,
                 src: BatchSource, accumulation: int, device: torch.device, meta: dict[str, Any],
                 eval_ds: MlmDataset | None, eval_mcfg: MaskingConfig | None, special: SpecialIds) -> None:
        self.cfg, self.opts, self.model, self.mc, self.ds, self.src = cfg, opts, model, mc, ds, src
        self.A, self.device, self.meta = accumulation, device, meta
        self.eval_ds, self.eval_mcfg, self.special = eval_ds, eval_mcfg, special
        self.last_eval: dict[str, Any] | None = None
        self.teacher: nn.Module | None = None    # UnpaddedMLM over the frozen teacher (--teacher)

    def batches(self, step: int) -> list[MlmBatch]:
        assert self.src.j == step * self.A, "the batch stream is out of step with the trainer"
        return [self.src.next() for _ in range(self.A)]

    def loss(self, model: nn.Module, b: MlmBatch) -> tuple[torch.Tensor, torch.Tensor]:
        if b.pinned is not None:
            t: dict[str, Any] = {k: (v.to(self.device, non_blocking=True) if v is not None else None)
                                 for k, v in b.pinned.items()}
        else:
            t = b.to_torch(self.device)
        mask = t["attention_mask"] if b.has_padding else None
        if self.teacher is not None:
            return self.distill_loss(model, t, mask)
        if self.opts.unpad:
            return model(t["input_ids"], mask, t["masked_positions"], t["real_index"], t["masked_real_index"],
                         labels=t["labels"])
        logits = model(t["input_ids"], mask, None, masked_positions=t["masked_positions"]).logits
        return cross_entropy_sum(logits, t["labels"])

    def _logits(self, model: nn.Module, t: dict[str, Any], mask: torch.Tensor | None) -> torch.Tensor:
        """(M, V) logits of the masked positions, by the unpadded or the padded forward."""
        if self.opts.unpad:
            return model(t["input_ids"], mask, t["masked_positions"], t["real_index"], t["masked_real_index"])
        return model(t["input_ids"], mask, None, masked_positions=t["masked_positions"]).logits

    def distill_loss(self, model: nn.Module, t: dict[str, Any],
                     mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """MLM loss + distill_alpha * T^2 * KL(teacher || student), summed over the masked
        positions; the teacher sees the same masked input, in inference mode (wrapped like the student:
        the unpadded forward, or the padded model with ``--no_unpad``)."""
        if self.teacher is None:
            raise ValueError("distill_loss needs a teacher (--teacher)")
        logits = self._logits(model, t, mask)
        with torch.no_grad():
            teacher = self._logits(self.teacher, t, mask)
        ce, correct = cross_entropy_sum(logits, t["labels"])
        return ce + self.cfg.distill_alpha * kl_div_sum(logits, teacher, self.cfg.distill_temperature), correct

    def evaluate(self, trainer: Trainer, log: RunLog) -> dict[str, Any]:
        if self.eval_ds is None or self.eval_mcfg is None:
            raise ValueError("evaluate needs a held-out dataset and its masking")
        self.last_eval = evaluate(self.model, self.eval_ds, self.special, self.eval_mcfg, self.cfg.batch_size,
                                  self.device, self.opts.eval_max_instances, self.opts.pad_to_multiple_of,
                                  step=trainer.step)
        return self.last_eval

    def report_fields(self, trainer: Trainer, log: RunLog) -> dict[str, Any]:
        every = self.opts.eval_steps or self.opts.report_steps
        if self.eval_ds is None or not (trainer.step % every == 0 or trainer.step == trainer.total_steps):
            return {}
        ev = self.evaluate(trainer, log)
        return {"eval_loss": ev["loss"], "eval_accuracy": ev["mlm_accuracy"]}

    def after_step(self, trainer: Trainer, log: RunLog) -> None:
        pass

    def eval_before_stop(self, trainer: Trainer, log: RunLog) -> None:
        """A time-budget stop ends a stage: measure the held-out loss of its last weights."""
        if self.eval_ds is not None and (self.last_eval or {}).get("step") != trainer.step:
            ev = self.evaluate(trainer, log)
            log.write("eval", trainer.step, eval_loss=ev["loss"], eval_accuracy=ev["mlm_accuracy"])
            log.say(f"step {trainer.step} | eval loss {ev['loss']:.4f} acc {ev['mlm_accuracy']:.3f}")

    def save(self, trainer: Trainer, final: bool) -> str:
        wpath = f"{self.cfg.output_model_path}-{trainer.step}"
        meta = {**self.meta, "step": trainer.step, "tokens_seen": trainer.tokens_at_save, "final_loss": trainer.last_loss,
                "mlm_acc": trainer.last_accuracy, "eval_loss": (self.last_eval or {}).get("loss"),
                "eval_mlm_acc": (self.last_eval or {}).get("mlm_accuracy"), "final": final,
                "precision": trainer.precision.kind}
        save_native(wpath, trainer.precision.state_dict(), self.mc, {k: v for k, v in meta.items() if v is not None})
        return wpath

    def state_dict(self) -> dict[str, Any]:
        return {"resume_key": self.cfg.resume_key(), "pretrain_config": asdict(self.cfg),
                "model_config": self.mc.to_dict(), "dataset_hash": self.ds.content_hash,
                "dataset_name": self.meta["dataset"]}


def load_teacher(cfg: PretrainConfig, mc: ModelConfig, vocab_sha: str, dev: torch.device, opts: RunOptions) -> nn.Module:
    """The frozen MLM teacher (same vocabulary), wrapped like the student's forward."""
    path = cfg.teacher_path
    if path is None:
        raise PretrainError("load_teacher: no --teacher given")
    try:
        teacher = load_model(path, "mlm")[0]
    except (CheckpointError, ConfigError, FileNotFoundError) as e:
        raise PretrainError(f"--teacher {path}: {e}") from None
    if teacher.config.vocab_size != mc.vocab_size:
        raise PretrainError(f"--teacher {path}: vocab_size {teacher.config.vocab_size} differs from the student's "
                            f"{mc.vocab_size}; distil between models of one vocabulary")
    d = find_model_dir(path) if os.path.isdir(path) else None
    if d and os.path.isfile(os.path.join(d, "vocab.txt")) and BertTokenizer(os.path.join(d, "vocab.txt")).sha256 != vocab_sha:
        raise PretrainError(f"--teacher {path}: its vocab.txt differs from the dataset's vocabulary")
    teacher.to(dev).eval().requires_grad_(False)
    return UnpaddedMLM(teacher, bucket=False) if opts.unpad else teacher


@torch.no_grad()
def evaluate(model: torch.nn.Module, ds: MlmDataset, special: SpecialIds, masking: MaskingConfig, batch_size: int,
             dev: torch.device, max_instances: int, pad_multiple: int, step: int = 0) -> dict[str, Any]:
    """Held-out MLM loss/accuracy with fixed masks (mask epoch ``EVAL_EPOCH``; ``masking`` is
    ``eval_masking()`` in training runs: every chosen position is ``[MASK]``), in dataset order,
    in the model's own precision."""
    was = model.training
    model.eval()
    n = min(len(ds), max_instances) if max_instances else len(ds)
    ce_sum = correct = masked = 0.0
    for a in range(0, n, batch_size):
        idx = np.arange(a, min(n, a + batch_size))
        inst = [ds[int(i)] for i in idx]
        ws = [ds.word_start_flags(int(i)) for i in idx] if masking.whole_word else None
        b = collate(inst, idx, EVAL_EPOCH, special, masking, ws, pad_multiple)
        t = b.to_torch(dev)
        logits = model(t["input_ids"], t["attention_mask"] if b.has_padding else None, None,
                       masked_positions=t["masked_positions"]).logits
        loss, ok = cross_entropy_sum(logits, t["labels"])
        ce_sum += float(loss)
        correct += float(ok)
        masked += b.num_masked
    model.train(was)
    return {"loss": ce_sum / max(1.0, masked), "mlm_accuracy": correct / max(1.0, masked), "instances": n,
            "masked_tokens": int(masked), "step": step}


__all__ = ["MlmTask", "evaluate", "load_teacher"]
