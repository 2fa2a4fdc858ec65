"""The score table (``miniroberta report``) in the reference layout

    Model | Score | book_review | chnsenticorp | lcqmc | tnews | iflytek | ocnli

Scores are dev accuracy x 100 (best-epoch, best grid setting; ``metric="last"`` uses the
last-epoch accuracy of the setting chosen by it, as UER-py's grid script does). Score is the
mean of the six; with a task missing it is "–" in CSV/JSON ``score`` and shown in brackets in
Markdown as the partial mean. Inputs: grid directories (or their ``summary.json``) and
``miniroberta finetune`` output directories (or their ``result.json``), grouped per model.
Writes ``report.md``, ``report.csv``, ``report.json`` and, with several models,
``score_vs_size.png`` (parameters = encoder + pooler, from the model config in the results).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from miniroberta.finetune.grid import BASELINE_DIR, summarize
from miniroberta.modeling.config import preset
from miniroberta.optional import plots_available
from miniroberta.outputs import Claim, claim_output
from miniroberta.settings import add_options, from_args, option, validate
from miniroberta.utils import atomic_write, atomic_write_json, atomic_write_text

TASK_COLUMNS = ("book_review", "chnsenticorp", "lcqmc", "tnews", "iflytek", "ocnli")

# UER miniature dev scores, HF model card of uer/chinese_roberta_L-*_H-* (README commit b84a3cb),
# as listed in shared/data/SOURCES.md "Reference (not data)". Not data: a table to compare with.
REFERENCE_SCORES: dict[str, dict[str, Any]] = {
    "RoBERTa-Tiny (L2/H128)": dict(preset="L2_H128", score=72.3, book_review=83.4, chnsenticorp=91.4, lcqmc=81.8,
                                   tnews=62.0, iflytek=55.0, ocnli=60.3),
    "RoBERTa-Mini (L4/H256)": dict(preset="L4_H256", score=75.9, book_review=85.7, chnsenticorp=93.7, lcqmc=86.1,
                                   tnews=63.9, iflytek=58.3, ocnli=67.4),
    "RoBERTa-Small (L4/H512)": dict(preset="L4_H512", score=76.9, book_review=87.5, chnsenticorp=93.4, lcqmc=86.5,
                                    tnews=65.1, iflytek=59.4, ocnli=69.7),
    "RoBERTa-Medium (L8/H512)": dict(preset="L8_H512", score=78.0, book_review=88.7, chnsenticorp=94.8, lcqmc=88.1,
                                     tnews=65.6, iflytek=59.5, ocnli=71.2),
    "RoBERTa-Base (L12/H768)": dict(preset="L12_H768", score=79.7, book_review=90.1, chnsenticorp=95.2, lcqmc=89.2,
                                    tnews=67.0, iflytek=60.9, ocnli=75.5),
}
REFERENCE_SOURCE = ("UER-py miniatures, HF model card of uer/chinese_roberta_L-*_H-* (dev set, seq 128, "
                    "best of the epochs {3,5,8} x batch {32,64} x lr {3e-5,1e-4,3e-4} grid); trained on the full "
                    "iflytek train set")
DASH = "–"


def _reference_params(preset_name: str) -> int:
    return preset(preset_name).num_parameters(mlm_head=False, pooler=True)


# --------------------------------------------------------------------------------- loading
def _load_json(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _collect(path: str) -> list[tuple[str, dict[str, Any]]]:
    """(kind, data) entries for one input: ("grid", summary) or ("result", finetune result)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{path}: no such result file or directory")
    if p.is_file():
        d = _load_json(p)
        if d.get("kind") == "miniroberta-grid":
            return _with_baseline(d)
        if "best_dev_acc" in d and "task" in d:
            return [("result", d)]
        raise ValueError(f"{path}: neither a grid summary.json nor a finetune result.json")
    if (p / "summary.json").is_file():
        return _with_baseline(_load_json(p / "summary.json"))
    if (p / "cells").is_dir():
        out = [("grid", summarize(str(p)))]
        if (p / BASELINE_DIR / "cells").is_dir():
            out.append(("grid", summarize(str(p / BASELINE_DIR))))
        return out
    if (p / "result.json").is_file():
        return [("result", _load_json(p / "result.json"))]
    found = sorted(p.glob("**/summary.json")) + sorted(p.glob("**/result.json"))
    if not found:
        raise ValueError(f"{path}: holds no summary.json (grid) or result.json (finetune)")
    collected: list[tuple[str, dict[str, Any]]] = []
    for f in found:
        collected.extend(_collect(str(f)))
    return collected


def _with_baseline(summary: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """A grid summary and, if it was run with ``--baseline``, its no-pretraining arm."""
    out = [("grid", summary)]
    if isinstance(summary.get("baseline"), dict):
        out.append(("grid", summary["baseline"]))
    return out


def _model_key(model: dict[str, Any] | None) -> str:
    model = model or {}
    key = model.get("pretrained_model_path") or f"random-init {model.get('name', '?')}"
    t = model.get("teacher")
    if t:   # a distilled student is its own row: per teacher, temperature, alpha and transfer data
        d = dict(model.get("distill") or {})
        d["transfer_path"] = bool(d.get("transfer_path"))
        # per teacher architecture and settings: one student's distilled tasks form one row
        key += " <- " + json.dumps(dict(teacher=t.get("name"), **d), sort_keys=True)
    return key


def _default_name(model: dict[str, Any] | None) -> str:
    model = model or {}
    path = model.get("pretrained_model_path")
    base = Path(path).name if path else "random init"
    if path and base in ("model", "hf", "model.safetensors", "pytorch_model.bin"):
        base = Path(path).parent.name
    name = f"{model.get('name', '?')} · {base}"
    t = model.get("teacher")
    if t:
        d = model.get("distill") or {}
        name = (f"{model.get('name', '?')} ← {t.get('name', '?')} (PD"
                + (", +transfer" if d.get("transfer_path") else "") + f") · {base}")
    return name


def _keep_best(tasks: dict[str, Any], task: str, entry: dict[str, Any]) -> None:
    prev = tasks.get(task)
    if prev is None or entry["acc"] > prev["acc"]:
        tasks[task] = entry


def load_models(inputs: Sequence[str], model_names: Sequence[str] | None = None,
                metric: str = "best") -> list[dict[str, Any]]:
    """One entry per model: name, parameters, per-task scores (x100), std, settings, notes."""
    if metric not in ("best", "last"):
        raise ValueError(f"metric must be 'best' or 'last', got {metric!r}")
    models: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    for inp in inputs:
        for kind, d in _collect(inp):
            model = d.get("model") or {}
            key = _model_key(model)  # results of one model are merged; per task the best on dev wins
            if key not in models:
                models[key] = dict(model=model, tasks={}, sources=[])
                order.append(key)
            m = models[key]
            m["sources"].append(d.get("out_dir") or d.get("paths", {}).get("result") or inp)
            if kind == "grid":
                for t, s in d["tasks"].items():
                    sel = s["best"] if metric == "best" else s["best_by_last_epoch"]
                    acc = sel["best_dev_acc_mean"] if metric == "best" else sel["last_dev_acc_mean"]
                    std = sel["best_dev_acc_std"] if metric == "best" else sel["last_dev_acc_std"]
                    _keep_best(m["tasks"], t, dict(
                        acc=100 * acc, std=100 * std, n_seeds=sel["n_seeds"], setting=sel["setting"],
                        best_dev_acc=100 * sel["best_dev_acc_mean"], last_dev_acc=100 * sel["last_dev_acc_mean"],
                        macro_f1=100 * sel["macro_f1_mean"], note=s.get("note", ""),
                        subsampled=s.get("subsampled", False), n_train=s.get("n_train"), n_dev=s.get("n_dev"),
                        source=d.get("out_dir")))
            else:
                st = d.get("settings", {})
                setting = (f"e{st['epochs_num']}_b{st['batch_size']}_lr{st['learning_rate']:g}"
                           if st.get("learning_rate") else "")
                _keep_best(m["tasks"], d["task"], dict(
                    acc=100 * (d["best_dev_acc"] if metric == "best" else d["last_dev_acc"]), std=0.0, n_seeds=1,
                    setting=setting, best_dev_acc=100 * d["best_dev_acc"], last_dev_acc=100 * d["last_dev_acc"],
                    macro_f1=100 * d["macro_f1"], note=d.get("note", ""), subsampled=d.get("subsampled", False),
                    n_train=d.get("n_train"), n_dev=d.get("n_dev"), source=d.get("paths", {}).get("result")))
    if model_names is not None and len(model_names) != len(order):
        raise ValueError(f"--names gives {len(model_names)} names but the inputs hold {len(order)} models "
                         f"({', '.join(_default_name(models[k]['model']) for k in order)})")
    out = []
    for i, key in enumerate(order):
        m = models[key]
        scores = {t: m["tasks"][t]["acc"] for t in TASK_COLUMNS if t in m["tasks"]}
        complete = len(scores) == len(TASK_COLUMNS)
        mean = sum(scores.values()) / len(scores) if scores else None
        out.append(dict(name=model_names[i] if model_names else _default_name(m["model"]), reference=False,
                        kind="distilled" if (m["model"] or {}).get("teacher") else
                        "pretrained" if (m["model"] or {}).get("pretrained_model_path") else "no-pretraining",
                        num_parameters=(m["model"] or {}).get("num_parameters"),
                        model_name=(m["model"] or {}).get("name"),
                        pretrained_model_path=(m["model"] or {}).get("pretrained_model_path"),
                        score=mean if complete else None, score_partial=None if complete else mean,
                        n_tasks=len(scores), scores=scores, details=m["tasks"], sources=m["sources"],
                        extra_tasks=sorted(set(m["tasks"]) - set(TASK_COLUMNS))))
    return with_deltas(out)


def with_deltas(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each pretrained model followed by the no-pretraining row of the same architecture (if any)
    and a Δ row: pretrained minus no pretraining, per task and for the mean over the tasks both have."""
    base = {r["model_name"]: r for r in rows if r["kind"] == "no-pretraining"}
    used: set[int] = set()
    out: list[dict[str, Any]] = []
    for r in rows:
        if r["kind"] != "pretrained":
            continue
        out.append(r)
        b = base.get(r["model_name"])
        if b is None:
            continue
        used.add(id(b))
        out.append(b)
        common = [t for t in TASK_COLUMNS if t in r["scores"] and t in b["scores"]]
        delta = {t: r["scores"][t] - b["scores"][t] for t in common}
        mean = sum(delta.values()) / len(delta) if delta else None
        full = len(common) == len(TASK_COLUMNS)
        margins = {t: m for t in common
                   if (m := noise_margin(r["scores"][t], b["scores"][t], r["details"].get(t, {}).get("n_dev")))}
        out.append(dict(name=f"Δ {r['name']} − no pretraining", reference=False, kind="delta",
                        model_name=r["model_name"], num_parameters=None, pretrained_model_path=None,
                        score=mean if full else None, score_partial=None if full else mean, n_tasks=len(delta),
                        scores=delta, details={}, sources=[], extra_tasks=[], margins=margins,
                        tasks_better=sum(1 for v in delta.values() if v > 0),
                        tasks_within_noise=sorted(t for t, v in delta.items() if t in margins and abs(v) < margins[t])))
    out += [r for r in rows if r["kind"] == "no-pretraining" and id(r) not in used]
    out += [r for r in rows if r["kind"] == "distilled"]
    return out


def noise_margin(acc_a: float, acc_b: float, n_dev: int | None) -> float | None:
    """The 95 % margin (points) of the difference between two accuracies (×100) scored on ``n_dev`` dev
    examples: 1.96 × the standard error of a difference of two binomial proportions. It treats the two
    models' errors as independent, which over-states the noise of two models scored on the same examples
    (a paired test needs per-example predictions): a difference beyond it is a measured one, a difference
    inside it may still be real. Seed-to-seed variation of fine-tuning comes on top."""
    if not n_dev or n_dev <= 0:
        return None
    pa, pb = acc_a / 100.0, acc_b / 100.0
    return 100 * 1.96 * math.sqrt(max(pa * (1 - pa), 0.0) / n_dev + max(pb * (1 - pb), 0.0) / n_dev)


def reference_rows() -> list[dict[str, Any]]:
    rows = []
    for name, r in REFERENCE_SCORES.items():
        scores = {t: r[t] for t in TASK_COLUMNS}
        rows.append(dict(name=f"UER {name} [reference]", reference=True, kind="reference", num_parameters=_reference_params(r["preset"]),
                         model_name=r["preset"], score=r["score"], score_partial=None, n_tasks=6, scores=scores,
                         details={}, sources=[REFERENCE_SOURCE]))
    return rows


# --------------------------------------------------------------------------------- rendering
def _fmt(x: float | None, signed: bool = False) -> str:
    return DASH if x is None else (f"{x:+.1f}" if signed else f"{x:.1f}")


def render_markdown(rows: list[dict[str, Any]], metric: str = "best") -> str:
    head = "| Model | Score | " + " | ".join(TASK_COLUMNS) + " |"
    lines = [head, "|" + "---|" * (2 + len(TASK_COLUMNS))]
    notes: list[str] = []
    partial = subsampled = multi_seed = within_noise = False
    iflytek_note = ""
    for r in rows:
        signed = r.get("kind") == "delta"
        if r["score"] is not None:
            score = _fmt(r["score"], signed)
        elif r["score_partial"] is not None:
            score = f"({_fmt(r['score_partial'], signed)})"
            partial = True
        else:
            score = DASH
        cells = []
        for t in TASK_COLUMNS:
            v = r["scores"].get(t)
            d = r["details"].get(t, {})
            c = _fmt(v, signed)
            if v is not None and d.get("n_seeds", 1) > 1:
                c += f" ± {d['std']:.1f}"
                multi_seed = True
            if d.get("subsampled"):
                c += "†"
                subsampled = True
            if signed and v is not None and t in r.get("margins", {}) and abs(v) < r["margins"][t]:
                c += "°"
                within_noise = True
            if t == "iflytek" and v is not None and d.get("note"):
                c += "‡"
                iflytek_note = d["note"]
            cells.append(c)
        name = f"*{r['name']}*" if signed else r["name"]
        lines.append(f"| {name} | {score} | " + " | ".join(cells) + " |")
    notes.append(f"Dev accuracy × 100, {'best epoch' if metric == 'best' else 'last epoch'} of the best grid setting "
                 f"(selected on dev{' by last-epoch accuracy' if metric == 'last' else ''}); Score = mean of the six tasks.")
    if partial:
        notes.append("(…) = partial: mean over the tasks present only, not comparable with a six-task Score; "
                     f"{DASH} = task not run.")
    if multi_seed:
        notes.append("a ± b = mean ± standard deviation over seeds.")
    if any(r.get("kind") == "delta" for r in rows):
        notes.append("no pretraining = the same architecture from random initialisation, fine-tuned with the same grid, "
                     "data, budget and seeds; Δ = pretrained minus no pretraining (points of accuracy).")
    if within_noise:
        notes.append("° = inside the 95 % margin of the dev set's sampling error (1.96 × the standard error of a "
                     "difference of two accuracies on n dev examples, errors taken as independent: a conservative "
                     "test); not a measured difference either way. report.json gives every margin.")
    if subsampled:
        notes.append("† trained on a deterministic subsample of the train set (a compute budget: "
                     "`max_train_tokens`/`max_train_examples`) or scored on a dev subsample; see report.json for "
                     "the sizes. Comparable within this table, not with full-data scores.")
    if iflytek_note:
        notes.append(f"‡ {iflytek_note}.")
    if any(r["reference"] for r in rows):
        notes.append(f"[reference] rows: {REFERENCE_SOURCE}.")
    return "\n".join(lines) + "\n\n" + "\n".join(f"* {n}" for n in notes) + "\n"


def render_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["Model", "Score", *TASK_COLUMNS, "score_partial", "n_tasks", "num_parameters", "reference", "kind"])
    for r in rows:
        w.writerow([r["name"], "" if r["score"] is None else f"{r['score']:.2f}",
                    *["" if r["scores"].get(t) is None else f"{r['scores'][t]:.2f}" for t in TASK_COLUMNS],
                    "" if r["score_partial"] is None else f"{r['score_partial']:.2f}", r["n_tasks"],
                    r["num_parameters"] or "", int(r["reference"]), r.get("kind", "reference")])
    return buf.getvalue()


STYLES = {"pretrained": ("o", "-", "tab:blue", "pretrained (ours)"),
          "no-pretraining": ("X", ":", "tab:orange", "no pretraining (same grid)"),
          "distilled": ("^", "", "tab:green", "distilled (PD)"),
          "reference": ("s", "--", "gray", "UER reference")}


def _kind(r: dict[str, Any]) -> str:
    return r.get("kind", "reference" if r["reference"] else "pretrained")


def label_offsets(points: list[tuple[float, float]]) -> list[tuple[float, float, str]]:
    """(dx, dy in points, vertical alignment) of each point's label: points of one size (one x) are labelled
    from the highest down -- the highest above its marker, the lowest below, any between to the right -- so
    that a pretrained model, its no-pretraining arm and the reference of the same size never share a label
    position."""
    out: list[tuple[float, float, str]] = [(4.0, 4.0, "bottom")] * len(points)
    by_x: dict[float, list[int]] = {}
    for i, (x, _) in enumerate(points):
        by_x.setdefault(round(x, 6), []).append(i)
    for idx in by_x.values():
        if len(idx) < 2:
            continue
        idx = sorted(idx, key=lambda i: -points[i][1])
        for rank, i in enumerate(idx):
            out[i] = ((4.0, 5.0, "bottom") if rank == 0 else (4.0, -5.0, "top") if rank == len(idx) - 1
                      else (7.0, 0.0, "center"))
    return out


def draw_score_vs_size(rows: list[dict[str, Any]]) -> Any:
    """The figure of ``plot_score_vs_size`` (None when fewer than two full scores): only six-task Scores
    are drawn -- a partial mean is not comparable on this axis; the legend says how many were left out."""
    import matplotlib  # noqa: PLC0415 -- optional (matplotlib): plots only
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 -- optional (matplotlib): plots only
    sized = [r for r in rows if r.get("kind") != "delta" and r.get("num_parameters")]
    pts = [r for r in sized if r["score"] is not None]
    partial = [r for r in sized if r["score"] is None and r["score_partial"] is not None]
    if len(pts) < 2:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    drawn = []
    for kind, (marker, line, color, label) in STYLES.items():
        sel = sorted((r for r in pts if _kind(r) == kind), key=lambda r: r["num_parameters"])
        if not sel:
            continue
        xs = [r["num_parameters"] / 1e6 for r in sel]
        ys = [r["score"] for r in sel]
        if line:
            ax.plot(xs, ys, line, color=color, alpha=0.6)
        for i, (r, x, y) in enumerate(zip(sel, xs, ys)):
            sub = any(d.get("subsampled") for d in r.get("details", {}).values())
            ax.scatter([x], [y], marker=marker, s=46, color=color, facecolors="none" if sub else color,
                       label=label if i == 0 else None, zorder=3)
            drawn.append(((r["model_name"] or r["name"]) + ("†" if sub else ""), x, y))
    for (text, x, y), (dx, dy, va) in zip(drawn, label_offsets([(x, y) for _, x, y in drawn])):
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=7, va=va,
                    annotation_clip=False)
    if partial:
        ax.plot([], [], " ", label=f"not drawn: {len(partial)} partial score(s) (fewer than six tasks; "
                                   f"see report.md)")
    ax.set_xscale("log")
    ax.margins(x=0.12, y=0.1)          # room for the labels of the outermost points
    ax.set_xlabel("parameters (millions, encoder + pooler)")
    ax.set_ylabel("Score (mean dev accuracy of six tasks)")
    ax.set_title("Score vs model size (hollow: † subsampled train set)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def plot_score_vs_size(rows: list[dict[str, Any]], path: str) -> str | None:
    """Score against parameters: our pretrained models (blue circles), their no-pretraining arm
    (orange crosses, dotted), distilled students (green), the UER reference (grey squares). A hollow
    marker: a task trained on a subsample (†). Partial means (fewer than six tasks) are not drawn."""
    if not plots_available("report", "score_vs_size.png"):
        return None
    fig = draw_score_vs_size(rows)
    if fig is None:
        return None
    import matplotlib.pyplot as plt  # noqa: PLC0415 -- optional (matplotlib): plots only
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", bbox_inches="tight")
    plt.close(fig)
    return path


def build_report(result_paths_or_dirs: Sequence[str] | str, out_dir: str | None = None, reference: bool = True,
                 model_names: Sequence[str] | None = None, metric: str = "best") -> dict[str, Any]:
    """Build the table; with ``out_dir`` write report.md/.csv/.json (+ score_vs_size.png)."""
    if isinstance(result_paths_or_dirs, (str, os.PathLike)):
        result_paths_or_dirs = [os.fspath(result_paths_or_dirs)]
    ours = load_models(list(result_paths_or_dirs), model_names, metric)
    rows = ours + (reference_rows() if reference else [])
    md = render_markdown(rows, metric)
    csv_text = render_csv(rows)
    report: dict[str, Any] = dict(columns=["Model", "Score", *TASK_COLUMNS], metric=metric, rows=rows,
                                  markdown=md, csv=csv_text, paths={})
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        atomic_write_text(os.path.join(out_dir, "report.md"), md)
        atomic_write_text(os.path.join(out_dir, "report.csv"), csv_text)
        report["paths"] = dict(md=os.path.join(out_dir, "report.md"), csv=os.path.join(out_dir, "report.csv"),
                               json=os.path.join(out_dir, "report.json"))
        png = plot_score_vs_size(rows, os.path.join(out_dir, "score_vs_size.png")) if len(ours) + (
            len(REFERENCE_SCORES) if reference else 0) >= 2 else None
        if png:
            report["paths"]["png"] = png
        atomic_write_json(os.path.join(out_dir, "report.json"),
                          {k: v for k, v in report.items() if k not in ("markdown", "csv")})
    return report


# --------------------------------------------------------------------------------- CLI
REPORT_FILES = ("report.md", "report.csv", "report.json", "score_vs_size.png")


@dataclass(kw_only=True)
class ReportOptions:
    """The options of ``miniroberta report`` (besides the positional result paths)."""
    reference: bool = option(False, "add the UER reference rows", effect="result")
    out: str | None = option(None, "write report.md, report.csv, report.json (+ score_vs_size.png) into this "
                             "folder; an earlier report there is refused unless --overwrite", effect="result",
                             default_text="print only")
    format: str = option("md", "what to print", effect="speed", choices=("md", "csv", "json"))
    names: list[str] | None = option(None, "display names, one per model in input order", effect="result",
                                     default_text="from the results")
    metric: str = option("best", "best-epoch or last-epoch dev accuracy (the UER grid script's)", effect="result",
                         choices=("best", "last"))
    overwrite: bool = option(False, "move an earlier report in --out aside (NAME.old-<time>) and write a new one",
                             effect="speed")


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", nargs="+", help="grid directories / summary.json, finetune output dirs / result.json")
    add_options(p, ReportOptions)


def claim_report(out_dir: str, overwrite: bool = False) -> Claim:
    """Claim ``out_dir``'s report files for this run: another report writing there fails at once, an earlier
    report (any of ``REPORT_FILES``) is refused unless ``overwrite`` (it is then moved aside). Other files in
    the folder are not touched."""
    files = [os.path.join(out_dir, n) for n in REPORT_FILES]
    return claim_output(files[0], overwrite=overwrite, related=files[1:], can_resume=False, command="report",
                        what="an earlier report")


def run(args: argparse.Namespace) -> int:
    validate(from_args(ReportOptions, args), "report options")
    if args.out:
        plots_available("report", "score_vs_size.png")      # said at the start, not after the work
    with claim_report(args.out, args.overwrite) if args.out else contextlib.nullcontext():
        rep = build_report(args.results, args.out, reference=args.reference, model_names=args.names,
                           metric=args.metric)
    if args.format == "md":
        print(rep["markdown"], end="")
    elif args.format == "csv":
        print(rep["csv"], end="")
    else:
        print(json.dumps({k: v for k, v in rep.items() if k not in ("markdown", "csv")}, indent=2, ensure_ascii=False))
    return 0


__all__ = ["build_report", "load_models", "reference_rows", "render_markdown", "render_csv", "plot_score_vs_size",
           "draw_score_vs_size", "label_offsets", "claim_report", "ReportOptions", "REFERENCE_SCORES", "TASK_COLUMNS",
           "REPORT_FILES", "configure", "run"]
