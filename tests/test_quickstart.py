"""`miniroberta quickstart`: end to end with a tiny budget (needs ../shared/data), its verdict, and its sizing."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from miniroberta import cli

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
VOCAB = DATA / "vocab" / "google_zh_vocab.txt"
needs_data = pytest.mark.skipif(not (DATA / "corpus").is_dir() or not VOCAB.is_file(),
                                reason="../shared/data is not present")


@needs_data
def test_quickstart_end_to_end(tmp_path, capsys):
    out = tmp_path / "qs"
    args = ["quickstart", "--out", str(out), "--steps", "16", "--batch_size", "8", "--seq_length", "64",
            "--max_bytes", "300000", "--threads", "1", "--no_progress"]
    assert cli.main(args) == 0
    text = capsys.readouterr().out
    s = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert s["steps"] == 16 and s["default_steps"] == 8000 and not s["shortened"]
    # the held-out verdict: the model's score beside the unigram baseline on the same masked positions
    v = s["heldout"]
    assert v["source"] == "c3_documents.txt" and v["masked_tokens"] > 1000
    assert 0.0 < v["unigram_accuracy"] < 0.2 and 4.0 < v["unigram_loss"] < 9.0
    assert v["loss"] < v["start_loss"]                 # it learnt something in 16 steps
    assert "unigram baseline" in text and "verdict:" in text and "still on the unigram plateau" in text
    assert "fill-mask with the exported model (top 5):" in text and str(out / "hf_model") in text
    assert "--compare adds a fine-tuning check" in text
    # the HF directory is complete and loads in transformers with zero missing keys
    hf = out / "hf_model"
    for name in ("config.json", "model.safetensors", "vocab.txt", "README.md"):
        assert (hf / name).is_file(), name
    transformers = pytest.importorskip("transformers")
    _, info = transformers.BertForMaskedLM.from_pretrained(str(hf), output_loading_info=True)
    assert not info["missing_keys"]
    assert all(len(p) == 5 for p in s["predictions"].values())
    assert "中国的首都是[MASK]京。" in s["predictions"]          # the README's sentence
    # the corpus: every file but the held-out one, decontaminated against the six tasks' dev/test texts
    dec = s["decontamination"]
    names = [os.path.basename(f["path"]) for f in dec["files"]]
    assert "c3_documents.txt" not in names and len(names) >= 10
    if (DATA / "tasks" / "chnsenticorp").is_dir():
        from miniroberta.data.decontam import task_spans
        from miniroberta.study.quickstart import DECONTAMINATE
        es = task_spans(DECONTAMINATE, str(DATA / "tasks"), splits=("dev", "test"))
        for f in dec["files"]:
            lines = open(f["out"], encoding="utf-8").read().splitlines()
            assert len(lines) == f["kept"]
            assert not any(es.match(line) for line in lines)
    # a second run refuses the output instead of overwriting it; --overwrite moves the first aside
    assert cli.main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    first = (out / "summary.json").read_text(encoding="utf-8")
    assert cli.main(args + ["--overwrite"]) == 0
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("qs.old-")]
    assert len(aside) == 1 and (aside[0] / "summary.json").read_text(encoding="utf-8") == first


def test_quickstart_without_data_says_what_to_pass(tmp_path, capsys):
    rc = cli.main(["quickstart", "--out", str(tmp_path / "x"), "--corpus", str(tmp_path / "missing.txt"),
                   "--steps", "1"])
    assert rc == 2 and "--corpus" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_bad_settings_are_named_together(tmp_path, capsys):
    rc = cli.main(["quickstart", "--out", str(tmp_path / "x"), "--steps", "0", "--learning_rate", "inf"])
    err = capsys.readouterr().err
    assert rc == 2 and "--steps: must be >= 1" in err and "--learning_rate: must be a finite number" in err


def _fake_timing(tmp_path, monkeypatch, per_step_stall: float = 3.0):
    """Calibration steps of 0.1 s after two slow warm-ups and one stall."""
    from miniroberta.study import quickstart as qs
    seen = {}

    def fake_train(cfg, opts):
        seen["stop"] = opts.stop_after_steps
        path = tmp_path / "metrics.jsonl"
        t, lines = 0.0, []
        for step in range(1, opts.stop_after_steps + 1):
            t += 1.0 if step <= 2 else per_step_stall if step == 10 else 0.1
            lines.append(json.dumps({"event": "report", "step": step, "elapsed_s": t}))
        path.write_text("\n".join(lines) + "\n")
        return {"metrics_path": str(path)}

    monkeypatch.setattr(qs, "train", fake_train)
    return qs, seen


def test_the_default_trains_the_same_steps_on_a_slow_machine_and_says_how_long(tmp_path, monkeypatch):
    """A busy machine (here: 0.1 s/step, so 8,000 steps need > 12 min) trains the default steps, never fewer,
    and the expected duration is said up front."""
    qs, seen = _fake_timing(tmp_path, monkeypatch)
    base = qs.PretrainConfig(dataset_path="d", output_model_path=str(tmp_path / "m.bin"), total_steps=1)
    cfg = qs.QuickstartConfig()
    steps, how = qs.plan_steps(cfg, base)
    assert seen["stop"] == qs.CALIBRATION_STEPS and steps == qs.DEFAULT_STEPS == 8000
    assert "expect ~15:20" in how and "slower or busier" in how     # 8000 x 0.1 s x 1.15 = 920 s


def test_minutes_sizes_a_shortened_run_from_the_median_step(tmp_path, monkeypatch):
    """--minutes: the median step after two warm-ups (a 3 s stall does not shrink the run), labelled."""
    qs, _ = _fake_timing(tmp_path, monkeypatch)
    base = qs.PretrainConfig(dataset_path="d", output_model_path=str(tmp_path / "m.bin"), total_steps=1)
    steps, how = qs.plan_steps(qs.QuickstartConfig(minutes=1.0), base)
    assert steps == int(60.0 / (0.1 * qs.SLOWDOWN))     # 521; the mean step (0.2 s) would give ~260
    assert "shortened run" in how and "8,000" in how


def test_verdict_words_follow_the_ratio_to_the_unigram_baseline():
    from miniroberta.study.quickstart import verdict_lines
    v = dict(source="c3_documents.txt", masked_tokens=30000, loss=5.18, accuracy=0.140, unigram_loss=6.3,
             unigram_accuracy=0.046, start_loss=9.97, left_plateau=True)
    text = "\n".join(verdict_lines(v, 8000, shortened=False))
    assert "has left the unigram plateau" in text and "3.0x" in text
    v.update(accuracy=0.047, left_plateau=False)
    text = "\n".join(verdict_lines(v, 300, shortened=True))
    assert "still on the unigram plateau" in text and "shortened run" in text
    assert "no held-out file" in verdict_lines(None, 10, False)[0]


def test_unigram_baseline_scores_frequencies_on_the_same_masks(tmp_path):
    """The unigram predictor's loss is the cross-entropy of the (add-one smoothed) training frequencies on
    the held-out masked tokens, and its accuracy the share of masked tokens equal to the most frequent one."""
    from miniroberta.data.dataset import MlmDataset, default_manifest, write_dataset
    from miniroberta.data.masking import EVAL_EPOCH, SpecialIds, collate, eval_masking
    from miniroberta.pretrain.heldout import unigram_baseline
    special = SpecialIds(pad=0, cls=2, sep=3, mask=4, ordinary=np.arange(5, 50))
    rng = np.random.default_rng(0)
    V = 50
    p = np.r_[np.zeros(5), rng.dirichlet(np.ones(V - 5) * 0.3)]
    train = [[2, *rng.choice(V, size=30, p=p).tolist(), 3] for _ in range(200)]
    held = [[2, *rng.choice(V, size=30, p=p).tolist(), 3] for _ in range(40)]
    man = dict(vocab_sha256="x", vocab_size=V, seq_length=32)
    write_dataset(tmp_path / "tr", train, default_manifest(**man))
    write_dataset(tmp_path / "ho", held, default_manifest(**man))
    tr, ho = MlmDataset(tmp_path / "tr"), MlmDataset(tmp_path / "ho")
    res = unigram_baseline(tr, ho, special, eval_masking(), V)
    counts = np.bincount(np.concatenate([np.asarray(x[1:-1]) for x in train]), minlength=V).astype(float) + 1
    counts[[0, 2, 3]] = 0
    q = counts / counts.sum()
    b = collate([ho[i] for i in range(len(ho))], np.arange(len(ho)), EVAL_EPOCH, special, eval_masking(), None, 8)
    labels = np.asarray(b.labels)
    assert res["masked_tokens"] == len(labels)
    assert res["loss"] == pytest.approx(float(-np.log(q[labels]).mean()), rel=1e-9)
    assert res["mlm_accuracy"] == pytest.approx(float((labels == np.argmax(q)).mean()))
    assert res["top_token"] == int(np.argmax(q))


def test_mcnemar_exact_and_the_comparison_in_words():
    from miniroberta.study.compare import describe_comparison, mcnemar_exact
    t = mcnemar_exact([True, True, True, False, True], [False, False, False, False, True])
    assert (t["only_a"], t["only_b"]) == (3, 0) and t["p_value"] == pytest.approx(0.25)   # 2 * 0.5^3
    assert mcnemar_exact([True, False], [True, False])["p_value"] == 1.0
    t = mcnemar_exact([True] * 30 + [False] * 10, [False] * 30 + [True] * 10)
    assert t["p_value"] == pytest.approx(0.0022, abs=2e-4)                            # binomial(40, 1/2) tail
    with pytest.raises(ValueError, match="same examples"):
        mcnemar_exact([True], [True, False])
    settings = dict(epochs_num=3, batch_size=32)
    rows = [dict(seed=s, pretrained=0.21, random_init=0.12, p_value=1e-20, only_a=300, only_b=60) for s in (7, 8, 9)]
    c = dict(task="iflytek", settings=settings, seeds=rows, n_dev=2599, pretrained_mean=0.21, random_init_mean=0.12)
    assert "pretraining helps here: +9.0 points, ahead on every seed" in "\n".join(describe_comparison(c))
    rows[1].update(pretrained=0.12, random_init=0.121, p_value=0.9)
    assert "no consistent difference" in "\n".join(describe_comparison(c))


@pytest.mark.skipif(not (DATA / "tasks" / "iflytek").is_dir(), reason="no iflytek")
def test_compare_fine_tunes_both_arms_per_seed_with_a_paired_test(tmp_path, monkeypatch):
    """Step 5 on a small slice: per seed, the pretrained model and the random init of the same architecture,
    scored on the same dev examples, and McNemar's test on their per-example predictions."""
    import torch
    from miniroberta.interop.checkpoint import save_native
    from miniroberta.interop.export import export_checkpoint
    from miniroberta.modeling.bert import build_mlm
    from miniroberta.modeling.config import preset
    from miniroberta.modeling.tokenizer import read_vocab
    from miniroberta.study import compare
    mc = preset("tiny", vocab_size=len(read_vocab(str(VOCAB))))
    torch.manual_seed(0)
    save_native(str(tmp_path / "m.bin"), build_mlm(mc).state_dict(), mc, {"step": 0})
    export_checkpoint(str(tmp_path / "m.bin"), str(tmp_path / "hf"), vocab_path=str(VOCAB), type="mlm")
    monkeypatch.setitem(compare.COMPARE, "max_train_examples", 48)
    monkeypatch.setitem(compare.COMPARE, "epochs_num", 1)
    monkeypatch.setitem(compare.COMPARE, "seq_length", 32)
    res = compare.compare_with_random_init(str(tmp_path / "hf"), str(DATA / "tasks"), 1, "fp32", seeds=[7, 8])
    assert [r["seed"] for r in res["seeds"]] == [7, 8] and res["n_dev"] == 2599
    for r in res["seeds"]:
        assert 0.0 <= r["pretrained"] <= 1.0 and 0.0 <= r["random_init"] <= 1.0 and 0.0 < r["p_value"] <= 1.0
        # the discordant counts are consistent with the two accuracies on the same dev examples
        assert r["only_a"] - r["only_b"] == round((r["pretrained"] - r["random_init"]) * r["n_dev"])
    assert describe_ok(compare.describe_comparison(res))


def describe_ok(lines: list[str]) -> bool:
    return lines[0].startswith("iflytek dev accuracy") and lines[-1].startswith("verdict:")
