"""Inference: ``miniroberta fill-mask`` and ``miniroberta embed``.

``fill_mask`` returns exactly what ``transformers.pipeline('fill-mask')`` returns for each text --
a list of ``{"score", "token", "token_str", "sequence"}`` dicts (one list per ``[MASK]`` when a
text has several) -- but runs texts in padded batches and the MLM head on the masked positions
only. ``embed`` returns the last hidden state at ``[CLS]``, mean-pooled over real tokens, or the
whole (zero-padded) sequence.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Sequence

import numpy as np
import torch

from miniroberta.modeling.tokenizer import BertTokenizer
from miniroberta.utils import atomic_write, log

POOLINGS = ("cls", "mean", "sequence")


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _pad(rows: list[list[int]], pad_id: int, length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    T = length or max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


def _batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (less padding); order restored by the caller."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]


@torch.no_grad()
def fill_mask(model: torch.nn.Module, tokenizer: BertTokenizer, texts: Sequence[str] | str, top_k: int = 5,
              batch_size: int = 32) -> list[Any]:
    """Top-k predictions for every ``[MASK]`` of every text, like transformers' fill-mask pipeline.

    Returns one entry per text: a list of ``top_k`` dicts ``{"score", "token", "token_str",
    "sequence"}`` when the text has one ``[MASK]``, or a list of such lists (one per mask, with the
    other masks kept in ``sequence``) when it has several -- the pipeline's shapes."""
    if isinstance(texts, str):
        texts = [texts]
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    model.eval()
    device = _device_of(model)
    max_len = model.config.max_position_embeddings
    encoded = [[tokenizer.cls_id] + ids + [tokenizer.sep_id] for ids in tokenizer.encode_batch_ids(list(texts))]
    for i, ids in enumerate(encoded):
        if tokenizer.mask_id not in ids:
            raise ValueError(f"text {i + 1} has no [MASK] token: {texts[i]!r}")
        if len(ids) > max_len:
            raise ValueError(f"text {i + 1} is {len(ids)} tokens long; the model takes at most {max_len}")
    k = min(top_k, model.config.vocab_size)
    results: list[Any] = [None] * len(encoded)
    for batch in _batches([len(e) for e in encoded], batch_size):
        rows = [encoded[i] for i in batch]
        ids, mask = _pad(rows, tokenizer.pad_id)
        flat = (ids.reshape(-1) == tokenizer.mask_id).nonzero().squeeze(-1)
        logits = model(ids.to(device), attention_mask=mask.to(device),
                       token_type_ids=torch.zeros_like(ids).to(device),
                       masked_positions=flat.to(device)).logits
        values, preds = logits.float().softmax(-1).topk(k, dim=-1)
        values, preds = values.cpu().tolist(), preds.cpu().tolist()
        T = ids.shape[1]
        # one (row in batch, position) per masked position, in flat order
        where = [(int(f) // T, int(f) % T) for f in flat]
        per_text: dict[int, list[list[dict[str, Any]]]] = {b: [] for b in range(len(batch))}
        seqs, skips = [], []
        for (b, t), vals, cands in zip(where, values, preds):
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
        for b, i in enumerate(batch):
            results[i] = per_text[b][0] if len(per_text[b]) == 1 else per_text[b]
    return results


@torch.no_grad()
def embed(model: torch.nn.Module, tokenizer: BertTokenizer, texts: Sequence[str], pooling: str = "cls",
          seq_length: int = 128, batch_size: int = 32) -> np.ndarray:
    """Features from the last hidden state: ``cls`` (N, H) at [CLS]; ``mean`` (N, H) averaged over
    the real tokens ([CLS] and [SEP] included, padding excluded); ``sequence`` (N, seq_length, H),
    zeros at padding. Texts are ``[CLS] text [SEP]`` cut at ``seq_length``."""
    if pooling not in POOLINGS:
        raise ValueError(f"--pooling must be one of {POOLINGS}, got {pooling!r}")
    encoder = model.bert if hasattr(model, "bert") else model
    max_len = encoder.config.max_position_embeddings
    if not 2 <= seq_length <= max_len:
        raise ValueError(f"--seq_length must be in [2, {max_len}], got {seq_length}")
    encoder.eval()
    device = _device_of(encoder)
    H = encoder.config.hidden_size
    rows = [tokenizer.build_inputs(ids, max_length=seq_length).input_ids
            for ids in tokenizer.encode_batch_ids(list(texts))]
    shape = (len(rows), seq_length, H) if pooling == "sequence" else (len(rows), H)
    out = np.zeros(shape, dtype=np.float32)
    for batch in _batches([len(r) for r in rows], batch_size):
        ids, mask = _pad([rows[i] for i in batch], tokenizer.pad_id)
        h = encoder(ids.to(device), attention_mask=mask.to(device),
                    token_type_ids=torch.zeros_like(ids).to(device)).last_hidden_state.float().cpu()
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


# --------------------------------------------------------------------------------------- CLI
def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True,
                   help="HF directory, native .safetensors, HF pytorch_model.bin or UER-py model.bin-<step>")
    p.add_argument("--vocab_path", default=None,
                   help="default: vocab.txt beside/inside --model, else ../shared/data/vocab/google_zh_vocab.txt")
    p.add_argument("--config_path", default=None, help="model config when the checkpoint carries none")
    p.add_argument("--layers_num", type=int, default=None, help="UER-py compatibility (checked)")
    p.add_argument("--layer_norm", choices=("hf", "uer"), default=None, help="override the LayerNorm flavour")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")


def _load(args: argparse.Namespace, kind: str):
    from miniroberta.interop.checkpoint import load_model
    from miniroberta.interop.export import resolve_vocab
    model, meta = load_model(args.model, kind, config_path=args.config_path, layers_num=args.layers_num,
                             layer_norm_type=args.layer_norm)
    tok = BertTokenizer(resolve_vocab(args.model, args.vocab_path, meta))
    if len(tok) != model.config.vocab_size:
        raise ValueError(f"vocab {tok.vocab_path} has {len(tok)} tokens but the model has {model.config.vocab_size}; "
                         f"pass --vocab_path with the model's vocab")
    return model.to(args.device), tok


def _read_texts(path: str, keep_blank: bool = False) -> list[str]:
    """One text per line. ``keep_blank``: blank lines stay (as empty texts) so that output row i is
    input line i (embed); otherwise they are skipped (fill-mask, where a text needs a [MASK])."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--input {path}: no such file")
    with open(path, encoding="utf-8") as f:
        lines = [line.rstrip("\r\n") for line in f]
    return lines if keep_blank else [t for t in lines if t.strip()]


def configure_fill_mask(p: argparse.ArgumentParser) -> None:
    p.add_argument("texts", nargs="*", help="texts containing [MASK]")
    _model_options(p)
    p.add_argument("--input", default=None, help="a file with one text per line (blank lines skipped)")
    p.add_argument("--top_k", type=int, default=5)
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per text: {\"text\": ..., \"predictions\": <the pipeline's output>}")


def run_fill_mask(args: argparse.Namespace) -> int:
    texts = list(args.texts) + (_read_texts(args.input) if args.input else [])
    if not texts:
        raise ValueError("no texts: pass them as arguments or with --input FILE")
    model, tok = _load(args, "mlm")
    chunk = max(args.batch_size, 1) * 32
    for start in range(0, len(texts), chunk):
        part = texts[start: start + chunk]
        for text, preds in zip(part, fill_mask(model, tok, part, top_k=args.top_k, batch_size=args.batch_size)):
            if args.json:
                print(json.dumps({"text": text, "predictions": preds}, ensure_ascii=False))
                continue
            print(text)
            groups = preds if preds and isinstance(preds[0], list) else [preds]
            for m, group in enumerate(groups):
                if len(groups) > 1:
                    print(f"  [MASK] #{m + 1}")
                print(f"  {'score':>8}  {'token':>6}  {'token_str':<10} sequence")
                for d in group:
                    print(f"  {d['score']:8.4g}  {d['token']:>6}  {d['token_str']:<10} {d['sequence']}")
        if len(texts) > chunk:
            log(f"fill-mask: {min(start + chunk, len(texts))}/{len(texts)} texts")
        sys.stdout.flush()
    return 0


def configure_embed(p: argparse.ArgumentParser) -> None:
    _model_options(p)
    p.add_argument("--input", required=True, help="one text per line; row i of the output is line i (a blank line embeds [CLS] [SEP])")
    p.add_argument("--output", required=True, help="features .npy file")
    p.add_argument("--pooling", choices=POOLINGS, default="cls",
                   help="cls: [CLS] vector (N,H); mean: mean over real tokens (N,H); sequence: (N,seq_length,H)")
    p.add_argument("--seq_length", type=int, default=128)


def run_embed(args: argparse.Namespace) -> int:
    texts = _read_texts(args.input, keep_blank=True)
    if not texts:
        raise ValueError(f"--input {args.input}: no non-blank lines")
    model, tok = _load(args, "encoder")
    feats = embed(model, tok, texts, pooling=args.pooling, seq_length=args.seq_length, batch_size=args.batch_size)
    with atomic_write(args.output, "wb") as f:
        np.save(f, feats)
    log(f"wrote {args.output}: {feats.shape} float32 ({args.pooling} pooling)")
    return 0


__all__ = ["fill_mask", "embed", "POOLINGS", "configure_fill_mask", "run_fill_mask", "configure_embed", "run_embed"]
