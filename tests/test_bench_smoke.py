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


def test_equal_wallclock_places_both_recipes_on_one_time_axis(tmp_path):
    """bench/equal_wallclock.py with a finished reference run: held-out points at their minutes since the
    start (stage 2 after stage 1's end), and the table takes the last point at or before each mark."""
    run = tmp_path / "cpuhour"
    for d in ("data/seq128", "data/heldout_seq128", "models/L2_H128/stage1", "models/L2_H128/stage2"):
        (run / d).mkdir(parents=True)

    def metrics(path, t0, points, end):
        recs = [{"event": "start", "step": 0, "time": t0, "pretrain_config": {"learning_rate": 1}}]
        recs += [{"event": "eval", "step": s, "eval_loss": loss, "eval_accuracy": 0.1, "time": t0 + t}
                 for s, t, loss in points]
        recs.append({"event": "done", "step": points[-1][0], "time": t0 + end})
        path.write_text("\n".join(json.dumps(r) for r in recs) + "\n")

    metrics(run / "models/L2_H128/stage1/metrics.jsonl", 1000.0, [(0, 0, 9.9), (500, 300, 6.4), (1000, 600, 5.5)], 620)
    metrics(run / "models/L2_H128/stage2/metrics.jsonl", 5000.0, [(0, 0, 5.5), (250, 60, 5.3)], 70)
    ref = tmp_path / "ref.jsonl"
    metrics(ref, 0.0, [(0, 0, 9.9), (1000, 290, 7.0), (2000, 610, 6.8)], 620)
    out, plot = tmp_path / "eq.json", tmp_path / "eq.png"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "equal_wallclock.py"), "--cpu_hour", str(run),
                        "--reference_metrics", str(ref), "--minutes", "11", "--out", str(out), "--plot", str(plot)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    chosen = res["curves"]["chosen"]
    assert [round(p["minutes"], 3) for p in chosen] == [0, 5, 10, round((620 + 60) / 60, 3)]
    assert chosen[-1]["stage"] == 2 and chosen[-1]["loss"] == 5.3
    row = {r_["minutes"]: r_ for r_ in res["table"]}
    assert row[5.0]["chosen"]["loss"] == 6.4 and row[5.0]["reference"]["loss"] == 7.0
    assert row[11.0]["chosen"]["loss"] == 5.5 and row[11.0]["reference"]["loss"] == 6.8   # stage 2's is at 11.3
    assert row[15.0]["chosen"]["loss"] == 5.3
    assert row[10.0]["reference"]["step"] == 1000         # 610 s is after the 10-minute mark
