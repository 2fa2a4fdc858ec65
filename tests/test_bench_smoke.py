"""The GPU benchmark's code path, run on the CPU (the GPU run itself needs a lent machine)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_gpu_runs_on_cpu_quick(tmp_path):
    out = tmp_path / "gpu.json"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_gpu.py"), "--device", "cpu", "--quick",
                        "--precision", "fp32", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert set(res["runs"]) == {"tiny/seq128", "tiny/seq512"}
    for run in res["runs"].values():
        assert run["real_tokens_per_s"] > 0 and 0 < run["mfu"] < 1.5 and run["precision"] == "fp32"
    assert res["machine"]["cpu"]["flags"].keys() >= {"avx2", "avx512_bf16", "amx_bf16"}
