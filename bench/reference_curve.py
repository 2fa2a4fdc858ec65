"""The reference optimisation on one CPU: held-out loss curves with and without Adam bias correction.

UER-py pretrains with ``AdamW(correct_bias=False)``; miniroberta's default corrects the bias, so
its first ~1,000 updates are smaller (up to ~3x at step 1). This runs the issue's setting -- tiny,
batch 32, lr 1e-4, warmup 0.1, seed 7, 6,000 steps -- on a mixed 11.8 MB corpus (the first 1 MB of
each of the 12 corpus files other than the held-out one) twice:

* ``corrected``   -- miniroberta's default (torch AdamW, bias-corrected), HF LayerNorm;
* ``reference``   -- ``--no_correct_bias --layer_norm_type uer``: the reference tool's update rule
                     and LayerNorm (``pretrain`` switches),

and scores both on the held-out file (c3_documents.txt, 2,048 windows of 128, fixed all-[MASK]
masks) every 1,000 steps. The two runs are independent of the machine's load (a fixed number of
steps, one thread each, run side by side). Writes ``bench/results/reference_curve.json`` and
``docs/img/reference_curve.png``.

    python bench/reference_curve.py               # 2 x 6,000 steps, ~25 min on 2 cores
    python bench/reference_curve.py --steps 300   # a quick look
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "src"))

HELDOUT = "c3_documents.txt"
# the reference tool's held-out loss at these steps, measured in the issue (same settings, one CPU)
REFERENCE_TOOL = {2000: 6.87, 4000: 6.79, 6000: 6.75}
ARMS = {"corrected": dict(correct_bias=True, layer_norm_type=None),
        "reference": dict(correct_bias=False, layer_norm_type="uer")}


def mixed_corpus(out: str, per_file: int) -> list[str]:
    """The first ``per_file`` bytes (whole lines) of every corpus file but the held-out one."""
    files = []
    for f in sorted((DATA / "corpus").glob("*.txt")):
        if f.name == HELDOUT:
            continue
        dst = os.path.join(out, f.name)
        n = 0
        with open(f, "rb") as src, open(dst, "wb") as w:
            for line in src:
                if n + len(line) > per_file:
                    break
                w.write(line)
                n += len(line)
        files.append(dst)
    return files


def run_arm(name: str, ds: str, ev: str, vocab: str, work: str, args: dict) -> dict:
    import torch
    torch.set_num_threads(1)
    from miniroberta.pretrain.launch import PretrainConfig, RunOptions, train
    cfg = PretrainConfig(dataset_path=ds, output_model_path=os.path.join(work, name, "m.bin"), vocab_path=vocab,
                         config_path="tiny", total_steps=args["steps"], batch_size=32, learning_rate=1e-4, warmup=0.1,
                         seed=7, precision=args["precision"], **ARMS[name])
    t0 = time.time()
    r = train(cfg, RunOptions(report_steps=args["report_steps"], save_checkpoint_steps=10 ** 9, eval_dataset_path=ev,
                              eval_max_instances=2048, eval_steps=args["eval_steps"], threads=1, progress=False))
    recs = [json.loads(line) for line in open(r["metrics_path"], encoding="utf-8")]
    return {"train": [(x["step"], x["loss"]) for x in recs if x.get("event") == "report"],
            "heldout": [(x["step"], x["eval_loss"]) for x in recs if "eval_loss" in x],
            "precision": next(x["precision"] for x in recs if x.get("event") == "start"),
            "wall_time_s": time.time() - t0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--eval_steps", type=int, default=1000)
    ap.add_argument("--report_steps", type=int, default=100)
    ap.add_argument("--per_file_bytes", type=int, default=1_000_000)
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "reference_curve.json"))
    ap.add_argument("--plot", default=str(ROOT / "docs" / "img" / "reference_curve.png"))
    args = ap.parse_args()
    import torch
    from miniroberta.data.preprocess import build_dataset
    from miniroberta.engine.device import device_info
    vocab = str(DATA / "vocab" / "google_zh_vocab.txt")
    res: dict = {"benchmark": "reference_curve", "machine": device_info(torch.device("cpu")), "settings": vars(args),
                 "reference_tool": REFERENCE_TOOL, "arms": ARMS, "runs": {}}
    with tempfile.TemporaryDirectory() as work:
        files = mixed_corpus(os.path.join(work), args.per_file_bytes)
        res["corpus_bytes"] = sum(os.path.getsize(f) for f in files)
        ds, ev = os.path.join(work, "train_seq128"), os.path.join(work, "heldout_seq128")
        build_dataset(files, vocab, ds, seq_length=128, overwrite=True, progress=False, processes_num=2)
        build_dataset(str(DATA / "corpus" / HELDOUT), vocab, ev, seq_length=128, max_bytes=400_000, overwrite=True,
                      progress=False)
        ctx = mp.get_context("spawn")
        with ctx.Pool(len(ARMS)) as pool:
            jobs = {a: pool.apply_async(run_arm, (a, ds, ev, vocab, work, vars(args))) for a in ARMS}
            res["runs"] = {a: j.get() for a, j in jobs.items()}
    c, r = (dict(res["runs"][a]["heldout"]) for a in ("corrected", "reference"))
    res["heldout_gap_corrected_minus_reference"] = {s: c[s] - r[s] for s in sorted(c) if s in r and s > 0}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(json.dumps({"heldout": {a: res["runs"][a]["heldout"] for a in ARMS},
                      "gap": res["heldout_gap_corrected_minus_reference"]}, indent=1))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
        for i, a in enumerate(ARMS):
            tr = res["runs"][a]["train"]
            ho = res["runs"][a]["heldout"]
            ax.plot([s for s, _ in tr], [v for _, v in tr], color=f"C{i}", alpha=0.5, lw=1, label=f"{a}: train")
            ax.plot([s for s, _ in ho], [v for _, v in ho], "o--", color=f"C{i}", label=f"{a}: held-out")
        ax.plot(list(REFERENCE_TOOL), list(REFERENCE_TOOL.values()), "ks", label="reference tool (issue; its own held-out file: not comparable in level)")
        ax.set_ylim(5.5, 8.5)
        ax.set_xlabel("step (batch 32, seq 128)")
        ax.set_ylabel("MLM loss")
        ax.set_title("reference settings: lr 1e-4, warmup 0.1, tiny", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(args.plot)
    except ImportError:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
