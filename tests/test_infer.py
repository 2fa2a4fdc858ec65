"""fill-mask equals transformers' pipeline on the same exported model; embed features; the two commands."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from miniroberta import cli
from miniroberta.interop.checkpoint import load_model, save_native
from miniroberta.modeling.config import preset
from miniroberta.interop.export import write_hf_dir
from miniroberta.infer.pipelines import embed, fill_mask
from miniroberta.modeling.bert import BertForMaskedLM
from miniroberta.modeling.tokenizer import BertTokenizer

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
GOOGLE_VOCAB = DATA / "vocab" / "google_zh_vocab.txt"
pytestmark = pytest.mark.skipif(not GOOGLE_VOCAB.exists(),
                                reason="../shared/data/vocab/google_zh_vocab.txt not available")

TEXTS = [
    "中国的首都是[MASK]京。",
    "今天天气很[MASK]，我们去公园散步吧！",
    "The capital of France is [MASK].",
    "[MASK]",
    "他在2019年买了一台iPhone，花了[MASK]千元。这是一段稍微长一点的文本，用来检验批处理时的填充不会改变结果。",
    "[MASK]国的首都是[MASK]京。",  # two masks: one list per mask, the other mask kept in `sequence`
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny random model whose predictions depend clearly on the input (no near-ties in the top-k)."""
    torch.manual_seed(0)
    cfg = preset("tiny", vocab_size=21128)
    model = BertForMaskedLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0, 0.05) if not name.endswith("LayerNorm.weight") else p.fill_(1.0)
        model.cls.predictions.transform.LayerNorm.weight.fill_(20.0)
    d = tmp_path_factory.mktemp("fill") / "hf"
    write_hf_dir(model.state_dict(), cfg, str(GOOGLE_VOCAB), str(d))
    return d, model.eval(), BertTokenizer(GOOGLE_VOCAB)


def _same(a, b):
    """Two top-k lists of {score, token, token_str, sequence}: same tokens and strings, scores within fp noise."""
    assert len(a) == len(b)
    assert [x["token"] for x in a] == [x["token"] for x in b]
    assert [x["token_str"] for x in a] == [x["token_str"] for x in b]
    assert [x["sequence"] for x in a] == [x["sequence"] for x in b]
    np.testing.assert_allclose([x["score"] for x in a], [x["score"] for x in b], rtol=1e-4, atol=1e-6)


def test_fill_mask_equals_pipeline(exported):
    d, model, tok = exported
    pipe = transformers.pipeline("fill-mask", model=str(d))
    ours = fill_mask(model, tok, TEXTS, top_k=5, batch_size=4)  # padded batches of mixed lengths
    for text, got in zip(TEXTS, ours):
        want = pipe(text, top_k=5)
        if text.count("[MASK]") > 1:
            assert len(got) == len(want) == 2
            for g, w in zip(got, want):
                _same(g, w)
        else:
            _same(got, want)
    # the model loaded back from the export gives the same answers
    again, _ = load_model(d, "mlm")
    assert [[x["token"] for x in r] for r in fill_mask(again, tok, TEXTS[:3], top_k=3)] == \
           [[x["token"] for x in r[:3]] for r in ours[:3]]
    # a bare string gives its candidates, as the pipeline does (a list of strings: one entry per text)
    one = fill_mask(model, tok, TEXTS[0], top_k=2)
    _same(one, pipe(TEXTS[0], top_k=2))
    _same(one, ours[0][:2])
    two = fill_mask(model, tok, TEXTS[5], top_k=2)   # two masks: one list per mask, like the pipeline
    assert len(two) == 2 and all(len(g) == 2 for g in two)
    for g, w in zip(two, pipe(TEXTS[5], top_k=2)):
        _same(g, w)


def test_fill_mask_errors(exported):
    _, model, tok = exported
    with pytest.raises(ValueError, match="text 2 has no \\[MASK\\]"):
        fill_mask(model, tok, ["好[MASK]", "no mask here"])
    with pytest.raises(ValueError, match="at most 512"):
        fill_mask(model, tok, ["长" * 600 + "[MASK]"])


def test_fill_mask_cli(exported, tmp_path, capsys):
    d, model, tok = exported
    assert cli.main(["fill-mask", "--model", str(d), TEXTS[0], "--top_k", "3"]) == 0
    out = capsys.readouterr().out
    best = fill_mask(model, tok, [TEXTS[0]], top_k=3)[0]
    assert TEXTS[0] in out and all(p["sequence"] in out for p in best)
    inp = tmp_path / "texts.txt"
    inp.write_text("\n".join(TEXTS[:4]) + "\n\n", encoding="utf-8")
    assert cli.main(["fill-mask", "--model", str(d), "--input", str(inp), "--batch_size", "2", "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["text"] for x in lines] == TEXTS[:4]
    assert [p["token"] for p in lines[0]["predictions"]] == [p["token"] for p in fill_mask(model, tok, TEXTS[:1])[0]]
    assert cli.main(["fill-mask", "--model", str(d), "no mask"]) == 2
    assert "no [MASK]" in capsys.readouterr().err


def test_embed_matches_transformers(exported, tmp_path):
    d, model, tok = exported
    texts = ["中国的首都是北京。", "今天天气很好", "hello world, 这是一个比较长的句子，用来检验填充。"]
    hf = transformers.BertModel.from_pretrained(d).eval()
    cls = embed(model, tok, texts, pooling="cls", batch_size=2)
    mean = embed(model, tok, texts, pooling="mean", batch_size=2)
    seq = embed(model, tok, texts, pooling="sequence", seq_length=32, batch_size=2)
    assert cls.shape == (3, 128) and mean.shape == (3, 128) and seq.shape == (3, 32, 128)
    for i, t in enumerate(texts):
        enc = tok.encode(t)
        with torch.no_grad():
            h = hf(input_ids=torch.tensor([enc.input_ids])).last_hidden_state[0].numpy()
        np.testing.assert_allclose(cls[i], h[0], atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(mean[i], h.mean(0), atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(seq[i, : len(h)], h, atol=1e-5, rtol=1e-5)
        assert not seq[i, len(h):].any()
    short = embed(model, tok, texts, pooling="cls", seq_length=6)
    with torch.no_grad():
        h = hf(input_ids=torch.tensor([tok.encode(texts[2], max_length=6).input_ids])).last_hidden_state[0, 0].numpy()
    np.testing.assert_allclose(short[2], h, atol=1e-5, rtol=1e-5)


def test_embed_cli_from_native_checkpoint(exported, tmp_path):
    d, model, tok = exported
    nat = tmp_path / "m.safetensors"
    save_native(nat, model.state_dict(), model.config, {"vocab_path": str(GOOGLE_VOCAB)})
    inp = tmp_path / "t.txt"
    inp.write_text("第一句\n\n第二句话\n", encoding="utf-8")
    out = tmp_path / "f.npy"
    assert cli.main(["embed", "--model", str(nat), "--input", str(inp), "--output", str(out), "--pooling", "mean"]) == 0
    feats = np.load(out)
    # row i is line i: the blank line is kept (embedded as [CLS] [SEP]) so rows stay aligned with the file
    assert feats.shape[0] == 3
    np.testing.assert_allclose(feats, embed(model, tok, ["第一句", "", "第二句话"], pooling="mean"), atol=1e-6)
    assert cli.main(["embed", "--model", str(nat), "--input", str(inp), "--output", str(out), "--seq_length", "1"]) == 2
