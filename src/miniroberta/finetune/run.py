"""Fine-tune a pretrained encoder for sequence classification (``miniroberta finetune``).

Mirrors UER-py's ``finetune/run_classifier.py`` (same option names, seq 128, warmup 0.1 then
linear decay, dev evaluation after every epoch, best-dev checkpoint kept, accuracy) with
these deliberate differences (see docs/finetune.md):

* pairs are truncated longest-first (UER cuts the concatenation, which can drop text_b);
* the head is HF ``BertForSequenceClassification`` (pooler dense+tanh, dropout, classifier);
  the pooler is reused when the checkpoint has one, otherwise it and the classifier start
  from N(0, 0.02) with zero bias (UER keeps PyTorch's default Linear init and no dropout);
* torch AdamW with bias correction, eps 1e-6, weight decay 0.01 except bias/LayerNorm;
* batches are padded to the batch's longest sequence (UER pads to seq_length) -- same maths;
* the learning rate defaults to what was measured for the model's start (``finetune.config``).

A run is: settings validated and resolved (``finetune.config``) -> the output claimed -> the data
prepared (``finetune.data``, the teacher's soft targets from ``finetune.teacher`` when distilling) ->
the classifier built -> the engine trains the task (``finetune.task``) -> the best epoch saved.

Output directory layout (``--output_dir``)::

    model/          HF BertForSequenceClassification dir of the best epoch (config with
                    id2label/label2id, model.safetensors, vocab.txt, finetune.json)
    metrics.jsonl   one record per report step and per epoch
    result.json     the returned summary
    train_state.pt  the resumable training state (and its .sha256.json manifest)
    test_predictions.{json,tsv}  when the test file is unlabeled
"""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any, Callable

import numpy as np
import torch

from miniroberta.data.tasks import LabelMap, TaskFiles, cached_encode, read_examples
from miniroberta.engine.device import device_info, resolve_device
from miniroberta.engine.metrics import RunLog
from miniroberta.engine.precision import resolve_precision
from miniroberta.engine.threads import available_cores, configure_threads
from miniroberta.engine.trainer import STATE_FORMAT, LoopOptions, Trainer
from miniroberta.finetune.config import (DISTILL_FIELDS, TRAINING, FinetuneConfig, FinetuneError, likely_fixes,
                                        short_float)
from miniroberta.finetune.data import FinetuneData, identity_changes, prepare_data, reader_key
from miniroberta.finetune.inference import (at_chance, classification_metrics, majority_class, predict_logits,
                                            write_predictions)
from miniroberta.finetune.task import TASK_STATE_VERSION, ClassifierTask
from miniroberta.integrity import IntegrityError, expected, verified_torch_load
from miniroberta.interop.checkpoint import load_into, load_weights, save_native
from miniroberta.interop.cards import classifier_card
from miniroberta.interop.export import write_hf_dir
from miniroberta.modeling.bert import BertForSequenceClassification, init_weights
from miniroberta.modeling.config import ModelConfig, load_config, replace
from miniroberta.modeling.tokenizer import BertTokenizer
from miniroberta.modeling.unpad import UnpaddedClassifier
from miniroberta.outputs import claim_output
from miniroberta.settings import add_options, from_args, resume_mismatches
from miniroberta.utils import atomic_write_json, format_duration, log

STATE_NAME = "train_state.pt"


# ------------------------------------------------------------------------------------ model
def build_classifier(cfg: FinetuneConfig, id2label: dict[int, str]) -> tuple[BertForSequenceClassification, dict]:
    """The classifier with pretrained encoder weights (and pooler, if the checkpoint has one);
    the rest initialised from N(0, initializer_range) with zero bias under ``cfg.seed``."""
    torch.manual_seed(cfg.seed)
    info: dict[str, Any] = {}
    if cfg.pretrained_model_path:
        model_config, sd, meta = load_weights(cfg.pretrained_model_path, config_path=cfg.config_path)
        info["pretrained_meta"] = {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool))}
    else:
        if not cfg.config_path:
            raise FinetuneError("give --pretrained_model_path (or --config_path PRESET to fine-tune a randomly "
                                "initialised model, a no-pretraining baseline)")
        model_config, sd = load_config(cfg.config_path), None
    if cfg.layer_norm_type and cfg.layer_norm_type != model_config.layer_norm_type:
        model_config = model_config.with_layer_norm(cfg.layer_norm_type)
    changes: dict[str, Any] = {"id2label": id2label}
    if cfg.dropout is not None:
        changes.update(hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout)
    model_config = replace(model_config, **changes)
    if cfg.seq_length > model_config.max_position_embeddings:
        raise FinetuneError(f"--seq_length {cfg.seq_length} exceeds the model's max_position_embeddings "
                            f"{model_config.max_position_embeddings}")
    model = BertForSequenceClassification(model_config)
    init_weights(model, model_config.initializer_range, "hf")
    if sd is not None:
        # a previous classifier head has other labels: always start a fresh one
        sd = {k: v for k, v in sd.items() if not k.startswith(("classifier.", "cls."))}
        load_into(model, sd, str(cfg.pretrained_model_path), allow_missing=("bert.pooler.", "classifier."))
        info["pooler_from_checkpoint"] = any(k.startswith("bert.pooler.") for k in sd)
    return model, info


def classifier_card_text(model_config: ModelConfig, ft_meta: dict[str, Any], result: dict[str, Any],
                         cfg: FinetuneConfig) -> str:
    """The hub-ready model card of the fine-tuned classifier (``interop.cards.classifier_card``): label names
    and meanings, the train subsample, dev accuracy and macro-F1, the base model by name, the settings."""
    base = result["model"].get("pretrained_model_path")
    return classifier_card(
        model_config, task=ft_meta["task"], labels=ft_meta["labels"], dev_accuracy=result["best_dev_acc"],
        dev_macro_f1=result["best_dev_macro_f1"], n_train=result["n_train"], n_train_total=result["n_train_file"],
        n_dev=result["n_dev"], n_dev_total=result["n_dev_file"],
        base_model=os.path.basename(os.path.normpath(base)) if base else None, pretrained=bool(base),
        settings={"epochs": cfg.epochs_num, "batch_size": cfg.batch_size, "learning_rate": cfg.learning_rate,
                  "seq_length": cfg.seq_length, "seed": cfg.seed, "precision": result["precision"]},
        note=result.get("note") or "", data_dir=cfg.data_dir)


def save_classifier(state: dict[str, torch.Tensor], model_config: ModelConfig, vocab_path: str, out: str,
                    ft_meta: dict[str, Any], card: str | None = None) -> str:
    card = card or (f"# {model_config.name} fine-tuned on {ft_meta['task']}\n\nBertForSequenceClassification "
                    f"written by `miniroberta finetune`; best epoch {ft_meta['best_epoch']}, dev accuracy "
                    f"{ft_meta['best_dev_acc']:.4f}.\n")
    write_hf_dir(state, model_config, vocab_path, out, architecture="BertForSequenceClassification", card=card,
                 extra_files={"finetune.json": json.dumps(ft_meta, indent=2, ensure_ascii=False)})
    return os.path.abspath(out)


# ------------------------------------------------------------------------------------ resume
def load_resume_state(state_path: str | None) -> dict[str, Any]:
    """The training state to continue, verified against its SHA-256 manifest; every way it can be unusable
    (missing, no manifest, damaged, not a fine-tuning state) is one line naming the fix."""
    fresh = "start over with --overwrite (the old output is moved aside)"
    if not state_path or not os.path.isfile(state_path):
        raise FileNotFoundError(f"--resume: no training state {state_path or '(give --output_dir)'}; it is written "
                                f"to <output_dir>/{STATE_NAME} during training and when a run is stopped")
    try:
        if expected(state_path)[0] is None:
            raise FinetuneError(f"--resume: {state_path} has no integrity manifest ({state_path}.sha256.json), so it "
                                f"cannot be verified; restore the manifest, or {fresh}")
        st = verified_torch_load(state_path)
    except (FinetuneError, FileNotFoundError):
        raise
    except IntegrityError as e:
        raise FinetuneError(f"--resume: {e}") from None
    except Exception as e:  # noqa: BLE001 -- an unreadable pickle, a truncated zip ...
        raise FinetuneError(f"--resume: cannot read the training state {state_path} ({type(e).__name__}: "
                            f"{str(e)[:200]}); it may be corrupt -- {fresh}") from None
    if not isinstance(st, dict) or st.get("format") != STATE_FORMAT or "task" not in st:
        raise FinetuneError(f"--resume: {state_path} is not a miniroberta fine-tuning state; {fresh}")
    if st["task"].get("version") != TASK_STATE_VERSION:
        raise FinetuneError(f"--resume: {state_path} was written by an older miniroberta (fine-tuning state version "
                            f"{st['task'].get('version', 1)}, now {TASK_STATE_VERSION}); {fresh}")
    return st


def check_resume(st: dict[str, Any], state_path: str, cfg: FinetuneConfig, data: FinetuneData) -> None:
    """Refuse to continue a state under other result-changing settings, another precision or other data."""
    was = st.get("precision", "fp32")
    if cfg.precision not in ("auto", was):
        raise FinetuneError(f"refusing to resume: {state_path} was trained with --precision {was}, not "
                            f"{cfg.precision}; resume with --precision {was} (or auto), or start over with --overwrite")
    diff = resume_mismatches(st["task"]["settings"], cfg.resume_key())
    if diff:
        raise FinetuneError(f"refusing to resume {state_path}: settings that change the result differ (state -> now): "
                            + ", ".join(f"--{d}" for d in diff) + "; use the original settings, or start over "
                            "with --overwrite")
    changed = identity_changes(st["task"]["data"], data.identity())
    if changed:
        raise FinetuneError(f"refusing to resume {state_path}: the data differs from the run's ({', '.join(changed)} "
                            f"changed); a resumed run must see the same data -- restore the files, or start over with "
                            f"--overwrite")


# ------------------------------------------------------------------------------------ main
def run_finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    """Fine-tune, evaluate on dev after every epoch, keep the best epoch; see the module doc.

    The settings are validated first (every bad value named at once, nothing written). ``cfg.threads``
    (default: the cores this process may run on) sets torch's threads for this run only. An output is
    claimed for the run: one writer, and an earlier run's output is refused unless ``resume`` or
    ``overwrite`` (see ``miniroberta.outputs``)."""
    cfg.validate()
    cfg, decisions = cfg.resolved()
    out_dir = cfg.state_dir()
    claim = _claim(cfg, out_dir)
    before = torch.get_num_threads()
    ok = False
    try:
        threads = dict(configure_threads(cfg.threads), affinity=available_cores())
        result = _run(cfg, decisions, threads, out_dir)
        ok = True
        return result
    finally:
        torch.set_num_threads(before)
        if claim is not None:
            out = cfg.output_dir
            if not ok and not claim.existed and out and os.path.isdir(out) and not os.listdir(out):
                os.rmdir(out)              # a run that failed before writing anything leaves no empty folder
            claim.release()


def _claim(cfg: FinetuneConfig, out_dir: str | None) -> Any:
    """Claim the run's outputs: ``--output_dir`` (else the ``--output_model_path`` file, else ``--export_hf``)
    with the other outputs as related paths -- an earlier run's are refused unless resume/overwrite."""
    outputs = [p for p in (cfg.output_dir, cfg.output_model_path, cfg.export_hf) if p]
    if not outputs:
        return None
    related = outputs[1:] + ([os.path.join(out_dir, STATE_NAME)] if out_dir and not cfg.output_dir else [])
    return claim_output(outputs[0], resume=cfg.resume, overwrite=cfg.overwrite, command="finetune",
                        what="a fine-tuned model", related=related)


def _learning_rate(cfg: FinetuneConfig) -> float:
    """The run's learning rate: ``FinetuneConfig.resolved()`` fills in the preset's when none was given."""
    if cfg.learning_rate is None:
        raise FinetuneError("no learning rate: the settings were not resolved (FinetuneConfig.resolved())")
    return cfg.learning_rate


def _start_line(cfg: FinetuneConfig, data: FinetuneData, task: ClassifierTask, model_config: ModelConfig,
                n_params: int, device: torch.device, precision: str, why: str, decisions: dict, step: int) -> str:
    lr = decisions["learning_rate"]
    return (("distill" if cfg.distilling else "finetune")
            + f" {data.files.name}: {task.n} train / {len(data.enc_dev)} dev examples, {len(data.labels)} labels, "
            f"model {model_config.name} ({n_params / 1e6:.1f}M params, {decisions['init']['value']} init) on "
            f"{device}, precision {precision} ({why}); {cfg.epochs_num} epochs x {task.steps_per_epoch} steps, "
            f"batch {cfg.batch_size}, lr {short_float(_learning_rate(cfg))} ({lr['reason']})"
            + (f"; resumed at step {step}" if step else ""))


def _run(cfg: FinetuneConfig, decisions: dict[str, Any], threads: dict[str, Any], out_dir: str | None) -> dict:
    t_start = time.time()
    device = resolve_device(cfg.device)
    say: Callable[[str], None] = log if cfg.verbose else (lambda *_a, **_k: None)
    if "warning" in decisions["learning_rate"]:
        say("warning: " + decisions["learning_rate"]["warning"])
    state_path = os.path.join(out_dir, STATE_NAME) if out_dir else None
    st = load_resume_state(state_path) if cfg.resume else None
    data = prepare_data(cfg, device, say)
    if st is not None:
        assert state_path is not None   # load_resume_state refuses a missing state path
        check_resume(st, state_path, cfg, data)
    model, init_info = build_classifier(cfg, data.labels.id2label)
    model_config = model.config
    if model_config.vocab_size != data.tok.vocab_size:
        raise FinetuneError(f"{data.vocab_path} has {data.tok.vocab_size} tokens but the model's vocab_size is "
                            f"{model_config.vocab_size}; pass --vocab_path with the vocab the model was pretrained "
                            f"with")
    if st is not None:
        assert state_path is not None   # load_resume_state refuses a missing state path
        load_into(model, st["model"], state_path)
    model.to(device).train()
    n_params = sum(p.numel() for p in model.parameters())
    precision, why = (st["precision"], "as the training state") if st is not None else \
        resolve_precision(cfg.precision, device)
    advice = (f"Lower --learning_rate (now {short_float(_learning_rate(cfg))}) and run again.")
    task = ClassifierTask(cfg, model, data, device, state_path=state_path, advice=advice)
    total_steps = task.steps_per_epoch * cfg.epochs_num
    trainer = Trainer(model, optim=cfg.optim(), total_steps=total_steps, device=device, precision=precision,
                      forward=_forward(model, cfg))
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
    run_log.say(_start_line(cfg, data, task, model_config, n_params, device, precision, why, decisions,
                            trainer.step))
    if data.files.note:
        run_log.say(f"note: {data.files.note}")
    run_log.write("start", trainer.step, settings=cfg.to_dict(), decisions=decisions,
                  model_config=model_config.to_dict(),
                  device=device_info(device), precision=precision, precision_reason=why, threads=threads)
    loop = LoopOptions(report_steps=cfg.report_steps, save_steps=None, stop_after_steps=cfg.stop_after_steps)
    try:
        fit = trainer.fit(task, loop, run_log, state_path, advice=advice)
    finally:
        run_log.close()
    if fit.stopped:
        say(f"stopped ({fit.stopped}) at step {fit.steps}/{total_steps}"
            + ("; continue with the same command plus --resume" if state_path
               else "; nothing was saved (no --output_dir)"))
        return dict(task=data.files.name, stopped=fit.stopped, steps=fit.steps, state_path=state_path,
                    epochs=task.epochs)
    run = dict(cfg=cfg, data=data, task=task, model=model, init_info=init_info, n_params=n_params, device=device,
               precision=precision, decisions=decisions, threads=threads, steps=trainer.step, t_start=t_start)
    return _finish(run, out_dir, metrics_path, say)


def _forward(model: BertForSequenceClassification, cfg: FinetuneConfig) -> torch.nn.Module:
    return UnpaddedClassifier(model, bucket=True) if cfg.unpad else model


# ------------------------------------------------------------------------------------ the end of a run
def chance_check(best_acc: float, data: FinetuneData, cfg: FinetuneConfig) -> dict[str, Any]:
    """Whether the best dev accuracy is at (or within noise of) the majority-class rate, with the likely fix."""
    k, rate = majority_class(data.y_dev, len(data.labels))
    out: dict[str, Any] = dict(majority_label=data.labels.labels[k], majority_rate=rate,
                               at_majority_rate=at_chance(best_acc, rate, len(data.y_dev)))
    if out["at_majority_rate"]:
        out["warning"] = (f"best dev accuracy {100 * best_acc:.2f} % is at the majority-class rate "
                          f"{100 * rate:.2f} % (always answering {data.labels.labels[k]!r} scores that, on "
                          f"{len(data.y_dev)} dev examples): the model learned nothing usable. Likely fixes: "
                          + "; ".join(likely_fixes(cfg.learning_rate or 0.0, cfg.pretrained)))
    return out


def _result(run: dict[str, Any]) -> dict[str, Any]:
    cfg, data, task = run["cfg"], run["data"], run["task"]
    best, last = task.best, task.epochs[-1]
    model_config = run["model"].config
    files, train, dev = data.files, data.train, data.dev
    model = dict(name=model_config.name, num_parameters=model_config.num_parameters(mlm_head=False, pooler=True),
                 num_parameters_with_head=run["n_params"], config=model_config.to_dict(),
                 pretrained_model_path=(os.path.abspath(cfg.pretrained_model_path) if cfg.pretrained_model_path
                                        else None),
                 **run["init_info"])
    if data.teacher:
        model.update(teacher={k: v for k, v in data.teacher.items() if k != "cache"},
                     distill=dict(temperature=cfg.temperature, alpha=cfg.alpha, transfer_path=cfg.transfer_path))
    return dict(
        task=files.name, train_path=os.path.abspath(files.train_path), dev_path=os.path.abspath(files.dev_path),
        text_fields=list(train.text_fields), labels=data.labels.labels, num_labels=len(data.labels),
        n_train=task.n, n_dev=len(data.enc_dev), n_train_file=len(train), n_dev_file=len(dev),
        train_skipped=train.skipped, dev_skipped=dev.skipped, train_dropped=train.dropped, dev_dropped=dev.dropped,
        max_train_examples=cfg.max_train_examples, max_train_tokens=cfg.max_train_tokens,
        max_dev_examples=cfg.max_dev_examples, subsampled=data.subsampled, note=files.note,
        best_epoch=best["epoch"], best_dev_acc=best["dev_acc"], macro_f1=best["dev_macro_f1"],
        best_dev_macro_f1=best["dev_macro_f1"], last_dev_acc=last["dev_acc"], last_dev_macro_f1=last["dev_macro_f1"],
        best_confusion=best["confusion"], epochs=task.epochs, chance=chance_check(best["dev_acc"], data, cfg),
        dev_predictions=best.get("predictions"), dev_labels=np.asarray(data.y_dev).tolist(),
        settings=cfg.to_dict(), decisions=run["decisions"], vocab_path=os.path.abspath(data.vocab_path),
        vocab_sha256=data.tok.sha256, data_identity=data.identity(), model=model, device=str(run["device"]),
        precision=run["precision"], threads=run["threads"]["threads"], thread_policy=run["threads"],
        steps=run["steps"], train_time_s=sum(e["train_time_s"] for e in task.epochs), paths={},
        torch_version=torch.__version__)


def _finish(run: dict[str, Any], out_dir: str | None, metrics_path: str | None,
            say: Callable[[str], None]) -> dict[str, Any]:
    cfg, data, task, model = run["cfg"], run["data"], run["task"], run["model"]
    result = _result(run)
    if "warning" in result["chance"]:
        say("warning: " + result["chance"]["warning"])
    best = task.best
    ft_meta = dict(task=data.files.name, text_fields=list(data.train.text_fields), label_field=data.files.label_field,
                   labels=data.labels.labels, seq_length=cfg.seq_length, truncation=cfg.truncation,
                   submission=data.files.submission, id_field=data.files.id_field, best_epoch=best["epoch"],
                   best_dev_acc=best["dev_acc"], pretrained_model_path=result["model"]["pretrained_model_path"],
                   max_train_examples=cfg.max_train_examples, n_train=task.n, n_train_file=len(data.train))
    model.load_state_dict(task.best_state)  # (into the model's own precision) for the test predictions
    paths = result["paths"]
    card = classifier_card_text(model.config, ft_meta, result, cfg) if (cfg.output_dir and cfg.save_model) \
        or cfg.export_hf else None
    if cfg.output_dir and cfg.save_model:
        paths["model_dir"] = save_classifier(task.best_state, model.config, data.vocab_path,
                                             os.path.join(cfg.output_dir, "model"), ft_meta, card)
    if cfg.export_hf:
        paths["export_hf"] = save_classifier(task.best_state, model.config, data.vocab_path, cfg.export_hf, ft_meta,
                                             card)
    if cfg.output_model_path:
        save_native(cfg.output_model_path, task.best_state, model.config, meta=ft_meta)
        paths["output_model_path"] = os.path.abspath(cfg.output_model_path)
    test_path = cfg.test_path or data.files.test_path
    if test_path and cfg.run_test:
        result["test"] = _run_test(model, data, cfg, test_path, task.eval_bs, run["device"], out_dir)
    result["wall_time_s"] = time.time() - run["t_start"]
    if out_dir:
        if metrics_path is not None:   # set whenever out_dir is
            paths["metrics"] = os.path.abspath(metrics_path)
        paths["result"] = os.path.abspath(os.path.join(out_dir, "result.json"))
        atomic_write_json(os.path.join(out_dir, "result.json"), result)
    say(f"best epoch {best['epoch']}: dev acc {best['dev_acc']:.4f}, macro-F1 {best['dev_macro_f1']:.4f}; "
        f"last epoch dev acc {result['last_dev_acc']:.4f}; {format_duration(result['wall_time_s'])}")
    return result


def _run_test(model: BertForSequenceClassification, data: FinetuneData, cfg: FinetuneConfig, test_path: str,
              eval_bs: int, device: torch.device, out_dir: str | None) -> dict[str, Any]:
    files: TaskFiles = data.files
    tok: BertTokenizer = data.tok
    labels: LabelMap = data.labels
    test = read_examples(test_path, text_fields=data.train.text_fields, label_field=files.label_field,
                         require_label=False, drop_labels=files.drop_labels, id_field=files.id_field,
                         skip_bad_rows=cfg.skip_bad_rows, allowed_labels=files.labels)
    enc = cached_encode(tok, test, cfg.seq_length, cfg.truncation, cfg.cache_dir,
                        dict(reader_key(files, cfg.skip_bad_rows), test=True))
    logits = predict_logits(model, enc, eval_bs, device, tok.pad_id)
    pred = logits.argmax(1)
    res: dict[str, Any] = dict(path=os.path.abspath(test_path), n=len(test))
    if test.labels is not None:
        m = classification_metrics(labels.encode(test), pred, len(labels))
        res.update(acc=m["acc"], macro_f1=m["macro_f1"])
    if test.skipped:
        res["skipped_rows"] = test.skipped
        log(f"{test_path}: {test.skipped} malformed row(s) skipped (--skip_bad_rows); they have no prediction")
    if out_dir:
        ext = "json" if files.submission == "clue" else "tsv"
        p = os.path.join(out_dir, f"test_predictions.{ext}")
        write_predictions(p, test.ids, [labels.labels[i] for i in pred], files.submission)
        res["predictions"] = os.path.abspath(p)
    return res


# ------------------------------------------------------------------------------------ CLI
def add_amp_alias(p: argparse.ArgumentParser) -> None:
    """``--amp``: 0.1.0's flag, an alias of ``--precision bf16``."""
    p.add_argument("--amp", action="store_true", help="alias of --precision bf16")


def configure(p: argparse.ArgumentParser) -> None:
    """The options are generated from ``FinetuneConfig`` (its defaults, help and checks); the
    distillation options are ``miniroberta distill``'s."""
    groups: dict = {}
    add_options(p, FinetuneConfig, skip=DISTILL_FIELDS, groups=groups)
    add_amp_alias(groups[TRAINING])


def config_from_args(args: argparse.Namespace, **overrides: Any) -> FinetuneConfig:
    if getattr(args, "amp", False):
        overrides["precision"] = "bf16"
    return from_args(FinetuneConfig, args, **overrides).validate()


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
    if res["chance"].get("at_majority_rate"):
        summary["warning"] = res["chance"]["warning"]
    summary["paths"] = res["paths"]
    if "test" in res:
        summary["test"] = {k: v for k, v in res["test"].items() if k != "path"}
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    return 0


__all__ = ["run_finetune", "build_classifier", "save_classifier", "load_resume_state", "check_resume",
           "chance_check", "configure", "config_from_args", "run", "print_result", "add_amp_alias", "STATE_NAME"]
