"""Label unlabeled files with a fine-tuned classifier (``miniroberta predict``).

Output formats:
* ``clue`` (tnews, iflytek, ocnli): JSON lines ``{"id": ..., "label": "..."}`` -- the CLUE
  submission format; ids come from the input's ``id`` field (row index when absent).
* ``tsv`` (other tasks): UER-py ``run_classifier_infer.py`` layout -- header ``label`` (and
  ``prob`` with ``--output_prob``), one original label string per input row.

``--output`` is claimed like every output (``miniroberta.outputs``): an existing file is refused unless
``--overwrite`` (which moves it aside to ``NAME.old-<time>``), and two runs cannot write it at once.
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from typing import Any, Sequence

from miniroberta.data.tasks import TASKS, encode_data, read_examples
from miniroberta.engine.threads import configure_threads
from miniroberta.finetune.inference import write_predictions
from miniroberta.infer.backends import Backend, OnnxBackend, TorchBackend, check_onnx_vocab, vocab_beside_onnx
from miniroberta.infer.pipelines import classify_logits, softmax
from miniroberta.interop.checkpoint import find_model_dir, load_finetuned
from miniroberta.data.paths import resolve_vocab
from miniroberta.modeling.tokenizer import BertTokenizer
from miniroberta.outputs import claim_output
from miniroberta.settings import add_options, from_args, option, validate
from miniroberta.utils import log


@dataclass(kw_only=True)
class PredictConfig:
    """Every option of ``miniroberta predict``."""
    model: str | None = option(None, "fine-tune --output_dir, its model/ folder, an HF classifier dir or a native "
                               "checkpoint", effect="result", aliases=("--load_model_path",),
                               default_text="none: give --onnx")
    onnx: str | None = option(None, "an `export-onnx --task classify` graph (fp32 or int8) run with onnxruntime "
                              "instead of --model", effect="result", default_text="none")
    input: str = option(help="unlabeled TSV (with a header row) or JSON-lines file", effect="result",
                        aliases=("--test_path",))
    output: str = option(help="where the predictions go (claimed: an existing file needs --overwrite)",
                         effect="result", aliases=("--prediction_path",))
    overwrite: bool = option(False, "move an existing --output aside (NAME.old-<time>) and write a new one",
                             effect="speed")
    task: str | None = option(None, "preset (its text fields, id field and output format)", effect="result",
                              choices=tuple(TASKS), default_text="the task the model was fine-tuned on")
    text_fields: str | None = option(None, "text column(s), comma-separated", effect="result",
                                     default_text="the fine-tuning ones")
    vocab_path: str | None = option(None, "vocab.txt", effect="result", default_text="the model's")
    format: str | None = option(None, "output format", effect="result", choices=("clue", "tsv"),
                                default_text="clue for tnews/iflytek/ocnli, tsv otherwise")
    batch_size: int = option(64, "texts per forward pass", effect="speed", ge=1)
    seq_length: int | None = option(None, "tokens per text", effect="result", ge=4,
                                    default_text="the fine-tuning seq_length")
    output_prob: bool = option(False, "tsv: add a prob column", effect="result")
    skip_bad_rows: bool = option(False, "skip and count malformed rows instead of failing", effect="result")
    device: str | None = option(None, "cpu, cuda ... (--model only)", effect="speed", default_text="cpu")
    threads: int | None = option(None, "intra-op threads (torch, or onnxruntime with --onnx)", effect="speed", ge=1,
                                 default_text="the cores this process may run on")

    def problems(self) -> list[str]:
        return [] if (self.model or self.onnx) else \
            ["pass --model (a fine-tuned classifier) or --onnx (its export-onnx graph)"]


def _backend(model_path: str | None, onnx: str | None, vocab_path: str | None, device: str | None,
             threads: int) -> tuple[Backend, dict[str, Any], str]:
    """(the backend, the fine-tuning metadata, the vocab path)."""
    if onnx:
        backend = OnnxBackend(onnx, threads=threads)
        if backend.task != "classify":
            raise ValueError(f"{onnx} is a {backend.task} export, not a classifier")
        ft = dict(backend.meta.get("finetune") or {}, labels=backend.info.labels,
                  seq_length=backend.info.seq_length, truncation=backend.info.truncation)
        return backend, ft, check_onnx_vocab(onnx, vocab_path) if vocab_path else vocab_beside_onnx(onnx)
    if model_path:
        model, ft = load_finetuned(model_path, device)
        return TorchBackend(model, "classify", labels=ft["labels"]), ft, resolve_vocab(ft["model_dir"], vocab_path)
    raise ValueError("pass --model (a fine-tuned classifier) or --onnx (its export-onnx graph)")


def predict_file(model_path: str | None, input_path: str, output_path: str | None = None, task: str | None = None,
                 text_fields: Sequence[str] | str | None = None, vocab_path: str | None = None,
                 batch_size: int = 64, seq_length: int | None = None, device: str | None = None,
                 fmt: str | None = None, output_prob: bool = False, skip_bad_rows: bool = False,
                 onnx: str | None = None, threads: int = 0, overwrite: bool = False) -> dict[str, Any]:
    """Predict every row of ``input_path``; returns ids, labels, probs and the output path.
    ``onnx``: run that ``export-onnx --task classify`` graph with onnxruntime instead of PyTorch.
    ``output_path`` is claimed: an existing file is refused unless ``overwrite``."""
    claim = claim_output(output_path, overwrite=overwrite, command="predict", can_resume=False,
                         what="predictions") if output_path else None
    try:
        backend, ft, vocab = _backend(model_path, onnx, vocab_path, device, threads)
        task = task or ft.get("task")
        spec = TASKS.get(task) if task else None
        if isinstance(text_fields, str):
            text_fields = tuple(f.strip() for f in text_fields.split(",") if f.strip())
        fields = tuple(text_fields) if text_fields else (tuple(ft["text_fields"]) if ft.get("text_fields") else
                                                          (spec.text_fields if spec else None))
        id_field = ft.get("id_field") or (spec.id_field if spec else None) or "id"
        fmt = fmt or ft.get("submission") or (spec.submission if spec else "tsv")
        data = read_examples(input_path, text_fields=fields, label_field=ft.get("label_field", "label"),
                             require_label=False, id_field=id_field, skip_bad_rows=skip_bad_rows)
        if fields is not None and len(fields) != len(data.text_fields):
            raise ValueError(f"{input_path}: expected text fields {list(fields)}")
        tok = BertTokenizer(vocab)
        if tok.vocab_size != backend.info.vocab_size:
            raise ValueError(f"{vocab} has {tok.vocab_size} tokens but the model has {backend.info.vocab_size}")
        seq = seq_length or int(ft.get("seq_length", 128))
        enc = encode_data(tok, data, seq, ft.get("truncation", "longest_first"))
        logits = classify_logits(backend, enc, batch_size, tok.pad_id)
        probs = softmax(logits)
        labels = [ft["labels"][i] for i in logits.argmax(1)]
        if output_path:
            write_predictions(output_path, data.ids, labels, fmt, probs if output_prob else None)
    finally:
        if claim is not None:
            claim.release()
    return dict(ids=data.ids, labels=labels, probs=probs, output=output_path, format=fmt, n=len(labels),
                skipped=data.skipped)


def configure(p: argparse.ArgumentParser) -> None:
    """The options are generated from ``PredictConfig``."""
    add_options(p, PredictConfig)


def run(args: argparse.Namespace) -> int:
    cfg = validate(from_args(PredictConfig, args), "predict settings")
    threads = configure_threads(cfg.threads)["threads"]
    res = predict_file(cfg.model, cfg.input, cfg.output, task=cfg.task, text_fields=cfg.text_fields,
                       vocab_path=cfg.vocab_path, batch_size=cfg.batch_size, seq_length=cfg.seq_length,
                       device=cfg.device, fmt=cfg.format, output_prob=cfg.output_prob,
                       skip_bad_rows=cfg.skip_bad_rows, onnx=cfg.onnx, threads=threads, overwrite=cfg.overwrite)
    counts: dict[str, int] = {}
    for lab in res["labels"]:
        counts[lab] = counts.get(lab, 0) + 1
    log(f"wrote {res['n']} predictions ({res['format']}) to {os.path.abspath(cfg.output)}"
        + (f"; skipped {res['skipped']} bad rows" if res["skipped"] else ""))
    print(json.dumps(dict(output=os.path.abspath(cfg.output), n=res["n"], format=res["format"],
                          label_counts=counts), ensure_ascii=False))
    return 0


__all__ = ["PredictConfig", "predict_file", "load_finetuned", "write_predictions", "find_model_dir", "configure",
           "run"]
