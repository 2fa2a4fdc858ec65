"""``miniroberta quickstart``: the whole pipeline on a CPU, with a result that does not depend on the machine.

1. decontaminate the corpus (``../shared/data/corpus`` without ``c3_documents.txt``, which is held out; every
   line sharing a 20-character span with a dev/test text of the six tasks removed) and preprocess it (seq 128,
   one document per window); the first 2,000 windows of ``c3_documents.txt`` are the held-out set,
2. pretrain a tiny model (L2_H128) for a fixed 8,000 steps with the recipe measured to leave the unigram
   plateau in that budget (docs/quality.md) -- the same steps on every machine; a slow or busy machine takes
   longer and says how long up front, it never trains less; ``--minutes`` sizes a smaller run and labels it,
3. export it to a HuggingFace directory (with a model card),
4. the verdict the evidence supports: held-out loss and accuracy against the unigram baseline measured on the
   same masked positions in this run (the plateau every MLM run passes through), and fill-mask predictions,
5. with ``--compare``: fine-tune it beside the same architecture from random initialisation where pretraining
   matters -- a label-scarce task with many classes (iflytek: 119 app categories, ~38 train examples each) --
   over three seeds, with a paired test (McNemar) on the dev predictions of each seed.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from miniroberta.data.dataset import MlmDataset
from miniroberta.data.decontam import decontaminate, task_spans
from miniroberta.data.masking import SpecialIds, eval_masking
from miniroberta.data.preprocess import build_dataset
from miniroberta.interop.export import export_checkpoint
from miniroberta.infer.pipelines import fill_mask
from miniroberta.interop.checkpoint import load_model
from miniroberta.modeling.tokenizer import BertTokenizer, read_vocab
from miniroberta.outputs import claim_output
from miniroberta.pretrain.config import PretrainConfig, RunOptions
from miniroberta.pretrain.heldout import LEFT_PLATEAU_RATIO, left_plateau, unigram_baseline
from miniroberta.pretrain.launch import train
from miniroberta.pretrain.setup import model_config
from miniroberta.settings import add_options, from_args, option, validate
from miniroberta.study.compare import COMPARE, compare_with_random_init, describe_comparison
from miniroberta.data.paths import find_data_root
from miniroberta.utils import format_duration, log

# The recipe (measured; docs/quality.md "The quickstart"): cpu-hour's stage-1 recipe found by `miniroberta sweep`
# -- batch 32, lr 1.5e-3, warmup 0.05, UER init, one document per window on the general corpus -- for 8,000
# steps. On an idle 2-core Zen 4 (AVX512-BF16, bf16) it trained in 7:37 and reached held-out (c3) loss 5.18,
# accuracy 0.140 (unigram baseline 0.046); at 6,000 of those steps 0.124, at 4,000 0.081, at 2,000 still on the
# plateau (0.047). What lost: the review slice + chnsenticorp train texts, packed, lr 1e-3 -- still on the plateau
# after 6,000 steps (c3 accuracy 0.043); batch 16 at lr 1.06e-3 for 8,000 steps: 0.047.
RECIPE: dict[str, Any] = dict(learning_rate=1.5e-3, batch_size=32, warmup=0.05, init="uer", seq_length=128)
DEFAULT_STEPS = 8000
HELDOUT_FILE = "c3_documents.txt"
HELDOUT_BYTES = 400_000          # -> 2,068 windows of 128; the first 2,000 are scored
HELDOUT_WINDOWS = 2000
DECONTAMINATE = ("book_review", "chnsenticorp", "lcqmc", "tnews", "iflytek", "ocnli")
SENTENCES = (
    "中国的首都是[MASK]京。",
    "北京是中国的首[MASK]。",
    "今天天气很[MASK]，我们去公园散步吧。",
    "他每天早上都喝一杯牛[MASK]。",
    "中国的人口超过十四亿，是世界上人口最多的国[MASK]之一。",
)
# a whole run against the median of its first CALIBRATION_STEPS steps (idle 2-core Zen 4): 1.0-1.18x
SLOWDOWN = 1.15
CALIBRATION_STEPS = 24


def scaled_lr(batch_size: int) -> float:
    """The recipe's learning rate for another batch size: Adam's square-root rule."""
    return RECIPE["learning_rate"] * (batch_size / RECIPE["batch_size"]) ** 0.5


@dataclass(kw_only=True)
class QuickstartConfig:
    out: str = option("quickstart_out", "output directory (claimed: a second run refuses it unless --overwrite)",
                      effect="result")
    overwrite: bool = option(False, "move an earlier quickstart's --out aside (<out>.old-<time>) and start over",
                             effect="speed")
    corpus: str | None = option(None, "corpus file or directory (one document per line), used as is",
                                effect="result", default_text=f"../shared/data/corpus without {HELDOUT_FILE}, "
                                "decontaminated against the six tasks' dev/test texts")
    vocab: str | None = option(None, "vocab.txt", effect="result",
                               default_text="../shared/data/vocab/google_zh_vocab.txt")
    max_bytes: int | None = option(None, "use only this many bytes of the corpus (an even spread of each file)",
                                   effect="result", ge=1, default_text="all of it")
    steps: int = option(DEFAULT_STEPS, "training steps: the same on every machine (a slower one takes longer)",
                        effect="result", ge=1)
    minutes: float | None = option(None, "instead of --steps: time a few steps and size a smaller run to this "
                                   "wall-time budget (its result is labelled as such)", effect="result", gt=0,
                                   default_text="off")
    config: str = option("tiny", "model preset or config file", effect="result")
    seq_length: int = option(RECIPE["seq_length"], "window length of the preprocessed corpus", effect="result",
                             ge=8, le=512)
    batch_size: int = option(RECIPE["batch_size"], "windows per step", effect="result", ge=1)
    learning_rate: float | None = option(
        None, "peak learning rate", effect="result", gt=0,
        default_text=f"{RECIPE['learning_rate']:g} at batch {RECIPE['batch_size']}, scaled by sqrt(batch / "
                     f"{RECIPE['batch_size']}) for another --batch_size")
    precision: str = option("auto", "training precision (see `miniroberta pretrain --help`)", effect="result",
                            choices=("auto", "fp32", "bf16"))
    compare: bool = option(False, f"step 5: fine-tune on {COMPARE['task']} (label-scarce, 119 classes) beside a "
                           f"randomly initialised model over {COMPARE['seeds']} seeds with a paired test "
                           "(~4 more minutes on 2 cores)", effect="result")
    threads: int | None = option(None, "torch threads", effect="speed", ge=1, default_text="the available cores")
    progress: bool = option(True, "no progress bar", effect="speed")

    def lr(self) -> float:
        return self.learning_rate or scaled_lr(self.batch_size)


@dataclass
class Data:
    train: str                 # the dataset directory
    heldout: str | None
    heldout_source: str | None
    corpus: list[str]          # the corpus files as preprocessed
    decontamination: dict | None
    instances: int
    tokens: int


def configure(p: argparse.ArgumentParser) -> None:
    add_options(p, QuickstartConfig)


# ------------------------------------------------------------------------------------------ step 1
def _sources(cfg: QuickstartConfig, data: Path | None) -> tuple[list[str], str | None]:
    """(corpus files, held-out file or None)."""
    if cfg.corpus:
        if not os.path.exists(cfg.corpus):
            raise FileNotFoundError(f"--corpus {cfg.corpus}: no such file or directory")
        files = ([str(p) for p in sorted(Path(cfg.corpus).glob("*.txt"))] if os.path.isdir(cfg.corpus)
                 else [cfg.corpus])
        if not files:
            raise FileNotFoundError(f"--corpus {cfg.corpus}: no *.txt files in that directory")
        held = data / "corpus" / HELDOUT_FILE if data else None
        held_s = str(held) if held and held.is_file() and str(held.resolve()) not in {
            str(Path(f).resolve()) for f in files} else None
        return files, held_s
    if data is None or not (data / "corpus").is_dir():
        raise FileNotFoundError("no corpus found: quickstart expects ../shared/data/corpus beside the repository "
                                "(or set MINIROBERTA_DATA); pass --corpus FILE_OR_DIR and --vocab VOCAB.txt")
    files = sorted(str(p) for p in (data / "corpus").glob("*.txt") if p.name != HELDOUT_FILE)
    held = data / "corpus" / HELDOUT_FILE
    return files, str(held) if held.is_file() else None


def prepare_data(cfg: QuickstartConfig, out: Path, vocab: str, data: Path | None) -> Data:
    files, held = _sources(cfg, data)
    tasks_dir = data / "tasks" if data is not None else None
    dec = None
    if not cfg.corpus and tasks_dir is not None and all((tasks_dir / t).is_dir() for t in DECONTAMINATE):
        spans = task_spans(DECONTAMINATE, str(tasks_dir), splits=("dev", "test"))
        dec = decontaminate(files, spans, str(out / "corpus"), max_bytes=cfg.max_bytes, sample=True)
        log(f"      {sum(f['kept'] for f in dec['files']):,} lines of {len(files)} files kept, "
            f"{len(dec['removed'])} removed for sharing a {dec['n']}-character span with a dev/test text of the six "
            f"tasks (listed in {out / 'corpus' / 'decontamination.json'})")
        files = [f["out"] for f in dec["files"]]
    m = build_dataset(files, vocab, out / f"dataset_seq{cfg.seq_length}", seq_length=cfg.seq_length,
                      processes_num=2, max_bytes=None if dec else cfg.max_bytes, progress=cfg.progress)
    log(f"      {m['num_instances']:,} windows, {m['num_tokens']:,} tokens -> {out / f'dataset_seq{cfg.seq_length}'}")
    heldout = None
    if held:
        heldout = str(out / f"heldout_seq{cfg.seq_length}")
        em = build_dataset(held, vocab, heldout, seq_length=cfg.seq_length, max_bytes=HELDOUT_BYTES, progress=False)
        log(f"      held-out: the first {min(HELDOUT_WINDOWS, em['num_instances']):,} windows of "
            f"{os.path.basename(held)} (never trained on)")
    else:
        log(f"      no held-out file ({HELDOUT_FILE} not found beside the corpus): no held-out verdict")
    return Data(train=str(out / f"dataset_seq{cfg.seq_length}"), heldout=heldout, heldout_source=held,
                corpus=files, decontamination=dec, instances=int(m["num_instances"]), tokens=int(m["num_tokens"]))


# ------------------------------------------------------------------------------------------ step 2
def time_steps(base: PretrainConfig, threads: int | None) -> float:
    """Seconds per step on this machine: the median of a few real training steps (same engine, data and
    precision) after two warm-up steps, so that one stalled step does not skew it."""
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
        reps = [json.loads(line) for line in open(res["metrics_path"], encoding="utf-8")]
    el = [r["elapsed_s"] for r in reps if r.get("event") == "report"]
    return statistics.median(b - a for a, b in zip(el[2:], el[3:])) if len(el) > 3 else el[-1] / max(1, len(el))


def plan_steps(cfg: QuickstartConfig, base: PretrainConfig) -> tuple[int, str]:
    """(steps, how they were chosen): ``--steps`` as given, or sized to ``--minutes``."""
    per_step = time_steps(base, cfg.threads)
    if cfg.minutes:
        steps = max(20, int(cfg.minutes * 60 / (per_step * SLOWDOWN)))
        return steps, (f"sized to ~{cfg.minutes:g} min at {per_step:.3f} s/step -- a shortened run, not the default "
                       f"{DEFAULT_STEPS:,} steps")
    expect = cfg.steps * per_step * SLOWDOWN
    busy = " (this machine is slower or busier than the 2-core machine it was measured on: same steps, " \
           "more time)" if expect > 12 * 60 else ""
    return cfg.steps, f"expect ~{format_duration(expect)} here at {per_step:.3f} s/step{busy}"


def pretrain(cfg: QuickstartConfig, d: Data, out: Path, vocab: str) -> tuple[dict, PretrainConfig]:
    base = PretrainConfig(dataset_path=d.train, output_model_path=str(out / "checkpoints" / "model.bin"),
                          vocab_path=vocab, config_path=cfg.config, total_steps=1, batch_size=cfg.batch_size,
                          learning_rate=cfg.lr(), warmup=RECIPE["warmup"], seed=7, init=RECIPE["init"],
                          precision=cfg.precision)
    steps, how = plan_steps(cfg, base)
    mc = model_config(base, len(read_vocab(vocab)), cfg.seq_length)
    log(f"[2/5] pretrain {mc.name} for {steps:,} steps: {how}")
    pcfg = PretrainConfig(**{**base.__dict__, "total_steps": steps})
    report = max(1, steps // 40)
    res = train(pcfg, RunOptions(report_steps=report, save_checkpoint_steps=steps,
                                 eval_dataset_path=d.heldout, eval_max_instances=HELDOUT_WINDOWS,
                                 eval_steps=max(report, steps // 8 // report * report),
                                 threads=cfg.threads, progress=cfg.progress))
    return res, pcfg


# ------------------------------------------------------------------------------------------ step 4
def heldout_verdict(d: Data, res: dict, vocab: str) -> dict[str, Any] | None:
    """The run's held-out score beside the unigram baseline on the same masked positions."""
    if not d.heldout:
        return None
    special = SpecialIds.from_vocab(read_vocab(vocab))
    uni = unigram_baseline(MlmDataset(d.train), MlmDataset(d.heldout), special, eval_masking(),
                           len(read_vocab(vocab)), HELDOUT_WINDOWS)
    records = [json.loads(line) for line in open(res["metrics_path"], encoding="utf-8")]
    evals = [r for r in records if "eval_loss" in r]
    first, last = evals[0], evals[-1]
    return {"unigram_loss": uni["loss"], "unigram_accuracy": uni["mlm_accuracy"], "masked_tokens": uni["masked_tokens"],
            "start_loss": first["eval_loss"], "loss": last["eval_loss"], "accuracy": last["eval_accuracy"],
            "step": last["step"], "curve": [(r["step"], r["eval_loss"], r["eval_accuracy"]) for r in evals],
            "left_plateau": left_plateau(last["eval_accuracy"], uni["mlm_accuracy"]),
            "source": os.path.basename(d.heldout_source or "")}


def verdict_lines(v: dict[str, Any] | None, steps: int, shortened: bool) -> list[str]:
    if v is None:
        return ["held-out: no held-out file, so no verdict on what the model learnt (pass a corpus beside "
                f"../shared/data/corpus/{HELDOUT_FILE})"]
    ratio = v["accuracy"] / max(v["unigram_accuracy"], 1e-9)
    lines = [f"held-out ({v['source']}, {v['masked_tokens']:,} masked tokens, every one shown as [MASK]):",
             f"  this model             loss {v['loss']:.2f}   accuracy {100 * v['accuracy']:.1f}%",
             f"  unigram baseline       loss {v['unigram_loss']:.2f}   accuracy {100 * v['unigram_accuracy']:.1f}%   "
             f"(always the training data's most frequent token, measured on the same positions)",
             f"  untrained (step 0)     loss {v['start_loss']:.2f}"]
    if v["left_plateau"]:
        lines.append(f"verdict: the model has left the unigram plateau -- it predicts {ratio:.1f}x as many masked "
                     f"tokens as token frequencies alone, so it uses context. A tiny model after {steps:,} CPU "
                     f"steps, not a useful one: UER's RoBERTa-Tiny was trained ~400x longer.")
    else:
        lines.append(f"verdict: the model is still on the unigram plateau (accuracy {ratio:.2f}x the baseline, "
                     f"below {LEFT_PLATEAU_RATIO}x): it predicts frequent tokens, not context. "
                     + (f"This was a shortened run; the default {DEFAULT_STEPS:,} steps leave the plateau."
                        if shortened else "Train longer (--steps) or check the corpus and learning rate."))
    return lines


def fill_mask_predictions(model_dir: str, sentences) -> list[list[dict[str, Any]]]:
    model, _ = load_model(model_dir, "mlm")
    tok = BertTokenizer(os.path.join(model_dir, "vocab.txt"))
    return fill_mask(model, tok, list(sentences), top_k=5)


# ------------------------------------------------------------------------------------------ the command
def resolve_paths(cfg: QuickstartConfig) -> tuple[Path | None, str]:
    data = find_data_root()
    vocab = cfg.vocab or (str(Path(data) / "vocab" / "google_zh_vocab.txt") if data else None)
    if not vocab or not os.path.isfile(vocab):
        raise FileNotFoundError(f"no vocab found ({vocab or 'looked for ../shared/data/vocab/google_zh_vocab.txt'}); "
                                f"pass --vocab VOCAB.txt")
    return (Path(data) if data else None), vocab


def run(args: argparse.Namespace) -> int:
    cfg = validate(from_args(QuickstartConfig, args), "quickstart settings")
    data, vocab = resolve_paths(cfg)
    _sources(cfg, data)                              # a bad --corpus fails before --out is claimed
    out = Path(cfg.out).resolve()
    with claim_output(str(out), overwrite=cfg.overwrite, can_resume=False, command="quickstart",
                      what="an earlier quickstart's outputs"):
        out.mkdir(parents=True, exist_ok=True)
        summary = _run(cfg, out, vocab, data)
    print("\n".join(summary_lines(summary, cfg)))
    sys.stdout.flush()
    return 0


def _run(cfg: QuickstartConfig, out: Path, vocab: str, data: Path | None) -> dict[str, Any]:
    t_all = time.time()
    log(f"[1/5] corpus: {cfg.corpus or '../shared/data/corpus'} -> seq-{cfg.seq_length} windows")
    d = prepare_data(cfg, out, vocab, data)
    res, pcfg = pretrain(cfg, d, out, vocab)
    hf_dir = out / "hf_model"
    log("[3/5] export to a HuggingFace directory")
    export_checkpoint(res["last_checkpoint"], hf_dir, vocab_path=vocab, type="mlm",
                      card_extra=f"Trained by `miniroberta quickstart`: {res['steps']:,} steps on a CPU -- a "
                                 f"demonstration of the pipeline, not a useful model.")
    log("[4/5] held-out score against the unigram baseline, fill-mask")
    v = heldout_verdict(d, res, vocab)
    preds = fill_mask_predictions(str(hf_dir), SENTENCES)
    compare = None
    tasks_dir = data / "tasks" if data is not None else None
    if cfg.compare:
        if tasks_dir is None or not (tasks_dir / COMPARE["task"]).is_dir():
            log(f"[5/5] skipped: no ../shared/data/tasks/{COMPARE['task']} to fine-tune on")
        else:
            log(f"[5/5] does the pretraining help where labels are scarce? {COMPARE['task']}, pretrained vs random "
                f"init, {COMPARE['seeds']} seeds")
            compare = compare_with_random_init(str(hf_dir), str(tasks_dir), cfg.threads, cfg.precision)
    summary = {"dataset": d.train, "heldout_dataset": d.heldout, "checkpoint": res["last_checkpoint"],
               "hf_model": str(hf_dir), "metrics": res["metrics_path"], "state": res["state_path"],
               "steps": res["steps"], "default_steps": DEFAULT_STEPS, "shortened": bool(cfg.minutes),
               "precision": res["precision"], "recipe": {**RECIPE, "learning_rate": pcfg.learning_rate,
                                                         "batch_size": pcfg.batch_size},
               "train_windows": d.instances, "train_tokens": d.tokens, "final_train_loss": res["final_loss"],
               "heldout": v, "predictions": {s: [c["token_str"] for c in p] for s, p in zip(SENTENCES, preds)},
               "predictions_scored": {s: [[c["token_str"], c["score"]] for c in p] for s, p in zip(SENTENCES, preds)},
               "compare": compare, "training_wall_s": res["wall_time_s"],
               "decontamination": ({k: d.decontamination[k] for k in ("n", "eval_texts", "files")}
                                   if d.decontamination else None),
               "wall_time_s": time.time() - t_all}
    with open(out / "summary.json.tmp", "w", encoding="utf-8") as f:
        json.dump(summary, f, ensure_ascii=False, indent=2)
    os.replace(out / "summary.json.tmp", out / "summary.json")
    return summary


def summary_lines(s: dict[str, Any], cfg: QuickstartConfig) -> list[str]:
    lines = ["", f"quickstart finished in {format_duration(s['wall_time_s'])} (training "
                 f"{format_duration(s['training_wall_s'])}, {s['steps']:,} steps, {s['precision']})"
                 + (f" -- a shortened run (--minutes {cfg.minutes:g}), not the default {DEFAULT_STEPS:,} steps"
                    if s["shortened"] else ""), ""]
    lines += verdict_lines(s["heldout"], s["steps"], s["shortened"])
    lines += ["", "fill-mask with the exported model (top 5):"]
    for sent, cands in s["predictions_scored"].items():
        lines.append(f"  {sent}  ->  " + "  ".join(f"{t} {100 * p:.1f}%" for t, p in cands))
    if s["compare"]:
        lines += [""] + describe_comparison(s["compare"])
    elif not cfg.compare:
        lines += ["", f"(--compare adds a fine-tuning check on {COMPARE['task']} against random init, "
                      f"{COMPARE['seeds']} seeds, ~4 min)"]
    hf = s["hf_model"]
    lines += ["", "written:", f"  dataset       {s['dataset']}", f"  checkpoint    {s['checkpoint']}",
              f"  train state   {s['state']}", f"  metrics       {s['metrics']}",
              f"  HF model      {hf}   (transformers: pipeline('fill-mask', model='{hf}'))",
              f"  summary       {Path(hf).parent / 'summary.json'}",
              "", f"next: miniroberta fill-mask --model {hf} '北京是中国的[MASK]都。'"]
    return lines


def unigram_ratio(s: dict[str, Any]) -> float | None:
    v = s.get("heldout")
    return None if not v else v["accuracy"] / max(v["unigram_accuracy"], 1e-9)


__all__ = ["configure", "run", "QuickstartConfig", "RECIPE", "DEFAULT_STEPS", "fill_mask_predictions",
           "heldout_verdict", "unigram_ratio"]
