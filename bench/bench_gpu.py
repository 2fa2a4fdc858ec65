"""Pretraining throughput on one accelerator: tiny ... base at seq 128 and 512, bf16.

Needs nothing outside the repository (the data is synthetic: a 21,128-token vocab and
instances whose lengths follow a seq-128/512 corpus -- 78 % of the slots real on average), so
it runs on a bare GPU machine. For each size and sequence length it runs ``pretrain`` (the
engine: padding-free forward, fused decoder+loss, bf16 with fp32 masters, fused AdamW) for a
few dozen updates and records real tokens/s and MFU against the matmul peak measured in the
same process. Writes ``bench/results/gpu.json`` (and a copy to ``$OUT`` when set).

    python bench/bench_gpu.py                          # CUDA, all sizes, seq 128 and 512 (< 8 min on an H100/H200)
    python bench/bench_gpu.py --device cpu --quick     # the same code path, tiny, on a CPU (smoke test)
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from miniroberta.data.dataset import write_dataset  # noqa: E402
from miniroberta.engine.device import device_info, measure_matmul_peak  # noqa: E402
from miniroberta.pretrain.launch import PretrainConfig, RunOptions, train  # noqa: E402
from miniroberta.utils import sha256_file  # noqa: E402

SPECIALS = ["[PAD]"] + [f"[unused{i}]" for i in range(1, 100)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
BATCH = {128: 64, 512: 16}       # per-step batch by sequence length (the reference: 64 x 8 GPUs / 16 x 8)


def make_data(tmp: str, seq: int, n: int, vocab_size: int = 21128, seed: int = 0) -> tuple[str, str]:
    vocab = os.path.join(tmp, "vocab.txt")
    if not os.path.exists(vocab):
        with open(vocab, "w", encoding="utf-8") as f:
            f.write("\n".join(SPECIALS + [f"t{i}" for i in range(vocab_size - len(SPECIALS))]) + "\n")
    rng = np.random.default_rng(seed)
    cls_, sep = SPECIALS.index("[CLS]"), SPECIALS.index("[SEP]")
    inst = []
    for _ in range(n):   # 60 % full windows, the rest uniform in [8, seq): ~78 % real slots
        L = seq if rng.random() < 0.6 else int(rng.integers(8, seq))
        body = rng.zipf(1.3, L - 2) % (vocab_size - len(SPECIALS)) + len(SPECIALS)
        inst.append([cls_, *body.tolist(), sep])
    path = os.path.join(tmp, f"synthetic_seq{seq}")
    write_dataset(path, inst, dict(vocab_sha256=sha256_file(vocab), vocab_size=vocab_size, seq_length=seq),
                  overwrite=True)
    return path, vocab


def run_one(tmp: str, ds: str, vocab: str, size: str, seq: int, device: str, steps: int, batch: int,
            precision: str) -> dict:
    out = os.path.join(tmp, f"{size}_{seq}", "m.bin")
    cfg = PretrainConfig(dataset_path=ds, output_model_path=out, vocab_path=vocab, config_path=size,
                         total_steps=steps, batch_size=batch, learning_rate=1e-4, warmup=0.0, init="hf",
                         precision=precision)
    t0 = time.time()
    r = train(cfg, RunOptions(report_steps=max(1, steps // 6), save_checkpoint_steps=10 ** 9, progress=False,
                              device=device, num_workers=2))
    recs = [json.loads(l) for l in open(r["metrics_path"], encoding="utf-8")]
    reps = [x for x in recs if x.get("event") == "report"][1:]  # the first includes start-up and warm-up
    shutil.rmtree(os.path.dirname(out), ignore_errors=True)
    return {"real_tokens_per_s": float(np.median([x["real_tokens_per_s"] for x in reps])),
            "padded_tokens_per_s": float(np.median([x["padded_tokens_per_s"] for x in reps])),
            "mfu": float(np.median([x["mfu"] for x in reps])), "batch_size": batch, "steps": steps,
            "final_loss": r["final_loss"], "precision": r["precision"], "wall_s": time.time() - t0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--sizes", nargs="+", default=["tiny", "mini", "small", "medium", "base"])
    ap.add_argument("--seqs", nargs="+", type=int, default=[128, 512])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--budget_s", type=float, default=420, help="stop starting new runs after this long")
    ap.add_argument("--quick", action="store_true", help="tiny, 6 steps, small data (a smoke test)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "gpu.json"))
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device here; run with --device cpu --quick for a smoke test", file=sys.stderr)
        return 2
    if args.quick:
        args.sizes, args.steps = ["tiny"], 6
    dev = torch.device(args.device)
    res: dict = {"machine": device_info(dev), "peak_flops": {
        "bf16": measure_matmul_peak(dev, torch.bfloat16, 1.0), "fp32": measure_matmul_peak(dev, torch.float32, 1.0)},
        "runs": {}, "skipped": []}
    print(json.dumps(res["machine"]), flush=True)
    t_start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for seq in args.seqs:
            n = 64 if args.quick else max(4096, 4 * BATCH.get(seq, 16) * args.steps)
            ds, vocab = make_data(tmp, seq, n)
            for size in args.sizes:
                key = f"{size}/seq{seq}"
                if time.time() - t_start > args.budget_s:
                    res["skipped"].append(key)
                    continue
                batch = 8 if args.quick else BATCH.get(seq, 16)
                res["runs"][key] = r = run_one(tmp, ds, vocab, size, seq, args.device, args.steps, batch,
                                               args.precision)
                print(f"{key:<14} {r['precision']} batch {batch}: {r['real_tokens_per_s']:>12,.0f} real tok/s  "
                      f"MFU {100 * r['mfu']:.1f}%  ({r['wall_s']:.0f} s)", flush=True)
    res["wall_s"] = time.time() - t_start
    for path in filter(None, [args.out, os.path.join(os.environ["OUT"], "gpu.json") if os.environ.get("OUT") else None]):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(res, f, indent=2)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
