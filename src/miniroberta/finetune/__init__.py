"""Fine-tuning and evaluation: settings (``config``), the data of a run (``data``), the teacher's soft targets
(``teacher``), the classifier task on the engine (``task``), a run and the model it saves (``run``), inference
and scoring (``inference``); the entry points ``distill``, ``grid``, ``predict`` and ``report`` above them.

    from miniroberta.finetune import FinetuneConfig, run_finetune
    result = run_finetune(FinetuneConfig(pretrained_model_path="models/tiny", task="chnsenticorp",
                                         output_dir="runs/chnsenticorp"))
"""
from miniroberta.finetune.config import FinetuneConfig, FinetuneError, GridConfig
from miniroberta.finetune.run import build_classifier, run_finetune, save_classifier

__all__ = ["FinetuneConfig", "GridConfig", "FinetuneError", "run_finetune", "build_classifier", "save_classifier"]
