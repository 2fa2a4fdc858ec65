"""Token-level cross-entropy for the MLM head, fused and chunked.

``F.cross_entropy(logits.float(), labels)`` on the (M, V) logits of the masked positions (V =
21128) costs a full-size float copy, a log-softmax forward and backward over 40 MB tensors,
and an argmax pass for the accuracy: for a tiny model that was a quarter of the training step.

* :func:`cross_entropy_sum` computes the same sum of per-token losses from logits in their own
  dtype (bf16 or fp32), a few rows at a time so the float work stays in cache, returns the
  number of correct argmax predictions from the same pass, and writes ``softmax - one_hot``
  straight into the logits' dtype in the backward.
* :func:`linear_cross_entropy_sum` also owns the output projection ``x @ W.T + b`` (the MLM
  decoder, tied to the word embeddings): the bias is added chunk by chunk inside the loss
  instead of being broadcast into a full (M, V) matrix by ``addmm``, its gradient is summed
  in the same pass, and the projection's backward is two plain matmuls.

Numerically both are the float32 log-sum-exp of each row (``F.cross_entropy`` on float
logits, within rounding); the gradient w.r.t. the logits has the logits' dtype, as autograd's.

The two distillation losses (soft targets at a temperature T, Hinton et al. 2015) live here too:

* :func:`kl_div_sum` -- ``T^2 * KL(softmax(teacher/T) || softmax(student/T))`` summed over rows:
  general (MLM) distillation, ``pretrain --teacher``;
* :func:`soft_target_loss_sum` -- ``(1 - alpha) * T^2 * CE(softmax(teacher/T), softmax(student/T))
  + alpha * CE(gold, student)`` summed over rows, the hard term only where ``gold >= 0``: task
  distillation, ``miniroberta distill``. The soft cross-entropy is the KL plus the teacher's
  entropy, a constant: the same gradient, a loss value that reads as a cross-entropy.

Both multiply by T^2 so the gradients keep their scale across temperatures.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

CHUNK_ROWS = 32  # rows of (M, V) logits per piece on CPUs: 32 x 21128 floats = 2.7 MB, cache-sized
CHUNK_ROWS_CUDA = 4096  # GPUs: few, large pieces (kernel launches, not cache, are the cost)


def _chunk(t: torch.Tensor) -> int:
    return CHUNK_ROWS_CUDA if t.is_cuda else CHUNK_ROWS


def _lse_argmax(logits: torch.Tensor, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    M = logits.shape[0]
    lse = torch.empty(M, dtype=torch.float32, device=logits.device)
    argmax = torch.empty(M, dtype=torch.int64, device=logits.device)
    b = None if bias is None else bias.float()
    C = _chunk(logits)
    for s in range(0, M, C):
        x = logits[s:s + C].to(torch.float32, copy=True)
        if b is not None:
            x += b
        mx, am = x.max(dim=-1)
        argmax[s:s + C] = am
        lse[s:s + C] = x.sub_(mx[:, None]).exp_().sum(-1).log_().add_(mx)
    return lse, argmax


def _grad_logits(logits: torch.Tensor, bias: torch.Tensor | None, labels: torch.Tensor, lse: torch.Tensor,
                 g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(softmax - one_hot) * g in the logits' dtype, and its column sums (the bias gradient), for the
    first ``len(labels)`` rows; later rows (shape-bucket filler) get zeros."""
    V = logits.shape[1]
    M = labels.shape[0]
    out = torch.empty_like(logits)
    out[M:].zero_()
    b = None if bias is None else bias.float()
    db = None if bias is None else torch.zeros(V, dtype=torch.float32, device=logits.device)
    C = _chunk(logits)
    for s in range(0, M, C):
        e = min(s + C, M)
        p = logits[s:e].to(torch.float32, copy=True)
        if b is not None:
            p += b
        p.sub_(lse[s:e, None]).exp_().mul_(g)
        if db is not None:
            db += p.sum(0)
        out[s:e] = p
    flat = torch.arange(M, device=logits.device) * V + labels      # the one-hot entries, one per row
    out.view(-1)[flat] -= g.to(out.dtype)
    if db is not None:
        db.index_add_(0, labels, (-g).expand(M))
    return out, db


def _target(logits: torch.Tensor, bias: torch.Tensor | None, labels: torch.Tensor) -> torch.Tensor:
    t = logits.gather(1, labels[:, None]).squeeze(1).float()
    return t if bias is None else t + bias.float()[labels]


class _CrossEntropySum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lse, argmax = _lse_argmax(logits, None)
        ctx.save_for_backward(logits, labels, lse)
        return (lse - _target(logits, None, labels)).sum(), (argmax == labels).sum()

    @staticmethod
    def backward(ctx, grad: torch.Tensor, _grad_correct: torch.Tensor | None):
        logits, labels, lse = ctx.saved_tensors
        return _grad_logits(logits, None, labels, lse, grad.float())[0], None


class _LinearCrossEntropySum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, labels: torch.Tensor,
                num_valid: int) -> tuple[torch.Tensor, torch.Tensor]:
        w = weight.to(x.dtype)                                        # (a no-op unless under autocast)
        logits = x @ w.t()                                            # (M, V), bias added per chunk
        lse, argmax = _lse_argmax(logits[:num_valid], bias)
        ctx.save_for_backward(x, w, bias, labels[:num_valid], logits, lse)
        ctx.weight_dtype = weight.dtype
        labels = labels[:num_valid]
        return (lse - _target(logits[:num_valid], bias, labels)).sum(), (argmax == labels).sum()

    @staticmethod
    def backward(ctx, grad: torch.Tensor, _grad_correct: torch.Tensor | None):
        x, weight, bias, labels, logits, lse = ctx.saved_tensors
        dlogits, db = _grad_logits(logits, bias, labels, lse, grad.float())
        dx = dlogits @ weight if ctx.needs_input_grad[0] else None
        dw = (dlogits.t() @ x).to(ctx.weight_dtype) if ctx.needs_input_grad[1] else None
        if db is None:   # _grad_logits returns the bias gradient whenever it is given a bias
            raise RuntimeError("linear_cross_entropy_sum: no bias gradient")
        return dx, dw, db.to(bias.dtype), None, None


def cross_entropy_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum over rows of -log softmax(logits)[label] as float32, number of rows whose argmax is
    the label). ``logits`` (M, V) any float dtype, ``labels`` (M,) int64 in [0, V)."""
    if logits.shape[0] == 0:
        zero = logits.sum() * 0
        return zero.float(), zero.long()
    return _CrossEntropySum.apply(logits, labels)


def linear_cross_entropy_sum(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, labels: torch.Tensor,
                             num_valid: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`cross_entropy_sum` of ``x @ weight.T + bias`` -- x (M, H), weight (V, H), bias (V,) --
    over the first ``num_valid`` rows (default all); later rows get no loss and no gradient."""
    n = x.shape[0] if num_valid is None else int(num_valid)
    if n == 0:
        zero = x.sum() * 0 + weight.sum() * 0 + bias.sum() * 0
        return zero.float(), zero.long()
    return _LinearCrossEntropySum.apply(x, weight, bias, labels, n)


def kl_div_sum(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Sum over rows of ``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, in float32.
    ``student``, ``teacher``: (M, V) logits of any float dtype."""
    t = float(temperature)
    lt = F.log_softmax(teacher.float() / t, -1)
    ls = F.log_softmax(student.float() / t, -1)
    return (lt.exp() * (lt - ls)).sum() * (t * t)


def soft_target_loss_sum(student: torch.Tensor, teacher: torch.Tensor, gold: torch.Tensor, temperature: float,
                         alpha: float) -> torch.Tensor:
    """Task distillation's summed loss of a batch: soft cross-entropy to the teacher at ``temperature``
    (times T^2) with weight ``1 - alpha`` and, with weight ``alpha``, cross-entropy to the gold labels where
    ``gold >= 0`` (transfer texts have no label: -1). ``student``, ``teacher``: (B, C) logits; ``gold``: (B,)."""
    t = float(temperature)
    soft = -(F.softmax(teacher.float() / t, -1) * F.log_softmax(student.float() / t, -1)).sum() * (t * t)
    loss = (1.0 - alpha) * soft
    if alpha > 0:
        labelled = gold >= 0
        if bool(labelled.any()):
            loss = loss + alpha * F.cross_entropy(student.float()[labelled], gold[labelled], reduction="sum")
    return loss


__all__ = ["cross_entropy_sum", "linear_cross_entropy_sum", "kl_div_sum", "soft_target_loss_sum"]
