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
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from miniroberta.data import tasks as T
from miniroberta.interop.checkpoint import load_into, load_weights, save_native
from miniroberta.modeling.config import ModelConfig, load_config, replace
from miniroberta.modeling.bert import BertForSequenceClassification, init_weights
from miniroberta.modeling.tokenizer import BertTokenizer
from miniroberta.utils import JsonlWriter, atomic_write_json, format_duration, log


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
    amp: bool = False                            # bf16 autocast (for GPUs; weights and optimizer stay fp32)

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
        if self.truncation not in ("longest_first", "concat"):
            raise ValueError(f"truncation must be longest_first or concat, got {self.truncation!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["text_fields"] is not None:
            d["text_fields"] = list(d["text_fields"])
        return d


# ------------------------------------------------------------------------------------ metrics
def classification_metrics(gold: np.ndarray, pred: np.ndarray, num_labels: int) -> dict[str, Any]:
    """Accuracy, macro-F1 (over classes present in gold or predictions, as scikit-learn) and
    the confusion matrix (rows = gold, columns = predicted)."""
    gold = np.asarray(gold, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    conf = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(conf, (gold, pred), 1)
    tp = np.diag(conf).astype(np.float64)
    gold_n = conf.sum(1).astype(np.float64)
    pred_n = conf.sum(0).astype(np.float64)
    present = (gold_n + pred_n) > 0
    f1 = np.where(gold_n + pred_n > 0, 2 * tp / np.maximum(gold_n + pred_n, 1), 0.0)
    return dict(acc=float(tp.sum() / max(len(gold), 1)),
                macro_f1=float(f1[present].mean()) if present.any() else 0.0,
                correct=int(tp.sum()), total=int(len(gold)), confusion=conf.tolist())


# ------------------------------------------------------------------------------------ helpers
def resolve_device(device: str | None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_vocab(vocab_path: str | None, model_path: str | None) -> str:
    if vocab_path:
        return vocab_path
    if model_path:
        p = Path(model_path)
        for cand in ((p / "vocab.txt") if p.is_dir() else None, p.parent / "vocab.txt"):
            if cand is not None and cand.is_file():
                return str(cand)
    return T.default_vocab_path()


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
        sd = {k: v for k, v in sd.items() if not k.startswith(("classifier.", "cls.")) }
        load_into(model, sd, str(cfg.pretrained_model_path), allow_missing=("bert.pooler.", "classifier."))
        info["pooler_from_checkpoint"] = any(k.startswith("bert.pooler.") for k in sd)
    return model, info


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, eps: float) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if n.endswith("bias") or "LayerNorm" in n else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    try:  # the fused kernel is several times faster on CPU for the large embedding matrix
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=eps, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=eps)


def linear_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)   # the first update runs at lr 0, as UER-py and HF
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _to(device: torch.device, *arrays: np.ndarray) -> list[torch.Tensor]:
    return [torch.from_numpy(a).to(device, non_blocking=True) for a in arrays]


@torch.no_grad()
def predict_logits(model: BertForSequenceClassification, enc: T.Encoded, batch_size: int,
                   device: torch.device, pad_id: int = 0, amp: bool = False) -> np.ndarray:
    """Logits (N, num_labels) in the original order; batches are length-sorted for speed."""
    model.eval()
    order = np.argsort(enc.lengths(), kind="stable")
    out = np.zeros((len(enc), model.num_labels), dtype=np.float32)
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        ids, types, mask = _to(device, *enc.batch(idx, pad_id))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(ids, attention_mask=mask, token_type_ids=types).logits
        out[idx] = logits.float().cpu().numpy()
    return out


def _cross_entropy(logits: np.ndarray, gold: np.ndarray) -> float:
    z = logits - logits.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return float(-logp[np.arange(len(gold)), gold].mean())


# ------------------------------------------------------------------------------------ main
def load_task_data(cfg: FinetuneConfig) -> tuple[T.TaskFiles, T.TaskData, T.TaskData]:
    files = T.resolve_task(cfg.task, cfg.data_dir, cfg.train_path, cfg.dev_path, cfg.test_path,
                           cfg.text_fields, cfg.label_field)
    kw = dict(text_fields=files.text_fields, label_field=files.label_field, drop_labels=files.drop_labels,
              skip_bad_rows=cfg.skip_bad_rows)
    train = T.read_examples(files.train_path, **kw)
    dev = T.read_examples(files.dev_path, **{**kw, "text_fields": train.text_fields})
    return files, train, dev


def run_finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    """Fine-tune, evaluate on dev after every epoch, keep the best epoch; see the module doc.
    ``cfg.threads`` sets torch's thread count for this run only (restored afterwards)."""
    if not cfg.threads:
        return _run_finetune(cfg)
    before = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _run_finetune(cfg)
    finally:
        torch.set_num_threads(before)


def _run_finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    t_start = time.time()
    device = resolve_device(cfg.device)
    say = log if cfg.verbose else (lambda *_a, **_k: None)

    files, train, dev = load_task_data(cfg)
    for d in (train, dev):
        if d.skipped:
            say(f"skipped {d.skipped} malformed rows of {d.path} (--skip_bad_rows), e.g. {d.bad_rows[0]}")
        if d.dropped:
            say(f"dropped {d.dropped} rows of {d.path} labelled {list(files.drop_labels)}")
    labels = T.LabelMap.from_labels(train.labels, source=files.train_path)
    y_train_all = labels.encode(train)
    y_dev_all = labels.encode(dev)

    vocab_path = resolve_vocab(cfg.vocab_path, cfg.pretrained_model_path)
    tok = BertTokenizer(vocab_path)
    reader_key = dict(label=files.label_field, drop=list(files.drop_labels), skip=cfg.skip_bad_rows)
    enc_train = T.cached_encode(tok, train, cfg.seq_length, cfg.truncation, cfg.cache_dir, reader_key)
    enc_dev = T.cached_encode(tok, dev, cfg.seq_length, cfg.truncation, cfg.cache_dir, reader_key)
    sub_tr = T.subsample(len(train), cfg.max_train_examples, seed=0)
    sub_dev = T.subsample(len(dev), cfg.max_dev_examples, seed=1)
    if sub_tr is not None:
        enc_train, y_train = enc_train.subset(sub_tr), y_train_all[sub_tr]
    else:
        y_train = y_train_all
    if sub_dev is not None:
        enc_dev, y_dev = enc_dev.subset(sub_dev), y_dev_all[sub_dev]
    else:
        y_dev = y_dev_all

    model, init_info = build_classifier(cfg, labels.id2label)
    mcfg = model.config
    if mcfg.vocab_size != tok.vocab_size:
        raise ValueError(f"{vocab_path} has {tok.vocab_size} tokens but the model's vocab_size is {mcfg.vocab_size}; "
                         f"pass --vocab_path with the vocab the model was pretrained with")
    model.to(device)
    n_params = sum(p.numel() for p in model.parameters())

    out_dir = cfg.output_dir or (os.path.dirname(os.path.abspath(cfg.output_model_path))
                                 if cfg.output_model_path else None)
    metrics_path = os.path.join(out_dir, "metrics.jsonl") if out_dir else None
    if metrics_path and os.path.exists(metrics_path):
        os.unlink(metrics_path)
    metrics = JsonlWriter(metrics_path)

    n = len(enc_train)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs_num
    warmup_steps = int(total_steps * cfg.warmup)
    opt = make_optimizer(model, cfg.learning_rate, cfg.weight_decay, cfg.adam_eps)
    sched = linear_schedule(opt, warmup_steps, total_steps)
    eval_bs = cfg.eval_batch_size or max(64, 2 * cfg.batch_size)
    rng = np.random.RandomState(cfg.seed)
    torch.manual_seed(cfg.seed)

    say(f"finetune {files.name}: {n} train / {len(enc_dev)} dev examples, {len(labels)} labels, "
        f"model {mcfg.name} ({n_params / 1e6:.1f}M params) on {device}; {cfg.epochs_num} epochs x "
        f"{steps_per_epoch} steps, batch {cfg.batch_size}, lr {cfg.learning_rate:g}")
    if files.note:
        say(f"note: {files.note}")

    epochs: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    best_state: dict[str, torch.Tensor] | None = None
    step = 0
    train_time = 0.0
    for epoch in range(1, cfg.epochs_num + 1):
        model.train()
        perm = rng.permutation(n)
        t_ep = time.time()
        loss_sum, loss_n, seen_tokens = 0.0, 0, 0
        bar = None
        if cfg.progress:
            from tqdm import tqdm
            bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch}/{cfg.epochs_num}", file=sys.stderr,
                       dynamic_ncols=True, leave=False)
        for b in range(steps_per_epoch):
            idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            ids, types, mask = _to(device, *enc_train.batch(idx, tok.pad_id))
            gold = torch.from_numpy(y_train[idx]).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp):
                out = model(ids, attention_mask=mask, token_type_ids=types, labels=gold)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()
            sched.step()
            step += 1
            lv = float(out.loss.detach())
            if not math.isfinite(lv):
                raise RuntimeError(f"loss became {lv} at epoch {epoch} step {step}; lower --learning_rate "
                                   f"(now {cfg.learning_rate:g})")
            loss_sum += lv * len(idx)
            loss_n += len(idx)
            seen_tokens += int(mask.sum())
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum / loss_n:.4f}", lr=f"{sched.get_last_lr()[0]:.2e}")
            if cfg.report_steps and step % cfg.report_steps == 0:
                metrics.write(dict(kind="train", epoch=epoch, step=step, loss=loss_sum / loss_n,
                                   lr=sched.get_last_lr()[0], time=time.time() - t_start))
        if bar is not None:
            bar.close()
        ep_time = time.time() - t_ep
        train_time += ep_time
        t_ev = time.time()
        logits = predict_logits(model, enc_dev, eval_bs, device, tok.pad_id, cfg.amp)
        pred = logits.argmax(1)
        m = classification_metrics(y_dev, pred, len(labels))
        rec = dict(kind="epoch", epoch=epoch, step=step, train_loss=loss_sum / max(loss_n, 1),
                   dev_loss=_cross_entropy(logits, y_dev), dev_acc=m["acc"], dev_macro_f1=m["macro_f1"],
                   dev_correct=m["correct"], dev_total=m["total"], train_time_s=ep_time,
                   eval_time_s=time.time() - t_ev, train_examples_per_s=n / max(ep_time, 1e-9),
                   train_tokens_per_s=seen_tokens / max(ep_time, 1e-9))
        metrics.write(rec)
        epochs.append(rec)
        improved = best is None or m["acc"] > best["dev_acc"]
        say(f"epoch {epoch}: train loss {rec['train_loss']:.4f}, dev acc {m['acc']:.4f} ({m['correct']}/{m['total']}), "
            f"macro-F1 {m['macro_f1']:.4f}, {format_duration(ep_time)}{'  *best*' if improved else ''}")
        if improved:
            best = dict(rec, confusion=m["confusion"])
            if (cfg.save_model and cfg.output_dir) or cfg.output_model_path or cfg.export_hf or \
                    (cfg.run_test and (cfg.test_path or files.test_path)):
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    metrics.close()
    assert best is not None
    last = epochs[-1]

    result: dict[str, Any] = dict(
        task=files.name, train_path=os.path.abspath(files.train_path), dev_path=os.path.abspath(files.dev_path),
        text_fields=list(train.text_fields), labels=labels.labels, num_labels=len(labels),
        n_train=n, n_dev=len(enc_dev), n_train_file=len(train), n_dev_file=len(dev),
        train_skipped=train.skipped, dev_skipped=dev.skipped, train_dropped=train.dropped, dev_dropped=dev.dropped,
        max_train_examples=cfg.max_train_examples, max_dev_examples=cfg.max_dev_examples,
        subsampled=sub_tr is not None or sub_dev is not None,
        note=files.note,
        best_epoch=best["epoch"], best_dev_acc=best["dev_acc"], macro_f1=best["dev_macro_f1"],
        best_dev_macro_f1=best["dev_macro_f1"], last_dev_acc=last["dev_acc"], last_dev_macro_f1=last["dev_macro_f1"],
        best_confusion=best["confusion"], epochs=epochs,
        settings=cfg.to_dict(), vocab_path=os.path.abspath(vocab_path), vocab_sha256=tok.sha256,
        model=dict(name=mcfg.name, num_parameters=mcfg.num_parameters(mlm_head=False, pooler=True),
                   num_parameters_with_head=n_params, config=mcfg.to_dict(),
                   pretrained_model_path=os.path.abspath(cfg.pretrained_model_path) if cfg.pretrained_model_path else None,
                   **init_info),
        device=str(device), threads=torch.get_num_threads(), steps=step, train_time_s=train_time,
        paths={}, torch_version=torch.__version__,
    )
    ft_meta = dict(task=files.name, text_fields=list(train.text_fields), label_field=files.label_field,
                   labels=labels.labels, seq_length=cfg.seq_length, truncation=cfg.truncation,
                   submission=files.submission, id_field=files.id_field, best_epoch=best["epoch"],
                   best_dev_acc=best["dev_acc"], pretrained_model_path=result["model"]["pretrained_model_path"])
    if best_state is not None:
        model.load_state_dict(best_state)
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
            result["test"] = _run_test(model, tok, cfg, files, test_path, train.text_fields, labels, eval_bs,
                                       device, out_dir)
    result["wall_time_s"] = time.time() - t_start
    if out_dir:
        result["paths"]["metrics"] = os.path.abspath(metrics_path)
        result["paths"]["result"] = os.path.abspath(os.path.join(out_dir, "result.json"))
        atomic_write_json(os.path.join(out_dir, "result.json"), result)
    say(f"best epoch {best['epoch']}: dev acc {best['dev_acc']:.4f}, macro-F1 {best['dev_macro_f1']:.4f}; "
        f"last epoch dev acc {last['dev_acc']:.4f}; {format_duration(result['wall_time_s'])}")
    return result


def save_classifier(state: dict[str, torch.Tensor], mcfg: ModelConfig, vocab_path: str, out: str,
                    ft_meta: dict[str, Any]) -> str:
    from miniroberta.interop.export import write_hf_dir
    card = (f"# {mcfg.name} fine-tuned on {ft_meta['task']}\n\nBertForSequenceClassification written by "
            f"`miniroberta finetune`; best epoch {ft_meta['best_epoch']}, dev accuracy "
            f"{ft_meta['best_dev_acc']:.4f}. Labels: {', '.join(ft_meta['labels'][:20])}"
            f"{' ...' if len(ft_meta['labels']) > 20 else ''}.\n")
    write_hf_dir(state, mcfg, vocab_path, out, architecture="BertForSequenceClassification", card=card,
                 extra_files={"finetune.json": json.dumps(ft_meta, indent=2, ensure_ascii=False)})
    return os.path.abspath(out)


def _run_test(model, tok, cfg: FinetuneConfig, files: T.TaskFiles, test_path: str, fields, labels: T.LabelMap,
              eval_bs: int, device, out_dir: str | None) -> dict[str, Any]:
    from miniroberta.finetune.predict import write_predictions
    data = T.read_examples(test_path, text_fields=fields, label_field=files.label_field, require_label=False,
                           drop_labels=files.drop_labels, id_field=files.id_field, skip_bad_rows=cfg.skip_bad_rows)
    enc = T.cached_encode(tok, data, cfg.seq_length, cfg.truncation, cfg.cache_dir,
                          dict(label=files.label_field, drop=list(files.drop_labels), skip=cfg.skip_bad_rows,
                               test=True))
    logits = predict_logits(model, enc, eval_bs, device, tok.pad_id, cfg.amp)
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
    p.add_argument("--max_dev_examples", type=int, default=None, help="deterministic dev subsample (smoke runs)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ...; unset: cuda if available")
    p.add_argument("--layer_norm_type", choices=("hf", "uer"), default=None)
    p.add_argument("--amp", action="store_true", help="bf16 autocast (GPU); weights and optimizer stay fp32")
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


def config_from_args(args: argparse.Namespace) -> FinetuneConfig:
    names = {f.name for f in dataclasses.fields(FinetuneConfig)}
    kw = {k: v for k, v in vars(args).items() if k in names}
    kw["progress"] = not args.no_progress
    return FinetuneConfig(**kw)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if not (cfg.output_dir or cfg.output_model_path or cfg.export_hf):
        log("note: no --output_dir/--output_model_path/--export_hf given; the fine-tuned model is not saved")
    res = run_finetune(cfg)
    summary = {k: res[k] for k in ("task", "best_epoch", "best_dev_acc", "last_dev_acc", "macro_f1", "wall_time_s")}
    summary["paths"] = res["paths"]
    if "test" in res:
        summary["test"] = {k: v for k, v in res["test"].items() if k != "path"}
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    return 0


__all__ = ["FinetuneConfig", "run_finetune", "classification_metrics", "build_classifier", "predict_logits",
           "save_classifier", "resolve_vocab", "resolve_device", "configure", "run"]
