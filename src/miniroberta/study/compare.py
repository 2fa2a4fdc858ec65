"""Does pretraining help? A fine-tuning comparison chosen where the answer can be seen, with a paired test.

A few CPU minutes of pretraining cannot show on a task whose labels are plentiful and few (chnsenticorp:
two classes, 9,600 examples -- random init reaches 89 %, and the measured difference after 30 CPU-minutes
of pretraining was +0.25 +- 0.6 over three seeds, docs/quality.md). It shows where labels are scarce for the
label space: iflytek has 119 app categories and ~38 train examples per category, so a model must bring
knowledge of the words into fine-tuning (the cpu-hour study: +21 points over no pretraining there).

Each of ``COMPARE["seeds"]`` seeds fine-tunes both arms with the same seed (same head init, same data
order); the two arms' predictions on the same dev examples are compared with McNemar's exact test (on the
examples exactly one arm gets right), which is far tighter than comparing two accuracies as if unrelated.
"""
from __future__ import annotations

import math
import os
import statistics
import time
from typing import Any, Sequence

import numpy as np

from miniroberta.finetune import FinetuneConfig, run_finetune
from miniroberta.utils import log

# measured on an idle 2-core Zen 4 with the quickstart's 8,000-step model (docs/quality.md): seed 7, lr 1e-3,
# 3 epochs: pretrained 21.9 %, random init 6.1 % (random init's best of 1e-4 / 3e-4 / 1e-3 is used below)
COMPARE: dict[str, Any] = dict(task="iflytek", seeds=3, epochs_num=3, batch_size=32, seq_length=128,
                               max_train_examples=None, learning_rate_pretrained=1e-3, learning_rate_random=1e-3)


def mcnemar_exact(a_right: Sequence[bool], b_right: Sequence[bool]) -> dict[str, Any]:
    """McNemar's exact test of two classifiers scored on the same examples: ``b`` = examples only A gets
    right, ``c`` = only B; two-sided p = P(a split at least as uneven as (b, c) | b + c, p = 1/2)."""
    a, bb = np.asarray(a_right, dtype=bool), np.asarray(b_right, dtype=bool)
    if a.shape != bb.shape:
        raise ValueError(f"paired test needs predictions on the same examples ({a.shape} vs {bb.shape})")
    only_a, only_b = int((a & ~bb).sum()), int((~a & bb).sum())
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return {"only_a": 0, "only_b": 0, "p_value": 1.0}
    tail = sum(math.comb(n, i) for i in range(k + 1))
    p = min(1.0, 2.0 * tail / 2.0 ** n)
    return {"only_a": only_a, "only_b": only_b, "p_value": p}


def _arm(arm: str, hf_dir: str, tasks_dir: str, seed: int, threads: int | None, precision: str) -> dict[str, Any]:
    kw = (dict(pretrained_model_path=hf_dir, learning_rate=COMPARE["learning_rate_pretrained"]) if arm == "pretrained"
          else dict(config_path=hf_dir, vocab_path=os.path.join(hf_dir, "vocab.txt"),
                    learning_rate=COMPARE["learning_rate_random"]))
    cfg = FinetuneConfig(**kw, task=COMPARE["task"], data_dir=tasks_dir, epochs_num=COMPARE["epochs_num"],
                         batch_size=COMPARE["batch_size"], seq_length=COMPARE["seq_length"], seed=seed,
                         max_train_examples=COMPARE["max_train_examples"],
                         save_model=False, run_test=False, progress=False, verbose=False, output_dir=None,
                         threads=threads, precision=precision)
    res = run_finetune(cfg)
    return {"accuracy": res["best_dev_acc"], "right": np.asarray(res["dev_predictions"]) == np.asarray(res["dev_labels"]),
            "n_dev": res["n_dev"]}


def compare_with_random_init(hf_dir: str, tasks_dir: str, threads: int | None, precision: str,
                             seeds: Sequence[int] | None = None) -> dict[str, Any]:
    """Fine-tune the exported model and the same architecture from random init on ``COMPARE["task"]``
    with the same settings and seeds; per seed the dev accuracies and McNemar's test."""
    t0 = time.time()
    seeds = list(seeds) if seeds is not None else [7 + i for i in range(COMPARE["seeds"])]
    rows = []
    for seed in seeds:
        p = _arm("pretrained", hf_dir, tasks_dir, seed, threads, precision)
        r = _arm("random_init", hf_dir, tasks_dir, seed, threads, precision)
        test = mcnemar_exact(p["right"], r["right"])
        rows.append({"seed": seed, "pretrained": p["accuracy"], "random_init": r["accuracy"], **test,
                     "n_dev": p["n_dev"]})
        log(f"      seed {seed}: pretrained {100 * p['accuracy']:.1f}%, random init {100 * r['accuracy']:.1f}% "
            f"(McNemar p = {test['p_value']:.2g})")
    return {"task": COMPARE["task"], "settings": dict(COMPARE), "seeds": rows, "n_dev": rows[0]["n_dev"],
            "pretrained_mean": statistics.mean(x["pretrained"] for x in rows),
            "random_init_mean": statistics.mean(x["random_init"] for x in rows), "wall_time_s": time.time() - t0}


def describe_comparison(c: dict[str, Any], alpha: float = 0.01) -> list[str]:
    """The comparison in words a newcomer reads correctly."""
    rows = c["seeds"]
    ahead = [x for x in rows if x["pretrained"] > x["random_init"] and x["p_value"] < alpha]
    behind = [x for x in rows if x["pretrained"] < x["random_init"] and x["p_value"] < alpha]
    diff = 100 * (c["pretrained_mean"] - c["random_init_mean"])
    s = c["settings"]
    lines = [f"{c['task']} dev accuracy after fine-tuning ({s['epochs_num']} epochs, batch {s['batch_size']}; "
             f"{len(rows)} seeds, {c['n_dev']:,} dev examples each):",
             f"  pretrained (this run)  {100 * c['pretrained_mean']:.1f}%  (" +
             ", ".join(f"{100 * x['pretrained']:.1f}" for x in rows) + ")",
             f"  random init            {100 * c['random_init_mean']:.1f}%  (" +
             ", ".join(f"{100 * x['random_init']:.1f}" for x in rows) + ")"]
    if len(ahead) == len(rows):
        lines.append(f"verdict: pretraining helps here: {diff:+.1f} points, ahead on every seed and each paired "
                     f"test significant (McNemar p < {alpha:g}).")
    elif len(behind) == len(rows):
        lines.append(f"verdict: the pretrained model is behind on every seed ({diff:+.1f} points, McNemar p < "
                     f"{alpha:g}) -- this pretraining hurt on this task.")
    else:
        lines.append(f"verdict: no consistent difference ({diff:+.1f} points; significant on {len(ahead)} of "
                     f"{len(rows)} seeds for, {len(behind)} against): this much pretraining is within the noise "
                     f"of fine-tuning here.")
    return lines


__all__ = ["COMPARE", "mcnemar_exact", "compare_with_random_init", "describe_comparison"]
