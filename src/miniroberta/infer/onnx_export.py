"""``miniroberta export-onnx``: our model as an ONNX graph for onnxruntime, optionally int8.

One graph per head (``--task fill-mask | embed | classify``, inputs and outputs in
``infer/backends.py``) with dynamic batch and sequence axes, exported by ``torch.onnx.export``
with ``dynamo=True`` (the ``torch.export`` based exporter, opset 18). The TorchScript exporter
(``dynamo=False``) is not used: on torch 2.13 it exports ``scaled_dot_product_attention`` with a
boolean padding mask to a graph whose outputs differ from PyTorch by ~0.1 (the mask is
mis-translated), so it fails the 1e-4 parity check below.

Beside ``--out model.onnx`` go ``vocab.txt``, ``tokenizer_config.json`` and ``model.onnx.json``
(head kind, labels, max length, fine-tuning seq_length/truncation, opset, exporter, parity,
-- with ``--quantize int8`` -- the accuracy change measured against the fp32 graph, and the SHA-256
of the graph, of any external data file and of the side JSON itself, which every load checks).
``--out`` is claimed like every output (``outputs.claim_output``): an existing graph is refused unless
``--overwrite`` moves it aside, a second export to it fails at once naming the first; the work is done
in a temp folder named with host and pid (a killed export's folder is removed by the next one), and a
full or read-only disk is one line naming the path, the free space and what is intact.

Every export is checked before it is put in place: onnxruntime and PyTorch are run on single
texts and pairs padded in one batch, and the export fails when they differ by more than 1e-4
(fp32). ``--quantize int8`` applies onnxruntime's ``quantize_dynamic`` (int8 weights, dynamic
per-batch activation scales) to the checked fp32 graph, then measures what it costs: dev
accuracy for a classifier (the task it was fine-tuned on, or ``--eval_path``), top-1 agreement
with fp32 for fill-mask, cosine similarity with fp32 for embed.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from miniroberta.data.paths import data_root
from miniroberta.data.tasks import TASKS as CLUE_TASKS
from miniroberta.data.tasks import LabelMap, default_data_dir, encode_data, read_examples
from miniroberta.infer.backends import INPUT_NAMES, OUTPUT_NAMES, TASKS, Backend, OnnxBackend, TorchBackend, \
    meta_digest, onnx_meta_path
from miniroberta.infer.config import ExportConfig
from miniroberta.infer.pipelines import _pad, classify_logits, embed, load_backend
from miniroberta.interop.checkpoint import find_model_dir
from miniroberta.interop.export import SPECIAL_TOKENS_MAP, tokenizer_config
from miniroberta.modeling.tokenizer import BertTokenizer
from miniroberta.outputs import claim_output
from miniroberta.settings import add_options, from_args
from miniroberta.utils import OutputWriteError, atomic_write_json, atomic_write_text, fsync_dir, log, sha256_file, \
    temp_prefix, write_error

OPSET = 18
PARITY_TOL = 1e-4
EXPORTER = "torch.onnx.export(dynamo=True)"
PARITY_TEXTS = ["中国的首都是[MASK]京。", "今天天气很[MASK]，我们去公园散步吧！这是一段稍微长一点的文本。", "[MASK]"]
PARITY_PAIRS = [("我喜欢这本书。", "这本书很[MASK]。"), ("[MASK]", "今天下雨了，我们不出门。")]


# ------------------------------------------------------------------------------ graph modules
class _FillMaskGraph(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor,
                masked_positions: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                          masked_positions=masked_positions).logits


class _EmbedGraph(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state


class _ClassifyGraph(torch.nn.Module):
    def __init__(self, head: torch.nn.Module) -> None:
        super().__init__()
        self.head = head  # backends.ClassifierHead: the TorchBackend's module, [CLS]-only last layer

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> torch.Tensor:
        return self.head(input_ids, attention_mask, token_type_ids)


GRAPHS = {"fill-mask": _FillMaskGraph, "embed": _EmbedGraph, "classify": _ClassifyGraph}


def sample_inputs(tok: BertTokenizer, task: str, max_length: int) -> dict[str, np.ndarray]:
    """Single texts and pairs padded in one batch (token types 0/1, padding, several masks)."""
    items: list[Any] = list(PARITY_TEXTS) + [list(p) for p in PARITY_PAIRS]
    rows, types = [], []
    for it in items:
        a = tok.encode_ids(it if isinstance(it, str) else it[0])
        b = None if isinstance(it, str) else tok.encode_ids(it[1])
        enc = tok.build_inputs(a, b, max_length=min(max_length, 64))
        rows.append(enc.input_ids)
        types.append(enc.token_type_ids)
    T = max(len(r) for r in rows)
    ids = np.full((len(rows), T), tok.pad_id, dtype=np.int64)
    mask = np.zeros_like(ids)
    tt = np.zeros_like(ids)
    for i, (r, t) in enumerate(zip(rows, types)):
        ids[i, :len(r)], mask[i, :len(r)], tt[i, :len(t)] = r, 1, t
    feed: dict[str, np.ndarray] = {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt}
    if task == "fill-mask":
        feed["masked_positions"] = np.flatnonzero(ids.reshape(-1) == tok.mask_id).astype(np.int64)
    return feed


def export_graph(backend: TorchBackend, tok: BertTokenizer, path: str, opset: int = OPSET) -> None:
    """``torch.onnx.export`` of the backend's head to ``path`` with dynamic batch/sequence axes."""
    graph = GRAPHS[backend.task](backend.model).eval()
    feed = sample_inputs(tok, backend.task, backend.info.max_length)
    args = tuple(torch.from_numpy(feed[n]) for n in (*INPUT_NAMES, "masked_positions") if n in feed)
    batch = torch.export.Dim("batch", min=1, max=65536)
    seq = torch.export.Dim("sequence", min=2, max=backend.info.max_length)
    shapes: list[dict[int, Any]] = [{0: batch, 1: seq}] * 3
    if backend.task == "fill-mask":
        shapes.append({0: torch.export.Dim("masked", min=1, max=65536 * backend.info.max_length)})
    names = list(INPUT_NAMES) + (["masked_positions"] if backend.task == "fill-mask" else [])
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping torchvision::nms" etc.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(graph, args, f=None, input_names=names, output_names=[OUTPUT_NAMES[backend.task]],
                                 opset_version=opset, dynamo=True, dynamic_shapes=tuple(shapes),
                                 external_data=False, verbose=False, optimize=True)
    quiet.setLevel(level)
    if prog is None:   # dynamo=True returns the program; None is the legacy exporter's answer
        raise RuntimeError(f"torch.onnx.export gave no ONNX program for {path}")
    prog.save(path, external_data=False)


def parity(torch_backend: Backend, onnx_backend: Backend, feed: dict[str, np.ndarray]) -> float:
    """Max |difference| of the two backends' outputs on ``feed``, also for each row alone
    (batch 1, no padding) so the dynamic axes are exercised."""
    ids, mask, types = (feed[n] for n in INPUT_NAMES)
    pos = feed.get("masked_positions")
    worst = float(np.abs(torch_backend.run(ids, mask, types, pos) - onnx_backend.run(ids, mask, types, pos)).max())
    for r in range(ids.shape[0]):
        n = int(mask[r].sum())
        one = (ids[r:r + 1, :n], mask[r:r + 1, :n], types[r:r + 1, :n])
        p = None
        if pos is not None:  # this row's masked positions, re-indexed for a (1, n) batch
            T = ids.shape[1]
            p = np.array([q - r * T for q in pos if r * T <= q < (r + 1) * T], dtype=np.int64)
            if len(p) == 0:
                continue
        diff = torch_backend.run(*one, positions=p) - onnx_backend.run(*one, positions=p)
        worst = max(worst, float(np.abs(diff).max()))
    return worst


def quantize_int8(src: str, dst: str) -> None:
    """onnxruntime dynamic quantization: int8 weights of MatMul/Gemm, activations quantized per batch."""
    from onnxruntime.quantization import QuantType, quantize_dynamic  # noqa: PLC0415 - optional dependency
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its "consider pre-processing" advice goes to the root logger
    try:
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=False, reduce_range=False,
                         op_types_to_quantize=["MatMul", "Gemm"])
    finally:
        root.setLevel(level)


# ------------------------------------------------------------------------- quantization cost
def _corpus_texts(n: int, seed: int = 0) -> list[str]:
    corpus = sorted((data_root() / "corpus").glob("*.txt"))
    lines: list[str] = []
    if corpus:
        with open(corpus[0], encoding="utf-8") as f:
            for line in f:
                if len(line.strip()) >= 12:
                    lines.append(line.strip()[:96])
                if len(lines) >= n:
                    break
    if not lines:
        raise FileNotFoundError("no evaluation texts: pass --eval_path (one text per line)")
    return lines


def _read_lines(path: str, n: int) -> list[str]:
    with open(path, encoding="utf-8") as f:
        lines = [line.strip() for line in f if line.strip()]
    return lines[:n]


def measure_fill_mask(fp32: Backend, int8: Backend, tok: BertTokenizer, texts: Sequence[str],
                      seed: int = 0) -> dict[str, Any]:
    """Mask one character of each text (seeded) and compare top-1 of fp32 and int8 (and with the truth)."""
    rng = random.Random(seed)
    rows, truth = [], []
    for t in texts:
        ids = tok.encode_ids(t)[: fp32.info.max_length - 2]
        if not ids:
            continue
        j = rng.randrange(len(ids))
        truth.append(ids[j])
        ids[j] = tok.mask_id
        rows.append([tok.cls_id] + ids + [tok.sep_id])
    agree = hit32 = hit8 = 0
    for s in range(0, len(rows), 32):
        part = rows[s:s + 32]
        batch_ids, mask = _pad(part, tok.pad_id)
        pos = np.flatnonzero(batch_ids.reshape(-1) == tok.mask_id)
        a = fp32.run(batch_ids, mask, np.zeros_like(batch_ids), pos).argmax(-1)
        b = int8.run(batch_ids, mask, np.zeros_like(batch_ids), pos).argmax(-1)
        gold = np.array(truth[s:s + 32])
        agree += int((a == b).sum())
        hit32 += int((a == gold).sum())
        hit8 += int((b == gold).sum())
    n = len(rows)
    return dict(metric="top1_agreement", n=n, top1_agreement=agree / n, top1_accuracy_fp32=hit32 / n,
                top1_accuracy_int8=hit8 / n, delta_points=100 * (hit8 - hit32) / n)


def measure_embed(fp32: Backend, int8: Backend, tok: BertTokenizer, texts: Sequence[str]) -> dict[str, Any]:
    a = embed(fp32, tok, texts, pooling="cls")
    b = embed(int8, tok, texts, pooling="cls")
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    return dict(metric="cls_cosine", n=len(texts), cosine_mean=float(cos.mean()), cosine_min=float(cos.min()))


def measure_classify(fp32: Backend, int8: Backend, tok: BertTokenizer, path: str, meta: dict[str, Any],
                     limit: int | None = None) -> dict[str, Any]:
    """Accuracy of both graphs on a labeled file (the fine-tuning task's dev set by default)."""
    fields = tuple(meta["text_fields"]) if meta.get("text_fields") else None
    data = read_examples(path, text_fields=fields, label_field=meta.get("label_field", "label"),
                           drop_labels=tuple(meta.get("drop_labels") or ()))
    if limit:
        data = data.subset(range(min(limit, len(data))))
    gold = LabelMap(list(fp32.info.labels)).encode(data)
    enc = encode_data(tok, data, fp32.info.seq_length, fp32.info.truncation)
    a = classify_logits(fp32, enc, 64, tok.pad_id).argmax(1)
    b = classify_logits(int8, enc, 64, tok.pad_id).argmax(1)
    acc32, acc8 = float((a == gold).mean()), float((b == gold).mean())
    return dict(metric="accuracy", eval_path=os.path.abspath(path), n=len(gold), accuracy_fp32=acc32,
                accuracy_int8=acc8, delta_points=100 * (acc8 - acc32), agreement=float((a == b).mean()))


def default_eval_path(meta: dict[str, Any], data_dir: str | None) -> str | None:
    """The dev file of the task the classifier was fine-tuned on, when the data folder has it."""
    task = meta.get("task")
    if task not in CLUE_TASKS:
        return None
    p = os.path.join(data_dir or default_data_dir(), task, CLUE_TASKS[task].dev)
    return p if os.path.isfile(p) else None


def measure(task: str, fp32: Backend, int8: Backend, tok: BertTokenizer, meta: dict[str, Any],
            eval_path: str | None, data_dir: str | None, limit: int) -> dict[str, Any]:
    if task == "classify":
        path = eval_path or default_eval_path(meta.get("finetune") or {}, data_dir)
        if path is None:
            raise ValueError("--quantize int8 measures the accuracy change on a labeled dev file: pass --eval_path "
                             "(the classifier's task is unknown or its dev file is not in --data_dir)")
        return measure_classify(fp32, int8, tok, path, meta.get("finetune") or {}, limit)
    texts = _read_lines(eval_path, limit) if eval_path else _corpus_texts(limit)
    if task == "fill-mask":
        return measure_fill_mask(fp32, int8, tok, texts)
    return measure_embed(fp32, int8, tok, texts)


# ----------------------------------------------------------------------------------- export
def _finetune_meta(model: str) -> dict[str, Any]:
    p = Path(find_model_dir(model))
    fj = p / "finetune.json"
    if p.is_dir() and fj.is_file():
        ft = json.loads(fj.read_text(encoding="utf-8"))
        keep = ("task", "text_fields", "label_field", "id_field", "submission", "seq_length", "truncation",
                "drop_labels", "best_dev_acc")
        return {k: ft[k] for k in keep if k in ft}
    return {}


def _base_meta(tb: TorchBackend, tok: BertTokenizer, model: str, task: str, opset: int) -> dict[str, Any]:
    return dict(
        format="miniroberta-onnx", version=2, task=task, opset=opset, exporter=EXPORTER, torch=torch.__version__,
        inputs=list(INPUT_NAMES) + (["masked_positions"] if task == "fill-mask" else []),
        output=OUTPUT_NAMES[task], dynamic_axes={"batch": 0, "sequence": 1},
        max_length=tb.info.max_length, vocab_size=tb.info.vocab_size, hidden_size=tb.info.hidden_size,
        labels=list(tb.info.labels), seq_length=tb.info.seq_length, truncation=tb.info.truncation,
        vocab="vocab.txt", vocab_sha256=tok.sha256, source_model=os.path.abspath(model),
        finetune=_finetune_meta(model) if task == "classify" else {}, quantization=None)


def _build(tb: TorchBackend, tok: BertTokenizer, meta: dict[str, Any], tmp: str, quantize: str | None,
           eval_path: str | None, data_dir: str | None, eval_limit: int, threads: int) -> str:
    """Export (and quantize) in ``tmp``, checked; returns the graph to put in place."""
    task = meta["task"]
    fp32_path = os.path.join(tmp, "fp32.onnx")
    export_graph(tb, tok, fp32_path, meta["opset"])
    fp32 = _onnx_backend(fp32_path, meta, threads)
    diff = parity(tb, fp32, sample_inputs(tok, task, tb.info.max_length))
    meta["parity"] = dict(max_abs_diff=diff, tolerance=PARITY_TOL, inputs="3 single texts + 2 pairs, padded "
                          "batch and each alone")
    if not diff <= PARITY_TOL:
        raise RuntimeError(f"ONNX export differs from PyTorch by {diff:.3g} (> {PARITY_TOL}); not written")
    log(f"export-onnx: {task} graph exported, max |onnxruntime - torch| = {diff:.2e}")
    if quantize != "int8":
        return fp32_path
    int8_path = os.path.join(tmp, "int8.onnx")
    quantize_int8(fp32_path, int8_path)
    int8 = _onnx_backend(int8_path, meta, threads)
    cost = measure(task, fp32, int8, tok, meta, eval_path, data_dir, eval_limit)
    meta["quantization"] = dict(method="int8", tool="onnxruntime.quantization.quantize_dynamic",
                                weight_type="QInt8", ops=["MatMul", "Gemm"],
                                fp32_bytes=os.path.getsize(fp32_path), int8_bytes=os.path.getsize(int8_path), **cost)
    log("export-onnx: int8 " + ", ".join(f"{k}={_fmt(v)}" for k, v in cost.items()))
    return int8_path


def external_data_files(graph: str) -> list[str]:
    """The external data files a graph refers to (names relative to its folder; none for ours, < 2 GB)."""
    import onnx  # noqa: PLC0415 - optional dependency (serve extra)
    from onnx.external_data_helper import _get_all_tensors, uses_external_data  # noqa: PLC0415
    model = onnx.load(graph, load_external_data=False)
    names: set[str] = set()
    for t in _get_all_tensors(model):
        if uses_external_data(t):
            names.update(e.value for e in t.external_data if e.key == "location")
    return sorted(names)


def _place(final: str, out: str, meta: dict[str, Any]) -> None:
    """Record the graph's (and external data's) SHA-256 in ``meta``, move the files into place, then
    write the side JSON last, with its own hash (a crash in between leaves a graph that is refused)."""
    tmp, out_dir = os.path.dirname(final), os.path.dirname(out)
    external = external_data_files(final)
    meta["bytes"] = os.path.getsize(final)
    meta["integrity"] = {"algorithm": "sha256",
                         "graph": {"sha256": sha256_file(final), "size": meta["bytes"]},
                         "external_data": {n: {"sha256": sha256_file(os.path.join(tmp, n)),
                                               "size": os.path.getsize(os.path.join(tmp, n))} for n in external}}
    for n in external:
        if os.path.exists(os.path.join(out_dir, n)):
            raise FileExistsError(f"{os.path.join(out_dir, n)} exists; export to another folder")
        os.replace(os.path.join(tmp, n), os.path.join(out_dir, n))
    os.replace(final, out)
    fsync_dir(out_dir)
    meta["meta_sha256"] = meta_digest(meta)
    atomic_write_json(onnx_meta_path(out), meta)


def export_onnx(model: str, task: str, out: str, quantize: str | None = None, vocab_path: str | None = None,
                opset: int = OPSET, eval_path: str | None = None, data_dir: str | None = None,
                eval_limit: int = 2000, threads: int = 0, overwrite: bool = False) -> dict[str, Any]:
    """Export ``model``'s ``task`` head to ``out`` (checked against PyTorch), optionally int8; returns the
    side JSON it wrote. ``out`` is claimed (``outputs.claim_output``): an existing graph is refused unless
    ``overwrite`` (moved aside), a concurrent export to it fails at once naming the first."""
    if task not in TASKS:
        raise ValueError(f"--task must be one of {TASKS}, got {task!r}")
    if quantize not in (None, "none", "int8"):
        raise ValueError(f"--quantize must be int8 (or none), got {quantize!r}")
    if not out.endswith(".onnx"):
        raise ValueError(f"--out must name a .onnx file, got {out!r}")
    t0 = time.time()
    out = os.path.abspath(out)
    with claim_output(out, overwrite=overwrite, related=[onnx_meta_path(out)], command="export-onnx",
                      can_resume=False, what="a graph exported earlier") as claim:
        tb, tok = load_backend(task, model=model, vocab_path=vocab_path, threads=threads)
        if not isinstance(tb, TorchBackend):  # pragma: no cover - load_backend(model=...) is torch
            raise RuntimeError("export needs the PyTorch model")
        meta = _base_meta(tb, tok, model, task, opset)
        tmp = None
        try:
            tmp = tempfile.mkdtemp(prefix=temp_prefix(out), suffix=".tmp", dir=os.path.dirname(out))
            final = _build(tb, tok, meta, tmp, quantize, eval_path, data_dir, eval_limit, threads)
            meta["export_seconds"] = round(time.time() - t0, 2)
            _write_beside(tok, os.path.dirname(out))
            _place(final, out, meta)
        except OSError as e:
            raise _write_failure(out, e, claim.retired) from None
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
    return meta


def _write_failure(out: str, e: OSError, retired: list[str]) -> OSError | OutputWriteError:
    """Disk full / read-only / permission errors as one line naming the path, the free space and what is
    intact; other errors unchanged."""
    err = write_error(out, e, False)
    if isinstance(err, OutputWriteError) and retired:
        return OutputWriteError(f"{err}; the previous export was moved to {retired[0]} (--overwrite) and is intact")
    return err


def _onnx_backend(path: str, meta: dict[str, Any], threads: int = 0) -> OnnxBackend:
    """An ``OnnxBackend`` on a graph whose side JSON is not written yet (during export: no hash to check)."""
    atomic_write_json(onnx_meta_path(path), meta)
    return OnnxBackend(path, threads=threads, verify=False)


def _write_beside(tok: BertTokenizer, out_dir: str) -> None:
    target = os.path.join(out_dir, "vocab.txt")
    if os.path.isfile(target):
        if sha256_file(target) != tok.sha256:
            raise FileExistsError(f"{target} exists with a different vocab; export to another folder")
    else:
        atomic_write_text(target, Path(tok.vocab_path).read_text(encoding="utf-8"))
    atomic_write_json(os.path.join(out_dir, "tokenizer_config.json"), tokenizer_config(tok.lowercase))
    atomic_write_json(os.path.join(out_dir, "special_tokens_map.json"), SPECIAL_TOKENS_MAP)


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


# --------------------------------------------------------------------------------------- CLI
def configure(p: argparse.ArgumentParser) -> None:
    add_options(p, ExportConfig, groups={})


def run(args: argparse.Namespace) -> int:
    cfg = from_args(ExportConfig, args).validate()
    meta = export_onnx(cfg.model, cfg.task, cfg.out, None if cfg.quantize == "none" else cfg.quantize,
                       cfg.vocab_path, cfg.opset, cfg.eval_path, cfg.data_dir, cfg.eval_limit, cfg.threads,
                       overwrite=cfg.overwrite)
    summary = dict(out=os.path.abspath(cfg.out), task=meta["task"], opset=meta["opset"], bytes=meta["bytes"],
                   sha256=meta["integrity"]["graph"]["sha256"], parity_max_abs_diff=meta["parity"]["max_abs_diff"],
                   quantization=meta["quantization"])
    print(json.dumps(summary, ensure_ascii=False, indent=2))
    return 0


__all__ = ["export_onnx", "export_graph", "quantize_int8", "parity", "sample_inputs", "configure", "run",
           "OPSET", "PARITY_TOL"]
