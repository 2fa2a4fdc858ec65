"""Inference: ``miniroberta fill-mask`` and ``embed``, and the functions ``predict`` and ``serve`` share.

``fill_mask`` returns exactly what ``transformers.pipeline('fill-mask')`` returns for each text --
a list of ``{"score", "token", "token_str", "sequence"}`` dicts (one list per ``[MASK]`` when a
text has several) -- but runs texts in padded batches and the MLM head on the masked positions
only. ``embed`` returns the last hidden state at ``[CLS]``, mean-pooled over real tokens, or the
whole (zero-padded) sequence. ``classify`` labels texts or pairs with a fine-tuned classifier
(what ``miniroberta predict`` computes).

Every function takes a PyTorch model or a ``Backend`` (``infer/backends.py``: torch or
onnxruntime); the CLI commands and ``miniroberta serve`` call these same functions, so a server
response equals the command's output on the same inputs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Sequence, Union

import numpy as np
import torch

from miniroberta.data.tasks import Encoded, TaskData, encode_data
from miniroberta.finetune.inference import in_length_order
from miniroberta.infer.backends import Backend, OnnxBackend, TorchBackend, check_onnx_vocab, vocab_beside_onnx
from miniroberta.infer.config import POOLINGS, EmbedConfig, FillMaskConfig, ModelSource
from miniroberta.interop.checkpoint import load_finetuned, load_model
from miniroberta.data.paths import resolve_vocab
from miniroberta.modeling.tokenizer import BertTokenizer
from miniroberta.outputs import claim_output
from miniroberta.settings import add_options, from_args
from miniroberta.textio import read_text_lines
from miniroberta.utils import atomic_write, log


def as_backend(model_or_backend: "torch.nn.Module | Backend", task: str) -> Backend:
    """A ``Backend`` as is, or a PyTorch module wrapped as one for ``task``."""
    if isinstance(model_or_backend, Backend):
        if model_or_backend.task != task:
            raise ValueError(f"this is a {model_or_backend.task} model; {task} needs a {task} export/model")
        return model_or_backend
    return TorchBackend(model_or_backend, task)


def _pad(rows: list[list[int]], pad_id: int, length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    T = length or max(len(r) for r in rows)
    ids = np.full((len(rows), T), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), T), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return ids, mask


def _batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (less padding); order restored by the caller."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]


def encode_fill_mask(tokenizer: BertTokenizer, texts: Sequence[str], max_length: int,
                     names: Sequence[str] | None = None) -> list[list[int]]:
    """``[CLS] text [SEP]`` ids of each text; ValueError naming the first text without a [MASK]
    or longer than the model takes (the server checks requests with this before batching).
    ``names``: how errors call each text (``file:line`` for ``--input``); default ``text N``."""
    encoded = [[tokenizer.cls_id] + ids + [tokenizer.sep_id] for ids in tokenizer.encode_batch_ids(list(texts))]
    for i, ids in enumerate(encoded):
        name = names[i] if names is not None else f"text {i + 1}"
        if tokenizer.mask_id not in ids:
            raise ValueError(f"{name} has no [MASK] token: {texts[i]!r}")
        if len(ids) > max_length:
            raise ValueError(f"{name} is {len(ids)} tokens long; the model takes at most {max_length}")
    return encoded


def fill_mask(model: "torch.nn.Module | Backend", tokenizer: BertTokenizer, texts: Sequence[str] | str,
              top_k: int = 5, batch_size: int = 32) -> list[Any]:
    """Top-k predictions for every ``[MASK]`` of every text, like transformers' fill-mask pipeline.

    ``model``: a ``BertForMaskedLM`` or a fill-mask ``Backend`` (torch or onnxruntime). The pipeline's
    shapes: for one string, its candidates -- a list of ``top_k`` dicts ``{"score", "token",
    "token_str", "sequence"}`` when it has one ``[MASK]``, or a list of such lists (one per mask, the
    other masks kept in ``sequence``) when it has several; for a list of strings, one such entry per text."""
    single = isinstance(texts, str)
    items: list[str] = [texts] if isinstance(texts, str) else list(texts)
    backend = as_backend(model, "fill-mask")
    out = fill_mask_ids(backend, tokenizer, encode_fill_mask(tokenizer, items, backend.info.max_length), top_k,
                        batch_size)
    return out[0] if single else out


def fill_mask_ids(model: "torch.nn.Module | Backend", tokenizer: BertTokenizer, encoded: Sequence[list[int]],
                  top_k: int = 5, batch_size: int = 32) -> list[Any]:
    """``fill_mask`` on texts already encoded by ``encode_fill_mask`` (the server encodes each request
    once, to check it, and batches the ids): one pipeline-shaped entry per row."""
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    backend = as_backend(model, "fill-mask")
    k = min(top_k, backend.info.vocab_size)
    results: list[Any] = [None] * len(encoded)
    for batch in _batches([len(e) for e in encoded], batch_size):
        rows = [encoded[i] for i in batch]
        ids, mask = _pad(rows, tokenizer.pad_id)
        flat = np.flatnonzero(ids.reshape(-1) == tokenizer.mask_id)
        logits = torch.from_numpy(backend.run(ids, mask, np.zeros_like(ids), flat))
        values, preds = logits.float().softmax(-1).topk(k, dim=-1)
        for b, group in _fill_mask_rows(tokenizer, rows, flat, ids.shape[1], values.tolist(), preds.tolist(), k):
            results[batch[b]] = group
    return results


def _fill_mask_rows(tokenizer: BertTokenizer, rows: list[list[int]], flat: np.ndarray, T: int,
                    values: list[list[float]], preds: list[list[int]], k: int) -> list[tuple[int, Any]]:
    """The pipeline-shaped result of each row of one batch from its top-k scores and ids."""
    # one (row in batch, position) per masked position, in flat order
    where = [(int(f) // T, int(f) % T) for f in flat]
    per_text: dict[int, list[list[dict[str, Any]]]] = {b: [] for b in range(len(rows))}
    seqs, skips = [], []
    for (b, t), cands in zip(where, preds):
        single = rows[b].count(tokenizer.mask_id) == 1
        for p in cands:
            filled = list(rows[b])
            filled[t] = p
            seqs.append(filled)
        skips.append(single)
    # decode sequences (skip specials only for single-mask texts, like the pipeline) and tokens
    decoded: list[str] = [""] * len(seqs)
    for flag in (True, False):
        idx = [j for j in range(len(seqs)) if skips[j // k] == flag]
        if idx:
            for j, s in zip(idx, tokenizer.decode_batch([seqs[j] for j in idx], skip_special_tokens=flag)):
                decoded[j] = s
    token_strs = tokenizer.decode_batch([[p] for cands in preds for p in cands], skip_special_tokens=False)
    j = 0
    for (b, t), vals, cands in zip(where, values, preds):
        per_text[b].append([{"score": v, "token": p, "token_str": token_strs[j + n], "sequence": decoded[j + n]}
                            for n, (v, p) in enumerate(zip(vals, cands))])
        j += k
    return [(b, groups[0] if len(groups) == 1 else groups) for b, groups in per_text.items()]


def embed(model: "torch.nn.Module | Backend", tokenizer: BertTokenizer, texts: Sequence[str], pooling: str = "cls",
          seq_length: int = 128, batch_size: int = 32) -> np.ndarray:
    """Features from the last hidden state: ``cls`` (N, H) at [CLS]; ``mean`` (N, H) averaged over
    the real tokens ([CLS] and [SEP] included, padding excluded); ``sequence`` (N, seq_length, H),
    zeros at padding. Texts are ``[CLS] text [SEP]`` cut at ``seq_length``. ``model``: a
    ``BertModel`` (or a model with ``.bert``) or an embed ``Backend``."""
    if pooling not in POOLINGS:
        raise ValueError(f"--pooling must be one of {POOLINGS}, got {pooling!r}")
    backend = as_backend(model, "embed")
    max_len = backend.info.max_length
    if not 2 <= seq_length <= max_len:
        raise ValueError(f"--seq_length must be in [2, {max_len}], got {seq_length}")
    H = backend.info.hidden_size
    rows = [tokenizer.build_inputs(ids, max_length=seq_length).input_ids
            for ids in tokenizer.encode_batch_ids(list(texts))]
    shape = (len(rows), seq_length, H) if pooling == "sequence" else (len(rows), H)
    out = np.zeros(shape, dtype=np.float32)
    for batch in _batches([len(r) for r in rows], batch_size):
        ids, mask_np = _pad([rows[i] for i in batch], tokenizer.pad_id)
        h = torch.from_numpy(backend.run(ids, mask_np, np.zeros_like(ids)))
        mask = torch.from_numpy(mask_np)
        if pooling == "cls":
            feats = h[:, 0]
        elif pooling == "mean":
            m = mask.unsqueeze(-1).float()
            feats = (h * m).sum(1) / m.sum(1)
        else:
            feats = h * mask.unsqueeze(-1)
            out[batch, : feats.shape[1]] = feats.numpy()
            continue
        out[batch] = feats.numpy()
    return out


ClassifyItem = Union[str, Sequence[str]]


def encode_classify(tokenizer: BertTokenizer, items: Sequence[ClassifyItem], seq_length: int,
                    truncation: str = "longest_first") -> Encoded:
    """Single texts or (text_a, text_b) pairs -> the ``Encoded`` arrays fine-tuning and
    ``miniroberta predict`` use (``data.tasks.encode_data``; all items single or all pairs)."""
    pairs = [(it,) if isinstance(it, str) else tuple(it) for it in items]
    widths = {len(p) for p in pairs}
    if not pairs:
        raise ValueError("no texts to classify")
    if len(widths) != 1 or widths - {1, 2}:
        raise ValueError("classify takes all single texts or all (text, text_pair) pairs in one call")
    n = widths.pop()
    fields = ("text_a", "text_b")[:n]
    data = TaskData("<request>", fields, [[p[j] for p in pairs] for j in range(n)], None,
                    list(range(len(pairs))), list(range(1, len(pairs) + 1)))
    return encode_data(tokenizer, data, seq_length, truncation)


def classify_logits(model: "torch.nn.Module | Backend", enc: Encoded, batch_size: int = 64,
                    pad_id: int = 0) -> np.ndarray:
    """Logits (N, num_labels) in the original order (``finetune.inference.in_length_order``)."""
    backend = as_backend(model, "classify")
    return in_length_order(enc, batch_size, pad_id, len(backend.info.labels) or None,
                           lambda ids, types, mask: backend.run(ids, mask, types))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row softmax, computed as ``miniroberta predict`` does (torch, float32)."""
    return torch.softmax(torch.from_numpy(logits), -1).numpy()


def classify(model: Backend, tokenizer: BertTokenizer, items: Sequence[ClassifyItem], batch_size: int = 64,
             seq_length: int | None = None) -> list[dict[str, Any]]:
    """``{"label", "score", "scores": {label: probability}}`` per text or pair, with the labels,
    seq_length and truncation the classifier was fine-tuned with."""
    backend = as_backend(model, "classify")
    labels = backend.info.labels
    enc = encode_classify(tokenizer, items, seq_length or backend.info.seq_length, backend.info.truncation)
    probs = softmax(classify_logits(backend, enc, batch_size, tokenizer.pad_id))
    if probs.shape[1] != len(labels):
        raise RuntimeError(f"the classifier has {probs.shape[1]} outputs but {len(labels)} labels")
    out = []
    for row in probs:
        j = int(row.argmax())
        out.append({"label": labels[j], "score": float(row[j]),
                    "scores": {lab: float(p) for lab, p in zip(labels, row)}})
    return out


# --------------------------------------------------------------------------------------- CLI
KINDS = {"fill-mask": "mlm", "embed": "encoder", "classify": "cls"}


def load_backend(task: str, model: str | None = None, onnx: str | None = None, vocab_path: str | None = None,
                 config_path: str | None = None, layers_num: int | None = None, layer_norm: str | None = None,
                 device: str = "cpu", threads: int = 0) -> tuple[Backend, BertTokenizer]:
    """The fastest available backend for ``task`` and its tokenizer: the ONNX graph when given
    (onnxruntime; the graph and its vocab checked against the hashes recorded at export), else the
    PyTorch model loaded from ``model``. Checks the vocab fits."""
    if onnx:
        backend: Backend = OnnxBackend(onnx, threads=threads)
        if backend.task != task:
            raise ValueError(f"{onnx} is a {backend.task} export; export one with --task {task}")
        vocab = check_onnx_vocab(onnx, vocab_path) if vocab_path else vocab_beside_onnx(onnx)
    elif model:
        if threads > 0:
            torch.set_num_threads(threads)
        if os.path.isdir(model) and not os.path.isfile(os.path.join(model, "config.json")) \
                and os.path.isfile(os.path.join(model, "model", "config.json")):
            model = os.path.join(model, "model")  # a `finetune --output_dir`
        if task == "classify":
            m, ft = load_finetuned(model, device)
            backend = TorchBackend(m, task, labels=ft["labels"], seq_length=int(ft.get("seq_length", 128)),
                                   truncation=ft.get("truncation", "longest_first"))
            vocab = resolve_vocab(ft["model_dir"], vocab_path)
        else:
            m, meta = load_model(model, KINDS[task], config_path=config_path, layers_num=layers_num,
                                 layer_norm_type=layer_norm)
            backend = TorchBackend(m.to(device), task)
            vocab = resolve_vocab(model, vocab_path, meta)
    else:
        raise ValueError("pass --model DIR (PyTorch) or --onnx FILE (onnxruntime)")
    tok = BertTokenizer(vocab)
    if len(tok) != backend.info.vocab_size:
        raise ValueError(f"vocab {tok.vocab_path} has {len(tok)} tokens but the model has {backend.info.vocab_size}; "
                         f"pass --vocab_path with the model's vocab")
    return backend, tok


def _load(cfg: ModelSource, task: str) -> tuple[Backend, BertTokenizer]:
    return load_backend(task, cfg.model, cfg.onnx, cfg.vocab_path, cfg.config_path, cfg.layers_num,
                        cfg.layer_norm, cfg.device, cfg.threads)


def _read_texts(path: str, keep_blank: bool = False) -> tuple[list[str], list[str]]:
    """(texts, their ``file:line`` names), one text per line; a non-UTF-8 line is an error naming
    ``file:line``. ``keep_blank``: blank lines stay (as empty texts) so that output row i is input
    line i (embed); otherwise they are skipped (fill-mask, where a text needs a [MASK])."""
    numbered = read_text_lines(path, keep_blank)
    return [t for _, t in numbered], [f"{path}:{n}" for n, _ in numbered]


def configure_fill_mask(p: argparse.ArgumentParser) -> None:
    p.add_argument("texts", nargs="*", help="texts containing [MASK]")
    add_options(p, FillMaskConfig, groups={})


def _print_predictions(text: str, preds: list[Any]) -> None:
    print(text)
    groups = preds if preds and isinstance(preds[0], list) else [preds]
    for m, group in enumerate(groups):
        if len(groups) > 1:
            print(f"  [MASK] #{m + 1}")
        print(f"  {'score':>8}  {'token':>6}  {'token_str':<10} sequence")
        for d in group:
            print(f"  {d['score']:8.4g}  {d['token']:>6}  {d['token_str']:<10} {d['sequence']}")


def run_fill_mask(args: argparse.Namespace) -> int:
    cfg = from_args(FillMaskConfig, args).validate()
    file_texts, file_names = _read_texts(cfg.input) if cfg.input else ([], [])
    texts = list(args.texts) + file_texts
    names = [f"text {i + 1}" for i in range(len(args.texts))] + file_names
    if not texts:
        raise ValueError("no texts: pass them as arguments or with --input FILE")
    model, tok = _load(cfg, "fill-mask")
    encoded = encode_fill_mask(tok, texts, model.info.max_length, names)   # errors name the argument or file:line
    chunk = cfg.batch_size * 32
    for start in range(0, len(texts), chunk):
        part = texts[start: start + chunk]
        preds = fill_mask_ids(model, tok, encoded[start: start + chunk], top_k=cfg.top_k, batch_size=cfg.batch_size)
        for text, pred in zip(part, preds):
            if cfg.json:
                print(json.dumps({"text": text, "predictions": pred}, ensure_ascii=False))
            else:
                _print_predictions(text, pred)
        if len(texts) > chunk:
            log(f"fill-mask: {min(start + chunk, len(texts))}/{len(texts)} texts")
        sys.stdout.flush()
    return 0


def configure_embed(p: argparse.ArgumentParser) -> None:
    add_options(p, EmbedConfig, groups={})


def run_embed(args: argparse.Namespace) -> int:
    cfg = from_args(EmbedConfig, args).validate()
    texts, _ = _read_texts(cfg.input, keep_blank=True)
    if not texts:
        raise ValueError(f"--input {cfg.input}: no non-blank lines")
    with claim_output(cfg.output, overwrite=cfg.overwrite, command="embed", can_resume=False,
                      what="features written by an earlier run"):
        model, tok = _load(cfg, "embed")
        feats = embed(model, tok, texts, pooling=cfg.pooling, seq_length=cfg.seq_length, batch_size=cfg.batch_size)
        with atomic_write(cfg.output, "wb") as f:
            np.save(f, feats)
    log(f"wrote {cfg.output}: {feats.shape} float32 ({cfg.pooling} pooling)")
    return 0


__all__ = ["fill_mask", "fill_mask_ids", "embed", "classify", "classify_logits", "encode_classify", "encode_fill_mask",
           "load_backend", "as_backend", "softmax", "POOLINGS", "configure_fill_mask", "run_fill_mask",
           "configure_embed", "run_embed"]
