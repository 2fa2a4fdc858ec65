"""Config presets and readers; numerical parity of our model with transformers' BERT loaded from our export."""
import json
from pathlib import Path

import pytest
import torch

from miniroberta.modeling.config import (ALIASES, ConfigError, ModelConfig, from_uer_dict, load_config, preset, preset_names,
                                replace)
from miniroberta.interop.export import write_hf_dir
from miniroberta.modeling.bert import (BertForMaskedLM, BertForSequenceClassification, BertModel, LayerNorm, build_mlm,
                               init_weights)

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
UER_CONFIGS = DATA / "uer" / "models" / "bert"


# ------------------------------------------------------------------------------ configs
def test_24_presets_and_aliases():
    names = preset_names()
    assert len(names) == 24 and len(set(names)) == 24
    for name in names:
        c = preset(name)
        L, H = (int(x[1:]) for x in name.split("_"))
        assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size) == (L, H, H // 64, 4 * H)
        assert (c.max_position_embeddings, c.type_vocab_size, c.vocab_size) == (512, 2, 21128)
        assert load_config(name.lower().replace("_", "-")) == c
    expect = {"tiny": (2, 128), "mini": (4, 256), "small": (4, 512), "medium": (8, 512), "base": (12, 768)}
    assert set(ALIASES) == set(expect)
    for alias, (L, H) in expect.items():
        c = load_config(alias, vocab_size=1000)
        assert (c.num_hidden_layers, c.hidden_size, c.vocab_size) == (L, H, 1000)
        assert load_config(alias.upper()) == preset(f"L{L}_H{H}")


@pytest.mark.parametrize("name", ["L2_H128", "L6_H256", "L12_H768", "L4_H512"])
def test_num_parameters_matches_model(name):
    cfg = preset(name)
    with torch.device("meta"):
        mlm = BertForMaskedLM(cfg)
        enc = BertModel(cfg, add_pooling_layer=True)
    count = lambda m: sum(p.numel() for p in m.parameters())  # tied weights counted once by .parameters()
    assert cfg.num_parameters(mlm_head=True, pooler=False) == count(mlm)
    assert cfg.num_parameters(mlm_head=False, pooler=True) == count(enc)


@pytest.mark.skipif(not UER_CONFIGS.exists(), reason="../shared/data/uer not available")
@pytest.mark.parametrize("name", ["tiny", "mini", "small", "medium", "base", "large", "xlarge"])
def test_uer_config_files(name):
    path = UER_CONFIGS / f"{name}_config.json"
    d = json.loads(path.read_text())
    c = load_config(str(path))
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size) == (
        d["layers_num"], d["hidden_size"], d["heads_num"], d["feedforward_size"])
    assert c.hidden_dropout_prob == d["dropout"] and c.max_position_embeddings == d["max_seq_length"]
    if name in ALIASES:
        assert c == preset(name)
    u = load_config(str(path), layer_norm_type="uer")
    assert (u.layer_norm_type, u.layer_norm_eps) == ("uer", 1e-6)


def test_hf_config_roundtrip(tmp_path):
    cfg = replace(preset("mini", vocab_size=777), id2label={0: "neg", 1: "pos", 2: "neutral"})
    hf = cfg.to_hf_dict("BertForSequenceClassification")
    (tmp_path / "config.json").write_text(json.dumps(hf))
    assert load_config(str(tmp_path)) == cfg
    assert load_config(str(tmp_path / "config.json")) == cfg
    bc = transformers.BertConfig.from_pretrained(tmp_path)
    assert (bc.num_hidden_layers, bc.hidden_size, bc.vocab_size, bc.num_labels) == (4, 256, 777, 3)
    ours = tmp_path / "ours.json"
    ours.write_text(cfg.to_json())
    assert load_config(str(ours)) == cfg


def test_invalid_configs_error(tmp_path):
    with pytest.raises(ConfigError, match="not divisible"):
        ModelConfig(hidden_size=100, num_attention_heads=3)
    with pytest.raises(ConfigError, match="unknown preset|neither a file nor a preset"):
        load_config("L3_H128")
    with pytest.raises(ConfigError, match="hidden_act"):
        ModelConfig(hidden_act="tanh")
    with pytest.raises(ConfigError, match="num_hidden_layers must be a positive integer"):
        ModelConfig(num_hidden_layers=0)
    base = {"layers_num": 2, "hidden_size": 128, "heads_num": 2, "feedforward_size": 512}
    for bad, match in [({"emb_size": 64}, "factorised"), ({"layernorm_positioning": "pre"}, "post-LN"),
                       ({"encoder": "lstm"}, "not a BERT encoder"), ({"heads_num": 3}, "not divisible"),
                       ({"relative_position_embedding": True}, "not supported")]:
        with pytest.raises(ConfigError, match=match):
            from_uer_dict({**base, **bad}, source="x.json")
    p = tmp_path / "broken.json"
    p.write_text("{not json")
    with pytest.raises(ConfigError, match="broken.json"):
        load_config(str(p))
    p.write_text(json.dumps({"num_hidden_layers": 2, "bogus": 1}))
    with pytest.raises(ConfigError, match="bogus"):
        load_config(str(p))


# ------------------------------------------------------------------------------ parity
def _randomize(model, seed=0):
    """Every parameter random (LayerNorm gains/biases included) so a mis-mapped tensor cannot hide."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("LayerNorm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return model


def _vocab(make_vocab, n):
    return str(make_vocab([f"tok{i}" for i in range(n - 5)], name=f"vocab{n}.txt"))


def _inputs(V, pad_id=0, seed=1):
    """A padded batch mixing single-sentence and pair inputs (token types 0/1) of different lengths."""
    g = torch.Generator().manual_seed(seed)
    lengths, pairs = [13, 7, 10, 4], [False, True, True, False]
    T = max(lengths)
    ids = torch.full((4, T), pad_id, dtype=torch.long)
    types = torch.zeros((4, T), dtype=torch.long)
    mask = torch.zeros((4, T), dtype=torch.long)
    for i, (n, pair) in enumerate(zip(lengths, pairs)):
        ids[i, :n] = torch.randint(5, V, (n,), generator=g)
        ids[i, 0], ids[i, n - 1] = 2, 3
        mask[i, :n] = 1
        if pair:
            types[i, n // 2: n] = 1
            ids[i, n // 2 - 1] = 3
    return ids, types, mask


SIZES = [("L2_H128", 21128), ("L4_H256", 3000), ("L2_H512", 2000)]


@pytest.mark.parametrize("name,V", SIZES)
def test_mlm_parity_with_transformers(tmp_path, make_vocab, name, V):
    cfg = preset(name, vocab_size=V)
    ours = _randomize(BertForMaskedLM(cfg)).eval()
    out_dir = tmp_path / "hf"
    write_hf_dir(ours.state_dict(), cfg, _vocab(make_vocab, V), str(out_dir))
    hf, info = transformers.BertForMaskedLM.from_pretrained(out_dir, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    hf.eval()
    ids, types, mask = _inputs(V)
    with torch.no_grad():
        a = ours(ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
        b = hf(input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
    real = mask.bool()
    assert len(a.hidden_states) == len(b.hidden_states) == cfg.num_hidden_layers + 1
    for layer, (x, y) in enumerate(zip(a.hidden_states, b.hidden_states)):
        torch.testing.assert_close(x[real], y[real], atol=1e-5, rtol=1e-5, msg=f"hidden state {layer}")
    torch.testing.assert_close(a.logits[real], b.logits[real], atol=1e-5, rtol=1e-5)
    # unpadded single example equals its padded row
    n = int(mask[1].sum())
    with torch.no_grad():
        single = ours(ids[1:2, :n], token_type_ids=types[1:2, :n]).logits
    torch.testing.assert_close(single[0], a.logits[1, :n], atol=1e-5, rtol=1e-5)


def test_masked_positions_head_equals_full_head_rows():
    cfg = preset("tiny", vocab_size=500)
    model = _randomize(BertForMaskedLM(cfg)).eval()
    ids, types, mask = _inputs(500)
    flat = torch.tensor([0, 5, 14, 20, 39])
    labels = torch.randint(0, 500, (5,))
    with torch.no_grad():
        full = model(ids, mask, types).logits
        sel = model(ids, mask, types, masked_positions=flat, labels=labels)
    torch.testing.assert_close(sel.logits, full.reshape(-1, 500)[flat], atol=1e-6, rtol=1e-6)
    want_loss = torch.nn.functional.cross_entropy(full.reshape(-1, 500)[flat], labels)
    torch.testing.assert_close(sel.loss, want_loss)


def test_sequence_classification_and_encoder_parity(tmp_path, make_vocab):
    cfg = replace(preset("mini", vocab_size=1000), num_labels=3)
    ours = _randomize(BertForSequenceClassification(cfg)).eval()
    write_hf_dir(ours.state_dict(), cfg, _vocab(make_vocab, 1000), str(tmp_path / "cls"),
                 architecture="BertForSequenceClassification")
    hf, info = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "cls", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    enc, info = transformers.BertModel.from_pretrained(tmp_path / "cls", output_loading_info=True)
    assert not info["missing_keys"] and set(info["unexpected_keys"]) == {"classifier.weight", "classifier.bias"}
    ids, types, mask = _inputs(1000, seed=3)
    with torch.no_grad():
        a = ours(ids, mask, types).logits
        b = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        pa = ours.bert(ids, mask, types).pooler_output
        pb = enc(input_ids=ids, attention_mask=mask, token_type_ids=types).pooler_output
    assert a.shape == (4, 3)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pa, pb, atol=1e-5, rtol=1e-5)


def test_uer_layernorm_matches_formula():
    torch.manual_seed(0)
    H = 64
    ln = LayerNorm(H, eps=1e-6, kind="uer")
    with torch.no_grad():
        ln.weight.copy_(torch.randn(H))
        ln.bias.copy_(torch.randn(H))
    x = torch.randn(3, 5, H) * 3 + 1
    xd, g, b = x.double(), ln.weight.double(), ln.bias.double()
    mean = xd.sum(-1, keepdim=True) / H
    std = (((xd - mean) ** 2).sum(-1, keepdim=True) / (H - 1)).sqrt()  # unbiased, eps added to the std
    want = g * (xd - mean) / (std + 1e-6) + b
    torch.testing.assert_close(ln(x).double(), want, atol=1e-5, rtol=1e-5)
    # and it really differs from the HF flavour on the same input
    hf = torch.nn.functional.layer_norm(x, (H,), ln.weight, ln.bias, 1e-12)
    assert (hf - ln(x)).abs().max() > 1e-3
    # a model built with the switch uses it everywhere
    m = BertForMaskedLM(preset("tiny", vocab_size=100).with_layer_norm("uer"))
    kinds = {mod.kind for mod in m.modules() if isinstance(mod, LayerNorm)}
    assert kinds == {"uer"}


def test_init_styles():
    cfg = preset("tiny", vocab_size=300)
    hf_style = build_mlm(cfg, init="hf", seed=0)
    assert hf_style.bert.encoder.layer[0].attention.self.query.bias.abs().max() == 0
    uer_style = BertForMaskedLM(cfg)
    init_weights(uer_style, 0.02, "uer")
    assert uer_style.bert.encoder.layer[0].attention.self.query.bias.abs().max() > 0
    assert 0.015 < float(uer_style.bert.embeddings.word_embeddings.weight.detach().std()) < 0.025


def test_hf_init_zeroes_pad_row_even_with_tied_decoder():
    from miniroberta.modeling.config import preset
    from miniroberta.modeling.bert import build_mlm
    m = build_mlm(preset("tiny", vocab_size=300), seed=0)
    w = m.bert.embeddings.word_embeddings.weight.detach()
    assert m.cls.predictions.decoder.weight is m.bert.embeddings.word_embeddings.weight
    assert float(w[0].abs().max()) == 0.0
    assert 0.015 < float(w[1:].std()) < 0.025


def test_with_layer_norm_applies_the_eps_rule():
    cfg = preset("tiny", vocab_size=100)
    uer = cfg.with_layer_norm("uer")
    assert (uer.layer_norm_type, uer.layer_norm_eps) == ("uer", 1e-6) and cfg.layer_norm_type == "hf"
    assert uer.with_layer_norm("hf").layer_norm_eps == 1e-12 and uer.with_layer_norm("hf") == cfg
    with pytest.raises(ConfigError, match="layer_norm_type must be one of"):
        cfg.with_layer_norm("rms")


@pytest.mark.parametrize("flavour", ["uer", "uer_albert_keys", "hf", "ours"])
def test_a_value_of_the_wrong_json_type_names_the_key_the_file_and_the_type(tmp_path, flavour):
    """``"hidden_size": "128"`` used to read as an ALBERT config (emb_size 128 != hidden_size '128')."""
    d = {"uer": {"layers_num": 2, "hidden_size": "128", "heads_num": 2, "feedforward_size": 512},
         "uer_albert_keys": {"emb_size": 128, "layers_num": 2, "hidden_size": "128", "heads_num": 2,
                             "feedforward_size": 512},
         "hf": {"model_type": "bert", "hidden_size": "128", "num_hidden_layers": 2},
         "ours": {"num_hidden_layers": 2, "hidden_size": "128"}}[flavour]
    p = tmp_path / "config.json"
    p.write_text(json.dumps(d))
    with pytest.raises(ConfigError) as e:
        load_config(str(p))
    msg = str(e.value)
    assert msg.startswith(f"{p}: ") and '"hidden_size" must be an integer' in msg and "'128'" in msg
    assert "without quotes" in msg and "ALBERT" not in msg and "\n" not in msg
    p.write_text(json.dumps({"num_hidden_layers": 2, "hidden_size": 128, "layer_norm_eps": "1e-12"}))
    with pytest.raises(ConfigError, match=r'"layer_norm_eps" must be a number, got the string'):
        load_config(str(p))
