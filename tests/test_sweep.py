"""``miniroberta sweep``: runs at one token budget, held-out scoring, resumable, refuses a held-out
file that is also trained on."""
from __future__ import annotations

import json

import numpy as np
import pytest

from miniroberta import cli
from miniroberta.study.sweep import expand_variants, parse_settings, run_name

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPECIALS = ["[PAD]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
CHARS = [chr(0x4E00 + i) for i in range(60)]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("sweep")
    (d / "vocab.txt").write_text("\n".join(SPECIALS + CHARS) + "\n", encoding="utf-8")
    rng = np.random.default_rng(0)

    def text(n):
        return "\n".join("".join(CHARS[(s + k) % 60] for k in range(int(rng.integers(20, 90))))
                         for s in rng.integers(0, 60, n)) + "\n"
    (d / "train.txt").write_text(text(300), encoding="utf-8")
    (d / "heldout.txt").write_text(text(40), encoding="utf-8")
    (d / "model.json").write_text(json.dumps({"vocab_size": len(SPECIALS) + 60, "hidden_size": 32,
                                              "num_hidden_layers": 1, "num_attention_heads": 2,
                                              "intermediate_size": 64, "max_position_embeddings": 128}))
    return d


def test_variants_are_the_base_plus_one_change_each():
    base = {"learning_rate": 5e-4, "batch_size": 32, "warmup": 0.05, "seq_length": 128, "mask_rate": 0.15, "init": "uer"}
    runs = expand_variants(base, ["learning_rate=1e-3,5e-4"], ["batch_size=64,learning_rate=7e-4"])
    assert runs[0] == base and len(runs) == 3      # the duplicate of the base is dropped
    assert runs[1]["learning_rate"] == 1e-3 and runs[1]["batch_size"] == 32
    assert runs[2]["batch_size"] == 64 and runs[2]["learning_rate"] == 7e-4
    assert run_name(runs[2], base) == "batch_size=64,learning_rate=0.0007" and run_name(base, base) == "base"
    with pytest.raises(ValueError, match="KEY"):
        parse_settings(["lr=1"], "--base")


def test_sweep_runs_at_one_budget_scores_held_out_and_resumes(env, capsys):
    out = env / "out"
    argv = ["sweep", "--out", str(out), "--corpus", str(env / "train.txt"), "--heldout", str(env / "heldout.txt"),
            "--vocab", str(env / "vocab.txt"), "--config", str(env / "model.json"), "--budget_tokens", "6000",
            "--base", "batch_size=8", "learning_rate=1e-3", "--vary", "learning_rate=3e-3", "--evals", "2",
            "--heldout_windows", "16", "--threads", "1", "--precision", "fp32"]
    assert cli.main(argv) == 0
    rows = [json.loads(line) for line in (out / "sweep.jsonl").read_text().splitlines()]
    assert [r["name"] for r in rows] == ["base", "learning_rate=0.003"]
    for r in rows:
        assert np.isfinite(r["heldout_loss"]) and r["curve"][0]["step"] == 0
        assert r["curve"][-1]["eval_loss"] < r["curve"][0]["eval_loss"]     # it learned something
        # the budget is real tokens: within one step of it
        assert abs(r["tokens"] - 6000) <= 8 * 128
    assert rows[0]["steps"] == rows[1]["steps"]
    md = (out / "sweep.md").read_text()
    assert "| base |" in md and "held-out loss" in md
    # a second run finds both finished and trains nothing
    assert cli.main(argv) == 0
    assert len((out / "sweep.jsonl").read_text().splitlines()) == 2


def test_sweep_refuses_a_held_out_file_in_the_training_corpus(env, capsys):
    assert cli.main(["sweep", "--out", str(env / "bad"), "--corpus", str(env / "train.txt"), str(env / "heldout.txt"),
                  "--heldout", str(env / "heldout.txt"), "--vocab", str(env / "vocab.txt"), "--budget_tokens", "100"]) != 0
    assert "must not be trained on" in capsys.readouterr().err
    assert not (env / "bad" / "sweep.jsonl").exists()
