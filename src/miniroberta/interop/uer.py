"""UER-py checkpoint keys <-> HuggingFace BERT keys, both ways, strictly.

UER-py (the reference tool) saves ``torch.save(model.state_dict())`` with its own key names,
which changed in July 2023 (see ``../shared/reference/uer-py.md`` section 4):

================================  =========================================  ==========================================
HF key                            UER since 2023-07 (``vintage="new"``)       UER 2019-2023 (``"old"`` / ``"2020"``)
================================  =========================================  ==========================================
bert.embeddings.word_embeddings   embedding.word.embedding.weight             embedding.word_embedding.weight
bert.embeddings.position_...      embedding.pos.embedding.weight              embedding.position_embedding.weight
bert.embeddings.token_type_...    embedding.seg.embedding.weight (3 rows)     embedding.segment_embedding.weight
bert.embeddings.LayerNorm.*       embedding.layer_norm.gamma/beta             (same)
cls.predictions.transform.dense   target.mlm.linear_1.*                       target.mlm_linear_1.*
cls.predictions.transform.LN      target.mlm.layer_norm.gamma/beta            target.layer_norm.gamma/beta
cls.predictions.decoder / bias    target.mlm.linear_2.weight / .bias          target.mlm_linear_2.weight / .bias
bert.pooler.dense.*               target.sp.linear_1.*                        target.sp_linear_1.* (2020: nsp_linear_1)
cls.seq_relationship.*            target.sp.linear_2.*                        target.sp_linear_2.* (2020: nsp_linear_2)
================================  =========================================  ==========================================

Encoder keys never changed: ``encoder.transformer.{i}.self_attn.linear_layers.{0,1,2}.*`` (query, key,
value), ``.self_attn.final_linear.*``, ``.layer_norm_1.gamma/beta``, ``.feed_forward.linear_1/2.*``,
``.layer_norm_2.gamma/beta``. UER classifiers (``finetune/run_classifier.py``) store
``output_layer_1.*`` (= ``bert.pooler.dense``) and ``output_layer_2.*`` (= ``classifier``).

UER's segment table has 3 rows (row 0 = padding, 1 = sentence A, 2 = sentence B): row 0 is
dropped on import and a zero row is put back in front on export. Every key must be mapped:
anything left over, missing or misshaped is an error that names it.
"""
from __future__ import annotations

from collections import Counter

import re
from typing import Any

import torch

from miniroberta.modeling.config import ConfigError, ModelConfig, load_config

VINTAGES = ("new", "old", "2020")

# vintage-specific names (HF suffix -> UER key)
_EMB = {
    "new": {
        "bert.embeddings.word_embeddings.weight": "embedding.word.embedding.weight",
        "bert.embeddings.position_embeddings.weight": "embedding.pos.embedding.weight",
        "bert.embeddings.token_type_embeddings.weight": "embedding.seg.embedding.weight",
    },
    "old": {
        "bert.embeddings.word_embeddings.weight": "embedding.word_embedding.weight",
        "bert.embeddings.position_embeddings.weight": "embedding.position_embedding.weight",
        "bert.embeddings.token_type_embeddings.weight": "embedding.segment_embedding.weight",
    },
}
_EMB["2020"] = _EMB["old"]
_EMB_LN = {
    "bert.embeddings.LayerNorm.weight": "embedding.layer_norm.gamma",
    "bert.embeddings.LayerNorm.bias": "embedding.layer_norm.beta",
}
_MLM = {
    "new": {
        "cls.predictions.transform.dense.weight": "target.mlm.linear_1.weight",
        "cls.predictions.transform.dense.bias": "target.mlm.linear_1.bias",
        "cls.predictions.transform.LayerNorm.weight": "target.mlm.layer_norm.gamma",
        "cls.predictions.transform.LayerNorm.bias": "target.mlm.layer_norm.beta",
        "cls.predictions.bias": "target.mlm.linear_2.bias",
    },
    "old": {
        "cls.predictions.transform.dense.weight": "target.mlm_linear_1.weight",
        "cls.predictions.transform.dense.bias": "target.mlm_linear_1.bias",
        "cls.predictions.transform.LayerNorm.weight": "target.layer_norm.gamma",
        "cls.predictions.transform.LayerNorm.bias": "target.layer_norm.beta",
        "cls.predictions.bias": "target.mlm_linear_2.bias",
    },
}
_MLM["2020"] = _MLM["old"]
_DECODER = {"new": "target.mlm.linear_2.weight", "old": "target.mlm_linear_2.weight", "2020": "target.mlm_linear_2.weight"}
_SP_PREFIX = {"new": "target.sp.linear_", "old": "target.sp_linear_", "2020": "target.nsp_linear_"}
_CLS = {
    "bert.pooler.dense.weight": "output_layer_1.weight",
    "bert.pooler.dense.bias": "output_layer_1.bias",
    "classifier.weight": "output_layer_2.weight",
    "classifier.bias": "output_layer_2.bias",
}
# per encoder layer: HF suffix -> UER suffix
_LAYER = {
    "attention.self.query.weight": "self_attn.linear_layers.0.weight",
    "attention.self.query.bias": "self_attn.linear_layers.0.bias",
    "attention.self.key.weight": "self_attn.linear_layers.1.weight",
    "attention.self.key.bias": "self_attn.linear_layers.1.bias",
    "attention.self.value.weight": "self_attn.linear_layers.2.weight",
    "attention.self.value.bias": "self_attn.linear_layers.2.bias",
    "attention.output.dense.weight": "self_attn.final_linear.weight",
    "attention.output.dense.bias": "self_attn.final_linear.bias",
    "attention.output.LayerNorm.weight": "layer_norm_1.gamma",
    "attention.output.LayerNorm.bias": "layer_norm_1.beta",
    "intermediate.dense.weight": "feed_forward.linear_1.weight",
    "intermediate.dense.bias": "feed_forward.linear_1.bias",
    "output.dense.weight": "feed_forward.linear_2.weight",
    "output.dense.bias": "feed_forward.linear_2.bias",
    "output.LayerNorm.weight": "layer_norm_2.gamma",
    "output.LayerNorm.bias": "layer_norm_2.beta",
}
_LAYER_RE = re.compile(r"^encoder\.transformer\.(\d+)\.(.+)$")


class UerFormatError(ValueError):
    """A UER-py state dict that cannot be mapped, naming the offending keys."""


def is_uer_state_dict(sd: dict[str, Any]) -> bool:
    """True when the keys are UER-py's (``embedding.*`` / ``encoder.transformer.*``), not HF's."""
    keys = list(sd)
    if any(k.startswith(("bert.", "cls.")) for k in keys):
        return False
    return any(k.startswith(("embedding.word", "embedding.position_embedding", "encoder.transformer."))
               for k in keys)


def detect_vintage(sd: dict[str, Any], source: str = "") -> str:
    """``new`` (2023-07 onwards), ``old`` (2021-2023, ``target.sp_linear_*``) or ``2020``
    (``target.nsp_linear_*``; also any old-vintage file without an NSP head)."""
    where = f"{source}: " if source else ""
    if "embedding.word.embedding.weight" in sd:
        return "new"
    if "embedding.word_embedding.weight" in sd:
        return "old" if any(k.startswith("target.sp_linear_") for k in sd) else "2020"
    raise UerFormatError(f"{where}no word embedding (expected 'embedding.word.embedding.weight' (UER-py since 2023) "
                         f"or 'embedding.word_embedding.weight' (before 2023)); is this a UER-py BERT checkpoint?")


def _layer_count(keys: list[str], where: str) -> int:
    idx = sorted({int(m.group(1)) for k in keys if (m := _LAYER_RE.match(k))})
    if not idx:
        raise UerFormatError(f"{where}no encoder layers (encoder.transformer.{{i}}.*) found")
    if idx != list(range(len(idx))):
        missing = sorted(set(range(idx[-1] + 1)) - set(idx))
        raise UerFormatError(f"{where}encoder layers are not numbered 0..{idx[-1]}: layers {missing} are missing")
    return len(idx)


def uer_to_hf(sd: dict[str, torch.Tensor], layers_num: int | None = None,
              source: str = "") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Map a UER-py BERT state dict (either vintage; pretraining or classifier) to HF keys.

    Returns ``(hf_state_dict, info)``; ``info`` records ``uer_vintage``, ``layers`` and which heads
    were present (``has_mlm``, ``has_sp``, ``has_classifier``). ``layers_num`` (UER's flag) is
    checked against the inferred count. Strict: unmapped, missing or misshaped tensors raise."""
    where = f"{source}: " if source else ""
    vintage = detect_vintage(sd, source)
    L = _layer_count(list(sd), where)
    if layers_num is not None and layers_num != L:
        raise UerFormatError(f"{where}--layers_num {layers_num} but the checkpoint has {L} encoder layers "
                             f"(encoder.transformer.0..{L - 1}); pass --layers_num {L} or omit it")
    # hf -> uer for everything this vintage may contain
    table: dict[str, str] = {**_EMB[vintage], **_EMB_LN}
    for i in range(L):
        for h, u in _LAYER.items():
            table[f"bert.encoder.layer.{i}.{h}"] = f"encoder.transformer.{i}.{u}"
    required = set(table)
    mlm = dict(_MLM[vintage])
    sp = {"bert.pooler.dense.weight": _SP_PREFIX[vintage] + "1.weight",
          "bert.pooler.dense.bias": _SP_PREFIX[vintage] + "1.bias",
          "cls.seq_relationship.weight": _SP_PREFIX[vintage] + "2.weight",
          "cls.seq_relationship.bias": _SP_PREFIX[vintage] + "2.bias"}
    if vintage == "2020":  # a 2020 file may also use the 2021 spelling
        alt = {h: u.replace("target.nsp_linear_", "target.sp_linear_") for h, u in sp.items()}
        if any(u in sd for u in alt.values()):
            sp = alt
    info: dict[str, Any] = {"uer_vintage": vintage, "layers": L}
    optional_groups = {"has_mlm": mlm, "has_sp": sp, "has_classifier": dict(_CLS)}
    for flag, group in optional_groups.items():
        present = [u for u in group.values() if u in sd]
        info[flag] = bool(present)
        if present:
            missing = sorted(u for u in group.values() if u not in sd)
            if missing:
                raise UerFormatError(f"{where}incomplete {flag[4:]} head: has {sorted(present)} but lacks {missing}")
            table.update(group)
    if info["has_sp"] and info["has_classifier"]:
        raise UerFormatError(f"{where}has both an NSP/SOP head ({_SP_PREFIX[vintage]}*) and a classifier "
                             f"(output_layer_*); both map to bert.pooler -- remove one")
    missing = sorted(table[h] for h in required if table[h] not in sd)
    if missing:
        raise UerFormatError(f"{where}missing tensors {missing}")
    decoder = _DECODER[vintage]
    used = set(table.values()) | ({decoder} if decoder in sd else set())
    leftover = sorted(set(sd) - used)
    if leftover:
        raise UerFormatError(f"{where}unexpected tensors {leftover} (not part of a UER-py BERT with mlm/sp "
                             f"targets or a run_classifier head); nothing was converted")
    out = {h: sd[u] for h, u in table.items()}
    seg = out["bert.embeddings.token_type_embeddings.weight"]
    if seg.dim() != 2 or seg.shape[0] < 2:
        raise UerFormatError(f"{where}{table['bert.embeddings.token_type_embeddings.weight']} has shape "
                             f"{tuple(seg.shape)}; UER's segment table has 3 rows (0 = padding, 1 = A, 2 = B)")
    out["bert.embeddings.token_type_embeddings.weight"] = seg[1:].clone()
    info["segment_rows"] = int(seg.shape[0])
    if decoder in sd:
        word = out["bert.embeddings.word_embeddings.weight"]
        dec = sd[decoder]
        if dec.shape != word.shape or not torch.equal(dec, word):
            raise UerFormatError(f"{where}{decoder} differs from the word embeddings ({table['bert.embeddings.word_embeddings.weight']}): "
                                 f"the MLM output layer is not tied, which a BERT export cannot represent "
                                 f"(UER trains with tie_weights; was it trained without?)")
        info["has_decoder_weight"] = True
    else:
        info["has_decoder_weight"] = False
    _check_shapes(out, where)
    return out, info


def _check_shapes(hf: dict[str, torch.Tensor], where: str) -> None:
    """Every tensor's shape must agree with the hidden size and FFN width most tensors carry (see
    ``model_sizes``), so a single misshaped tensor is the one named."""
    V = hf["bert.embeddings.word_embeddings.weight"].shape[0]
    H, I = model_sizes(hf)
    P = hf["bert.embeddings.position_embeddings.weight"].shape[0]
    T = hf["bert.embeddings.token_type_embeddings.weight"].shape[0]
    bad = []
    for k, v in hf.items():
        exp = expected_shape(k, V, H, I, P, T, hf)
        if exp is not None and tuple(v.shape) != exp:
            bad.append(f"{k}: {tuple(v.shape)}, expected {exp}")
    if bad:
        raise UerFormatError(f"{where}misshaped tensors: " + "; ".join(bad))


def expected_shape(k: str, V: int, H: int, I: int, P: int, T: int,
                   hf: dict[str, torch.Tensor]) -> tuple[int, ...] | None:
    if k.endswith(("LayerNorm.weight", "LayerNorm.bias")):
        return (H,)
    if k == "bert.embeddings.word_embeddings.weight":
        return (V, H)
    if k in ("bert.embeddings.position_embeddings.weight",):
        return (P, H)
    if k == "bert.embeddings.token_type_embeddings.weight":
        return (T, H)
    if k.endswith("intermediate.dense.weight"):
        return (I, H)
    if k.endswith("intermediate.dense.bias"):
        return (I,)
    if re.search(r"layer\.\d+\.output\.dense\.weight$", k):
        return (H, I)
    if k.endswith(".weight") and ("attention" in k or k.endswith(("transform.dense.weight", "pooler.dense.weight"))):
        return (H, H)
    if k.endswith(".bias") and ("attention" in k or k.endswith(("transform.dense.bias", "pooler.dense.bias"))
                                or re.search(r"layer\.\d+\.output\.dense\.bias$", k)):
        return (H,)
    if k == "cls.predictions.bias":
        return (V,)
    if k == "cls.seq_relationship.weight":
        return (2, H)
    if k == "cls.seq_relationship.bias":
        return (2,)
    if k == "classifier.weight":
        return (hf[k].shape[0], H)
    return None


def hf_to_uer(hf_sd: dict[str, torch.Tensor], vintage: str = "new", type: str = "mlm") -> dict[str, torch.Tensor]:
    """Map HF BERT keys back to UER-py keys (inverse of :func:`uer_to_hf`).

    ``type``: ``mlm`` (embedding + encoder + MLM head; a pooler/NSP head is dropped, as UER's
    ``--type mlm``), ``bert`` (also ``bert.pooler`` / ``cls.seq_relationship`` -> the sp target,
    required) or ``cls`` (a sequence classifier -> ``output_layer_1/2``, like UER's
    ``convert_bert_text_classification_from_huggingface_to_uer.py``). The segment table gets a
    zero padding row in front; the tied MLM output weight is written as the word embedding."""
    if vintage not in VINTAGES:
        raise ValueError(f"UER vintage must be one of {VINTAGES}, got {vintage!r}")
    if type not in ("mlm", "bert", "cls"):
        raise ValueError(f"--type must be mlm, bert or cls, got {type!r}")
    sd = dict(hf_sd)
    sd.pop("cls.predictions.decoder.weight", None)
    sd.pop("cls.predictions.decoder.bias", None)
    idx = sorted({int(m.group(1)) for k in sd if (m := re.match(r"^bert\.encoder\.layer\.(\d+)\.", k))})
    if not idx:
        raise ValueError("no encoder layers (bert.encoder.layer.{i}.*) in the state dict")
    table: dict[str, str] = {**_EMB[vintage], **_EMB_LN}
    for i in idx:
        for h, u in _LAYER.items():
            table[f"bert.encoder.layer.{i}.{h}"] = f"encoder.transformer.{i}.{u}"
    sp = {"bert.pooler.dense.weight": _SP_PREFIX[vintage] + "1.weight",
          "bert.pooler.dense.bias": _SP_PREFIX[vintage] + "1.bias",
          "cls.seq_relationship.weight": _SP_PREFIX[vintage] + "2.weight",
          "cls.seq_relationship.bias": _SP_PREFIX[vintage] + "2.bias"}
    dropped: tuple[str, ...] = ()
    if type == "mlm":
        table.update(_MLM[vintage])
        dropped = ("bert.pooler.", "cls.seq_relationship.", "classifier.")
    elif type == "bert":
        table.update(_MLM[vintage])
        table.update(sp)
        dropped = ("classifier.",)
    else:
        table.update(_CLS)
        dropped = ("cls.",)
    missing = sorted(h for h in table if h not in sd)
    if missing:
        hint = " (--type bert needs a pooler and an NSP head; use --type mlm)" if type == "bert" else ""
        raise ValueError(f"cannot write a UER-py --type {type} checkpoint: missing tensors {missing}{hint}")
    leftover = sorted(k for k in sd if k not in table and not k.startswith(dropped))
    if leftover:
        raise ValueError(f"unexpected tensors {leftover} have no UER-py name")
    out: dict[str, torch.Tensor] = {}
    for h, u in table.items():
        out[u] = sd[h].detach().cpu().contiguous()
    seg_key = _EMB[vintage]["bert.embeddings.token_type_embeddings.weight"]
    seg = out[seg_key]
    out[seg_key] = torch.cat([torch.zeros_like(seg[:1]), seg], 0)
    if type in ("mlm", "bert"):
        out[_DECODER[vintage]] = out[_EMB[vintage]["bert.embeddings.word_embeddings.weight"]]
    return out


def model_sizes(hf: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(hidden size, FFN width), each read from every tensor that carries it, the most common value
    winning -- so that one misshaped tensor is the one named, not the correct ones that disagree with it."""
    H = _vote(v.shape[-1] for k, v in hf.items()
              if k.endswith(("embeddings.weight", "LayerNorm.weight", "attention.self.query.weight")) and v.dim() >= 1)
    I = _vote([v.shape[0] for k, v in hf.items() if k.endswith(("intermediate.dense.weight", "intermediate.dense.bias"))]
              + [v.shape[-1] for k, v in hf.items() if re.search(r"layer\.\d+\.output\.dense\.weight$", k)])
    return H, I


def _vote(values: Any) -> int:
    """The most common of ``values`` (ties: the first seen)."""
    c = Counter(int(v) for v in values)
    return c.most_common(1)[0][0]


def infer_config(hf_sd: dict[str, torch.Tensor], config_spec: Any = None, source: str = "",
                 layer_norm_type: str | None = None) -> ModelConfig:
    """A ModelConfig from tensor shapes (heads = H/64) or, when ``config_spec`` is given (preset,
    UER-py JSON, HF/our config), from it -- checked against the shapes."""
    where = f"{source}: " if source else ""
    try:
        V = hf_sd["bert.embeddings.word_embeddings.weight"].shape[0]
        P = hf_sd["bert.embeddings.position_embeddings.weight"].shape[0]
        T = hf_sd["bert.embeddings.token_type_embeddings.weight"].shape[0]
        hf_sd["bert.encoder.layer.0.intermediate.dense.weight"]
    except KeyError as e:
        raise UerFormatError(f"{where}missing tensor {e.args[0]}") from None
    H, I = model_sizes(hf_sd)
    L = len({int(m.group(1)) for k in hf_sd if (m := re.match(r"^bert\.encoder\.layer\.(\d+)\.", k))})
    extra: dict[str, Any] = {}
    if "classifier.weight" in hf_sd:
        extra["num_labels"] = int(hf_sd["classifier.weight"].shape[0])
    shapes: dict[str, Any] = dict(vocab_size=int(V), hidden_size=int(H), num_hidden_layers=L, intermediate_size=int(I),
                  max_position_embeddings=int(P), type_vocab_size=int(T))
    try:
        if config_spec is None:
            cfg = ModelConfig(num_attention_heads=max(1, int(H) // 64), **shapes, **extra)
        else:
            cfg = load_config(config_spec, vocab_size=int(V))
            diff = [f"{k} {getattr(cfg, k)} (config) vs {v} (weights)" for k, v in shapes.items() if getattr(cfg, k) != v]
            if diff:
                raise ConfigError(f"{where}config {config_spec} does not match the weights: " + ", ".join(diff))
            if extra.get("num_labels", cfg.num_labels) != cfg.num_labels and cfg.id2label is None:
                cfg = ModelConfig(**{**cfg.__dict__, **extra})
    except ConfigError as e:
        msg = str(e)
        raise ConfigError(msg if msg.startswith(where) else f"{where}{msg}") from None
    if layer_norm_type is not None and layer_norm_type != cfg.layer_norm_type:
        cfg = cfg.with_layer_norm(layer_norm_type)
    return cfg


__all__ = ["is_uer_state_dict", "uer_to_hf", "hf_to_uer", "infer_config", "detect_vintage", "UerFormatError",
           "VINTAGES"]
