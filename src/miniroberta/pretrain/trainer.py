"""The pretraining loop behind ``miniroberta.pretrain.launch.train`` (one call per process).

Data order: the training stream is the concatenation of per-epoch permutations of the
whole dataset (``numpy`` generator seeded by ``(seed, epoch)``). Micro-batch ``j`` covers
stream positions ``[j*W*B, (j+1)*W*B)``; rank ``r`` takes the ``r``-th slice of ``B``. So
the instances (and, masking being a pure function of ``(seed, epoch, index)``, their masks)
of a micro-batch are the same at any world size with the same global batch, and the data
position is a function of the step alone.

Loss: summed cross-entropy over the masked tokens of the whole optimizer step (all ranks,
all micro-batches) divided by their count -- token-weighted, so two processes with batch B
equal one process with batch 2B (the reference averages per-batch means instead).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from miniroberta.interop.checkpoint import CheckpointError, load_into, load_weights, save_native
from miniroberta.modeling.config import ConfigError, ModelConfig, load_config, replace
from miniroberta.data.dataset import DatasetError, MlmDataset
from miniroberta.data.masking import EVAL_EPOCH, Batch, MaskingConfig, SpecialIds, collate
from miniroberta.modeling.bert import build_mlm, flops_per_token
from miniroberta.pretrain.launch import PretrainConfig, PretrainError, RunOptions, metrics_path_for, state_path_for
from miniroberta.modeling.tokenizer import read_vocab
from miniroberta.utils import JsonlWriter, atomic_write, format_duration, human_count, log, sha256_file

STATE_FORMAT = "miniroberta-train-state"
STATE_VERSION = 1


# --------------------------------------------------------------------------- setup helpers
def _vocab_path(cfg: PretrainConfig, ds: MlmDataset) -> str:
    if cfg.vocab_path:
        return cfg.vocab_path
    raise ValueError(f"--vocab_path is required (the vocab {ds.path} was built with, sha256 {ds.vocab_sha256[:12]}…)")


def open_dataset(path: str, vocab_path: str, vocab_sha: str) -> MlmDataset:
    ds = MlmDataset(path)
    ds.check_vocab(vocab_sha, vocab_path)
    if len(ds) == 0:
        raise DatasetError(f"{path}: the dataset has no instances")
    return ds


def model_config(cfg: PretrainConfig, vocab_size: int, seq_length: int) -> ModelConfig:
    try:
        mc = load_config(cfg.config_path, vocab_size=vocab_size, layer_norm_type=cfg.layer_norm_type)
    except ConfigError as e:
        raise ValueError(str(e)) from None
    if cfg.dropout is not None:
        mc = replace(mc, hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout)
    if seq_length > mc.max_position_embeddings:
        raise ValueError(f"the dataset's seq_length {seq_length} exceeds the model's max_position_embeddings "
                         f"{mc.max_position_embeddings} ({cfg.config_path})")
    return mc


def masking_config(cfg: PretrainConfig, ds: MlmDataset) -> MaskingConfig:
    m = ds.manifest
    wwm = bool(m.get("whole_word_masking")) if cfg.whole_word_masking is None else cfg.whole_word_masking
    if wwm and ds.word_starts is None:
        raise ValueError(f"whole-word masking needs word boundaries, but {ds.path} has no word_starts.npy; "
                         f"re-run preprocess with --whole_word_masking")
    span = bool(m.get("span_masking")) if cfg.span_masking is None else cfg.span_masking
    return MaskingConfig(mask_rate=cfg.mask_rate, seed=cfg.seed, dynamic=bool(m.get("dynamic_masking", True)),
                         dup_factor=int(m.get("dup_factor") or 1), whole_word=wwm, span=span and not wwm,
                         span_geo_prob=float(m.get("span_geo_prob", cfg.span_geo_prob)) if cfg.span_masking is None
                         else cfg.span_geo_prob,
                         span_max_length=int(m.get("span_max_length", cfg.span_max_length)) if cfg.span_masking is None
                         else cfg.span_max_length)


def preflight(cfg: PretrainConfig, opts: RunOptions) -> None:
    """Checks that need no GPU and no process group (run in the launching process)."""
    if not os.path.isdir(cfg.dataset_path):
        raise FileNotFoundError(f"--dataset_path {cfg.dataset_path}: no such dataset directory "
                                f"(build one with `miniroberta preprocess`)")
    ds = MlmDataset(cfg.dataset_path)
    vp = _vocab_path(cfg, ds)
    sha = sha256_file(vp) if os.path.isfile(vp) else None
    if sha is None:
        raise FileNotFoundError(f"--vocab_path {vp}: no such file")
    open_dataset(cfg.dataset_path, vp, sha)
    model_config(cfg, len(read_vocab(vp)), ds.seq_length)
    masking_config(cfg, ds)
    if opts.eval_dataset_path:
        open_dataset(opts.eval_dataset_path, vp, sha)
    if opts.report_steps < 1 or opts.save_checkpoint_steps < 1:
        raise ValueError("--report_steps and --save_checkpoint_steps must be >= 1")
    if cfg.pretrained_model_path and not os.path.exists(cfg.pretrained_model_path):
        raise FileNotFoundError(f"--pretrained_model_path {cfg.pretrained_model_path}: no such file or directory")
    sp = state_path_for(cfg.output_model_path)
    if opts.resume is True and not os.path.isfile(sp):
        raise FileNotFoundError(f"--resume: no training state {sp} (it is written beside the checkpoints of a run "
                                f"with the same --output_model_path)")


# --------------------------------------------------------------------------- data
class Stream:
    """Instance order: per-epoch seeded permutations of the dataset, concatenated."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed
        self._cache: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def perm(self, epoch: int) -> np.ndarray:
        with self._lock:
            p = self._cache.get(epoch)
            if p is None:
                p = np.random.default_rng([self.seed, epoch, 0x5EED]).permutation(self.n)
                if len(self._cache) > 2:
                    self._cache.pop(min(self._cache))
                self._cache[epoch] = p
            return p

    def items(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        g = np.arange(start, start + count, dtype=np.int64)
        ep, off = g // self.n, g % self.n
        idx = np.empty(count, dtype=np.int64)
        for e in np.unique(ep):
            sel = ep == e
            idx[sel] = self.perm(int(e))[off[sel]]
        return idx, ep


class BatchSource:
    """Micro-batches for one rank from micro-batch ``j0`` on, prepared ahead in threads."""

    def __init__(self, ds: MlmDataset, stream: Stream, special: SpecialIds, mcfg: MaskingConfig,
                 batch_size: int, world: int, rank: int, j0: int, workers: int, pad_multiple: int,
                 pin: bool = False) -> None:
        self.ds, self.stream, self.special, self.mcfg = ds, stream, special, mcfg
        self.B, self.W, self.rank, self.j = batch_size, world, rank, j0
        self.pad_multiple = pad_multiple
        self.pin = pin  # also prepare pinned CPU tensors (for non-blocking copies to a GPU)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="batches") if workers > 0 else None
        self.ahead: deque = deque()
        self.depth = max(2, 2 * workers)

    def make(self, j: int) -> Batch:
        idx, ep = self.stream.items((j * self.W + self.rank) * self.B, self.B)
        inst = [self.ds[int(i)] for i in idx]
        ws = [self.ds.word_start_flags(int(i)) for i in idx] if self.mcfg.whole_word else None
        b = collate(inst, idx, ep, self.special, self.mcfg, ws, self.pad_multiple)
        if self.pin:
            b.pinned = b.to_torch(None, pin=True)
        return b

    def next(self) -> Batch:
        if self.pool is None:
            b = self.make(self.j)
            self.j += 1
            return b
        while len(self.ahead) < self.depth:
            self.ahead.append(self.pool.submit(self.make, self.j + len(self.ahead)))
        b = self.ahead.popleft().result()
        self.ahead.append(self.pool.submit(self.make, self.j + len(self.ahead) + 1))
        self.j += 1
        return b

    def close(self) -> None:
        if self.pool is not None:
            for f in self.ahead:
                f.cancel()
            self.pool.shutdown(wait=True, cancel_futures=True)


# --------------------------------------------------------------------------- optimizer/schedule
def lr_factor(step: int, total: int, warmup: float) -> float:
    """Linear warmup over ``warmup*total`` updates then linear decay to 0 (the reference's
    schedule, read at the update's 0-based index: the very first update has factor 0 when
    warmup > 0, as in UER-py/transformers)."""
    w = int(total * warmup)
    if step < w:
        return step / max(1, w)
    return max(0.0, (total - step) / max(1, total - w))


def build_optimizer(model: torch.nn.Module, cfg: PretrainConfig, device: torch.device) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if ("bias" in name or "LayerNorm" in name) else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    kw = dict(lr=cfg.learning_rate, betas=(0.9, 0.999), eps=1e-6)
    try:
        return torch.optim.AdamW(groups, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, foreach=device.type == "cuda", **kw)


def measure_matmul_peak(device: torch.device, dtype: torch.dtype, seconds: float = 0.4) -> float:
    """Achieved FLOP/s of a large square matmul on this device and dtype (the MFU denominator)."""
    n = 1024 if device.type == "cpu" else 8192
    g = torch.Generator(device="cpu").manual_seed(0)  # leave the global RNG (dropout) untouched
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    (a @ b).sum().item()
    reps, t0 = 0, time.perf_counter()
    while True:
        c = a @ b
        reps += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dt = time.perf_counter() - t0
        if dt >= seconds and reps >= 3:
            break
    del c
    return 2.0 * n ** 3 * reps / dt


# --------------------------------------------------------------------------- state
def _rng_state(device: torch.device) -> dict[str, Any]:
    st = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(device)
    return st


def _set_rng_state(st: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(st["torch"])
    if device.type == "cuda" and "cuda" in st:
        torch.cuda.set_rng_state(st["cuda"], device)


def load_state(path: str) -> dict[str, Any]:
    try:
        st = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise PretrainError(f"{path}: cannot read the training state ({type(e).__name__}: {e}); it may be corrupt -- "
                            f"start again without --resume, or from the last weights with --pretrained_model_path") from None
    if not isinstance(st, dict) or st.get("format") != STATE_FORMAT:
        raise PretrainError(f"{path}: not a miniroberta training state")
    return st


def check_resume(st: dict[str, Any], path: str, cfg: PretrainConfig, mc: ModelConfig, ds: MlmDataset) -> None:
    if st["dataset_hash"] != ds.content_hash:
        raise PretrainError(
            f"refusing to resume: {path} was trained on dataset {st.get('dataset_name')!r} (content hash "
            f"{st['dataset_hash'][:12]}…) but --dataset_path {cfg.dataset_path} has content hash {ds.content_hash[:12]}…. "
            f"Resume with the same dataset, or start a new run from the weights with --pretrained_model_path "
            f"{st.get('weights_path')}")
    old_mc = st["model_config"]
    diff = [k for k in set(old_mc) | set(mc.to_dict()) if old_mc.get(k) != mc.to_dict().get(k)]
    if diff:
        raise PretrainError(f"refusing to resume: the model config differs from the one in {path}: " + ", ".join(
            f"{k} {old_mc.get(k)!r} (state) vs {mc.to_dict().get(k)!r} (now)" for k in sorted(diff)))
    old = st["resume_key"]
    now = cfg.resume_key()
    diff = [k for k in set(old) | set(now) if old.get(k) != now.get(k)]
    if diff:
        raise PretrainError(f"refusing to resume: settings that change the result differ from {path}: " + ", ".join(
            f"--{k} {old.get(k)!r} (state) vs {now.get(k)!r} (now)" for k in sorted(diff))
            + ". Use the original settings, or start a new run with --pretrained_model_path.")


# --------------------------------------------------------------------------- distributed plumbing
def spawn_entry(local_idx: int, cfg: PretrainConfig, opts: RunOptions, ranks: list[int], use_cuda: bool,
                master: str, result_path: str) -> None:
    import torch.distributed as dist
    rank = ranks[local_idx]
    if use_cuda:
        torch.cuda.set_device(local_idx)
    backend = opts.backend or ("nccl" if use_cuda else "gloo")
    dist.init_process_group(backend, init_method=master, rank=rank, world_size=cfg.world_size)
    try:
        device = f"cuda:{local_idx}" if use_cuda else "cpu"
        if opts.threads is None and not use_cuda:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // len(ranks)))
        res = run_worker(cfg, opts, rank=rank, world_size=cfg.world_size, local_rank=local_idx, device=device)
        if rank == 0:
            with atomic_write(result_path, "w", encoding="utf-8") as f:
                json.dump(res, f)
    finally:
        dist.destroy_process_group()


def worker_from_env(cfg: PretrainConfig, opts: RunOptions) -> dict[str, Any]:
    import torch.distributed as dist
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    use_cuda = opts.device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local)
    dist.init_process_group(opts.backend or ("nccl" if use_cuda else "gloo"), init_method="env://")
    try:
        return run_worker(cfg, opts, rank, world, local, f"cuda:{local}" if use_cuda else "cpu")
    finally:
        dist.destroy_process_group()


class _Stop:
    """SIGTERM/SIGINT -> finish the current step, checkpoint, exit cleanly."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_Stop":
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, _frame) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: give up at once
        self.signal = signum

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


# --------------------------------------------------------------------------- the worker
def run_worker(cfg: PretrainConfig, opts: RunOptions, rank: int, world_size: int, local_rank: int,
               device: str) -> dict[str, Any]:
    import torch.distributed as dist
    dev = torch.device(device)
    is0 = rank == 0
    distributed = world_size > 1
    if opts.threads:
        torch.set_num_threads(opts.threads)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    ds = MlmDataset(cfg.dataset_path)
    vp = _vocab_path(cfg, ds)
    vocab = read_vocab(vp)
    vocab_sha = sha256_file(vp)
    ds.check_vocab(vocab_sha, vp)
    special = SpecialIds.from_vocab(vocab)
    mc = model_config(cfg, len(vocab), ds.seq_length)
    mcfg = masking_config(cfg, ds)
    state_path = state_path_for(cfg.output_model_path)
    metrics_path = metrics_path_for(cfg, opts)

    st = None
    if opts.resume is True or (opts.resume == "auto" and os.path.isfile(state_path)):
        st = load_state(state_path)
        check_resume(st, state_path, cfg, mc, ds)

    model = build_mlm(mc, init=cfg.init, seed=cfg.seed)
    pretrained_meta: dict[str, Any] = {}
    if st is not None:
        load_into(model, st["model"], state_path)
    elif cfg.pretrained_model_path:
        try:
            src_cfg, sd, pretrained_meta = load_weights(cfg.pretrained_model_path)
        except (CheckpointError, ConfigError) as e:
            raise ValueError(str(e)) from None
        load_into(model, sd, cfg.pretrained_model_path,
                  allow_unexpected=("bert.pooler.", "cls.seq_relationship.", "classifier."))
    model.to(dev)
    model.train()
    optimizer = build_optimizer(model, cfg, dev)
    start_step = 0
    tokens_seen = 0
    if st is not None:
        optimizer.load_state_dict(st["optimizer"])
        start_step = int(st["step"])
        tokens_seen = int(st["tokens_seen"])
    # dropout RNG: per rank, restored on resume when the world size is unchanged
    torch.manual_seed(cfg.seed * 1000003 + 17 + rank)
    if st is not None and len(st.get("rng", [])) == world_size:
        _set_rng_state(st["rng"][rank], dev)

    raw_model = model
    if opts.unpad:
        from miniroberta.modeling.unpad import UnpaddedMLM
        model = UnpaddedMLM(raw_model)
    ctrl_group = None
    if distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP
        model = DDP(model, device_ids=[dev.index] if dev.type == "cuda" else None,
                    gradient_as_bucket_view=True)
        ctrl_group = dist.new_group(backend="gloo") if dev.type == "cuda" else None
    fwd = torch.compile(model, dynamic=True) if opts.compile else model

    amp = torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=cfg.bf16)
    peak = measure_matmul_peak(dev, torch.bfloat16 if cfg.bf16 else torch.float32) if is0 else 0.0
    if is0 and cfg.bf16:
        fp32_peak = measure_matmul_peak(dev, torch.float32, 0.2)
        if peak < fp32_peak:
            log(f"warning: --bf16 on this {dev.type.upper()} is slower than fp32 (bf16 matmul {peak / 1e9:.2f} GFLOP/s "
                f"vs fp32 {fp32_peak / 1e9:.1f}): no native bf16 instructions (e.g. AVX512-BF16/AMX); drop --bf16 here")
            peak = fp32_peak  # MFU against the best the hardware does, not an emulated bf16 peak
    fpt = flops_per_token(mc, ds.seq_length, cfg.mask_rate)
    A, B, W = cfg.accumulation_steps, cfg.batch_size, world_size
    src = BatchSource(ds, Stream(len(ds), cfg.seed), special, mcfg, B, W, rank, start_step * A,
                      opts.num_workers, opts.pad_to_multiple_of, pin=dev.type == "cuda")

    eval_ds = eval_mcfg = None
    if opts.eval_dataset_path and is0:
        eval_ds = open_dataset(opts.eval_dataset_path, vp, vocab_sha)
        eval_mcfg = masking_config(cfg, eval_ds)

    metrics = JsonlWriter(metrics_path if is0 else None)
    tb = None
    if is0 and opts.tensorboard:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ValueError("--tensorboard needs the tensorboard package (pip install tensorboard)") from None
        tb = SummaryWriter(opts.tensorboard)
    bar = None
    if is0 and opts.progress:
        from tqdm import tqdm
        bar = tqdm(total=cfg.total_steps, initial=start_step, unit="step", dynamic_ncols=True, file=sys.stderr,
                   desc="pretrain")

    def say(msg: str) -> None:
        if not is0:
            return
        if bar is not None:
            bar.write(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr)
        else:
            log(msg)

    if is0:
        n_params = sum(p.numel() for p in raw_model.parameters())
        say(f"pretrain {mc.name} ({human_count(n_params)} params) on {ds.path}: {len(ds)} instances, "
            f"seq {ds.seq_length}, global batch {cfg.global_batch} ({W} x {B} x {A}), steps {start_step}->"
            f"{cfg.total_steps}, device {dev}{' bf16' if cfg.bf16 else ''}, matmul peak {peak / 1e9:.1f} GFLOP/s"
            + (f", resumed from {state_path}" if st else "")
            + (f", weights from {cfg.pretrained_model_path}" if cfg.pretrained_model_path and st is None else ""))
        if st is None and os.path.isfile(state_path) and opts.resume is False:
            say(f"note: {state_path} exists and will be replaced (pass --resume to continue it instead)")
        metrics.write({"event": "start", "time": time.time(), "step": start_step, "pretrain_config": asdict(cfg),
                       "model_config": mc.to_dict(), "world_size": W, "device": str(dev), "matmul_peak_flops": peak,
                       "dataset_hash": ds.content_hash})

    if eval_ds is not None and start_step == 0:  # the starting point, for "loss fell from ... to ..."
        last_eval = evaluate(raw_model, eval_ds, special, eval_mcfg, B, dev, amp, opts.eval_max_instances,
                             opts.pad_to_multiple_of)
        metrics.write({"event": "eval", "step": 0, "eval_loss": last_eval["loss"],
                       "eval_mlm_accuracy": last_eval["mlm_accuracy"], "time": time.time()})
        say(f"step 0 | eval loss {last_eval['loss']:.4f} acc {last_eval['mlm_accuracy']:.3f}")

    # running sums: device side (no sync) and host side (known from the batches)
    dev_sums = torch.zeros(3, device=dev, dtype=torch.float64)  # ce, correct, nonfinite
    host_sums = np.zeros(3, dtype=np.float64)                     # masked, real, padded
    last_tot = np.zeros(6)
    last_report_t = time.time()
    t_start = time.time()
    session_steps = 0
    last_loss: float | None = st.get("last_loss") if st else None
    last_acc: float | None = None
    last_eval: dict[str, Any] | None = None
    checkpoints: list[str] = []
    last_good = st.get("weights_path") if st else None
    stopped: str | None = None
    step = start_step

    def totals() -> np.ndarray:
        t = torch.cat([dev_sums, torch.from_numpy(host_sums).to(dev)])
        if distributed:
            dist.all_reduce(t)
        return t.cpu().numpy()

    def check_finite(tot: np.ndarray, at: int) -> None:
        if tot[2] > 0:
            msg = (f"loss became NaN/inf by step {at}; stopping. The last good checkpoint is "
                   f"{last_good or '(none written yet)'} and the training state {state_path if last_good else ''} "
                   f"is from that step. Lower --learning_rate, set --grad_clip 1.0, or drop --bf16, then --resume.")
            if is0:
                metrics.write({"event": "diverged", "step": at, "time": time.time()})
            raise PretrainError(msg)

    def save(at: int, final: bool) -> None:
        nonlocal last_good
        tot = totals()
        check_finite(tot, at)
        rng = [_rng_state(dev)]
        if distributed:
            gathered: list[Any] = [None] * W
            dist.all_gather_object(gathered, rng[0], group=ctrl_group)
            rng = gathered
        if not is0:
            return
        wpath = f"{cfg.output_model_path}-{at}"
        meta = {"step": at, "total_steps": cfg.total_steps, "tokens_seen": tokens_seen + int(tot[4]),
                "final_loss": last_loss, "mlm_acc": last_acc, "dataset": os.path.basename(
                    os.path.normpath(cfg.dataset_path)), "dataset_hash": ds.content_hash, "seq_length": ds.seq_length,
                "batch_size": cfg.global_batch, "learning_rate": cfg.learning_rate, "mask_rate": cfg.mask_rate,
                "bf16": cfg.bf16, "init": cfg.init, "pretrained_from": cfg.pretrained_model_path,
                "eval_loss": (last_eval or {}).get("loss"), "eval_mlm_acc": (last_eval or {}).get("mlm_accuracy"),
                "final": final, "vocab_sha256": vocab_sha, "vocab_path": os.path.abspath(vp), "seed": cfg.seed}
        meta = {k: v for k, v in meta.items() if v is not None}
        save_native(wpath, raw_model.state_dict(), mc, meta)
        state = {"format": STATE_FORMAT, "version": STATE_VERSION, "step": at,
                 "tokens_seen": meta["tokens_seen"], "last_loss": last_loss, "weights_path": wpath,
                 "resume_key": cfg.resume_key(), "pretrain_config": asdict(cfg), "model_config": mc.to_dict(),
                 "dataset_hash": ds.content_hash, "dataset_name": meta["dataset"], "rng": rng,
                 "model": {k: v.detach().cpu() for k, v in raw_model.state_dict().items()},
                 "optimizer": optimizer.state_dict()}
        with atomic_write(state_path, "wb") as f:
            torch.save(state, f)
        if wpath not in checkpoints:
            checkpoints.append(wpath)
        last_good = wpath
        metrics.write({"event": "checkpoint", "step": at, "path": wpath, "state": state_path, "time": time.time()})
        say(f"saved {wpath} and {state_path}")

    cpu_checks = dev.type == "cpu"  # a host read is free on CPU: check for NaN every step
    stopper = _Stop()
    try:
        with stopper:
            while step < cfg.total_steps:
                micro = [src.next() for _ in range(A)]
                n_masked = sum(b.num_masked for b in micro)
                if distributed:  # global masked-token count; a non-blocking copy + async all-reduce on GPU
                    count = torch.tensor([float(n_masked)], pin_memory=dev.type == "cuda").to(dev, non_blocking=True)
                    dist.all_reduce(count)
                    scale = W / count.clamp(min=1.0)
                else:
                    scale = 1.0 / max(1, n_masked)
                f = lr_factor(step, cfg.total_steps, cfg.warmup)
                for g in optimizer.param_groups:
                    g["lr"] = cfg.learning_rate * f
                for m, b in enumerate(micro):
                    if b.pinned is not None:
                        t = {k: (v.to(dev, non_blocking=True) if v is not None else None) for k, v in b.pinned.items()}
                    else:
                        t = b.to_torch(dev)
                    sync_ctx = model.no_sync() if distributed and m < A - 1 else contextlib.nullcontext()
                    with sync_ctx:
                        with amp:
                            if opts.unpad:
                                logits = fwd(t["input_ids"], t["attention_mask"] if b.has_padding else None,
                                             t["masked_positions"], t["real_index"], t["masked_real_index"])
                            else:
                                logits = fwd(t["input_ids"], t["attention_mask"] if b.has_padding else None, None,
                                             masked_positions=t["masked_positions"]).logits
                        logits = logits.float()
                        ce = F.cross_entropy(logits, t["labels"], reduction="sum")
                        if opts.debug_nan_at_step is not None and step + 1 == opts.debug_nan_at_step:
                            ce = ce * float("nan")
                        (ce * scale).sum().backward()
                    with torch.no_grad():
                        dev_sums[0] += ce.detach().double()
                        dev_sums[1] += (logits.detach().argmax(-1) == t["labels"]).sum()
                        dev_sums[2] += (~torch.isfinite(ce.detach())).double()
                    host_sums += (b.num_masked, b.real_tokens, b.padded_tokens)
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.grad_clip, foreach=True)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                session_steps += 1
                if bar is not None:
                    bar.update(1)
                if opts.debug_step_sleep:
                    time.sleep(opts.debug_step_sleep)

                # ---- stop decisions, agreed by all ranks
                want_stop = 0.0
                if stopper.signal is not None:
                    want_stop = 1.0
                elif opts.stop_after_steps is not None and session_steps >= opts.stop_after_steps:
                    want_stop = 2.0
                elif opts.time_budget_s is not None and time.time() - t_start >= opts.time_budget_s:
                    want_stop = 3.0
                bad = float(dev_sums[2].item()) if cpu_checks else 0.0
                if distributed:
                    ctl = torch.tensor([want_stop, bad], dtype=torch.float64)
                    dist.all_reduce(ctl, op=dist.ReduceOp.MAX, group=ctrl_group)
                    want_stop, bad = float(ctl[0]), float(ctl[1])
                if bad > 0:
                    check_finite(np.array([0, 0, bad, 0, 0, 0]), step)

                if step % opts.report_steps == 0 or step == cfg.total_steps:
                    tot = totals()
                    check_finite(tot, step)
                    d = tot - last_tot
                    now = time.time()
                    dt = max(1e-9, now - last_report_t)
                    last_tot, last_report_t = tot, now
                    last_loss = float(d[0] / max(1.0, d[3]))
                    last_acc = float(d[1] / max(1.0, d[3]))
                    real_s, pad_s = d[4] / dt, d[5] / dt
                    mfu = fpt * real_s / (peak * W) if peak > 0 else float("nan")
                    el = now - t_start
                    eta = el / max(1, session_steps) * (cfg.total_steps - step)
                    rec = {"event": "report", "step": step, "loss": last_loss, "mlm_accuracy": last_acc,
                           "lr": cfg.learning_rate * f, "real_tokens_per_s": real_s, "padded_tokens_per_s": pad_s,
                           "mfu": mfu, "elapsed_s": el, "eta_s": eta, "masked_tokens": int(d[3]),
                           "tokens_seen": tokens_seen + int(tot[4]), "time": now}
                    line = (f"step {step}/{cfg.total_steps} | loss {last_loss:.4f} | acc {last_acc:.3f} | "
                            f"lr {cfg.learning_rate * f:.2e} | real tok/s {human_count(real_s)} | padded tok/s "
                            f"{human_count(pad_s)} | MFU {100 * mfu:.1f}% | elapsed {format_duration(el)} | "
                            f"ETA {format_duration(eta)}")
                    if eval_ds is not None and (step % (opts.eval_steps or opts.report_steps) == 0
                                                or step == cfg.total_steps):
                        last_eval = evaluate(raw_model, eval_ds, special, eval_mcfg, B, dev, amp,
                                             opts.eval_max_instances, opts.pad_to_multiple_of, step=step)
                        rec.update(eval_loss=last_eval["loss"], eval_mlm_accuracy=last_eval["mlm_accuracy"])
                        line += f" | eval loss {last_eval['loss']:.4f} acc {last_eval['mlm_accuracy']:.3f}"
                    if is0:
                        metrics.write(rec)
                        say(line)
                        if bar is not None:
                            bar.set_postfix(loss=f"{last_loss:.3f}", acc=f"{last_acc:.3f}")
                        if tb is not None:
                            for k in ("loss", "mlm_accuracy", "lr", "real_tokens_per_s", "mfu", "eval_loss",
                                      "eval_mlm_accuracy"):
                                if k in rec:
                                    tb.add_scalar(f"pretrain/{k}", rec[k], step)

                if want_stop and step < cfg.total_steps:
                    stopped = {1.0: "signal", 2.0: "stop_after_steps", 3.0: "time_budget"}[want_stop]
                    if eval_ds is not None and stopped == "time_budget" and (last_eval or {}).get("step") != step:
                        last_eval = evaluate(raw_model, eval_ds, special, eval_mcfg, B, dev, amp,
                                             opts.eval_max_instances, opts.pad_to_multiple_of, step=step)
                        metrics.write({"event": "eval", "step": step, "eval_loss": last_eval["loss"],
                                       "eval_mlm_accuracy": last_eval["mlm_accuracy"], "time": time.time()})
                        say(f"step {step} | eval loss {last_eval['loss']:.4f} acc {last_eval['mlm_accuracy']:.3f}")
                    if is0:
                        say(f"stopping at step {step} ({stopped}); writing a checkpoint")
                    save(step, final=False)
                    break
                if step % opts.save_checkpoint_steps == 0 or step == cfg.total_steps:
                    save(step, final=step == cfg.total_steps)
    finally:
        src.close()
        if bar is not None:
            bar.close()
        if tb is not None:
            tb.close()

    tot = totals()
    wall = time.time() - t_start
    result = {"final_loss": last_loss, "final_mlm_accuracy": last_acc, "steps": step,
              "tokens_seen": tokens_seen + int(tot[4]), "checkpoints": checkpoints,
              "last_checkpoint": last_good, "state_path": state_path, "metrics_path": metrics_path,
              "wall_time_s": wall, "stopped": stopped, "eval": last_eval, "matmul_peak_flops": peak}
    if is0:
        metrics.write({"event": "end", **result, "time": time.time()})
        say(f"done: step {step}, loss {last_loss if last_loss is None else round(last_loss, 4)}, "
            f"{human_count(result['tokens_seen'])} tokens seen, wall {format_duration(wall)}; last checkpoint {last_good}")
    metrics.close()
    return result


@torch.no_grad()
def evaluate(model: torch.nn.Module, ds: MlmDataset, special: SpecialIds, mcfg: MaskingConfig, batch_size: int,
             dev: torch.device, amp, max_instances: int, pad_multiple: int, step: int = 0) -> dict[str, Any]:
    """Held-out MLM loss/accuracy with fixed masks (mask epoch ``EVAL_EPOCH``), in dataset order."""
    was = model.training
    model.eval()
    n = min(len(ds), max_instances) if max_instances else len(ds)
    ce_sum = correct = masked = 0.0
    for a in range(0, n, batch_size):
        idx = np.arange(a, min(n, a + batch_size))
        inst = [ds[int(i)] for i in idx]
        ws = [ds.word_start_flags(int(i)) for i in idx] if mcfg.whole_word else None
        b = collate(inst, idx, EVAL_EPOCH, special, mcfg, ws, pad_multiple)
        t = b.to_torch(dev)
        with amp:
            out = model(t["input_ids"], t["attention_mask"] if b.has_padding else None, None,
                        masked_positions=t["masked_positions"])
        logits = out.logits.float()
        ce_sum += float(F.cross_entropy(logits, t["labels"], reduction="sum"))
        correct += float((logits.argmax(-1) == t["labels"]).sum())
        masked += b.num_masked
    model.train(was)
    return {"loss": ce_sum / max(1.0, masked), "mlm_accuracy": correct / max(1.0, masked), "instances": n,
            "masked_tokens": int(masked), "step": step}


__all__ = ["run_worker", "spawn_entry", "worker_from_env", "preflight", "Stream", "BatchSource", "lr_factor",
           "measure_matmul_peak", "evaluate", "load_state", "STATE_FORMAT"]
