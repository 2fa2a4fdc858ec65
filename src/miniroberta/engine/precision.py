"""Training precision: fp32, or bf16 compute with fp32 master weights.

``bf16`` keeps the model's parameters in bf16 between steps, so every matmul, LayerNorm and
GELU runs on bf16 tensors with no per-op weight casts (what ``torch.autocast`` does each
forward), and keeps an fp32 master copy of every parameter for the optimizer: gradients are
converted to fp32 after the backward, AdamW updates the masters, the masters are copied back
to bf16. Checkpoints hold the fp32 masters, so a bf16 run resumes exactly and exports fp32
weights. Losses are reduced in fp32 (``engine.loss``).

``auto`` is decided from the device's capabilities alone, never by a timing (a timed matmul on a busy
machine reported bf16 anywhere from 0.29x to 29x fp32 within four minutes, so the same command trained in
fp32 one run and bf16 the next): bf16 on a CUDA device that supports it and on CPUs that compute it natively
(AVX512-BF16 or AMX: measured 1.9x fp32's tokens/s for tiny on a Zen 4, docs/performance.md), fp32 elsewhere.
The same command on the same machine therefore always trains the same way; the choice and its reason are
logged and recorded in the metrics.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

from miniroberta.engine.device import cpu_info, native_bf16

PRECISIONS = ("auto", "fp32", "bf16")


def resolve_precision(requested: str, device: torch.device) -> tuple[str, str]:
    """(``fp32``|``bf16``, the reason) for ``requested`` in ``auto``/``fp32``/``bf16``; ``auto`` depends
    on the device's capabilities only."""
    if requested not in PRECISIONS:
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if requested != "auto":
        return requested, "requested"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return (("bf16", f"auto: {name} supports bf16") if native_bf16(device)
                else ("fp32", f"auto: {name} has no bf16 support"))
    info = cpu_info()
    f = info["flags"]
    if native_bf16(device):
        which = "AMX" if f.get("amx_bf16") else "AVX512-BF16"
        return "bf16", f"auto: this CPU ({info['model']}) computes bf16 natively ({which})"
    return "fp32", f"auto: this CPU ({info['model']}) has no native bf16 (no AVX512-BF16 or AMX)"


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
        """bf16 gradients -> fp32 gradients of the masters, in one multi-tensor copy per step (a loop of
        one kernel per parameter made bf16 slower than fp32 for tiny models on a GPU)."""
        if self.kind == "fp32":
            return
        dst: list[torch.Tensor] = []
        src: list[torch.Tensor] = []
        for (_, p), (_, m) in zip(self.params, self.master):
            if p.grad is None:
                m.grad = None
                continue
            if m.grad is None or m.grad.shape != p.shape:
                m.grad = torch.empty_like(m)
            dst.append(m.grad)
            src.append(p.grad)
        if dst:
            torch._foreach_copy_(dst, src)
        for _, p in self.params:
            p.grad = None

    @torch.no_grad()
    def master_to_model(self) -> None:
        if self.kind == "fp32":
            return
        torch._foreach_copy_([p for _, p in self.params], [m for _, m in self.master])

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
