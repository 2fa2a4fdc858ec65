"""Fine-tuning: a tiny random model learns generated single/pair/multi-class tasks; determinism;
HF export agrees with transformers' pipeline; predict writes CLUE/TSV files; an end-to-end
run on a chnsenticorp slice through the CLI that writes a report."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _ft_data as D  # noqa: E402

from miniroberta import cli  # noqa: E402
from miniroberta.finetune.inference import classification_metrics  # noqa: E402
from miniroberta.finetune import FinetuneConfig, run_finetune  # noqa: E402
from miniroberta.finetune.predict import predict_file  # noqa: E402
from miniroberta.interop.checkpoint import load_finetuned  # noqa: E402

FAST = dict(epochs_num=3, batch_size=16, learning_rate=2e-3, seq_length=32, dropout=0.0, warmup=0.1,
            progress=False, threads=1, precision="fp32")  # tiny models: one thread avoids OpenMP stalls on the shared 2-core box


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    vocab = D.write_vocab(root / "vocab.txt")
    n_vocab = len(vocab.read_text(encoding="utf-8").split())
    model = D.tiny_model(root / "tiny.safetensors", n_vocab)
    return dict(root=root, vocab=str(vocab), model=str(model), cache=str(root / "cache"))


@pytest.fixture(scope="module")
def single_run(env):
    d = D.write_single(env["root"] / "single")
    out = env["root"] / "single_out"
    cfg = FinetuneConfig(pretrained_model_path=env["model"], vocab_path=env["vocab"], train_path=str(d / "train.tsv"),
                         dev_path=str(d / "dev.tsv"), output_dir=str(out), export_hf=str(env["root"] / "single_hf"),
                         cache_dir=env["cache"], seed=3, **FAST)
    return run_finetune(cfg), d, out


def test_metrics_accuracy_and_macro_f1():
    m = classification_metrics(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0]), 3)
    assert m["acc"] == pytest.approx(3 / 5)
    # F1: class0 2*1/(2+2)=0.5, class1 2*2/(2+3)=0.8, class2 0 -> mean 0.4333
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert m["confusion"][0] == [1, 1, 0]


def test_single_sentence_task_is_learned(single_run):
    res, _, out = single_run
    assert res["best_dev_acc"] >= 0.9, res["epochs"]
    assert res["macro_f1"] >= 0.9
    assert len(res["epochs"]) == 3 and res["best_epoch"] in (1, 2, 3)
    assert res["last_dev_acc"] == res["epochs"][-1]["dev_acc"]
    assert res["best_dev_acc"] == max(e["dev_acc"] for e in res["epochs"])
    assert res["labels"] == ["0", "1"]
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines if l["event"] == "epoch"] == [1, 2, 3]
    saved = json.loads((out / "result.json").read_text())
    assert saved["best_dev_acc"] == res["best_dev_acc"]
    cfg = json.loads((out / "model" / "config.json").read_text())
    assert cfg["architectures"] == ["BertForSequenceClassification"]
    assert cfg["id2label"] == {"0": "0", "1": "1"} and cfg["label2id"] == {"0": 0, "1": 1}


def test_saved_model_is_the_best_epoch(single_run):
    res, d, out = single_run
    pred = predict_file(str(out), str(d / "dev.tsv"), text_fields="text_a")
    gold = [l.split("\t")[0] for l in (d / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    acc = float(np.mean([p == g for p, g in zip(pred["labels"], gold)]))
    assert acc == pytest.approx(res["best_dev_acc"])


def test_hf_export_agrees_with_transformers_pipeline(single_run, env):
    transformers = pytest.importorskip("transformers")
    res, d, _ = single_run
    hf_dir = res["paths"]["export_hf"]
    texts = [l for l in (d / "test_nolabel.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    ours = predict_file(hf_dir, str(d / "test_nolabel.tsv"), text_fields="text_a", vocab_path=env["vocab"])
    pipe = transformers.pipeline("text-classification", model=hf_dir, device="cpu", top_k=None)
    outs = pipe(texts)
    for i, o in enumerate(outs):
        scores = {x["label"]: x["score"] for x in o}
        assert max(scores, key=scores.get) == ours["labels"][i]
        for j, lab in enumerate(res["labels"]):
            assert scores[lab] == pytest.approx(float(ours["probs"][i, j]), abs=1e-4)


def test_pair_task_is_learned_and_pipeline_agrees_on_pairs(env):
    d = D.write_pair(env["root"] / "pair")
    cfg = FinetuneConfig(pretrained_model_path=env["model"], vocab_path=env["vocab"], train_path=str(d / "train.tsv"),
                         dev_path=str(d / "dev.tsv"), text_fields=("text_a", "text_b"),
                         output_dir=str(env["root"] / "pair_out"), cache_dir=env["cache"], seed=5,
                         **{**FAST, "epochs_num": 4})
    res = run_finetune(cfg)
    assert res["text_fields"] == ["text_a", "text_b"]
    assert res["best_dev_acc"] >= 0.85, res["epochs"]
    transformers = pytest.importorskip("transformers")
    mdir = res["paths"]["model_dir"]
    rows = D.pair_task(6, 99)
    pipe = transformers.pipeline("text-classification", model=mdir, device="cpu")
    got = [o["label"] for o in pipe([{"text": a, "text_pair": b} for a, b, _ in rows])]
    model, _ = load_finetuned(mdir)
    from miniroberta.modeling.tokenizer import BertTokenizer
    tok = BertTokenizer(env["vocab"])
    ours = []
    for a, b, _ in rows:
        enc = tok.encode(a, b, max_length=32)
        with torch.no_grad():
            logits = model(torch.tensor([enc.input_ids]), token_type_ids=torch.tensor([enc.token_type_ids])).logits
        ours.append(res["labels"][int(logits.argmax())])
    assert got == ours


def test_multiclass_clue_json_with_gapped_codes_and_predict(env, tmp_path):
    d = D.write_multi(env["root"] / "multi")
    out = env["root"] / "multi_out"
    cfg = FinetuneConfig(pretrained_model_path=env["model"], vocab_path=env["vocab"], train_path=str(d / "train.json"),
                         dev_path=str(d / "dev.json"), test_path=str(d / "test.json"), output_dir=str(out),
                         cache_dir=env["cache"], seed=11, **{**FAST, "epochs_num": 6})
    res = run_finetune(cfg)
    assert res["labels"] == ["100", "101", "103", "107"]      # numeric order -> ids 0..3
    assert res["best_dev_acc"] >= 0.8, res["epochs"]
    # the unlabeled test file is predicted with the best epoch (explicit paths default to UER's TSV layout)
    assert res["test"]["predictions"].endswith("test_predictions.tsv") and res["test"]["n"] == 12
    # predict in the CLUE submission format with ids from the file
    pred_path = tmp_path / "preds.json"
    rc = cli.main(["predict", "--model", str(out), "--input", str(d / "test.json"), "--output", str(pred_path),
                   "--format", "clue", "--text_fields", "sentence"])
    assert rc == 0
    recs = [json.loads(l) for l in pred_path.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in recs] == list(range(1000, 1012))
    truth = {r["sentence"]: r["label"] for r in D.multi_task(12, 8)}
    sents = [json.loads(l)["sentence"] for l in (d / "test.json").read_text(encoding="utf-8").splitlines()]
    acc = np.mean([r["label"] == truth[s] for r, s in zip(recs, sents)])
    assert acc >= 0.75
    assert all(set(r) == {"id", "label"} for r in recs)


def test_labelled_test_file_is_scored_and_predicted(env):
    d = D.write_single(env["root"] / "scored", n_train=64, n_dev=32)
    out = env["root"] / "scored_out"
    cfg = FinetuneConfig(pretrained_model_path=env["model"], vocab_path=env["vocab"], train_path=str(d / "train.tsv"),
                         dev_path=str(d / "dev.tsv"), test_path=str(d / "dev.tsv"), output_dir=str(out),
                         cache_dir=env["cache"], save_model=False, **{**FAST, "epochs_num": 1})
    res = run_finetune(cfg)
    # the test file here is the dev file: the best-epoch model must score it exactly as dev
    assert res["test"]["acc"] == pytest.approx(res["best_dev_acc"])
    assert res["test"]["predictions"].endswith("test_predictions.tsv")


def test_deterministic_per_seed(env):
    d = D.write_single(env["root"] / "det", n_train=64, n_dev=32)
    kw = dict(pretrained_model_path=env["model"], vocab_path=env["vocab"], train_path=str(d / "train.tsv"),
              dev_path=str(d / "dev.tsv"), cache_dir=env["cache"], save_model=False,
              **{**FAST, "epochs_num": 1, "dropout": 0.1})
    a = run_finetune(FinetuneConfig(seed=1, **kw))
    b = run_finetune(FinetuneConfig(seed=1, **kw))
    c = run_finetune(FinetuneConfig(seed=2, **kw))
    assert a["epochs"][0]["train_loss"] == b["epochs"][0]["train_loss"]
    assert a["epochs"][0]["dev_loss"] == b["epochs"][0]["dev_loss"]
    assert a["epochs"][0]["train_loss"] != c["epochs"][0]["train_loss"]


def test_random_init_needs_a_config(env):
    d = D.write_single(env["root"] / "noinit", n_train=16, n_dev=8)
    with pytest.raises(ValueError, match="pretrained_model_path"):
        run_finetune(FinetuneConfig(vocab_path=env["vocab"], train_path=str(d / "train.tsv"),
                                    dev_path=str(d / "dev.tsv"), progress=False))


def test_vocab_size_mismatch_is_an_error(env):
    d = D.write_single(env["root"] / "vmis", n_train=16, n_dev=8)
    small = D.write_vocab(env["root"] / "small_vocab.txt", chars=list("好坏的"))
    with pytest.raises(ValueError, match="vocab_size"):
        run_finetune(FinetuneConfig(pretrained_model_path=env["model"], vocab_path=str(small),
                                    train_path=str(d / "train.tsv"), dev_path=str(d / "dev.tsv"),
                                    cache_dir=env["cache"], **FAST))


def test_cli_error_names_file_and_line(env, tmp_path, capsys):
    d = D.write_single(tmp_path / "bad", n_train=16, n_dev=8)
    dev = d / "dev.tsv"
    dev.write_text(dev.read_text(encoding="utf-8") + "7\t一个没有见过的标签\n", encoding="utf-8")
    rc = cli.main(["finetune", "--pretrained_model_path", env["model"], "--vocab_path", env["vocab"],
                   "--train_path", str(d / "train.tsv"), "--dev_path", str(dev), "--no_progress",
                   "--cache_dir", env["cache"]])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"{dev}:10" in err and "'7'" in err


# ------------------------------------------------------------------------ end to end
def test_chnsenticorp_slice_end_to_end_with_report(tmp_path):
    data = D.SHARED / "tasks"
    if not (data / "chnsenticorp" / "train.tsv").is_file():
        pytest.skip("shared data not available")
    # a small vocab of the characters of the task (keeps the random model tiny), specials first
    chars = set()
    for f in ("train.tsv", "dev.tsv"):
        for line in (data / "chnsenticorp" / f).read_text(encoding="utf-8").splitlines()[1:]:
            chars.update(c for c in line.split("\t", 1)[1].lower() if not c.isspace())
    vocab = D.write_vocab(tmp_path / "vocab.txt", chars=sorted(chars))
    n_vocab = len(vocab.read_text(encoding="utf-8").splitlines())
    model = D.tiny_model(tmp_path / "tiny_random.safetensors", n_vocab, hidden=64)
    out = tmp_path / "ft"
    rc = cli.main(["finetune", "--pretrained_model_path", str(model), "--vocab_path", str(vocab),
                   "--task", "chnsenticorp", "--data_dir", str(data), "--epochs_num", "2", "--batch_size", "32",
                   "--learning_rate", "1e-3", "--seq_length", "64", "--max_train_examples", "320",
                   "--max_dev_examples", "160", "--output_dir", str(out), "--cache_dir", str(tmp_path / "cache"),
                   "--no_progress"])
    assert rc == 0
    res = json.loads((out / "result.json").read_text())
    assert res["task"] == "chnsenticorp" and res["n_train"] == 320 and res["n_dev"] == 160
    assert res["subsampled"] and res["n_train_file"] == 9600
    assert 0.0 <= res["best_dev_acc"] <= 1.0 and len(res["epochs"]) == 2
    assert (out / "model" / "model.safetensors").is_file()
    rep_dir = tmp_path / "report"
    rc = cli.main(["report", str(out), "--reference", "--out", str(rep_dir)])
    assert rc == 0
    md = (rep_dir / "report.md").read_text(encoding="utf-8")
    assert "| Model | Score | book_review | chnsenticorp | lcqmc | tnews | iflytek | ocnli |" in md
    row = next(l for l in md.splitlines() if "tiny_random" in l)
    assert f"{100 * res['best_dev_acc']:.1f}†" in row
    assert row.count("–") == 5                       # the five tasks not run
    assert "RoBERTa-Tiny (L2/H128) [reference] | 72.3 |" in md
    csv_rows = (rep_dir / "report.csv").read_text(encoding="utf-8").splitlines()
    assert csv_rows[0].startswith("Model,Score,book_review,chnsenticorp,lcqmc,tnews,iflytek,ocnli")
    assert (rep_dir / "score_vs_size.png").stat().st_size > 1000
    # predictions for UER's unlabeled sample in UER's TSV layout
    sample = D.SHARED / "uer" / "datasets" / "test_data" / "chnsenticorp" / "test_nolabel.tsv"
    if sample.is_file():
        rc = cli.main(["predict", "--model", str(out), "--input", str(sample), "--output", str(tmp_path / "p.tsv")])
        assert rc == 0
        lines = (tmp_path / "p.tsv").read_text().splitlines()
        assert lines[0] == "label" and len(lines) == 51 and set(lines[1:]) <= {"0", "1"}


def test_output_model_path_native_checkpoint_and_skip_bad_rows(env, tmp_path):
    d = D.write_single(tmp_path / "skip", n_train=64, n_dev=16)
    tr = d / "train.tsv"
    tr.write_text(tr.read_text(encoding="utf-8") + "1\n0\t\n", encoding="utf-8")   # two malformed rows
    native = tmp_path / "models" / "finetuned_model.bin"
    res = run_finetune(FinetuneConfig(pretrained_model_path=env["model"], vocab_path=env["vocab"],
                                      train_path=str(tr), dev_path=str(d / "dev.tsv"), skip_bad_rows=True,
                                      output_model_path=str(native), cache_dir=env["cache"], seed=3,
                                      **{**FAST, "epochs_num": 1}))
    assert res["train_skipped"] == 2 and res["n_train"] == 64
    assert native.is_file() and not (tmp_path / "models" / "model").exists()   # no HF dir unless --output_dir
    from miniroberta.interop.checkpoint import load_weights
    cfg, sd, meta = load_weights(str(native))
    assert cfg.id2label == {0: "0", 1: "1"} and "classifier.weight" in sd and meta["task"] == res["task"]
    out = predict_file(str(native), str(d / "dev.tsv"), vocab_path=env["vocab"], text_fields="text_a")
    gold = [l.split("\t")[0] for l in (d / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    assert np.mean([p == g for p, g in zip(out["labels"], gold)]) == pytest.approx(res["best_dev_acc"])


def test_pretrained_weights_from_hf_dir_and_uer_checkpoint(env, tmp_path):
    from miniroberta.interop.checkpoint import load_weights
    from miniroberta.interop.export import write_hf_dir
    from miniroberta.finetune.run import build_classifier
    from miniroberta.interop.uer import hf_to_uer
    cfg, sd, _ = load_weights(env["model"])
    hf_dir = tmp_path / "hf_mlm"
    write_hf_dir(sd, cfg, env["vocab"], str(hf_dir))
    uer_bin = tmp_path / "uer_model.bin-100"
    torch.save(hf_to_uer(sd), uer_bin)
    emb = sd["bert.embeddings.word_embeddings.weight"]
    for src in (str(hf_dir), str(uer_bin)):
        model, info = build_classifier(FinetuneConfig(pretrained_model_path=src, seed=1), {0: "neg", 1: "pos"})
        assert torch.equal(model.bert.embeddings.word_embeddings.weight.detach(), emb), src
        assert torch.equal(model.bert.encoder.layer[1].output.dense.weight.detach(),
                           sd["bert.encoder.layer.1.output.dense.weight"]), src
        assert model.classifier.weight.shape == (2, cfg.hidden_size) and not info["pooler_from_checkpoint"]
    # the vocab defaults to the one beside the model
    d = D.write_single(tmp_path / "t", n_train=32, n_dev=16)
    res = run_finetune(FinetuneConfig(pretrained_model_path=str(hf_dir), train_path=str(d / "train.tsv"),
                                      dev_path=str(d / "dev.tsv"), cache_dir=env["cache"], save_model=False,
                                      **{**FAST, "epochs_num": 1}))
    assert res["vocab_path"] == str(hf_dir / "vocab.txt")
    assert res["model"]["pretrained_model_path"] == str(hf_dir)


def test_stop_mid_epoch_then_resume_is_bit_identical(env, tmp_path):
    """The engine gives fine-tuning exact mid-run resume: stop inside epoch 2, resume, and the best
    weights and every epoch's dev accuracy equal an uninterrupted run's; other settings are refused."""
    from safetensors.torch import load_file
    d = D.write_single(env["root"] / "single_resume")

    def cfg(out, **kw):
        return FinetuneConfig(pretrained_model_path=env["model"], vocab_path=env["vocab"],
                              train_path=str(d / "train.tsv"), dev_path=str(d / "dev.tsv"), output_dir=str(out),
                              cache_dir=env["cache"], seed=5, **{**FAST, "dropout": 0.1, **kw})
    full = run_finetune(cfg(tmp_path / "full"))
    from miniroberta.outputs import OutputExists
    with pytest.raises(OutputExists, match="--overwrite"):   # never silently replaced
        run_finetune(cfg(tmp_path / "full"))
    part = run_finetune(cfg(tmp_path / "part", stop_after_steps=21))   # 16 steps per epoch: inside epoch 2
    assert part["stopped"] == "stop_after_steps" and part["steps"] == 21
    assert [e["epoch"] for e in part["epochs"]] == [1]
    with pytest.raises(ValueError, match="learning_rate"):
        run_finetune(cfg(tmp_path / "part", resume=True, learning_rate=1e-3))
    rest = run_finetune(cfg(tmp_path / "part", resume=True))
    assert [e["dev_acc"] for e in rest["epochs"]] == [e["dev_acc"] for e in full["epochs"]]
    assert rest["best_epoch"] == full["best_epoch"]
    a = load_file(str(tmp_path / "full" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "part" / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(FileNotFoundError, match="no training state"):
        run_finetune(cfg(tmp_path / "nothing", resume=True))


def test_unpadded_classifier_equals_the_model_forward():
    """The padding-free classifier forward (fine-tuning's default) is the model's forward: logits
    and gradients agree on a padded batch of pairs."""
    from miniroberta.finetune.task import ClassifierBatch
    from miniroberta.modeling.bert import BertForSequenceClassification, init_weights
    from miniroberta.modeling.config import ModelConfig
    from miniroberta.modeling.unpad import UnpaddedClassifier
    torch.manual_seed(0)
    mc = ModelConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     max_position_embeddings=64, id2label={0: "a", 1: "b", 2: "c"}, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    model = BertForSequenceClassification(mc)
    init_weights(model, 0.02, "uer")
    rng = np.random.default_rng(0)
    lens = np.array([5, 17, 9, 3])
    ids = np.zeros((4, 17), np.int64)
    types = np.zeros_like(ids)
    mask = np.zeros_like(ids)
    for i, n in enumerate(lens):
        ids[i, :n] = rng.integers(1, 50, n)
        types[i, n // 2:n] = 1
        mask[i, :n] = 1
    b = ClassifierBatch.make(ids, types, mask, np.array([0, 1, 2, 1]))
    t = [torch.from_numpy(a) for a in (b.ids, b.types, b.mask, b.real_index, b.cls_rows)]
    model.train()
    ref = model(t[0], attention_mask=t[2], token_type_ids=t[1]).logits
    got = UnpaddedClassifier(model)(t[0], t[2], t[1], t[3], t[4])
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=1e-5)
    g1 = torch.autograd.grad(ref.square().sum(), list(model.parameters()))
    g2 = torch.autograd.grad(got.square().sum(), list(model.parameters()))
    for a, c in zip(g1, g2):
        torch.testing.assert_close(c, a, atol=1e-4, rtol=1e-4)


def test_a_run_killed_after_a_periodic_save_resumes_bit_identically(env, tmp_path, monkeypatch):
    """--save_steps writes a state mid-epoch; a run that dies after it (steps 11-13 lost) resumes from step 10 and
    ends with the weights of an uninterrupted run, bit for bit (dropout on)."""
    from safetensors.torch import load_file
    from miniroberta.engine.trainer import Trainer
    d = D.write_single(env["root"] / "periodic")

    def cfg(out, **kw):
        return FinetuneConfig(pretrained_model_path=env["model"], vocab_path=env["vocab"],
                              train_path=str(d / "train.tsv"), dev_path=str(d / "dev.tsv"), output_dir=str(out),
                              cache_dir=env["cache"], seed=5, **{**FAST, "dropout": 0.1, **kw})
    full = run_finetune(cfg(tmp_path / "full"))
    real_step = Trainer.train_step

    def dies_at_13(self, *a, **k):
        if self.step == 13:
            raise KeyboardInterrupt("killed")     # not a clean stop: no state is written for it
        return real_step(self, *a, **k)

    monkeypatch.setattr(Trainer, "train_step", dies_at_13)
    with pytest.raises(KeyboardInterrupt):
        run_finetune(cfg(tmp_path / "part", save_steps=5))
    monkeypatch.setattr(Trainer, "train_step", real_step)
    st = torch.load(tmp_path / "part" / "train_state.pt", weights_only=True)
    assert st["step"] == 10 and st["task"]["epochs"] == []          # inside epoch 1 (16 steps per epoch)
    rest = run_finetune(cfg(tmp_path / "part", save_steps=5, resume=True))
    assert [e["dev_acc"] for e in rest["epochs"]] == [e["dev_acc"] for e in full["epochs"]]
    assert rest["epochs"][0]["train_loss"] == pytest.approx(full["epochs"][0]["train_loss"], rel=1e-9)
    a = load_file(str(tmp_path / "full" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "part" / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_learning_rate_default_depends_on_pretrained_weights(env):
    """One rule (finetune.config): 2e-5 for pretrained weights, 1e-3 from random init (2e-5 leaves such a model at
    chance); a given lr is kept, with a warning when it is known to fail from random init."""
    from miniroberta.finetune.config import GridConfig
    pre, d1 = FinetuneConfig(pretrained_model_path=env["model"], task="chnsenticorp").resolved()
    rnd, d2 = FinetuneConfig(config_path="tiny", task="chnsenticorp").resolved()
    assert pre.learning_rate == 2e-5 and rnd.learning_rate == 1e-3
    assert "random init" in d2["learning_rate"]["reason"] and d2["init"]["value"] == "random"
    given, d3 = FinetuneConfig(config_path="tiny", task="chnsenticorp", learning_rate=2e-5).resolved()
    assert given.learning_rate == 2e-5 and "chance" in d3["learning_rate"]["warning"]
    assert "warning" not in FinetuneConfig(pretrained_model_path="m", task="chnsenticorp",
                                           learning_rate=2e-5).resolved()[1]["learning_rate"]
    g = GridConfig(pretrained_model_path="m", out_dir="g")
    assert g.learning_rates(True)[0] == (3e-5, 1e-4, 3e-4) and g.learning_rates(False)[0] == (3e-4, 1e-3)
    assert GridConfig(config_path="tiny", out_dir="g", learning_rate_list=(1e-2,)).learning_rates(False)[0] == (1e-2,)


def test_a_run_at_the_majority_class_rate_says_so_and_names_the_fix(env, tmp_path, capfd):
    d = D.write_single(env["root"] / "chance", n_train=64, n_dev=64)
    res = run_finetune(FinetuneConfig(pretrained_model_path=env["model"], vocab_path=env["vocab"],
                                      train_path=str(d / "train.tsv"), dev_path=str(d / "dev.tsv"),
                                      output_dir=str(tmp_path / "o"), cache_dir=env["cache"], save_model=False,
                                      **{**FAST, "epochs_num": 1, "learning_rate": 1e-9}))
    ch = res["chance"]
    assert ch["at_majority_rate"] and ch["majority_label"] in ("0", "1") and 0.4 < ch["majority_rate"] < 0.7
    assert "--learning_rate" in ch["warning"] and "--epochs_num" in ch["warning"]
    assert "majority-class rate" in capfd.readouterr().err
    assert json.loads((tmp_path / "o" / "result.json").read_text())["chance"]["at_majority_rate"] is True
    learned = D.write_single(env["root"] / "learned")          # the task test_single_sentence_task_is_learned learns
    assert not run_finetune(FinetuneConfig(pretrained_model_path=env["model"], vocab_path=env["vocab"],
                                           train_path=str(learned / "train.tsv"), dev_path=str(learned / "dev.tsv"),
                                           cache_dir=env["cache"], save_model=False, seed=3,
                                           **FAST))["chance"]["at_majority_rate"]
