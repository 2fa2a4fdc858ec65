"""Write a complete HuggingFace model directory.

``config.json`` (``model_type`` bert), ``model.safetensors`` (HF key names; tied weights once),
``vocab.txt``, ``tokenizer_config.json``, ``special_tokens_map.json`` and a model card
``README.md`` (``interop.cards``), and last ``integrity.json``: the SHA-256 and size of every one of those
files, checked when the folder is loaded (``integrity.verify_dir``). ``transformers.pipeline('fill-mask',
model=DIR)`` and ``BertForMaskedLM/BertModel/BertForSequenceClassification.from_pretrained(DIR)`` load it.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Any

import torch
from safetensors.torch import save as st_save

from miniroberta.interop.cards import ARCHITECTURES as CARD_ARCHITECTURES
from miniroberta.interop.cards import export_card, public_text
from miniroberta.interop.checkpoint import CheckpointError, load_weights, strip_tied
from miniroberta.modeling.bert import TIED_KEYS, BertForMaskedLM, BertForSequenceClassification
from miniroberta.modeling.config import ModelConfig
from miniroberta.modeling.tokenizer import read_vocab
from miniroberta.integrity import atomic_torch_save, atomic_write_bytes, record_dir, update_dir
from miniroberta.data.paths import resolve_vocab
from miniroberta.utils import (atomic_dir, atomic_write, atomic_write_json, atomic_write_text, log,
                              write_error)

SPECIAL_TOKENS_MAP = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                      "mask_token": "[MASK]"}


def tokenizer_config(lowercase: bool = True) -> dict[str, Any]:
    return {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": lowercase,
        "tokenize_chinese_chars": True,
        "strip_accents": None,
        "model_max_length": 512,
        "clean_up_tokenization_spaces": False,
        **SPECIAL_TOKENS_MAP,
    }


def write_hf_dir(state_dict: dict[str, torch.Tensor], config: ModelConfig, vocab_path: str, output_dir: str,
                 architecture: str = "BertForMaskedLM", card: str | None = None, overwrite: bool = True,
                 lowercase: bool = True, extra_files: dict[str, str] | None = None) -> str:
    """Atomically write ``output_dir`` (built under a temp name, renamed into place)."""
    vocab = read_vocab(vocab_path)
    if len(vocab) != config.vocab_size:
        raise ValueError(f"{vocab_path} has {len(vocab)} tokens but the model's vocab_size is {config.vocab_size}; "
                         f"pass the vocab the model was trained with")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in strip_tied(state_dict).items()}
    existed = os.path.exists(output_dir)
    try:
        with atomic_dir(output_dir, overwrite=overwrite) as tmp:
            _write_hf_files(tmp, tensors, config, vocab_path, architecture, card, lowercase, extra_files)
    except OSError as e:      # disk full, read-only, permission: one line naming the folder and what is intact
        err = write_error(output_dir, e, existed)
        if err is e:
            raise
        raise err from None
    return output_dir


def _write_hf_files(tmp: str, tensors: dict[str, torch.Tensor], config: ModelConfig, vocab_path: str,
                    architecture: str, card: str | None, lowercase: bool, extra_files: dict[str, str] | None) -> None:
    """The files of an HF folder, written into ``tmp`` (being built by ``atomic_dir``), then its integrity
    manifest over every one of them (weights, config, vocab, tokenizer files, card, extra files)."""
    with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config.to_hf_dict(architecture), f, indent=2, ensure_ascii=False, sort_keys=True)
    with open(os.path.join(tmp, "model.safetensors"), "wb") as f:
        f.write(st_save(tensors, metadata={"format": "pt"}))
    shutil.copyfile(vocab_path, os.path.join(tmp, "vocab.txt"))
    with open(os.path.join(tmp, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_config(lowercase), f, indent=2)
    with open(os.path.join(tmp, "special_tokens_map.json"), "w", encoding="utf-8") as f:
        json.dump(SPECIAL_TOKENS_MAP, f, indent=2)
    if card is not None:
        with open(os.path.join(tmp, "README.md"), "w", encoding="utf-8") as f:
            f.write(card)
    for name, text in (extra_files or {}).items():
        with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
            f.write(text)
    record_dir(tmp)      # integrity.json over every file, checked when the folder is loaded



# ---------------------------------------------------------------------------------------------
# Export from any checkpoint source, with a generated model card.

EXPORT_TYPES = ("mlm", "bert", "cls")
ARCHITECTURES = {t: CARD_ARCHITECTURES[t] for t in EXPORT_TYPES}
HF_WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin")
HF_SIDE_FILES = ("config.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "README.md")
_MLM_HEAD = ("cls.predictions.transform.dense.weight", "cls.predictions.transform.dense.bias",
             "cls.predictions.transform.LayerNorm.weight", "cls.predictions.transform.LayerNorm.bias",
             "cls.predictions.bias")
_POOLER = ("bert.pooler.dense.weight", "bert.pooler.dense.bias")
_NSP = ("cls.seq_relationship.weight", "cls.seq_relationship.bias")
_CLASSIFIER = ("classifier.weight", "classifier.bias")


def select_for_type(state_dict: dict[str, torch.Tensor], type: str = "mlm",
                    source: str = "checkpoint") -> tuple[dict[str, torch.Tensor], str]:
    """Keep the tensors an export of ``type`` needs and return ``(state_dict, architecture)``.

    ``mlm``: encoder + MLM head (a pooler / NSP head / classifier is dropped, as UER's ``--type mlm``);
    ``bert``: also the pooler and the NSP head (``BertForPreTraining``), both required;
    ``cls``: encoder + pooler + classifier (``BertForSequenceClassification``)."""
    if type not in EXPORT_TYPES:
        raise ValueError(f"--type must be one of {EXPORT_TYPES}, got {type!r}")
    need = {"mlm": _MLM_HEAD, "bert": _MLM_HEAD + _POOLER + _NSP, "cls": _POOLER + _CLASSIFIER}[type]
    missing = [k for k in need if k not in state_dict]
    if missing:
        hint = {"mlm": "the input has no MLM head (is it a fine-tuned classifier? use --type cls)",
                "bert": "the input has no pooler/NSP head (UER target.sp.*); use --type mlm",
                "cls": "the input is not a sequence classifier"}[type]
        raise CheckpointError(f"{source}: --type {type} needs tensors {missing}: {hint}")
    drop = {"mlm": ("bert.pooler.", "cls.seq_relationship.", "classifier."),
            "bert": ("classifier.",), "cls": ("cls.",)}[type]
    return {k: v for k, v in state_dict.items() if not k.startswith(drop)}, ARCHITECTURES[type]


def model_card(config: ModelConfig, meta: dict[str, Any] | None = None, scores: dict[str, float] | None = None,
               type: str = "mlm", name: str | None = None, extra: str | None = None) -> str:
    """The export's model card (``interop.cards.export_card``): YAML front matter with a model-index, size,
    the checkpoint's labelled training facts (no raw keys, no local paths), optional fine-tuning ``scores``
    (task -> dev accuracy, as fraction or percent) and a usage snippet."""
    return export_card(config, meta, scores=scores, type=type, name=name, extra=extra)


def _torch_save_atomic(obj: dict[str, torch.Tensor], path: str) -> None:
    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


def write_hf_files(state_dict: dict[str, torch.Tensor], config: ModelConfig, vocab_path: str, weights_path: str,
                   architecture: str = "BertForMaskedLM", card: str | None = None, overwrite: bool = False,
                   lowercase: bool = True) -> str:
    """Write HF weights to the file ``weights_path`` (``pytorch_model.bin`` = torch pickle of tensors,
    ``model.safetensors``) and the other HF files beside it, each atomically. Existing files are an
    error unless ``overwrite``; a stale weights file of the other name is removed (transformers
    would prefer it)."""
    vocab = read_vocab(vocab_path)
    if len(vocab) != config.vocab_size:
        raise ValueError(f"{vocab_path} has {len(vocab)} tokens but the model's vocab_size is {config.vocab_size}; "
                         f"pass the vocab the model was trained with")
    name = os.path.basename(weights_path)
    if name not in HF_WEIGHT_NAMES:
        raise ValueError(f"{weights_path}: an HF weights file must be named one of {HF_WEIGHT_NAMES}")
    d = os.path.dirname(os.path.abspath(weights_path))
    outputs = [name] + [f for f in HF_SIDE_FILES if f != "README.md" or card is not None]
    other = [n for n in HF_WEIGHT_NAMES if n != name]
    existing = [f for f in outputs + other if os.path.exists(os.path.join(d, f))]
    if existing and not overwrite:
        raise FileExistsError(f"{d}: {existing} already exist (pass --overwrite to replace them)")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in strip_tied(state_dict).items()}
    os.makedirs(d, exist_ok=True)
    if name == "model.safetensors":
        atomic_write_bytes(weights_path, st_save(tensors, metadata={"format": "pt"}))
    else:
        atomic_torch_save(tensors, weights_path)
    for n in other:
        if os.path.exists(os.path.join(d, n)):
            os.unlink(os.path.join(d, n))
    atomic_write_json(os.path.join(d, "config.json"), config.to_hf_dict(architecture))
    if os.path.abspath(vocab_path) != os.path.join(d, "vocab.txt"):
        with open(vocab_path, "rb") as src, atomic_write(os.path.join(d, "vocab.txt"), "wb") as dst:
            shutil.copyfileobj(src, dst)
    atomic_write_json(os.path.join(d, "tokenizer_config.json"), tokenizer_config(lowercase))
    atomic_write_json(os.path.join(d, "special_tokens_map.json"), SPECIAL_TOKENS_MAP)
    if card is not None:
        atomic_write_text(os.path.join(d, "README.md"), card)
    update_dir(d, [n for n in outputs if os.path.isfile(os.path.join(d, n))])   # integrity.json: the files written
    return weights_path


def export_checkpoint(input_path: str | os.PathLike, output_dir: str | os.PathLike, vocab_path: str | None = None,
                      type: str = "mlm", overwrite: bool = False, card_extra: str | None = None,
                      config_path: str | None = None, layers_num: int | None = None,
                      scores: dict[str, float] | None = None, name: str | None = None) -> str:
    """Export any checkpoint (native, HF dir/file, UER-py) to a complete HF directory with a model card.
    Returns ``output_dir``. ``type``: ``mlm`` (default), ``bert`` (with pooler + NSP) or ``cls``. An existing
    ``output_dir`` is refused unless ``overwrite`` (then replaced atomically)."""
    input_path = os.fspath(input_path)
    cfg, sd, meta = load_weights(input_path, config_path=config_path, layers_num=layers_num)
    if layers_num is not None and layers_num != cfg.num_hidden_layers:
        raise CheckpointError(f"{input_path}: --layers_num {layers_num} but the model has {cfg.num_hidden_layers} layers")
    vocab = resolve_vocab(input_path, vocab_path, meta)
    sd, arch = select_for_type(sd, type, input_path)
    _check_fits(sd, cfg, type, input_path)
    card = model_card(cfg, meta, scores=scores, type=type, name=name, extra=card_extra)
    if cfg.layer_norm_type == "uer":
        log(f"note: {input_path} uses UER-py's LayerNorm; transformers will run the standard one "
            f"(outputs differ by ~1e-2 in the logits)")
    return write_hf_dir(sd, cfg, vocab, os.fspath(output_dir), architecture=arch, card=card, overwrite=overwrite)


def _check_fits(sd: dict[str, torch.Tensor], cfg: ModelConfig, type: str, source: str) -> None:
    """Strict: the exported tensors must load into our model of that type (names and shapes)."""
    with torch.device("meta"):
        model = (BertForSequenceClassification(cfg) if type == "cls"
                 else BertForMaskedLM(cfg, add_pooling_layer=type == "bert"))
    own = model.state_dict()  # meta tensors: names and shapes only, nothing allocated
    fake = {k: v for k, v in sd.items() if k not in _NSP and k not in TIED_KEYS}
    dec = sd.get("cls.predictions.decoder.weight")
    word = sd.get("bert.embeddings.word_embeddings.weight")
    if dec is not None and word is not None and (dec.shape != word.shape or not torch.equal(dec, word)):
        raise CheckpointError(f"{source}: cls.predictions.decoder.weight differs from the word embeddings; "
                              f"an untied MLM decoder cannot be exported as BERT")
    own_keys = {k for k in own if k not in TIED_KEYS}
    missing = sorted(own_keys - set(fake))
    unexpected = sorted(set(fake) - own_keys)
    shapes = sorted(f"{k}: {tuple(fake[k].shape)} vs {tuple(own[k].shape)}"
                    for k in own_keys & set(fake) if tuple(fake[k].shape) != tuple(own[k].shape))
    if type == "bert":
        for k, shp in zip(_NSP, ((2, cfg.hidden_size), (2,))):
            if tuple(sd[k].shape) != shp:
                shapes.append(f"{k}: {tuple(sd[k].shape)} vs {shp}")
    if missing or unexpected or shapes:
        raise CheckpointError(f"{source}: does not fit a {ARCHITECTURES[type]} of its config: "
                              f"missing {missing}, unexpected {unexpected}, misshaped {shapes}")


__all__ = ["write_hf_dir", "write_hf_files", "tokenizer_config", "SPECIAL_TOKENS_MAP", "export_checkpoint",
           "model_card", "public_text", "resolve_vocab", "select_for_type", "EXPORT_TYPES", "ARCHITECTURES",
]
