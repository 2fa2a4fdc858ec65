"""Tiny random models for the ONNX and serving tests: an MLM export and a classifier export
(HF directories written by our own code, with a small vocab)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from _ft_data import FILLER, KEYWORDS, write_vocab

EXTRA = list("天气很今我们去公园散步吧书喜欢这本下雨出门首都京")


def small_vocab(path: Path) -> Path:
    return write_vocab(path, FILLER + KEYWORDS + EXTRA)


def _perturb(model: torch.nn.Module, seed: int) -> None:
    """Weights large enough that outputs depend clearly on the input (no near-ties)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("LayerNorm.weight"):
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def mlm_dir(out: Path, vocab: Path, size: str = "L2_H128", seed: int = 0, max_len: int = 128) -> Path:
    from miniroberta.interop.export import write_hf_dir
    from miniroberta.modeling.bert import BertForMaskedLM
    from miniroberta.modeling.config import preset, replace
    n = len(vocab.read_text(encoding="utf-8").splitlines())
    cfg = replace(preset(size, vocab_size=n), max_position_embeddings=max_len)
    m = BertForMaskedLM(cfg)
    _perturb(m, seed)
    m.cls.predictions.transform.LayerNorm.weight.data.fill_(20.0)
    write_hf_dir(m.state_dict(), cfg, str(vocab), str(out))
    return out


def classifier_dir(out: Path, vocab: Path, size: str = "L2_H128", seed: int = 0, labels=("0", "1"),
                   seq_length: int = 32, max_len: int = 128) -> Path:
    """A random BertForSequenceClassification in the layout `miniroberta finetune` writes (model/ with finetune.json)."""
    from miniroberta.interop.export import write_hf_dir
    from miniroberta.modeling.bert import BertForSequenceClassification
    from miniroberta.modeling.config import preset, replace
    n = len(vocab.read_text(encoding="utf-8").splitlines())
    cfg = replace(preset(size, vocab_size=n), max_position_embeddings=max_len, id2label=dict(enumerate(labels)))
    m = BertForSequenceClassification(cfg)
    _perturb(m, seed)
    ft = {"task": None, "labels": list(labels), "seq_length": seq_length, "truncation": "longest_first",
          "text_fields": ["text_a"], "label_field": "label"}
    write_hf_dir(m.state_dict(), cfg, str(vocab), str(out), architecture="BertForSequenceClassification",
                 extra_files={"finetune.json": json.dumps(ft)})
    return out
