"""One pretraining process: the MLM task on the training engine (``miniroberta.engine``).

``run_worker`` builds the dataset, model and :class:`MlmTask`, and hands them to
``engine.Trainer.fit``; ``spawn_entry`` / ``worker_from_env`` are the DDP entry points of
``--world_size`` spawns and ``torchrun``. Data order and masks: ``pretrain.batches``.

Loss: summed cross-entropy over the masked tokens of the whole optimizer step (all ranks,
all micro-batches) divided by their count -- token-weighted, so two processes with batch B
equal one process with batch 2B (the reference averages per-batch means instead).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from miniroberta.data.dataset import DatasetError, MlmDataset
from miniroberta.data.masking import EVAL_EPOCH, Batch, MaskingConfig, SpecialIds, collate, eval_masking
from miniroberta.engine.device import device_info, measure_matmul_peak
from miniroberta.modeling.loss import cross_entropy_sum
from miniroberta.engine.metrics import RunLog
from miniroberta.engine.precision import resolve_precision
from miniroberta.engine.threads import configure_threads
from miniroberta.engine.trainer import STATE_FORMAT, LoopOptions, Trainer, TrainingError
from miniroberta.integrity import IntegrityError, verified_torch_load
from miniroberta.interop.checkpoint import CheckpointError, find_model_dir, load_into, load_model, load_weights, save_native
from miniroberta.modeling.bert import build_mlm, flops_per_token
from miniroberta.modeling.config import ConfigError, ModelConfig, load_config, replace
from miniroberta.modeling.tokenizer import BertTokenizer, read_vocab
from miniroberta.modeling.unpad import UnpaddedMLM
from miniroberta.outputs import run_files
from miniroberta.pretrain.batches import BatchSource, Stream
from miniroberta.pretrain.config import PretrainConfig, PretrainError, RunOptions, metrics_path_for, state_path_for
from miniroberta.utils import atomic_write, format_duration, human_count, sha256_file

NAN_ADVICE = ("The training state is from that step too. To go on, start a new run from those weights with "
              "--pretrained_model_path and a lower --learning_rate or --grad_clip 1.0 (or --precision fp32); "
              "--resume continues with the same settings and would diverge again.")


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
    if opts.resume and not os.path.isfile(sp):
        leftovers = [p for p in run_files(cfg.output_model_path) if not p.endswith(".sha256.json")]
        if opts.resume is True or leftovers:
            raise FileNotFoundError(
                f"--resume: no training state {sp} (it is written beside the checkpoints of a run with the same "
                f"--output_model_path)" + (f", but {len(leftovers)} step checkpoint(s) of an earlier run are there "
                f"(e.g. {leftovers[-1]}): continue from those weights with --pretrained_model_path {leftovers[-1]} "
                f"and a new --output_model_path, or pass --overwrite to move them aside" if leftovers else ""))


# --------------------------------------------------------------------------- state
def load_state(path: str) -> dict[str, Any]:
    try:
        st = verified_torch_load(path, map_location="cpu", weights_only=True)
    except IntegrityError as e:
        raise PretrainError(f"{e}; start a new run from the last good weights with --pretrained_model_path") from None
    except Exception as e:
        raise PretrainError(f"{path}: cannot read the training state ({type(e).__name__}: {e}); it may be corrupt -- "
                            f"start again without --resume, or from the last weights with --pretrained_model_path") from None
    if not isinstance(st, dict) or st.get("format") != STATE_FORMAT:
        raise PretrainError(f"{path}: not a miniroberta training state")
    return st


def check_resume(state: dict[str, Any], path: str, cfg: PretrainConfig, mc: ModelConfig, ds: MlmDataset) -> None:
    """Refuse to continue a state under another dataset, model config or result-changing setting."""
    st = state.get("task", {})
    was = state.get("precision", "fp32")
    if cfg.precision not in ("auto", was):
        raise PretrainError(f"refusing to resume: {path} was trained with --precision {was}, not {cfg.precision}. "
                            f"Resume with --precision {was} (or auto), or start a new run with --pretrained_model_path.")
    if st["dataset_hash"] != ds.content_hash:
        raise PretrainError(
            f"refusing to resume: {path} was trained on dataset {st.get('dataset_name')!r} (content hash "
            f"{st['dataset_hash'][:12]}…) but --dataset_path {cfg.dataset_path} has content hash {ds.content_hash[:12]}…. "
            f"Resume with the same dataset, or start a new run from the weights with --pretrained_model_path "
            f"{state.get('weights_path')}")
    old_mc = st["model_config"]
    diff = [k for k in set(old_mc) | set(mc.to_dict()) if old_mc.get(k) != mc.to_dict().get(k)]
    if diff:
        raise PretrainError(f"refusing to resume: the model config differs from the one in {path}: " + ", ".join(
            f"{k} {old_mc.get(k)!r} (state) vs {mc.to_dict().get(k)!r} (now)" for k in sorted(diff)))
    # states written before a setting existed recorded its default
    old = {"correct_bias": True, "pretrained_model_path": None, **st["resume_key"]}
    now = cfg.resume_key()
    diff = [k for k in set(old) | set(now) if old.get(k) != now.get(k)]
    if "pretrained_model_path" in diff:
        raise PretrainError(
            f"refusing to resume: --pretrained_model_path {now['pretrained_model_path']} is used only when a run starts, "
            f"and {path} started from {old['pretrained_model_path'] or 'random initialisation'}. Resume with the "
            f"original command (drop or correct --pretrained_model_path), or start a new run from those weights "
            f"with another --output_model_path.")
    if diff:
        raise PretrainError(f"refusing to resume: settings that change the result differ from {path}: " + ", ".join(
            f"--{k} {old.get(k)!r} (state) vs {now.get(k)!r} (now)" for k in sorted(diff))
            + ". Use the original settings, or start a new run with --pretrained_model_path.")


# --------------------------------------------------------------------------- distributed plumbing
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


# --------------------------------------------------------------------------- the MLM task
class MlmTask:
    """Masked-LM pretraining for the engine: batches from the stream, loss on the masked
    positions only (fused cross-entropy), held-out evaluation, native checkpoints."""
    name = "pretrain"

    def __init__(self, cfg: PretrainConfig, opts: RunOptions, model: nn.Module, mc: ModelConfig, ds: MlmDataset,
                 src: BatchSource, accumulation: int, device: torch.device, meta: dict[str, Any],
                 eval_ds: MlmDataset | None, eval_mcfg: MaskingConfig | None, special: SpecialIds) -> None:
        self.cfg, self.opts, self.model, self.mc, self.ds, self.src = cfg, opts, model, mc, ds, src
        self.A, self.device, self.meta = accumulation, device, meta
        self.eval_ds, self.eval_mcfg, self.special = eval_ds, eval_mcfg, special
        self.last_eval: dict[str, Any] | None = None
        self.teacher: nn.Module | None = None    # UnpaddedMLM over the frozen teacher (--teacher)

    def batches(self, step: int) -> list[Batch]:
        assert self.src.j == step * self.A, "the batch stream is out of step with the trainer"
        return [self.src.next() for _ in range(self.A)]

    def loss(self, model: nn.Module, b: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        if b.pinned is not None:
            t = {k: (v.to(self.device, non_blocking=True) if v is not None else None) for k, v in b.pinned.items()}
        else:
            t = b.to_torch(self.device)
        mask = t["attention_mask"] if b.has_padding else None
        if self.teacher is not None:
            return self.distill_loss(model, t, mask)
        if self.opts.unpad:
            return model(t["input_ids"], mask, t["masked_positions"], t["real_index"], t["masked_real_index"],
                         labels=t["labels"])
        logits = model(t["input_ids"], mask, None, masked_positions=t["masked_positions"]).logits
        return cross_entropy_sum(logits, t["labels"])

    def distill_loss(self, model: nn.Module, t: dict[str, torch.Tensor],
                     mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """MLM loss + distill_alpha * T^2 * KL(teacher || student), summed over the masked
        positions; the teacher sees the same masked input, in inference mode."""
        args = (t["input_ids"], mask, t["masked_positions"], t["real_index"], t["masked_real_index"])
        logits = model(*args) if self.opts.unpad else \
            model(t["input_ids"], mask, None, masked_positions=t["masked_positions"]).logits
        with torch.no_grad():
            teacher = self.teacher(*args)
        ce, correct = cross_entropy_sum(logits, t["labels"])
        return ce + self.cfg.distill_alpha * mlm_kl_sum(logits, teacher, self.cfg.distill_temperature), correct

    def evaluate(self, trainer: Trainer, log: RunLog) -> dict[str, Any]:
        self.last_eval = evaluate(self.model, self.eval_ds, self.special, self.eval_mcfg, self.cfg.batch_size,
                                  self.device, self.opts.eval_max_instances, self.opts.pad_to_multiple_of,
                                  step=trainer.step)
        return self.last_eval

    def report_fields(self, trainer: Trainer, log: RunLog) -> dict[str, Any]:
        every = self.opts.eval_steps or self.opts.report_steps
        if self.eval_ds is None or not (trainer.step % every == 0 or trainer.step == trainer.total_steps):
            return {}
        ev = self.evaluate(trainer, log)
        return {"eval_loss": ev["loss"], "eval_accuracy": ev["mlm_accuracy"]}

    def after_step(self, trainer: Trainer, log: RunLog) -> None:
        pass

    def eval_before_stop(self, trainer: Trainer, log: RunLog) -> None:
        """A time-budget stop ends a stage: measure the held-out loss of its last weights."""
        if self.eval_ds is not None and (self.last_eval or {}).get("step") != trainer.step:
            ev = self.evaluate(trainer, log)
            log.write("eval", trainer.step, eval_loss=ev["loss"], eval_accuracy=ev["mlm_accuracy"])
            log.say(f"step {trainer.step} | eval loss {ev['loss']:.4f} acc {ev['mlm_accuracy']:.3f}")

    def save(self, trainer: Trainer, final: bool) -> str:
        wpath = f"{self.cfg.output_model_path}-{trainer.step}"
        meta = {**self.meta, "step": trainer.step, "tokens_seen": trainer.tokens_at_save, "final_loss": trainer.last_loss,
                "mlm_acc": trainer.last_accuracy, "eval_loss": (self.last_eval or {}).get("loss"),
                "eval_mlm_acc": (self.last_eval or {}).get("mlm_accuracy"), "final": final,
                "precision": trainer.precision.kind}
        save_native(wpath, trainer.precision.state_dict(), self.mc, {k: v for k, v in meta.items() if v is not None})
        return wpath

    def state_dict(self) -> dict[str, Any]:
        return {"resume_key": self.cfg.resume_key(), "pretrain_config": asdict(self.cfg),
                "model_config": self.mc.to_dict(), "dataset_hash": self.ds.content_hash,
                "dataset_name": self.meta["dataset"]}


def mlm_kl_sum(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """sum over rows of T^2 * KL(softmax(teacher / T) || softmax(student / T)), in float32."""
    t = float(temperature)
    lt = F.log_softmax(teacher.float() / t, -1)
    ls = F.log_softmax(student.float() / t, -1)
    return (lt.exp() * (lt - ls)).sum() * (t * t)


def load_teacher(cfg: PretrainConfig, mc: ModelConfig, vocab_sha: str, dev: torch.device, opts: RunOptions) -> nn.Module:
    """The frozen MLM teacher (same vocabulary), wrapped like the student's forward."""
    path = cfg.teacher_path
    try:
        teacher = load_model(path, "mlm")[0]
    except (CheckpointError, ConfigError, FileNotFoundError) as e:
        raise PretrainError(f"--teacher {path}: {e}") from None
    if teacher.config.vocab_size != mc.vocab_size:
        raise PretrainError(f"--teacher {path}: vocab_size {teacher.config.vocab_size} differs from the student's "
                            f"{mc.vocab_size}; distil between models of one vocabulary")
    d = find_model_dir(path) if os.path.isdir(path) else None
    if d and os.path.isfile(os.path.join(d, "vocab.txt")) and BertTokenizer(os.path.join(d, "vocab.txt")).sha256 != vocab_sha:
        raise PretrainError(f"--teacher {path}: its vocab.txt differs from the dataset's vocabulary")
    teacher.to(dev).eval().requires_grad_(False)
    return UnpaddedMLM(teacher, bucket=False) if opts.unpad else teacher


# --------------------------------------------------------------------------- the worker
def run_worker(cfg: PretrainConfig, opts: RunOptions, rank: int, world_size: int, local_rank: int,
               device: str, local_processes: int = 1) -> dict[str, Any]:
    dev = torch.device(device)
    is0 = rank == 0
    threads = configure_threads(opts.threads, share=local_processes)
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

    st = None
    if opts.resume is True or (opts.resume == "auto" and os.path.isfile(state_path)):
        st = load_state(state_path)
        check_resume(st, state_path, cfg, mc, ds)

    model = build_mlm(mc, init=cfg.init, seed=cfg.seed)
    if st is not None:
        load_into(model, st["model"], state_path)
    elif cfg.pretrained_model_path:
        try:
            _, sd, _ = load_weights(cfg.pretrained_model_path)
        except (CheckpointError, ConfigError) as e:
            raise ValueError(str(e)) from None
        load_into(model, sd, cfg.pretrained_model_path,
                  allow_unexpected=("bert.pooler.", "cls.seq_relationship.", "classifier."))
    model.to(dev).train()

    if st is not None:
        precision, why = st.get("precision", "fp32"), "as the training state"
    else:
        precision, why = resolve_precision(cfg.precision, dev)
        if world_size > 1:  # every rank must agree: rank 0 decides
            box = [precision, why]
            dist.broadcast_object_list(box, src=0)
            precision, why = box
    forward: nn.Module = UnpaddedMLM(model, bucket=opts.bucket) if opts.unpad else model
    trainer = Trainer(model, optim=cfg.optim(), total_steps=cfg.total_steps, device=dev, precision=precision,
                      forward=forward, rank=rank, world_size=world_size)
    if opts.compile:
        trainer.forward = torch.compile(trainer.forward, dynamic=True)
    # the teacher is built before the dropout RNG is seeded or restored: building it draws random numbers
    # (its init before the weights are loaded), which would otherwise shift a resumed run's dropout masks
    teacher = load_teacher(cfg, mc, vocab_sha, dev, opts) if cfg.teacher_path else None
    if st is not None:
        trainer.load_state_dict(st)
    else:  # dropout RNG: per rank (restored from the state on resume with the same world size)
        torch.manual_seed(cfg.seed * 1000003 + 17 + rank)

    A, B, W = cfg.accumulation_steps, cfg.batch_size, world_size
    src = BatchSource(ds, Stream(len(ds), cfg.seed), special, mcfg, B, W, rank, trainer.step * A,
                      opts.num_workers, opts.pad_to_multiple_of, pin=dev.type == "cuda")
    eval_ds = eval_mcfg = None
    if opts.eval_dataset_path and is0:
        eval_ds = open_dataset(opts.eval_dataset_path, vp, vocab_sha)
        eval_mcfg = eval_masking()
    meta = {"total_steps": cfg.total_steps, "dataset": os.path.basename(os.path.normpath(cfg.dataset_path)),
            "dataset_hash": ds.content_hash, "seq_length": ds.seq_length, "batch_size": cfg.global_batch,
            "learning_rate": cfg.learning_rate, "mask_rate": cfg.mask_rate, "init": cfg.init,
            "pretrained_from": cfg.pretrained_model_path, "vocab_sha256": vocab_sha,
            "vocab_path": os.path.abspath(vp), "seed": cfg.seed}
    meta = {k: v for k, v in meta.items() if v is not None}
    task = MlmTask(cfg, opts, model, mc, ds, src, A, dev, meta, eval_ds, eval_mcfg, special)
    if teacher is not None:
        task.teacher = teacher
        meta["teacher"] = os.path.abspath(cfg.teacher_path)

    peak = measure_matmul_peak(dev, torch.bfloat16 if precision == "bf16" else torch.float32) if is0 else 0.0
    metrics_path = metrics_path_for(cfg, opts)
    run_log = RunLog(metrics_path, enabled=is0, name="pretrain", total=cfg.total_steps, initial=trainer.step,
                     progress=opts.progress, tensorboard=opts.tensorboard)
    n_params = sum(p.numel() for p in model.parameters())
    run_log.say(f"pretrain {mc.name} ({human_count(n_params)} params) on {ds.path}: {len(ds)} instances, seq "
                f"{ds.seq_length}, global batch {cfg.global_batch} ({W} x {B} x {A}), steps {trainer.step}->"
                f"{cfg.total_steps}, device {dev}, precision {precision} ({why}), matmul peak {peak / 1e9:.1f} GFLOP/s"
                + (f", resumed from {state_path}" if st else "")
                + (f", weights from {cfg.pretrained_model_path}" if cfg.pretrained_model_path and st is None else ""))
    run_log.write("start", trainer.step, pretrain_config=asdict(cfg), model_config=mc.to_dict(), world_size=W,
                  device=device_info(dev), precision=precision, precision_reason=why, matmul_peak_flops=peak,
                  dataset_hash=ds.content_hash, threads=threads)
    if eval_ds is not None and trainer.step == 0:  # the starting point, for "loss fell from ... to ..."
        ev = task.evaluate(trainer, run_log)
        run_log.write("eval", 0, eval_loss=ev["loss"], eval_accuracy=ev["mlm_accuracy"])
        run_log.say(f"step 0 | eval loss {ev['loss']:.4f} acc {ev['mlm_accuracy']:.3f}")

    loop = LoopOptions(report_steps=opts.report_steps, save_steps=opts.save_checkpoint_steps,
                       time_budget_s=opts.time_budget_s, stop_after_steps=opts.stop_after_steps,
                       flops_per_unit=flops_per_token(mc, ds.seq_length, cfg.mask_rate), peak_flops=peak,
                       debug_nan_at_step=opts.debug_nan_at_step, debug_step_sleep=opts.debug_step_sleep)
    if st is not None:
        trainer.last_checkpoint = st.get("weights_path")
    try:
        res = trainer.fit(task, loop, run_log, state_path, advice=NAN_ADVICE, before_stop=task.eval_before_stop)
    except TrainingError as e:
        raise PretrainError(str(e)) from None
    finally:
        src.close()
    result = {"final_loss": res.last_loss, "final_mlm_accuracy": res.last_accuracy, "steps": res.steps,
              "tokens_seen": res.tokens_seen, "checkpoints": res.checkpoints, "last_checkpoint": res.last_checkpoint,
              "state_path": state_path, "metrics_path": metrics_path, "wall_time_s": res.wall_time_s,
              "stopped": res.stopped, "eval": task.last_eval, "matmul_peak_flops": peak, "precision": precision}
    run_log.write("end", res.steps, **{k: v for k, v in result.items() if k != "eval"}, eval=task.last_eval)
    loss = "?" if res.last_loss is None else f"{res.last_loss:.4f}"
    run_log.say(f"done: step {res.steps}, loss {loss}, {human_count(res.tokens_seen)} tokens seen, wall "
                f"{format_duration(res.wall_time_s)}; last checkpoint {res.last_checkpoint}")
    run_log.close()
    return result


@torch.no_grad()
def evaluate(model: torch.nn.Module, ds: MlmDataset, special: SpecialIds, mcfg: MaskingConfig, batch_size: int,
             dev: torch.device, max_instances: int, pad_multiple: int, step: int = 0) -> dict[str, Any]:
    """Held-out MLM loss/accuracy with fixed masks (mask epoch ``EVAL_EPOCH``; ``mcfg`` is
    ``eval_masking()`` in training runs: every chosen position is ``[MASK]``), in dataset order,
    in the model's own precision."""
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
        logits = model(t["input_ids"], t["attention_mask"] if b.has_padding else None, None,
                       masked_positions=t["masked_positions"]).logits
        loss, ok = cross_entropy_sum(logits, t["labels"])
        ce_sum += float(loss)
        correct += float(ok)
        masked += b.num_masked
    model.train(was)
    return {"loss": ce_sum / max(1.0, masked), "mlm_accuracy": correct / max(1.0, masked), "instances": n,
            "masked_tokens": int(masked), "step": step}


__all__ = ["run_worker", "spawn_entry", "worker_from_env", "preflight", "MlmTask", "evaluate", "load_state",
           "model_config", "masking_config", "open_dataset"]
