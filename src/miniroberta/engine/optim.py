"""AdamW with one weight-decay rule, and the warmup + linear-decay schedule.

Weight decay applies to matrices (embeddings, linear weights) and not to vectors (biases,
LayerNorm weights, the MLM output bias) -- the rule ``p.ndim >= 2``, which for BERT selects
exactly the parameters that the reference's name test (``bias``/``LayerNorm``) exempts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch


@dataclass
class OptimConfig:
    """Optimisation settings (they change the result). Defaults: UER-py's miniature recipe."""
    learning_rate: float = 1e-4
    warmup: float = 0.1          # fraction of the total updates with linear warmup
    weight_decay: float = 0.01
    adam_eps: float = 1e-6
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 0.0       # max global grad norm; 0 = off (the reference never clips)
    correct_bias: bool = True    # Adam bias correction; UER-py pretrains with it off (correct_bias=False)

    def validate(self) -> None:
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0.0 <= self.warmup <= 1.0:
            raise ValueError(f"warmup is a fraction of the steps in [0, 1], got {self.warmup}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("weight_decay and grad_clip must be >= 0")


def param_groups(named_params: Iterable[tuple[str, torch.Tensor]], weight_decay: float) -> list[dict]:
    decay: list[torch.Tensor] = []
    no_decay: list[torch.Tensor] = []
    for _, p in named_params:
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_adamw(groups: list[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    """torch AdamW (bias-corrected), the fused kernel where the device has one: on CPU it is
    several times faster than the loop over tensors for the 21128 x H embedding table."""
    b1, b2 = cfg.betas
    lr, eps = cfg.learning_rate, cfg.adam_eps
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=(b1, b2), eps=eps, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, lr=lr, betas=(b1, b2), eps=eps)


def lr_factor(step: int, total: int, warmup: float) -> float:
    """Linear warmup over ``int(warmup * total)`` updates, then linear decay to 0, read at the
    update's 0-based index: the first update has factor 0 when warmup > 0 (as UER-py and
    transformers' ``get_linear_schedule_with_warmup``)."""
    w = int(total * warmup)
    if step < w:
        return step / max(1, w)
    return max(0.0, (total - step) / max(1, total - w))


def set_lr(optimizer: torch.optim.Optimizer, lr: float, cfg: OptimConfig | None = None, update: int = 1) -> None:
    """Set the learning rate of the coming update (``update``: its 1-based index, what the
    optimizer's own step counter will read).

    ``cfg.correct_bias=False`` gives the update of the reference's AdamW without bias
    correction, ``p -= lr * m / (sqrt(v) + eps)`` plus decoupled decay ``lr * wd * p``, on torch's
    (fused) AdamW, which always corrects: with ``b1 = 1 - beta1^t`` and ``b2 = 1 - beta2^t`` it
    computes ``lr' / b1 * m / (sqrt(v) / sqrt(b2) + eps')``, so ``lr' = lr * b1 / sqrt(b2)``,
    ``eps' = eps / sqrt(b2)`` and ``wd' = wd * lr / lr'`` give exactly the uncorrected step (the
    reference decays after the Adam step, torch before it: a difference of order lr^2 * wd)."""
    if cfg is None or cfg.correct_bias:
        for g in optimizer.param_groups:
            g["lr"] = lr
        return
    beta1, beta2 = cfg.betas
    b1, b2s = 1.0 - beta1 ** update, (1.0 - beta2 ** update) ** 0.5
    ratio = b2s / b1                      # lr / lr'
    for g in optimizer.param_groups:
        base_wd = g.setdefault("base_weight_decay", g["weight_decay"])
        g["lr"] = lr / ratio
        g["eps"] = cfg.adam_eps / b2s
        g["weight_decay"] = base_wd * ratio


__all__ = ["OptimConfig", "param_groups", "build_adamw", "lr_factor", "set_lr"]
