"""Fine-tune a pretrained encoder for sequence classification (``miniroberta finetune``).

Mirrors UER-py's ``finetune/run_classifier.py`` (same option names, seq 128, warmup 0.1 then
linear decay, dev evaluation after every epoch, best-dev checkpoint kept, accuracy) with
these deliberate differences (see docs/finetune.md):

* pairs are truncated longest-first (UER cuts the concatenation, which can drop text_b);
* the head is HF ``BertForSequenceClassification`` (pooler dense+tanh, dropout, classifier);
  the pooler is reused when the checkpoint has one, otherwise it and the classifier start
  from N(0, 0.02) with zero bias (UER keeps PyTorch's default Linear init and no dropout);
* torch AdamW with bias correction, eps 1e-6, weight decay 0.01 except bias/LayerNorm;
* batches are padded to the batch's longest sequence (UER pads to seq_length) -- same maths.

Output directory layout (``--output_dir``)::

    model/          HF BertForSequenceClassification dir of the best epoch (config with
                    id2label/label2id, model.safetensors, vocab.txt, finetune.json)
    metrics.jsonl   one record per report step and per epoch
    result.json     the returned summary
    test_predictions.{json,tsv}  when the test file is unlabeled
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from miniroberta.data import tasks as T
from miniroberta.engine.device import device_info, resolve_device
from miniroberta.engine.metrics import RunLog
from miniroberta.engine.optim import OptimConfig
from miniroberta.engine.precision import resolve_precision
from miniroberta.engine.trainer import STATE_FORMAT, LoopOptions, Trainer
from miniroberta.finetune.inference import classification_metrics, mean_cross_entropy, predict_logits, to_device
from miniroberta.finetune.predict import write_predictions
from miniroberta.integrity import verified_torch_load
from miniroberta.interop.checkpoint import load_into, load_weights, save_native
from miniroberta.interop.export import resolve_vocab, write_hf_dir
from miniroberta.modeling.bert import BertForSequenceClassification, init_weights
from miniroberta.modeling.config import ModelConfig, load_config, replace
from miniroberta.modeling.tokenizer import BertTokenizer
from miniroberta.modeling.unpad import UnpaddedClassifier
from miniroberta.outputs import claim_output
from miniroberta.utils import atomic_write_json, format_duration, log


@dataclass
class FinetuneConfig:
    # model
    pretrained_model_path: str | None = None     # native file / HF dir / UER .bin; None = random init
    config_path: str | None = None               # preset or config JSON (random init, UER checkpoints)
    vocab_path: str | None = None                # default: vocab.txt beside the model, else the Google zh vocab
    layer_norm_type: str | None = None           # override "hf"/"uer"
    # data
    task: str | None = None
    data_dir: str | None = None
    train_path: str | None = None
    dev_path: str | None = None
    test_path: str | None = None
    text_fields: tuple[str, ...] | None = None
    label_field: str | None = None
    skip_bad_rows: bool = False
    max_train_examples: int | None = None
    max_train_tokens: int | None = None          # train on a deterministic subsample of at most this many real tokens
    max_dev_examples: int | None = None
    cache_dir: str | None = None                 # "" disables the tokenization cache
    # training
    epochs_num: int = 3
    batch_size: int = 32
    learning_rate: float = 2e-5
    seq_length: int = 128
    warmup: float = 0.1
    weight_decay: float = 0.01
    adam_eps: float = 1e-6
    seed: int = 7
    dropout: float | None = None
    truncation: str = "longest_first"
    eval_batch_size: int | None = None
    report_steps: int = 100
    device: str | None = None
    threads: int | None = None
    progress: bool = True                        # tqdm bar per epoch
    verbose: bool = True                         # log lines (start, each epoch, best)
    # outputs
    output_dir: str | None = None
    output_model_path: str | None = None         # UER-style: a native checkpoint file of the best epoch
    export_hf: str | None = None                 # extra HF directory
    save_model: bool = True                      # write output_dir/model
    run_test: bool = True                        # score / predict the test file with the best epoch
    precision: str = "auto"                      # auto | fp32 | bf16 (bf16 compute, fp32 master weights)
    amp: bool = False                            # alias of precision="bf16" (0.1.0's flag)
    resume: bool = False                         # continue <output_dir>/train_state.pt
    overwrite: bool = False                      # move an earlier run's output_dir aside and start over
    stop_after_steps: int | None = None          # test hook: stop as if signalled after this many steps
    # distillation (miniroberta distill): soft targets of a fine-tuned teacher
    teacher_path: str | None = None
    temperature: float = 2.0
    alpha: float = 0.0                           # weight of the gold-label cross-entropy
    transfer_path: str | None = None             # unlabeled texts added to the training examples
    unpad: bool = True                           # position-wise layers on real tokens only (same maths)

    # settings that do not change the result (speed, logging, outputs); the rest are checked on resume
    _RESULT_FREE = ("report_steps", "device", "threads", "progress", "verbose", "output_dir", "output_model_path",
                    "export_hf", "save_model", "run_test", "resume", "overwrite", "stop_after_steps", "cache_dir",
                    "eval_batch_size", "precision", "amp", "unpad")

    @property
    def effective_precision(self) -> str:
        return "bf16" if self.amp else self.precision

    def result_key(self) -> dict[str, Any]:
        d = self.to_dict()
        return {k: v for k, v in d.items() if k not in self._RESULT_FREE}

    def optim(self) -> OptimConfig:
        return OptimConfig(learning_rate=self.learning_rate, warmup=self.warmup, weight_decay=self.weight_decay,
                           adam_eps=self.adam_eps)

    def __post_init__(self) -> None:
        if isinstance(self.text_fields, str):
            self.text_fields = tuple(f.strip() for f in self.text_fields.split(",") if f.strip())
        elif self.text_fields is not None:
            self.text_fields = tuple(self.text_fields)
        if self.epochs_num < 1 or self.batch_size < 1:
            raise ValueError(f"epochs_num ({self.epochs_num}) and batch_size ({self.batch_size}) must be >= 1")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warmup is a fraction of the steps in [0, 1), got {self.warmup}")
        if self.temperature <= 0 or not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"--temperature must be > 0 and --alpha in [0, 1], got {self.temperature}, {self.alpha}")
        if self.transfer_path and not self.teacher_path:
            raise ValueError("--transfer_path needs a --teacher (unlabeled texts are learnt from its soft targets)")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be auto, fp32 or bf16, got {self.precision!r}")
        if self.truncation not in ("longest_first", "concat"):
            raise ValueError(f"truncation must be longest_first or concat, got {self.truncation!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["text_fields"] is not None:
            d["text_fields"] = list(d["text_fields"])
        return d


# ------------------------------------------------------------------------------------ model
def build_classifier(cfg: FinetuneConfig, id2label: dict[int, str]) -> tuple[BertForSequenceClassification, dict]:
    """The classifier with pretrained encoder weights (and pooler, if the checkpoint has one);
    the rest initialised from N(0, initializer_range) with zero bias under ``cfg.seed``."""
    torch.manual_seed(cfg.seed)
    info: dict[str, Any] = {}
    if cfg.pretrained_model_path:
        mcfg, sd, meta = load_weights(cfg.pretrained_model_path, config_path=cfg.config_path)
        info["pretrained_meta"] = {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool))}
    else:
        if not cfg.config_path:
            raise ValueError("give --pretrained_model_path (or --config_path PRESET to fine-tune a randomly "
                             "initialised model, a no-pretraining baseline)")
        mcfg, sd = load_config(cfg.config_path), None
    if cfg.layer_norm_type and cfg.layer_norm_type != mcfg.layer_norm_type:
        mcfg = replace(mcfg, layer_norm_type=cfg.layer_norm_type,
                       layer_norm_eps=1e-6 if cfg.layer_norm_type == "uer" else 1e-12)
    changes: dict[str, Any] = {"id2label": id2label}
    if cfg.dropout is not None:
        changes.update(hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout)
    mcfg = replace(mcfg, **changes)
    if cfg.seq_length > mcfg.max_position_embeddings:
        raise ValueError(f"--seq_length {cfg.seq_length} exceeds the model's max_position_embeddings "
                         f"{mcfg.max_position_embeddings}")
    model = BertForSequenceClassification(mcfg)
    init_weights(model, mcfg.initializer_range, "hf")
    if sd is not None:
        # a previous classifier head has other labels: always start a fresh one
        sd = {k: v for k, v in sd.items() if not k.startswith(("classifier.", "cls."))}
        load_into(model, sd, str(cfg.pretrained_model_path), allow_missing=("bert.pooler.", "classifier."))
        info["pooler_from_checkpoint"] = any(k.startswith("bert.pooler.") for k in sd)
    return model, info


def load_task_data(cfg: FinetuneConfig) -> tuple[T.TaskFiles, T.TaskData, T.TaskData]:
    files = T.resolve_task(cfg.task, cfg.data_dir, cfg.train_path, cfg.dev_path, cfg.test_path,
                           cfg.text_fields, cfg.label_field)
    kw = dict(text_fields=files.text_fields, label_field=files.label_field, drop_labels=files.drop_labels,
              skip_bad_rows=cfg.skip_bad_rows)
    train = T.read_examples(files.train_path, **kw)
    dev = T.read_examples(files.dev_path, **{**kw, "text_fields": train.text_fields})
    return files, train, dev


# ------------------------------------------------------------------------------------ the task
@dataclass
class ClassifierBatch:
    ids: np.ndarray          # (B, T) padded to the batch's longest
    types: np.ndarray
    mask: np.ndarray
    labels: np.ndarray       # (B,)
    real_index: np.ndarray   # flat indices of the real tokens (the padding-free path)
    cls_rows: np.ndarray     # where each sequence's [CLS] sits among them
    soft: np.ndarray | None = None   # (B, C) teacher logits (distillation); labels -1 = unlabeled

    @classmethod
    def make(cls, ids: np.ndarray, types: np.ndarray, mask: np.ndarray, labels: np.ndarray,
             soft: np.ndarray | None = None) -> "ClassifierBatch":
        lengths = mask.sum(1)
        cls_rows = np.zeros(len(lengths), dtype=np.int64)
        np.cumsum(lengths[:-1], out=cls_rows[1:])
        return cls(ids, types, mask, labels, np.flatnonzero(mask.reshape(-1)), cls_rows,
                   None if soft is None else np.ascontiguousarray(soft, dtype=np.float32))

    @property
    def units(self) -> int:
        return len(self.labels)

    @property
    def real_tokens(self) -> int:
        return int(self.mask.sum())

    @property
    def padded_tokens(self) -> int:
        return int(self.mask.size)


class ClassifierTask:
    """Sequence classification for the engine. Epoch ``e`` visits the training set in the
    order of a permutation seeded by ``(seed, e)``, so the data position is a function of the
    step (exact mid-run resume); dev accuracy after every epoch decides the best epoch."""
    name = "finetune"

    def __init__(self, cfg: FinetuneConfig, model: BertForSequenceClassification, enc_train: T.Encoded,
                 y_train: np.ndarray, enc_dev: T.Encoded, y_dev: np.ndarray, num_labels: int, pad_id: int,
                 device: torch.device, soft: np.ndarray | None = None) -> None:
        self.cfg, self.model, self.device, self.pad_id, self.num_labels = cfg, model, device, pad_id, num_labels
        self.soft = soft           # teacher logits per training example (distillation), else None
        self.enc_train, self.y_train, self.enc_dev, self.y_dev = enc_train, y_train, enc_dev, y_dev
        self.n = len(enc_train)
        self.steps_per_epoch = math.ceil(self.n / cfg.batch_size)
        self.eval_bs = cfg.eval_batch_size or max(64, 2 * cfg.batch_size)
        self.epochs: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self._perm: tuple[int, np.ndarray] | None = None
        self._epoch_t0 = time.time()
        self._epoch_sums = [0.0, 0, 0]   # loss sum, examples, real tokens of the running epoch (host copies)

    def permutation(self, epoch: int) -> np.ndarray:
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.cfg.seed, epoch, 0xF17E]).permutation(self.n))
        return self._perm[1]

    def batches(self, step: int) -> list[ClassifierBatch]:
        epoch, b = divmod(step, self.steps_per_epoch)
        idx = self.permutation(epoch)[b * self.cfg.batch_size:(b + 1) * self.cfg.batch_size]
        ids, types, mask = self.enc_train.batch(idx, self.pad_id)
        return [ClassifierBatch.make(ids, types, mask, self.y_train[idx],
                                     None if self.soft is None else self.soft[idx])]

    def loss(self, model: torch.nn.Module, b: ClassifierBatch) -> tuple[torch.Tensor, torch.Tensor]:
        ids, types, mask, gold, real, cls_rows = to_device(self.device, b.ids, b.types, b.mask, b.labels,
                                                           b.real_index, b.cls_rows)
        if self.cfg.unpad:
            logits = model(ids, mask, types, real, cls_rows).float()
        else:
            logits = model(ids, attention_mask=mask, token_type_ids=types).logits.float()
        self._epoch_sums[1] += len(b.labels)
        self._epoch_sums[2] += b.real_tokens
        if b.soft is not None:   # distillation; "accuracy" = agreement with the teacher
            from miniroberta.finetune.distill import distill_loss_sum
            teacher = torch.from_numpy(b.soft).to(self.device, non_blocking=True)
            loss = distill_loss_sum(logits, teacher, gold, self.cfg.temperature, self.cfg.alpha)
            return loss, (logits.detach().argmax(-1) == teacher.argmax(-1)).sum()
        loss = F.cross_entropy(logits, gold, reduction="sum")
        return loss, (logits.detach().argmax(-1) == gold).sum()

    def report_fields(self, trainer: Trainer, log: RunLog) -> dict[str, Any]:
        return {"epoch": trainer.step / self.steps_per_epoch}

    def after_step(self, trainer: Trainer, log: RunLog) -> None:
        if trainer.step % self.steps_per_epoch and trainer.step != trainer.total_steps:
            return
        epoch = math.ceil(trainer.step / self.steps_per_epoch)
        tot = trainer.totals()
        ep_time = time.time() - self._epoch_t0
        t_ev = time.time()
        logits = predict_logits(self.model, self.enc_dev, self.eval_bs, self.device, self.pad_id)
        m = classification_metrics(self.y_dev, logits.argmax(1), self.num_labels)
        prev = self.epochs[-1] if self.epochs else {"_loss": 0.0, "_units": 0.0}
        rec = dict(epoch=epoch, train_loss=float((tot[0] - prev["_loss"]) / max(1.0, tot[3] - prev["_units"])),
                   dev_loss=mean_cross_entropy(logits, self.y_dev), dev_acc=m["acc"], dev_macro_f1=m["macro_f1"],
                   dev_correct=m["correct"], dev_total=m["total"], train_time_s=ep_time,
                   eval_time_s=time.time() - t_ev, train_examples_per_s=self._epoch_sums[1] / max(ep_time, 1e-9),
                   train_tokens_per_s=self._epoch_sums[2] / max(ep_time, 1e-9), _loss=float(tot[0]),
                   _units=float(tot[3]))
        self.epochs.append(rec)
        log.write("epoch", trainer.step, **{k: v for k, v in rec.items() if not k.startswith("_")})
        improved = self.best is None or m["acc"] > self.best["dev_acc"]
        log.say(f"epoch {epoch}: train loss {rec['train_loss']:.4f}, dev acc {m['acc']:.4f} ({m['correct']}/"
                f"{m['total']}), macro-F1 {m['macro_f1']:.4f}, {format_duration(ep_time)}"
                f"{'  *best*' if improved else ''}")
        if improved:
            self.best = dict(rec, confusion=m["confusion"], predictions=logits.argmax(1).tolist())
            self.best_state = trainer.precision.state_dict()
        self._epoch_t0 = time.time()
        self._epoch_sums = [0.0, 0, 0]

    def save(self, trainer: Trainer, final: bool) -> str | None:
        return None  # the best epoch's weights are written once training ends (run_finetune)

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "best": self.best, "best_state": self.best_state,
                "settings": self.cfg.result_key()}

    def load_state_dict(self, st: dict[str, Any]) -> None:
        self.epochs, self.best, self.best_state = st["epochs"], st["best"], st["best_state"]


# ------------------------------------------------------------------------------------ main
def run_finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    """Fine-tune, evaluate on dev after every epoch, keep the best epoch; see the module doc.
    ``cfg.threads`` sets torch's thread count for this run only (restored afterwards). An
    ``output_dir`` is claimed for the run: one writer, and an earlier run's output is refused
    unless ``resume`` or ``overwrite`` (see ``miniroberta.outputs``)."""
    claim = None
    if cfg.output_dir:
        claim = claim_output(cfg.output_dir, resume=cfg.resume, overwrite=cfg.overwrite, command="finetune",
                             what="a fine-tuned model", related=[p for p in [cfg.output_model_path] if p])
    before = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _run_finetune(cfg)
    finally:
        torch.set_num_threads(before)
        if claim is not None:
            claim.release()


def _prepare_data(cfg: FinetuneConfig, say) -> dict[str, Any]:
    files, train, dev = load_task_data(cfg)
    for d in (train, dev):
        if d.skipped:
            say(f"skipped {d.skipped} malformed rows of {d.path} (--skip_bad_rows), e.g. {d.bad_rows[0]}")
        if d.dropped:
            say(f"dropped {d.dropped} rows of {d.path} labelled {list(files.drop_labels)}")
    labels = T.LabelMap.from_labels(train.labels, source=files.train_path)
    y_train, y_dev = labels.encode(train), labels.encode(dev)
    vocab_path = resolve_vocab(cfg.pretrained_model_path, cfg.vocab_path)
    tok = BertTokenizer(vocab_path)
    reader_key = dict(label=files.label_field, drop=list(files.drop_labels), skip=cfg.skip_bad_rows)
    enc_train = T.cached_encode(tok, train, cfg.seq_length, cfg.truncation, cfg.cache_dir, reader_key)
    enc_dev = T.cached_encode(tok, dev, cfg.seq_length, cfg.truncation, cfg.cache_dir, reader_key)
    sub_tr = T.subsample(len(train), cfg.max_train_examples, seed=0)
    if cfg.max_train_tokens:
        if sub_tr is not None:
            raise ValueError("give --max_train_examples or --max_train_tokens, not both")
        sub_tr = T.subsample_tokens(np.diff(enc_train.offsets), cfg.max_train_tokens, seed=0)
    sub_dev = T.subsample(len(dev), cfg.max_dev_examples, seed=1)
    if sub_tr is not None:
        enc_train, y_train = enc_train.subset(sub_tr), y_train[sub_tr]
    if sub_dev is not None:
        enc_dev, y_dev = enc_dev.subset(sub_dev), y_dev[sub_dev]
    soft, teacher, n_transfer = None, None, 0
    if cfg.transfer_path:
        from miniroberta.finetune.distill import concat_encoded, read_transfer
        tr_data = read_transfer(cfg.transfer_path, len(train.text_fields))
        enc_tr = T.cached_encode(tok, tr_data, cfg.seq_length, cfg.truncation, cfg.cache_dir, dict(transfer=True))
        n_transfer = len(enc_tr)
        enc_train = concat_encoded(enc_train, enc_tr)
        y_train = np.concatenate([y_train, np.full(n_transfer, -1, dtype=y_train.dtype)])
        say(f"transfer: {n_transfer:,} unlabeled texts from {cfg.transfer_path}")
    if cfg.teacher_path:
        from miniroberta.finetune.distill import teacher_logits
        soft, teacher = teacher_logits(cfg.teacher_path, enc_train, labels.labels, tok.sha256, tok.pad_id,
                                       cfg.cache_dir, resolve_device(cfg.device), say=say)
        teacher["n_transfer"] = n_transfer
    return dict(files=files, train=train, dev=dev, labels=labels, vocab_path=vocab_path, tok=tok,
                enc_train=enc_train, y_train=y_train, enc_dev=enc_dev, y_dev=y_dev, soft=soft, teacher=teacher,
                subsampled=sub_tr is not None or sub_dev is not None)


def _run_finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    t_start = time.time()
    device = resolve_device(cfg.device)
    say = log if cfg.verbose else (lambda *_a, **_k: None)
    d = _prepare_data(cfg, say)
    files, train, labels, tok = d["files"], d["train"], d["labels"], d["tok"]
    out_dir = cfg.output_dir or (os.path.dirname(os.path.abspath(cfg.output_model_path))
                                 if cfg.output_model_path else None)
    state_path = os.path.join(out_dir, "train_state.pt") if out_dir else None
    st = _load_resume_state(cfg, state_path)

    model, init_info = build_classifier(cfg, labels.id2label)
    mcfg = model.config
    if mcfg.vocab_size != tok.vocab_size:
        raise ValueError(f"{d['vocab_path']} has {tok.vocab_size} tokens but the model's vocab_size is "
                         f"{mcfg.vocab_size}; pass --vocab_path with the vocab the model was pretrained with")
    if st is not None:
        load_into(model, st["model"], state_path)
    model.to(device).train()
    n_params = sum(p.numel() for p in model.parameters())
    precision, why = (st["precision"], "as the training state") if st is not None else \
        resolve_precision(cfg.effective_precision, device)

    task = ClassifierTask(cfg, model, d["enc_train"], d["y_train"], d["enc_dev"], d["y_dev"], len(labels),
                          tok.pad_id, device, soft=d["soft"])
    total_steps = task.steps_per_epoch * cfg.epochs_num
    trainer = Trainer(model, optim=cfg.optim(), total_steps=total_steps, device=device, precision=precision,
                      forward=UnpaddedClassifier(model, bucket=True) if cfg.unpad else model)
    if st is not None:
        trainer.load_state_dict(st)
        task.load_state_dict(st["task"])
    else:
        torch.manual_seed(cfg.seed)  # dropout
    metrics_path = os.path.join(out_dir, "metrics.jsonl") if out_dir else None
    if metrics_path and st is None and os.path.exists(metrics_path):
        os.unlink(metrics_path)
    run_log = RunLog(metrics_path, name="finetune", total=total_steps, initial=trainer.step,
                     progress=cfg.progress, verbose=cfg.verbose)
    run_log.say(("distill" if d["teacher"] else "finetune")
                + f" {files.name}: {task.n} train / {len(d['enc_dev'])} dev examples, {len(labels)} labels, "
                f"model {mcfg.name} ({n_params / 1e6:.1f}M params) on {device}, precision {precision} ({why}); "
                f"{cfg.epochs_num} epochs x {task.steps_per_epoch} steps, batch {cfg.batch_size}, "
                f"lr {cfg.learning_rate:g}" + (f"; resumed at step {trainer.step}" if st is not None else ""))
    if files.note:
        run_log.say(f"note: {files.note}")
    run_log.write("start", trainer.step, settings=cfg.to_dict(), model_config=mcfg.to_dict(),
                  device=device_info(device), precision=precision, precision_reason=why)
    loop = LoopOptions(report_steps=cfg.report_steps or 10 ** 9, save_steps=task.steps_per_epoch,
                       stop_after_steps=cfg.stop_after_steps)
    try:
        fit = trainer.fit(task, loop, run_log, state_path,
                          advice=f"Lower --learning_rate (now {cfg.learning_rate:g}) and run again.")
    finally:
        run_log.close()
    if fit.stopped:
        say(f"stopped ({fit.stopped}) at step {fit.steps}/{total_steps}; continue with the same command plus --resume")
        return dict(task=files.name, stopped=fit.stopped, steps=fit.steps, state_path=state_path, epochs=task.epochs)
    return _finish(cfg, d, task, model, mcfg, n_params, init_info, trainer, device, out_dir, metrics_path,
                   precision, t_start)


def _load_resume_state(cfg: FinetuneConfig, state_path: str | None) -> dict[str, Any] | None:
    if not cfg.resume:
        return None
    if not state_path or not os.path.isfile(state_path):
        raise FileNotFoundError(f"--resume: no training state {state_path or '(give --output_dir)'}; it is written "
                                f"to <output_dir>/train_state.pt after every epoch and when a run is stopped")
    st = verified_torch_load(state_path)
    if not isinstance(st, dict) or st.get("format") != STATE_FORMAT or "task" not in st:
        raise ValueError(f"{state_path}: not a miniroberta fine-tuning state")
    old, now = st["task"]["settings"], cfg.result_key()
    diff = sorted(k for k in set(old) | set(now) if old.get(k) != now.get(k))
    if diff:
        raise ValueError(f"refusing to resume {state_path}: settings that change the result differ: " + ", ".join(
            f"--{k} {old.get(k)!r} (state) vs {now.get(k)!r} (now)" for k in diff))
    return st


def _finish(cfg, d, task: ClassifierTask, model, mcfg, n_params, init_info, trainer: Trainer, device, out_dir,
            metrics_path, precision, t_start) -> dict[str, Any]:
    files, train, dev, labels, tok, vocab_path = d["files"], d["train"], d["dev"], d["labels"], d["tok"], \
        d["vocab_path"]
    best, last = task.best, task.epochs[-1]
    assert best is not None
    epochs = [{k: v for k, v in e.items() if not k.startswith("_")} for e in task.epochs]
    result: dict[str, Any] = dict(
        task=files.name, train_path=os.path.abspath(files.train_path), dev_path=os.path.abspath(files.dev_path),
        text_fields=list(train.text_fields), labels=labels.labels, num_labels=len(labels),
        n_train=task.n, n_dev=len(d["enc_dev"]), n_train_file=len(train), n_dev_file=len(dev),
        train_skipped=train.skipped, dev_skipped=dev.skipped, train_dropped=train.dropped, dev_dropped=dev.dropped,
        max_train_examples=cfg.max_train_examples, max_train_tokens=cfg.max_train_tokens,
        max_dev_examples=cfg.max_dev_examples, subsampled=d["subsampled"], note=files.note,
        best_epoch=best["epoch"], best_dev_acc=best["dev_acc"], macro_f1=best["dev_macro_f1"],
        best_dev_macro_f1=best["dev_macro_f1"], last_dev_acc=last["dev_acc"], last_dev_macro_f1=last["dev_macro_f1"],
        best_confusion=best["confusion"], epochs=epochs, dev_predictions=best.get("predictions"),
        dev_labels=np.asarray(d["y_dev"]).tolist(),
        settings=cfg.to_dict(), vocab_path=os.path.abspath(vocab_path), vocab_sha256=tok.sha256,
        model=dict(name=mcfg.name, num_parameters=mcfg.num_parameters(mlm_head=False, pooler=True),
                   num_parameters_with_head=n_params, config=mcfg.to_dict(),
                   pretrained_model_path=os.path.abspath(cfg.pretrained_model_path) if cfg.pretrained_model_path else None,
                   **init_info, **({"teacher": {k: v for k, v in d["teacher"].items() if k != "cache"},
                                    "distill": dict(temperature=cfg.temperature, alpha=cfg.alpha,
                                                    transfer_path=cfg.transfer_path)}
                                   if d["teacher"] else {})),
        device=str(device), precision=precision, threads=torch.get_num_threads(), steps=trainer.step,
        train_time_s=sum(e["train_time_s"] for e in epochs), paths={}, torch_version=torch.__version__,
    )
    ft_meta = dict(task=files.name, text_fields=list(train.text_fields), label_field=files.label_field,
                   labels=labels.labels, seq_length=cfg.seq_length, truncation=cfg.truncation,
                   submission=files.submission, id_field=files.id_field, best_epoch=best["epoch"],
                   best_dev_acc=best["dev_acc"], pretrained_model_path=result["model"]["pretrained_model_path"])
    best_state = task.best_state
    model.load_state_dict(best_state)  # (into the model's own precision) for the test predictions
    if cfg.output_dir and cfg.save_model:
        result["paths"]["model_dir"] = save_classifier(best_state, mcfg, vocab_path, os.path.join(out_dir, "model"),
                                                       ft_meta)
    if cfg.export_hf:
        result["paths"]["export_hf"] = save_classifier(best_state, mcfg, vocab_path, cfg.export_hf, ft_meta)
    if cfg.output_model_path:
        save_native(cfg.output_model_path, best_state, mcfg, meta=ft_meta)
        result["paths"]["output_model_path"] = os.path.abspath(cfg.output_model_path)
    test_path = cfg.test_path or files.test_path
    if test_path and cfg.run_test:
        result["test"] = _run_test(model, tok, cfg, files, test_path, train.text_fields, labels, task.eval_bs,
                                   device, out_dir)
    result["wall_time_s"] = time.time() - t_start
    if out_dir:
        result["paths"]["metrics"] = os.path.abspath(metrics_path)
        result["paths"]["result"] = os.path.abspath(os.path.join(out_dir, "result.json"))
        atomic_write_json(os.path.join(out_dir, "result.json"), result)
    if cfg.verbose:
        log(f"best epoch {best['epoch']}: dev acc {best['dev_acc']:.4f}, macro-F1 {best['dev_macro_f1']:.4f}; "
            f"last epoch dev acc {last['dev_acc']:.4f}; {format_duration(result['wall_time_s'])}")
    return result


def save_classifier(state: dict[str, torch.Tensor], mcfg: ModelConfig, vocab_path: str, out: str,
                    ft_meta: dict[str, Any]) -> str:
    card = (f"# {mcfg.name} fine-tuned on {ft_meta['task']}\n\nBertForSequenceClassification written by "
            f"`miniroberta finetune`; best epoch {ft_meta['best_epoch']}, dev accuracy "
            f"{ft_meta['best_dev_acc']:.4f}. Labels: {', '.join(ft_meta['labels'][:20])}"
            f"{' ...' if len(ft_meta['labels']) > 20 else ''}.\n")
    write_hf_dir(state, mcfg, vocab_path, out, architecture="BertForSequenceClassification", card=card,
                 extra_files={"finetune.json": json.dumps(ft_meta, indent=2, ensure_ascii=False)})
    return os.path.abspath(out)


def _run_test(model, tok, cfg: FinetuneConfig, files: T.TaskFiles, test_path: str, fields, labels: T.LabelMap,
              eval_bs: int, device, out_dir: str | None) -> dict[str, Any]:
    data = T.read_examples(test_path, text_fields=fields, label_field=files.label_field, require_label=False,
                           drop_labels=files.drop_labels, id_field=files.id_field, skip_bad_rows=cfg.skip_bad_rows)
    enc = T.cached_encode(tok, data, cfg.seq_length, cfg.truncation, cfg.cache_dir,
                          dict(label=files.label_field, drop=list(files.drop_labels), skip=cfg.skip_bad_rows,
                               test=True))
    logits = predict_logits(model, enc, eval_bs, device, tok.pad_id)
    pred = logits.argmax(1)
    res: dict[str, Any] = dict(path=os.path.abspath(test_path), n=len(data))
    if data.labels is not None:
        m = classification_metrics(labels.encode(data), pred, len(labels))
        res.update(acc=m["acc"], macro_f1=m["macro_f1"])
    if data.skipped:
        res["skipped_rows"] = data.skipped
        log(f"{test_path}: {data.skipped} malformed row(s) skipped (--skip_bad_rows); they have no prediction")
    if out_dir:
        ext = "json" if files.submission == "clue" else "tsv"
        p = os.path.join(out_dir, f"test_predictions.{ext}")
        write_predictions(p, data.ids, [labels.labels[i] for i in pred], files.submission)
        res["predictions"] = os.path.abspath(p)
    return res


# ------------------------------------------------------------------------------------ CLI
def add_training_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seq_length", type=int, default=128)
    p.add_argument("--warmup", type=float, default=0.1, help="fraction of steps with linear warmup")
    p.add_argument("--weight_decay", type=float, default=0.01)
    p.add_argument("--dropout", type=float, default=None, help="override the model's dropout")
    p.add_argument("--truncation", choices=("longest_first", "concat"), default="longest_first",
                   help="pair truncation: longest_first (HF) or concat (UER-py: cut [CLS] a [SEP] b [SEP])")
    p.add_argument("--skip_bad_rows", action="store_true", help="skip and count malformed rows instead of failing")
    p.add_argument("--cache_dir", default=None, help="tokenization cache; unset: ~/.cache/miniroberta, '': off")
    p.add_argument("--max_train_examples", type=int, default=None, help="deterministic train subsample (smoke runs)")
    p.add_argument("--max_train_tokens", type=int, default=None,
                   help="deterministic train subsample of at most this many real tokens per epoch (a compute budget)")
    p.add_argument("--max_dev_examples", type=int, default=None, help="deterministic dev subsample (smoke runs)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ...; unset: cuda if available")
    p.add_argument("--layer_norm_type", choices=("hf", "uer"), default=None)
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="bf16: bf16 compute with fp32 master weights; auto: bf16 where the hardware has native bf16 "
                        "and measures faster")
    p.add_argument("--amp", action="store_true", help="alias of --precision bf16")
    p.add_argument("--vocab_path", default=None,
                   help="default: vocab.txt beside the model, else ../shared/data/vocab/google_zh_vocab.txt")
    p.add_argument("--config_path", default=None, help="preset/config JSON (random init or UER checkpoints)")


def configure(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--pretrained_model_path", default=None, help="native checkpoint, HF directory or UER .bin")
    g = p.add_argument_group("data")
    g.add_argument("--task", default=None, help=f"preset: {', '.join(T.TASK_NAMES)}")
    g.add_argument("--data_dir", default=None, help="folder holding the task folders; unset: ../shared/data/tasks")
    g.add_argument("--train_path", default=None)
    g.add_argument("--dev_path", default=None)
    g.add_argument("--test_path", default=None, help="labeled: scored with the best epoch; unlabeled: predicted")
    g.add_argument("--text_fields", default=None, help="comma-separated text column(s), e.g. text_a,text_b")
    g.add_argument("--label_field", default=None, help="label column; unset: label (or the preset's)")
    g = p.add_argument_group("training")
    g.add_argument("--epochs_num", type=int, default=3)
    g.add_argument("--batch_size", type=int, default=32)
    g.add_argument("--learning_rate", type=float, default=2e-5)
    g.add_argument("--seed", type=int, default=7)
    g.add_argument("--report_steps", type=int, default=100)
    g.add_argument("--eval_batch_size", type=int, default=None)
    g.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    add_training_args(g)
    g = p.add_argument_group("output")
    g.add_argument("--output_dir", default=None, help="model/, metrics.jsonl, result.json")
    g.add_argument("--output_model_path", default=None, help="UER-style path of a native checkpoint of the best epoch")
    g.add_argument("--export_hf", default=None, help="also write an HF BertForSequenceClassification directory here")
    g.add_argument("--no_progress", action="store_true")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in --output_dir from its train_state.pt (written every epoch and on stop)")
    g.add_argument("--overwrite", action="store_true",
                   help="move an earlier run's --output_dir aside (<dir>.old-<time>) and start over")
    p.add_argument("--stop_after_steps", type=int, default=None, help=argparse.SUPPRESS)


def config_from_args(args: argparse.Namespace) -> FinetuneConfig:
    names = {f.name for f in dataclasses.fields(FinetuneConfig)}
    kw = {k: v for k, v in vars(args).items() if k in names}
    kw["progress"] = not args.no_progress
    return FinetuneConfig(**kw)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if not (cfg.output_dir or cfg.output_model_path or cfg.export_hf):
        log("note: no --output_dir/--output_model_path/--export_hf given; the fine-tuned model is not saved")
    return print_result(run_finetune(cfg))


def print_result(res: dict[str, Any]) -> int:
    if res.get("stopped"):
        print(json.dumps({k: res[k] for k in ("task", "stopped", "steps", "state_path")}, indent=2))
        return 0
    summary = {k: res[k] for k in ("task", "best_epoch", "best_dev_acc", "last_dev_acc", "macro_f1", "wall_time_s")}
    summary["paths"] = res["paths"]
    if "test" in res:
        summary["test"] = {k: v for k, v in res["test"].items() if k != "path"}
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    return 0


__all__ = ["print_result", "config_from_args", "FinetuneConfig", "run_finetune", "build_classifier", "save_classifier", "ClassifierTask", "configure",
           "run", "load_task_data"]
