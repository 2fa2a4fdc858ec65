"""``miniroberta sweep``: short pretraining runs at a fixed compute budget, scored on held-out text.

Every run trains the same model on the same data for the same number of **real (non-padding)
tokens** (``--budget_tokens``; the step count follows from the batch, the sequence length and the
dataset's fill ratio, so the learning-rate schedule always ends at the budget), then is judged by
its held-out MLM loss on a file no run trains on, with the fixed all-``[MASK]`` masks of
``miniroberta.data.masking.eval_masking``. A token budget makes the comparison independent of
what else the machine does; the wall time of each run is recorded beside it.

Runs are the ``--base`` settings plus one ``--variant`` each (``--vary KEY=V1,V2`` adds one variant
per value), e.g.::

    miniroberta sweep --out sweep_out --config tiny --budget_tokens 4e6 \\
        --base learning_rate=5e-4 batch_size=32 warmup=0.05 \\
        --vary learning_rate=2.5e-4,1e-3,2e-3 --vary warmup=0.01,0.1 \\
        --variant batch_size=128,learning_rate=1e-3

Writes ``OUT/sweep.jsonl`` (one record per run: settings, steps, tokens, wall time, held-out curve),
``OUT/sweep.md`` (the table, best first) and ``OUT/sweep.png`` (held-out loss against tokens).
A finished run is skipped when the sweep is run again; ``--overwrite`` starts over.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable

from miniroberta.data.dataset import MlmDataset
from miniroberta.data.preprocess import build_dataset
from miniroberta.engine.precision import PRECISIONS
from miniroberta.optional import plots_available
from miniroberta.outputs import claim_output
from miniroberta.pretrain.config import PretrainConfig, RunOptions
from miniroberta.pretrain.launch import train
from miniroberta.settings import add_options, from_args, help_text, option, validate
from miniroberta.data.paths import find_data_root
from miniroberta.utils import (atomic_write, atomic_write_text, format_duration, log, sha256_bytes,
                               write_error)

# what a variant may change: the settings that change the result of a pretraining run
KEYS: dict[str, Callable[[str], Any]] = {
        "learning_rate": float, "batch_size": int, "warmup": float, "seq_length": int, "mask_rate": float,
        "init": str, "weight_decay": float, "correct_bias": lambda v: str(v).lower() in ("1", "true", "yes"),
        "dropout": float, "grad_clip": float}
DEFAULT_BASE = {"learning_rate": 5e-4, "batch_size": 32, "warmup": 0.05, "seq_length": 128, "mask_rate": 0.15,
                "init": "uer"}
HELDOUT_SEQ = 128


def parse_settings(items: list[str] | None, what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        for kv in item.split(","):
            k, sep, v = kv.partition("=")
            k = k.strip()
            if not sep or k not in KEYS:
                raise ValueError(f"{what} {item!r}: expected KEY=VALUE with KEY one of {', '.join(KEYS)}")
            out[k] = KEYS[k](v.strip())
    return out


def expand_variants(base: dict[str, Any], vary: list[str] | None, variants: list[str] | None) -> list[dict[str, Any]]:
    """The base first, then one run per ``--vary`` value and per ``--variant`` (duplicates dropped)."""
    runs = [dict(base)]
    for item in vary or []:
        k, sep, vals = item.partition("=")
        if not sep or k.strip() not in KEYS:
            raise ValueError(f"--vary {item!r}: expected KEY=V1,V2 with KEY one of {', '.join(KEYS)}")
        for v in vals.split(","):
            runs.append({**base, k.strip(): KEYS[k.strip()](v.strip())})
    for item in variants or []:
        runs.append({**base, **parse_settings([item], "--variant")})
    seen, out = set(), []
    for r in runs:
        key = json.dumps(r, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def run_name(settings: dict[str, Any], base: dict[str, Any]) -> str:
    diff = [f"{k}={settings[k]:g}" if isinstance(settings[k], float) else f"{k}={settings[k]}"
            for k in sorted(settings) if settings.get(k) != base.get(k)]
    return "base" if not diff else ",".join(diff)


def _dataset(out: Path, corpus: Any, vocab: str, seq: int, name: str, max_bytes: int | None) -> str:
    path = out / "data" / f"{name}_seq{seq}"
    if (path / "manifest.json").is_file():
        MlmDataset(str(path))  # a damaged dataset fails here, naming itself
        return str(path)
    build_dataset(corpus, vocab, str(path), seq_length=seq, max_bytes=max_bytes, processes_num=min(2, os.cpu_count() or 1),
                  overwrite=True, progress=False)
    return str(path)


def _fill_ratio(ds_path: str) -> float:
    ds = MlmDataset(ds_path)
    real = ds.manifest.get("num_real_tokens") or ds.manifest["num_tokens"]
    return float(real) / max(1, len(ds) * ds.seq_length)


def run_one(settings: dict[str, Any], args: argparse.Namespace, out: Path, vocab: str, train_corpus: Any,
            heldout: str) -> dict[str, Any]:
    seq = int(settings["seq_length"])
    ds = _dataset(out, train_corpus, vocab, seq, "train", args.max_bytes)
    ev = _dataset(out, heldout, vocab, HELDOUT_SEQ, "heldout", args.heldout_max_bytes)
    per_step = settings["batch_size"] * seq * _fill_ratio(ds)
    steps = max(10, int(round(args.budget_tokens / per_step)))
    name = run_name(settings, args.base_settings)
    rdir = out / "runs" / sha256_bytes(json.dumps(settings, sort_keys=True).encode())[:12]
    if rdir.exists():
        shutil.rmtree(rdir)           # an interrupted run starts over: its record was never written
    rdir.mkdir(parents=True)
    kw = {f.name: settings[f.name] for f in fields(PretrainConfig) if f.name in settings and f.name != "seq_length"}
    cfg = PretrainConfig(dataset_path=ds, output_model_path=str(rdir / "model.bin"), vocab_path=vocab,
                         config_path=args.config, total_steps=steps, seed=args.seed, precision=args.precision, **kw)
    n_eval = max(1, args.evals)
    every = max(1, steps // n_eval)
    opts = RunOptions(save_checkpoint_steps=10 ** 9, report_steps=every, eval_dataset_path=ev,
                      eval_max_instances=args.heldout_windows, eval_steps=every, threads=args.threads,
                      progress=False)
    log(f"sweep: {name}: {steps} steps of batch {settings['batch_size']} x seq {seq} "
        f"(~{per_step:,.0f} real tokens/step, budget {args.budget_tokens:,.0f})")
    t0 = time.time()
    res = train(cfg, opts)
    wall = time.time() - t0
    recs = [json.loads(line) for line in open(res["metrics_path"], encoding="utf-8")]
    curve = [dict(step=r["step"], tokens=r.get("tokens_seen"), eval_loss=r["eval_loss"], eval_accuracy=r["eval_accuracy"],
                  elapsed_s=r.get("elapsed_s")) for r in recs if "eval_loss" in r]
    train_curve = [dict(step=r["step"], loss=r["loss"]) for r in recs if r.get("event") == "report"]
    final = curve[-1] if curve else {}
    row = dict(name=name, settings=settings, config=args.config, steps=res["steps"], tokens=res.get("tokens_seen"),
               budget_tokens=args.budget_tokens, wall_time_s=wall, heldout_loss=final.get("eval_loss"),
               heldout_accuracy=final.get("eval_accuracy"), train_loss=res.get("final_loss"), curve=curve,
               train_curve=train_curve, precision=(recs[0].get("precision") if recs else None))
    if not args.keep_checkpoints:
        shutil.rmtree(rdir, ignore_errors=True)
    return row


def render_table(rows: list[dict[str, Any]], base: dict[str, Any]) -> str:
    rows = sorted(rows, key=lambda r: (r["heldout_loss"] is None, r["heldout_loss"] or 0.0))
    best = rows[0]["heldout_loss"] if rows else None
    lines = ["| run | lr | batch | warmup | seq | mask | init | steps | wall | held-out loss | Δ best | held-out acc |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r["settings"]
        lines.append(f"| {r['name']} | {s['learning_rate']:g} | {s['batch_size']} | {s['warmup']:g} | {s['seq_length']} | "
                     f"{s['mask_rate']:g} | {s['init']} | {r['steps']:,} | {format_duration(r['wall_time_s'])} | "
                     f"{r['heldout_loss']:.3f} | {r['heldout_loss'] - best:+.3f} | {100 * r['heldout_accuracy']:.1f}% |")
    base_s = ", ".join(f"{k}={v}" for k, v in base.items())
    return ("\n".join(lines) + f"\n\n* base: {base_s}; every run: the same budget of real tokens "
            f"({rows[0]['budget_tokens']:,.0f}), held-out loss with fixed all-[MASK] masks.\n" if rows else "")


def plot(rows: list[dict[str, Any]], path: str) -> str | None:
    if not rows or not plots_available("sweep", "sweep.png"):
        return None
    import matplotlib  # noqa: PLC0415 -- optional (matplotlib): plots only
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 -- optional (matplotlib): plots only
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for r in sorted(rows, key=lambda r: r["heldout_loss"]):
        pts = [c for c in r["curve"] if c.get("tokens")]     # the step-0 point (ln V) would squash the rest
        ax.plot([c["tokens"] / 1e6 for c in pts], [c["eval_loss"] for c in pts], marker=".",
                lw=1.8 if r["name"] == "base" else 1.0, label=f"{r['name']} ({r['heldout_loss']:.3f})")
    ax.set_xlabel("real tokens seen (millions)")
    ax.set_ylabel("held-out MLM loss (all-[MASK])")
    ax.set_title("sweep: held-out loss at equal token budget")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)
    return path


@dataclass(kw_only=True)
class SweepOptions:
    """The options of ``miniroberta sweep``."""
    out: str = option(help="sweep directory (resumable)", effect="result")
    corpus: list[str] | None = option(None, "training corpus files or directory", effect="result",
                                      default_text="../shared/data/corpus without the held-out file")
    heldout: str | None = option(None, "held-out text file, never trained on", effect="result",
                                 default_text="c3_documents.txt of the shared corpus")
    vocab: str | None = option(None, "vocab file", effect="result",
                               default_text="../shared/data/vocab/google_zh_vocab.txt")
    config: str = option("tiny", "model preset or config file", effect="result")
    budget_tokens: float = option(4e6, "real (non-padding) tokens per run", effect="result", gt=0)
    base: list[str] | None = option(None, "base settings KEY=VALUE", effect="result",
                                    default_text=" ".join(f"{k}={v}" for k, v in DEFAULT_BASE.items()))
    vary: list[str] = option(default_factory=list, help="KEY=V1,V2,...: one run per value (repeatable)",
                             effect="result", default_text="none")
    variant: list[str] = option(default_factory=list, help="KEY=V,KEY2=V2: one run (repeatable)", effect="result",
                                default_text="none")
    max_bytes: int | None = option(None, "use only the first N bytes of the training corpus", effect="result", ge=1,
                                   default_text="all of it")
    heldout_max_bytes: int = option(400_000, "bytes of the held-out file scored", effect="result", ge=1)
    heldout_windows: int = option(2048, "held-out windows (seq 128) scored per evaluation", effect="result", ge=1)
    evals: int = option(8, "held-out evaluations per run (the curve)", effect="speed", ge=1)
    seed: int = option(7, "seed of every run", effect="result")
    precision: str = option("auto", "training precision (auto: from the device's capabilities, the same for "
                            "every run)", effect="result", choices=PRECISIONS)
    threads: int | None = option(None, "torch threads per run", effect="speed", ge=1,
                                 default_text="the cores this process may run on")
    keep_checkpoints: bool = option(False, "keep each run's checkpoints", effect="speed")
    dry_run: bool = option(False, "list the runs and stop", effect="speed")
    overwrite: bool = option(False, "move an existing sweep in --out aside and start over", effect="speed")


def configure(p: argparse.ArgumentParser) -> None:
    """Generated from ``SweepOptions``; ``--vary`` and ``--variant`` repeat."""
    add_options(p, SweepOptions, skip=("vary", "variant"))
    for f in fields(SweepOptions):
        if f.name in ("vary", "variant"):
            p.add_argument(f"--{f.name}", action="append", default=[], help=help_text(f))


def _default_data(args: argparse.Namespace) -> tuple[Any, str, str]:
    data = find_data_root()
    vocab = args.vocab or (str(data / "vocab" / "google_zh_vocab.txt") if data else None)
    if not vocab or not os.path.isfile(vocab):
        raise FileNotFoundError("no vocab found; pass --vocab VOCAB.txt")
    heldout = args.heldout or (str(data / "corpus" / "c3_documents.txt") if data else None)
    if not heldout or not os.path.isfile(heldout):
        raise FileNotFoundError(f"--heldout {heldout}: no such file; pass a held-out text file")
    if args.corpus:
        corpus = args.corpus if len(args.corpus) > 1 else args.corpus[0]
    elif data is not None and (data / "corpus").is_dir():
        corpus = sorted(str(f) for f in (data / "corpus").glob("*.txt")
                        if f.resolve() != Path(heldout).resolve())
    else:
        raise FileNotFoundError("no corpus found; pass --corpus FILE_OR_DIR")
    train_files = corpus if isinstance(corpus, list) else [corpus]
    if any(os.path.isfile(f) and Path(f).resolve() == Path(heldout).resolve() for f in train_files):
        raise ValueError(f"--heldout {heldout} is also in --corpus: a held-out file must not be trained on")
    return corpus, heldout, vocab


def run(args: argparse.Namespace) -> int:
    validate(from_args(SweepOptions, args), "sweep options")       # bounds and choices, every problem at once
    base = {**DEFAULT_BASE, **parse_settings(args.base, "--base")}
    args.base_settings = base
    runs = expand_variants(base, args.vary, args.variant)
    if args.dry_run:
        for r in runs:
            print(run_name(r, base), json.dumps(r))
        return 0
    corpus, heldout, vocab = _default_data(args)
    out = Path(args.out).resolve()
    with claim_output(str(out), resume=not args.overwrite, overwrite=args.overwrite, command="sweep", what="a sweep"):
        out.mkdir(parents=True, exist_ok=True)
        jl = out / "sweep.jsonl"
        done = {}
        if jl.is_file():
            for line in open(jl, encoding="utf-8"):
                r = json.loads(line)
                if r.get("budget_tokens") == args.budget_tokens and r.get("config") == args.config:
                    done[json.dumps(r["settings"], sort_keys=True)] = r
        t0 = time.time()
        rows = []
        for i, s in enumerate(runs):
            key = json.dumps(s, sort_keys=True)
            if key in done:
                rows.append(done[key])
                continue
            row = run_one(s, args, out, vocab, corpus, heldout)
            rows.append(row)
            try:
                with open(jl, "a", encoding="utf-8") as f:   # one line per finished run
                    f.write(json.dumps(row) + "\n")
            except OSError as e:      # disk full, read-only: one line naming the file
                raise write_error(str(jl), e, True) from None
            log(f"sweep [{i + 1}/{len(runs)}] {row['name']}: held-out loss {row['heldout_loss']:.4f} "
                f"(acc {100 * row['heldout_accuracy']:.1f}%), {format_duration(row['wall_time_s'])}; "
                f"sweep so far {format_duration(time.time() - t0)}")
        table = render_table(rows, base)
        atomic_write_text(str(out / "sweep.md"), table)
        png = plot(rows, str(out / "sweep.png"))
        print(table)
        print(f"written: {out / 'sweep.jsonl'}, {out / 'sweep.md'}" + (f", {png}" if png else ""))
        if any(r["heldout_loss"] is None or not math.isfinite(r["heldout_loss"]) for r in rows):
            log("sweep: some runs have no finite held-out loss (diverged?)")
    return 0


__all__ = ["configure", "run", "expand_variants", "parse_settings", "run_name", "render_table", "KEYS"]
