"""Does the quickstart's pretraining help? Its step 5 over several fine-tuning seeds.

``miniroberta quickstart`` step 5 fine-tunes its model and the same architecture from random initialisation on
3,200 chnsenticorp examples (2 epochs, lr 3e-4, batch 32, seed 7) -- one seed, whose dev accuracy moves by about a
point from seed to seed. This runs the same comparison over ``--seeds`` for each ``--model NAME=HF_DIR`` (e.g.
the quickstart's model on its review slice and a model pretrained on general text) and for random init, and
writes mean, standard deviation and every run to ``--result``. Fixed steps: the figures do not depend on
the machine's load (use ``--threads 1`` beside other jobs).

    python bench/quickstart_compare.py --model reviews=quickstart_out/hf_model --seeds 7 1 2

``--grid_cell`` runs a task with the `cpu-hour` grid's cell instead (full train set, 3 epochs, lr 1e-3, batch 32):
is a single-seed difference in that preset's table more than seed noise?

    python bench/quickstart_compare.py --grid_cell --task chnsenticorp --model hour=OUT/models/L2_H128/hf \
        --result bench/results/chnsenticorp_seeds.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "src"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True, metavar="NAME=HF_DIR")
    ap.add_argument("--seeds", type=int, nargs="+", default=[7, 1, 2])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--task", default=None, help="default: the sanity check's (chnsenticorp)")
    ap.add_argument("--learning_rate", type=float, default=None, help="override the settings' learning rate")
    ap.add_argument("--grid_cell", action="store_true",
                    help="the cpu-hour grid's cell (full train set, 3 epochs, lr 1e-3, batch 32) instead of the sanity "
                         "check's settings")
    ap.add_argument("--data_dir", default=str(DATA / "tasks"))
    ap.add_argument("--result", default=str(ROOT / "bench" / "results" / "quickstart_compare.json"))
    args = ap.parse_args()
    import torch

    from miniroberta.engine.device import device_info
    from miniroberta.finetune import FinetuneConfig, run_finetune
    from miniroberta.study.quickstart import COMPARE
    settings = dict(COMPARE)
    if args.grid_cell:
        settings.update(max_train_examples=None, epochs_num=3, learning_rate=1e-3, batch_size=32)
    if args.task:
        settings["task"] = args.task
    if args.learning_rate:
        settings["learning_rate"] = args.learning_rate
    models = dict(m.split("=", 1) for m in args.model)
    first = next(iter(models.values()))
    arms = {name: dict(pretrained_model_path=path) for name, path in models.items()}
    arms["random init"] = dict(config_path=first, vocab_path=os.path.join(first, "vocab.txt"))
    runs: dict[str, dict[int, float]] = {}
    t0 = time.time()
    for seed in args.seeds:
        for name, kw in arms.items():
            cfg = FinetuneConfig(**kw, **{**settings, "seed": seed}, data_dir=args.data_dir, seq_length=128,
                                 save_model=False, run_test=False, progress=False, verbose=False, threads=args.threads)
            acc = run_finetune(cfg)["best_dev_acc"]
            runs.setdefault(name, {})[seed] = acc
            print(f"seed {seed:>3}  {name:<24} {100 * acc:.2f}", flush=True)
    summary = {name: dict(mean=statistics.mean(v.values()), sd=statistics.stdev(v.values()) if len(v) > 1 else 0.0,
                          runs={str(k): x for k, x in v.items()}) for name, v in runs.items()}
    base = summary["random init"]["mean"]
    print(f"\n| model | {settings['task']} dev acc, mean ± sd over seeds " + " ".join(map(str, args.seeds))
          + " | Δ vs random init |\n|---|---:|---:|")
    for name, s in summary.items():
        print(f"| {name} | {100 * s['mean']:.2f} ± {100 * s['sd']:.2f} | {100 * (s['mean'] - base):+.2f} |")
    report = dict(settings=dict(settings, seeds=args.seeds, models=models), machine=device_info(torch.device("cpu")),
                  summary=summary, wall_s=time.time() - t0)
    os.makedirs(os.path.dirname(os.path.abspath(args.result)), exist_ok=True)
    with open(args.result + ".tmp", "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    os.replace(args.result + ".tmp", args.result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
