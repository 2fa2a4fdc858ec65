"""The training engine: one loop for pretraining, fine-tuning and distillation.

A *task* (``pretrain.task.MlmTask``, ``finetune.task.ClassifierTask``) says what a batch
is, how to compute its summed loss, what to evaluate and which weights file to write; the
:class:`Trainer` owns everything else -- precision (fp32, or bf16 with fp32 masters), the
AdamW groups and schedule, gradient accumulation, the loss weighting across micro-batches and
DDP ranks, clipping, running sums, NaN stop, report lines and JSONL metrics, atomic training
state with exact resume, and stopping on a signal, a step count or a time budget.

Loss weighting: each micro-batch's loss is a *sum* over its units (masked tokens, examples);
the step's gradient is that sum over all micro-batches and ranks divided by their total count,
so W processes x batch B equal one process with batch W*B, and accumulation of A micro-batches
equals one batch A times larger.

    trainer = Trainer(model, optim=OptimConfig(...), total_steps=N, device=dev, precision="bf16")
    result = trainer.fit(task, LoopOptions(report_steps=100), run_log, state_path="out.state.pt")
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Protocol, Sequence, TypeVar, cast

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch import nn

from miniroberta.engine.optim import OptimConfig, build_adamw, lr_factor, param_groups, set_lr
from miniroberta.engine.precision import Precision
from miniroberta.engine.metrics import RunLog
from miniroberta.engine.stopping import SignalCatcher, StopReason
from miniroberta.integrity import atomic_torch_save
from miniroberta.utils import format_duration, human_count

STATE_FORMAT = "miniroberta-train-state"
STATE_VERSION = 2


class TrainingError(RuntimeError):
    """Training cannot continue (divergence, bad state)."""


class DivergedError(TrainingError):
    """The loss became NaN or infinite (the message names the last good checkpoint and what to change)."""


class Batch(Protocol):
    @property
    def units(self) -> int:
        """Loss terms in this micro-batch (masked tokens, examples)."""

    @property
    def real_tokens(self) -> int: ...

    @property
    def padded_tokens(self) -> int: ...


BatchT = TypeVar("BatchT", bound=Batch)


class Task(Protocol[BatchT]):
    """Generic in its batch type: ``loss`` takes the batches that ``batches`` returns."""
    name: str

    def batches(self, step: int) -> Sequence[BatchT]:
        """The micro-batches of update ``step`` (0-based) on this rank: a function of the step."""

    def loss(self, model: nn.Module, batch: BatchT) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed loss over the batch's units, number of correct predictions)."""

    def after_step(self, trainer: "Trainer", log: RunLog) -> None:
        """Hook after every update (evaluation at epoch ends, at report steps ...)."""

    def report_fields(self, trainer: "Trainer", log: RunLog) -> dict[str, Any]:
        """Extra fields for a report record (e.g. held-out loss)."""

    def save(self, trainer: "Trainer", final: bool) -> str | None:
        """Write the weights of this point (rank 0); return the path, or None."""

    def state_dict(self) -> dict[str, Any]:
        """What the task needs to resume (best epoch so far ...); saved in the training state."""


@dataclass
class LoopOptions:
    """When to report, save and stop: never changes the trained weights."""
    report_steps: int = 100
    save_steps: int | None = None          # None: only at the end (and when stopping early)
    time_budget_s: float | None = None
    stop_after_steps: int | None = None    # behave as if SIGTERM arrived after this many updates
    flops_per_unit: float = 0.0            # training FLOPs per real token, for MFU
    peak_flops: float = 0.0                # measured matmul peak of one rank, for MFU
    debug_nan_at_step: int | None = None   # test hook: make the loss NaN at this update
    debug_step_sleep: float = 0.0


@dataclass
class Totals:
    """Sums over the steps of this session (all ranks): summed loss, correct predictions, non-finite
    losses, loss units (masked tokens, examples), real and padded tokens."""
    loss: float = 0.0
    correct: float = 0.0
    nonfinite: float = 0.0
    units: float = 0.0
    real_tokens: float = 0.0
    padded_tokens: float = 0.0

    def __sub__(self, other: "Totals") -> "Totals":
        return Totals(*(getattr(self, f) - getattr(other, f) for f in TOTAL_FIELDS))


TOTAL_FIELDS = tuple(f.name for f in fields(Totals))


@dataclass
class RunningSums:
    """Totals since the start of this session: loss/correct/non-finite on the device (no host sync
    per step), units/real/padded tokens on the host (known from the batches) -- read as :class:`Totals`."""
    device: torch.Tensor
    host: np.ndarray = field(default_factory=lambda: np.zeros(3))
    LOSS, CORRECT, NONFINITE = 0, 1, 2

    @classmethod
    def on(cls, dev: torch.device) -> "RunningSums":
        return cls(torch.zeros(3, device=dev, dtype=torch.float64))


@dataclass
class StepStats:
    """What one update consumed (host-side counts; the loss stays on the device until a report)."""
    step: int              # the update just done (1-based count of updates)
    units: int
    real_tokens: int
    padded_tokens: int
    lr: float


@dataclass
class FitResult:
    steps: int
    stopped: str | None
    last_loss: float | None
    last_accuracy: float | None
    tokens_seen: int
    last_checkpoint: str | None
    checkpoints: list[str]
    wall_time_s: float


class Trainer:
    def __init__(self, model: nn.Module, *, optim: OptimConfig, total_steps: int, device: torch.device,
                 precision: str = "fp32", forward: nn.Module | None = None, rank: int = 0,
                 world_size: int = 1) -> None:
        self.model, self.cfg, self.total_steps, self.device = model, optim, total_steps, device
        self.rank, self.world_size = rank, world_size
        self.distributed = world_size > 1
        self.precision = Precision(precision, model)
        self.optimizer = build_adamw(param_groups(self.precision.named_master(), optim.weight_decay), optim)
        fwd = forward if forward is not None else model
        self.ctrl_group = None
        if self.distributed:
            fwd = DDP(fwd, device_ids=[device.index] if device.type == "cuda" else None,
                      gradient_as_bucket_view=True)
            self.ctrl_group = dist.new_group(backend="gloo") if device.type == "cuda" else None
        self.forward = fwd
        self.step = 0
        self.tokens_seen = 0        # real tokens of previous sessions (restored on resume)
        self.tokens_at_save = 0     # all real tokens so far, as of the save in progress
        self.last_loss: float | None = None
        self.last_accuracy: float | None = None
        self.sums = RunningSums.on(device)
        self._reported = Totals()
        self._hook_s = 0.0          # seconds of this session spent in the task's hooks and saves, not training
        self._report_t = time.time()
        self.checkpoints: list[str] = []
        self.last_checkpoint: str | None = None

    # ------------------------------------------------------------------ one update
    def train_step(self, micro: Sequence[BatchT], task: Task[BatchT], nan_at: int | None = None) -> StepStats:
        """One optimizer update over the micro-batches ``micro`` (gradients accumulated, averaged per loss
        unit over all ranks)."""
        units = sum(b.units for b in micro)
        lr = self.lr
        scale: torch.Tensor | float
        if self.distributed:  # the global count of loss terms this update
            count = torch.tensor([float(units)], device=self.device)
            dist.all_reduce(count)
            scale = self.world_size / count.clamp(min=1.0)   # DDP averages gradients over ranks
        else:
            scale = 1.0 / max(1, units)
        set_lr(self.optimizer, lr, self.cfg, self.step + 1)
        for i, b in enumerate(micro):
            # DDP-wrapped when distributed (torch.compile's wrapper forwards the attribute)
            last = i == len(micro) - 1
            sync = cast(DDP, self.forward).no_sync() if self.distributed and not last else contextlib.nullcontext()
            with sync:
                loss_sum, correct = task.loss(self.forward, b)
                if nan_at is not None and self.step + 1 == nan_at:
                    loss_sum = loss_sum * float("nan")
                (loss_sum * scale).sum().backward()
            with torch.no_grad():
                sums = self.sums.device
                sums[RunningSums.LOSS] += loss_sum.detach().double()
                sums[RunningSums.CORRECT] += correct
                sums[RunningSums.NONFINITE] += (~torch.isfinite(loss_sum.detach())).double()
            self.sums.host += (b.units, b.real_tokens, b.padded_tokens)
        self.precision.grads_to_master()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for _, p in self.precision.named_master()], self.cfg.grad_clip,
                                           foreach=True)
        self.optimizer.step()
        self.precision.zero_grad()
        self.precision.master_to_model()
        self.step += 1
        return StepStats(step=self.step, units=units, real_tokens=sum(b.real_tokens for b in micro),
                         padded_tokens=sum(b.padded_tokens for b in micro), lr=lr)

    @property
    def lr(self) -> float:
        return self.cfg.learning_rate * lr_factor(self.step, self.total_steps, self.cfg.warmup)

    # ------------------------------------------------------------------ sums, reports
    def totals(self) -> Totals:
        """This session's sums over all ranks (a collective)."""
        t = torch.cat([self.sums.device, torch.from_numpy(self.sums.host).to(self.device)])
        if self.distributed:
            dist.all_reduce(t)
        return Totals(*(float(x) for x in t.cpu().tolist()))

    def check_finite(self, nonfinite: float, log: RunLog, advice: str) -> None:
        if nonfinite > 0:
            log.write("diverged", self.step)
            last = self.last_checkpoint or "(none written yet)"
            raise DivergedError(f"loss became NaN/inf by step {self.step}; stopping. The last good checkpoint is "
                                f"{last}. {advice}")

    def report(self, task: Task[Any], log: RunLog, opts: LoopOptions, t_start: float, session_start: int,
               advice: str) -> dict[str, Any]:
        tot = self.totals()
        self.check_finite(tot.nonfinite, log, advice)
        d = tot - self._reported
        now = time.time()
        dt = max(1e-9, now - self._report_t)
        self._reported, self._report_t = tot, now
        self.last_loss = d.loss / max(1.0, d.units)
        self.last_accuracy = d.correct / max(1.0, d.units)
        real_s, pad_s = d.real_tokens / dt, d.padded_tokens / dt
        mfu = opts.flops_per_unit * real_s / (opts.peak_flops * self.world_size) if opts.peak_flops else float("nan")
        el = now - t_start
        # training time per step (evaluations and saves left out) times the steps left, plus what the task says
        # its evaluations still to come will take (``eta_extra_s``)
        eta = (el - self._hook_s) / max(1, self.step - session_start) * (self.total_steps - self.step)
        fields = dict(loss=self.last_loss, accuracy=self.last_accuracy, lr=self.lr, real_tokens_per_s=real_s,
                      padded_tokens_per_s=pad_s, mfu=mfu, elapsed_s=el, eta_s=eta, units=int(d.units),
                      tokens_seen=self.tokens_seen + int(tot.real_tokens))
        t_hook = time.time()
        fields.update(task.report_fields(self, log))
        # a held-out evaluation is not training: the next interval's tokens/s starts after it
        self._report_t = time.time()
        self._hook_s += self._report_t - t_hook
        fields["eta_s"] = eta = eta + float(fields.get("eta_extra_s") or 0.0)
        line = ((f"step {self.step}/{self.total_steps} | loss {self.last_loss:.4f} | acc {self.last_accuracy:.3f} | "
                f"lr {self.lr:.2e} | real tok/s {human_count(real_s)} | padded tok/s {human_count(pad_s)} | ")
                + (f"MFU {100 * mfu:.1f}% | " if opts.peak_flops else "")
                + f"elapsed {format_duration(el)} | ETA {format_duration(eta)}")
        if "eval_loss" in fields:
            line += f" | eval loss {fields['eval_loss']:.4f} acc {fields['eval_accuracy']:.3f}"
        log.write("report", self.step, **fields)
        log.say(line)
        return fields

    # ------------------------------------------------------------------ stopping
    def stop_decision(self, signals: SignalCatcher, opts: LoopOptions, t_start: float, session_steps: int,
                      log: RunLog, advice: str) -> StopReason | None:
        want = 0.0
        if signals.signal is not None:
            want = 1.0
        elif opts.stop_after_steps is not None and session_steps >= opts.stop_after_steps:
            want = 2.0
        elif opts.time_budget_s is not None and time.time() - t_start >= opts.time_budget_s:
            want = 3.0
        bad = float(self.sums.device[RunningSums.NONFINITE].item()) if self.device.type == "cpu" else 0.0  # free on CPU
        if self.distributed:
            ctl = torch.tensor([want, bad], dtype=torch.float64)
            dist.all_reduce(ctl, op=dist.ReduceOp.MAX, group=self.ctrl_group)
            want, bad = float(ctl[0]), float(ctl[1])
        self.check_finite(bad, log, advice)
        return {0.0: None, 1.0: StopReason.SIGNAL, 2.0: StopReason.STOP_AFTER_STEPS,
                3.0: StopReason.TIME_BUDGET}[want]

    # ------------------------------------------------------------------ state
    def _rng_states(self) -> list[dict[str, Any]]:
        st = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            st["cuda"] = torch.cuda.get_rng_state(self.device)
        if not self.distributed:
            return [st]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, st, group=self.ctrl_group)
        return gathered

    def state_dict(self, tokens_seen: int) -> dict[str, Any]:
        return {"format": STATE_FORMAT, "version": STATE_VERSION, "step": self.step, "tokens_seen": tokens_seen,
                "last_loss": self.last_loss, "precision": self.precision.kind, "rng": self._rng_states(),
                "model": self.precision.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, st: dict[str, Any]) -> None:
        """Optimizer, step, counters and (same world size) this rank's RNG; the model weights
        are loaded by the caller before the Trainer is built (they are the fp32 masters)."""
        if st.get("precision", "fp32") != self.precision.kind:
            raise TrainingError(f"the training state was written with precision {st.get('precision', 'fp32')}; "
                                f"resume with --precision {st.get('precision', 'fp32')}")
        self.optimizer.load_state_dict(st["optimizer"])
        self.step = int(st["step"])
        self.tokens_seen = int(st["tokens_seen"])
        self.last_loss = st.get("last_loss")
        rng = st.get("rng", [])
        if len(rng) == self.world_size:
            torch.set_rng_state(rng[self.rank]["torch"])
            if self.device.type == "cuda" and "cuda" in rng[self.rank]:
                torch.cuda.set_rng_state(rng[self.rank]["cuda"], self.device)

    def save(self, task: Task[Any], log: RunLog, state_path: str | None, final: bool, advice: str) -> None:
        """Weights file (the task's) and the training state, rank 0; collective over ranks."""
        tot = self.totals()
        self.check_finite(tot.nonfinite, log, advice)
        seen = self.tokens_seen + int(tot.real_tokens)
        self.tokens_at_save = seen
        state = self.state_dict(seen)  # collective (RNG gather)
        if self.rank != 0:
            return
        path = task.save(self, final)
        if state_path:
            state.update(weights_path=path, task=task.state_dict())
            atomic_torch_save(state, state_path)   # with a SHA-256 manifest, checked on resume
        if path:
            if path not in self.checkpoints:
                self.checkpoints.append(path)
            self.last_checkpoint = path
        if path or state_path:
            log.write("checkpoint", self.step, path=path, state=state_path)
            log.say(f"saved {path or ''}{' and ' if path and state_path else ''}{state_path or ''}")

    # ------------------------------------------------------------------ the loop
    def fit(self, task: Task[BatchT], opts: LoopOptions, log: RunLog, state_path: str | None = None,
            advice: str = "Lower the learning rate or set a gradient clip.",
            before_stop: Callable[["Trainer", RunLog], None] | None = None) -> FitResult:
        """Train until ``total_steps`` or an early stop; report, save and stop as ``opts`` say.
        ``before_stop(trainer, log)`` runs before the checkpoint of a time-budget stop."""
        t_start, session_start = time.time(), self.step
        stopped: StopReason | None = None
        signals = SignalCatcher()
        with signals:
            while self.step < self.total_steps:
                self.train_step(task.batches(self.step), task, opts.debug_nan_at_step)
                log.advance(1)
                if opts.debug_step_sleep:
                    time.sleep(opts.debug_step_sleep)
                stop = self.stop_decision(signals, opts, t_start, self.step - session_start, log, advice)
                last = self.step == self.total_steps
                if self.step % opts.report_steps == 0 or last:
                    self.report(task, log, opts, t_start, session_start, advice)
                t_hook = time.time()
                task.after_step(self, log)
                self._hook_s += time.time() - t_hook
                if stop is not None and not last:
                    stopped = stop
                    if stop is StopReason.TIME_BUDGET and before_stop is not None:
                        before_stop(self, log)
                    log.say(f"stopping at step {self.step} ({stop.value}); writing a checkpoint")
                    self.save(task, log, state_path, final=False, advice=advice)
                    break
                if last or (opts.save_steps and self.step % opts.save_steps == 0):
                    t_hook = time.time()
                    self.save(task, log, state_path, final=last, advice=advice)
                    self._hook_s += time.time() - t_hook
        tot = self.totals()
        return FitResult(steps=self.step, stopped=stopped.value if stopped else None, last_loss=self.last_loss,
                         last_accuracy=self.last_accuracy, tokens_seen=self.tokens_seen + int(tot.real_tokens),
                         last_checkpoint=self.last_checkpoint, checkpoints=list(self.checkpoints),
                         wall_time_s=time.time() - t_start)


__all__ = ["Trainer", "Task", "Batch", "LoopOptions", "FitResult", "RunningSums", "Totals", "StepStats",
           "TrainingError", "DivergedError", "STATE_FORMAT"]
