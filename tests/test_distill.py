"""Task distillation (``miniroberta distill``): the loss, the teacher-logit cache, agreement with
the teacher, transfer texts, exact resume and the report row. Tiny models on a generated task."""
from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _ft_data as D  # noqa: E402

from miniroberta import cli  # noqa: E402
from miniroberta.finetune import FinetuneConfig, run_finetune  # noqa: E402
from miniroberta.modeling.loss import soft_target_loss_sum  # noqa: E402

FAST = dict(epochs_num=3, batch_size=16, learning_rate=2e-3, seq_length=32, dropout=0.0, warmup=0.1,
            progress=False, threads=1, precision="fp32")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    vocab = D.write_vocab(root / "vocab.txt")
    n_vocab = len(vocab.read_text(encoding="utf-8").split())
    model = D.tiny_model(root / "tiny.safetensors", n_vocab)
    task = D.write_single(root / "task")
    cache = root / "cache"
    # the teacher: the tiny model fine-tuned on the task
    run_finetune(FinetuneConfig(pretrained_model_path=str(model), vocab_path=str(vocab),
                                train_path=str(task / "train.tsv"), dev_path=str(task / "dev.tsv"),
                                output_dir=str(root / "teacher"), cache_dir=str(cache), seed=3, **FAST))
    rng = random.Random(9)
    transfer = root / "transfer.txt"
    transfer.write_text("".join(D._sent(rng, rng.choice("好坏")) + "\n" for _ in range(128)), encoding="utf-8")
    return dict(root=root, vocab=str(vocab), model=str(model), task=task, teacher=str(root / "teacher" / "model"),
                cache=str(cache), transfer=str(transfer))


def _cfg(env, out, **kw):
    return FinetuneConfig(**{**dict(config_path=str(Path(env["teacher"]) / "config.json"), vocab_path=env["vocab"],
                                    train_path=str(env["task"] / "train.tsv"), dev_path=str(env["task"] / "dev.tsv"),
                                    output_dir=str(out), cache_dir=env["cache"], seed=11, teacher_path=env["teacher"],
                                    temperature=2.0, run_test=False), **FAST, **kw})


def test_soft_target_loss_equals_a_direct_implementation():
    torch.manual_seed(0)
    s, t = torch.randn(5, 3), torch.randn(5, 3)
    gold = torch.tensor([0, 2, -1, 1, -1])
    temp, a = 3.0, 0.3

    def softmax(x):
        e = np.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)
    sn, tn = s.double().numpy(), t.double().numpy()
    soft = -(softmax(tn / temp) * np.log(softmax(sn / temp))).sum() * temp * temp
    lab = gold.numpy() >= 0
    hard = -np.log(softmax(sn)[lab, gold.numpy()[lab]]).sum()
    assert float(soft_target_loss_sum(s, t, gold, temp, a)) == pytest.approx((1 - a) * soft + a * hard, rel=1e-6)
    assert float(soft_target_loss_sum(s, t, gold, temp, 0.0)) == pytest.approx(soft, rel=1e-6)
    # its gradient vanishes where the student equals the teacher (and alpha = 0)
    x = t.clone().requires_grad_(True)
    soft_target_loss_sum(x, t, gold, temp, 0.0).backward()
    assert x.grad.abs().max() < 1e-6


def test_distilled_student_agrees_with_the_teacher(env, tmp_path):
    from miniroberta.finetune.inference import predict_logits
    from miniroberta.interop.checkpoint import load_finetuned
    from miniroberta.data import tasks
    from miniroberta.modeling.tokenizer import BertTokenizer
    res = run_finetune(_cfg(env, tmp_path / "s"))
    assert res["model"]["teacher"]["sha256"] and res["model"]["distill"]["temperature"] == 2.0
    teacher, _ = load_finetuned(env["teacher"])
    student, _ = load_finetuned(str(tmp_path / "s" / "model"))
    tok = BertTokenizer(env["vocab"])
    dev = tasks.read_examples(str(env["task"] / "dev.tsv"))
    enc = tasks.encode_data(tok, dev, 32)
    pt = predict_logits(teacher, enc, 64, torch.device("cpu"), tok.pad_id).argmax(1)
    ps = predict_logits(student, enc, 64, torch.device("cpu"), tok.pad_id).argmax(1)
    agree = float((pt == ps).mean())
    assert agree > 0.85, agree          # chance is ~0.5 on two balanced classes


def test_teacher_logits_are_cached_reused_and_invalidated(env, tmp_path):
    from miniroberta.data import tasks
    from miniroberta.finetune.teacher import teacher_logits
    from miniroberta.modeling.tokenizer import BertTokenizer
    tok = BertTokenizer(env["vocab"])
    data = tasks.read_examples(str(env["task"] / "train.tsv"))
    enc = tasks.encode_data(tok, data, 32)
    cache = str(tmp_path / "c")
    a, ia = teacher_logits(env["teacher"], enc, ["0", "1"], tok.sha256, tok.pad_id, cache, torch.device("cpu"))
    b, ib = teacher_logits(env["teacher"], enc, ["0", "1"], tok.sha256, tok.pad_id, cache, torch.device("cpu"))
    assert not ia["cached"] and ib["cached"] and ia["cache"] == ib["cache"] and np.array_equal(a, b)
    assert isinstance(b, np.memmap)
    # other data -> another entry
    c, ic = teacher_logits(env["teacher"], enc.subset(np.arange(10)), ["0", "1"], tok.sha256, tok.pad_id, cache,
                           torch.device("cpu"))
    assert not ic["cached"] and ic["cache"] != ia["cache"] and np.allclose(c, a[:10], atol=1e-5)
    # the label order is the student's: swapped columns
    d, _ = teacher_logits(env["teacher"], enc, ["1", "0"], tok.sha256, tok.pad_id, cache, torch.device("cpu"))
    assert np.allclose(np.asarray(d)[:, ::-1], a)
    # another teacher (other weights) -> computed again
    other = tmp_path / "teacher2"
    import shutil
    shutil.copytree(env["teacher"], other)
    from safetensors.torch import load_file, save_file
    sd = load_file(str(other / "model.safetensors"))
    sd["classifier.bias"] = sd["classifier.bias"] + 1.0
    save_file(sd, str(other / "model.safetensors"), metadata={"format": "pt"})
    man = other / "integrity.json"   # the manifest would (rightly) call the edited file damaged
    if man.exists():
        man.unlink()
    e, ie = teacher_logits(str(other), enc, ["0", "1"], tok.sha256, tok.pad_id, cache, torch.device("cpu"))
    assert not ie["cached"] and ie["cache"] != ia["cache"]
    with pytest.raises(ValueError, match="labels"):
        teacher_logits(env["teacher"], enc, ["0", "1", "2"], tok.sha256, tok.pad_id, cache, torch.device("cpu"))


def test_transfer_texts_join_the_training_set(env, tmp_path):
    res = run_finetune(_cfg(env, tmp_path / "t", transfer_path=env["transfer"], epochs_num=1))
    assert res["n_train"] == 256 + 128 and res["model"]["teacher"]["n_transfer"] == 128
    bad = tmp_path / "bad.txt"
    bad.write_text("一二三\n甲\t乙\n", encoding="utf-8")
    from miniroberta.data.tasks import TaskDataError
    with pytest.raises(TaskDataError, match=r"bad.txt:2"):
        run_finetune(_cfg(env, tmp_path / "b", transfer_path=str(bad), epochs_num=1))
    with pytest.raises(ValueError, match="needs a --teacher"):
        FinetuneConfig(task="chnsenticorp", config_path="tiny", transfer_path=env["transfer"]).validate()


def test_distillation_resume_is_exact(env, tmp_path):
    from safetensors.torch import load_file
    full = run_finetune(_cfg(env, tmp_path / "full"))
    part = run_finetune(_cfg(env, tmp_path / "part", stop_after_steps=21))
    assert part["stopped"] == "stop_after_steps"
    rest = run_finetune(_cfg(env, tmp_path / "part", resume=True))
    assert [e["dev_acc"] for e in rest["epochs"]] == [e["dev_acc"] for e in full["epochs"]]
    a = load_file(str(tmp_path / "full" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "part" / "model" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="temperature"):
        run_finetune(_cfg(env, tmp_path / "part", resume=True, temperature=1.0))


def test_distill_cli_and_the_report_row(env, tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli.main(["distill", "--teacher", env["teacher"], "--student", env["model"], "--vocab_path", env["vocab"],
                     "--train_path", str(env["task"] / "train.tsv"), "--dev_path", str(env["task"] / "dev.tsv"),
                     "--output_dir", str(out), "--epochs_num", "1", "--batch_size", "16", "--learning_rate", "2e-3",
                     "--seq_length", "32", "--threads", "1", "--precision", "fp32", "--cache_dir", env["cache"],
                     "--no_progress"]) == 0
    res = json.loads((out / "result.json").read_text())
    assert res["model"]["pretrained_model_path"] == os.path.abspath(env["model"])
    from miniroberta.finetune.report import build_report
    rep = build_report([str(out), str(env["root"] / "teacher")], reference=False)
    names = [r["name"] for r in rep["rows"]]
    assert any("← " in n and "(PD)" in n for n in names), names
    assert {r["kind"] for r in rep["rows"]} == {"pretrained", "distilled"}


def test_distill_student_preset_gets_the_random_init_learning_rate(env, tmp_path, monkeypatch):
    """`distill --student tiny` is random init: the learning rate measured for it (1e-3), not the pretrained 2e-5
    it once ended at chance with; a checkpoint as the student keeps 2e-5; --teacher is required."""
    import argparse
    from miniroberta.finetune import distill
    seen = []
    monkeypatch.setattr(distill, "run_finetune", lambda cfg: seen.append(cfg.resolved()[0]) or {"stopped": "x",
                        "task": "t", "steps": 0, "state_path": None})
    for student, lr, field in (("tiny", 1e-3, "config_path"), (env["model"], 2e-5, "pretrained_model_path")):
        p = argparse.ArgumentParser()
        distill.configure(p)
        assert distill.run(p.parse_args(["--teacher", env["teacher"], "--student", student, "--task",
                                         "chnsenticorp"])) == 0
        assert seen[-1].learning_rate == lr and getattr(seen[-1], field) == student
    with pytest.raises(SystemExit):
        p.parse_args(["--student", "tiny", "--task", "chnsenticorp"])
