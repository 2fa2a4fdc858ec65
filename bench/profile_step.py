"""Where a pretraining step's time goes, and what each speed-up of the engine bought.

For each size (tiny, mini, small by default) and precision (fp32, bf16), one process:

1. **Stage breakdown** (``torch.profiler``): a training step split into stages with
   ``record_function`` scopes -- batch preparation (collate + masks + tensors), embeddings,
   encoder and MLM head+loss forward, each one's backward (the stages are cut apart with
   ``detach().requires_grad_()`` so autograd attributes every op to its stage), the optimizer
   (incl. the fp32-master copies of bf16), and the host synchronisation that reads the loss.
   Plus the top operators by self time.
2. **Ablation** (wall clock, interleaved rounds, medians, the same batches every round): the
   0.1.0 step (``nn.Dropout``
   bernoulli masks and SDPA's own attention dropout, ``F.cross_entropy`` on float logits,
   ``index_select`` backward, ``torch.autocast`` for bf16) and the step with each of this
   engine's changes added in turn.

3. **Shape buckets**: real training sees a new batch shape almost every step; bf16 oneDNN
   kernels are built per shape. Fresh processes on never-seen batches, with and without
   ``UnpaddedMLM(bucket=True)``, alternated, medians.

Every result records the CPU model and its flags (AVX2 / AVX512-BF16 / AMX). Ratios, not
absolute times, are what compare across machines; run it alone on an idle machine.

    python bench/profile_step.py                        # tiny mini small x fp32 bf16
    python bench/profile_step.py --sizes tiny --steps 6 --rounds 2
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile, record_function

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "src"))

from miniroberta.data.dataset import MlmDataset  # noqa: E402
from miniroberta.data.masking import MaskingConfig, SpecialIds  # noqa: E402
from miniroberta.engine.device import device_info, measure_matmul_peak  # noqa: E402
from miniroberta.engine.optim import OptimConfig  # noqa: E402
from miniroberta.engine.trainer import Trainer  # noqa: E402
from miniroberta.modeling import bert as bert_mod  # noqa: E402
from miniroberta.modeling import unpad as unpad_mod  # noqa: E402
from miniroberta.modeling.bert import build_mlm, flops_per_token  # noqa: E402
from miniroberta.modeling.config import load_config  # noqa: E402
from miniroberta.modeling.tokenizer import read_vocab  # noqa: E402
from miniroberta.modeling.unpad import UnpaddedMLM  # noqa: E402
from miniroberta.pretrain.batches import BatchSource, Stream  # noqa: E402

STAGES = ("batch", "embeddings.fwd", "encoder.fwd", "head+loss.fwd", "head+loss.bwd", "encoder.bwd",
          "embeddings.bwd", "optimizer", "host sync")


# ----------------------------------------------------------------------------- 0.1.0 behaviour, for the ablation
def _legacy_dropout(x, p, training):
    return F.dropout(x, p, training)


def _legacy_attention(q, k, v, mask, dropout_p, training):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p if training else 0.0)


def _legacy_gather(x, index):
    return x.index_select(0, index)


def _legacy_loss(logits, labels):
    logits = logits.float()
    return F.cross_entropy(logits, labels, reduction="sum"), (logits.detach().argmax(-1) == labels).sum()


@contextlib.contextmanager
def legacy(dropout: bool, gather: bool):
    """Patch the model code back to 0.1.0's ops (restored on exit)."""
    saved = (bert_mod.dropout, unpad_mod.attention, unpad_mod.gather_rows, bert_mod.attention)
    try:
        if dropout:
            bert_mod.dropout = _legacy_dropout
            unpad_mod.attention = bert_mod.attention = _legacy_attention
        if gather:
            unpad_mod.gather_rows = _legacy_gather
        yield
    finally:
        bert_mod.dropout, unpad_mod.attention, unpad_mod.gather_rows, bert_mod.attention = saved


# variant -> (legacy dropout, legacy gather, legacy loss, autocast-bf16 instead of bf16 weights)
VARIANTS = {
    "0.1.0": (True, True, True, True),
    "+fast dropout": (False, True, True, True),
    "+write-only gather": (False, False, True, True),
    "+fused decoder+loss": (False, False, False, True),
    "+bf16 weights (engine)": (False, False, False, False),
}


class _Task:
    def __init__(self, fused: bool, amp):
        self.fused, self.amp = fused, amp

    def loss(self, model, b):
        t = b.to_torch()
        args = (t["input_ids"], t["attention_mask"] if b.has_padding else None, t["masked_positions"],
                t["real_index"], t["masked_real_index"])
        with self.amp:
            if self.fused:   # decoder + cross-entropy fused (modeling.loss.linear_cross_entropy_sum)
                return model(*args, labels=t["labels"])
            logits = model(*args)
        return _legacy_loss(logits, t["labels"])


def make_trainer(mc, precision: str, autocast: bool) -> tuple[Trainer, UnpaddedMLM]:
    model = build_mlm(mc, init="hf", seed=0).train()
    kind = "fp32" if (precision == "fp32" or autocast) else "bf16"
    um = UnpaddedMLM(model)
    return Trainer(model, optim=OptimConfig(), total_steps=10 ** 6, device=torch.device("cpu"), precision=kind,
                   forward=um), um


def ablation(mc, batches, precision: str, steps: int, rounds: int) -> dict:
    times: dict[str, list[float]] = {}
    names = [n for n in VARIANTS if precision == "bf16" or n != "+bf16 weights (engine)"]
    setups = {}
    for n in names:
        ld, lg, ll, ac = VARIANTS[n]
        tr, _ = make_trainer(mc, precision, ac and precision == "bf16")
        amp = torch.autocast("cpu", dtype=torch.bfloat16, enabled=(precision == "bf16" and ac))
        setups[n] = (tr, _Task(not ll, amp), (ld, lg))
    for r in range(rounds):          # interleaved, so machine noise hits every variant alike
        for n in names:
            tr, task, (ld, lg) = setups[n]
            with legacy(ld, lg):
                for b in batches[:2]:
                    tr.train_step([b], task)
                t0 = time.perf_counter()
                for b in batches[2:2 + steps]:
                    tr.train_step([b], task)
                float(tr.sums.device[0])
                times.setdefault(n, []).append((time.perf_counter() - t0) / steps)
    real = float(np.mean([b.real_tokens for b in batches[2:2 + steps]]))
    base = statistics.median(times[names[0]])
    return {n: {"step_ms": 1e3 * statistics.median(v), "real_tokens_per_s": real / statistics.median(v),
                "speedup_vs_0.1.0": base / statistics.median(v)} for n, v in times.items()}


def breakdown(mc, src: BatchSource, precision: str, steps: int, j0: int) -> dict:
    tr, um = make_trainer(mc, precision, False)
    for j in range(2):                                   # warm-up
        tr.train_step([src.make(j)], _Task(True, contextlib.nullcontext()))

    def staged(j: int) -> None:
        with record_function("batch"):
            b = src.make(j)
            t = b.to_torch()
            n = max(1, b.units)
        with record_function("embeddings.fwd"):
            x = um.embed(t["input_ids"], t["real_index"])
        x_in = x.detach().requires_grad_()
        with record_function("encoder.fwd"):
            h = um.encode(x_in, t["attention_mask"], t["real_index"])
        h_in = h.detach().requires_grad_()
        with record_function("head+loss.fwd"):
            loss, ok = um.head_loss(h_in, t["masked_real_index"], t["labels"])
        with record_function("head+loss.bwd"):
            (loss / n).backward()
        with record_function("encoder.bwd"):
            h.backward(h_in.grad)
        with record_function("embeddings.bwd"):
            x.backward(x_in.grad)
        with record_function("optimizer"):
            tr.precision.grads_to_master()
            tr.optimizer.step()
            tr.precision.zero_grad()
            tr.precision.master_to_model()
        with record_function("host sync"):
            float(loss.detach())

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for j in range(j0, j0 + steps):
            staged(j)
        wall = (time.perf_counter() - t0) / steps
    ev = {e.key: e for e in prof.key_averages()}
    stages = {s: ev[s].cpu_time_total / 1e3 / steps for s in STAGES if s in ev}
    ops = sorted((e for e in prof.key_averages() if e.key not in STAGES and not e.key.startswith("autograd::")),
                 key=lambda e: -e.self_cpu_time_total)[:12]
    return {"step_ms_wall": 1e3 * wall, "stages_ms": stages,
            "stages_share": {s: v / sum(stages.values()) for s, v in stages.items()},
            "top_ops_ms": {e.key: e.self_cpu_time_total / 1e3 / steps for e in ops}}


def bucket_worker(size: str, precision: str, bucket: bool, steps: int, batch_size: int, max_bytes: int) -> None:
    """One fresh process: ``steps`` never-seen batches (new shapes, as in real training), with or
    without shape buckets; prints real tokens/s as JSON."""
    from miniroberta.data.preprocess import build_dataset
    vocab_path = str(DATA / "vocab" / "google_zh_vocab.txt")
    vocab = read_vocab(vocab_path)
    with tempfile.TemporaryDirectory() as tmp:
        build_dataset(str(DATA / "corpus" / "cluecorpussmall_sampled.txt"), vocab_path, os.path.join(tmp, "ds"),
                      seq_length=128, max_bytes=max_bytes, overwrite=True, progress=False)
        ds = MlmDataset(os.path.join(tmp, "ds"))
        src = BatchSource(ds, Stream(len(ds), 7), SpecialIds.from_vocab(vocab), MaskingConfig(seed=7),
                          batch_size, 1, 0, 0, workers=0, pad_multiple=8)
        model = build_mlm(load_config(size, vocab_size=len(vocab)), init="hf", seed=0).train()
        tr = Trainer(model, optim=OptimConfig(), total_steps=10 ** 6, device=torch.device("cpu"), precision=precision,
                     forward=UnpaddedMLM(model, bucket=bucket))
        task = _Task(True, contextlib.nullcontext())
        batches = [src.make(j) for j in range(steps + 3)]
        for b in batches[:3]:
            tr.train_step([b], task)
        t0 = time.perf_counter()
        for b in batches[3:]:
            tr.train_step([b], task)
        float(tr.sums.device[0])
        print(json.dumps({"real_tokens_per_s": sum(b.real_tokens for b in batches[3:]) / (time.perf_counter() - t0)}))


def bucket_check(size: str, precision: str, steps: int, rounds: int, batch_size: int, max_bytes: int) -> dict:
    import subprocess
    out: dict[str, list[float]] = {"no buckets": [], "shape buckets": []}
    for _ in range(rounds):
        for name, flag in (("no buckets", "off"), ("shape buckets", "on")):
            r = subprocess.run([sys.executable, __file__, "--_bucket_worker", flag, "--sizes", size, "--precisions",
                                precision, "--steps", str(steps), "--batch_size", str(batch_size),
                                "--max_bytes", str(max_bytes)], capture_output=True, text=True, check=True)
            out[name].append(json.loads(r.stdout.strip().splitlines()[-1])["real_tokens_per_s"])
    med = {k: statistics.median(v) for k, v in out.items()}
    return {"real_tokens_per_s": med, "runs": out, "speedup": med["shape buckets"] / med["no buckets"],
            "steps_per_process": steps}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["tiny", "mini", "small"])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved ablation rounds (medians reported)")
    ap.add_argument("--max_bytes", type=int, default=600_000)
    ap.add_argument("--bucket_steps", type=int, default=30, help="fresh batches per process in the bucket check")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "profile_step.json"))
    ap.add_argument("--_bucket_worker", choices=["on", "off"], default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._bucket_worker:
        bucket_worker(args.sizes[0], args.precisions[0], args._bucket_worker == "on", args.steps, args.batch_size,
                      args.max_bytes)
        return 0
    if not (DATA / "corpus").is_dir():
        print(f"no corpus at {DATA}; this benchmark needs ../shared/data", file=sys.stderr)
        return 2
    from miniroberta.data.preprocess import build_dataset
    vocab_path = str(DATA / "vocab" / "google_zh_vocab.txt")
    vocab = read_vocab(vocab_path)
    dev = torch.device("cpu")
    res = {"machine": device_info(dev), "batch_size": args.batch_size, "seq_length": 128,
           "peaks_flops": {"fp32": measure_matmul_peak(dev, torch.float32, 1.0),
                           "bf16": measure_matmul_peak(dev, torch.bfloat16, 1.0)},
           "load_avg_start": os.getloadavg(), "runs": {}}
    print(json.dumps(res["machine"]), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        ds_path = os.path.join(tmp, "ds")
        build_dataset(str(DATA / "corpus" / "cluecorpussmall_sampled.txt"), vocab_path, ds_path, seq_length=128,
                      max_bytes=args.max_bytes, overwrite=True, progress=False)
        ds = MlmDataset(ds_path)
        src = BatchSource(ds, Stream(len(ds), 7), SpecialIds.from_vocab(vocab), MaskingConfig(seed=7),
                          args.batch_size, 1, 0, 0, workers=0, pad_multiple=8)
        batches = [src.make(j) for j in range(args.steps + 2)]
        for size in args.sizes:
            mc = load_config(size, vocab_size=len(vocab))
            fpt = flops_per_token(mc, 128, 0.15)
            for prec in args.precisions:
                key = f"{size}/{prec}"
                print(f"[{key}] breakdown ...", flush=True)
                bd = breakdown(mc, src, prec, args.steps, 100)
                print(f"[{key}] ablation ...", flush=True)
                ab = ablation(mc, batches, prec, args.steps, args.rounds)
                peak = res["peaks_flops"][prec]
                for v in ab.values():
                    v["mfu"] = fpt * v["real_tokens_per_s"] / peak
                print(f"[{key}] shape-bucket check (fresh processes, fresh batches) ...", flush=True)
                bc = bucket_check(size, prec, args.bucket_steps, args.rounds, args.batch_size, args.max_bytes)
                res["runs"][key] = {"flops_per_token": fpt, "breakdown": bd, "ablation": ab, "bucket_check": bc}
                print(f"[{key}]   shape buckets on fresh batches: x{bc['speedup']:.2f} "
                      f"({bc['real_tokens_per_s']['no buckets']:.0f} -> {bc['real_tokens_per_s']['shape buckets']:.0f}"
                      f" real tok/s)", flush=True)
                print(f"[{key}] stages (ms/step): " + ", ".join(f"{s} {v:.1f}" for s, v in bd["stages_ms"].items()))
                for n, v in ab.items():
                    print(f"[{key}]   {n:<24} {v['step_ms']:7.1f} ms  {v['real_tokens_per_s']:8.0f} real tok/s  "
                          f"x{v['speedup_vs_0.1.0']:.2f}  MFU {100 * v['mfu']:.1f}%", flush=True)
    res["load_avg_end"] = os.getloadavg()
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(res, f, indent=2)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
