"""miniroberta: pretrain, convert, fine-tune and serve compact Chinese BERT/RoBERTa encoders.

The public API (``miniroberta.api``, loaded on first use so that ``import miniroberta`` stays light)::

    from miniroberta import pipeline, fill_mask, embed, classify, preprocess, run_pretrain, run_finetune, export
"""
from miniroberta.engine.threads import set_wait_policy as _set_wait_policy
from miniroberta.version import __version__

# OpenMP threads that wait spin only briefly before they sleep, so that two jobs on one machine do not stall
# each other (engine/threads.py, docs/performance.md); it must be set before torch starts its OpenMP runtime,
# so here, first.
_set_wait_policy()

_API = ("Pipeline", "pipeline", "fill_mask", "embed", "classify", "load_model", "load_tokenizer", "BertTokenizer",
        "preprocess", "run_pretrain", "run_finetune", "export", "PretrainConfig", "RunOptions", "FinetuneConfig")


def __getattr__(name: str):
    if name in _API:
        from miniroberta import api  # noqa: PLC0415 -- lazy: `import miniroberta` must not import torch
        return getattr(api, name)
    raise AttributeError(f"module 'miniroberta' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])


__all__ = ["__version__", *_API]
