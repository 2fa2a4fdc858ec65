"""Model configuration: one typed dataclass, the 24 miniature presets, and readers for
preset names, UER-py config JSONs and HuggingFace ``config.json`` files.

Field names are HuggingFace's ``BertConfig`` names so that export is ``asdict`` + a few
HF-only keys. ``layer_norm_type`` is ours: ``"hf"`` (``nn.LayerNorm``, biased variance,
eps inside the sqrt) or ``"uer"`` (UER-py's ``gamma*(x-mean)/(std+eps)+beta`` with the
unbiased std) -- see ``model.LayerNorm``.
"""
from __future__ import annotations

import json
import os
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from typing import Any

# The 24 miniatures: L x H, heads = H/64, FFN = 4H (UER-py / Turc et al. 2019).
LAYERS = (2, 4, 6, 8, 10, 12)
HIDDENS = (128, 256, 512, 768)
ALIASES = {
    "tiny": "L2_H128",
    "mini": "L4_H256",
    "small": "L4_H512",
    "medium": "L8_H512",
    "base": "L12_H768",
}
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_new", "gelu_fast": "gelu_new", "relu": "relu", "silu": "silu", "swish": "silu"}
LAYER_NORM_TYPES = ("hf", "uer")
# The LayerNorm eps that goes with each flavour: UER-py's (1e-6, outside the sqrt) and HF/Google BERT's
# (1e-12). ``ModelConfig.with_layer_norm`` applies it; nothing else should spell these numbers.
LAYER_NORM_EPS = {"hf": 1e-12, "uer": 1e-6}


class ConfigError(ValueError):
    """A model configuration that cannot be built, with the reason and a fix."""


# Sizes beyond these are typos, not models (BERT-large is 24 x 1024, vocabularies stay below 1M).
LIMITS = {"num_hidden_layers": 256, "hidden_size": 16384, "num_attention_heads": 1024,
          "intermediate_size": 65536, "vocab_size": 4_000_000, "max_position_embeddings": 65536,
          "type_vocab_size": 1024, "num_labels": 100_000}


def physical_memory() -> int | None:
    """Bytes of memory of this machine (None when unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


@dataclass
class ModelConfig:
    vocab_size: int = 21128
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    layer_norm_type: str = "hf"
    pad_token_id: int = 0
    # sequence classification (ignored by the MLM model)
    num_labels: int = 2
    id2label: dict[int, str] | None = None
    classifier_dropout: float | None = None

    def __post_init__(self) -> None:
        if self.id2label is not None:
            self.id2label = {int(k): str(v) for k, v in self.id2label.items()}
            self.num_labels = len(self.id2label)
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size", "num_labels"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        for name, hi in LIMITS.items():
            v = getattr(self, name)
            if v > hi:
                raise ConfigError(f"{name} {v:,} is beyond what miniroberta builds (at most {hi:,}); is the config "
                                  f"a typo? The 24 miniatures use up to 12 layers, hidden 768, vocab 21,128")
        self.check_memory()
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                f"{self.num_attention_heads}; the miniatures use heads = hidden_size/64 "
                f"(e.g. {max(1, self.hidden_size // 64)})")
        if self.hidden_act not in ACTIVATIONS:
            raise ConfigError(f"hidden_act {self.hidden_act!r} is not supported; use one of {sorted(ACTIVATIONS)}")
        self.hidden_act = ACTIVATIONS[self.hidden_act]
        if self.layer_norm_type not in LAYER_NORM_TYPES:
            raise ConfigError(f"layer_norm_type must be one of {LAYER_NORM_TYPES}, got {self.layer_norm_type!r}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            v = getattr(self, name)
            if not 0.0 <= float(v) < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {v!r}")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ConfigError(f"pad_token_id {self.pad_token_id} outside the vocabulary (size {self.vocab_size})")

    def memory_bytes(self, training: bool = True) -> int:
        """Estimated bytes of the fp32 weights, plus gradients and AdamW's two moments when ``training``
        (activations come on top and depend on the batch)."""
        n = self.num_parameters(mlm_head=True, pooler=True)
        return 4 * n * (4 if training else 1)

    def check_memory(self, available: int | None = None) -> None:
        """Refuse a config whose weights alone (fp32) do not fit in this machine's memory -- before
        anything is allocated, instead of allocating until the machine runs out."""
        avail = physical_memory() if available is None else available
        need = self.memory_bytes(training=False)
        if avail and need > avail:
            raise ConfigError(f"a model of {self.num_hidden_layers} layers, hidden {self.hidden_size}, FFN "
                              f"{self.intermediate_size}, vocab {self.vocab_size} has "
                              f"{self.num_parameters(pooler=True) / 1e9:.2f}G parameters = {need / 1e9:.1f} GB in fp32 "
                              f"(training needs ~{self.memory_bytes() / 1e9:.1f} GB), more than this machine's "
                              f"{avail / 1e9:.1f} GB of memory; check the config's sizes")

    # ------------------------------------------------------------ conversions
    def with_layer_norm(self, kind: str) -> "ModelConfig":
        """A copy with the LayerNorm flavour ``kind`` ("uer" or "hf") and its eps (``LAYER_NORM_EPS``:
        uer 1e-6, hf 1e-12) -- the one place that rule is written."""
        if kind not in LAYER_NORM_TYPES:
            raise ConfigError(f"layer_norm_type must be one of {LAYER_NORM_TYPES}, got {kind!r}")
        return replace(self, layer_norm_type=kind, layer_norm_eps=LAYER_NORM_EPS[kind])

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def name(self) -> str:
        return f"L{self.num_hidden_layers}_H{self.hidden_size}"

    def num_parameters(self, mlm_head: bool = True, pooler: bool = False) -> int:
        H, L, I, V = self.hidden_size, self.num_hidden_layers, self.intermediate_size, self.vocab_size
        emb = V * H + self.max_position_embeddings * H + self.type_vocab_size * H + 2 * H
        layer = 4 * (H * H + H) + 2 * H + (H * I + I) + (I * H + H) + 2 * H
        n = emb + L * layer
        if mlm_head:
            n += H * H + H + 2 * H + V  # transform + LN + output bias (decoder tied)
        if pooler:
            n += H * H + H
        return n

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["id2label"] is not None:
            d["id2label"] = {str(k): v for k, v in d["id2label"].items()}
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str | None = None) -> "ModelConfig":
        """A config from its ``to_dict`` form; errors name ``source`` (the file) when given."""
        where = f"{source}: " if source else ""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"{where}unknown model config keys {unknown}; known keys: {sorted(known)}")
        check_json_types(d, field_types(), source or "the model config")
        try:
            return cls(**d)
        except ConfigError as e:
            raise ConfigError(f"{where}{e}") from None

    def to_hf_dict(self, architecture: str = "BertForMaskedLM") -> dict[str, Any]:
        """A transformers ``BertConfig`` dict (``model_type`` bert)."""
        d = {k: v for k, v in self.to_dict().items() if k not in ("layer_norm_type", "num_labels", "id2label")}
        d.update(architectures=[architecture], model_type="bert", tie_word_embeddings=True,
                 position_embedding_type="absolute")
        if self.id2label is not None:
            d["id2label"] = {str(k): v for k, v in self.id2label.items()}
            d["label2id"] = {v: int(k) for k, v in self.id2label.items()}
        else:
            d["num_labels"] = self.num_labels  # transformers builds LABEL_i names from it
        if self.layer_norm_type == "uer":
            # transformers has no such LayerNorm; record it so our own loader restores it.
            d["miniroberta_layer_norm_type"] = "uer"
        return d

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any], source: str = "config.json") -> "ModelConfig":
        mt = d.get("model_type", "bert")
        if mt not in ("bert", "roberta"):
            raise ConfigError(f"{source}: model_type {mt!r} is not a BERT model")
        if d.get("position_embedding_type", "absolute") != "absolute":
            raise ConfigError(f"{source}: position_embedding_type {d['position_embedding_type']!r} is not supported (absolute only)")
        check_json_types({k: v for k, v in d.items() if not (k == "pad_token_id" and v is None)}, field_types(), source)
        kw = {f.name: d[f.name] for f in fields(cls) if f.name in d and f.name not in ("id2label", "num_labels")}
        id2label = d.get("id2label")
        if id2label and not all(str(v).startswith("LABEL_") for v in id2label.values()):
            kw["id2label"] = {int(k): v for k, v in id2label.items()}
        elif "num_labels" in d:
            kw["num_labels"] = d["num_labels"]
        elif id2label:
            kw["num_labels"] = len(id2label)
        kw["layer_norm_type"] = d.get("miniroberta_layer_norm_type", d.get("layer_norm_type", "hf"))
        if kw.get("pad_token_id") is None:
            kw["pad_token_id"] = 0
        try:
            return cls(**kw)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None


def field_types() -> dict[str, Any]:
    """The JSON type each ``ModelConfig`` field must have (``int | None`` allows null)."""
    return typing.get_type_hints(ModelConfig)


def _json_kind(tp: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", dict: "an object", bool: "true or false"}
    args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    base = typing.get_origin(args[0]) or args[0]
    return names.get(base, str(base)) + (" or null" if type(None) in typing.get_args(tp) else "")


def _json_ok(v: Any, tp: Any) -> bool:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return any(_json_ok(v, a) for a in args)
    if tp is type(None):
        return v is None
    base = typing.get_origin(tp) or tp
    if base is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if base is int:
        return isinstance(v, int) and not isinstance(v, bool)
    return isinstance(v, base)


def check_json_types(d: dict[str, Any], types: dict[str, Any], source: str) -> None:
    """One ``ConfigError`` line for the first key of ``d`` whose value has the wrong JSON type, naming the
    key, the file and the expected type (``"hidden_size": "128"`` is a string, not an integer)."""
    for k, tp in types.items():
        if k in d and not _json_ok(d[k], tp):
            v = d[k]
            got = f"the string {v!r}" if isinstance(v, str) else f"{json.dumps(v)} ({type(v).__name__})"
            hint = " (write the number without quotes)" if isinstance(v, str) and _numeric(v) else ""
            raise ConfigError(f"{source}: \"{k}\" must be {_json_kind(tp)}, got {got}{hint}; fix it in {source}")


def _numeric(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def preset_names() -> list[str]:
    return [f"L{l}_H{h}" for l in LAYERS for h in HIDDENS]


def preset(name: str, vocab_size: int = 21128, **overrides: Any) -> ModelConfig:
    key = ALIASES.get(name.lower(), name)
    key = key.upper().replace("-", "_")
    if key not in preset_names():
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(ALIASES)} or L{{2,4,6,8,10,12}}_H{{128,256,512,768}}")
    L, H = (int(x[1:]) for x in key.split("_"))
    return ModelConfig(vocab_size=vocab_size, hidden_size=H, num_hidden_layers=L, num_attention_heads=H // 64,
                       intermediate_size=4 * H, **overrides)


# UER-py config keys we understand, and values that must hold for a BERT encoder.
_UER_REQUIRED = {
    "embedding": (["word", "pos", "seg"], ["word_pos_seg"]),
    "encoder": ("transformer",),
    "mask": ("fully_visible",),
}
_UER_TYPES = {"hidden_size": int, "emb_size": int, "layers_num": int, "heads_num": int, "feedforward_size": int,
              "max_seq_length": int, "dropout": float, "hidden_act": str}
_UER_IGNORED = {"data_processor", "target", "tie_weights", "labels_num", "tgt_embedding", "decoder", "pooling",
                "is_moe", "vocab_path", "seq_length", "learning_rate", "batch_size", "has_residual_attention"}


def from_uer_dict(d: dict[str, Any], source: str = "UER config", vocab_size: int = 21128,
                  layer_norm_type: str = "hf") -> ModelConfig:
    """Translate a UER-py ``models/bert/*_config.json`` (as shipped) into a ModelConfig."""
    check_json_types(d, _UER_TYPES, source)
    for k, allowed in _UER_REQUIRED.items():
        if k in d and d[k] not in allowed:
            raise ConfigError(f"{source}: {k}={d[k]!r} is not a BERT encoder (expected one of {list(allowed)})")
    if d.get("layernorm_positioning", "post") != "post":
        raise ConfigError(f"{source}: layernorm_positioning={d['layernorm_positioning']!r}; only post-LN (BERT) is supported")
    if d.get("feed_forward", "dense") != "dense":
        raise ConfigError(f"{source}: feed_forward={d['feed_forward']!r}; only the dense BERT FFN is supported")
    for flag in ("remove_embedding_layernorm", "remove_transformer_bias", "relative_position_embedding",
                 "parameter_sharing", "factorized_embedding_parameterization"):
        if d.get(flag):
            raise ConfigError(f"{source}: {flag}=true is not a BERT architecture and is not supported")
    if d.get("layernorm", "normal") != "normal":
        raise ConfigError(f"{source}: layernorm={d['layernorm']!r}; only UER's 'normal' LayerNorm is supported")
    for k in ("layers_num", "hidden_size", "heads_num", "feedforward_size"):
        if k not in d:
            raise ConfigError(f"{source}: missing {k!r}, which every UER-py BERT config has")
    emb = d.get("emb_size", d["hidden_size"])
    if emb != d["hidden_size"]:
        raise ConfigError(f"{source}: emb_size {emb} != hidden_size {d['hidden_size']} (factorised embeddings are ALBERT, not BERT)")
    drop = float(d.get("dropout", 0.1))
    try:
        cfg = ModelConfig(
            vocab_size=vocab_size,
            hidden_size=d["hidden_size"],
            num_hidden_layers=d["layers_num"],
            num_attention_heads=d["heads_num"],
            intermediate_size=d["feedforward_size"],
            hidden_act=d.get("hidden_act", "gelu"),
            hidden_dropout_prob=drop,
            attention_probs_dropout_prob=drop,
            max_position_embeddings=d.get("max_seq_length", 512),
        )
        return cfg.with_layer_norm(layer_norm_type)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def load_config(spec: str | os.PathLike | ModelConfig, vocab_size: int | None = None,
                layer_norm_type: str | None = None) -> ModelConfig:
    """``--config_path``: a preset name (``medium``, ``L8_H512``), a UER-py config JSON,
    an HF ``config.json`` (or a directory holding one) or our own config JSON."""
    if isinstance(spec, ModelConfig):
        cfg = spec
    else:
        s = str(spec)
        if not os.path.exists(s):
            key = ALIASES.get(s.lower(), s).upper().replace("-", "_")
            if key in preset_names():
                cfg = preset(key, vocab_size=vocab_size or 21128)
                vocab_size = None
            else:
                raise ConfigError(f"--config_path {s!r} is neither a file nor a preset; presets: "
                                  f"{', '.join(sorted(ALIASES))}, or L{{2,4,6,8,10,12}}_H{{128,256,512,768}}")
        else:
            path = os.path.join(s, "config.json") if os.path.isdir(s) else s
            try:
                with open(path, encoding="utf-8") as f:
                    d = json.load(f)
            except (OSError, json.JSONDecodeError) as e:
                raise ConfigError(f"{path}: cannot read a JSON config ({e})") from None
            if not isinstance(d, dict):
                raise ConfigError(f"{path}: a config must be a JSON object")
            if "layers_num" in d or "heads_num" in d:
                cfg = from_uer_dict(d, source=path, vocab_size=vocab_size or 21128,
                                    layer_norm_type=layer_norm_type or "hf")
                vocab_size = None
            elif "model_type" in d or "architectures" in d:
                cfg = ModelConfig.from_hf_dict(d, source=path)
            elif "num_hidden_layers" in d:
                cfg = ModelConfig.from_dict(d, source=path)
            else:
                raise ConfigError(f"{path}: not a UER-py (layers_num, hidden_size, heads_num ...) "
                                  f"nor a HuggingFace/miniroberta (num_hidden_layers ...) model config")
    if vocab_size is not None and vocab_size != cfg.vocab_size:
        cfg = replace(cfg, vocab_size=vocab_size)
    if layer_norm_type is not None and layer_norm_type != cfg.layer_norm_type:
        cfg = cfg.with_layer_norm(layer_norm_type)
    return cfg


def replace(cfg: ModelConfig, **changes: Any) -> ModelConfig:
    d = dict(cfg.__dict__)
    d.update(changes)
    return ModelConfig(**d)


__all__ = ["ModelConfig", "ConfigError", "preset", "preset_names", "load_config", "from_uer_dict", "replace",
           "check_json_types", "ALIASES", "LAYERS", "HIDDENS", "LAYER_NORM_EPS", "field"]
