"""Pretraining throughput: miniroberta's engine vs a plain transformers training loop.

Same data (a preprocessed slice of ../shared/data/corpus, seq 128), same instances in the
same order, same batch size, same masks; all measured in this run, interleaved per size:

* baseline -- ``transformers.BertForMaskedLM`` with default settings (full-vocab head on
  every position, batches padded to seq_length, ``torch.optim.AdamW`` defaults), a plain
  forward/backward/step loop;
* ours fp32 / ours bf16 -- ``miniroberta.pretrain.launch.train`` with ``--precision fp32|bf16``
  (the engine: padding-free forward, head and fused loss on masked positions only, fast
  dropout masks, bf16 weights with fp32 masters, fused AdamW, batches prepared in a background
  thread, no host syncs between report steps). ``--precision auto`` (the default) picks one of
  the two; the result records which and why.

Reported: real (non-padding) tokens/s, ratio to the baseline, and MFU = useful training
FLOPs (``model.flops_per_token``) x real tokens/s / the matmul peak measured in this run
(fp32 and bf16 separately; bf16 against the bf16 peak unless bf16 is slower than fp32 here).
Records the CPU model and flags. Writes ``bench/results/pretrain.json``.

    python bench/bench_pretrain.py                       # tiny mini small, batch 32, fp32 and bf16
    python bench/bench_pretrain.py --sizes tiny --steps 10 --skip_bf16
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "src"))

from miniroberta.modeling.config import load_config  # noqa: E402
from miniroberta.data.dataset import MlmDataset  # noqa: E402
from miniroberta.data.masking import SpecialIds  # noqa: E402
from miniroberta.modeling.bert import flops_per_token  # noqa: E402
from miniroberta.pretrain.launch import PretrainConfig, RunOptions, train  # noqa: E402
from miniroberta.modeling.tokenizer import read_vocab  # noqa: E402
from miniroberta.engine.device import device_info, measure_matmul_peak  # noqa: E402
from miniroberta.pretrain.batches import BatchSource, Stream  # noqa: E402
from miniroberta.pretrain.setup import masking_config  # noqa: E402


def build_data(tmp: str, vocab: str, max_bytes: int) -> str:
    from miniroberta.data.preprocess import build_dataset
    path = os.path.join(tmp, "bench_seq128_dataset")
    build_dataset(str(DATA / "corpus" / "cluecorpussmall_sampled.txt"), vocab, path, seq_length=128,
                  max_bytes=max_bytes, overwrite=True, progress=False)
    return path


def run_baseline(cfg: PretrainConfig, steps: int, warm: int) -> dict:
    """Plain loop over transformers' BertForMaskedLM with default settings."""
    from transformers import BertConfig, BertForMaskedLM
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    vocab = read_vocab(cfg.vocab_path)
    ds = MlmDataset(cfg.dataset_path)
    mc = load_config(cfg.config_path, vocab_size=len(vocab))
    torch.manual_seed(cfg.seed)
    model = BertForMaskedLM(BertConfig(**mc.to_hf_dict()))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate)
    src = BatchSource(ds, Stream(len(ds), cfg.seed), SpecialIds.from_vocab(vocab), masking_config(cfg, ds),
                      cfg.batch_size, 1, 0, 0, workers=0, pad_multiple=1)
    S = ds.seq_length
    real = 0
    t0 = None
    for j in range(warm + steps):
        if j == warm:
            t0 = time.perf_counter()
        b = src.make(j)  # same instances and masks as ours; padded to seq_length like a fixed-shape loop
        B, T = b.input_ids.shape
        ids = np.zeros((B, S), dtype=np.int64)
        ids[:, :T] = b.input_ids
        att = np.zeros((B, S), dtype=np.int64)
        att[:, :T] = b.attention_mask
        labels = np.full(B * S, -100, dtype=np.int64)
        rows, cols = np.divmod(b.masked_positions, T)
        labels[rows * S + cols] = b.labels
        out = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(att),
                    token_type_ids=torch.zeros((B, S), dtype=torch.long),
                    labels=torch.from_numpy(labels.reshape(B, S)))
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        if j >= warm:
            real += b.real_tokens
    dt = time.perf_counter() - t0
    return {"real_tokens_per_s": real / dt, "seconds": dt, "steps": steps, "final_loss": float(out.loss.detach())}


def run_ours(cfg: PretrainConfig, steps: int, warm: int, precision: str, tmp: str, compile: bool = False) -> dict:
    out = os.path.join(tmp, f"ours_{precision}{'_c' if compile else ''}_{time.time_ns()}", "m.bin")
    c = PretrainConfig(**{**cfg.__dict__, "output_model_path": out, "total_steps": warm + steps, "precision": precision})
    res = train(c, RunOptions(report_steps=1, save_checkpoint_steps=10 ** 9, progress=False, compile=compile))
    reps = [json.loads(l) for l in open(res["metrics_path"])]
    reps = [r for r in reps if r.get("event") == "report"]
    a, z = reps[warm - 1], reps[-1]
    dt = z["elapsed_s"] - a["elapsed_s"]
    return {"real_tokens_per_s": (z["tokens_seen"] - a["tokens_seen"]) / dt, "seconds": dt, "steps": steps,
            "final_loss": z["loss"], "padded_tokens_per_s": statistics.mean(r["padded_tokens_per_s"] for r in reps[warm:])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["tiny", "mini", "small"])
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=None,
                    help="timed steps per run (default: 40 tiny, 8 others: enough for the kernel cache to warm)")
    ap.add_argument("--warm", type=int, default=4, help="untimed warm-up steps")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved baseline/ours rounds (medians reported)")
    ap.add_argument("--skip_bf16", action="store_true")
    ap.add_argument("--compile", action="store_true", help="also time ours fp32 with --compile")
    ap.add_argument("--max_bytes", type=int, default=600_000)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "pretrain.json"))
    args = ap.parse_args()
    if not (DATA / "corpus").is_dir():
        print(f"no corpus at {DATA}; this benchmark needs ../shared/data", file=sys.stderr)
        return 2
    vocab = str(DATA / "vocab" / "google_zh_vocab.txt")
    dev = torch.device("cpu")
    peaks = {"fp32": measure_matmul_peak(dev, torch.float32, 1.0), "bf16": measure_matmul_peak(dev, torch.bfloat16, 1.0)}
    print(f"matmul peak: fp32 {peaks['fp32'] / 1e9:.1f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.2f} GFLOP/s "
          f"({torch.get_num_threads()} threads)", flush=True)
    from miniroberta.engine.precision import resolve_precision
    auto = resolve_precision("auto", dev)
    print(f"--precision auto chooses {auto[0]} here: {auto[1]}", flush=True)
    results = {"machine": {**device_info(dev), "load_avg_start": os.getloadavg()}, "auto_precision": list(auto),
               "matmul_peak_flops": peaks, "batch_size": args.batch_size, "seq_length": 128, "sizes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        ds = build_data(tmp, vocab, args.max_bytes)
        for size in args.sizes:
            steps = args.steps or (40 if size == "tiny" else 8)
            cfg = PretrainConfig(dataset_path=ds, output_model_path=os.path.join(tmp, "x"), vocab_path=vocab,
                                 config_path=size, batch_size=args.batch_size, learning_rate=1e-4, warmup=0.0,
                                 init="hf", precision="fp32")
            mc = load_config(size, vocab_size=21128)
            fpt = flops_per_token(mc, 128, 0.15)
            runs: dict = {"baseline": [], "ours_fp32": []}
            for rep in range(args.repeats):  # interleaved, so machine load hits both alike
                print(f"[{size}] round {rep + 1}/{args.repeats}: baseline ...", flush=True)
                runs["baseline"].append(run_baseline(cfg, steps, args.warm))
                print(f"[{size}] round {rep + 1}/{args.repeats}: ours fp32 ...", flush=True)
                runs["ours_fp32"].append(run_ours(cfg, steps, args.warm, "fp32", tmp))
                if not args.skip_bf16:
                    print(f"[{size}] round {rep + 1}/{args.repeats}: ours bf16 ...", flush=True)
                    runs.setdefault("ours_bf16", []).append(run_ours(cfg, steps, args.warm, "bf16", tmp))
                if args.compile:
                    runs.setdefault("ours_fp32_compile", []).append(run_ours(cfg, steps, args.warm, "fp32", tmp, True))
                peaks["fp32"] = max(peaks["fp32"], measure_matmul_peak(dev, torch.float32, 0.5))
                peaks["bf16"] = max(peaks["bf16"], measure_matmul_peak(dev, torch.bfloat16, 0.5))
            row: dict = {}
            for k, rs in runs.items():
                tps = [r["real_tokens_per_s"] for r in rs]
                row[k] = {"real_tokens_per_s": statistics.median(tps), "runs": rs}
            base = row["baseline"]["real_tokens_per_s"]
            row["ratio_per_round"] = {k: [o["real_tokens_per_s"] / b["real_tokens_per_s"]
                                          for o, b in zip(runs[k], runs["baseline"])]
                                      for k in runs if k != "baseline"}
            for k, r in row.items():
                if k == "ratio_per_round":
                    continue
                r["ratio_vs_baseline"] = r["real_tokens_per_s"] / base
                # bf16 MFU against the bf16 peak, unless this hardware does bf16 slower than fp32
                peak = max(peaks["bf16"], peaks["fp32"]) if k.endswith("bf16") else peaks["fp32"]
                r["mfu"] = fpt * r["real_tokens_per_s"] / peak
                print(f"[{size}] {k:<18} {r['real_tokens_per_s']:>9.0f} real tok/s  x{r['ratio_vs_baseline']:.2f}  "
                      f"MFU {100 * r['mfu']:.1f}%", flush=True)
            for k, v in row["ratio_per_round"].items():
                print(f"[{size}] {k} / baseline per round: {[round(x, 2) for x in v]}", flush=True)
            results["sizes"][size] = {"flops_per_token": fpt, **row}
    results["machine"]["load_avg_end"] = os.getloadavg()
    results["matmul_peak_flops"] = peaks
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
