"""Deprecated: 0.2's ``miniroberta.finetune.trainer``, kept only so that callers not yet moved keep working.

Its contents moved (issue 22): the settings to ``finetune.config``, the data of a run to ``finetune.data``, the
classifier task to ``finetune.task``, a run, the model building/saving and the ``finetune`` command to
``finetune.run``. Import from ``miniroberta.finetune`` (``FinetuneConfig``, ``run_finetune``) or those modules;
this module goes once ``study/`` and ``bench/`` import from there.
"""
from typing import Any, Callable

from miniroberta.engine.device import resolve_device
from miniroberta.finetune.config import FinetuneConfig
from miniroberta.finetune.data import load_task_data, prepare_data
from miniroberta.finetune.run import (build_classifier, config_from_args, configure, print_result, run,
                                      run_finetune, save_classifier)
from miniroberta.finetune.task import ClassifierBatch, ClassifierTask

def _prepare_data(cfg: FinetuneConfig, say: Callable[[str], None]) -> dict[str, Any]:
    """0.2's dict form of ``finetune.data.prepare_data`` (bench/distill_study.py)."""
    return dict(vars(prepare_data(cfg, resolve_device(cfg.device), say)))


__all__ = ["print_result", "config_from_args", "FinetuneConfig", "run_finetune", "build_classifier",
           "save_classifier", "ClassifierTask", "ClassifierBatch", "configure", "run", "load_task_data"]
