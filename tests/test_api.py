"""The public API at the package top level: what the commands do, as functions."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import miniroberta
from miniroberta.interop.checkpoint import save_native
from miniroberta.interop.export import export_checkpoint
from miniroberta.modeling.bert import build_mlm
from miniroberta.modeling.config import ModelConfig


def test_import_miniroberta_is_light_and_lists_the_api():
    """`import miniroberta` sets the OpenMP wait policy and imports no torch; the API loads on first use."""
    code = "import sys, miniroberta; print('torch' in sys.modules); print(sorted(miniroberta.__all__)[:3])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "False"
    for name in ("pipeline", "fill_mask", "embed", "classify", "load_model", "preprocess", "run_pretrain",
                 "run_finetune", "export", "PretrainConfig", "FinetuneConfig"):
        assert name in miniroberta.__all__ and name in dir(miniroberta)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        miniroberta.nope  # noqa: B018


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    from conftest import write_vocab
    d = tmp_path_factory.mktemp("api")
    vocab = str(write_vocab(d / "vocab.txt"))
    n = sum(1 for _ in open(vocab, encoding="utf-8"))
    cfg = ModelConfig(vocab_size=n, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=64)
    model = build_mlm(cfg, seed=0)
    save_native(str(d / "m.bin"), model.state_dict(), cfg, {"step": 1})
    export_checkpoint(str(d / "m.bin"), str(d / "hf"), vocab_path=vocab, type="mlm")
    return str(d / "hf")


def test_fill_mask_and_embed_from_a_directory_or_a_loaded_pipeline(hf_dir):
    fm = miniroberta.pipeline("fill-mask", hf_dir)
    one = fm("一[MASK]丁", top_k=3)
    assert [c["score"] >= 0 for c in one] == [True] * 3 and "token_str" in one[0]  # one text: its candidates
    many = miniroberta.fill_mask(hf_dir, ["一[MASK]丁", "[MASK]丂"], top_k=2)
    assert len(many) == 2 and len(many[0]) == 2 and many[0] == fm("一[MASK]丁", top_k=2)
    with torch.no_grad():
        e = miniroberta.embed(hf_dir, ["一丁丂", "七丈"], pooling="mean")
    assert isinstance(e, np.ndarray) and e.shape == (2, 32)
    e1 = miniroberta.pipeline("embed", hf_dir)("一丁丂", pooling="mean")
    np.testing.assert_allclose(e1, e[0], atol=1e-5)
    with pytest.raises(ValueError, match="this pipeline is for fill-mask"):
        miniroberta.embed(fm, ["x"])
    with pytest.raises(ValueError, match="task must be one of"):
        miniroberta.pipeline("translate", hf_dir)


def test_pretrain_sorts_settings_and_names_unknown_ones(tmp_path):
    with pytest.raises(TypeError, match="unknown pretraining setting.*learnin_rate"):
        miniroberta.run_pretrain(dataset_path="x", output_model_path=str(tmp_path / "m"), learnin_rate=1e-3)
    from miniroberta.api import _split
    cfg, opts = _split(dict(dataset_path="d", output_model_path="o", learning_rate=1e-3, report_steps=7))
    assert cfg.learning_rate == 1e-3 and opts.report_steps == 7
