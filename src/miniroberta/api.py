"""The public Python API: what the commands do, as functions (``from miniroberta import ...``).

Inference (a model directory of ``convert``/``quickstart``/``finetune``, or an ONNX graph of ``export-onnx``)::

    from miniroberta import pipeline, fill_mask, embed, classify
    fm = pipeline("fill-mask", "quickstart_out/hf_model")      # loaded once, called many times
    fm("中国的首都是[MASK]京。", top_k=3)                      # -> [{"score", "token", "token_str", "sequence"}, ...]
    fill_mask("quickstart_out/hf_model", ["北京是中国的首[MASK]。"])   # one call: load + predict
    embed("quickstart_out/hf_model", ["今天天气很好"], pooling="mean")  # -> np.ndarray (1, H)
    classify("runs/chnsenticorp", ["这家酒店很好"])          # -> [{"label", "score", "scores"}]

Training, with the same settings (and defaults, help and checks) as the commands::

    from miniroberta import preprocess, run_pretrain, export, run_finetune
    preprocess("corpus.txt", "vocab.txt", "ds_seq128", seq_length=128)
    run_pretrain(dataset_path="ds_seq128", vocab_path="vocab.txt", output_model_path="ckpt/model.bin",
             config_path="tiny", total_steps=2000, learning_rate=1e-3, report_steps=100)
    export("ckpt/model.bin-2000", "hf_tiny", vocab_path="vocab.txt")
    run_finetune(pretrained_model_path="hf_tiny", task="chnsenticorp", output_dir="runs/chnsenticorp")

(``run_pretrain`` / ``run_finetune``: ``miniroberta.pretrain`` and ``miniroberta.finetune`` are the subpackages.)
``run_pretrain`` takes every field of :class:`PretrainConfig` (results) and :class:`RunOptions` (speed) as
keywords and sorts them; each function returns what the command writes in its summary.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from miniroberta.data.preprocess import build_dataset
from miniroberta.finetune import FinetuneConfig
from miniroberta.finetune import run_finetune as _run_finetune
from miniroberta.infer.pipelines import classify as _classify
from miniroberta.infer.pipelines import embed as _embed
from miniroberta.infer.pipelines import fill_mask as _fill_mask
from miniroberta.infer.pipelines import load_backend
from miniroberta.interop.checkpoint import load_model
from miniroberta.interop.export import export_checkpoint
from miniroberta.modeling.tokenizer import BertTokenizer, load_tokenizer
from miniroberta.pretrain.config import PretrainConfig, RunOptions
from miniroberta.pretrain.launch import train

TASKS = ("fill-mask", "embed", "classify")


class Pipeline:
    """A model loaded for one task (PyTorch, or onnxruntime for an ONNX graph); call it on texts."""

    def __init__(self, task: str, model: str | None = None, onnx: str | None = None,
                 vocab_path: str | None = None, device: str = "cpu") -> None:
        if task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
        self.task = task
        self.backend, self.tokenizer = load_backend(task, model, onnx, vocab_path, device=device)

    def __call__(self, inputs: str | Sequence[Any], **kw: Any) -> Any:
        if self.task == "fill-mask":
            return _fill_mask(self.backend, self.tokenizer, inputs, **kw)
        if self.task == "embed":
            single = isinstance(inputs, str)
            if kw.get("seq_length") is None:     # 128 (the commands' default), or less for a shorter model
                kw["seq_length"] = min(128, self.backend.info.max_length)
            out = _embed(self.backend, self.tokenizer, [inputs] if isinstance(inputs, str) else list(inputs), **kw)
            return out[0] if single else out
        single = isinstance(inputs, str)
        res = _classify(self.backend, self.tokenizer, [inputs] if single else list(inputs), **kw)
        return res[0] if single else res

    def __repr__(self) -> str:
        return f"Pipeline({self.task!r}, {self.backend.__class__.__name__})"


def pipeline(task: str, model: str | None = None, *, onnx: str | None = None, vocab_path: str | None = None,
             device: str = "cpu") -> Pipeline:
    """Load ``model`` (a directory or checkpoint) or ``onnx`` (an exported graph) for ``task``."""
    return Pipeline(task, model, onnx, vocab_path, device)


def _pipe(task: str, model: "str | Pipeline") -> Pipeline:
    if isinstance(model, Pipeline):
        if model.task != task:
            raise ValueError(f"this pipeline is for {model.task}, not {task}")
        return model
    return Pipeline(task, model)


def fill_mask(model: "str | Pipeline", texts: str | Sequence[str], top_k: int = 5) -> list[Any]:
    """Top-k candidates for each ``[MASK]``; one text gives its list of candidates, several texts a
    list per text (as transformers' fill-mask pipeline)."""
    return _pipe("fill-mask", model)(texts, top_k=top_k)


def embed(model: "str | Pipeline", texts: str | Sequence[str], pooling: str = "cls",
          seq_length: int | None = None) -> np.ndarray:
    """Sentence features (``cls`` or ``mean`` pooling: (N, H); ``sequence``: (N, seq_length, H));
    ``seq_length``: 128, or the model's maximum when that is shorter."""
    return _pipe("embed", model)(texts, pooling=pooling, seq_length=seq_length)


def classify(model: "str | Pipeline", texts: str | Sequence[Any]) -> Any:
    """``{"label", "score", "scores"}`` per text (or ``(text, text_pair)``) with a fine-tuned classifier."""
    return _pipe("classify", model)(texts)


def preprocess(corpus_path: str | Sequence[str], vocab_path: str, dataset_path: str, **settings: Any) -> dict:
    """``miniroberta preprocess`` (``settings``: the fields of ``PreprocessConfig``); returns the manifest."""
    return build_dataset(corpus_path, vocab_path, dataset_path, **settings)


def _split(settings: dict[str, Any]) -> tuple[PretrainConfig, RunOptions]:
    names = {f.name for f in dataclasses.fields(PretrainConfig)}
    unknown = set(settings) - names - {f.name for f in dataclasses.fields(RunOptions)}
    if unknown:
        raise TypeError(f"unknown pretraining setting(s): {', '.join(sorted(unknown))}")
    cfg = PretrainConfig(**{k: v for k, v in settings.items() if k in names})
    return cfg, RunOptions(**{k: v for k, v in settings.items() if k not in names})


def run_pretrain(**settings: Any) -> dict[str, Any]:
    """``miniroberta pretrain`` with the fields of ``PretrainConfig`` and ``RunOptions`` as keywords."""
    cfg, opts = _split(settings)
    return train(cfg, opts)


def run_finetune(**settings: Any) -> dict[str, Any]:
    """``miniroberta finetune`` with the fields of ``FinetuneConfig`` as keywords; returns its result."""
    return _run_finetune(FinetuneConfig(**settings))


def export(checkpoint: str, output_dir: str, vocab_path: str | None = None, **kw: Any) -> str:
    """``miniroberta convert`` to a HuggingFace directory (loads with ``pipeline('fill-mask', model=DIR)``)."""
    export_checkpoint(checkpoint, output_dir, vocab_path=vocab_path, **kw)
    return str(output_dir)


__all__ = ["Pipeline", "pipeline", "fill_mask", "embed", "classify", "load_model", "load_tokenizer", "BertTokenizer",
           "preprocess", "run_pretrain", "run_finetune", "export", "PretrainConfig", "RunOptions", "FinetuneConfig"]
