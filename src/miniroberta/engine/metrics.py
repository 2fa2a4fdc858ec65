"""Run output: one JSONL record schema (``{"event": ..., "step": ..., "time": ...}``), optional
TensorBoard scalars, and progress -- a tqdm bar on a terminal, plain report lines otherwise
(no carriage returns in redirected logs)."""
from __future__ import annotations

import sys
import time
from typing import Any

from tqdm import tqdm

from miniroberta.utils import JsonlWriter, log

TB_KEYS = ("loss", "accuracy", "lr", "real_tokens_per_s", "mfu", "eval_loss", "eval_accuracy", "dev_acc")


class RunLog:
    """Metrics file + TensorBoard + progress for rank 0; a silent no-op on other ranks."""

    def __init__(self, path: str | None, *, enabled: bool = True, name: str = "train", total: int = 0,
                 initial: int = 0, progress: bool = True, tensorboard: str | None = None,
                 verbose: bool = True) -> None:
        self.enabled, self.name, self.verbose = enabled, name, verbose
        self.jsonl = JsonlWriter(path if enabled else None)
        self.path = path
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415 -- optional (tensorboard)
            except ImportError:
                raise ValueError("--tensorboard needs the tensorboard package (pip install tensorboard)") from None
            self.tb = SummaryWriter(tensorboard)
        self.bar = None
        if enabled and progress and sys.stderr.isatty():
            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, file=sys.stderr,
                            desc=name, leave=False)

    def write(self, event: str, step: int, **fields: Any) -> dict[str, Any]:
        rec = {"event": event, "step": step, **fields, "time": time.time()}
        if self.enabled:
            self.jsonl.write(rec)
            if self.tb is not None:
                for k in TB_KEYS:
                    if isinstance(rec.get(k), (int, float)):
                        self.tb.add_scalar(f"{self.name}/{k}", rec[k], step)
        return rec

    def say(self, msg: str) -> None:
        if not (self.enabled and self.verbose):
            return
        if self.bar is not None:
            self.bar.write(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr)
        else:
            log(msg)

    def advance(self, n: int = 1, **postfix: Any) -> None:
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix(**postfix)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        self.jsonl.close()


__all__ = ["RunLog"]
