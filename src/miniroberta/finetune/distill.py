"""Task distillation: ``miniroberta distill`` -- pre-trained distillation (PD). An entry point only: the
command line, mapped onto a fine-tuning run with a teacher (nothing in the package imports this module).

Turc, Chang, Lee and Toutanova, "Well-Read Students Learn Better: On the Importance of
Pre-training Compact Models" (2019, arXiv:1908.08962): a compact model that was first pretrained
with MLM, then trained on a large fine-tuned teacher's soft predictions over unlabeled in-domain
text, beats the same compact model fine-tuned directly on the labels. The 24 miniature sizes come
from that paper.

A distillation run is a fine-tuning run (``finetune.run``: same engine, data readers, epochs, dev
selection, resume, precision, HF export) whose training examples are the task's train texts plus optional
unlabeled transfer texts (``--transfer_path``: one text, or one tab-separated pair, per line), and
whose loss is ``modeling.loss.soft_target_loss_sum``::

    (1 - alpha) * T^2 * CE(softmax(teacher / T), softmax(student / T))  +  alpha * CE(gold, student)

summed over examples (the hard term only where a gold label exists; ``alpha = 0`` is pure
distillation). The teacher's logits come from ``finetune.teacher`` (computed once, cached and verified).
A preset as ``--student`` (random init) gets the learning rate measured for random init, like
``finetune --config_path`` (``finetune.config``).
"""
from __future__ import annotations

import argparse
import os

from miniroberta.finetune.config import TRAINING, FinetuneConfig
from miniroberta.finetune.run import add_amp_alias, config_from_args, print_result, run_finetune
from miniroberta.settings import add_options


def configure(p: argparse.ArgumentParser) -> None:
    """Every ``finetune`` option (generated from ``FinetuneConfig``), the distillation group with
    ``--teacher`` required, and ``--student``."""
    groups: dict = {}
    add_options(p, FinetuneConfig, groups=groups)
    add_amp_alias(groups[TRAINING])
    for action in p._actions:                     # (argparse keeps no public handle on an added option)
        if action.dest == "teacher_path":
            action.required = True
    groups["model"].add_argument(
        "--student", default=None,
        help="the student's starting weights (checkpoint, HF dir, UER .bin), or a preset (tiny, L2_H128 ...) for the "
             "no-pretraining ablation (random init, learning rate 1e-3 unless given); the same as "
             "--pretrained_model_path / --config_path")


def run(args: argparse.Namespace) -> int:
    overrides = {}
    if args.student:
        key = "pretrained_model_path" if os.path.exists(args.student) else "config_path"
        overrides[key] = args.student
    return print_result(run_finetune(config_from_args(args, **overrides)))


__all__ = ["configure", "run"]
