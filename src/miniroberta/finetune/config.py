"""Fine-tuning, task-distillation and grid settings: the single source of every option's default, help
and checks (``miniroberta.settings``). ``finetune``, ``distill`` and ``grid`` generate their options from
these classes; ``validate()`` names every bad value at once; a resume compares ``resume_key()``, which
``settings.result_dict`` derives from the ``effect`` tags (a path whose content is hashed separately is
``resume=False``: the train/dev data is checked by its content hash instead, see ``finetune.data``).

**Defaults that depend on other settings are decided here, once** (:meth:`FinetuneConfig.resolved`):
the learning rate depends on whether the model starts from pretrained weights. UER-py's fine-tuning
default, 2e-5, is right for pretrained weights and wrong for a randomly initialised model (``--config_path
tiny`` without ``--pretrained_model_path``, ``distill --student tiny``, ``grid --baseline``'s arm): measured
on chnsenticorp (3,200 train examples, 3 epochs, batch 32, tiny from random init, seeds 7/1/2) it ends
at chance -- always one class, 49.4 % -- where 1e-3 reaches 83-84 % (docs/finetune.md, "Learning rate
and pretrained weights"); the cpu-hour grid uses 1e-3 for random init (docs/quality.md). The choice and
its reason are logged and recorded in ``result.json`` (``decisions``).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from miniroberta.data.tasks import TASK_NAMES
from miniroberta.engine.optim import OptimConfig
from miniroberta.engine.precision import PRECISIONS
from miniroberta.settings import option, result_dict, validate

MODEL, DATA, TRAINING, DISTILL, OUTPUT, SPEED = ("model", "data", "training", "distillation (soft targets of a "
                                                  "fine-tuned teacher)", "output", "speed and logging")
GRID = "grid"

# ---------------------------------------------------------------------------------------------- the lr rule
PRETRAINED_LR = 2e-5                      # UER-py's run_classifier default
RANDOM_INIT_LR = 1e-3                     # measured for random init (module docstring)
PRETRAINED_GRID_LRS = (3e-5, 1e-4, 3e-4)  # the reference grid (UER-py run_classifier_grid.py, the model card)
RANDOM_INIT_GRID_LRS = (3e-4, 1e-3)       # the no-pretraining arm: the two measured in docs/quality.md
LOW_LR_FOR_RANDOM_INIT = 1e-4             # below this a random-init model barely learns (53.8 % at 1e-4)


def short_float(x: float) -> str:
    """``3e-05`` -> ``3e-5``, ``0.001`` -> ``1e-3``, ``2.0`` -> ``2``: learning rates as people write them."""
    if x == 0 or 1e-2 <= abs(x) < 1e4:
        return f"{x:g}"
    mantissa, exp = f"{x:e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exp)}"


def default_learning_rate(pretrained: bool) -> tuple[float, str]:
    """(learning rate, reason) when ``--learning_rate`` is not given."""
    if pretrained:
        return PRETRAINED_LR, "the default for pretrained weights (UER-py's)"
    return RANDOM_INIT_LR, (f"the default for a model without pretrained weights (random init); the pretrained "
                            f"default {short_float(PRETRAINED_LR)} leaves such a model at chance")


def default_grid_learning_rates(pretrained: bool) -> tuple[tuple[float, ...], str]:
    """(learning-rate list, reason) of a grid arm when ``--learning_rate_list`` is not given."""
    if pretrained:
        return PRETRAINED_GRID_LRS, "the reference grid's, for pretrained weights"
    return RANDOM_INIT_GRID_LRS, "the list for random init (the reference grid's 3e-5 leaves such a model at chance)"


def learning_rate_warning(learning_rate: float, pretrained: bool) -> str | None:
    """A warning for a learning rate given explicitly that is known to fail for this kind of start."""
    if not pretrained and learning_rate < LOW_LR_FOR_RANDOM_INIT:
        return (f"--learning_rate {short_float(learning_rate)} with a randomly initialised model (no "
                f"--pretrained_model_path): such a model barely learns below {short_float(LOW_LR_FOR_RANDOM_INIT)} "
                f"(at {short_float(PRETRAINED_LR)} it ends at chance); {short_float(RANDOM_INIT_LR)} is the "
                f"measured default")
    return None


def likely_fixes(learning_rate: float, pretrained: bool) -> list[str]:
    """What to change when a run ends at the majority-class rate, most likely first."""
    if not pretrained:
        lr = (f"a higher --learning_rate (now {short_float(learning_rate)}; a model from random init needs about "
              f"{short_float(RANDOM_INIT_LR)})" if learning_rate < 3e-4 else None)
        return [x for x in (lr, "more --epochs_num", "pretrained weights (--pretrained_model_path)") if x]
    return [f"another --learning_rate (now {short_float(learning_rate)}; the reference grid tries "
            f"{', '.join(map(short_float, PRETRAINED_GRID_LRS))})", "more --epochs_num",
            "more training examples (--max_train_examples?)"]


class FinetuneError(ValueError):
    """A fine-tuning run that cannot start or continue (bad resume, bad data); one line naming the fix."""


def _split_fields(values: Any) -> tuple[str, ...] | None:
    """``"text_a,text_b"``, ``("text_a", "text_b")`` or ``("text_a,text_b",)`` -> ``("text_a", "text_b")``."""
    if values is None:
        return None
    parts = [values] if isinstance(values, str) else list(values)
    out = tuple(x for p in parts for x in str(p).replace(",", " ").split())
    return out or None


# ---------------------------------------------------------------------------------------------- finetune
@dataclass(kw_only=True)
class FinetuneConfig:
    """Every setting of ``miniroberta finetune`` / ``distill`` (and of one grid cell)."""
    # model
    pretrained_model_path: str | None = option(
        None, "pretrained weights: a native checkpoint, an HF directory or a UER-py .bin", effect="result",
        group=MODEL, default_text="none: random init from --config_path")
    config_path: str | None = option(
        None, "model config: a preset (tiny, L2_H128 ...) or a config JSON; without --pretrained_model_path the "
        "model starts from random init (a no-pretraining baseline)", effect="result", group=MODEL,
        default_text="the checkpoint's")
    vocab_path: str | None = option(
        None, "vocab.txt; its size must equal the model's vocab_size", effect="result", group=MODEL,
        resume=False,   # its hash is part of the data identity a resume checks
        default_text="vocab.txt beside the model, else ../shared/data/vocab/google_zh_vocab.txt")
    layer_norm_type: str | None = option(None, "override the model's LayerNorm (uer: (x-mean)/(std+eps))",
                                         effect="result", group=MODEL, choices=("hf", "uer"),
                                         default_text="the model's")
    # data
    task: str | None = option(None, "a preset task (its files, columns and label set)", effect="result",
                              group=DATA, choices=TASK_NAMES, default_text="none: give --train_path and --dev_path")
    data_dir: str | None = option(None, "folder holding the task folders", effect="result", group=DATA,
                                  resume=False, default_text="../shared/data/tasks or $MINIROBERTA_DATA_DIR")
    train_path: str | None = option(None, "training file (TSV with a header row, or JSON lines)", effect="result",
                                    group=DATA, resume=False, default_text="the preset's")
    dev_path: str | None = option(None, "dev file: evaluated after every epoch, picks the best epoch",
                                  effect="result", group=DATA, resume=False, default_text="the preset's")
    test_path: str | None = option(None, "test file: labeled -> scored with the best epoch, unlabeled -> predicted",
                                   effect="result", group=DATA, resume=False, default_text="the preset's, if any")
    text_fields: tuple[str, ...] | None = option(
        None, "text column(s), e.g. text_a text_b (commas work too)", effect="result", group=DATA,
        default_text="the preset's, else found by name")
    label_field: str | None = option(None, "label column", effect="result", group=DATA,
                                     default_text="label, or the preset's")
    skip_bad_rows: bool = option(False, "skip and count malformed rows instead of failing", effect="result",
                                 group=DATA)
    max_train_examples: int | None = option(
        None, "train on a deterministic subsample of this many examples (flagged † in reports)", effect="result",
        group=DATA, ge=1, default_text="all")
    max_train_tokens: int | None = option(
        None, "train on a deterministic subsample of at most this many real tokens per epoch (a compute budget)",
        effect="result", group=DATA, ge=1, default_text="all")
    max_dev_examples: int | None = option(None, "evaluate on a deterministic dev subsample of this many examples",
                                          effect="result", group=DATA, ge=1, default_text="all")
    cache_dir: str | None = option(None, "tokenization and teacher-logit cache ('' turns it off)", effect="speed",
                                   group=DATA, default_text="~/.cache/miniroberta or $MINIROBERTA_CACHE_DIR")
    # training
    epochs_num: int = option(3, "passes over the training set", effect="result", group=TRAINING, ge=1)
    batch_size: int = option(32, "examples per update", effect="result", group=TRAINING, ge=1)
    learning_rate: float | None = option(
        None, "peak learning rate", effect="result", group=TRAINING, gt=0,
        default_text=f"{short_float(PRETRAINED_LR)} with pretrained weights, {short_float(RANDOM_INIT_LR)} from "
                     f"random init")
    seq_length: int = option(128, "tokens per example, [CLS] and [SEP] included", effect="result", group=TRAINING,
                             ge=4)
    warmup: float = option(0.1, "fraction of the steps with linear warmup (then linear decay to 0)",
                           effect="result", group=TRAINING, ge=0, le=1)
    weight_decay: float = option(0.01, "AdamW weight decay of matrices (not biases or LayerNorm)", effect="result",
                                 group=TRAINING, ge=0)
    adam_eps: float = option(1e-6, "AdamW epsilon", effect="result", group=TRAINING, gt=0)
    seed: int = option(7, "seed of the head's initialisation, the data order and dropout", effect="result",
                       group=TRAINING)
    dropout: float | None = option(None, "override the model's dropout", effect="result", group=TRAINING, ge=0, lt=1,
                                   default_text="the model config's")
    truncation: str = option("longest_first", "pair truncation: longest_first (HF) or concat (UER-py: cut "
                             "[CLS] a [SEP] b [SEP])", effect="result", group=TRAINING,
                             choices=("longest_first", "concat"))
    precision: str = option(
        "auto", "bf16: bf16 compute with fp32 master weights; auto: bf16 where the hardware computes it natively, "
        "else fp32 (decided from the device, never by a timing)", effect="result", group=TRAINING,
        choices=PRECISIONS, resume=False)   # the resolved precision is compared instead
    # distillation (the distill command)
    teacher_path: str | None = option(
        None, "fine-tuned teacher: an HF BertForSequenceClassification directory (ours or another tool's) with the "
        "student's vocabulary", effect="result", group=DISTILL, flag="--teacher", aliases=("--teacher_path",))
    temperature: float = option(2.0, "softmax temperature of the soft targets", effect="result", group=DISTILL,
                                gt=0)
    alpha: float = option(0.0, "weight of the gold-label cross-entropy (0: soft targets only)", effect="result",
                          group=DISTILL, ge=0, le=1)
    transfer_path: str | None = option(
        None, "unlabeled in-domain texts added to the train texts: one text (or tab-separated pair) per line",
        effect="result", group=DISTILL, default_text="none")
    # output
    output_dir: str | None = option(None, "where model/, metrics.jsonl, result.json and the training state go",
                                    effect="result", group=OUTPUT, resume=False, default_text="none: nothing saved")
    output_model_path: str | None = option(None, "also write a native checkpoint of the best epoch here (UER-style)",
                                           effect="result", group=OUTPUT, resume=False, default_text="none")
    export_hf: str | None = option(None, "also write an HF BertForSequenceClassification directory here",
                                   effect="result", group=OUTPUT, resume=False, default_text="none")
    save_model: bool = option(True, "do not write OUTPUT_DIR/model (metrics and result only)", effect="result",
                              group=OUTPUT, resume=False)
    run_test: bool = option(True, "do not score or predict the test file", effect="result", group=OUTPUT,
                            resume=False)
    resume: bool = option(False, "continue the run in --output_dir from its train_state.pt", effect="speed",
                          group=OUTPUT)
    overwrite: bool = option(False, "move an earlier run's --output_dir aside (<dir>.old-<time>) and start over",
                             effect="speed", group=OUTPUT)
    save_every_s: float = option(
        120.0, "write the resumable training state every this many seconds of training, so a killed run loses at "
        "most that much (0: only at epoch ends and when stopped)", effect="speed", group=OUTPUT, ge=0)
    save_steps: int | None = option(None, "also write the training state every N steps", effect="speed",
                                    group=OUTPUT, ge=1, default_text="off")
    # speed and logging
    eval_batch_size: int | None = option(None, "dev/test batch size", effect="speed", group=SPEED, ge=1,
                                         default_text="max(64, 2 x --batch_size)")
    report_steps: int = option(100, "log a progress line and a metrics record every N steps", effect="speed",
                               group=SPEED, ge=1)
    device: str | None = option(None, "cpu, cuda, cuda:1 ...", effect="speed", group=SPEED,
                                default_text="cuda if available, else cpu")
    threads: int | None = option(None, "torch intra-op threads", effect="speed", group=SPEED, ge=1,
                                 default_text="the cores this process may run on")
    unpad: bool = option(True, "run the padded forward (position-wise layers on padding too; same maths, slower)",
                         effect="speed", group=SPEED)
    progress: bool = option(True, "no progress bar", effect="speed", group=SPEED)
    verbose: bool = option(True, effect="speed", cli=False)           # log lines (start, each epoch, best)
    stop_after_steps: int | None = option(None, effect="speed", hidden=True, ge=1)   # test hook: stop as if signalled

    def __post_init__(self) -> None:
        self.text_fields = _split_fields(self.text_fields)

    @property
    def pretrained(self) -> bool:
        """Whether the encoder starts from pretrained weights (else: random init from ``config_path``)."""
        return bool(self.pretrained_model_path)

    @property
    def distilling(self) -> bool:
        return bool(self.teacher_path)

    def problems(self) -> list[str]:
        out = []
        if not (self.pretrained_model_path or self.config_path):
            out.append("give --pretrained_model_path (or --config_path PRESET to fine-tune a randomly initialised "
                       "model, a no-pretraining baseline)")
        if not self.task and not (self.train_path and self.dev_path):
            out.append("give --task NAME (with --data_dir) or both --train_path and --dev_path")
        if self.max_train_examples and self.max_train_tokens:
            out.append("give --max_train_examples or --max_train_tokens, not both")
        if self.transfer_path and not self.teacher_path:
            out.append("--transfer_path needs a --teacher (unlabeled texts are learnt from its soft targets)")
        if self.resume and self.overwrite:
            out.append("--resume and --overwrite contradict each other; pass one of them")
        if self.resume and not self.state_dir():
            out.append("--resume needs the --output_dir (or --output_model_path) of the run to continue")
        if self.text_fields is not None and not 1 <= len(self.text_fields) <= 2:
            out.append(f"--text_fields takes one or two column names, got {list(self.text_fields)}")
        return out

    def validate(self) -> "FinetuneConfig":
        return validate(self, "fine-tuning settings")

    def resolved(self) -> tuple["FinetuneConfig", dict[str, dict[str, Any]]]:
        """This config with the defaults that depend on other settings decided, and each decision with its
        reason (logged and recorded in ``result.json``). The one place these rules live."""
        decisions: dict[str, dict[str, Any]] = {}
        cfg = self
        if self.learning_rate is None:
            lr, why = default_learning_rate(self.pretrained)
            cfg = dataclasses.replace(cfg, learning_rate=lr)
            decisions["learning_rate"] = dict(value=lr, reason=why)
        else:
            decisions["learning_rate"] = dict(value=self.learning_rate, reason="given")
            warning = learning_rate_warning(self.learning_rate, self.pretrained)
            if warning:
                decisions["learning_rate"]["warning"] = warning
        decisions["init"] = dict(value="pretrained" if self.pretrained else "random",
                                 reason=f"--pretrained_model_path {self.pretrained_model_path}" if self.pretrained
                                 else f"no --pretrained_model_path: random init from --config_path {self.config_path}")
        return cfg, decisions

    def state_dir(self) -> str | None:
        """Where the training state and metrics go: ``output_dir``, else beside ``output_model_path``."""
        if self.output_dir:
            return self.output_dir
        return os.path.dirname(os.path.abspath(self.output_model_path)) if self.output_model_path else None

    def resume_key(self) -> dict[str, Any]:
        """What a resumed run must match (the data is compared by content hash separately)."""
        return result_dict(self)

    def optim(self) -> OptimConfig:
        if self.learning_rate is None:
            raise ValueError("resolve the learning rate first (FinetuneConfig.resolved())")
        return OptimConfig(learning_rate=self.learning_rate, warmup=self.warmup, weight_decay=self.weight_decay,
                           adam_eps=self.adam_eps)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["text_fields"] is not None:
            d["text_fields"] = list(d["text_fields"])
        return d


DISTILL_FIELDS = tuple(f.name for f in dataclasses.fields(FinetuneConfig)
                       if f.metadata.get("miniroberta", {}).get("group") == DISTILL)


# ---------------------------------------------------------------------------------------------- grid
def _number_list(kind: type) -> Any:
    def parse(s: str) -> list[Any]:
        return [kind(x) for x in s.replace(",", " ").split()]
    parse.__name__ = f"{kind.__name__} list"      # argparse names it in "invalid int list value: 'x'"
    return parse


def _flatten(values: Any) -> tuple[Any, ...] | None:
    """``[[3, 5], [8]]`` (several command-line words, each a comma list) -> ``(3, 5, 8)``."""
    if values is None:
        return None
    out: list[Any] = []
    for v in values if isinstance(values, (list, tuple)) else [values]:
        out.extend(v if isinstance(v, (list, tuple)) else [v])
    return tuple(out)


@dataclass(kw_only=True)
class GridConfig:
    """Every setting of ``miniroberta grid``: the cells (epochs x batch x lr x seed per task) and how to run them."""
    pretrained_model_path: str | None = option(
        None, "pretrained weights: a native checkpoint, an HF directory or a UER-py .bin", effect="result",
        group=MODEL, resume=False, default_text="none: random init from --config_path")  # fingerprinted instead
    config_path: str | None = option(None, "model config (a preset or JSON): the architecture of a random-init grid",
                                     effect="result", group=MODEL, default_text="the checkpoint's")
    vocab_path: str | None = option(None, "vocab.txt", effect="result", group=MODEL, resume=False,
                                    default_text="vocab.txt beside the model, else the Google Chinese vocab")
    tasks: str = option("all", f"all, or task names separated by commas ({', '.join(TASK_NAMES)})",
                        effect="result", group=DATA, resume=False)
    data_dir: str | None = option(None, "folder holding the task folders", effect="result", group=DATA,
                                  resume=False, default_text="../shared/data/tasks or $MINIROBERTA_DATA_DIR")
    out_dir: str = option(help="grid directory (resumable)", effect="result", group=OUTPUT, flag="--out",
                          aliases=("--output_dir",), resume=False)
    epochs_num_list: tuple[int, ...] = option((3, 5, 8), "epochs of the cells (spaces or commas)", effect="result",
                                              group=GRID, parse=_number_list(int), resume=False)
    batch_size_list: tuple[int, ...] = option((32, 64), "batch sizes of the cells", effect="result", group=GRID,
                                              parse=_number_list(int), resume=False)
    learning_rate_list: tuple[float, ...] | None = option(
        None, "learning rates of the cells", effect="result", group=GRID, parse=_number_list(float), resume=False,
        default_text=" ".join(map(short_float, PRETRAINED_GRID_LRS)) + " with pretrained weights; "
        + " ".join(map(short_float, RANDOM_INIT_GRID_LRS)) + " from random init (also the --baseline arm)")
    seeds: tuple[int, ...] = option((7,), "seeds of every setting (several give mean ± std)", effect="result",
                                    group=GRID, parse=_number_list(int), resume=False)
    seq_length: int = option(128, "tokens per example", effect="result", group=TRAINING, ge=4)
    max_train_examples: int | None = option(None, "deterministic train subsample per task (a cheap smoke grid)",
                                            effect="result", group=DATA, ge=1, default_text="all")
    max_dev_examples: int | None = option(None, "deterministic dev subsample per task", effect="result",
                                          group=DATA, ge=1, default_text="all")
    max_train_tokens: int | None = option(
        None, "per task, train on the largest deterministic subsample whose real tokens per epoch fit this budget "
        "(marked †); a task that fits is used whole", effect="result", group=DATA, ge=1, default_text="all")
    precision: str = option("auto", "precision of every cell (see finetune --help)", effect="result",
                            group=TRAINING, choices=PRECISIONS)
    baseline: bool = option(False, "also run the same grid from random init (no pretraining) in OUT/no-pretraining; "
                            "report shows it beside the model with the difference per task", effect="result",
                            group=GRID, resume=False)
    finetune_overrides: dict[str, Any] = option(default_factory=dict, effect="result", cli=False)  # more cell settings
    jobs: int = option(1, "cells in parallel: processes, each pinned to its own slice of the cores (or its own "
                       "GPU)", effect="speed", group=SPEED, ge=1)
    threads: int | None = option(None, "torch threads per job", effect="speed", group=SPEED, ge=1,
                                 default_text="the cores of the job's slice")
    device: str | None = option(None, "cpu, cuda ...", effect="speed", group=SPEED,
                                default_text="cuda if available (one GPU per job), else cpu")
    cache_dir: str | None = option(None, "tokenization cache ('' turns it off)", effect="speed", group=SPEED,
                                   default_text="~/.cache/miniroberta")
    save_every_s: float = option(120.0, "write each running cell's resumable state every this many seconds "
                                 "(0: only when stopped)", effect="speed", group=SPEED, ge=0)
    overwrite: bool = option(False, "move an existing grid in --out aside to OUT.old-<time> and start over "
                             "(without it an existing grid of the same setup is resumed)", effect="speed",
                             group=OUTPUT)
    progress: bool = option(True, "no progress lines", effect="speed", group=SPEED)

    def __post_init__(self) -> None:
        for name in ("epochs_num_list", "batch_size_list", "learning_rate_list", "seeds"):
            v = _flatten(getattr(self, name))
            setattr(self, name, v if v or name != "learning_rate_list" else None)
        if isinstance(self.tasks, (list, tuple)):
            self.tasks = ",".join(map(str, self.tasks))
        self.finetune_overrides = dict(self.finetune_overrides or {})

    def problems(self) -> list[str]:
        out = []
        if not (self.pretrained_model_path or self.config_path):
            out.append("give --pretrained_model_path (or --config_path PRESET for a random-init grid)")
        if self.baseline and not self.pretrained_model_path:
            out.append("--baseline needs --pretrained_model_path (the arm is that model's architecture from random "
                       "init); a --config_path grid already is from random init")
        for name in ("epochs_num_list", "batch_size_list", "seeds"):
            if not getattr(self, name):
                out.append(f"--{name}: give at least one value")
        if any(x <= 0 for x in self.batch_size_list or ()) or any(x <= 0 for x in self.epochs_num_list or ()):
            out.append("--epochs_num_list and --batch_size_list take values >= 1")
        if any(not x > 0 for x in self.learning_rate_list or ()):
            out.append(f"--learning_rate_list takes values > 0, got {list(self.learning_rate_list or ())}")
        names = {f.name for f in dataclasses.fields(FinetuneConfig)}
        bad = sorted(set(self.finetune_overrides) - names)
        if bad:
            out.append(f"finetune_overrides: unknown fine-tuning settings {bad}")
        return out

    def validate(self) -> "GridConfig":
        return validate(self, "grid settings")

    def learning_rates(self, pretrained: bool) -> tuple[tuple[float, ...], str]:
        """The lr list of an arm: the one given, else the default for its kind of start."""
        if self.learning_rate_list:
            return tuple(float(x) for x in self.learning_rate_list), "given"
        return default_grid_learning_rates(pretrained)


__all__ = ["FinetuneConfig", "GridConfig", "FinetuneError", "default_learning_rate", "default_grid_learning_rates",
           "learning_rate_warning", "likely_fixes", "short_float", "PRETRAINED_LR", "RANDOM_INIT_LR",
           "PRETRAINED_GRID_LRS", "RANDOM_INIT_GRID_LRS", "DISTILL_FIELDS", "MODEL", "DATA", "TRAINING", "DISTILL",
           "OUTPUT", "SPEED", "GRID"]
