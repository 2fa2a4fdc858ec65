"""export-onnx: onnxruntime equals PyTorch (1e-4) for several sizes and all three heads, dynamic axes,
the side files; int8 records its measured cost; the CLI commands give the same answers with --onnx."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from _ft_data import write_single  # noqa: E402
from _serve_models import EXTRA, classifier_dir, mlm_dir, small_vocab  # noqa: E402

from miniroberta import cli  # noqa: E402
from miniroberta.interop.checkpoint import load_finetuned  # noqa: E402
from miniroberta.infer.backends import ClassifierHead, OnnxBackend  # noqa: E402
from miniroberta.infer.onnx_export import export_onnx  # noqa: E402
from miniroberta.infer.pipelines import classify, embed, fill_mask, load_backend  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def vocab(tmp_path_factory) -> Path:
    return small_vocab(tmp_path_factory.mktemp("vocab") / "vocab.txt")


def _inputs(tok, task: str, seed: int = 0):
    """A padded batch of 3 single texts and 3 pairs of different lengths (random text)."""
    rng = random.Random(seed)
    chars = [c for c in EXTRA + list("的一是在不了有和人这中大为上个国我")]

    def text(n):
        return "".join(rng.choice(chars) for _ in range(n))
    rows = [tok.encode(text(n)) for n in (3, 17, 9)]
    rows += [tok.encode(text(a), text(b)) for a, b in ((5, 11), (20, 2), (1, 1))]
    if task == "fill-mask":
        for r in rows:
            r.input_ids[1 + rng.randrange(len(r.input_ids) - 2)] = tok.mask_id
    T = max(len(r.input_ids) for r in rows)
    ids = np.zeros((len(rows), T), np.int64)
    mask, types = np.zeros_like(ids), np.zeros_like(ids)
    for i, r in enumerate(rows):
        n = len(r.input_ids)
        ids[i, :n], mask[i, :n], types[i, :n] = r.input_ids, 1, r.token_type_ids
    pos = np.flatnonzero(ids.reshape(-1) == tok.mask_id) if task == "fill-mask" else None
    return ids, mask, types, pos


@pytest.mark.parametrize("size,task", [("L2_H128", "fill-mask"), ("L4_H256", "classify"), ("L2_H512", "embed")])
def test_parity_with_pytorch(tmp_path, vocab, size, task):
    src = (classifier_dir if task == "classify" else mlm_dir)(tmp_path / "model", vocab, size=size)
    out = tmp_path / "onnx" / f"{task}.onnx"
    meta = export_onnx(str(src), task, str(out))
    torch_be, tok = load_backend(task, model=str(src))
    onnx_be = OnnxBackend(out, threads=1)
    ids, mask, types, pos = _inputs(tok, task)
    want = torch_be.run(ids, mask, types, pos)
    got = onnx_be.run(ids, mask, types, pos)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    # batch 1 and another length: the batch and sequence axes are dynamic
    one = [a[1:2, :int(mask[1].sum())] for a in (ids, mask, types)]
    p1 = np.flatnonzero(one[0].reshape(-1) == tok.mask_id) if task == "fill-mask" else None
    np.testing.assert_allclose(onnx_be.run(*one, p1), torch_be.run(*one, p1), atol=1e-4, rtol=0)
    # the side files
    assert meta["task"] == task and meta["opset"] == 18 and meta["max_length"] == 128
    assert meta["parity"]["max_abs_diff"] <= 1e-4
    side = json.loads((out.parent / f"{task}.onnx.json").read_text(encoding="utf-8"))
    assert side["task"] == task and side["quantization"] is None
    assert (out.parent / "vocab.txt").read_bytes() == vocab.read_bytes()
    if task == "classify":
        assert side["labels"] == ["0", "1"] and side["seq_length"] == 32
    g = onnx.load(str(out)).graph
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in g.input]
    assert all(isinstance(d[0], str) and isinstance(d[1], str) for d in dims[:3]), dims


@pytest.mark.parametrize("size", ["L2_H128", "L4_H256"])
def test_classifier_head_equals_full_forward(tmp_path, vocab, size):
    """The [CLS]-only last layer the classify backends run gives the full model's logits."""
    model, _ = load_finetuned(str(classifier_dir(tmp_path / "m", vocab, size=size)))
    tok = load_backend("classify", model=str(tmp_path / "m"))[1]
    ids, mask, types, _ = _inputs(tok, "classify", seed=3)
    t = [torch.from_numpy(a) for a in (ids, mask, types)]
    with torch.no_grad():
        full = model(t[0], attention_mask=t[1], token_type_ids=t[2]).logits
        head = ClassifierHead(model).eval()(*t)
    torch.testing.assert_close(head, full, atol=1e-5, rtol=0)
    assert not torch.allclose(full[0], full[1])  # the inputs matter: the comparison can fail


def test_pipelines_same_answers_with_onnx(tmp_path, vocab):
    src = mlm_dir(tmp_path / "mlm", vocab)
    export_onnx(str(src), "fill-mask", str(tmp_path / "o" / "fill.onnx"))
    export_onnx(str(src), "embed", str(tmp_path / "o" / "embed.onnx"))
    texts = ["今天天气很[MASK]，我们去公园散步吧", "我喜欢这本[MASK]", "[MASK]国的首都是[MASK]京"]
    tb, tok = load_backend("fill-mask", model=str(src))
    ob, _ = load_backend("fill-mask", onnx=str(tmp_path / "o" / "fill.onnx"))
    a, b = fill_mask(tb, tok, texts, top_k=3), fill_mask(ob, tok, texts, top_k=3)
    flat = lambda r: [d for g in r for d in (g if isinstance(g, list) else [g])]  # noqa: E731
    for x, y in zip(a, b):
        assert [(d["token"], d["sequence"]) for d in flat(x)] == [(d["token"], d["sequence"]) for d in flat(y)]
        np.testing.assert_allclose([d["score"] for d in flat(x)], [d["score"] for d in flat(y)], atol=1e-5)
    eb, _ = load_backend("embed", onnx=str(tmp_path / "o" / "embed.onnx"))
    tb2, _ = load_backend("embed", model=str(src))
    for pooling in ("cls", "mean", "sequence"):
        np.testing.assert_allclose(embed(eb, tok, texts, pooling, seq_length=16),
                                   embed(tb2, tok, texts, pooling, seq_length=16), atol=1e-4)
    with pytest.raises(ValueError, match="is a fill-mask export"):
        load_backend("embed", onnx=str(tmp_path / "o" / "fill.onnx"))


def test_int8_records_accuracy_change(tmp_path, vocab):
    data = write_single(tmp_path / "task", n_train=4, n_dev=48)
    src = classifier_dir(tmp_path / "cls", vocab)
    out = tmp_path / "o" / "cls.int8.onnx"
    rc = cli.main(["export-onnx", "--model", str(src), "--task", "classify", "--out", str(out),
                   "--quantize", "int8", "--eval_path", str(data / "dev.tsv")])
    assert rc == 0
    q = json.loads(Path(str(out) + ".json").read_text(encoding="utf-8"))["quantization"]
    assert q["method"] == "int8" and q["metric"] == "accuracy" and q["n"] == 48
    assert 0 <= q["accuracy_int8"] <= 1 and 0 <= q["accuracy_fp32"] <= 1
    assert q["delta_points"] == pytest.approx(100 * (q["accuracy_int8"] - q["accuracy_fp32"]))
    assert q["int8_bytes"] < q["fp32_bytes"]
    int8, tok = load_backend("classify", onnx=str(out))
    fp32, _ = load_backend("classify", model=str(src))
    texts = ["好的一是在", "坏了有和人", "这中大为上个"]
    agree = [x["label"] == y["label"] for x, y in zip(classify(int8, tok, texts), classify(fp32, tok, texts))]
    assert sum(agree) >= 2  # int8 rarely flips a prediction of a 2-label random model
    # predict --onnx writes what predict --model writes
    for flag, path, name in (("--onnx", out, "a.tsv"), ("--model", src, "b.tsv")):
        assert cli.main(["predict", flag, str(path), "--input", str(data / "test_nolabel.tsv"),
                         "--output", str(tmp_path / name), "--text_fields", "text_a", "--output_prob"]) == 0
    a = (tmp_path / "a.tsv").read_text().splitlines()
    b = (tmp_path / "b.tsv").read_text().splitlines()
    assert len(a) == len(b) == 11 and sum(x.split("\t")[0] == y.split("\t")[0] for x, y in zip(a, b)) >= 9


def test_cli_fill_mask_onnx_matches_torch(tmp_path, vocab, capsys):
    src = mlm_dir(tmp_path / "mlm", vocab)
    out = tmp_path / "fill.onnx"
    assert cli.main(["export-onnx", "--model", str(src), "--task", "fill-mask", "--out", str(out)]) == 0
    capsys.readouterr()
    outs = []
    for flag in (["--model", str(src)], ["--onnx", str(out)]):
        assert cli.main(["fill-mask", *flag, "--json", "--top_k", "3", "今天天气很[MASK]", "我喜欢这本[MASK]"]) == 0
        outs.append([json.loads(line) for line in capsys.readouterr().out.splitlines()])
    for x, y in zip(*outs):
        assert [d["token"] for d in x["predictions"]] == [d["token"] for d in y["predictions"]]


def test_export_errors(tmp_path, vocab):
    src = mlm_dir(tmp_path / "mlm", vocab)
    with pytest.raises(ValueError, match="must name a .onnx"):
        export_onnx(str(src), "embed", str(tmp_path / "x.bin"))
    with pytest.raises(ValueError, match="classifier"):
        export_onnx(str(src), "classify", str(tmp_path / "c.onnx"))
    (tmp_path / "lonely.onnx").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="lonely.onnx.json"):
        OnnxBackend(tmp_path / "lonely.onnx")
    assert cli.main(["fill-mask", "--json", "[MASK]"]) == 2  # neither --model nor --onnx
