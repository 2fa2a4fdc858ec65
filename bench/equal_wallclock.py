"""The chosen recipe against the reference settings at equal wall-clock, same engine, same machine.

docs/quality.md's yardstick is held-out MLM loss (c3_documents.txt, fixed all-[MASK] masks) after a given
number of minutes of tiny pretraining on 2 cores. This puts two runs on one wall-clock axis:

* the **chosen recipe**: a finished ``reproduce --preset cpu-hour`` run (``--cpu_hour OUT``): its stage 1
  (lr 1.5e-3, warmup 0.05, bias-corrected AdamW) and stage 2 (the tasks' unlabeled train texts), read from
  their ``metrics.jsonl``;
* the **reference settings** (UER-py's recipe scaled to one CPU, as in the issue: batch 32, lr 1e-4, warmup 0.1,
  AdamW without bias correction, UER LayerNorm, UER init, seed 7) on the *same* stage-1 dataset, scored on the
  *same* held-out dataset, with a schedule that ends at ``--minutes`` on this machine (``--steps``) and a time budget
  of ``--minutes``. Run here with both cores unless ``--reference_metrics`` gives a finished run's metrics file.

Held-out points are placed at their wall-clock time since the run's start (evaluation passes included, as a user
would wait for them). Writes ``bench/results/equal_wallclock.json`` and ``docs/img/equal_wallclock.png``.

    python bench/equal_wallclock.py --cpu_hour runs/cpuhour --steps 13600      # ~29 min on 2 idle cores
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "src"))

REFERENCE = dict(batch_size=32, learning_rate=1e-4, warmup=0.1, correct_bias=False, layer_norm_type="uer",
                 init="uer", seed=7)


def heldout_curve(metrics_path: str, offset_s: float = 0.0) -> tuple[list[dict], float]:
    """[(minutes since the run's start, step, held-out loss, accuracy)] and the run's last record time (s)."""
    recs = [json.loads(line) for line in open(metrics_path, encoding="utf-8")]
    t0 = next(r["time"] for r in recs if r.get("event") == "start")
    out = [dict(minutes=(offset_s + r["time"] - t0) / 60.0, step=r["step"], loss=r["eval_loss"],
                accuracy=r.get("eval_accuracy")) for r in recs if "eval_loss" in r]
    return out, offset_s + recs[-1]["time"] - t0


def at_minutes(curve: list[dict], minutes: float) -> dict | None:
    """The last held-out point at or before ``minutes``."""
    before = [p for p in curve if p["minutes"] <= minutes + 1e-9]
    return before[-1] if before else None


def run_reference(dataset: str, heldout: str, steps: int, minutes: float, out_dir: str) -> str:
    from miniroberta.pretrain.launch import PretrainConfig, RunOptions, train
    vocab = str(DATA / "vocab" / "google_zh_vocab.txt")
    cfg = PretrainConfig(dataset_path=dataset, output_model_path=os.path.join(out_dir, "model.safetensors"),
                         vocab_path=vocab, config_path="tiny", total_steps=steps, **REFERENCE)
    res = train(cfg, RunOptions(report_steps=250, save_checkpoint_steps=10 ** 9, time_budget_s=minutes * 60.0,
                                eval_dataset_path=heldout, eval_max_instances=2048, eval_steps=1000, progress=False))
    return res["metrics_path"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu_hour", required=True, help="OUT of a finished `reproduce --preset cpu-hour`")
    ap.add_argument("--model", default="L2_H128")
    ap.add_argument("--minutes", type=float, default=28.7, help="the wall-clock budget compared (the issue's 28.7)")
    ap.add_argument("--steps", type=int, default=13600,
                    help="the reference arm's schedule: the steps that fit --minutes here (0.126 s/step measured)")
    ap.add_argument("--reference_metrics", default=None, help="a finished reference-settings run's metrics.jsonl")
    ap.add_argument("--work", default=None, help="where the reference arm writes (default OUT/equal_wallclock)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "equal_wallclock.json"))
    ap.add_argument("--plot", default=str(ROOT / "docs" / "img" / "equal_wallclock.png"))
    args = ap.parse_args()
    import torch

    from miniroberta.engine.device import device_info
    run = Path(args.cpu_hour)
    stage1 = run / "models" / args.model / "stage1" / "metrics.jsonl"
    stage2 = run / "models" / args.model / "stage2" / "metrics.jsonl"
    for p in (stage1, run / "data" / "seq128", run / "data" / "heldout_seq128"):
        if not p.exists():
            raise SystemExit(f"{p}: missing -- --cpu_hour must be a finished `reproduce --preset cpu-hour` OUT")
    ref_metrics = args.reference_metrics or run_reference(
        str(run / "data" / "seq128"), str(run / "data" / "heldout_seq128"), args.steps, args.minutes,
        args.work or str(run / "equal_wallclock"))
    chosen, end1 = heldout_curve(str(stage1))
    if stage2.is_file():
        chosen += [dict(p, stage=2) for p in heldout_curve(str(stage2), offset_s=end1)[0] if p["step"] > 0]
    reference, _ = heldout_curve(ref_metrics)
    start = next(json.loads(l) for l in open(ref_metrics, encoding="utf-8") if '"event": "start"' in l)
    marks = sorted({5.0, 10.0, 15.0, 20.0, 25.0, args.minutes})
    table = [dict(minutes=m, chosen=at_minutes(chosen, m), reference=at_minutes(reference, m)) for m in marks]
    res = dict(benchmark="equal_wallclock", machine=device_info(torch.device("cpu")), cpu_hour=str(run),
               reference_settings=REFERENCE, reference_pretrain_config=start.get("pretrain_config"),
               reference_metrics=ref_metrics, minutes=args.minutes, curves=dict(chosen=chosen, reference=reference),
               table=table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print("| minutes | chosen recipe: step, held-out loss | reference settings: step, held-out loss |")
    for row in table:
        c, r = row["chosen"], row["reference"]
        if not (c and r):
            print(f"| {row['minutes']:g} | - | - |")
            continue
        where = f"stage 2 step {c['step']}" if c.get("stage") == 2 else f"step {c['step']}"
        print(f"| {row['minutes']:g} | {where}, {c['loss']:.3f} | step {r['step']}, {r['loss']:.3f} |")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return 0
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    s1 = [p for p in chosen if p.get("stage") != 2]
    s2 = [p for p in chosen if p.get("stage") == 2]
    ax.plot([p["minutes"] for p in s1], [p["loss"] for p in s1], "o-", ms=3, color="C0",
            label="chosen (cpu-hour stage 1: lr 1.5e-3, warmup 0.05)")
    if s2:
        ax.plot([s1[-1]["minutes"]] + [p["minutes"] for p in s2], [s1[-1]["loss"]] + [p["loss"] for p in s2],
                "o-", ms=3, color="C2", label="chosen, stage 2 (tasks' unlabeled train texts)")
    ax.plot([p["minutes"] for p in reference], [p["loss"] for p in reference], "s--", ms=3, color="C1",
            label="reference settings (lr 1e-4, warmup 0.1, no bias correction)")
    ax.axvline(args.minutes, color="grey", lw=0.8, ls=":")
    ax.axhline(6.0, color="grey", lw=0.8, ls=":")
    ax.set_ylim(4.3, 8.0)
    ax.set_xlabel("wall-clock minutes on this machine (2 cores, same engine)")
    ax.set_ylabel("held-out MLM loss (c3, all-[MASK])")
    ax.set_title("tiny (L2_H128), batch 32, seq 128, same data and held-out file", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
