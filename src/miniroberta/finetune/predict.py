"""Label unlabeled files with a fine-tuned classifier (``miniroberta predict``).

Output formats:
* ``clue`` (tnews, iflytek, ocnli): JSON lines ``{"id": ..., "label": "..."}`` -- the CLUE
  submission format; ids come from the input's ``id`` field (row index when absent).
* ``tsv`` (other tasks): UER-py ``run_classifier_infer.py`` layout -- header ``label`` (and
  ``prob`` with ``--output_prob``), one original label string per input row.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from miniroberta.data import tasks as T
from miniroberta.infer.backends import Backend, OnnxBackend, TorchBackend, vocab_beside_onnx
from miniroberta.infer.pipelines import classify_logits, softmax
from miniroberta.interop.checkpoint import find_model_dir, load_finetuned
from miniroberta.interop.export import resolve_vocab
from miniroberta.modeling.tokenizer import BertTokenizer
from miniroberta.utils import atomic_write, log


def write_predictions(path: str, ids: Sequence[Any], labels: Sequence[str], submission: str = "tsv",
                      probs: np.ndarray | None = None) -> str:
    with atomic_write(path, "w", encoding="utf-8") as f:
        if submission == "clue":
            for i, lab in zip(ids, labels):
                f.write(json.dumps({"id": i, "label": lab}, ensure_ascii=False) + "\n")
        elif submission == "tsv":
            f.write("label" + ("\tprob" if probs is not None else "") + "\n")
            for r, lab in enumerate(labels):
                f.write(lab + ("\t" + " ".join(f"{p:.6f}" for p in probs[r]) if probs is not None else "") + "\n")
        else:
            raise ValueError(f"unknown output format {submission!r} (clue or tsv)")
    return path


def predict_file(model_path: str | None, input_path: str, output_path: str | None = None, task: str | None = None,
                 text_fields: Sequence[str] | str | None = None, vocab_path: str | None = None,
                 batch_size: int = 64, seq_length: int | None = None, device: str | None = None,
                 fmt: str | None = None, output_prob: bool = False, skip_bad_rows: bool = False,
                 onnx: str | None = None, threads: int = 0) -> dict[str, Any]:
    """Predict every row of ``input_path``; returns ids, labels, probs and the output path.
    ``onnx``: run that ``export-onnx --task classify`` graph with onnxruntime instead of PyTorch."""
    backend: Backend
    if onnx:
        backend = OnnxBackend(onnx, threads=threads)
        if backend.task != "classify":
            raise ValueError(f"{onnx} is a {backend.task} export, not a classifier")
        ft = dict(backend.meta.get("finetune") or {}, labels=backend.info.labels,
                  seq_length=backend.info.seq_length, truncation=backend.info.truncation)
        vocab = vocab_path or vocab_beside_onnx(onnx)
    elif model_path:
        model, ft = load_finetuned(model_path, device)
        backend = TorchBackend(model, "classify", labels=ft["labels"])
        vocab = resolve_vocab(ft["model_dir"], vocab_path)
    else:
        raise ValueError("pass --model (a fine-tuned classifier) or --onnx (its export-onnx graph)")
    task = task or ft.get("task")
    spec = T.TASKS.get(task) if task else None
    if isinstance(text_fields, str):
        text_fields = tuple(f.strip() for f in text_fields.split(",") if f.strip())
    fields = tuple(text_fields) if text_fields else (tuple(ft["text_fields"]) if ft.get("text_fields") else
                                                      (spec.text_fields if spec else None))
    id_field = ft.get("id_field") or (spec.id_field if spec else None) or "id"
    fmt = fmt or ft.get("submission") or (spec.submission if spec else "tsv")
    data = T.read_examples(input_path, text_fields=fields, label_field=ft.get("label_field", "label"),
                           require_label=False, id_field=id_field, skip_bad_rows=skip_bad_rows)
    if fields is not None and len(fields) != len(data.text_fields):
        raise ValueError(f"{input_path}: expected text fields {list(fields)}")
    tok = BertTokenizer(vocab)
    if tok.vocab_size != backend.info.vocab_size:
        raise ValueError(f"{vocab} has {tok.vocab_size} tokens but the model has {backend.info.vocab_size}")
    seq = seq_length or int(ft.get("seq_length", 128))
    enc = T.encode_data(tok, data, seq, ft.get("truncation", "longest_first"))
    logits = classify_logits(backend, enc, batch_size, tok.pad_id)
    probs = softmax(logits)
    pred = logits.argmax(1)
    labels = [ft["labels"][i] for i in pred]
    if output_path:
        write_predictions(output_path, data.ids, labels, fmt, probs if output_prob else None)
    return dict(ids=data.ids, labels=labels, probs=probs, output=output_path, format=fmt, n=len(labels),
                skipped=data.skipped)


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "--load_model_path", dest="model", default=None,
                   help="fine-tune --output_dir, its model/ folder, an HF classifier dir or a native checkpoint")
    p.add_argument("--onnx", default=None,
                   help="an `export-onnx --task classify` graph (fp32 or int8) run with onnxruntime instead of --model")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: its default)")
    p.add_argument("--input", "--test_path", dest="input", required=True, help="unlabeled TSV or JSON-lines file")
    p.add_argument("--output", "--prediction_path", dest="output", required=True)
    p.add_argument("--task", default=None, help="preset (default: the task the model was fine-tuned on)")
    p.add_argument("--text_fields", default=None)
    p.add_argument("--vocab_path", default=None)
    p.add_argument("--format", choices=("clue", "tsv"), default=None,
                   help="default: clue for tnews/iflytek/ocnli, tsv otherwise")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--seq_length", type=int, default=None, help="default: the fine-tuning seq_length")
    p.add_argument("--output_prob", action="store_true", help="tsv: add a prob column")
    p.add_argument("--skip_bad_rows", action="store_true")
    p.add_argument("--device", default=None)


def run(args: argparse.Namespace) -> int:
    res = predict_file(args.model, args.input, args.output, task=args.task, text_fields=args.text_fields,
                       vocab_path=args.vocab_path, batch_size=args.batch_size, seq_length=args.seq_length,
                       device=args.device, fmt=args.format, output_prob=args.output_prob,
                       skip_bad_rows=args.skip_bad_rows, onnx=args.onnx, threads=args.threads)
    counts: dict[str, int] = {}
    for lab in res["labels"]:
        counts[lab] = counts.get(lab, 0) + 1
    log(f"wrote {res['n']} predictions ({res['format']}) to {os.path.abspath(args.output)}"
        + (f"; skipped {res['skipped']} bad rows" if res["skipped"] else ""))
    print(json.dumps(dict(output=os.path.abspath(args.output), n=res["n"], format=res["format"],
                          label_counts=counts), ensure_ascii=False))
    return 0


__all__ = ["predict_file", "load_finetuned", "write_predictions", "find_model_dir", "configure", "run"]
