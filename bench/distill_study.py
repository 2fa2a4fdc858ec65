"""Pre-trained distillation, measured: teacher vs. a tiny student fine-tuned, distilled, distilled + unlabeled text.

The comparison of Turc et al. (2019) on one CPU, per task:

* **teacher** -- ``--teacher_init`` (a pretrained MLM checkpoint / HF dir, larger than the student) fine-tuned on
  the task at each ``--teacher_lrs``; the best dev accuracy is the teacher;
* **(a) fine-tuned** -- the student's pretrained weights (``--student_init``) fine-tuned on the gold labels;
* **(b) distilled** -- the same weights trained on the teacher's soft targets over the task's train texts;
* **(c) distilled + transfer** -- the same, over the train texts plus unlabeled in-domain texts
  (``--transfer TASK=FILE``: one text per line, the first ``(epochs - 1) x n_train`` lines used);

(a) and (b) run ``--epochs`` epochs over the train set, (c) one epoch over train + transfer, so every arm makes
exactly the same number of student updates (checked). Each arm runs at every ``--student_lrs`` and is scored,
like a grid, by its best cell; the table also gives the last-epoch accuracy. ``--no_pretraining`` adds arm
(b) from random initialisation (distillation without pretraining, the paper's other ablation);
``--alpha_variant A`` adds arms (b) and (c) with ``--alpha A`` (gold labels mixed in) at one learning rate.

Speeds: training examples/s of every run (from its result) and inference examples/s of the teacher and the
student over the dev set (batch 32, one thread, fp32). Every run is a directory under ``--out`` with its
``result.json``; a second invocation reuses finished runs (resumable). Writes ``--result`` (JSON) and prints a
markdown table.

    python bench/distill_study.py --teacher_init T --student_init S --tasks chnsenticorp book_review \\
        --transfer chnsenticorp=reviews.txt --transfer book_review=reviews.txt --out runs/pd_study
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "src"))


def run_cell(out: str, **kw) -> dict:
    from miniroberta.finetune import FinetuneConfig, run_finetune
    res_path = os.path.join(out, "result.json")
    if os.path.isfile(res_path):
        return json.load(open(res_path, encoding="utf-8"))
    cfg = FinetuneConfig(output_dir=out, run_test=False, progress=False, verbose=True,
                         resume=os.path.isfile(os.path.join(out, "train_state.pt")), **kw)
    return run_finetune(cfg)


def transfer_slice(src: str, dst: str, n: int) -> int:
    """The first ``n`` non-empty lines of ``src`` (tabs removed: one text per line) into ``dst``."""
    lines = []
    with open(src, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            t = line.rstrip("\n").replace("\t", " ").strip()
            if t:
                lines.append(t)
            if len(lines) == n:
                break
    if len(lines) < n:
        raise SystemExit(f"--transfer {src}: {len(lines)} texts, the equal-updates rule needs {n}")
    tmp = dst + ".tmp"
    with open(tmp, "w", encoding="utf-8") as w:
        w.write("\n".join(lines) + "\n")
    os.replace(tmp, dst)
    return len(lines)


def inference_speed(model_dir: str, task: str, data_dir: str, repeats: int = 3) -> float:
    """Dev examples per second of a fine-tuned classifier (batch 32, one thread, fp32, median of ``repeats``)."""
    import statistics

    import torch

    from miniroberta.finetune.inference import predict_logits
    from miniroberta.finetune import FinetuneConfig
    from miniroberta.finetune.data import prepare_data
    from miniroberta.interop.checkpoint import load_finetuned
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        d = prepare_data(FinetuneConfig(pretrained_model_path=model_dir, task=task, data_dir=data_dir),
                         torch.device("cpu"), lambda *a, **k: None)
        model, _ = load_finetuned(model_dir, "cpu")
        model.float()
        enc = d.enc_dev
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            predict_logits(model, enc, 32, torch.device("cpu"), d.tok.pad_id)
            times.append(time.perf_counter() - t)
        return len(enc) / statistics.median(times)
    finally:
        torch.set_num_threads(before)


def train_speed(res: dict) -> float:
    ep = res["epochs"]
    return sum(e["train_examples_per_s"] * e["train_time_s"] for e in ep) / max(sum(e["train_time_s"] for e in ep), 1e-9)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher_init", required=True, help="pretrained weights of the teacher (larger model)")
    ap.add_argument("--student_init", required=True, help="pretrained weights of the student (same in every arm)")
    ap.add_argument("--student_preset", default="tiny", help="architecture of the no-pretraining arm")
    ap.add_argument("--tasks", nargs="+", default=["chnsenticorp", "book_review"])
    ap.add_argument("--transfer", action="append", default=[], metavar="TASK=FILE")
    ap.add_argument("--data_dir", default=str(DATA / "tasks"))
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--teacher_lrs", type=float, nargs="+", default=[1e-4, 3e-4])
    ap.add_argument("--student_lrs", type=float, nargs="+", default=[3e-4, 1e-3])
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--no_pretraining", action="store_true", help="add arm (b) from random initialisation")
    ap.add_argument("--alpha_variant", type=float, default=None,
                    help="also run arms (b) and (c) with this --alpha (gold labels mixed in), at --alpha_variant_lr")
    ap.add_argument("--alpha_variant_lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--max_train_examples", type=int, default=None, help="a quick look on a subsample")
    ap.add_argument("--only", choices=["teacher", "students"], default=None,
                    help="run only the teachers (so they can run beside other jobs) or only the students")
    ap.add_argument("--out", required=True)
    ap.add_argument("--result", default=str(ROOT / "bench" / "results" / "distill_study.json"))
    args = ap.parse_args()
    from miniroberta.engine.device import device_info

    import torch
    transfer = dict(t.split("=", 1) for t in args.transfer)
    common = dict(data_dir=args.data_dir, batch_size=args.batch_size, seed=args.seed, threads=args.threads,
                  max_train_examples=args.max_train_examples)
    t0 = time.time()
    report: dict = dict(settings=vars(args), machine=device_info(torch.device("cpu")), tasks={})
    for task in args.tasks:
        tdir = os.path.join(args.out, task)
        teachers = {lr: run_cell(os.path.join(tdir, f"teacher_lr{lr:g}"), task=task, pretrained_model_path=args.teacher_init,
                                 epochs_num=args.epochs, learning_rate=lr, **common) for lr in args.teacher_lrs}
        best_lr = max(teachers, key=lambda lr: teachers[lr]["best_dev_acc"])
        teacher = teachers[best_lr]
        tdir_model = teacher["paths"]["model_dir"]
        if args.only == "teacher":
            print(f"{task}: teacher {teacher['model']['name']} best {teacher['best_dev_acc']:.4f} at lr {best_lr:g}")
            continue
        n_train = teacher["n_train"]
        arms: dict[str, dict] = {}
        for lr in args.student_lrs:
            arms.setdefault("a_finetuned", {})[lr] = run_cell(
                os.path.join(tdir, f"a_finetuned_lr{lr:g}"), task=task, pretrained_model_path=args.student_init,
                epochs_num=args.epochs, learning_rate=lr, **common)
            arms.setdefault("b_distilled", {})[lr] = run_cell(
                os.path.join(tdir, f"b_distilled_lr{lr:g}"), task=task, pretrained_model_path=args.student_init,
                teacher_path=tdir_model, temperature=args.temperature, epochs_num=args.epochs, learning_rate=lr,
                **common)
            if task in transfer:
                tpath = os.path.join(tdir, "transfer.txt")
                if not os.path.isfile(tpath):
                    transfer_slice(transfer[task], tpath, (args.epochs - 1) * n_train)
                arms.setdefault("c_distilled_transfer", {})[lr] = run_cell(
                    os.path.join(tdir, f"c_distilled_transfer_lr{lr:g}"), task=task,
                    pretrained_model_path=args.student_init, teacher_path=tdir_model, transfer_path=tpath,
                    temperature=args.temperature, epochs_num=1, learning_rate=lr, **common)
            if args.no_pretraining:
                arms.setdefault("b0_distilled_no_pretraining", {})[lr] = run_cell(
                    os.path.join(tdir, f"b0_distilled_nopre_lr{lr:g}"), task=task, config_path=args.student_preset,
                    teacher_path=tdir_model, temperature=args.temperature, epochs_num=args.epochs, learning_rate=lr,
                    **common)
        if args.alpha_variant is not None:
            a_, lr = args.alpha_variant, args.alpha_variant_lr
            arms[f"b_alpha{a_:g}"] = {lr: run_cell(
                os.path.join(tdir, f"b_alpha{a_:g}_lr{lr:g}"), task=task, pretrained_model_path=args.student_init,
                teacher_path=tdir_model, temperature=args.temperature, alpha=a_, epochs_num=args.epochs,
                learning_rate=lr, **common)}
            if task in transfer:
                arms[f"c_alpha{a_:g}"] = {lr: run_cell(
                    os.path.join(tdir, f"c_alpha{a_:g}_lr{lr:g}"), task=task, pretrained_model_path=args.student_init,
                    teacher_path=tdir_model, transfer_path=os.path.join(tdir, "transfer.txt"),
                    temperature=args.temperature, alpha=a_, epochs_num=1, learning_rate=lr, **common)}
        steps = {name: {lr: r["steps"] for lr, r in cells.items()} for name, cells in arms.items()}
        flat = {s for v in steps.values() for s in v.values()}
        if len(flat) != 1:
            raise SystemExit(f"{task}: arms made different numbers of updates: {steps}")
        student_dir = arms["a_finetuned"][max(arms["a_finetuned"],
                                              key=lambda lr: arms["a_finetuned"][lr]["best_dev_acc"])]["paths"]["model_dir"]
        row = dict(
            n_train=n_train, student_updates=flat.pop(),
            teacher=dict(name=teacher["model"]["name"], params=teacher["model"]["num_parameters"], lr=best_lr,
                         dev_acc={f"{lr:g}": r["best_dev_acc"] for lr, r in teachers.items()},
                         best_dev_acc=teacher["best_dev_acc"], train_examples_per_s=train_speed(teacher),
                         infer_examples_per_s=inference_speed(tdir_model, task, args.data_dir)),
            student=dict(name=arms["a_finetuned"][args.student_lrs[0]]["model"]["name"],
                         params=arms["a_finetuned"][args.student_lrs[0]]["model"]["num_parameters"],
                         infer_examples_per_s=inference_speed(student_dir, task, args.data_dir)),
            arms={name: dict(dev_acc={f"{lr:g}": r["best_dev_acc"] for lr, r in cells.items()},
                             last_dev_acc={f"{lr:g}": r["last_dev_acc"] for lr, r in cells.items()},
                             best_dev_acc=max(r["best_dev_acc"] for r in cells.values()),
                             best_lr=max(cells, key=lambda lr: cells[lr]["best_dev_acc"]),
                             n_examples=max(r["n_train"] for r in cells.values()),
                             train_examples_per_s=max(train_speed(r) for r in cells.values()))
                  for name, cells in arms.items()})
        a, t = row["arms"]["a_finetuned"]["best_dev_acc"], row["teacher"]["best_dev_acc"]
        for arm in row["arms"].values():
            arm["gap_closed"] = (arm["best_dev_acc"] - a) / (t - a) if t > a else None
        if "c_distilled_transfer" in row["arms"] and t > a:
            row["gap_closed_by_c"] = (row["arms"]["c_distilled_transfer"]["best_dev_acc"] - a) / (t - a)
        report["tasks"][task] = row
    report["wall_s"] = time.time() - t0
    if args.only == "teacher":
        return 0
    os.makedirs(os.path.dirname(os.path.abspath(args.result)), exist_ok=True)
    with open(args.result + ".tmp", "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    os.replace(args.result + ".tmp", args.result)
    print(markdown(report))
    return 0


def markdown(report: dict) -> str:
    names = {"a_finetuned": "(a) fine-tuned", "b_distilled": "(b) distilled, train texts",
             "c_distilled_transfer": "(c) distilled, train + unlabeled",
             "b0_distilled_no_pretraining": "(b0) distilled, no pretraining",
             "b_alpha0.5": "(b) with α = 0.5 (soft + gold)", "c_alpha0.5": "(c) with α = 0.5 (soft + gold)"}
    lines = []
    for task, row in report["tasks"].items():
        t = row["teacher"]
        lines += [f"**{task}** ({row['n_train']:,} train examples, {row['student_updates']:,} student updates per arm)",
                  "", "| model | dev acc (best lr) | per lr | last epoch | of the (a)→teacher gap | train ex/s | infer ex/s |",
                  "|---|---:|---|---|---:|---:|---:|",
                  f"| teacher {t['name']} ({t['params'] / 1e6:.1f}M) | {100 * t['best_dev_acc']:.2f} (lr {t['lr']:g}) | "
                  + ", ".join(f"{lr}: {100 * v:.2f}" for lr, v in t["dev_acc"].items())
                  + f" | | | {t['train_examples_per_s']:.0f} | {t['infer_examples_per_s']:.0f} |"]
        s = row["student"]
        for name, arm in row["arms"].items():
            lines.append(f"| {names.get(name, name)} {s['name']} ({s['params'] / 1e6:.1f}M) | "
                         f"{100 * arm['best_dev_acc']:.2f} (lr {arm['best_lr']:g}) | "
                         + ", ".join(f"{lr}: {100 * v:.2f}" for lr, v in arm["dev_acc"].items()) + " | "
                         + ", ".join(f"{100 * v:.2f}" for v in arm["last_dev_acc"].values())
                         + (f" | {100 * arm['gap_closed']:+.0f} %" if arm.get("gap_closed") is not None else " | ")
                         + f" | {arm['train_examples_per_s']:.0f} | {s['infer_examples_per_s']:.0f} |")
        if "gap_closed_by_c" in row:
            lines.append(f"\n(c) closes {100 * row['gap_closed_by_c']:.0f} % of the gap between (a) and the teacher.")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
