"""The reference fine-tuning grid (``miniroberta grid``), resumable.

epochs {3,5,8} x batch {32,64} x lr {3e-5,1e-4,3e-4} (UER-py ``run_classifier_grid.py``
defaults and the model card's grid) for every task, optionally several seeds. Layout::

    OUT/grid.json                         what this grid fine-tunes (model fingerprint, seq_length, subsample)
    OUT/cells/<task>/e5_b32_lr0.0001_s7.json   one finished cell (atomic), skipped on re-runs
    OUT/summary.json                      per task: every setting (mean +- std over seeds), the best one

The best setting per task is chosen on dev by the mean **best-epoch** accuracy; the mean
last-epoch accuracy (what UER's grid script selects by) is kept beside it, and the setting
that last-epoch selection would pick is recorded as ``best_by_last_epoch``.

``jobs > 1`` runs cells in parallel processes: on CPU each gets ``cpu_count // jobs`` torch
threads; with GPUs each worker owns one device (``cuda:i``, round robin).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from miniroberta.data import tasks as T
from miniroberta.interop.export import resolve_vocab
from miniroberta.outputs import claim_output
from miniroberta.utils import atomic_write_json, format_duration, log, sha256_bytes, sha256_file

BASELINE_DIR = "no-pretraining"   # OUT/no-pretraining: the same grid from random init (--baseline)
DEFAULT_EPOCHS = (3, 5, 8)
DEFAULT_BATCHES = (32, 64)
DEFAULT_LRS = (3e-5, 1e-4, 3e-4)
_CELL_KEYS = ("best_epoch", "best_dev_acc", "last_dev_acc", "macro_f1", "best_dev_macro_f1", "last_dev_macro_f1",
              "n_train", "n_dev", "n_train_file", "n_dev_file", "note", "subsampled", "labels",
              "train_time_s", "wall_time_s", "device", "threads", "steps", "train_dropped", "dev_dropped",
              "train_skipped", "dev_skipped", "max_train_examples", "max_train_tokens", "max_dev_examples")


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


def model_fingerprint(path: str | None) -> dict[str, Any]:
    """Identity of the pretrained weights: path and sha256 of the weight file."""
    if not path:
        return {"path": None, "sha256": None}
    p = Path(path)
    f = p
    if p.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (p / name).is_file():
                f = p / name
                break
    if not f.is_file():
        raise FileNotFoundError(f"{path}: no such pretrained model")
    return {"path": str(p.resolve()), "sha256": sha256_file(f)}


def cell_path(out_dir: str, cell: Cell) -> str:
    return os.path.join(out_dir, "cells", cell.task, cell.name + ".json")


def _parse_list(values: Iterable[Any] | str | None, typ, default):
    if values is None:
        return tuple(default)
    if isinstance(values, str):
        values = [values]
    out = []
    for v in values:
        for x in str(v).replace(",", " ").split():
            out.append(typ(x))
    return tuple(out) if out else tuple(default)


# --------------------------------------------------------------------------------- workers
_WORKER: dict[str, Any] = {}


def _init_worker(slots, threads: int | None, devices: list[str] | None) -> None:
    import torch
    slot = slots.get()
    _WORKER["device"] = devices[slot % len(devices)] if devices else None
    if threads:
        torch.set_num_threads(threads)


def _run_cell(job: dict[str, Any]) -> dict[str, Any]:
    from miniroberta.finetune.trainer import FinetuneConfig, run_finetune
    cfg = FinetuneConfig(**{**job["finetune"], "device": job["finetune"].get("device") or _WORKER.get("device")})
    t0 = time.time()
    try:
        res = run_finetune(cfg)
    except RuntimeError as e:
        if "loss became" not in str(e):
            raise
        # diverged (e.g. lr 3e-4 on a large model): a finished, failed cell, left out of the summary
        cell = dict(job["cell"], setting=job["setting"], failed=str(e), fingerprint=job["fingerprint"],
                    seq_length=cfg.seq_length, cell_wall_time_s=time.time() - t0,
                    finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        atomic_write_json(job["path"], cell)
        return cell
    cell = dict(job["cell"], setting=job["setting"], finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                **{k: res[k] for k in _CELL_KEYS if k in res}, epoch_metrics=res["epochs"], model=res["model"],
                fingerprint=job["fingerprint"],
                seq_length=cfg.seq_length, cell_wall_time_s=time.time() - t0)
    atomic_write_json(job["path"], cell)
    return cell


# --------------------------------------------------------------------------------- grid
def run_grid(pretrained_model_path: str | None, tasks: Sequence[str] | str, data_dir: str | None, out_dir: str,
             epochs_list: Sequence[int] = DEFAULT_EPOCHS, batch_list: Sequence[int] = DEFAULT_BATCHES,
             lr_list: Sequence[float] = DEFAULT_LRS, seeds: Sequence[int] = (7,), vocab_path: str | None = None,
             seq_length: int = 128, jobs: int = 1, max_train_examples: int | None = None,
             max_dev_examples: int | None = None, device: str | None = None, progress: bool = True,
             config_path: str | None = None, cache_dir: str | None = None, threads: int | None = None,
             finetune_overrides: dict[str, Any] | None = None, overwrite: bool = False,
             baseline: bool = False) -> dict[str, Any]:
    """Run every pending cell, then summarise; see the module docstring. Returns the summary.
    The grid folder is claimed for the run (a second grid on it fails at once naming the first);
    an existing grid is resumed, or with ``overwrite`` moved aside to ``<out>.old-<time>``.

    ``baseline``: also run the same grid (cells, seeds, data, budget) on the same architecture
    from random initialisation, in ``OUT/no-pretraining`` -- the no-pretraining arm that says what
    the pretraining bought; its summary is ``summary["baseline"]`` and ``report`` shows it beside
    the pretrained model with the difference per task."""
    with claim_output(out_dir, resume=not overwrite, overwrite=overwrite, command="grid", what="a grid"):
        summary = _run_grid(pretrained_model_path, tasks, data_dir, out_dir, epochs_list, batch_list, lr_list, seeds,
                            vocab_path, seq_length, jobs, max_train_examples, max_dev_examples, device, progress,
                            config_path, cache_dir, threads, finetune_overrides)
        if baseline and pretrained_model_path:
            from miniroberta.interop.checkpoint import load_weights
            base_dir = os.path.join(out_dir, BASELINE_DIR)
            os.makedirs(base_dir, exist_ok=True)
            mcfg, _, _ = load_weights(pretrained_model_path, config_path=config_path)
            cfg_file = os.path.join(base_dir, "config.json")
            atomic_write_json(cfg_file, mcfg.to_dict())
            vocab = resolve_vocab(pretrained_model_path, vocab_path)
            (log if progress else (lambda *_a, **_k: None))(
                f"grid: the no-pretraining arm ({mcfg.name} from random init, same grid) -> {base_dir}")
            with claim_output(base_dir, resume=True, command="grid", what="a grid"):
                summary["baseline"] = _run_grid(
                    None, tasks, data_dir, base_dir, epochs_list, batch_list, lr_list, seeds, vocab, seq_length, jobs,
                    max_train_examples, max_dev_examples, device, progress, cfg_file, cache_dir, threads,
                    finetune_overrides)
            summary["delta"] = {t: 100 * (summary["tasks"][t]["best"]["best_dev_acc_mean"]
                                          - summary["baseline"]["tasks"][t]["best"]["best_dev_acc_mean"])
                                for t in summary["tasks"] if t in summary["baseline"]["tasks"]}
            atomic_write_json(os.path.join(out_dir, "summary.json"), summary)
            for t, d in summary["delta"].items():
                (log if progress else (lambda *_a, **_k: None))(
                    f"{t}: pretrained {100 * summary['tasks'][t]['best']['best_dev_acc_mean']:.2f} vs no pretraining "
                    f"{100 * summary['baseline']['tasks'][t]['best']['best_dev_acc_mean']:.2f} ({d:+.2f})")
        return summary


def _run_grid(pretrained_model_path, tasks, data_dir, out_dir, epochs_list, batch_list, lr_list, seeds, vocab_path,
              seq_length, jobs, max_train_examples, max_dev_examples, device, progress, config_path, cache_dir,
              threads, finetune_overrides) -> dict[str, Any]:
    t0 = time.time()
    task_list = T.parse_tasks(tasks)
    epochs_list = tuple(int(e) for e in epochs_list)
    batch_list = tuple(int(b) for b in batch_list)
    lr_list = tuple(float(x) for x in lr_list)
    seeds = tuple(int(s) for s in seeds)
    if jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    data_dir = data_dir or T.default_data_dir()
    fp = model_fingerprint(pretrained_model_path)
    if not pretrained_model_path and not config_path:
        raise ValueError("give --pretrained_model_path (or --config_path PRESET for a random-init baseline)")
    vocab = resolve_vocab(pretrained_model_path, vocab_path)
    ident = dict(model=fp, config_path=config_path, vocab_sha256=sha256_file(vocab), seq_length=seq_length,
                 max_train_examples=max_train_examples, max_dev_examples=max_dev_examples,
                 finetune_overrides=finetune_overrides or {})
    # each task's train/dev files by content: finished cells are only reused for the same data
    task_data = {}
    for t in task_list:
        tf = T.resolve_task(t, data_dir)
        task_data[t] = sha256_bytes((sha256_file(tf.train_path) + sha256_file(tf.dev_path)).encode())
    os.makedirs(out_dir, exist_ok=True)
    manifest_path = os.path.join(out_dir, "grid.json")
    old_data: dict[str, str] = {}
    if os.path.isfile(manifest_path):
        with open(manifest_path, encoding="utf-8") as f:
            old = json.load(f)
        diff = [k for k in ident if old.get("identity", {}).get(k) != json.loads(json.dumps(ident[k]))]
        old_data = old.get("task_data", {})
        diff += [f"{t} train/dev files" for t in task_list if t in old_data and old_data[t] != task_data[t]]
        if diff:
            raise ValueError(f"{out_dir} holds a grid for a different setup (differs in {diff}); "
                             f"use another --out, or pass --overwrite to move it aside and start over")
    atomic_write_json(manifest_path, dict(identity=ident, task_data={**old_data, **task_data},
                                          data_dir=os.path.abspath(data_dir),
                                          vocab_path=os.path.abspath(vocab),
                                          last_lists=dict(epochs=epochs_list, batch=batch_list, lr=lr_list,
                                                          seeds=seeds, tasks=task_list)))

    cells = [Cell(t, e, b, lr, s) for t in task_list for b in batch_list for lr in lr_list for e in epochs_list
             for s in seeds]
    pending = [c for c in cells if not os.path.isfile(cell_path(out_dir, c))]
    skipped = len(cells) - len(pending)
    say = log if progress else (lambda *_a, **_k: None)
    say(f"grid {out_dir}: {len(cells)} cells ({len(task_list)} tasks x {len(epochs_list)} epochs x {len(batch_list)} "
        f"batches x {len(lr_list)} lrs x {len(seeds)} seeds); {skipped} finished, {len(pending)} to run, jobs={jobs}")

    def job_for(c: Cell) -> dict[str, Any]:
        ft = dict(pretrained_model_path=pretrained_model_path, config_path=config_path, vocab_path=vocab,
                  task=c.task, data_dir=data_dir, epochs_num=c.epochs, batch_size=c.batch, learning_rate=c.lr,
                  seed=c.seed, seq_length=seq_length, max_train_examples=max_train_examples,
                  max_dev_examples=max_dev_examples, device=device, cache_dir=cache_dir, save_model=False,
                  run_test=False, progress=progress and jobs == 1, verbose=progress and jobs == 1, output_dir=None,
                  threads=None)
        ft.update(finetune_overrides or {})
        return dict(cell=dict(task=c.task, epochs=c.epochs, batch=c.batch, lr=c.lr, seed=c.seed),
                    setting=c.setting, finetune=ft, path=cell_path(out_dir, c), fingerprint=fp)

    if pending:
        # tokenize each task once up front, so parallel workers all hit the cache
        from miniroberta.finetune.trainer import FinetuneConfig, load_task_data
        from miniroberta.modeling.tokenizer import BertTokenizer
        tok = BertTokenizer(vocab)
        for t in dict.fromkeys(c.task for c in pending):
            cfg = FinetuneConfig(task=t, data_dir=data_dir, seq_length=seq_length, cache_dir=cache_dir)
            files, tr, dv = load_task_data(cfg)
            rk = dict(label=files.label_field, drop=list(files.drop_labels), skip=False)
            for d in (tr, dv):
                T.cached_encode(tok, d, seq_length, "longest_first", cache_dir, rk)

    done = 0
    t_run = time.time()

    def report(cell: dict[str, Any]) -> None:
        nonlocal done
        done += 1
        el = time.time() - t_run
        eta = el / done * (len(pending) - done)
        if cell.get("failed"):
            say(f"[{done}/{len(pending)}] {cell['task']} {cell['setting']} seed {cell['seed']}: FAILED "
                f"({cell['failed']}); left out of the summary; ETA {format_duration(eta)}")
            return
        say(f"[{done}/{len(pending)}] {cell['task']} {cell['setting']} seed {cell['seed']}: best-epoch dev acc "
            f"{cell['best_dev_acc']:.4f} (epoch {cell['best_epoch']}), last {cell['last_dev_acc']:.4f}, "
            f"{format_duration(cell['cell_wall_time_s'])}; ETA {format_duration(eta)}")

    if pending and jobs == 1:
        import torch
        if threads:
            torch.set_num_threads(threads)
        for c in pending:
            report(_run_cell(job_for(c)))
    elif pending:
        import multiprocessing as mp
        import torch
        ctx = mp.get_context("spawn")
        devices = None
        if device in (None, "cuda") and torch.cuda.is_available():
            devices = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        per = threads or (max(1, (os.cpu_count() or 1) // jobs) if devices is None else 1)
        slots = ctx.Manager().Queue()
        for i in range(jobs):
            slots.put(i)
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker,
                                 initargs=(slots, per, devices)) as ex:
            remaining = set()
            for c in pending:
                job = job_for(c)
                if devices:
                    job["finetune"]["device"] = None  # the worker's own GPU
                remaining.add(ex.submit(_run_cell, job))
            try:
                while remaining:
                    finished, remaining = wait(remaining, return_when=FIRST_COMPLETED)
                    for f in finished:
                        report(f.result())
            except BaseException:
                for f in remaining:  # finished cells are on disk; a re-run resumes from them
                    f.cancel()
                raise
    summary = summarize(out_dir, task_list, epochs_list, batch_list, lr_list, seeds)
    summary.update(cells_total=len(cells), cells_run=len(pending), cells_skipped=skipped,
                   wall_time_s=time.time() - t0)
    atomic_write_json(os.path.join(out_dir, "summary.json"), summary)
    for t, s in summary["tasks"].items():
        b = s.get("best")
        if b:
            std = f" ± {100 * b['best_dev_acc_std']:.2f}" if b["n_seeds"] > 1 else ""
            note = f" [{s['note']}]" if s.get("note") else ""
            say(f"{t}: best {b['setting']} dev acc {100 * b['best_dev_acc_mean']:.2f}{std} (last-epoch "
                f"{100 * b['last_dev_acc_mean']:.2f}){note}")
    return summary


def _mean_std(xs: list[float]) -> tuple[float, float]:
    return (statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0)


def summarize(out_dir: str, tasks: Sequence[str] | None = None, epochs_list: Sequence[int] | None = None,
              batch_list: Sequence[int] | None = None, lr_list: Sequence[float] | None = None,
              seeds: Sequence[int] | None = None) -> dict[str, Any]:
    """Aggregate the finished cells under ``out_dir`` (restricted to the given lists, if any)."""
    root = Path(out_dir) / "cells"
    by_task: dict[str, dict[str, list[dict[str, Any]]]] = {}
    model: dict[str, Any] | None = None
    fingerprint = None
    failed: list[dict[str, Any]] = []
    for f in sorted(root.glob("*/*.json")) if root.is_dir() else []:
        with open(f, encoding="utf-8") as fh:
            c = json.load(fh)
        if tasks is not None and c["task"] not in tasks:
            continue
        if epochs_list is not None and (c["epochs"] not in epochs_list or c["batch"] not in batch_list
                                        or not any(math.isclose(c["lr"], x) for x in lr_list) or c["seed"] not in seeds):
            continue
        if c.get("failed"):
            failed.append(dict(task=c["task"], setting=c["setting"], seed=c["seed"], reason=c["failed"]))
            continue
        by_task.setdefault(c["task"], {}).setdefault(c["setting"], []).append(c)
        model = model or c.get("model")
        fingerprint = fingerprint or c.get("fingerprint")
    out_tasks: dict[str, Any] = {}
    for t, settings in by_task.items():
        rows = []
        for name, cs in settings.items():
            cs.sort(key=lambda c: c["seed"])
            bm, bs = _mean_std([c["best_dev_acc"] for c in cs])
            lm, ls = _mean_std([c["last_dev_acc"] for c in cs])
            fm, fs = _mean_std([c["macro_f1"] for c in cs])
            rows.append(dict(setting=name, epochs=cs[0]["epochs"], batch=cs[0]["batch"], lr=cs[0]["lr"],
                             seeds=[c["seed"] for c in cs], n_seeds=len(cs), best_dev_acc_mean=bm, best_dev_acc_std=bs,
                             last_dev_acc_mean=lm, last_dev_acc_std=ls, macro_f1_mean=fm, macro_f1_std=fs,
                             best_epochs=[c["best_epoch"] for c in cs],
                             per_seed=[dict(seed=c["seed"], best_dev_acc=c["best_dev_acc"],
                                            last_dev_acc=c["last_dev_acc"], macro_f1=c["macro_f1"],
                                            best_epoch=c["best_epoch"]) for c in cs]))
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


# --------------------------------------------------------------------------------- CLI
def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pretrained_model_path", default=None, help="native checkpoint, HF directory or UER .bin")
    p.add_argument("--tasks", default="all", help=f"all, or comma-separated from {', '.join(T.TASK_NAMES)}")
    p.add_argument("--data_dir", default=None, help="folder holding the task folders; unset: ../shared/data/tasks")
    p.add_argument("--out", "--output_dir", dest="out", required=True, help="grid directory (resumable)")
    p.add_argument("--epochs_num_list", nargs="+", default=None, help="default 3 5 8")
    p.add_argument("--batch_size_list", nargs="+", default=None, help="default 32 64")
    p.add_argument("--learning_rate_list", nargs="+", default=None, help="default 3e-5 1e-4 3e-4")
    p.add_argument("--seeds", nargs="+", default=None, help="default 7; several give mean ± std")
    p.add_argument("--jobs", type=int, default=1, help="cells in parallel (CPU slices, or one per GPU)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per job")
    p.add_argument("--seq_length", type=int, default=128)
    p.add_argument("--vocab_path", default=None)
    p.add_argument("--config_path", default=None)
    p.add_argument("--max_train_examples", type=int, default=None, help="deterministic subsample: a cheap smoke grid")
    p.add_argument("--max_dev_examples", type=int, default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--cache_dir", default=None)
    p.add_argument("--amp", action="store_true", help="bf16 autocast in every cell (GPU)")
    p.add_argument("--baseline", action="store_true",
                   help="also run the same grid from random init (no pretraining) in OUT/no-pretraining; report "
                        "shows it beside the model with the difference per task")
    p.add_argument("--max_train_tokens", type=int, default=None,
                   help="per task, train on the largest deterministic subsample whose real tokens per epoch fit "
                        "this budget (marked †); a task that fits is used whole")
    p.add_argument("--overwrite", action="store_true",
                   help="move an existing grid in --out aside to OUT.old-<time> and start over (default: resume it)")
    p.add_argument("--no_progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    summary = run_grid(
        args.pretrained_model_path, args.tasks, args.data_dir, args.out,
        epochs_list=_parse_list(args.epochs_num_list, int, DEFAULT_EPOCHS),
        batch_list=_parse_list(args.batch_size_list, int, DEFAULT_BATCHES),
        lr_list=_parse_list(args.learning_rate_list, float, DEFAULT_LRS),
        seeds=_parse_list(args.seeds, int, (7,)), vocab_path=args.vocab_path, seq_length=args.seq_length,
        jobs=args.jobs, max_train_examples=args.max_train_examples, max_dev_examples=args.max_dev_examples,
        device=args.device, progress=not args.no_progress, config_path=args.config_path, cache_dir=args.cache_dir,
        threads=args.threads, finetune_overrides={**({"amp": True} if args.amp else {}),
                                                  **({"max_train_tokens": args.max_train_tokens}
                                                     if args.max_train_tokens else {})} or None,
        overwrite=args.overwrite, baseline=args.baseline)
    best = {t: dict(setting=s["best"]["setting"], best_dev_acc=s["best"]["best_dev_acc_mean"],
                    last_dev_acc=s["best"]["last_dev_acc_mean"]) for t, s in summary["tasks"].items()}
    extra = {"no_pretraining_delta": summary["delta"]} if "delta" in summary else {}
    print(json.dumps(dict(out=os.path.abspath(args.out), best=best, cells_run=summary["cells_run"],
                          cells_skipped=summary["cells_skipped"], **extra), indent=2))
    return 0


__all__ = ["BASELINE_DIR", "run_grid", "summarize", "Cell", "cell_path", "model_fingerprint", "configure", "run",
           "DEFAULT_EPOCHS", "DEFAULT_BATCHES", "DEFAULT_LRS"]
