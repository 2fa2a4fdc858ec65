"""The data of one fine-tuning or distillation run: task files read and checked, labels mapped, texts
tokenized (cached), subsampled, transfer texts and the teacher's soft targets added -- and the content
identity a resume must match.

:func:`prepare_data` is computed once per run; :meth:`FinetuneData.identity` hashes what training
actually sees (the token ids and labels of train and dev, the label order, the vocabulary, the teacher's
weights), so ``--resume`` refuses changed labels, another task's rows or another subsample whatever the
paths say, and accepts the same files moved elsewhere.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from miniroberta.data.tasks import (Encoded, LabelMap, TaskData, TaskFiles, cached_encode, read_examples,
                                    read_transfer, resolve_task, subsample, subsample_tokens)
from miniroberta.finetune.config import FinetuneConfig
from miniroberta.finetune.teacher import teacher_logits
from miniroberta.data.paths import resolve_vocab
from miniroberta.modeling.tokenizer import BertTokenizer


@dataclass
class FinetuneData:
    """Everything a run trains and evaluates on; ``y_train`` is -1 for unlabeled transfer texts."""
    files: TaskFiles
    train: TaskData
    dev: TaskData
    labels: LabelMap
    vocab_path: str
    tok: BertTokenizer
    enc_train: Encoded
    y_train: np.ndarray
    enc_dev: Encoded
    y_dev: np.ndarray
    subsampled: bool
    soft: np.ndarray | None = None          # (N, C) teacher logits per training example (distillation)
    teacher: dict[str, Any] | None = None   # teacher_info + cache path, n_transfer
    n_transfer: int = 0

    def identity(self) -> dict[str, Any]:
        """Content hashes of what training sees; a resume must match every one."""
        return dict(train_tokens=self.enc_train.digest(), train_labels=_array_digest(self.y_train),
                    dev_tokens=self.enc_dev.digest(), dev_labels=_array_digest(self.y_dev),
                    labels=list(self.labels.labels), vocab_sha256=self.tok.sha256,
                    teacher_sha256=(self.teacher or {}).get("sha256"))


def _array_digest(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    return hashlib.sha256(str(a.dtype).encode() + a.view(np.uint8).tobytes()).hexdigest()


IDENTITY_WORDS = dict(train_tokens="the training texts (rows, tokens, subsample)", train_labels="the training labels",
                      dev_tokens="the dev texts", dev_labels="the dev labels", labels="the label set",
                      vocab_sha256="the vocabulary", teacher_sha256="the teacher's weights")


def identity_changes(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Words for each part of the data identity that differs (empty: the same data)."""
    return [IDENTITY_WORDS.get(k, k) for k in IDENTITY_WORDS if saved.get(k) != now.get(k)]


def load_task_data(cfg: FinetuneConfig) -> tuple[TaskFiles, TaskData, TaskData]:
    """The task's files, and its train and dev examples (a preset's labels checked row by row)."""
    files = resolve_task(cfg.task, cfg.data_dir, cfg.train_path, cfg.dev_path, cfg.test_path,
                         cfg.text_fields, cfg.label_field)
    kw = dict(files.reader_options(), skip_bad_rows=cfg.skip_bad_rows)
    train = read_examples(files.train_path, **kw)
    dev = read_examples(files.dev_path, **{**kw, "text_fields": train.text_fields})
    return files, train, dev


def reader_key(files: TaskFiles, skip_bad_rows: bool) -> dict[str, Any]:
    """The reader options that decide which rows a file yields (part of the tokenization cache key)."""
    return dict(label=files.label_field, drop=list(files.drop_labels), skip=skip_bad_rows,
                labels=list(files.labels or []))


def _subsample(cfg: FinetuneConfig, enc_train: Encoded, y_train: np.ndarray, enc_dev: Encoded,
               y_dev: np.ndarray) -> tuple[Encoded, np.ndarray, Encoded, np.ndarray, bool]:
    sub_tr = subsample(len(enc_train), cfg.max_train_examples, seed=0)
    if cfg.max_train_tokens:
        sub_tr = subsample_tokens(enc_train.lengths(), cfg.max_train_tokens, seed=0)
    sub_dev = subsample(len(enc_dev), cfg.max_dev_examples, seed=1)
    if sub_tr is not None:
        enc_train, y_train = enc_train.subset(sub_tr), y_train[sub_tr]
    if sub_dev is not None:
        enc_dev, y_dev = enc_dev.subset(sub_dev), y_dev[sub_dev]
    return enc_train, y_train, enc_dev, y_dev, sub_tr is not None or sub_dev is not None


def prepare_data(cfg: FinetuneConfig, device: torch.device, say: Callable[[str], None]) -> FinetuneData:
    """Read, check, map, tokenize and subsample the task; add transfer texts and the teacher's logits."""
    files, train, dev = load_task_data(cfg)
    for d in (train, dev):
        if d.skipped:
            say(f"skipped {d.skipped} malformed rows of {d.path} (--skip_bad_rows), e.g. {d.bad_rows[0]}")
        if d.dropped:
            say(f"dropped {d.dropped} rows of {d.path} labelled {list(files.drop_labels)}")
    labels = LabelMap.from_labels(train.labels or [], source=files.train_path)
    y_train, y_dev = labels.encode(train), labels.encode(dev)
    vocab_path = resolve_vocab(cfg.pretrained_model_path, cfg.vocab_path)
    tok = BertTokenizer(vocab_path)
    key = reader_key(files, cfg.skip_bad_rows)
    enc_train = cached_encode(tok, train, cfg.seq_length, cfg.truncation, cfg.cache_dir, key, say=say)
    enc_dev = cached_encode(tok, dev, cfg.seq_length, cfg.truncation, cfg.cache_dir, key, say=say)
    enc_train, y_train, enc_dev, y_dev, subsampled = _subsample(cfg, enc_train, y_train, enc_dev, y_dev)
    data = FinetuneData(files, train, dev, labels, vocab_path, tok, enc_train, y_train, enc_dev, y_dev, subsampled)
    if cfg.transfer_path:
        extra = read_transfer(cfg.transfer_path, len(train.text_fields))
        enc_extra = cached_encode(tok, extra, cfg.seq_length, cfg.truncation, cfg.cache_dir, dict(transfer=True),
                                  say=say)
        data.n_transfer = len(enc_extra)
        data.enc_train = data.enc_train.concat(enc_extra)
        data.y_train = np.concatenate([data.y_train, np.full(data.n_transfer, -1, dtype=data.y_train.dtype)])
        say(f"transfer: {data.n_transfer:,} unlabeled texts from {cfg.transfer_path}")
    if cfg.teacher_path:
        data.soft, data.teacher = teacher_logits(cfg.teacher_path, data.enc_train, labels.labels, tok.sha256,
                                                 tok.pad_id, cfg.cache_dir, device, say=say)
        data.teacher["n_transfer"] = data.n_transfer
    return data


__all__ = ["FinetuneData", "prepare_data", "load_task_data", "reader_key", "identity_changes"]
