"""UER-py <-> HF key mapping (both vintages), strict loading errors, `miniroberta convert` end to end."""
import json
import os
from pathlib import Path

import pytest
import torch

from miniroberta import cli
from miniroberta.interop.checkpoint import CheckpointError, load_model, load_weights, save_native
from miniroberta.modeling.config import preset
from miniroberta.interop.convert import convert, infer_output_format
from miniroberta.interop.export import export_checkpoint, model_card
from miniroberta.modeling.bert import BertForMaskedLM
from miniroberta.interop.uer import UerFormatError, hf_to_uer, infer_config, is_uer_state_dict, uer_to_hf

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

V, H, FF, P = 60, 64, 256, 32


def uer_state_dict(vintage="new", layers=2, heads=("mlm",), seed=0, zero_seg_row=True):
    """A synthetic UER-py BERT state dict, key names written out from the reference's tables (not from
    miniroberta.interop.uer), every tensor random."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g) * 0.1
    new = vintage == "new"
    sd = {
        ("embedding.word.embedding.weight" if new else "embedding.word_embedding.weight"): r(V, H),
        ("embedding.pos.embedding.weight" if new else "embedding.position_embedding.weight"): r(P, H),
        ("embedding.seg.embedding.weight" if new else "embedding.segment_embedding.weight"): r(3, H),
        "embedding.layer_norm.gamma": 1 + r(H), "embedding.layer_norm.beta": r(H),
    }
    seg = [k for k in sd if "seg" in k][0]
    if zero_seg_row:
        sd[seg][0] = 0
    for i in range(layers):
        p = f"encoder.transformer.{i}."
        for j in range(3):
            sd[p + f"self_attn.linear_layers.{j}.weight"] = r(H, H)
            sd[p + f"self_attn.linear_layers.{j}.bias"] = r(H)
        sd[p + "self_attn.final_linear.weight"], sd[p + "self_attn.final_linear.bias"] = r(H, H), r(H)
        sd[p + "layer_norm_1.gamma"], sd[p + "layer_norm_1.beta"] = 1 + r(H), r(H)
        sd[p + "feed_forward.linear_1.weight"], sd[p + "feed_forward.linear_1.bias"] = r(FF, H), r(FF)
        sd[p + "feed_forward.linear_2.weight"], sd[p + "feed_forward.linear_2.bias"] = r(H, FF), r(H)
        sd[p + "layer_norm_2.gamma"], sd[p + "layer_norm_2.beta"] = 1 + r(H), r(H)
    word = sd["embedding.word.embedding.weight" if new else "embedding.word_embedding.weight"]
    if "mlm" in heads:
        if new:
            sd.update({"target.mlm.linear_1.weight": r(H, H), "target.mlm.linear_1.bias": r(H),
                       "target.mlm.layer_norm.gamma": 1 + r(H), "target.mlm.layer_norm.beta": r(H),
                       "target.mlm.linear_2.weight": word, "target.mlm.linear_2.bias": r(V)})
        else:
            sd.update({"target.mlm_linear_1.weight": r(H, H), "target.mlm_linear_1.bias": r(H),
                       "target.layer_norm.gamma": 1 + r(H), "target.layer_norm.beta": r(H),
                       "target.mlm_linear_2.weight": word, "target.mlm_linear_2.bias": r(V)})
    if "sp" in heads:
        pre = {"new": "target.sp.linear_", "old": "target.sp_linear_", "2020": "target.nsp_linear_"}[vintage]
        sd.update({pre + "1.weight": r(H, H), pre + "1.bias": r(H), pre + "2.weight": r(2, H), pre + "2.bias": r(2)})
    if "cls" in heads:
        sd.update({"output_layer_1.weight": r(H, H), "output_layer_1.bias": r(H),
                   "output_layer_2.weight": r(3, H), "output_layer_2.bias": r(3)})
    return sd


CASES = [("new", ("mlm",)), ("new", ("mlm", "sp")), ("old", ("mlm", "sp")), ("2020", ("mlm",)),
         ("2020", ("mlm", "sp")), ("new", ("cls",)), ("old", ("cls",))]


@pytest.mark.parametrize("vintage,heads", CASES)
def test_uer_roundtrip_identical(vintage, heads):
    sd = uer_state_dict(vintage, heads=heads)
    assert is_uer_state_dict(sd)
    hf, info = uer_to_hf(sd, source="x")
    assert not is_uer_state_dict(hf)
    # without an NSP head the 2021-2023 and 2020 spellings are identical; detection says "2020"
    assert info["uer_vintage"] == ("2020" if vintage == "old" and "sp" not in heads else vintage)
    assert info["layers"] == 2
    assert info["has_sp"] == ("sp" in heads) and info["has_classifier"] == ("cls" in heads)
    type_ = "cls" if "cls" in heads else ("bert" if "sp" in heads else "mlm")
    back = hf_to_uer(hf, vintage=vintage, type=type_)
    assert set(back) == set(sd)
    for k in sd:
        assert torch.equal(back[k], sd[k]), k
    if "mlm" in heads:  # the tied output weight is the word embedding, as UER saves it
        dec = "target.mlm.linear_2.weight" if vintage == "new" else "target.mlm_linear_2.weight"
        wk = "embedding.word.embedding.weight" if vintage == "new" else "embedding.word_embedding.weight"
        assert back[dec] is back[wk]


def test_uer_mapping_semantics():
    sd = uer_state_dict("new", heads=("mlm", "sp"))
    hf, _ = uer_to_hf(sd)
    pairs = {
        "bert.encoder.layer.1.attention.self.query.weight": "encoder.transformer.1.self_attn.linear_layers.0.weight",
        "bert.encoder.layer.1.attention.self.key.bias": "encoder.transformer.1.self_attn.linear_layers.1.bias",
        "bert.encoder.layer.0.attention.self.value.weight": "encoder.transformer.0.self_attn.linear_layers.2.weight",
        "bert.encoder.layer.0.attention.output.dense.weight": "encoder.transformer.0.self_attn.final_linear.weight",
        "bert.encoder.layer.0.attention.output.LayerNorm.weight": "encoder.transformer.0.layer_norm_1.gamma",
        "bert.encoder.layer.0.intermediate.dense.weight": "encoder.transformer.0.feed_forward.linear_1.weight",
        "bert.encoder.layer.0.output.dense.bias": "encoder.transformer.0.feed_forward.linear_2.bias",
        "bert.encoder.layer.0.output.LayerNorm.bias": "encoder.transformer.0.layer_norm_2.beta",
        "bert.embeddings.LayerNorm.weight": "embedding.layer_norm.gamma",
        "cls.predictions.transform.dense.weight": "target.mlm.linear_1.weight",
        "cls.predictions.transform.LayerNorm.bias": "target.mlm.layer_norm.beta",
        "cls.predictions.bias": "target.mlm.linear_2.bias",
        "bert.pooler.dense.weight": "target.sp.linear_1.weight",
        "cls.seq_relationship.bias": "target.sp.linear_2.bias",
    }
    for h, u in pairs.items():
        assert torch.equal(hf[h], sd[u]), h
    # segment row 0 (padding) dropped: HF type 0 = UER segment 1
    assert torch.equal(hf["bert.embeddings.token_type_embeddings.weight"], sd["embedding.seg.embedding.weight"][1:])


def test_segment_row0_dropped_and_zero_on_export():
    sd = uer_state_dict("old", zero_seg_row=False)
    hf, info = uer_to_hf(sd)
    assert info["segment_rows"] == 3 and hf["bert.embeddings.token_type_embeddings.weight"].shape == (2, H)
    back = hf_to_uer(hf, vintage="old")
    seg = back["embedding.segment_embedding.weight"]
    assert seg[0].abs().max() == 0 and torch.equal(seg[1:], sd["embedding.segment_embedding.weight"][1:])


def test_uer_strict_errors():
    sd = uer_state_dict("new", layers=3)
    with pytest.raises(UerFormatError, match=r"--layers_num 8 but the checkpoint has 3 encoder layers"):
        uer_to_hf(sd, layers_num=8, source="m.bin-5")
    bad = dict(sd)
    del bad["encoder.transformer.1.layer_norm_2.beta"]
    with pytest.raises(UerFormatError, match=r"missing tensors \['encoder.transformer.1.layer_norm_2.beta'\]"):
        uer_to_hf(bad)
    bad = dict(sd, **{"target.foo.weight": torch.zeros(1)})
    with pytest.raises(UerFormatError, match=r"unexpected tensors \['target.foo.weight'\]"):
        uer_to_hf(bad)
    bad = dict(sd)
    bad["encoder.transformer.2.feed_forward.linear_1.weight"] = torch.zeros(FF + 1, H)
    with pytest.raises(UerFormatError, match=r"bert.encoder.layer.2.intermediate.dense.weight: \(257, 64\)"):
        uer_to_hf(bad)
    bad = dict(sd)
    bad["target.mlm.linear_2.weight"] = sd["target.mlm.linear_2.weight"] + 1
    with pytest.raises(UerFormatError, match="not tied"):
        uer_to_hf(bad)
    bad = {k: v for k, v in sd.items() if not k.startswith("encoder.transformer.1.")}
    with pytest.raises(UerFormatError, match=r"layers \[1\] are missing"):
        uer_to_hf(bad)
    bad = {k: v for k, v in sd.items() if k != "target.mlm.layer_norm.gamma"}
    with pytest.raises(UerFormatError, match=r"incomplete mlm head.*target.mlm.layer_norm.gamma"):
        uer_to_hf(bad)
    with pytest.raises(ValueError, match="--type bert needs a pooler"):
        hf_to_uer(uer_to_hf(sd)[0], type="bert")


def test_infer_config():
    hf, _ = uer_to_hf(uer_state_dict("new", layers=3))
    cfg = infer_config(hf)
    assert (cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads,
            cfg.intermediate_size, cfg.max_position_embeddings, cfg.type_vocab_size) == (V, H, 3, 1, FF, P, 2)
    with pytest.raises(ValueError, match=r"does not match the weights: hidden_size 128 \(config\) vs 64"):
        infer_config(hf, "tiny", source="ckpt")
    # a config spec sets what shapes cannot (heads)
    spec = {"num_hidden_layers": 3, "hidden_size": H, "num_attention_heads": 4, "intermediate_size": FF,
            "vocab_size": V, "max_position_embeddings": P}
    assert infer_config(hf, preset_cfg(spec)).num_attention_heads == 4


def preset_cfg(d):
    from miniroberta.modeling.config import ModelConfig
    return ModelConfig(**d)


@pytest.mark.parametrize("vintage", ["new", "2020"])
def test_uer_checkpoint_loads_and_matches_manual_mapping(tmp_path, vintage):
    sd = uer_state_dict(vintage, heads=("mlm", "sp"))
    path = tmp_path / "model.bin-100"
    torch.save(sd, path)
    model, meta = load_model(path, "mlm")
    assert meta["source_format"] == "uer" and meta["uer_vintage"] == vintage
    wk = "embedding.word.embedding.weight" if vintage == "new" else "embedding.word_embedding.weight"
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, sd[wk])
    assert torch.equal(model.cls.predictions.decoder.weight, sd[wk])
    assert model.bert.pooler is not None


# ------------------------------------------------------------------ corrupt input
def test_corrupt_and_truncated_checkpoints(tmp_path):
    sd = uer_state_dict("new")
    good = tmp_path / "good.bin-1"
    torch.save(sd, good)
    data = good.read_bytes()
    trunc = tmp_path / "trunc.bin-1"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"trunc\.bin-1: cannot be loaded.*truncated"):
        load_weights(trunc)
    cfg = preset("tiny", vocab_size=V)
    nat = tmp_path / "native.safetensors"
    save_native(nat, BertForMaskedLM(cfg).state_dict(), cfg)
    half = tmp_path / "half.safetensors"
    half.write_bytes(nat.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match=r"half\.safetensors: not a readable safetensors file"):
        load_weights(half)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello world, not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk\.bin: neither safetensors nor a torch checkpoint"):
        load_weights(junk)
    with pytest.raises(CheckpointError, match="no such file"):
        load_weights(tmp_path / "absent.bin")


def test_strict_load_names_the_tensor(tmp_path):
    cfg = preset("tiny", vocab_size=V)
    sd = BertForMaskedLM(cfg).state_dict()
    sd.pop("bert.encoder.layer.1.output.dense.bias")
    sd["bert.encoder.layer.0.attention.self.key.weight"] = torch.zeros(3, 3)
    sd["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.safetensors"
    save_native(path, sd, cfg)
    with pytest.raises(CheckpointError) as e:
        load_model(path, "mlm")
    msg = str(e.value)
    assert "bad.safetensors" in msg and "bert.encoder.layer.1.output.dense.bias" in msg
    assert "extra.weight" in msg and "bert.encoder.layer.0.attention.self.key.weight: checkpoint (3, 3)" in msg


# ------------------------------------------------------------------ convert command
def test_output_format_inference(tmp_path):
    assert infer_output_format("pytorch_model.bin") == "hf"
    assert infer_output_format("out/model.safetensors") == "hf"
    assert infer_output_format(str(tmp_path)) == "hf"
    assert infer_output_format("exported/") == "hf"
    assert infer_output_format("exported_model") == "hf"
    assert infer_output_format("x.safetensors") == "native"
    assert infer_output_format("models/x_seq128_model.bin-100000") == "uer"
    assert infer_output_format("x.uer") == "uer"
    assert infer_output_format("model.bin") == "uer"
    with pytest.raises(ValueError, match="--output_format"):
        infer_output_format("weights.xyz")


def _ids(n=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, V, (2, n), generator=g)
    ids[:, 0], ids[:, -1] = 2, 3
    ids[1, 3] = 4
    return ids


def test_reference_command_line(tmp_path, monkeypatch, capsys, make_vocab):
    """`convert --input_model_path models/x_seq512_model.bin-250000 --output_model_path pytorch_model.bin
    --layers_num 8 --type mlm` exactly as in the model card."""
    monkeypatch.chdir(tmp_path)
    os.makedirs("models")
    sd = uer_state_dict("2020", layers=8)
    torch.save(sd, "models/x_seq512_model.bin-250000")
    make_vocab(n=V, name="models/vocab.txt")
    argv = ["convert", "--input_model_path", "models/x_seq512_model.bin-250000", "--output_model_path",
            "pytorch_model.bin", "--layers_num", "8", "--type", "mlm"]
    assert cli.main(argv) == 0
    for f in ("pytorch_model.bin", "config.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json",
              "README.md"):
        assert (tmp_path / f).is_file(), f
    assert not (tmp_path / "model.safetensors").exists()
    hf_cfg = json.loads((tmp_path / "config.json").read_text())
    assert hf_cfg["num_hidden_layers"] == 8 and hf_cfg["architectures"] == ["BertForMaskedLM"]
    card = (tmp_path / "README.md").read_text()
    assert "| 8 | 64 | 1 | 256 | 60 | 32 |" in card and "UER-py checkpoint (2020 key names)" in card
    # transformers loads it with nothing missing and gives our logits
    hf, info = transformers.BertForMaskedLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    ours, _ = load_model("models/x_seq512_model.bin-250000", "mlm")
    ids = _ids()
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(ids).logits, hf.eval()(input_ids=ids).logits, atol=1e-5, rtol=1e-5)
    # second run refuses to overwrite, names the files, exit code 2
    assert cli.main(argv) == 2
    assert "already exist" in capsys.readouterr().err
    assert cli.main(argv + ["--overwrite"]) == 0
    assert cli.main([a if a != "8" else "6" for a in argv] + ["--overwrite"]) == 2
    assert "--layers_num 6 but the checkpoint has 8" in capsys.readouterr().err


@pytest.mark.parametrize("vintage", ["new", "old"])
def test_type_bert_and_uer_roundtrip_via_cli(tmp_path, vintage, make_vocab):
    sd = uer_state_dict(vintage, heads=("mlm", "sp"), layers=2)
    src = tmp_path / "m.bin-10"
    torch.save(sd, src)
    vocab = str(make_vocab(n=V, name="v.txt"))
    out = tmp_path / "hf_bert"
    assert cli.main(["convert", "--input_model_path", str(src), "--output_model_path", str(out), "--type", "bert",
                     "--vocab_path", vocab]) == 0
    pt, info = transformers.BertForPreTraining.from_pretrained(out, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    enc, info = transformers.BertModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"]  # the pooler is there with --type bert
    ours, _ = load_model(src, "encoder")
    ids = _ids(seed=1)
    with torch.no_grad():
        a = ours.eval()(ids)
        b = enc.eval()(input_ids=ids)
        nsp = pt.eval()(input_ids=ids).seq_relationship_logits
    torch.testing.assert_close(a.last_hidden_state, b.last_hidden_state, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.pooler_output, b.pooler_output, atol=1e-5, rtol=1e-5)
    pre = "target.sp.linear_2." if vintage == "new" else "target.sp_linear_2."
    torch.testing.assert_close(nsp, a.pooler_output @ sd[pre + "weight"].T + sd[pre + "bias"])
    # HF dir -> UER (same vintage) gives back the original tensors
    back = tmp_path / "back.bin-10"
    assert cli.main(["convert", "--input_model_path", str(out), "--output_model_path", str(back), "--type", "bert",
                     "--uer_vintage", vintage]) == 0
    again = torch.load(back, weights_only=True)
    assert set(again) == set(sd) and all(torch.equal(again[k], sd[k]) for k in sd)


def test_mlm_export_loading_contract(tmp_path, make_vocab):
    """pipeline / BertForMaskedLM / BertModel load an --type mlm export; the only differences are the
    documented ones: BertModel lacks a pooler and does not use the MLM head."""
    torch.save(uer_state_dict("new", heads=("mlm", "sp")), tmp_path / "m.bin-1")
    out = tmp_path / "hf"
    convert(str(tmp_path / "m.bin-1"), str(out), vocab_path=str(make_vocab(n=V, name="v.txt")))
    files = sorted(os.listdir(out))
    assert files == ["README.md", "config.json", "integrity.json", "model.safetensors", "special_tokens_map.json",
                     "tokenizer_config.json", "vocab.txt"]
    _, info = transformers.BertForMaskedLM.from_pretrained(out, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    _, info = transformers.BertModel.from_pretrained(out, output_loading_info=True)
    assert set(info["missing_keys"]) == {"pooler.dense.weight", "pooler.dense.bias"}
    assert {k.split(".")[0] for k in info["unexpected_keys"]} == {"cls"}
    fill = transformers.pipeline("fill-mask", model=str(out))
    res = fill("一丁[MASK]丂", top_k=3)
    assert len(res) == 3 and all(set(r) == {"score", "token", "token_str", "sequence"} for r in res)


def test_native_and_hf_bin_inputs(tmp_path, make_vocab):
    cfg = preset("tiny", vocab_size=V)
    m = BertForMaskedLM(cfg)
    torch.nn.init.normal_(m.cls.predictions.bias)
    meta = {"step": 250000, "tokens": 123456789, "loss": 1.2345, "corpus": "cluecorpussmall", "stage": 2}
    save_native(tmp_path / "m.safetensors", m.state_dict(), cfg, meta)
    make_vocab(n=V)
    out = export_checkpoint(tmp_path / "m.safetensors", tmp_path / "hf", scores={"chnsenticorp": 0.914, "tnews": 62.0})
    card = (Path(out) / "README.md").read_text()
    for s in ("| Steps | 250,000 |", "| Tokens seen | 123,456,789 |", "| Final MLM loss | 1.234 |",
              "cluecorpussmall", "| chnsenticorp | tnews |", "91.4 | 62.0"):
        assert s in card, s
    # HF pytorch_model.bin (old LayerNorm gamma/beta names, decoder keys) with config.json beside -> native
    hf_dir = tmp_path / "hfbin"
    hf_dir.mkdir()
    sd = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
          for k, v in m.state_dict().items()}
    sd["cls.predictions.decoder.bias"] = sd["cls.predictions.bias"]
    torch.save(sd, hf_dir / "pytorch_model.bin")
    (hf_dir / "config.json").write_text(json.dumps(cfg.to_hf_dict()))
    nat = tmp_path / "back.safetensors"
    convert(str(hf_dir / "pytorch_model.bin"), str(nat))
    c2, sd2, _ = load_weights(nat)
    assert c2 == cfg
    for k, v in m.state_dict().items():
        if k != "cls.predictions.decoder.weight":
            assert torch.equal(sd2[k], v), k
    # native -> UER old vintage -> native: identical
    uer = tmp_path / "x.uer"
    convert(str(nat), str(uer), uer_vintage="old")
    assert "embedding.word_embedding.weight" in torch.load(uer, weights_only=True)
    convert(str(uer), str(tmp_path / "again.safetensors"), layer_norm="uer")
    c3, sd3, _ = load_weights(tmp_path / "again.safetensors")
    assert c3.layer_norm_type == "uer" and c3.layer_norm_eps == 1e-6
    assert all(torch.equal(sd3[k], sd2[k]) for k in sd2)
    # the UER LayerNorm flavour survives an HF export for our own loader; transformers still loads the directory
    convert(str(tmp_path / "again.safetensors"), str(tmp_path / "hf_uer_ln"), vocab_path=str(tmp_path / "vocab.txt"))
    m4, _ = load_model(tmp_path / "hf_uer_ln", "mlm")
    assert m4.bert.embeddings.LayerNorm.kind == "uer" and m4.config.layer_norm_eps == 1e-6
    _, info = transformers.BertForMaskedLM.from_pretrained(tmp_path / "hf_uer_ln", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))


def test_model_card_without_meta():
    card = model_card(preset("medium"), {}, type="mlm")
    assert "| 8 | 512 | 8 | 2048 | 21128 | 512 |" in card and "records no training information" in card
    assert "pipeline('fill-mask'" in card


def test_uer_classifier_to_hf_sequence_classification(tmp_path, make_vocab):
    """UER run_classifier output_layer_1/2 -> BertForSequenceClassification: logits = W2 tanh(W1 h_cls + b1) + b2."""
    sd = uer_state_dict("new", heads=("cls",))
    torch.save(sd, tmp_path / "finetuned_model.bin")
    out = tmp_path / "hf_cls"
    assert cli.main(["convert", "--input_model_path", str(tmp_path / "finetuned_model.bin"), "--output_model_path",
                     str(out), "--type", "cls", "--vocab_path", str(make_vocab(n=V, name="v.txt"))]) == 0
    hf, info = transformers.BertForSequenceClassification.from_pretrained(out, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert hf.config.num_labels == 3
    enc, _ = load_model(tmp_path / "finetuned_model.bin", "encoder")
    ids = _ids(seed=2)
    with torch.no_grad():
        h = enc.eval()(ids).last_hidden_state[:, 0]
        want = torch.tanh(h @ sd["output_layer_1.weight"].T + sd["output_layer_1.bias"]) @ sd["output_layer_2.weight"].T \
            + sd["output_layer_2.bias"]
        torch.testing.assert_close(hf.eval()(input_ids=ids).logits, want, atol=1e-5, rtol=1e-5)
    # an MLM export of a classifier is refused with the reason
    assert cli.main(["convert", "--input_model_path", str(tmp_path / "finetuned_model.bin"), "--output_model_path",
                     str(tmp_path / "x"), "--vocab_path", str(tmp_path / "v.txt")]) == 2


@pytest.mark.parametrize("target", ["out.safetensors", "out.bin-1", "hf_out"])
def test_convert_claims_its_output(tmp_path, make_vocab, capsys, target):
    """An existing output is refused without --overwrite; with it the old one is moved aside, never lost."""
    cfg = preset("tiny", vocab_size=V)
    save_native(tmp_path / "m.safetensors", BertForMaskedLM(cfg).state_dict(), cfg, {"step": 1})
    argv = ["convert", "--input_model_path", str(tmp_path / "m.safetensors"), "--output_model_path",
            str(tmp_path / target), "--vocab_path", str(make_vocab(n=V))]
    assert cli.main(argv) == 0
    first = sorted(os.listdir(tmp_path))
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err and sorted(os.listdir(tmp_path)) == first
    assert cli.main(argv + ["--overwrite"]) == 0
    kept = [n for n in os.listdir(tmp_path) if n.startswith(target + ".old-")]
    assert len(kept) == 1 and load_weights(tmp_path / kept[0])[0] == load_weights(tmp_path / target)[0]
