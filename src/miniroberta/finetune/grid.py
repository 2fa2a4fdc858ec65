"""The reference fine-tuning grid (``miniroberta grid``), resumable. An entry point only: the command line
and the orchestration of fine-tuning runs (``finetune.run``); no module below the entry points imports it
(the cells' layout and the summary that ``report`` reads are ``finetune.summary``).

epochs {3,5,8} x batch {32,64} x lr {3e-5,1e-4,3e-4} (UER-py ``run_classifier_grid.py``
defaults and the model card's grid) for every task, optionally several seeds. A grid from random
init (``--config_path`` only, or the ``--baseline`` arm) uses the learning rates measured for random
init instead (``finetune.config``), unless ``--learning_rate_list`` is given. Layout::

    OUT/grid.json                         what this grid fine-tunes (model fingerprint, seq_length, subsample)
    OUT/cells/<task>/e5_b32_lr0.0001_s7.json   one finished cell (atomic), skipped on re-runs
    OUT/cells/<task>/e5_b32_lr0.0001_s7.run/   a cell in progress, or stopped: its resumable training state
    OUT/summary.json                      per task: every setting (mean +- std over seeds), the best one
    OUT/no-pretraining/                   the same grid from random init (--baseline)

The best setting per task is chosen on dev by the mean **best-epoch** accuracy; the mean
last-epoch accuracy (what UER's grid script selects by) is kept beside it, and the setting
that last-epoch selection would pick is recorded as ``best_by_last_epoch``.

**Stopping.** SIGTERM or Ctrl-C ends the grid cleanly: a running cell finishes its step, writes its
training state into its ``.run`` folder and the grid exits saying so; the same command continues (finished
cells are skipped, a stopped cell resumes exactly). A cell whose loss diverges (the engine's
``DivergedError``) is a finished, failed cell, left out of the selection.

**Parallel cells** (``--jobs N``): N spawned worker processes, worker i pinned to the i-th of N disjoint
slices of this process's cores (``engine.threads.pin``) with as many torch threads as its slice has cores --
never more threads than cores; with GPUs each worker owns one device. The workers die with the grid: each
asks the kernel for SIGTERM when its parent dies (Linux ``PR_SET_PDEATHSIG``, so even ``kill -9`` of the
grid stops them), the grid forwards SIGTERM to them (each writes its cell's state and exits), and the
grid terminates any worker still alive when it leaves.
"""
from __future__ import annotations

import argparse
import ctypes
import dataclasses
import json
import multiprocessing as mp
import os
import shutil
import signal
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable

import torch

from miniroberta.data.tasks import cached_encode, default_data_dir, parse_tasks, resolve_task
from miniroberta.engine.stopping import SignalCatcher
from miniroberta.engine.threads import available_cores, configure_threads, pin
from miniroberta.engine.trainer import DivergedError
from miniroberta.finetune.config import (PRETRAINED_GRID_LRS, TRAINING, FinetuneConfig, FinetuneError, GridConfig,
                                        short_float)
from miniroberta.finetune.data import load_task_data, reader_key
from miniroberta.finetune.run import STATE_NAME, add_amp_alias, run_finetune
from miniroberta.finetune.summary import BASELINE_DIR, Cell, cell_path, summarize
from miniroberta.interop.checkpoint import load_weights, model_fingerprint
from miniroberta.data.paths import resolve_vocab
from miniroberta.modeling.tokenizer import BertTokenizer
from miniroberta.outputs import claim_output, lock_path, owner_path
from miniroberta.settings import add_options, from_args
from miniroberta.utils import atomic_write_json, format_duration, log, sha256_bytes, sha256_file

DEFAULT_EPOCHS = (3, 5, 8)
DEFAULT_BATCHES = (32, 64)
DEFAULT_LRS = PRETRAINED_GRID_LRS
_CELL_KEYS = ("best_epoch", "best_dev_acc", "last_dev_acc", "macro_f1", "best_dev_macro_f1", "last_dev_macro_f1",
              "n_train", "n_dev", "n_train_file", "n_dev_file", "note", "subsampled", "labels", "chance",
              "train_time_s", "wall_time_s", "device", "threads", "steps", "train_dropped", "dev_dropped",
              "train_skipped", "dev_skipped", "max_train_examples", "max_train_tokens", "max_dev_examples",
              "decisions", "thread_policy", "precision")


def cell_run_dir(out_dir: str, cell: Cell) -> str:
    """The running (or stopped) cell's fine-tuning output: its resumable training state."""
    return os.path.join(out_dir, "cells", cell.task, cell.name + ".run")


def remove_run_dir(run_dir: str) -> None:
    shutil.rmtree(run_dir, ignore_errors=True)
    for p in (lock_path(run_dir), owner_path(run_dir)):
        if os.path.exists(p):
            os.unlink(p)


@dataclass(frozen=True)
class Arm:
    """One grid: the pretrained model's, or its random-init twin's (``--baseline``)."""
    out_dir: str
    pretrained_model_path: str | None
    config_path: str | None
    vocab_path: str | None
    lrs: tuple[float, ...]
    lr_reason: str


@dataclass
class CellJob:
    """What a worker needs to run one cell (picklable)."""
    cell: Cell
    config: FinetuneConfig
    path: str
    run_dir: str
    fingerprint: dict[str, Any]


# --------------------------------------------------------------------------------- one cell
_WORKER: dict[str, Any] = {}      # this process's slot, device, threads, parent pid and stop flag


def _finetune_cell(cfg: FinetuneConfig, run_dir: str) -> dict[str, Any]:
    """Run (or resume) a cell; a state that cannot be resumed is said and the cell starts over."""
    resume = os.path.isfile(os.path.join(run_dir, STATE_NAME))
    if not resume:
        remove_run_dir(run_dir)                  # killed before its first state: nothing to keep
        return run_finetune(dataclasses.replace(cfg, resume=False))
    try:
        return run_finetune(dataclasses.replace(cfg, resume=True))
    except FinetuneError as e:
        log(f"warning: cannot resume the cell state in {run_dir} ({e}); starting the cell over")
        remove_run_dir(run_dir)
        return run_finetune(dataclasses.replace(cfg, resume=False))


def _run_cell(job: CellJob) -> dict[str, Any]:
    head = dict(task=job.cell.task, epochs=job.cell.epochs, batch=job.cell.batch, lr=job.cell.lr,
                seed=job.cell.seed, setting=job.cell.setting)
    if _WORKER.get("stop"):
        return dict(head, skipped="the grid is stopping")
    cfg = job.config
    if _WORKER.get("slot") is not None:
        cfg = dataclasses.replace(cfg, device=cfg.device or _WORKER.get("device"), threads=_WORKER["threads"])
    t0 = time.time()
    now = lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())  # noqa: E731
    try:
        res = _finetune_cell(cfg, job.run_dir)
    except DivergedError as e:
        # diverged (e.g. lr 3e-4 on a large model): a finished, failed cell, left out of the summary
        cell = dict(head, failed=str(e), fingerprint=job.fingerprint, seq_length=cfg.seq_length,
                    cell_wall_time_s=time.time() - t0, finished_at=now())
        atomic_write_json(job.path, cell)
        remove_run_dir(job.run_dir)
        return cell
    if res.get("stopped"):
        if _WORKER.get("slot") is not None:       # a worker: take no more cells; leave if the grid is gone
            _WORKER["stop"] = True
            _exit_if_orphaned()
        return dict(head, stopped=res["stopped"], steps=res["steps"], state_path=res["state_path"])
    cell = dict(head, finished_at=now(), **{k: res[k] for k in _CELL_KEYS if k in res}, epoch_metrics=res["epochs"],
                model=res["model"], fingerprint=job.fingerprint, seq_length=cfg.seq_length,
                cell_wall_time_s=time.time() - t0)
    atomic_write_json(job.path, cell)
    remove_run_dir(job.run_dir)
    return cell


# --------------------------------------------------------------------------------- parallel workers
def set_parent_death_signal(sig: int) -> bool:
    """Linux: ask the kernel to send ``sig`` to this process when its parent dies (``prctl(PR_SET_PDEATHSIG)``).
    Returns whether it is in force (False elsewhere)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(1, int(sig), 0, 0, 0) == 0      # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return False


def _exit_if_orphaned() -> None:
    """A worker whose grid is gone has no one to report to: leave now (its cell's state is written)."""
    parent = _WORKER.get("parent")
    if parent is not None and os.getppid() != parent:
        os._exit(0)


def _worker_signal(signum: int, _frame: Any) -> None:
    """SIGTERM/SIGINT in a worker outside a cell's training: stop taking cells; exit if the grid is gone."""
    _WORKER["stop"] = True
    _exit_if_orphaned()


def _init_worker(slots: Any, share: int, threads: int | None, devices: list[str] | None, parent: int) -> None:
    set_parent_death_signal(signal.SIGTERM)
    _WORKER["parent"] = parent
    _exit_if_orphaned()                          # the grid died before the line above took effect
    signal.signal(signal.SIGTERM, _worker_signal)
    signal.signal(signal.SIGINT, _worker_signal)
    slot = slots.get()
    cores = pin(slot, share)
    _WORKER.update(slot=slot, device=devices[slot % len(devices)] if devices else None,
                   threads=configure_threads(threads or len(cores))["threads"], cores=cores)


def _stop_workers(ex: ProcessPoolExecutor, sig: int = signal.SIGTERM) -> None:
    for p in list(getattr(ex, "_processes", {}).values()):
        if p.is_alive() and p.pid:
            try:
                os.kill(p.pid, sig)
            except OSError:
                pass


def _run_parallel(jobs: list[CellJob], cfg: GridConfig, report: Callable[[dict], None],
                  say: Callable[[str], None]) -> list[dict[str, Any]]:
    """Run the cells in ``cfg.jobs`` pinned worker processes; returns the cells that stopped."""
    ctx = mp.get_context("spawn")
    devices = None
    if cfg.device in (None, "cuda") and torch.cuda.is_available():
        devices = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    n = min(cfg.jobs, len(jobs))
    if n > len(available_cores()):
        say(f"warning: --jobs {n} on {len(available_cores())} cores: jobs share cores (slower per job)")
    slots = ctx.Queue()
    for i in range(n):
        slots.put(i)
    stopped: list[dict[str, Any]] = []
    signals: list[int] = []
    ex = ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_init_worker,
                             initargs=(slots, n, cfg.threads, devices, os.getpid()))

    def on_signal(signum: int, _frame: Any) -> None:
        if not signals:
            say(f"grid: signal {signum}: stopping the running cells (each writes its state) ...")
        signals.append(signum)
        _stop_workers(ex)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        remaining: set[Future] = {ex.submit(_run_cell, job) for job in jobs}
        while remaining:
            done, remaining = wait(remaining, timeout=1.0, return_when=FIRST_COMPLETED)
            if signals:
                remaining = {f for f in remaining if not f.cancel()}
                _stop_workers(ex)                # again: a cell still setting up had no training loop to stop
            for f in done:
                r = f.result()
                if r.get("stopped"):
                    stopped.append(r)
                elif not r.get("skipped"):
                    report(r)
    except BaseException:
        _stop_workers(ex)                        # the running cells write their state and stop
        raise
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        procs = list((getattr(ex, "_processes", None) or {}).values())
        ex.shutdown(wait=True, cancel_futures=True)
        for p in procs:                          # none should be left; never leave one behind
            if p.is_alive():
                p.terminate()
                p.join(10)
            if p.is_alive():
                p.kill()
    if signals and not stopped:
        stopped.append(dict(stopped="signal"))
    return stopped


def _run_serial(jobs: list[CellJob], cfg: GridConfig, report: Callable[[dict], None]) -> list[dict[str, Any]]:
    """Run the cells here, one after another; returns the cell that stopped (if one did)."""
    with SignalCatcher() as catcher:     # a signal between cells; during training the cell's own catches it
        for job in jobs:
            if catcher.signal is not None:
                return [dict(stopped="signal")]
            r = _run_cell(job)
            if r.get("stopped"):
                return [r]
            report(r)
        if catcher.signal is not None:
            return [dict(stopped="signal")]
    return []


# --------------------------------------------------------------------------------- one arm
def _identity(cfg: GridConfig, arm: Arm, fp: dict[str, Any], vocab: str) -> dict[str, Any]:
    """What a grid directory holds cells of; a resumed grid must match (the format of 0.2's grid.json)."""
    overrides = dict(cfg.finetune_overrides)
    if cfg.max_train_tokens:
        overrides["max_train_tokens"] = cfg.max_train_tokens
    if cfg.precision != "auto":
        overrides["precision"] = cfg.precision
    return dict(model=fp, config_path=arm.config_path, vocab_sha256=sha256_file(vocab), seq_length=cfg.seq_length,
                max_train_examples=cfg.max_train_examples, max_dev_examples=cfg.max_dev_examples,
                finetune_overrides=overrides)


def _check_manifest(cfg: GridConfig, arm: Arm, fp: dict[str, Any], vocab: str, task_list: list[str],
                    data_dir: str) -> None:
    """Refuse a grid directory holding cells of another setup or other task data; record this one."""
    ident = _identity(cfg, arm, fp, vocab)
    task_data = {}     # each task's train/dev files by content: finished cells are only reused for the same data
    for t in task_list:
        tf = resolve_task(t, data_dir)
        task_data[t] = sha256_bytes((sha256_file(tf.train_path) + sha256_file(tf.dev_path)).encode())
    os.makedirs(arm.out_dir, exist_ok=True)
    manifest_path = os.path.join(arm.out_dir, "grid.json")
    old_data: dict[str, str] = {}
    if os.path.isfile(manifest_path):
        with open(manifest_path, encoding="utf-8") as f:
            old = json.load(f)
        diff = [k for k in ident if old.get("identity", {}).get(k) != json.loads(json.dumps(ident[k]))]
        old_data = old.get("task_data", {})
        diff += [f"{t} train/dev files" for t in task_list if t in old_data and old_data[t] != task_data[t]]
        if diff:
            raise FinetuneError(f"{arm.out_dir} holds a grid for a different setup (differs in {diff}); "
                                f"use another --out, or pass --overwrite to move it aside and start over")
    atomic_write_json(manifest_path, dict(identity=ident, task_data={**old_data, **task_data},
                                          data_dir=os.path.abspath(data_dir), vocab_path=os.path.abspath(vocab),
                                          last_lists=dict(epochs=cfg.epochs_num_list, batch=cfg.batch_size_list,
                                                          lr=arm.lrs, seeds=cfg.seeds, tasks=task_list)))


def _cell_config(cfg: GridConfig, arm: Arm, c: Cell, data_dir: str, vocab: str) -> FinetuneConfig:
    serial = cfg.jobs == 1
    return FinetuneConfig(**{**dict(
        pretrained_model_path=arm.pretrained_model_path, config_path=arm.config_path, vocab_path=vocab, task=c.task,
        data_dir=data_dir, epochs_num=c.epochs, batch_size=c.batch, learning_rate=c.lr, seed=c.seed,
        seq_length=cfg.seq_length, max_train_examples=cfg.max_train_examples, max_dev_examples=cfg.max_dev_examples,
        max_train_tokens=cfg.max_train_tokens, precision=cfg.precision, device=cfg.device, cache_dir=cfg.cache_dir,
        save_model=False, run_test=False, progress=cfg.progress and serial, verbose=cfg.progress and serial,
        output_dir=cell_run_dir(arm.out_dir, c), threads=cfg.threads, save_every_s=cfg.save_every_s),
        **cfg.finetune_overrides})


def _pretokenize(jobs: list[CellJob]) -> None:
    """Tokenize each task once up front (the cells' own cache keys), so parallel workers all hit the cache."""
    seen: set[str] = set()
    for job in jobs:
        c = job.config
        if c.task is None:   # every cell names its task (cell_config)
            raise ValueError(f"grid cell {c.output_dir}: no task")
        if c.task in seen:
            continue
        seen.add(c.task)
        tok = BertTokenizer(resolve_vocab(c.pretrained_model_path, c.vocab_path))
        files, train, dev = load_task_data(c)
        for d in (train, dev):
            cached_encode(tok, d, c.seq_length, c.truncation, c.cache_dir, reader_key(files, c.skip_bad_rows))


def _cell_line(cell: dict[str, Any]) -> str:
    if cell.get("failed"):
        return f"FAILED ({cell['failed']}); left out of the summary"
    chance = " -- at the majority-class rate" if (cell.get("chance") or {}).get("at_majority_rate") else ""
    return (f"best-epoch dev acc {cell['best_dev_acc']:.4f} (epoch {cell['best_epoch']}), last "
            f"{cell['last_dev_acc']:.4f}{chance}, {format_duration(cell['cell_wall_time_s'])}")


def _run_arm(cfg: GridConfig, arm: Arm, say: Callable[[str], None]) -> dict[str, Any]:
    """Run every pending cell of one arm, then summarise it (``summary["stopped"]`` if a signal stopped it)."""
    t0 = time.time()
    task_list = parse_tasks(cfg.tasks)
    data_dir = cfg.data_dir or default_data_dir()
    fp = model_fingerprint(arm.pretrained_model_path)
    vocab = resolve_vocab(arm.pretrained_model_path, arm.vocab_path)
    _check_manifest(cfg, arm, fp, vocab, task_list, data_dir)
    cells = [Cell(t, e, b, lr, s) for t in task_list for b in cfg.batch_size_list for lr in arm.lrs
             for e in cfg.epochs_num_list for s in cfg.seeds]
    pending = [c for c in cells if not os.path.isfile(cell_path(arm.out_dir, c))]
    skipped = len(cells) - len(pending)
    say(f"grid {arm.out_dir}: {len(cells)} cells ({len(task_list)} tasks x {len(cfg.epochs_num_list)} epochs x "
        f"{len(cfg.batch_size_list)} batches x {len(arm.lrs)} lrs ({', '.join(map(short_float, arm.lrs))}: "
        f"{arm.lr_reason}) x {len(cfg.seeds)} seeds); {skipped} finished, {len(pending)} to run, jobs={cfg.jobs}")
    jobs = [CellJob(c, _cell_config(cfg, arm, c, data_dir, vocab), cell_path(arm.out_dir, c),
                    cell_run_dir(arm.out_dir, c), fp) for c in pending]
    if jobs:
        _pretokenize(jobs)
    done, t_run = [0], time.time()

    def report(cell: dict[str, Any]) -> None:
        done[0] += 1
        eta = (time.time() - t_run) / done[0] * (len(pending) - done[0])
        say(f"[{done[0]}/{len(pending)}] {cell['task']} {cell['setting']} seed {cell['seed']}: {_cell_line(cell)}; "
            f"ETA {format_duration(eta)}")

    stopped = (_run_serial(jobs, cfg, report) if cfg.jobs == 1 else _run_parallel(jobs, cfg, report, say)) \
        if jobs else []
    summary = summarize(arm.out_dir, task_list, cfg.epochs_num_list, cfg.batch_size_list, arm.lrs, cfg.seeds)
    summary.update(cells_total=len(cells), cells_run=done[0], cells_skipped=skipped, wall_time_s=time.time() - t0,
                   learning_rates=dict(values=list(arm.lrs), reason=arm.lr_reason))
    if stopped:
        states = [s["state_path"] for s in stopped if s.get("state_path")]
        summary["stopped"] = dict(reason=stopped[0]["stopped"], cell_states=states)
        log(f"grid stopped ({stopped[0]['stopped']}): {done[0]} cell(s) finished this run, {len(states)} stopped "
            f"with a resumable state{' (' + ', '.join(states) + ')' if states else ''}; run the same command to "
            f"continue")
    atomic_write_json(os.path.join(arm.out_dir, "summary.json"), summary)
    if not stopped:
        _say_best(summary, say)
    return summary


def _say_best(summary: dict[str, Any], say: Callable[[str], None]) -> None:
    for t, s in summary["tasks"].items():
        b = s.get("best")
        if b:
            std = f" ± {100 * b['best_dev_acc_std']:.2f}" if b["n_seeds"] > 1 else ""
            note = f" [{s['note']}]" if s.get("note") else ""
            say(f"{t}: best {b['setting']} dev acc {100 * b['best_dev_acc_mean']:.2f}{std} (last-epoch "
                f"{100 * b['last_dev_acc_mean']:.2f}){note}")


# --------------------------------------------------------------------------------- the grid
def run_grid(cfg: GridConfig) -> dict[str, Any]:
    """Run every pending cell, then summarise; see the module docstring. Returns the summary.
    The grid folder is claimed for the run (a second grid on it fails at once naming the first);
    an existing grid is resumed, or with ``overwrite`` moved aside to ``<out>.old-<time>``.

    ``baseline``: also run the same grid (cells, seeds, data, budget) on the same architecture
    from random initialisation, in ``OUT/no-pretraining`` -- the no-pretraining arm that says what
    the pretraining bought; its summary is ``summary["baseline"]`` and ``report`` shows it beside
    the pretrained model with the difference per task."""
    cfg.validate()
    say = log if cfg.progress else (lambda *_a, **_k: None)
    lrs, why = cfg.learning_rates(bool(cfg.pretrained_model_path))
    main = Arm(cfg.out_dir, cfg.pretrained_model_path, cfg.config_path, cfg.vocab_path, lrs, why)
    with claim_output(cfg.out_dir, resume=not cfg.overwrite, overwrite=cfg.overwrite, command="grid", what="a grid"):
        summary = _run_arm(cfg, main, say)
        if cfg.baseline and "stopped" not in summary:
            summary = _run_baseline(cfg, summary, say)
        return summary


def _run_baseline(cfg: GridConfig, summary: dict[str, Any], say: Callable[[str], None]) -> dict[str, Any]:
    if cfg.pretrained_model_path is None:   # GridConfig.problems() refuses --baseline without it
        raise ValueError("--baseline needs --pretrained_model_path")
    base_dir = os.path.join(cfg.out_dir, BASELINE_DIR)
    os.makedirs(base_dir, exist_ok=True)
    model_config, _, _ = load_weights(cfg.pretrained_model_path, config_path=cfg.config_path)
    cfg_file = os.path.join(base_dir, "config.json")
    atomic_write_json(cfg_file, model_config.to_dict())
    vocab = resolve_vocab(cfg.pretrained_model_path, cfg.vocab_path)
    lrs, why = cfg.learning_rates(False)
    say(f"grid: the no-pretraining arm ({model_config.name} from random init, lrs {', '.join(map(short_float, lrs))}"
        f": {why}) -> {base_dir}")
    with claim_output(base_dir, resume=True, command="grid", what="a grid"):
        summary["baseline"] = _run_arm(cfg, Arm(base_dir, None, cfg_file, vocab, lrs, why), say)
    if "stopped" in summary["baseline"]:
        summary["stopped"] = summary["baseline"]["stopped"]
    summary["delta"] = {t: 100 * (summary["tasks"][t]["best"]["best_dev_acc_mean"]
                                  - summary["baseline"]["tasks"][t]["best"]["best_dev_acc_mean"])
                        for t in summary["tasks"] if t in summary["baseline"]["tasks"]}
    atomic_write_json(os.path.join(cfg.out_dir, "summary.json"), summary)
    for t, d in summary["delta"].items():
        say(f"{t}: pretrained {100 * summary['tasks'][t]['best']['best_dev_acc_mean']:.2f} vs no pretraining "
            f"{100 * summary['baseline']['tasks'][t]['best']['best_dev_acc_mean']:.2f} ({d:+.2f})")
    return summary


# --------------------------------------------------------------------------------- CLI
def configure(p: argparse.ArgumentParser) -> None:
    """The options are generated from ``GridConfig`` (their defaults, help and checks)."""
    groups: dict = {}
    add_options(p, GridConfig, groups=groups)
    add_amp_alias(groups[TRAINING])


def run(args: argparse.Namespace) -> int:
    cfg = from_args(GridConfig, args, **({"precision": "bf16"} if args.amp else {})).validate()
    summary = run_grid(cfg)
    best = {t: dict(setting=s["best"]["setting"], best_dev_acc=s["best"]["best_dev_acc_mean"],
                    last_dev_acc=s["best"]["last_dev_acc_mean"]) for t, s in summary["tasks"].items()}
    extra = {"no_pretraining_delta": summary["delta"]} if "delta" in summary else {}
    if "stopped" in summary:
        extra["stopped"] = summary["stopped"]
    print(json.dumps(dict(out=os.path.abspath(cfg.out_dir), best=best, cells_run=summary["cells_run"],
                          cells_skipped=summary["cells_skipped"], **extra), indent=2))
    return 0


__all__ = ["BASELINE_DIR", "run_grid", "summarize", "Cell", "cell_path", "cell_run_dir", "model_fingerprint",
           "configure", "run", "set_parent_death_signal", "GridConfig",
           "DEFAULT_EPOCHS", "DEFAULT_BATCHES", "DEFAULT_LRS"]
