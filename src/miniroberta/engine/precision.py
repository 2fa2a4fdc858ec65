"""Training precision: fp32, or bf16 compute with fp32 master weights.

``bf16`` keeps the model's parameters in bf16 between steps, so every matmul, LayerNorm and
GELU runs on bf16 tensors with no per-op weight casts (what ``torch.autocast`` does each
forward), and keeps an fp32 master copy of every parameter for the optimizer: gradients are
converted to fp32 after the backward, AdamW updates the masters, the masters are copied back
to bf16. Checkpoints hold the fp32 masters, so a bf16 run resumes exactly and exports fp32
weights. Losses are reduced in fp32 (``engine.loss``).

``auto`` picks bf16 where the device computes bf16 natively (CUDA with bf16, AVX512-BF16 or AMX
CPUs) *and* a short measurement of the model's own feed-forward matmul shows bf16 faster,
else fp32, and says why.
"""
from __future__ import annotations

import time
from typing import Iterator

import torch
from torch import nn

from miniroberta.engine.device import cpu_info, native_bf16

PRECISIONS = ("auto", "fp32", "bf16")


def _time_matmul(m: int, k: int, n: int, dtype: torch.dtype, device: torch.device, reps: int = 6) -> float:
    g = torch.Generator(device="cpu").manual_seed(0)  # leave the global RNG untouched
    a = torch.randn(m, k, generator=g).to(device, dtype)
    b = torch.randn(k, n, generator=g).to(device, dtype)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        (a @ b).sum().item()
        best = min(best, time.perf_counter() - t0)
    return best


def resolve_precision(requested: str, device: torch.device, hidden_size: int = 768,
                      tokens: int = 4096) -> tuple[str, str]:
    """(``fp32``|``bf16``, the reason) for ``requested`` in ``auto``/``fp32``/``bf16``."""
    if requested not in PRECISIONS:
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if requested != "auto":
        return requested, "requested"
    where = "this GPU" if device.type == "cuda" else f"this CPU ({cpu_info()['model']})"
    if not native_bf16(device):
        return "fp32", f"{where} has no native bf16 (AVX512-BF16/AMX)"
    shape = (tokens, hidden_size, 4 * hidden_size)
    t32 = _time_matmul(*shape, torch.float32, device)
    t16 = _time_matmul(*shape, torch.bfloat16, device)
    ratio = t32 / max(t16, 1e-12)
    if ratio > 1.1:
        return "bf16", f"{where} has native bf16; a {shape[0]}x{shape[1]}x{shape[2]} matmul is {ratio:.1f}x faster in bf16"
    return "fp32", f"bf16 measured no faster on {where} ({ratio:.2f}x fp32)"


class Precision:
    """Owns the parameter dtype of ``model`` and the optimizer's view of its parameters."""

    def __init__(self, kind: str, model: nn.Module) -> None:
        if kind not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16 here (resolve 'auto' first), got {kind!r}")
        self.kind = kind
        self.dtype = torch.bfloat16 if kind == "bf16" else torch.float32
        self.model = model
        self.params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if kind == "bf16":
            self.master = [(n, nn.Parameter(p.detach().float().clone())) for n, p in self.params]
            model.to(torch.bfloat16)
        else:
            self.master = self.params

    def named_master(self) -> Iterator[tuple[str, torch.Tensor]]:
        """What the optimizer updates: the fp32 masters (bf16) or the parameters themselves (fp32)."""
        return iter(self.master)

    @torch.no_grad()
    def grads_to_master(self) -> None:
        if self.kind == "fp32":
            return
        for (_, p), (_, m) in zip(self.params, self.master):
            m.grad = None if p.grad is None else p.grad.float()
            p.grad = None

    @torch.no_grad()
    def master_to_model(self) -> None:
        if self.kind == "fp32":
            return
        for (_, p), (_, m) in zip(self.params, self.master):
            p.copy_(m)

    def zero_grad(self) -> None:
        for _, p in self.params:
            p.grad = None
        for _, m in self.master:
            m.grad = None

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The model's state dict with fp32 weights (masters in bf16 mode), detached, on CPU."""
        sd = self.model.state_dict()
        if self.kind == "fp32":
            return {k: v.detach().to("cpu", copy=True) for k, v in sd.items()}
        by_id = {id(p): m for (_, p), (_, m) in zip(self.params, self.master)}
        full = self.model.state_dict(keep_vars=True)
        return {k: (by_id[id(v)] if id(v) in by_id else v).detach().to("cpu", torch.float32, copy=True)
                for k, v in full.items()}


__all__ = ["PRECISIONS", "resolve_precision", "Precision"]
