"""Fine-tuning throughput: the engine vs a plain transformers loop, and a tiny chnsenticorp epoch.

1. **vs transformers** (per size, interleaved rounds, medians): examples/s of fine-tuning steps
   on chnsenticorp's training texts (seq 128, batch 32, same batches in the same order) --
   baseline: ``transformers.BertForSequenceClassification`` with default settings (fp32,
   padded to the batch's longest, ``torch.optim.AdamW``), a plain forward/backward/step loop;
   ours: ``miniroberta.finetune`` 's engine step (padding-free forward, fused AdamW, the
   precision ``auto`` picks, or ``--precisions`` given).
2. **One tiny epoch** (``--epoch``): ``miniroberta finetune --task chnsenticorp --config_path
   tiny`` for one epoch over the 9,600 training examples, wall time of training and of the
   dev pass, as the command reports them.

Records CPU model and flags; writes ``bench/results/finetune.json``.

    python bench/bench_finetune.py                        # base and tiny vs transformers, + tiny epoch
    python bench/bench_finetune.py --sizes tiny --no_epoch --steps 4
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

from miniroberta.data import tasks  # noqa: E402
from miniroberta.engine.device import device_info  # noqa: E402
from miniroberta.engine.precision import resolve_precision  # noqa: E402
from miniroberta.engine.trainer import Trainer  # noqa: E402
from miniroberta.finetune import FinetuneConfig, run_finetune  # noqa: E402
from miniroberta.finetune.task import ClassifierBatch, ClassifierTask  # noqa: E402
from miniroberta.modeling.bert import BertForSequenceClassification, init_weights  # noqa: E402
from miniroberta.modeling.config import load_config, replace  # noqa: E402
from miniroberta.modeling.tokenizer import BertTokenizer  # noqa: E402
from miniroberta.modeling.unpad import UnpaddedClassifier  # noqa: E402


def load_batches(n_batches: int, batch_size: int, seed: int = 0) -> list[ClassifierBatch]:
    vocab = str(DATA / "vocab" / "google_zh_vocab.txt")
    files = tasks.resolve_task("chnsenticorp", str(DATA / "tasks"))
    data = tasks.read_examples(files.train_path, text_fields=files.text_fields, label_field=files.label_field)
    enc = tasks.encode_data(BertTokenizer(vocab), data, 128)
    y = tasks.LabelMap.from_labels(data.labels).encode(data)
    perm = np.random.default_rng(seed).permutation(len(enc))
    out = []
    for b in range(n_batches):
        idx = perm[b * batch_size:(b + 1) * batch_size]
        out.append(ClassifierBatch.make(*enc.batch(idx), y[idx]))
    return out


def run_baseline(size: str, batches: list[ClassifierBatch], warm: int) -> float:
    from transformers import BertConfig, BertForSequenceClassification as HFCls
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    mc = load_config(size, vocab_size=21128)
    torch.manual_seed(0)
    model = HFCls(BertConfig(**{**mc.to_hf_dict(), "num_labels": 2})).train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5)
    n, t0 = 0, 0.0
    for i, b in enumerate(batches):
        if i == warm:
            t0 = time.perf_counter()
        out = model(input_ids=torch.from_numpy(b.ids), token_type_ids=torch.from_numpy(b.types),
                    attention_mask=torch.from_numpy(b.mask), labels=torch.from_numpy(b.labels))
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        if i >= warm:
            n += b.units
    return n / (time.perf_counter() - t0)


def run_ours(size: str, batches: list[ClassifierBatch], warm: int, precision: str) -> float:
    mc = replace(load_config(size, vocab_size=21128), id2label={0: "0", 1: "1"})
    torch.manual_seed(0)
    model = BertForSequenceClassification(mc)
    init_weights(model, 0.02, "hf")
    model.train()
    cfg = FinetuneConfig(task="chnsenticorp", precision=precision, learning_rate=2e-5)
    trainer = Trainer(model, optim=cfg.optim(), total_steps=10 ** 6, device=torch.device("cpu"), precision=precision,
                      forward=UnpaddedClassifier(model))
    task = ClassifierTask.__new__(ClassifierTask)   # only its loss(): no data or dev set needed here
    task.cfg, task.device, task._epoch_counts = cfg, torch.device("cpu"), [0, 0]
    n, t0 = 0, 0.0
    for i, b in enumerate(batches):
        if i == warm:
            float(trainer.sums.device[0])
            t0 = time.perf_counter()
        trainer.train_step([b], task)
        if i >= warm:
            n += b.units
    float(trainer.sums.device[0])
    return n / (time.perf_counter() - t0)


def tiny_epoch(precision: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        res = run_finetune(FinetuneConfig(task="chnsenticorp", data_dir=str(DATA / "tasks"), config_path="tiny",
                                          epochs_num=1, batch_size=32, learning_rate=1e-4, precision=precision,
                                          output_dir=tmp, save_model=False, run_test=False, progress=False))
    ep = res["epochs"][0]
    return {"n_train": res["n_train"], "train_time_s": ep["train_time_s"], "eval_time_s": ep["eval_time_s"],
            "dev_acc": ep["dev_acc"], "precision": res["precision"], "wall_time_s": res["wall_time_s"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["tiny", "base"])
    ap.add_argument("--precisions", nargs="+", default=None, help="default: fp32 and what auto picks")
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default: 20 tiny, 3 others)")
    ap.add_argument("--warm", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no_epoch", action="store_true", help="skip the tiny chnsenticorp epoch")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "finetune.json"))
    args = ap.parse_args()
    dev = torch.device("cpu")
    auto = resolve_precision("auto", dev)
    precisions = args.precisions or sorted({"fp32", auto[0]})
    res: dict = {"machine": {**device_info(dev), "load_avg_start": os.getloadavg()}, "auto_precision": list(auto),
                 "batch_size": args.batch_size, "seq_length": 128, "sizes": {}}
    print(f"auto precision here: {auto[0]} ({auto[1]})", flush=True)
    for size in args.sizes:
        steps = args.steps or (20 if size == "tiny" else 3)
        batches = load_batches(steps + args.warm, args.batch_size)
        runs: dict[str, list[float]] = {}
        for rep in range(args.repeats):
            runs.setdefault("baseline", []).append(run_baseline(size, batches, args.warm))
            for p in precisions:
                runs.setdefault(f"ours_{p}", []).append(run_ours(size, batches, args.warm, p))
            print(f"[{size}] round {rep + 1}: " + ", ".join(f"{k} {v[-1]:.1f} ex/s" for k, v in runs.items()),
                  flush=True)
        base = statistics.median(runs["baseline"])
        row = {k: {"examples_per_s": statistics.median(v), "ratio_vs_baseline": statistics.median(v) / base,
                   "runs": v} for k, v in runs.items()}
        res["sizes"][size] = row
        for k, v in row.items():
            print(f"[{size}] {k:<12} {v['examples_per_s']:8.1f} examples/s  x{v['ratio_vs_baseline']:.2f}", flush=True)
    if not args.no_epoch:
        res["tiny_chnsenticorp_epoch"] = {p: tiny_epoch(p) for p in precisions}
        for p, r in res["tiny_chnsenticorp_epoch"].items():
            print(f"tiny chnsenticorp epoch ({p}): {r['n_train']} examples, train {r['train_time_s']:.1f} s, "
                  f"dev pass {r['eval_time_s']:.1f} s, dev acc {r['dev_acc']:.4f}", flush=True)
    res["machine"]["load_avg_end"] = os.getloadavg()
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(res, f, indent=2)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
