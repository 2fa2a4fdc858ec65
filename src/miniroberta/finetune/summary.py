"""The grid's cells on disk and their summary: what ``miniroberta grid`` writes and ``miniroberta report`` reads.

    OUT/cells/<task>/e5_b32_lr0.0001_s7.json   one finished cell
    OUT/summary.json                           per task: every setting (mean +- std over seeds), the best one
    OUT/no-pretraining/                        the same grid from random init (``BASELINE_DIR``)

The best setting per task is chosen on dev by the mean **best-epoch** accuracy; the mean last-epoch
accuracy (what UER's grid script selects by) is kept beside it, and the setting that last-epoch
selection would pick is recorded as ``best_by_last_epoch``. Below the ``grid`` and ``report`` entry points.
"""
from __future__ import annotations

import json
import math
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

BASELINE_DIR = "no-pretraining"   # OUT/no-pretraining: the same grid from random init (--baseline)


@dataclass(frozen=True)
class Cell:
    task: str
    epochs: int
    batch: int
    lr: float
    seed: int

    @property
    def setting(self) -> str:
        return f"e{self.epochs}_b{self.batch}_lr{self.lr:g}"

    @property
    def name(self) -> str:
        return f"{self.setting}_s{self.seed}"


def cell_path(out_dir: str, cell: Cell) -> str:
    return os.path.join(out_dir, "cells", cell.task, cell.name + ".json")


def _mean_std(xs: list[float]) -> tuple[float, float]:
    return (statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0)


def _finished_cells(out_dir: str, tasks: Sequence[str] | None, lists: tuple | None) -> Iterable[dict[str, Any]]:
    root = Path(out_dir) / "cells"
    for f in sorted(root.glob("*/*.json")) if root.is_dir() else []:
        if f.name.startswith("."):
            continue                              # a running cell's lock owner record
        with open(f, encoding="utf-8") as fh:
            c = json.load(fh)
        if tasks is not None and c["task"] not in tasks:
            continue
        if lists is not None:
            epochs_list, batch_list, lr_list, seeds = lists
            if (c["epochs"] not in epochs_list or c["batch"] not in batch_list
                    or not any(math.isclose(c["lr"], x) for x in lr_list) or c["seed"] not in seeds):
                continue
        yield c


def _setting_row(name: str, cs: list[dict[str, Any]]) -> dict[str, Any]:
    cs.sort(key=lambda c: c["seed"])
    bm, bs = _mean_std([c["best_dev_acc"] for c in cs])
    lm, ls = _mean_std([c["last_dev_acc"] for c in cs])
    fm, fs = _mean_std([c["macro_f1"] for c in cs])
    return dict(setting=name, epochs=cs[0]["epochs"], batch=cs[0]["batch"], lr=cs[0]["lr"],
                seeds=[c["seed"] for c in cs], n_seeds=len(cs), best_dev_acc_mean=bm, best_dev_acc_std=bs,
                last_dev_acc_mean=lm, last_dev_acc_std=ls, macro_f1_mean=fm, macro_f1_std=fs,
                best_epochs=[c["best_epoch"] for c in cs],
                n_at_majority_rate=sum(bool((c.get("chance") or {}).get("at_majority_rate")) for c in cs),
                per_seed=[dict(seed=c["seed"], best_dev_acc=c["best_dev_acc"], last_dev_acc=c["last_dev_acc"],
                               macro_f1=c["macro_f1"], best_epoch=c["best_epoch"]) for c in cs])


def summarize(out_dir: str, tasks: Sequence[str] | None = None, epochs_list: Sequence[int] | None = None,
              batch_list: Sequence[int] | None = None, lr_list: Sequence[float] | None = None,
              seeds: Sequence[int] | None = None) -> dict[str, Any]:
    """Aggregate the finished cells under ``out_dir`` (restricted to the given lists, if any)."""
    by_task: dict[str, dict[str, list[dict[str, Any]]]] = {}
    model: dict[str, Any] | None = None
    fingerprint = None
    failed: list[dict[str, Any]] = []
    lists = (epochs_list, batch_list, lr_list, seeds) if epochs_list is not None else None
    for c in _finished_cells(out_dir, tasks, lists):
        if c.get("failed"):
            failed.append(dict(task=c["task"], setting=c["setting"], seed=c["seed"], reason=c["failed"]))
            continue
        by_task.setdefault(c["task"], {}).setdefault(c["setting"], []).append(c)
        model = model or c.get("model")
        fingerprint = fingerprint or c.get("fingerprint")
    out_tasks: dict[str, Any] = {}
    for t, settings in by_task.items():
        rows = [_setting_row(name, cs) for name, cs in settings.items()]
        rows.sort(key=lambda r: (r["epochs"], r["batch"], r["lr"]))
        best = max(rows, key=lambda r: (r["best_dev_acc_mean"], r["last_dev_acc_mean"]))
        best_last = max(rows, key=lambda r: (r["last_dev_acc_mean"], r["best_dev_acc_mean"]))
        any_c = next(iter(settings.values()))[0]
        out_tasks[t] = dict(best=best, best_by_last_epoch=best_last, settings=rows, note=any_c.get("note", ""),
                            n_train=any_c.get("n_train"), n_dev=any_c.get("n_dev"),
                            n_train_file=any_c.get("n_train_file"), n_dev_file=any_c.get("n_dev_file"),
                            subsampled=bool(any_c.get("subsampled")), labels=any_c.get("labels"),
                            seq_length=any_c.get("seq_length"))
    return dict(kind="miniroberta-grid", out_dir=os.path.abspath(out_dir), model=model, fingerprint=fingerprint,
                tasks=out_tasks, failed_cells=failed, selection="best-epoch dev accuracy, mean over seeds")


__all__ = ["BASELINE_DIR", "Cell", "cell_path", "summarize"]
