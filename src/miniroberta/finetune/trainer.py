"""Deprecated: 0.2's ``miniroberta.finetune.trainer``, kept only so that callers not yet moved keep working.

Its contents moved (issue 22): the settings to ``finetune.config``, the data of a run to ``finetune.data``, the
classifier task to ``finetune.task``, a run, the model building/saving and the ``finetune`` command to
``finetune.run``. Import from ``miniroberta.finetune`` (``FinetuneConfig``, ``run_finetune``) or those modules;
this module goes once ``study/`` and ``bench/`` import from there.
"""
from miniroberta.finetune.config import FinetuneConfig
from miniroberta.finetune.data import load_task_data
from miniroberta.finetune.run import (build_classifier, config_from_args, configure, print_result, run,
                                      run_finetune, save_classifier)
from miniroberta.finetune.task import ClassifierBatch, ClassifierTask

__all__ = ["print_result", "config_from_args", "FinetuneConfig", "run_finetune", "build_classifier",
           "save_classifier", "ClassifierTask", "ClassifierBatch", "configure", "run", "load_task_data"]
