"""Native checkpoints and strict weight loading.

A native checkpoint is ONE safetensors file whose header metadata carries the model config
JSON (``miniroberta_config``) and free-form training info (``miniroberta_meta``), so the file
name can be anything -- e.g. UER-style ``models/x_seq128_model.bin-100000``. Tied weights
(``cls.predictions.decoder.weight``) are stored once, as the word embeddings.

Every file written here gets an integrity manifest (``miniroberta.integrity``) and ``load_weights``
verifies it first: a damaged file is refused naming it. Weights inside an HF folder are verified with
every other file its ``integrity.json`` lists (``integrity.verify_dir``).

``load_weights(path)`` reads any supported source and returns ``(config, state_dict, meta)``:
  * a native safetensors file,
  * a HuggingFace directory (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``),
  * a bare HF ``model.safetensors`` / ``pytorch_model.bin`` with ``config.json`` beside it,
  * a UER-py checkpoint (``model.bin-<step>``, a torch pickle of UER key names), via ``miniroberta.interop.uer``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

from miniroberta.integrity import atomic_write_bytes, verify_dir, verify_file
from miniroberta.interop import uer
from miniroberta.modeling.bert import TIED_KEYS, BertForMaskedLM, BertForSequenceClassification, BertModel
from miniroberta.modeling.config import ConfigError, ModelConfig, load_config, replace
from miniroberta.utils import sha256_file

FORMAT = "miniroberta"
FORMAT_VERSION = "1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model, naming file and tensor."""


def _is_safetensors(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 0 < n < (1 << 30) and head[8:9] == b"{"


def _is_torch_file(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head[:2] == b"PK" or head[:1] == b"\x80"


def strip_tied(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state_dict.items() if k not in TIED_KEYS}


def save_native(path: str | os.PathLike, state_dict: dict[str, torch.Tensor], config: ModelConfig,
                meta: dict[str, Any] | None = None) -> str:
    """Atomically write a native checkpoint (safetensors + config JSON in its metadata) and its
    integrity manifest ``<path>.sha256.json`` (``load_weights`` verifies it)."""
    path = os.fspath(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in strip_tied(state_dict).items()}
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "miniroberta_config": config.to_json(),
        "miniroberta_meta": json.dumps(meta or {}, ensure_ascii=False, sort_keys=True),
    }
    data = st_save(tensors, metadata=metadata)
    atomic_write_bytes(path, data)          # temp file + rename, then the SHA-256 manifest (integrity.py)
    return path


def read_safetensors(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            md = f.metadata() or {}
            sd = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: not a readable safetensors file ({e}); the file may be truncated or corrupt") from None
    return sd, md


def torch_load(path: str) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot be loaded as a weights-only torch checkpoint ({type(e).__name__}: {e}); "
                              f"it may be truncated, corrupt or contain pickled code") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors")
    return dict(obj)


def normalize_hf_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Old HF names (``LayerNorm.gamma/beta``), bare ``BertModel`` keys without ``bert.``,
    and the tied ``cls.predictions.decoder.bias`` duplicate."""
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        k = k.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        if k.startswith(("embeddings.", "encoder.", "pooler.")):
            k = "bert." + k
        if k == "cls.predictions.decoder.bias":
            continue
        if k.endswith("position_ids"):
            continue
        out[k] = v
    return out


def load_weights(path: str | os.PathLike, config_path: str | None = None,
                 layers_num: int | None = None) -> tuple[ModelConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """Read weights from any supported source; see the module docstring."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such file or directory")
    if os.path.isdir(path):
        cfg_file = os.path.join(path, "config.json")
        if not os.path.isfile(cfg_file):
            raise CheckpointError(f"{path}: a model directory needs a config.json")
        for name in ("model.safetensors", "pytorch_model.bin"):
            f = os.path.join(path, name)
            if os.path.isfile(f):
                return load_weights(f, config_path=config_path or cfg_file)
        raise CheckpointError(f"{path}: no model.safetensors or pytorch_model.bin in the directory")

    verify_file(path)                       # IntegrityError naming the file if it changed since it was written
    # the other files of an HF folder (config, vocab, finetune.json, card ...) against its integrity.json
    verify_dir(os.path.dirname(os.path.abspath(path)), skip=(os.path.basename(path),))
    if _is_safetensors(path):
        sd, md = read_safetensors(path)
        meta: dict[str, Any] = {}
        if md.get("format") == FORMAT and "miniroberta_config" in md:
            cfg = ModelConfig.from_dict(json.loads(md["miniroberta_config"]))
            meta = json.loads(md.get("miniroberta_meta", "{}"))
            if config_path:
                cfg = _check_same(cfg, load_config(config_path, vocab_size=cfg.vocab_size), path)
        else:
            cfg = _config_beside(path, config_path)
        return cfg, normalize_hf_keys(sd), meta

    if _is_torch_file(path):
        sd = torch_load(path)
        if uer.is_uer_state_dict(sd):
            cfg_spec = config_path
            sd_hf, info = uer.uer_to_hf(sd, layers_num=layers_num, source=path)
            cfg = uer.infer_config(sd_hf, cfg_spec, source=path)
            return cfg, sd_hf, {"source_format": "uer", **info}
        cfg = _config_beside(path, config_path)
        return cfg, normalize_hf_keys(sd), {"source_format": "hf"}
    raise CheckpointError(f"{path}: neither safetensors nor a torch checkpoint (first bytes unrecognised); "
                          f"the file may be corrupt")


def _config_beside(path: str, config_path: str | None) -> ModelConfig:
    spec = config_path or os.path.join(os.path.dirname(os.path.abspath(path)), "config.json")
    if not config_path and not os.path.isfile(spec):
        raise CheckpointError(f"{path}: no config.json beside the weights; pass --config_path")
    try:
        return load_config(spec)
    except ConfigError as e:
        raise CheckpointError(str(e)) from None


def _check_same(a: ModelConfig, b: ModelConfig, path: str) -> ModelConfig:
    keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")
    diff = [(k, getattr(a, k), getattr(b, k)) for k in keys if getattr(a, k) != getattr(b, k)]
    if diff:
        raise CheckpointError(f"{path}: checkpoint config differs from --config_path: "
                              + ", ".join(f"{k} {x} (checkpoint) vs {y}" for k, x, y in diff))
    return a


def load_into(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str = "checkpoint",
              allow_missing: tuple[str, ...] = (), allow_unexpected: tuple[str, ...] = ()) -> None:
    """Strict load: every missing, unexpected or misshaped tensor is an error naming it.
    ``allow_*`` are key prefixes that may legitimately be absent/extra (e.g. a pooler, or a
    classifier head that fine-tuning initialises)."""
    own = model.state_dict()
    own_keys = {k for k in own if k not in TIED_KEYS}
    sd = {k: v for k, v in state_dict.items() if k not in TIED_KEYS}
    missing = sorted(k for k in own_keys - set(sd) if not k.startswith(allow_missing))
    unexpected = sorted(k for k in set(sd) - own_keys if not k.startswith(allow_unexpected))
    shapes = sorted(f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in own_keys & set(sd) if tuple(sd[k].shape) != tuple(own[k].shape))
    problems = []
    if missing:
        problems.append(f"missing tensors {missing}")
    if unexpected:
        problems.append(f"unexpected tensors {unexpected}")
    if shapes:
        problems.append(f"shape mismatches [{'; '.join(shapes)}]")
    if problems:
        raise CheckpointError(f"{source}: does not fit the model: " + "; ".join(problems))
    with torch.no_grad():
        for k in own_keys & set(sd):
            own[k].copy_(sd[k].to(own[k].dtype))


def load_model(path: str | os.PathLike, kind: str = "mlm", config_path: str | None = None,
               layers_num: int | None = None, layer_norm_type: str | None = None):
    """Build a model of ``kind`` (``mlm``, ``encoder`` or ``cls``) from any checkpoint source."""

    cfg, sd, meta = load_weights(path, config_path=config_path, layers_num=layers_num)
    if layer_norm_type and layer_norm_type != cfg.layer_norm_type:
        cfg = cfg.with_layer_norm(layer_norm_type)
    has_pooler = any(k.startswith("bert.pooler.") for k in sd)
    model: BertForMaskedLM | BertModel | BertForSequenceClassification
    if kind == "mlm":
        model = BertForMaskedLM(cfg, add_pooling_layer=has_pooler)
        load_into(model, sd, str(path), allow_unexpected=("cls.seq_relationship.", "classifier."))
    elif kind == "encoder":
        model = BertModel(cfg, add_pooling_layer=has_pooler)
        sd = {k[len("bert."):]: v for k, v in sd.items() if k.startswith("bert.")}
        load_into(model, sd, str(path))
    elif kind == "cls":
        model = BertForSequenceClassification(cfg)
        load_into(model, sd, str(path), allow_missing=("bert.pooler.", "classifier."),
                  allow_unexpected=("cls.",))
    else:
        raise ValueError(f"unknown model kind {kind!r}")
    return model, meta


def find_model_dir(path: str) -> str:
    """A fine-tune output dir (``model/`` inside), an HF dir or a native checkpoint file."""
    p = Path(path)
    if p.is_dir() and not (p / "config.json").is_file() and (p / "model" / "config.json").is_file():
        return str(p / "model")
    if not p.exists():
        raise FileNotFoundError(f"{path}: no such fine-tuned model (give the --output_dir of `miniroberta finetune`, "
                                f"its model/ folder, an HF classifier directory or a native checkpoint)")
    return str(p)


def load_finetuned(path: str, device: str | None = None) -> tuple[BertForSequenceClassification, dict[str, Any]]:
    """The classifier and its fine-tuning metadata (task, text fields, labels, seq_length ...)."""
    path = find_model_dir(path)
    cfg, sd, meta = load_weights(path)
    ft: dict[str, Any] = {}
    fj = Path(path) / "finetune.json"
    if Path(path).is_dir() and fj.is_file():
        ft = json.loads(fj.read_text(encoding="utf-8"))
    elif meta.get("labels"):
        ft = dict(meta)
    if cfg.id2label is None:
        if ft.get("labels"):
            cfg = replace(cfg, id2label=dict(enumerate(ft["labels"])))
        else:
            raise ValueError(f"{path}: the model config has no id2label; is this a fine-tuned classifier?")
    if "classifier.weight" not in sd:
        raise ValueError(f"{path}: has no classifier head (classifier.weight); fine-tune it first with "
                         f"`miniroberta finetune`")
    model = BertForSequenceClassification(cfg)
    load_into(model, sd, path, allow_unexpected=("cls.",))
    model.to(device or "cpu").eval()
    id2label = cfg.id2label   # set above (from the config or the labels), never None here
    assert id2label is not None
    ft.setdefault("labels", [id2label[i] for i in range(cfg.num_labels)])
    ft["model_dir"] = path
    return model, ft


def model_fingerprint(path: str | os.PathLike | None) -> dict[str, Any]:
    """Identity of a model's weights: ``{"path": absolute path, "sha256": of the weight file}`` (a directory's
    ``model.safetensors`` or ``pytorch_model.bin``); ``{"path": None, "sha256": None}`` for no model."""
    if not path:
        return {"path": None, "sha256": None}
    p = Path(path)
    f = p
    if p.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (p / name).is_file():
                f = p / name
                break
    if not f.is_file():
        raise FileNotFoundError(f"{path}: no such model (no model.safetensors or pytorch_model.bin in it)")
    return {"path": str(p.resolve()), "sha256": sha256_file(f)}


__all__ = ["model_fingerprint", "find_model_dir", "load_finetuned", "save_native", "load_weights", "load_into", "load_model", "CheckpointError", "strip_tied",
           "normalize_hf_keys", "torch_load", "read_safetensors"]
