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
The training loop itself is in ``miniroberta.pretrain.trainer``.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import tempfile
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from miniroberta.pretrain import trainer as train_loop
from miniroberta.pretrain.config import PretrainConfig, PretrainError, RunOptions
from miniroberta.outputs import claim_output, run_files
from miniroberta.utils import log


# --------------------------------------------------------------------------- launching
def _torchrun_env() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cuda_count() -> int:
    import torch
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
    opts = opts or RunOptions()
    cfg.validate()
    train_loop.preflight(cfg, opts)  # fail in the parent, before any process is started
    if _torchrun_env() and os.environ.get("RANK") != "0":
        return _train(cfg, opts)     # rank 0 holds the claim
    with claim_output(cfg.output_model_path, resume=bool(opts.resume), overwrite=opts.overwrite,
                      related=run_files(cfg.output_model_path), command="pretrain",
                      what="the checkpoints and training state of an earlier run"):
        return _train(cfg, opts)


def _train(cfg: PretrainConfig, opts: RunOptions) -> dict[str, Any]:
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
        return train_loop.run_worker(cfg, opts, rank=0, world_size=1, local_rank=0, device=device)

    ranks, use_cuda = plan_devices(cfg, opts)
    master = opts.master_ip or f"tcp://127.0.0.1:{_free_port()}"
    fd, result_path = tempfile.mkstemp(prefix="miniroberta-pretrain-", suffix=".json")
    os.close(fd)
    os.unlink(result_path)
    import torch.multiprocessing as mp
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
def configure(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("paths")
    g.add_argument("--dataset_path", default="dataset.pt", help="dataset directory written by `miniroberta preprocess`")
    g.add_argument("--vocab_path", default=None, help="vocab.txt; must be the one the dataset was built with")
    g.add_argument("--config_path", default="base",
                   help="model config: a preset (tiny, medium, L8_H512 ...), a UER-py config JSON or an HF config.json")
    g.add_argument("--output_model_path", required=True,
                   help="checkpoints are written as <this>-<step> (native safetensors); training state as <this>.state.pt")
    g.add_argument("--pretrained_model_path", default=None,
                   help="initial weights only (fresh optimizer and warmup): native, HF directory or UER checkpoint")

    g = p.add_argument_group("schedule")
    g.add_argument("--total_steps", type=int, default=100000, help="optimizer updates")
    g.add_argument("--save_checkpoint_steps", type=int, default=10000)
    g.add_argument("--report_steps", type=int, default=100)
    g.add_argument("--accumulation_steps", type=int, default=1)
    g.add_argument("--batch_size", type=int, default=32, help="instances per process per micro-batch")
    g.add_argument("--seed", type=int, default=7)
    g.add_argument("--time_budget_s", type=float, default=None,
                   help="stop cleanly after this many seconds of wall time, writing a checkpoint")
    g.add_argument("--resume", nargs="?", const="yes", default=None, choices=["yes", "auto"],
                   help="continue from <output_model_path>.state.pt ('auto': only if it exists)")
    g.add_argument("--overwrite", action="store_true",
                   help="move an earlier run's state and step checkpoints aside (<name>.old-<time>) and start over")

    g = p.add_argument_group("optimization")
    g.add_argument("--learning_rate", type=float, default=2e-5)
    g.add_argument("--warmup", type=float, default=0.1, help="fraction of total_steps of linear warmup")
    g.add_argument("--weight_decay", type=float, default=0.01)
    g.add_argument("--grad_clip", type=float, default=0.0, help="max gradient norm (0: off, as the reference)")
    g.add_argument("--no_correct_bias", dest="correct_bias", action="store_false",
                   help="AdamW without bias correction, as UER-py's pretraining (correct_bias=False): the first "
                        "~1/(1-beta2) updates are larger than with correction")
    g.add_argument("--optimizer", default="adamw", choices=["adamw"])
    g.add_argument("--scheduler", default="linear", choices=["linear"])
    g.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="bf16: bf16 compute with fp32 master weights; auto: bf16 where the hardware has native bf16 "
                        "and a short measurement shows it faster, else fp32 (the choice and its reason are logged)")
    g.add_argument("--bf16", action="store_true", help="alias of --precision bf16")
    g.add_argument("--init", default="uer", choices=["uer", "hf"], help="weight init of a fresh model")
    g.add_argument("--dropout", type=float, default=None, help="override the config's dropout")
    g.add_argument("--layer_norm_type", default=None, choices=["hf", "uer"], help="override the config's LayerNorm")

    g = p.add_argument_group("distillation (general, MLM)")
    g.add_argument("--teacher", dest="teacher_path", default=None,
                   help="a pretrained MLM teacher (checkpoint or HF dir, same vocab): adds distill_alpha * T^2 * "
                        "KL(teacher || student) over the masked positions to the MLM loss")
    g.add_argument("--distill_alpha", type=float, default=1.0, help="weight of the KL term")
    g.add_argument("--distill_temperature", type=float, default=1.0, help="softmax temperature of the KL term")

    g = p.add_argument_group("masking")
    g.add_argument("--mask_rate", type=float, default=0.15)
    g.add_argument("--dynamic_masking", action="store_true", help="accepted for the reference; the dataset decides")
    g.add_argument("--whole_word_masking", action="store_true", help="needs a dataset built with word boundaries")
    g.add_argument("--span_masking", action="store_true")
    g.add_argument("--span_geo_prob", type=float, default=0.2)
    g.add_argument("--span_max_length", type=int, default=10)

    g = p.add_argument_group("distributed")
    g.add_argument("--world_size", type=int, default=1, help="total processes")
    g.add_argument("--gpu_ranks", type=int, nargs="*", default=None, help="global ranks to start on this node's GPUs")
    g.add_argument("--master_ip", default=None, help="tcp://HOST:PORT of rank 0 (default: a free local port)")
    g.add_argument("--backend", default=None, choices=["nccl", "gloo"])
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])

    g = p.add_argument_group("speed and logging")
    g.add_argument("--num_workers", type=int, default=1, help="background batch-preparation threads (0: inline)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--pad_to_multiple_of", type=int, default=8)
    g.add_argument("--no_unpad", action="store_true", help="run the padded forward (position-wise layers on padding too)")
    g.add_argument("--no_bucket", action="store_true",
                   help="CPU: do not pad the packed rows to recurring shapes (see docs/performance.md)")
    g.add_argument("--threads", type=int, default=None, help="torch threads per process")
    g.add_argument("--eval_dataset_path", default=None, help="held-out dataset: loss/accuracy with fixed masks at report steps")
    g.add_argument("--eval_max_instances", type=int, default=2048)
    g.add_argument("--eval_steps", type=int, default=None, help="evaluate every N steps (default: --report_steps)")
    g.add_argument("--metrics_path", default=None, help="JSONL metrics (default <output_model_path>.metrics.jsonl)")
    g.add_argument("--tensorboard", default=None, help="also write TensorBoard logs to this directory")
    g.add_argument("--no_progress", action="store_true", help="no progress bar")

    g = p.add_argument_group("accepted for UER-py compatibility (no effect)")
    g.add_argument("--data_processor", default="mlm", help="only 'mlm'")
    g.add_argument("--target", default="mlm", help="only 'mlm'")
    for name in ("--embedding", "--encoder", "--mask", "--tokenizer", "--log_path", "--log_level",
                 "--log_file_level", "--layernorm_positioning", "--feed_forward", "--pooling", "--max_seq_length",
                 "--instances_buffer_size", "--labels_num"):
        g.add_argument(name, default=None)
    g.add_argument("--tie_weights", action="store_true")
    g.add_argument("--deep_init", action="store_true")

    p.add_argument("--stop_after_steps", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--debug_nan_at_step", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--debug_step_sleep", type=float, default=0.0, help=argparse.SUPPRESS)


def configs_from_args(args: argparse.Namespace) -> tuple[PretrainConfig, RunOptions]:
    for flag in ("data_processor", "target"):
        v = getattr(args, flag)
        if v is not None and v != "mlm":
            raise ValueError(f"--{flag} {v!r} is not supported; miniroberta pretrains the MLM target only "
                             f"(--data_processor mlm --target mlm)")
    if args.whole_word_masking and args.span_masking:
        raise ValueError("--whole_word_masking and --span_masking are mutually exclusive")
    cfg = PretrainConfig(
        dataset_path=args.dataset_path, output_model_path=args.output_model_path, vocab_path=args.vocab_path,
        config_path=args.config_path, pretrained_model_path=args.pretrained_model_path,
        total_steps=args.total_steps, batch_size=args.batch_size, world_size=args.world_size,
        accumulation_steps=args.accumulation_steps, learning_rate=args.learning_rate, warmup=args.warmup,
        weight_decay=args.weight_decay, grad_clip=args.grad_clip, correct_bias=args.correct_bias, teacher_path=args.teacher_path,
        distill_alpha=args.distill_alpha, distill_temperature=args.distill_temperature, mask_rate=args.mask_rate, seed=args.seed,
        init=args.init, dropout=args.dropout, layer_norm_type=args.layer_norm_type,
        precision="bf16" if args.bf16 else args.precision,
        whole_word_masking=True if args.whole_word_masking else None,
        span_masking=True if args.span_masking else None,
        span_geo_prob=args.span_geo_prob, span_max_length=args.span_max_length)
    resume: bool | str = False
    if args.resume == "yes":
        resume = True
    elif args.resume == "auto":
        resume = "auto"
    opts = RunOptions(
        save_checkpoint_steps=args.save_checkpoint_steps, report_steps=args.report_steps, resume=resume,
        overwrite=args.overwrite, time_budget_s=args.time_budget_s, eval_dataset_path=args.eval_dataset_path,
        eval_max_instances=args.eval_max_instances, eval_steps=args.eval_steps, metrics_path=args.metrics_path, tensorboard=args.tensorboard,
        num_workers=args.num_workers, compile=args.compile, device=args.device,
        gpu_ranks=list(args.gpu_ranks) if args.gpu_ranks else None, master_ip=args.master_ip, backend=args.backend,
        pad_to_multiple_of=args.pad_to_multiple_of, unpad=not args.no_unpad, bucket=not args.no_bucket,
        threads=args.threads, progress=not args.no_progress,
        stop_after_steps=args.stop_after_steps, debug_nan_at_step=args.debug_nan_at_step,
        debug_step_sleep=args.debug_step_sleep)
    return cfg, opts


def run(args: argparse.Namespace) -> int:
    cfg, opts = configs_from_args(args)
    result = train(cfg, opts)
    if result.get("stopped"):
        log(f"stopped ({result['stopped']}) at step {result['steps']}; continue with the same command plus --resume")
    return 0


__all__ = ["PretrainConfig", "RunOptions", "train", "configure", "run", "configs_from_args", "PretrainError",
           "state_path_for", "metrics_path_for", "field"]
