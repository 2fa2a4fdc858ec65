"""Pretraining settings: ``PretrainConfig`` (changes the result; saved in the training state and
checked on resume) and ``RunOptions`` (speed, logging, stopping, placement: never the result)."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from miniroberta.engine.optim import OptimConfig
from miniroberta.engine.trainer import TrainingError


class PretrainError(TrainingError):
    """Training cannot start or continue (bad resume, divergence, missing GPUs ...)."""


@dataclass
class PretrainConfig:
    """Settings that change the result. Saved in the training state; resume checks them."""
    dataset_path: str
    output_model_path: str
    vocab_path: str | None = None
    config_path: str = "base"
    pretrained_model_path: str | None = None
    total_steps: int = 100000
    batch_size: int = 32               # per process (as the reference)
    world_size: int = 1
    accumulation_steps: int = 1
    learning_rate: float = 2e-5        # the reference's default; the card uses 1e-4 / 5e-5
    warmup: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 0.0             # 0 = off (the reference never clips)
    correct_bias: bool = True          # Adam bias correction (UER-py pretrains without: False)
    mask_rate: float = 0.15
    seed: int = 7
    init: str = "uer"                  # "uer": N(0, 0.02) biases too; "hf": zero biases
    dropout: float | None = None       # None: the model config's
    layer_norm_type: str | None = None  # None: the model config's
    precision: str = "auto"            # auto | fp32 | bf16 (bf16 compute, fp32 master weights)
    whole_word_masking: bool | None = None  # None: as the dataset (needs word_starts)
    span_masking: bool | None = None
    span_geo_prob: float = 0.2
    span_max_length: int = 10
    # general (MLM) distillation: + distill_alpha * T^2 * KL(teacher || student) on the masked positions
    teacher_path: str | None = None
    distill_alpha: float = 1.0
    distill_temperature: float = 1.0

    # fields whose change alters nothing once training has started / are checked another way
    # (precision: the resolved one is checked against the state instead)
    _RESUME_FREE = ("dataset_path", "output_model_path", "vocab_path", "config_path", "pretrained_model_path",
                    "batch_size", "world_size", "accumulation_steps", "precision")

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size * self.accumulation_steps

    def resume_key(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in self._RESUME_FREE}
        d["global_batch"] = self.global_batch
        return d

    def optim(self) -> OptimConfig:
        return OptimConfig(learning_rate=self.learning_rate, warmup=self.warmup, weight_decay=self.weight_decay,
                           adam_eps=1e-6, grad_clip=self.grad_clip, correct_bias=self.correct_bias)

    def validate(self) -> None:
        pos = ("total_steps", "batch_size", "world_size", "accumulation_steps")
        for k in pos:
            if int(getattr(self, k)) < 1:
                raise ValueError(f"--{k} must be >= 1, got {getattr(self, k)}")
        if not 0.0 <= self.warmup <= 1.0:
            raise ValueError(f"--warmup is a fraction of --total_steps in [0, 1], got {self.warmup}")
        if self.learning_rate <= 0:
            raise ValueError(f"--learning_rate must be > 0, got {self.learning_rate}")
        if not 0.0 < self.mask_rate < 1.0:
            raise ValueError(f"--mask_rate must be in (0, 1), got {self.mask_rate}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"--precision must be auto, fp32 or bf16, got {self.precision!r}")
        if self.distill_alpha < 0 or self.distill_temperature <= 0:
            raise ValueError(f"--distill_alpha must be >= 0 and --distill_temperature > 0, got "
                             f"{self.distill_alpha}, {self.distill_temperature}")
        if self.init not in ("uer", "hf"):
            raise ValueError(f"--init must be 'uer' or 'hf', got {self.init!r}")


@dataclass
class RunOptions:
    """Settings that do not change the trained weights (speed, logging, stopping, placement)."""
    save_checkpoint_steps: int = 10000
    report_steps: int = 100
    resume: bool | str = False           # True: must resume; "auto": resume if a state exists
    overwrite: bool = False              # move an earlier run's files aside instead of refusing
    time_budget_s: float | None = None    # stop cleanly (with a checkpoint) after this wall time
    eval_dataset_path: str | None = None
    eval_max_instances: int = 2048
    eval_steps: int | None = None         # default: every report step
    metrics_path: str | None = None       # default: <output_model_path>.metrics.jsonl
    tensorboard: str | None = None
    num_workers: int = 1                  # background batch-preparation threads (0: inline)
    compile: bool = False                 # torch.compile the forward (dynamic shapes; slow to start on CPU)
    device: str = "auto"                  # auto | cpu | cuda
    gpu_ranks: list[int] | None = None
    master_ip: str | None = None          # tcp://host:port for --world_size spawns
    backend: str | None = None            # nccl | gloo (default by device)
    pad_to_multiple_of: int = 8
    unpad: bool = True                    # position-wise layers on real tokens only (see miniroberta.modeling.unpad)
    bucket: bool = True                   # CPU: pad packed rows to a few recurring shapes (kernel reuse)
    threads: int | None = None            # torch intra-op threads per process
    progress: bool = True
    # test hooks (hidden on the command line)
    stop_after_steps: int | None = None   # behave as if SIGTERM arrived after this many steps
    debug_nan_at_step: int | None = None  # make the loss NaN at this step
    debug_step_sleep: float = 0.0


def state_path_for(output_model_path: str) -> str:
    return f"{output_model_path}.state.pt"


def metrics_path_for(cfg: PretrainConfig, opts: RunOptions) -> str:
    return opts.metrics_path or f"{cfg.output_model_path}.metrics.jsonl"


__all__ = ["PretrainConfig", "RunOptions", "PretrainError", "state_path_for", "metrics_path_for"]
