"""Pretraining settings: ``PretrainConfig`` (changes the result; saved in the training state and
checked on resume) and ``RunOptions`` (speed, logging, stopping, placement: never the result).

Both are the single source of their defaults, help and checks: ``miniroberta pretrain``'s options are
generated from them (``miniroberta.settings``), and ``validate()`` names every bad value at once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from miniroberta.engine.optim import OptimConfig
from miniroberta.engine.precision import PRECISIONS
from miniroberta.engine.trainer import TrainingError
from miniroberta.settings import option, result_dict, validate

PATHS, SCHEDULE, OPTIM, MASKING, DISTILL = "paths", "schedule", "optimization", "masking", "distillation (general, MLM)"
DIST, SPEED = "distributed", "speed and logging"


class PretrainError(TrainingError):
    """Training cannot start or continue (bad resume, divergence, missing GPUs ...)."""


def _resume_arg(s: str) -> bool | str:
    v = s.strip().lower()
    if v in ("yes", "true", "1"):
        return True
    if v in ("no", "false", "0"):
        return False
    if v == "auto":
        return "auto"
    raise ValueError(f"--resume takes yes or auto, got {s!r}")


@dataclass(kw_only=True)
class PretrainConfig:
    """Settings that change the result. Saved in the training state; resume checks them."""
    dataset_path: str = option(
        "dataset.pt", "dataset directory written by `miniroberta preprocess`", effect="result", group=PATHS,
        resume=False)   # its content hash is checked on resume instead
    output_model_path: str = option(
        help="checkpoints are written as <this>-<step> (native safetensors); training state as <this>.state.pt",
        effect="result", group=PATHS, resume=False)
    vocab_path: str | None = option(
        None, "vocab.txt; must be the one the dataset was built with (its hash is checked)", effect="result",
        group=PATHS, resume=False, default_text="required")
    config_path: str = option(
        "base", "model config: a preset (tiny, medium, L8_H512 ...), a UER-py config JSON or an HF config.json",
        effect="result", group=PATHS, resume=False)   # the resolved model config is compared instead
    pretrained_model_path: str | None = option(
        None, "initial weights only (fresh optimizer and warmup): native, HF directory or UER checkpoint; a resumed "
        "run must name the same", effect="result", group=PATHS, default_text="none: random init")
    total_steps: int = option(100000, "optimizer updates", effect="result", group=SCHEDULE, ge=1)
    batch_size: int = option(32, "instances per process per micro-batch", effect="result", group=SCHEDULE, ge=1,
                             resume=False)   # the global batch is compared instead
    world_size: int = option(1, "total processes", effect="result", group=DIST, ge=1, resume=False)
    accumulation_steps: int = option(1, "micro-batches per optimizer update", effect="result", group=SCHEDULE, ge=1,
                                     resume=False)
    learning_rate: float = option(2e-5, "peak learning rate (the UER-py miniatures used 1e-4 at seq 128, 5e-5 at "
                                  "seq 512)", effect="result", group=OPTIM, gt=0)
    warmup: float = option(0.1, "fraction of --total_steps with linear warmup", effect="result", group=OPTIM,
                           ge=0, le=1)
    weight_decay: float = option(0.01, "AdamW weight decay of matrices (not biases or LayerNorm)", effect="result",
                                 group=OPTIM, ge=0)
    grad_clip: float = option(0.0, "max global gradient norm (0: off, as the reference)", effect="result",
                              group=OPTIM, ge=0)
    correct_bias: bool = option(True, "AdamW without bias correction, as UER-py's pretraining (correct_bias=False): "
                                "the first ~1/(1-beta2) updates are larger than with it", effect="result",
                                group=OPTIM, flag="--no_correct_bias")
    mask_rate: float = option(0.15, "fraction of tokens chosen for prediction", effect="result", group=MASKING,
                              gt=0, lt=1)
    seed: int = option(7, "seed of the initialisation, data order, masks and dropout", effect="result",
                       group=SCHEDULE)
    init: str = option("uer", "weight init of a fresh model: uer = N(0, 0.02) biases too, hf = zero biases",
                       effect="result", group=OPTIM, choices=("uer", "hf"))
    dropout: float | None = option(None, "override the model config's dropout", effect="result", group=OPTIM,
                                   ge=0, lt=1, default_text="the model config's")
    layer_norm_type: str | None = option(None, "override the model config's LayerNorm (uer: (x-mean)/(std+eps))",
                                         effect="result", group=OPTIM, choices=("hf", "uer"),
                                         default_text="the model config's")
    precision: str = option(
        "auto", "bf16: bf16 compute with fp32 master weights; auto: bf16 where the hardware computes it natively "
        "(CUDA with bf16, AVX512-BF16 or AMX CPUs), else fp32 -- decided from the device, never by a timing; the "
        "choice and its reason are logged", effect="result", group=OPTIM, choices=PRECISIONS,
        resume=False)   # the resolved precision is compared instead
    whole_word_masking: bool | None = option(
        None, "mask whole words (needs a dataset built with --whole_word_masking)", effect="result", group=MASKING,
        default_text="as the dataset")
    span_masking: bool | None = option(None, "mask geometric spans", effect="result", group=MASKING,
                                       default_text="as the dataset")
    span_geo_prob: float = option(0.2, "span masking: the geometric distribution's p", effect="result",
                                  group=MASKING, gt=0, le=1)
    span_max_length: int = option(10, "span masking: the longest span", effect="result", group=MASKING, ge=1)
    # general (MLM) distillation: + distill_alpha * T^2 * KL(teacher || student) on the masked positions
    teacher_path: str | None = option(
        None, "a pretrained MLM teacher (checkpoint or HF dir, same vocab): adds distill_alpha * T^2 * "
        "KL(teacher || student) over the masked positions to the MLM loss", effect="result", group=DISTILL,
        flag="--teacher", aliases=("--teacher_path",), default_text="none")
    distill_alpha: float = option(1.0, "weight of the KL term", effect="result", group=DISTILL, ge=0)
    distill_temperature: float = option(1.0, "softmax temperature of the KL term", effect="result", group=DISTILL,
                                        gt=0)

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size * self.accumulation_steps

    def problems(self) -> list[str]:
        out = []
        if self.whole_word_masking and self.span_masking:
            out.append("--whole_word_masking and --span_masking are mutually exclusive; pick one")
        return out

    def validate(self) -> "PretrainConfig":
        return validate(self, "pretraining settings")

    def resume_key(self) -> dict[str, Any]:
        """What a resumed run must match: the result settings (``settings.result_dict``) and the global batch."""
        return {**result_dict(self), "global_batch": self.global_batch}

    def optim(self) -> OptimConfig:
        return OptimConfig(learning_rate=self.learning_rate, warmup=self.warmup, weight_decay=self.weight_decay,
                           adam_eps=1e-6, grad_clip=self.grad_clip, correct_bias=self.correct_bias)


@dataclass(kw_only=True)
class RunOptions:
    """Settings that do not change the trained weights (speed, logging, stopping, placement)."""
    save_checkpoint_steps: int = option(10000, "write a checkpoint and the training state every N steps",
                                        effect="speed", group=SCHEDULE, ge=1)
    report_steps: int = option(100, "log a progress line and a metrics record every N steps", effect="speed",
                               group=SCHEDULE, ge=1)
    resume: bool | str = option(
        False, "continue from <output_model_path>.state.pt ('auto': only if it exists)", effect="speed",
        group=SCHEDULE, const=True, parse=_resume_arg, metavar="{yes,auto}")
    overwrite: bool = option(False, "move an earlier run's state and step checkpoints aside (<name>.old-<time>) and "
                             "start over", effect="speed", group=SCHEDULE)
    time_budget_s: float | None = option(
        None, "stop cleanly after this many seconds of wall time, writing a checkpoint", effect="speed",
        group=SCHEDULE, gt=0, default_text="no limit")
    eval_dataset_path: str | None = option(
        None, "held-out dataset: loss/accuracy with fixed masks at report steps", effect="speed", group=SPEED,
        default_text="none")
    eval_max_instances: int = option(2048, "held-out instances scored", effect="speed", group=SPEED, ge=1)
    eval_steps: int | None = option(None, "evaluate every N steps", effect="speed", group=SPEED, ge=1,
                                    default_text="--report_steps")
    metrics_path: str | None = option(None, "JSONL metrics", effect="speed", group=SPEED,
                                      default_text="<output_model_path>.metrics.jsonl")
    tensorboard: str | None = option(None, "also write TensorBoard logs to this directory", effect="speed",
                                     group=SPEED, default_text="off")
    num_workers: int = option(1, "background batch-preparation threads (0: inline)", effect="speed", group=SPEED,
                              ge=0)
    compile: bool = option(False, "torch.compile the forward (dynamic shapes; slow to start on CPU)",
                           effect="speed", group=SPEED)
    device: str = option("auto", "where to train (auto: the first GPU if there is one)", effect="speed",
                         group=DIST, choices=("auto", "cpu", "cuda"))
    gpu_ranks: list[int] | None = option(None, "global ranks to start on this node's GPUs", effect="speed",
                                         group=DIST, default_text="all ranks, on GPUs if there are enough")
    master_ip: str | None = option(None, "tcp://HOST:PORT of rank 0", effect="speed", group=DIST,
                                   default_text="a free local port")
    backend: str | None = option(None, "process-group backend", effect="speed", group=DIST,
                                 choices=("nccl", "gloo"), default_text="nccl on GPUs, gloo on CPUs")
    pad_to_multiple_of: int = option(8, "pad sequence lengths to a multiple of this", effect="speed", group=SPEED,
                                     ge=1)
    unpad: bool = option(True, "run the padded forward (position-wise layers on padding too)", effect="speed",
                         group=SPEED)
    bucket: bool = option(True, "CPU: do not pad the packed rows to recurring shapes (see docs/performance.md)",
                          effect="speed", group=SPEED)
    threads: int | None = option(None, "torch intra-op threads per process", effect="speed", group=SPEED, ge=1,
                                 default_text="the cores this process may run on, shared among local processes")
    progress: bool = option(True, "no progress bar", effect="speed", group=SPEED)
    # test hooks (hidden on the command line)
    stop_after_steps: int | None = option(None, effect="speed", hidden=True, ge=1)
    debug_nan_at_step: int | None = option(None, effect="speed", hidden=True)
    debug_step_sleep: float = option(0.0, effect="speed", hidden=True, ge=0)

    def validate(self) -> "RunOptions":
        return validate(self, "run options")


def state_path_for(output_model_path: str) -> str:
    return f"{output_model_path}.state.pt"


def metrics_path_for(cfg: PretrainConfig, opts: RunOptions) -> str:
    return opts.metrics_path or f"{cfg.output_model_path}.metrics.jsonl"


__all__ = ["PretrainConfig", "RunOptions", "PretrainError", "state_path_for", "metrics_path_for"]
