"""Pretraining curves of a study: the training MLM loss and the held-out loss per stage, read from the
stages' metrics JSONL, and ``pretrain_loss.png``."""
from __future__ import annotations

import json
import os

from miniroberta.study.recipe import STAGES
from miniroberta.study.steps import StepError
from miniroberta.utils import atomic_write

MIN_LOSS_SPAN = 1.0     # y-axis span of the loss panels at least this (nats): step-to-step noise stays small


def _records(path: str):
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill


def read_eval_curve(path: str) -> tuple[list[int], list[float]]:
    """Held-out loss records (``eval_loss``) of a metrics file, last value per step."""
    last: dict[int, float] = {}
    for r in _records(path):
        if isinstance(r.get("eval_loss"), (int, float)) and isinstance(r.get("step"), int):
            last[r["step"]] = float(r["eval_loss"])
    ks = sorted(last)
    return ks, [last[k] for k in ks]


def read_loss_curve(path: str) -> tuple[list[int], list[float]]:
    """Training loss per reported step; a resumed run re-reports steps it had reported before it was
    killed: the last value per step is kept."""
    last: dict[int, float] = {}
    for r in _records(path):
        loss = next((r[k] for k in ("loss", "mlm_loss", "train_loss") if isinstance(r.get(k), (int, float))), None)
        step = r.get("step")
        if loss is None or not isinstance(step, int) or r.get("event", r.get("kind", "train")) not in ("train", "report"):
            continue
        last[step] = float(loss)
    ks = sorted(last)
    return ks, [last[k] for k in ks]


def loss_ylim(values: list[float], min_span: float = MIN_LOSS_SPAN) -> tuple[float, float]:
    """One y-range for every loss panel: the values' range, at least ``min_span`` wide (centred on the
    values), 5 % margin. Shared by the stages, so a stage whose loss only wobbles is drawn flat rather than
    autoscaled into swings."""
    finite = [v for v in values if v == v and abs(v) != float("inf")]
    if not finite:
        return 0.0, 1.0
    lo, hi = min(finite), max(finite)
    if hi - lo < min_span:
        mid = (lo + hi) / 2
        lo, hi = mid - min_span / 2, mid + min_span / 2
    pad = 0.05 * (hi - lo)
    return lo - pad, hi + pad


def plot_loss_curves(metrics: dict[str, dict[str, str]], out_png: str) -> str:
    """One panel per stage that ran, one colour per model: the training MLM loss (solid) and the
    held-out loss with fixed all-[MASK] masks (dashed, dots), against step; one y-range for all panels."""
    import matplotlib  # noqa: PLC0415 -- optional (matplotlib): plots only
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 -- optional (matplotlib): plots only

    stages = [s for s in STAGES if any(s in p for p in metrics.values())]
    fig, axes = plt.subplots(1, len(stages), figsize=(5.5 * len(stages), 4), squeeze=False)
    drawn, values = 0, []
    for ax, stage in zip(axes[0], stages):
        for i, (m, paths) in enumerate(metrics.items()):
            if stage not in paths:
                continue
            color = f"C{i % 10}"
            x, y = read_loss_curve(paths[stage])
            if x:
                ax.plot(x, y, label=f"{m} train", color=color, marker="." if len(x) < 30 else None)
                drawn += 1
                values += y
            ex, ey = read_eval_curve(paths[stage])
            if ex:
                ax.plot(ex, ey, "--", marker="o", ms=3, color=color, label=f"{m} held-out")
                values += ey
        ax.set_title(f"{stage}: MLM loss")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if not drawn:
        plt.close(fig)
        raise StepError(f"no loss records found in {metrics}; cannot draw the loss curves")
    lim = loss_ylim(values)
    for ax in axes[0]:
        ax.set_ylim(*lim)
    fig.tight_layout()
    with atomic_write(out_png, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return out_png


__all__ = ["read_eval_curve", "read_loss_curve", "plot_loss_curves", "loss_ylim", "MIN_LOSS_SPAN"]
