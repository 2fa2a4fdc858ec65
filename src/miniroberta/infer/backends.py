"""Inference backends: the same three model heads run by PyTorch or by onnxruntime.

A backend takes padded int64 arrays and returns float32 numpy arrays; everything around it
(tokenising, batching, softmax, top-k, pooling, decoding) lives in ``infer/pipelines.py`` and is
shared by the CLI commands and ``miniroberta serve``. Heads (``task``):

    fill-mask : (input_ids, attention_mask, token_type_ids, masked_positions) -> logits (M, V)
                (``masked_positions``: flat indices into B*T, the MLM head runs on those only)
    embed     : (input_ids, attention_mask, token_type_ids) -> last hidden state (B, T, H)
    classify  : (input_ids, attention_mask, token_type_ids) -> logits (B, num_labels)

``TorchBackend`` wraps one of our ``nn.Module`` s (a classifier through ``ClassifierHead``, which
runs the last layer for [CLS] only -- the logits need nothing else); ``OnnxBackend`` runs a graph written by
``miniroberta export-onnx`` (``infer/onnx_export.py``), reading its side JSON for the head kind,
labels and lengths, and checking the graph against the SHA-256 recorded there (a damaged or truncated graph
is refused with one line naming it, before onnxruntime sees it). onnxruntime is imported only when an
ONNX backend is built.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch

from miniroberta.integrity import IntegrityError
from miniroberta.modeling.bert import BertForSequenceClassification, BertLayer, attention_bias
from miniroberta.modeling.config import ModelConfig
from miniroberta.utils import log, sha256_file

TASKS = ("fill-mask", "embed", "classify")
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAMES = {"fill-mask": "logits", "embed": "last_hidden_state", "classify": "logits"}


@dataclass
class HeadInfo:
    """What the pipelines need to know about a model besides its weights."""

    task: str
    max_length: int                       # max_position_embeddings
    vocab_size: int
    hidden_size: int
    labels: list[str] = field(default_factory=list)   # classify: index -> label string
    seq_length: int = 128                 # classify: the fine-tuning seq_length (truncation)
    truncation: str = "longest_first"     # classify: how pairs are cut to seq_length
    extra: dict[str, Any] = field(default_factory=dict)


class ClassifierHead(torch.nn.Module):
    """``BertForSequenceClassification``'s logits, computing only what they depend on: the last
    layer runs its query, attention output and feed-forward for the [CLS] position alone (keys and
    values still see every token). Same parameters and the same result as the full forward, to
    float rounding (``export-onnx`` checks 1e-4); for a 2-layer model it skips ~40 % of the work."""

    def __init__(self, model: BertForSequenceClassification) -> None:
        super().__init__()
        self.model = model
        self.config = model.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> torch.Tensor:
        bert = self.model.bert
        mask = attention_bias(attention_mask)
        x = bert.embeddings(input_ids, token_type_ids)
        layers = cast(list[BertLayer], list(bert.encoder.layer))   # a ModuleList of BertLayer
        for layer in layers[:-1]:
            x = layer(x, mask)
        cls = _cls_only_layer(layers[-1], x, mask)                 # (B, 1, H)
        if bert.pooler is None:
            raise ValueError("ClassifierHead: the model has no pooler (built with add_pooling_layer=False)")
        pooled = torch.tanh(bert.pooler.dense(cls[:, 0]))
        return self.model.classifier(self.model.dropout(pooled))


def _cls_only_layer(layer: BertLayer, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``BertLayer.forward`` with the query (and everything after attention) at position 0 only."""
    sa = layer.attention.self
    B, T, H = x.shape
    q = sa.query(x[:, :1]).view(B, 1, sa.num_heads, sa.head_dim).transpose(1, 2)
    k = sa.key(x).view(B, T, sa.num_heads, sa.head_dim).transpose(1, 2)
    v = sa.value(x).view(B, T, sa.num_heads, sa.head_dim).transpose(1, 2)
    y = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    a = layer.attention.output(y.transpose(1, 2).reshape(B, 1, H), x[:, :1])
    return layer.output(layer.intermediate(a), a)


class Backend:
    """Base class: ``run(ids, mask, types, positions=None) -> np.ndarray`` for ``info.task``."""

    name = "base"

    def __init__(self, info: HeadInfo) -> None:
        if info.task not in TASKS:
            raise ValueError(f"unknown task {info.task!r}; choose from {TASKS}")
        self.info = info

    @property
    def task(self) -> str:
        return self.info.task

    def run(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray,
            positions: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "task": self.task, "max_length": self.info.max_length,
                "labels": list(self.info.labels)}


class TorchBackend(Backend):
    """One of ``BertForMaskedLM`` (fill-mask), ``BertModel``/any model with ``.bert`` (embed) or
    ``BertForSequenceClassification`` (classify), on its current device."""

    name = "torch"

    def __init__(self, model: torch.nn.Module, task: str, labels: list[str] | None = None,
                 seq_length: int = 128, truncation: str = "longest_first") -> None:
        if task == "embed" and hasattr(model, "bert"):
            model = cast(torch.nn.Module, model.bert)
        cfg = cast(ModelConfig, model.config)   # a plain attribute; nn.Module.__getattr__ types it Tensor | Module
        super().__init__(HeadInfo(task, cfg.max_position_embeddings, cfg.vocab_size, cfg.hidden_size,
                                  list(labels or []), seq_length, truncation))
        if task == "fill-mask" and not hasattr(model, "cls"):
            raise ValueError("fill-mask needs a model with an MLM head (BertForMaskedLM)")
        if task == "classify" and not hasattr(model, "classifier"):
            raise ValueError("classify needs a sequence classifier (BertForSequenceClassification)")
        # (checked above: a classifier has .classifier)
        head = ClassifierHead(cast(BertForSequenceClassification, model)) if task == "classify" else model
        self.model = head.eval()
        self.device = next(model.parameters()).device

    def _t(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)).to(self.device)

    @torch.no_grad()
    def run(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray,
            positions: np.ndarray | None = None) -> np.ndarray:
        i, m, t = self._t(ids), self._t(mask), self._t(types)
        if self.task == "fill-mask":
            if positions is None:
                raise ValueError("fill-mask needs masked_positions")
            out = self.model(i, attention_mask=m, token_type_ids=t, masked_positions=self._t(positions)).logits
        elif self.task == "embed":
            out = self.model(i, attention_mask=m, token_type_ids=t).last_hidden_state
        else:
            out = self.model(i, m, t)
        return out.float().cpu().numpy()


def onnx_meta_path(onnx_path: str | os.PathLike) -> str:
    """The side JSON of an exported graph: ``model.onnx`` -> ``model.onnx.json``."""
    return os.fspath(onnx_path) + ".json"


def meta_digest(meta: dict[str, Any]) -> str:
    """SHA-256 of the side JSON's content without its own ``meta_sha256`` (labels, lengths and the file
    hashes are covered: a swapped label is refused like a flipped weight)."""
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
                          .encode("utf-8")).hexdigest()


def read_onnx_meta(onnx_path: str | os.PathLike) -> dict[str, Any]:
    """The side JSON of a graph, checked against its own hash; one-line errors naming the file."""
    onnx_path = os.fspath(onnx_path)
    if not os.path.isfile(onnx_path):
        raise FileNotFoundError(f"{onnx_path}: no such ONNX file (write one with `miniroberta export-onnx`)")
    meta_path = onnx_meta_path(onnx_path)
    if not os.path.isfile(meta_path):
        raise FileNotFoundError(f"{meta_path}: missing; it is written beside the graph by `miniroberta export-onnx` "
                                f"and records the head kind, labels, lengths and the graph's SHA-256")
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise IntegrityError(f"{meta_path}: unreadable ({str(e)[:100]}); it was damaged -- export the graph "
                             f"again with `miniroberta export-onnx`") from None
    if not isinstance(meta, dict):
        raise IntegrityError(f"{meta_path}: not an export-onnx side file; export the graph again")
    want = meta.get("meta_sha256")
    if want is not None and want != meta_digest(meta):
        raise IntegrityError(f"{meta_path}: damaged or edited -- its content no longer matches the SHA-256 recorded "
                             f"in it when {os.path.basename(onnx_path)} was exported; export the graph again")
    if meta.get("task") not in TASKS:
        raise ValueError(f"{meta_path}: task {meta.get('task')!r} is not one of {TASKS}")
    return meta


def _check_bytes(path: str, data: bytes | None, entry: dict[str, Any], meta_path: str) -> None:
    size = len(data) if data is not None else os.path.getsize(path)
    if size != entry.get("size"):
        raise IntegrityError(f"{path}: damaged or truncated -- {size:,} bytes, but {entry.get('size'):,} were "
                             f"exported (recorded in {os.path.basename(meta_path)}); export it again")
    got = hashlib.sha256(data).hexdigest() if data is not None else sha256_file(path)
    if got != entry.get("sha256"):
        raise IntegrityError(f"{path}: damaged -- its SHA-256 {got[:16]}... differs from the "
                             f"{str(entry.get('sha256'))[:16]}... recorded at export "
                             f"({os.path.basename(meta_path)}); export it again")


def verified_onnx_bytes(onnx_path: str | os.PathLike, meta: dict[str, Any]) -> bytes | None:
    """Check the graph (and any external data file) against the SHA-256 recorded in its side JSON; returns
    the graph's bytes, which were hashed, for onnxruntime to load (None when it has external data, which
    onnxruntime must read from the folder). A graph exported before hashes were recorded is loaded
    unverified, with a warning."""
    onnx_path = os.fspath(onnx_path)
    meta_path = onnx_meta_path(onnx_path)
    record = meta.get("integrity")
    if not isinstance(record, dict) or not isinstance(record.get("graph"), dict):
        log(f"warning: {meta_path} records no SHA-256 (exported by an older miniroberta): {onnx_path} is used "
            f"unverified; export it again to have it checked")
        return None
    external = record.get("external_data") or {}
    data = None
    if not external:
        with open(onnx_path, "rb") as f:
            data = f.read()
    _check_bytes(onnx_path, data, record["graph"], meta_path)
    folder = os.path.dirname(os.path.abspath(onnx_path))
    for name, entry in external.items():
        p = os.path.join(folder, name)
        if not os.path.isfile(p):
            raise IntegrityError(f"{p}: missing; it holds the weights of {onnx_path} -- export the graph again")
        _check_bytes(p, None, entry, meta_path)
    return data


def session_options(threads: int = 0) -> Any:
    import onnxruntime as ort  # noqa: PLC0415 - optional dependency (serve extra)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads > 0:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return so


class OnnxBackend(Backend):
    """An ``export-onnx`` graph in an onnxruntime CPU session, verified against its recorded SHA-256."""

    name = "onnxruntime"

    def __init__(self, onnx_path: str | os.PathLike, threads: int = 0, verify: bool = True) -> None:
        try:
            import onnxruntime as ort  # noqa: PLC0415 - optional dependency (serve extra)
        except ImportError as e:  # pragma: no cover - depends on the install
            raise RuntimeError("onnxruntime is not installed: pip install -e \".[serve]\"") from e
        self.path = os.fspath(onnx_path)
        meta = read_onnx_meta(self.path)
        super().__init__(HeadInfo(meta["task"], int(meta["max_length"]), int(meta["vocab_size"]),
                                  int(meta["hidden_size"]), list(meta.get("labels") or []),
                                  int(meta.get("seq_length") or 128), meta.get("truncation") or "longest_first",
                                  extra=meta))
        self.meta = meta
        graph = verified_onnx_bytes(self.path, meta) if verify else None
        try:
            self.session = ort.InferenceSession(graph if graph is not None else self.path, session_options(threads),
                                                providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime's errors are several pybind types
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise RuntimeError(f"{self.path}: onnxruntime cannot load this graph ({first}); export it again with "
                               f"`miniroberta export-onnx`") from None
        self.input_names = [i.name for i in self.session.get_inputs()]

    def run(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray,
            positions: np.ndarray | None = None) -> np.ndarray:
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        if self.task == "fill-mask":
            if positions is None:
                raise ValueError("fill-mask needs masked_positions")
            feed["masked_positions"] = positions
        feed = {k: np.ascontiguousarray(v, dtype=np.int64) for k, v in feed.items() if k in self.input_names}
        return np.asarray(self.session.run(None, feed)[0], dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(quantization=(self.meta.get("quantization") or {}).get("method", "none"))
        return d


def check_onnx_vocab(onnx_path: str | os.PathLike, vocab: str) -> str:
    """``vocab`` when its SHA-256 is the one the graph was exported with (when recorded)."""
    meta = read_onnx_meta(onnx_path)
    if not os.path.isfile(vocab):
        raise FileNotFoundError(f"{vocab}: no such vocab file")
    want = meta.get("vocab_sha256")
    if isinstance(want, str) and want and sha256_file(vocab) != want:
        raise IntegrityError(f"{vocab}: its SHA-256 differs from the vocab {os.fspath(onnx_path)} was exported with "
                             f"({want[:12]}..., recorded in {os.path.basename(onnx_meta_path(onnx_path))}); "
                             f"use the vocab.txt export-onnx wrote beside the graph")
    return vocab


def vocab_beside_onnx(onnx_path: str | os.PathLike) -> str:
    meta = read_onnx_meta(onnx_path)
    p = os.path.join(os.path.dirname(os.path.abspath(os.fspath(onnx_path))), meta.get("vocab", "vocab.txt"))
    if not os.path.isfile(p):
        raise FileNotFoundError(f"{p}: the vocab written beside {onnx_path} by export-onnx is missing")
    return check_onnx_vocab(onnx_path, p)


__all__ = ["Backend", "TorchBackend", "ClassifierHead", "OnnxBackend", "HeadInfo", "TASKS", "INPUT_NAMES",
           "OUTPUT_NAMES",
           "onnx_meta_path", "read_onnx_meta", "meta_digest", "verified_onnx_bytes", "session_options",
           "check_onnx_vocab", "vocab_beside_onnx"]
