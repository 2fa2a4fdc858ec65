"""Where training runs: device choice, CPU features, the measured matmul peak (MFU denominator)."""
from __future__ import annotations

import os
import platform
import time
from functools import lru_cache
from typing import Any

import torch


def resolve_device(device: str | None = None) -> torch.device:
    """``None``/``"auto"``: the first CUDA device if there is one, else the CPU."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@lru_cache(maxsize=1)
def cpu_info() -> dict[str, Any]:
    """CPU model, core count and the instruction-set flags that decide bf16 speed."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name") and model in ("", platform.machine(), platform.processor()):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    keys = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni")
    return {"model": model, "cores": os.cpu_count(), "flags": {k: k in flags for k in keys},
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}


def device_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
                            "cpu": cpu_info()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def native_bf16(device: torch.device) -> bool:
    """Whether the hardware computes bf16 matmuls natively (AVX512-BF16 or AMX on CPUs)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    f = cpu_info()["flags"]
    return bool(f["avx512_bf16"] or f["amx_bf16"])


def measure_matmul_peak(device: torch.device, dtype: torch.dtype, seconds: float = 0.4) -> float:
    """Achieved FLOP/s of a large square matmul on this device and dtype (the MFU denominator)."""
    n = 1024 if device.type == "cpu" else 8192
    g = torch.Generator(device="cpu").manual_seed(0)  # leave the global RNG (dropout) untouched
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    (a @ b).sum().item()
    reps, t0 = 0, time.perf_counter()
    while True:
        c = a @ b
        reps += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dt = time.perf_counter() - t0
        if dt >= seconds and reps >= 3:
            break
    del c
    return 2.0 * n ** 3 * reps / dt


__all__ = ["resolve_device", "cpu_info", "device_info", "native_bf16", "measure_matmul_peak"]
