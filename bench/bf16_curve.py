"""bf16 vs fp32 training curves: the same tiny pretraining run in both precisions.

Same data (a slice of cluecorpussmall + news + wiki, seq 128), same seed, same masks and the
same instance order; only ``--precision`` differs. Records every report step's training loss
and the held-out loss (c3_documents, fixed masks) and writes ``bench/results/bf16_curve.json``
and ``docs/img/bf16_curve.png``. The issue's bar: the curves within 0.05 loss at 2,000 steps.

    python bench/bf16_curve.py                    # 2,000 steps each (~15 min on 2 cores)
    python bench/bf16_curve.py --steps 200        # a quick look
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "src"))

from miniroberta.data.preprocess import build_dataset  # noqa: E402
from miniroberta.engine.device import device_info  # noqa: E402
from miniroberta.pretrain.launch import PretrainConfig, RunOptions, train  # noqa: E402

FILES = ("cluecorpussmall_sampled.txt", "news_thucnews_sample.txt", "wiki_cmrc2018_contexts.txt")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--learning_rate", type=float, default=5e-4)
    ap.add_argument("--max_bytes", type=int, default=6_000_000)
    ap.add_argument("--report_steps", type=int, default=50)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "bf16_curve.json"))
    ap.add_argument("--plot", default=str(ROOT / "docs" / "img" / "bf16_curve.png"))
    args = ap.parse_args()
    vocab = str(DATA / "vocab" / "google_zh_vocab.txt")
    import torch
    res: dict = {"machine": device_info(torch.device("cpu")), "settings": vars(args), "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        ds = os.path.join(tmp, "train_seq128")
        ev = os.path.join(tmp, "eval_seq128")
        build_dataset([str(DATA / "corpus" / f) for f in FILES], vocab, ds, seq_length=128,
                      max_bytes=args.max_bytes, overwrite=True, progress=False)
        build_dataset(str(DATA / "corpus" / "c3_documents.txt"), vocab, ev, seq_length=128, max_bytes=300_000,
                      overwrite=True, progress=False)
        for prec in ("fp32", "bf16"):
            cfg = PretrainConfig(dataset_path=ds, output_model_path=os.path.join(tmp, prec, "m.bin"), vocab_path=vocab,
                                 config_path=args.size, total_steps=args.steps, batch_size=args.batch_size,
                                 learning_rate=args.learning_rate, warmup=0.1, init="hf", precision=prec)
            r = train(cfg, RunOptions(report_steps=args.report_steps, save_checkpoint_steps=10 ** 9,
                                      eval_dataset_path=ev, eval_max_instances=512,
                                      eval_steps=args.report_steps * 4, progress=False))
            recs = [json.loads(l) for l in open(r["metrics_path"], encoding="utf-8")]
            reps = [x for x in recs if x.get("event") == "report"]
            res["runs"][prec] = {"step": [x["step"] for x in reps], "loss": [x["loss"] for x in reps],
                                 "eval_step": [x["step"] for x in recs if "eval_loss" in x],
                                 "eval_loss": [x["eval_loss"] for x in recs if "eval_loss" in x],
                                 "wall_time_s": r["wall_time_s"]}
    a, b = res["runs"]["fp32"], res["runs"]["bf16"]
    diffs = [abs(x - y) for x, y in zip(a["loss"], b["loss"])]
    tail = max(1, len(diffs) // 10)
    res["summary"] = {"final_loss_fp32": a["loss"][-1], "final_loss_bf16": b["loss"][-1],
                      "final_eval_loss_fp32": a["eval_loss"][-1], "final_eval_loss_bf16": b["eval_loss"][-1],
                      "max_abs_diff_last_10pct_reports": max(diffs[-tail:]), "max_abs_diff_all_reports": max(diffs),
                      "wall_ratio_fp32_over_bf16": a["wall_time_s"] / b["wall_time_s"]}
    print(json.dumps(res["summary"], indent=2))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(res, f, indent=2)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install 'miniroberta[plot]')")
        return 0
    fig, ax = plt.subplots(figsize=(7, 4))
    for prec, style in (("fp32", "-"), ("bf16", "--")):
        r = res["runs"][prec]
        ax.plot(r["step"], r["loss"], style, label=f"{prec} train")
        ax.plot(r["eval_step"], r["eval_loss"], style, marker="o", ms=3, label=f"{prec} held-out")
    ax.set_xlabel("step")
    ax.set_ylabel("MLM loss")
    ax.set_title(f"{args.size}: bf16 (fp32 masters) vs fp32, batch {args.batch_size}, seq 128")
    ax.legend()
    ax.grid(alpha=0.3)
    os.makedirs(os.path.dirname(args.plot), exist_ok=True)
    fig.tight_layout()
    fig.savefig(args.plot, dpi=110)
    print(f"wrote {args.out} and {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
