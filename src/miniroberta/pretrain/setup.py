"""What a pretraining run is built from, derived once from its settings: ``prepare(cfg, opts) -> Setup``.

The launching process calls :func:`preflight` (every check that needs no GPU and no process group, so a
bad dataset, vocab or model config fails before any process is started); each training process calls
:func:`prepare` once and builds its model, data and task from the :class:`Setup`. Resuming: ``load_state``
reads a training state (verified against its manifest) and ``check_resume`` refuses one made under another
dataset, model config or result-changing setting.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from miniroberta.data.dataset import DatasetError, MlmDataset
from miniroberta.data.masking import MaskingConfig, SpecialIds, eval_masking
from miniroberta.engine.trainer import STATE_FORMAT
from miniroberta.integrity import IntegrityError, verified_torch_load
from miniroberta.modeling.config import ConfigError, ModelConfig, load_config, replace
from miniroberta.modeling.tokenizer import read_vocab
from miniroberta.outputs import run_files
from miniroberta.pretrain.config import PretrainConfig, PretrainError, RunOptions, state_path_for
from miniroberta.utils import sha256_file


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


@dataclass
class Setup:
    """Everything a pretraining process derives from its settings before it builds a model."""
    dataset: MlmDataset
    vocab_path: str
    vocab: dict[str, int]
    vocab_sha: str
    special: SpecialIds
    model: ModelConfig
    masking: MaskingConfig
    state_path: str
    eval_dataset: MlmDataset | None = None
    eval_masking: MaskingConfig | None = None


def prepare(cfg: PretrainConfig, opts: RunOptions, with_eval: bool = True) -> Setup:
    """Open and check the dataset and vocab, derive the model and masking configs (once per process)."""
    if not os.path.isdir(cfg.dataset_path):
        raise FileNotFoundError(f"--dataset_path {cfg.dataset_path}: no such dataset directory "
                                f"(build one with `miniroberta preprocess`)")
    ds = MlmDataset(cfg.dataset_path)
    vp = _vocab_path(cfg, ds)
    if not os.path.isfile(vp):
        raise FileNotFoundError(f"--vocab_path {vp}: no such file")
    sha = sha256_file(vp)
    ds.check_vocab(sha, vp)
    if len(ds) == 0:
        raise DatasetError(f"{cfg.dataset_path}: the dataset has no instances")
    vocab = read_vocab(vp)
    ev = open_dataset(opts.eval_dataset_path, vp, sha) if (opts.eval_dataset_path and with_eval) else None
    return Setup(dataset=ds, vocab_path=vp, vocab=vocab, vocab_sha=sha, special=SpecialIds.from_vocab(vocab),
                 model=model_config(cfg, len(vocab), ds.seq_length), masking=masking_config(cfg, ds),
                 state_path=state_path_for(cfg.output_model_path), eval_dataset=ev,
                 eval_masking=eval_masking() if ev is not None else None)


def preflight(cfg: PretrainConfig, opts: RunOptions) -> Setup:
    """Checks that need no GPU and no process group (run in the launching process)."""
    setup = prepare(cfg, opts)
    if opts.report_steps < 1 or opts.save_checkpoint_steps < 1:
        raise ValueError("--report_steps and --save_checkpoint_steps must be >= 1")
    if cfg.pretrained_model_path and not os.path.exists(cfg.pretrained_model_path):
        raise FileNotFoundError(f"--pretrained_model_path {cfg.pretrained_model_path}: no such file or directory")
    sp = setup.state_path
    if opts.resume and not os.path.isfile(sp):
        leftovers = [p for p in run_files(cfg.output_model_path) if not p.endswith(".sha256.json")]
        if opts.resume is True or leftovers:
            raise FileNotFoundError(
                f"--resume: no training state {sp} (it is written beside the checkpoints of a run with the same "
                f"--output_model_path)" + (f", but {len(leftovers)} step checkpoint(s) of an earlier run are there "
                f"(e.g. {leftovers[-1]}): continue from those weights with --pretrained_model_path {leftovers[-1]} "
                f"and a new --output_model_path, or pass --overwrite to move them aside" if leftovers else ""))


    return setup


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




__all__ = ["Setup", "prepare", "preflight", "open_dataset", "model_config", "masking_config", "load_state",
           "check_resume"]
