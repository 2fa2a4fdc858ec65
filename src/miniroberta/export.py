"""Write a complete HuggingFace model directory.

``config.json`` (``model_type`` bert), ``model.safetensors`` (HF key names; tied weights once),
``vocab.txt``, ``tokenizer_config.json``, ``special_tokens_map.json`` and a model card
``README.md``. ``transformers.pipeline('fill-mask', model=DIR)`` and
``BertForMaskedLM/BertModel/BertForSequenceClassification.from_pretrained(DIR)`` load it.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Any

import torch
from safetensors.torch import save as st_save

from .checkpoint import strip_tied
from .config import ModelConfig
from .tokenizer import read_vocab
from .utils import atomic_dir

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
    with atomic_dir(output_dir, overwrite=overwrite) as tmp:
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
    return output_dir


__all__ = ["write_hf_dir", "tokenizer_config", "SPECIAL_TOKENS_MAP"]
