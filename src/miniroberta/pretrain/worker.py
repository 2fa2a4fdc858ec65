"""One pretraining process: build the run from its :class:`~miniroberta.pretrain.setup.Setup` and hand
the MLM task to the training engine (``engine.Trainer.fit``).

``run_worker`` is the body of every launch mode; ``spawn_entry`` / ``worker_from_env`` are the DDP
entry points of ``--world_size`` spawns and ``torchrun`` (``pretrain.launch`` starts them).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import nn

from miniroberta.engine.device import device_info, measure_matmul_peak
from miniroberta.engine.metrics import RunLog
from miniroberta.engine.precision import resolve_precision
from miniroberta.engine.threads import configure_threads
from miniroberta.engine.trainer import LoopOptions, Trainer, TrainingError
from miniroberta.interop.checkpoint import CheckpointError, load_into, load_weights
from miniroberta.modeling.bert import BertForMaskedLM, build_mlm, flops_per_token
from miniroberta.modeling.config import ConfigError
from miniroberta.modeling.unpad import UnpaddedMLM
from miniroberta.pretrain.batches import BatchSource, Stream
from miniroberta.pretrain.config import PretrainConfig, PretrainError, RunOptions, metrics_path_for
from miniroberta.pretrain.setup import Setup, check_resume, load_state, prepare
from miniroberta.pretrain.task import MlmTask, load_teacher
from miniroberta.utils import atomic_write, format_duration, human_count

NAN_ADVICE = ("The training state is from that step too. To go on, start a new run from those weights with "
              "--pretrained_model_path and a lower --learning_rate or --grad_clip 1.0 (or --precision fp32); "
              "--resume continues with the same settings and would diverge again.")


def spawn_entry(local_idx: int, cfg: PretrainConfig, opts: RunOptions, ranks: list[int], use_cuda: bool,
                master: str, result_path: str) -> None:
    rank = ranks[local_idx]
    if use_cuda:
        torch.cuda.set_device(local_idx)
    backend = opts.backend or ("nccl" if use_cuda else "gloo")
    dist.init_process_group(backend, init_method=master, rank=rank, world_size=cfg.world_size)
    try:
        device = f"cuda:{local_idx}" if use_cuda else "cpu"
        res = run_worker(cfg, opts, rank=rank, world_size=cfg.world_size, local_rank=local_idx, device=device,
                         local_processes=len(ranks))
        if rank == 0:
            with atomic_write(result_path, "w", encoding="utf-8") as f:
                json.dump(res, f)
    finally:
        dist.destroy_process_group()


def worker_from_env(cfg: PretrainConfig, opts: RunOptions) -> dict[str, Any]:
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    use_cuda = opts.device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local)
    dist.init_process_group(opts.backend or ("nccl" if use_cuda else "gloo"), init_method="env://")
    try:
        return run_worker(cfg, opts, rank, world, local, f"cuda:{local}" if use_cuda else "cpu",
                          local_processes=1 if use_cuda else int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    finally:
        dist.destroy_process_group()



def _initial_model(cfg: PretrainConfig, setup: Setup, st: dict[str, Any] | None, dev: torch.device) -> BertForMaskedLM:
    """The model to train: from the training state (resume), else from --pretrained_model_path, else fresh."""
    model = build_mlm(setup.model, init=cfg.init, seed=cfg.seed)
    if st is not None:
        load_into(model, st["model"], setup.state_path)
    elif cfg.pretrained_model_path:
        try:
            _, sd, _ = load_weights(cfg.pretrained_model_path)
        except (CheckpointError, ConfigError) as e:
            raise ValueError(str(e)) from None
        load_into(model, sd, cfg.pretrained_model_path,
                  allow_unexpected=("bert.pooler.", "cls.seq_relationship.", "classifier."))
    return model.to(dev).train()


def _precision(cfg: PretrainConfig, st: dict[str, Any] | None, dev: torch.device, world_size: int) -> tuple[str, str]:
    if st is not None:
        return st.get("precision", "fp32"), "as the training state"
    precision, why = resolve_precision(cfg.precision, dev)
    if world_size > 1:  # every rank must agree: rank 0 decides
        box = [precision, why]
        dist.broadcast_object_list(box, src=0)
        precision, why = box
    return precision, why


def _checkpoint_meta(cfg: PretrainConfig, setup: Setup) -> dict[str, Any]:
    ds = setup.dataset
    meta = {"total_steps": cfg.total_steps, "dataset": os.path.basename(os.path.normpath(cfg.dataset_path)),
            "dataset_hash": ds.content_hash, "seq_length": ds.seq_length, "batch_size": cfg.global_batch,
            "learning_rate": cfg.learning_rate, "mask_rate": cfg.mask_rate, "init": cfg.init,
            "pretrained_from": cfg.pretrained_model_path, "vocab_sha256": setup.vocab_sha,
            "vocab_path": os.path.abspath(setup.vocab_path), "seed": cfg.seed,
            "teacher": os.path.abspath(cfg.teacher_path) if cfg.teacher_path else None}
    return {k: v for k, v in meta.items() if v is not None}


def _build(cfg: PretrainConfig, opts: RunOptions, setup: Setup, st: dict[str, Any] | None, dev: torch.device,
           rank: int, world_size: int) -> tuple[Trainer, MlmTask, BatchSource, str, str]:
    """The trainer (model, precision, optimizer; restored on resume), the MLM task and its batch source."""
    model = _initial_model(cfg, setup, st, dev)
    precision, why = _precision(cfg, st, dev, world_size)
    forward: nn.Module = UnpaddedMLM(model, bucket=opts.bucket) if opts.unpad else model
    trainer = Trainer(model, optim=cfg.optim(), total_steps=cfg.total_steps, device=dev, precision=precision,
                      forward=forward, rank=rank, world_size=world_size)
    if opts.compile:
        # compiling a module gives an OptimizedModule (an nn.Module); the stubs type the result as a callable
        trainer.forward = cast(nn.Module, torch.compile(trainer.forward, dynamic=True))
    # the teacher is built before the dropout RNG is seeded or restored: building it draws random numbers
    # (its init before the weights are loaded), which would otherwise shift a resumed run's dropout masks
    teacher = load_teacher(cfg, setup.model, setup.vocab_sha, dev, opts) if cfg.teacher_path else None
    if st is not None:
        trainer.load_state_dict(st)
        trainer.last_checkpoint = st.get("weights_path")
    else:  # dropout RNG: per rank (restored from the state on resume with the same world size)
        torch.manual_seed(cfg.seed * 1000003 + 17 + rank)
    A = cfg.accumulation_steps
    src = BatchSource(setup.dataset, Stream(len(setup.dataset), cfg.seed), setup.special, setup.masking,
                      cfg.batch_size, world_size, rank, trainer.step * A, opts.num_workers, opts.pad_to_multiple_of,
                      pin=dev.type == "cuda")
    ev_ds, ev_m = (setup.eval_dataset, setup.eval_masking) if rank == 0 else (None, None)
    task = MlmTask(cfg, opts, model, setup.model, setup.dataset, src, A, dev, _checkpoint_meta(cfg, setup),
                   ev_ds, ev_m, setup.special)
    task.teacher = teacher
    return trainer, task, src, precision, why


def _start_log(cfg: PretrainConfig, opts: RunOptions, setup: Setup, trainer: Trainer, task: MlmTask,
               is0: bool, resumed: bool, precision: str, why: str, threads: dict[str, Any]) -> tuple[RunLog, float]:
    dev, ds, mc = trainer.device, setup.dataset, setup.model
    peak = measure_matmul_peak(dev, torch.bfloat16 if precision == "bf16" else torch.float32) if is0 else 0.0
    run_log = RunLog(metrics_path_for(cfg, opts), enabled=is0, name="pretrain", total=cfg.total_steps,
                     initial=trainer.step, progress=opts.progress, tensorboard=opts.tensorboard)
    n_params = sum(p.numel() for p in trainer.model.parameters())
    W, B, A = trainer.world_size, cfg.batch_size, cfg.accumulation_steps
    run_log.say(f"pretrain {mc.name} ({human_count(n_params)} params) on {ds.path}: {len(ds)} instances, seq "
                f"{ds.seq_length}, global batch {cfg.global_batch} ({W} x {B} x {A}), steps {trainer.step}->"
                f"{cfg.total_steps}, device {dev}, precision {precision} ({why}), matmul peak {peak / 1e9:.1f} GFLOP/s"
                + (f", resumed from {setup.state_path}" if resumed else "")
                + (f", weights from {cfg.pretrained_model_path}" if cfg.pretrained_model_path and not resumed else ""))
    run_log.write("start", trainer.step, pretrain_config=asdict(cfg), model_config=mc.to_dict(), world_size=W,
                  device=device_info(dev), precision=precision, precision_reason=why, matmul_peak_flops=peak,
                  dataset_hash=ds.content_hash, threads=threads)
    if task.eval_ds is not None and trainer.step == 0:  # the starting point, for "loss fell from ... to ..."
        ev = task.evaluate(trainer, run_log)
        run_log.write("eval", 0, eval_loss=ev["loss"], eval_accuracy=ev["mlm_accuracy"])
        run_log.say(f"step 0 | eval loss {ev['loss']:.4f} acc {ev['mlm_accuracy']:.3f}")
    return run_log, peak


def run_worker(cfg: PretrainConfig, opts: RunOptions, rank: int, world_size: int, local_rank: int,
               device: str, local_processes: int = 1, setup: Setup | None = None) -> dict[str, Any]:
    """Train on this process (rank ``rank`` of ``world_size``); returns the run's result (see
    ``pretrain.launch.train``). ``setup``: the launching process's, when it is this process."""
    dev = torch.device(device)
    threads = configure_threads(opts.threads, share=local_processes)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    setup = setup or prepare(cfg, opts, with_eval=rank == 0)
    st = None
    if opts.resume is True or (opts.resume == "auto" and os.path.isfile(setup.state_path)):
        st = load_state(setup.state_path)
        check_resume(st, setup.state_path, cfg, setup.model, setup.dataset)
    trainer, task, src, precision, why = _build(cfg, opts, setup, st, dev, rank, world_size)
    run_log, peak = _start_log(cfg, opts, setup, trainer, task, rank == 0, st is not None, precision, why, threads)
    loop = LoopOptions(report_steps=opts.report_steps, save_steps=opts.save_checkpoint_steps,
                       time_budget_s=opts.time_budget_s, stop_after_steps=opts.stop_after_steps,
                       flops_per_unit=flops_per_token(setup.model, setup.dataset.seq_length, cfg.mask_rate),
                       peak_flops=peak, debug_nan_at_step=opts.debug_nan_at_step,
                       debug_step_sleep=opts.debug_step_sleep)
    try:
        res = trainer.fit(task, loop, run_log, setup.state_path, advice=NAN_ADVICE,
                          before_stop=task.eval_before_stop)
    except TrainingError as e:
        raise PretrainError(str(e)) from None
    finally:
        src.close()
    result = {"final_loss": res.last_loss, "final_mlm_accuracy": res.last_accuracy, "steps": res.steps,
              "tokens_seen": res.tokens_seen, "checkpoints": res.checkpoints, "last_checkpoint": res.last_checkpoint,
              "state_path": setup.state_path, "metrics_path": run_log.path, "wall_time_s": res.wall_time_s,
              "stopped": res.stopped, "eval": task.last_eval, "matmul_peak_flops": peak, "precision": precision}
    run_log.write("end", res.steps, **{k: v for k, v in result.items() if k != "eval"}, eval=task.last_eval)
    loss = "?" if res.last_loss is None else f"{res.last_loss:.4f}"
    run_log.say(f"done: step {res.steps}, loss {loss}, {human_count(res.tokens_seen)} tokens seen, wall "
                f"{format_duration(res.wall_time_s)}; last checkpoint {res.last_checkpoint}")
    run_log.close()
    return result


__all__ = ["run_worker", "spawn_entry", "worker_from_env", "NAN_ADVICE"]
