"""Padding-free training forward over a ``modeling.bert`` model's own modules.

Every position-wise operation (embeddings, Q/K/V and output projections, feed-forward,
LayerNorms, dropouts) runs on the ``N`` real tokens of the batch only, packed as ``(N, H)``;
only attention sees the padded ``(B, T)`` layout (with the padding mask). The MLM head runs on
the masked positions only. Mathematically this is the model's forward (same modules, same
order of operations; padding rows never influence real ones), but it skips the matmul work
on padding -- ~22 % of the slots of a seq-128 CLUECorpusSmall dataset.

Q, K and V come from one matmul against the three weights concatenated (a 3H x H copy per
call, cheaper than concatenating three N x 3H activations). Rows are gathered with
:func:`gather_rows`, whose backward writes (``index_copy``) instead of accumulating
(``index_add``): the indices are unique, and accumulation is several times slower on CPU.

Shape buckets (CPU): oneDNN builds a kernel for each new matrix shape, and the packed row
count N (real tokens) and M (masked tokens) differ in every batch, so without care many bf16
matmuls of a step pay for a fresh kernel (the same 30 tiny batches ran 1.2x faster on their
second pass than their first; buckets measured x1.04 tiny / x1.01 mini on fresh batches --
docs/performance.md). With ``bucket``
the packed rows are padded to a multiple of ``BUCKET_ROWS`` with padding positions (masked as
keys; their outputs are never read, so their gradients are exactly zero) and the masked rows to
a multiple of ``BUCKET_MASKED`` with rows the loss ignores, so a handful of shapes recur.

The stages (:meth:`UnpaddedMLM.embed`, :meth:`encode`, :meth:`head`) are public so that
``bench/profile_step.py`` can time each one. Wrapping the model in this module (rather than
calling a function) keeps DDP and ``torch.compile`` working: they see the same parameters.
"""
from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from miniroberta.modeling.bert import (BertForMaskedLM, BertForSequenceClassification, BertLayer, attention)
from miniroberta.modeling.loss import linear_cross_entropy_sum


class _GatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(index)
        ctx.rows = x.shape[0]
        return x.index_select(0, index)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (index,) = ctx.saved_tensors
        out = grad.new_zeros((ctx.rows,) + tuple(grad.shape[1:]))
        return out.index_copy_(0, index, grad), None


def gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x.index_select(0, index)`` for *unique* indices, with a write-only backward."""
    return _GatherRows.apply(x, index)


BUCKET_ROWS = 128
BUCKET_MASKED = 32


def _round_up(n: int, k: int) -> int:
    return -(-n // k) * k


def bucket_real_index(real_index: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``real_index`` followed by the first padding positions, to a multiple of BUCKET_ROWS
    (at most every position)."""
    n = real_index.shape[0]
    extra = min(_round_up(n, BUCKET_ROWS), attention_mask.numel()) - n
    if extra <= 0:
        return real_index
    pad = torch.nonzero(attention_mask.reshape(-1) == 0).squeeze(1)[:extra]
    return torch.cat([real_index, pad])


class _Unpadded(nn.Module):
    """Embeddings and encoder of ``model.bert`` on the packed real tokens."""

    model: BertForMaskedLM | BertForSequenceClassification

    def __init__(self, model: BertForMaskedLM | BertForSequenceClassification, bucket: bool = False) -> None:
        super().__init__()
        self.model = model
        self.bucket = bucket

    def _bucketing(self, x: torch.Tensor) -> bool:
        return self.bucket and self.training and not x.is_cuda

    def embed(self, input_ids: torch.Tensor, real_index: torch.Tensor,
              token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """(N, H) embeddings (word + position + token type, LayerNorm, dropout) of the real tokens."""
        emb = self.model.bert.embeddings
        T = input_ids.shape[1]
        x = emb.word_embeddings(input_ids.reshape(-1).index_select(0, real_index))
        if token_type_ids is None:
            x = x + emb.position_embeddings(real_index % T) + emb.token_type_embeddings.weight[0]
        else:
            x = x + emb.position_embeddings(real_index % T) + \
                emb.token_type_embeddings(token_type_ids.reshape(-1).index_select(0, real_index))
        return emb.dropout(emb.LayerNorm(x))

    def encode(self, x: torch.Tensor, attention_mask: torch.Tensor, real_index: torch.Tensor) -> torch.Tensor:
        """(N, H) -> (N, H) through every layer; attention on the padded (B, T) layout."""
        B, T = attention_mask.shape
        H = x.shape[-1]
        mask = attention_mask.bool()[:, None, None, :]
        # nn.ModuleList iterates as nn.Module; its items are BertLayer
        for layer in cast(list[BertLayer], self.model.bert.encoder.layer):
            sa = layer.attention.self
            nh, hd = sa.num_heads, sa.head_dim
            w = torch.cat([sa.query.weight, sa.key.weight, sa.value.weight])
            b = torch.cat([sa.query.bias, sa.key.bias, sa.value.bias])
            qkv = F.linear(x, w, b)                                                   # (N, 3H)
            padded = qkv.new_zeros(B * T, 3 * H).index_copy(0, real_index, qkv)      # (B*T, 3H)
            q, k, v = padded.view(B, T, 3, nh, hd).permute(2, 0, 3, 1, 4)             # 3 x (B, nh, T, hd)
            y = attention(q, k, v, mask, sa.dropout_p, self.training)
            y = gather_rows(y.transpose(1, 2).reshape(B * T, H), real_index)          # (N, H)
            a = layer.attention.output(y, x)
            x = layer.output(layer.intermediate(a), a)
        return x



class UnpaddedMLM(_Unpadded):
    """``BertForMaskedLM`` training forward: logits of the masked positions only."""

    model: BertForMaskedLM

    def __init__(self, model: BertForMaskedLM, bucket: bool = False) -> None:
        super().__init__(model, bucket)

    def head(self, x: torch.Tensor, masked_real_index: torch.Tensor) -> torch.Tensor:
        """(M, V) MLM logits of the masked positions."""
        return self.model.cls(gather_rows(x, masked_real_index))

    def head_loss(self, x: torch.Tensor, masked_real_index: torch.Tensor,
                  labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed cross-entropy, correct count) of the masked positions, the decoder fused into
        the loss (``modeling.loss.linear_cross_entropy_sum``)."""
        p = self.model.cls.predictions
        m = labels.shape[0]
        if self._bucketing(x) and m % BUCKET_MASKED:   # extra rows read row 0 ([CLS], never masked); ignored
            fill = _round_up(m, BUCKET_MASKED) - m
            masked_real_index = torch.cat([masked_real_index, masked_real_index.new_zeros(fill)])
            labels = torch.cat([labels, labels.new_zeros(fill)])
        h = p.transform(gather_rows(x, masked_real_index))
        return linear_cross_entropy_sum(h, p.decoder.weight, p.bias, labels, num_valid=m)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                masked_positions: torch.Tensor, real_index: torch.Tensor | None = None,
                masked_real_index: torch.Tensor | None = None, labels: torch.Tensor | None = None):
        """Logits ``(M, V)`` for ``masked_positions`` (flat indices into B*T), or with ``labels``
        (M,) the (summed loss, correct count) pair. ``real_index``: flat indices of the real
        tokens (ascending); ``masked_real_index``: where each masked position sits in
        ``real_index``. Without padding both default to the identity."""
        B, T = input_ids.shape
        if real_index is None:   # no padding: every position is real
            real_index = torch.arange(B * T, device=input_ids.device)
            masked_real_index = masked_positions
        elif masked_real_index is None:
            raise ValueError("UnpaddedMLM: real_index given without masked_real_index")
        if attention_mask is None:
            attention_mask = torch.ones(B, T, dtype=torch.long, device=input_ids.device)
        if labels is not None and self._bucketing(input_ids):
            real_index = bucket_real_index(real_index, attention_mask)
        x = self.encode(self.embed(input_ids, real_index), attention_mask, real_index)
        if labels is not None:
            return self.head_loss(x, masked_real_index, labels)
        return self.head(x, masked_real_index)


class UnpaddedClassifier(_Unpadded):
    """``BertForSequenceClassification`` forward on the packed real tokens: the pooler and the
    classifier read the ``[CLS]`` rows (the first real token of every sequence)."""

    model: BertForSequenceClassification

    def __init__(self, model: BertForSequenceClassification, bucket: bool = False) -> None:
        super().__init__(model, bucket)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None,
                real_index: torch.Tensor, cls_rows: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_labels). ``cls_rows``: where each sequence's first token sits in
        ``real_index`` (the running sum of the lengths)."""
        m = self.model
        if self._bucketing(input_ids):   # cls_rows index the real tokens, which stay first
            real_index = bucket_real_index(real_index, attention_mask)
        x = self.encode(self.embed(input_ids, real_index, token_type_ids), attention_mask, real_index)
        if m.bert.pooler is None:
            raise ValueError("UnpaddedClassifier: the model has no pooler (built with add_pooling_layer=False)")
        pooled = torch.tanh(m.bert.pooler.dense(gather_rows(x, cls_rows)))
        return m.classifier(m.dropout(pooled))


__all__ = ["UnpaddedMLM", "UnpaddedClassifier", "gather_rows"]
