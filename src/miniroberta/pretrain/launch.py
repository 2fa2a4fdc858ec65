"""``miniroberta pretrain``: MLM pretraining with UER-py's command line.

Public API::

    cfg = PretrainConfig(dataset_path=..., output_model_path=..., vocab_path=..., config_path="tiny", ...)
    result = train(cfg, RunOptions(time_budget_s=600))   # -> dict (see ``train``)

``PretrainConfig`` holds every setting that changes the trained weights; it is saved in the
training-state checkpoint and a resume refuses to continue under different values.
``RunOptions`` holds what only changes speed, logging or when to stop (checkpoint cadence,
workers, compile, device, time budget ...).

Launch modes: one process (CPU or one GPU); ``--world_size N`` spawns N local processes
(NCCL on the GPUs in ``--gpu_ranks``, gloo on CPU without ``--gpu_ranks``); or ``torchrun``
(its ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR`` environment, single or multi-node).
One training process is ``miniroberta.pretrain.worker``; what it is built from, ``miniroberta.pretrain.setup``.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import tempfile
from dataclasses import asdict
from typing import Any

import torch
import torch.multiprocessing as mp

from miniroberta.pretrain import worker as train_loop
from miniroberta.pretrain.setup import Setup, preflight
from miniroberta.pretrain.config import MASKING, OPTIM, PretrainConfig, PretrainError, RunOptions
from miniroberta.outputs import claim_output, run_files
from miniroberta.settings import add_options, from_args
from miniroberta.utils import log


# --------------------------------------------------------------------------- launching
def _torchrun_env() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def plan_devices(cfg: PretrainConfig, opts: RunOptions) -> tuple[list[int], bool]:
    """(global ranks to start on this machine, use_cuda) for a non-torchrun launch."""
    n_gpu = _cuda_count()
    if opts.device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda, got {opts.device!r}")
    if opts.gpu_ranks:
        ranks = list(opts.gpu_ranks)
        if opts.device == "cpu":
            raise ValueError("--gpu_ranks given together with --device cpu; drop one of them")
        if len(ranks) > cfg.world_size or any(not 0 <= r < cfg.world_size for r in ranks) or len(set(ranks)) != len(ranks):
            raise ValueError(f"--gpu_ranks {ranks} must be distinct ranks in [0, --world_size {cfg.world_size})")
        if n_gpu < len(ranks):
            have = f"{n_gpu} GPU(s)" if n_gpu else "no GPU (CUDA is not available)"
            raise PretrainError(
                f"--world_size {cfg.world_size} --gpu_ranks {' '.join(map(str, ranks))} asks for {len(ranks)} GPU(s) on "
                f"this machine, but it has {have}. Run on a machine with {len(ranks)} GPUs, use fewer --gpu_ranks "
                f"(and a matching --world_size), or drop --gpu_ranks to run --world_size CPU processes (gloo).")
        if len(ranks) < cfg.world_size and not opts.master_ip:
            raise ValueError(f"--gpu_ranks lists {len(ranks)} of {cfg.world_size} ranks (multi-node); every node needs "
                             f"the same --master_ip tcp://HOST:PORT of the node running rank 0")
        return ranks, True
    if opts.device == "cuda" or (opts.device == "auto" and n_gpu >= cfg.world_size):
        if n_gpu < cfg.world_size:
            raise PretrainError(f"--device cuda --world_size {cfg.world_size} needs {cfg.world_size} GPUs; found {n_gpu}")
        return list(range(cfg.world_size)), True
    return list(range(cfg.world_size)), False


def train(cfg: PretrainConfig, opts: RunOptions | None = None) -> dict[str, Any]:
    """Pretrain; returns ``{final_loss, steps, tokens_seen, checkpoints, last_checkpoint,
    state_path, metrics_path, wall_time_s, stopped, eval}`` (from rank 0).

    The output is claimed for the life of the run (one writer; see ``miniroberta.outputs``): an
    earlier run's state or step checkpoints are refused unless ``opts.resume`` (continue it) or
    ``opts.overwrite`` (move them aside to ``<name>.old-<time>``)."""
    opts = (opts or RunOptions()).validate()
    cfg.validate()
    setup = preflight(cfg, opts)  # fail in the parent, before any process is started
    if _torchrun_env() and os.environ.get("RANK") != "0":
        return _train(cfg, opts, setup)     # rank 0 holds the claim
    with claim_output(cfg.output_model_path, resume=bool(opts.resume), overwrite=opts.overwrite,
                      related=run_files(cfg.output_model_path), command="pretrain",
                      what="the checkpoints and training state of an earlier run"):
        return _train(cfg, opts, setup)


def _train(cfg: PretrainConfig, opts: RunOptions, setup: Setup) -> dict[str, Any]:
    if _torchrun_env():
        world = int(os.environ["WORLD_SIZE"])
        if cfg.world_size not in (1, world):
            raise ValueError(f"--world_size {cfg.world_size} differs from torchrun's WORLD_SIZE {world}")
        cfg = PretrainConfig(**{**asdict(cfg), "world_size": world})
        return train_loop.worker_from_env(cfg, opts)

    if cfg.world_size == 1:
        if opts.gpu_ranks and len(opts.gpu_ranks) > 1:
            raise ValueError(f"--gpu_ranks {opts.gpu_ranks} lists several GPUs but --world_size is 1")
        ranks, use_cuda = plan_devices(cfg, opts)
        device = f"cuda:{opts.gpu_ranks[0] if opts.gpu_ranks else 0}" if use_cuda else "cpu"
        return train_loop.run_worker(cfg, opts, rank=0, world_size=1, local_rank=0, device=device, setup=setup)

    ranks, use_cuda = plan_devices(cfg, opts)
    master = opts.master_ip or f"tcp://127.0.0.1:{_free_port()}"
    fd, result_path = tempfile.mkstemp(prefix="miniroberta-pretrain-", suffix=".json")
    os.close(fd)
    os.unlink(result_path)
    log(f"starting {len(ranks)} process(es) (ranks {ranks} of {cfg.world_size}, "
        f"{'NCCL on GPUs' if use_cuda else 'gloo on CPU'}, master {master})")
    ctx = mp.start_processes(train_loop.spawn_entry, args=(cfg, opts, ranks, use_cuda, master, result_path),
                             nprocs=len(ranks), join=False, start_method="spawn")

    def forward(signum, _frame):
        for p in ctx.processes:
            if p.is_alive() and p.pid:
                try:
                    os.kill(p.pid, signum)
                except OSError:
                    pass

    old_term = signal.signal(signal.SIGTERM, forward)
    old_int = signal.signal(signal.SIGINT, lambda s, f: None)  # children get the terminal's SIGINT themselves
    try:
        while not ctx.join():
            pass
    except Exception as e:  # a rank raised: surface its message
        msg = str(e).strip().splitlines()
        raise PretrainError("a training process failed: " + (msg[-1] if msg else repr(e))) from None
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)
    if not os.path.exists(result_path):
        if ranks[0] != 0:
            return {"rank0_on_other_node": True}
        raise PretrainError("rank 0 finished without writing its result")
    with open(result_path, encoding="utf-8") as f:
        result = json.load(f)
    os.unlink(result_path)
    return result


# --------------------------------------------------------------------------- CLI
UER_NOOPS = ("--embedding", "--encoder", "--mask", "--tokenizer", "--log_path", "--log_level", "--log_file_level",
             "--layernorm_positioning", "--feed_forward", "--pooling", "--max_seq_length", "--instances_buffer_size",
             "--labels_num")


def configure(p: argparse.ArgumentParser) -> None:
    """The options are generated from ``PretrainConfig`` and ``RunOptions`` (their defaults, help, checks)."""
    groups: dict = {}
    add_options(p, PretrainConfig, groups=groups)
    add_options(p, RunOptions, groups=groups)
    groups[OPTIM].add_argument("--bf16", action="store_true", help="alias of --precision bf16")
    groups[OPTIM].add_argument("--optimizer", default="adamw", choices=["adamw"], help="only adamw")
    groups[OPTIM].add_argument("--scheduler", default="linear", choices=["linear"],
                               help="only linear (warmup, then linear decay to 0)")
    groups[MASKING].add_argument("--dynamic_masking", action="store_true",
                                 help="accepted for the reference; the dataset decides")
    g = p.add_argument_group("accepted for UER-py compatibility (no effect)")
    g.add_argument("--data_processor", default="mlm", help="only 'mlm'")
    g.add_argument("--target", default="mlm", help="only 'mlm'")
    for name in UER_NOOPS:
        g.add_argument(name, default=None, help="UER-py option; no effect here")
    g.add_argument("--tie_weights", action="store_true", help="UER-py option; the MLM decoder is always tied")
    g.add_argument("--deep_init", action="store_true", help="UER-py option; no effect here")


def configs_from_args(args: argparse.Namespace) -> tuple[PretrainConfig, RunOptions]:
    for flag in ("data_processor", "target"):
        v = getattr(args, flag)
        if v is not None and v != "mlm":
            raise ValueError(f"--{flag} {v!r} is not supported; miniroberta pretrains the MLM target only "
                             f"(--data_processor mlm --target mlm)")
    cfg = from_args(PretrainConfig, args, **({"precision": "bf16"} if args.bf16 else {}))
    opts = from_args(RunOptions, args)
    return cfg.validate(), opts.validate()


def run(args: argparse.Namespace) -> int:
    cfg, opts = configs_from_args(args)
    result = train(cfg, opts)
    if result.get("stopped"):
        log(f"stopped ({result['stopped']}) at step {result['steps']}; continue with the same command plus --resume")
    return 0


__all__ = ["PretrainConfig", "RunOptions", "train", "configure", "run", "configs_from_args", "PretrainError"]
