"""`miniroberta quickstart` end to end with a tiny budget (needs ../shared/data)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from miniroberta import cli

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
pytestmark = pytest.mark.skipif(not (DATA / "corpus").is_dir() or not (DATA / "vocab").is_dir(),
                                reason="../shared/data is not present")


def test_quickstart_end_to_end(tmp_path, capsys):
    out = tmp_path / "qs"
    rc = cli.main(["quickstart", "--out", str(out), "--steps", "12", "--batch_size", "8", "--seq_length", "64",
                   "--max_bytes", "150000", "--threads", "1", "--no_progress", "--no_compare"])
    assert rc == 0
    text = capsys.readouterr().out
    s = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert s["steps"] == 12
    # the loss falls, on the training batches and on the held-out file
    assert s["end_loss"] < s["start_loss"]
    assert s["end_eval_loss"] < s["start_eval_loss"] - 0.1
    assert "MLM loss:" in text and "fill-mask (top 5):" in text and str(out / "hf_model") in text
    # the HF directory is complete and loads in transformers with zero missing keys
    hf = out / "hf_model"
    for name in ("config.json", "model.safetensors", "vocab.txt", "README.md"):
        assert (hf / name).is_file(), name
    assert "12" in (hf / "README.md").read_text(encoding="utf-8")  # the card records the steps
    transformers = pytest.importorskip("transformers")
    m, info = transformers.BertForMaskedLM.from_pretrained(str(hf), output_loading_info=True)
    assert not info["missing_keys"]
    for preds in s["predictions"].values():
        assert len(preds) == 5
    assert os.path.isfile(s["checkpoint"])
    # the slice is review text, an even spread of each file, with no line sharing a span with a sentiment dev text
    if (DATA / "tasks" / "chnsenticorp").is_dir():
        from miniroberta.data.decontam import task_spans
        from miniroberta.study.quickstart import DECONTAMINATE, TRAIN_FILES
        dec = s["decontamination"]
        assert [os.path.basename(f["path"]) for f in dec["files"]] == list(TRAIN_FILES)
        assert sum(f["bytes"] for f in dec["files"]) <= 150000 and all(f["stride"] > 1 for f in dec["files"])
        es = task_spans(DECONTAMINATE, str(DATA / "tasks"), splits=("dev",))
        tt = s["task_text"]        # + chnsenticorp's train texts without labels, decontaminated the same way
        assert 7000 < tt["kept"] <= 9600 and tt["removed"] > 0 and s["packed"] is True
        for f in [*dec["files"], tt]:
            lines = open(f["out"], encoding="utf-8").read().splitlines()
            assert len(lines) == f["kept"] > 0
            assert not any(es.match(line) for line in lines)
        labels = {"0", "1"}
        assert not labels & set(open(tt["out"], encoding="utf-8").read().splitlines())


def test_quickstart_without_data_says_what_to_pass(tmp_path, capsys):
    rc = cli.main(["quickstart", "--out", str(tmp_path / "x"), "--corpus", str(tmp_path / "missing.txt"),
                   "--steps", "1"])
    assert rc == 2 and "--corpus" in capsys.readouterr().err


@pytest.mark.skipif(not (DATA / "tasks" / "chnsenticorp").is_dir(), reason="no chnsenticorp")
def test_quickstart_compare_fine_tunes_both_arms_with_the_same_settings(tmp_path, monkeypatch):
    """Step 5 on a small slice: the pretrained model and the random init of the same architecture."""
    from miniroberta.study import quickstart as qs
    from miniroberta.modeling.tokenizer import read_vocab
    import torch
    from miniroberta.modeling.config import preset
    from miniroberta.modeling.bert import build_mlm
    from miniroberta.interop.export import export_checkpoint
    from miniroberta.interop.checkpoint import save_native
    vocab = DATA / "vocab" / "google_zh_vocab.txt"
    mc = preset("tiny", vocab_size=len(read_vocab(str(vocab))))
    torch.manual_seed(0)
    model = build_mlm(mc)
    save_native(str(tmp_path / "m.bin"), model.state_dict(), mc, {"step": 0})
    export_checkpoint(str(tmp_path / "m.bin"), str(tmp_path / "hf"), vocab_path=str(vocab), type="mlm", overwrite=True)
    monkeypatch.setitem(qs.COMPARE, "max_train_examples", 64)
    monkeypatch.setitem(qs.COMPARE, "epochs_num", 1)
    res = qs.compare_with_random_init(str(tmp_path / "hf"), str(DATA / "tasks"), 1, "fp32")
    assert set(res) == {"pretrained", "random_init", "n_dev", "wall_time_s"}
    assert 0.0 <= res["pretrained"] <= 1.0 and 0.0 <= res["random_init"] <= 1.0
    assert res["n_dev"] == 1200       # chnsenticorp's whole dev set: the noise margin printed beside the result


def test_the_run_is_sized_from_the_median_timed_step_so_one_stall_does_not_resize_it(tmp_path, monkeypatch):
    """--minutes: CALIBRATION_STEPS real steps are timed; the median step after two warm-ups, x SLOWDOWN,
    sizes the run (a stalled step, e.g. another process, would shrink a mean-sized run)."""
    import miniroberta.pretrain.launch as launch
    from miniroberta.study import quickstart as qs
    seen = {}

    def fake_train(cfg, opts):
        seen["stop"] = opts.stop_after_steps
        path = tmp_path / "metrics.jsonl"
        t, lines = 0.0, []
        for step in range(1, opts.stop_after_steps + 1):
            t += 1.0 if step <= 2 else 3.0 if step == 10 else 0.1     # slow warm-up, one 3 s stall
            lines.append(json.dumps({"event": "report", "step": step, "elapsed_s": t}))
        path.write_text("\n".join(lines) + "\n")
        return {"metrics_path": str(path)}

    monkeypatch.setattr(launch, "train", fake_train)
    base = launch.PretrainConfig(dataset_path="d", output_model_path=str(tmp_path / "m.bin"), total_steps=1)
    steps = qs._steps_for_budget(base, 60.0, threads=1)
    assert seen["stop"] == qs.CALIBRATION_STEPS == 24
    assert steps == int(60.0 / (0.1 * qs.SLOWDOWN))       # 461; the mean step (0.22 s) would give 208


@pytest.mark.parametrize("fit,want", [(10_000, 40), (25, 25)])
def test_the_default_is_a_step_count_unless_this_machine_is_too_slow_for_it(tmp_path, capsys, monkeypatch, fit, want):
    """No --steps/--minutes: DEFAULT_STEPS (the same model everywhere), or what fits MAX_DEFAULT_MINUTES here."""
    from miniroberta.study import quickstart as qs
    budgets = []
    monkeypatch.setattr(qs, "DEFAULT_STEPS", 40)
    monkeypatch.setattr(qs, "_steps_for_budget", lambda base, seconds, threads: budgets.append(seconds) or fit)
    rc = cli.main(["quickstart", "--out", str(tmp_path / "qs"), "--batch_size", "4", "--seq_length", "32",
                   "--max_bytes", "60000", "--threads", "1", "--no_progress", "--no_compare", "--corpus",
                   str(DATA / "corpus" / "reviews_waimai_10k.txt"), "--vocab", str(DATA / "vocab" / "google_zh_vocab.txt")])
    assert rc == 0 and budgets == [qs.MAX_DEFAULT_MINUTES * 60.0]
    s = json.loads((tmp_path / "qs" / "summary.json").read_text(encoding="utf-8"))
    assert s["steps"] == want
    err = capsys.readouterr().err
    assert ("the default;" in err) == (want == 40) and ("fewer than the default 40" in err) == (want == 25)
