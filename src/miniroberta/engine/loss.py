"""Token-level cross-entropy for the MLM head, fused and chunked.

``F.cross_entropy(logits.float(), labels)`` on the (M, V) logits of the masked positions (V =
21128) costs a full-size float copy, a log-softmax forward and backward over 40 MB tensors,
and an argmax pass for the accuracy: for a tiny model that was a quarter of the training step.
:func:`cross_entropy_sum` computes the same sum of per-token losses from the logits in their
own dtype (bf16 or fp32), a few rows at a time so the float work stays in cache, and returns
the number of correct argmax predictions from the same pass. The backward writes
``softmax - one_hot`` directly in the logits' dtype. Numerically it is the float32
log-sum-exp of each row (the same as ``F.cross_entropy`` on float logits, within rounding).
"""
from __future__ import annotations

import torch

CHUNK_ROWS = 32  # rows of (M, V) logits per piece: 32 x 21128 floats = 2.7 MB


class _CrossEntropySum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        M = logits.shape[0]
        lse = torch.empty(M, dtype=torch.float32, device=logits.device)
        argmax = torch.empty(M, dtype=torch.int64, device=logits.device)
        for s in range(0, M, CHUNK_ROWS):
            x = logits[s:s + CHUNK_ROWS].to(torch.float32, copy=True)
            mx, am = x.max(dim=-1)
            argmax[s:s + CHUNK_ROWS] = am
            lse[s:s + CHUNK_ROWS] = x.sub_(mx[:, None]).exp_().sum(-1).log_().add_(mx)
        target = logits.gather(1, labels[:, None]).squeeze(1).float()
        ctx.save_for_backward(logits, labels, lse)
        return (lse - target).sum(), (argmax == labels).sum()

    @staticmethod
    def backward(ctx, grad: torch.Tensor, _grad_correct: torch.Tensor | None):
        logits, labels, lse = ctx.saved_tensors
        out = torch.empty_like(logits)
        g = grad.float()
        for s in range(0, logits.shape[0], CHUNK_ROWS):
            p = logits[s:s + CHUNK_ROWS].to(torch.float32, copy=True).sub_(lse[s:s + CHUNK_ROWS, None]).exp_().mul_(g)
            out[s:s + CHUNK_ROWS] = p
        out.scatter_add_(1, labels[:, None], (-g).expand(labels.shape[0], 1).to(out.dtype))
        return out, None


def cross_entropy_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum over rows of -log softmax(logits)[label] as float32, number of rows whose argmax is
    the label). ``logits`` (M, V) any float dtype, ``labels`` (M,) int64 in [0, V)."""
    if logits.shape[0] == 0:
        zero = logits.new_zeros((), dtype=torch.float32)
        return zero + logits.sum() * 0, zero.long()
    return _CrossEntropySum.apply(logits, labels)


__all__ = ["cross_entropy_sum"]
