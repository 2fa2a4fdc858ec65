"""Pretraining engine: schedule, data order, DDP parity, exact resume, refusals, NaN, CLI lines.

Tiny models (H=32) on a tiny synthetic dataset built with ``dataset.write_dataset``; every
run uses one torch thread so the results do not depend on how busy the machine is.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from miniroberta import cli
from miniroberta.interop.checkpoint import load_weights
from miniroberta.data.dataset import write_dataset
from miniroberta.pretrain.launch import PretrainConfig, PretrainError, RunOptions, configs_from_args, configure, train
from miniroberta.engine.optim import lr_factor
from miniroberta.pretrain.batches import Stream
from miniroberta.utils import sha256_file

SPECIALS = ["[PAD]", "[unused1]", "[unused2]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
MODEL = {"vocab_size": 127, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
         "intermediate_size": 64, "max_position_embeddings": 64}


def make_vocab(path, n_ordinary=120):
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(SPECIALS + [chr(0x4E00 + i) for i in range(n_ordinary)]) + "\n")
    return str(path)


def make_dataset(path, vocab_path, n=64, seq_length=32, seed=0):
    vocab = open(vocab_path, encoding="utf-8").read().split("\n")[:-1]
    V, first = len(vocab), len(SPECIALS)
    rng = np.random.default_rng(seed)
    inst = []
    for _ in range(n):
        L = int(rng.integers(4, seq_length - 1))
        start = first + int(rng.integers(0, 12))  # skewed unigram distribution: quick to learn
        inst.append([vocab.index("[CLS]")] + [first + (start - first + k) % (V - first) for k in range(L)]
                    + [vocab.index("[SEP]")])
    m = dict(vocab_sha256=sha256_file(vocab_path), vocab_size=V, seq_length=seq_length)
    return write_dataset(str(path), inst, m)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("pretrain")
    vocab = make_vocab(d / "vocab.txt")
    ds = make_dataset(d / "data_seq32_dataset.pt", vocab)
    ds2 = make_dataset(d / "other_seq32_dataset.pt", vocab, seed=1)
    cfgp = d / "model.json"
    cfgp.write_text(json.dumps(MODEL))
    return {"dir": d, "vocab": vocab, "ds": ds, "ds2": ds2, "config": str(cfgp)}


def cfg_for(data, out, **kw):
    base = dict(dataset_path=data["ds"], vocab_path=data["vocab"], config_path=data["config"],
                output_model_path=str(out), total_steps=8, batch_size=8, learning_rate=1e-3, warmup=0.25,
                precision="fp32")
    base.update(kw)
    return PretrainConfig(**base)


def opts(**kw):
    base = dict(progress=False, report_steps=4, save_checkpoint_steps=100, threads=1, num_workers=1)
    base.update(kw)
    return RunOptions(**base)


def weights(path):
    return load_weights(path)[1]


def max_diff(a, b):
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


# ------------------------------------------------------------------------ pure pieces
def test_lr_schedule_warmup_then_linear_decay():
    f = [lr_factor(s, 100, 0.1) for s in range(100)]
    assert f[0] == 0.0 and f[5] == pytest.approx(0.5) and f[10] == pytest.approx(1.0)
    assert f[55] == pytest.approx(0.5) and f[99] == pytest.approx(1 / 90)
    assert lr_factor(0, 10, 0.0) == 1.0


def test_stream_is_a_seeded_permutation_per_epoch_split_across_ranks():
    s = Stream(10, seed=3)
    idx, ep = s.items(0, 30)
    for e in range(3):
        assert sorted(idx[ep == e].tolist()) == list(range(10))
    assert not np.array_equal(idx[:10], idx[10:20])
    # rank r of W with batch B takes the r-th slice of the global batch: same set as W=1 with W*B
    B, W = 3, 2
    for j in range(4):
        single = s.items(j * W * B, W * B)[0]
        ranks = np.concatenate([s.items((j * W + r) * B, B)[0] for r in range(W)])
        assert np.array_equal(single, ranks)
    assert np.array_equal(Stream(10, 3).items(0, 30)[0], idx)


# ------------------------------------------------------------------------ training runs
def test_training_writes_checkpoints_metrics_and_loss_falls(data, tmp_path):
    cfg = cfg_for(data, tmp_path / "m.bin", total_steps=40, learning_rate=1e-2, warmup=0.1)
    ev = make_dataset(tmp_path / "eval_seq32_dataset.pt", data["vocab"], n=16, seed=9)
    res = train(cfg, opts(report_steps=10, save_checkpoint_steps=25, eval_dataset_path=ev))
    assert res["steps"] == 40 and res["checkpoints"] == [f"{tmp_path}/m.bin-25", f"{tmp_path}/m.bin-40"]
    recs = [json.loads(l) for l in open(res["metrics_path"])]
    reports = [r for r in recs if r["event"] == "report"]
    assert [r["step"] for r in reports] == [10, 20, 30, 40]
    assert reports[-1]["loss"] < reports[0]["loss"] - 0.3
    for k in ("accuracy", "lr", "real_tokens_per_s", "padded_tokens_per_s", "mfu", "eta_s", "eval_loss", "eval_accuracy"):
        assert k in reports[-1]
    assert reports[-1]["padded_tokens_per_s"] >= reports[-1]["real_tokens_per_s"] > 0
    cfg_m, sd, meta = load_weights(res["last_checkpoint"])
    assert cfg_m.hidden_size == 32 and meta["step"] == 40 and meta["seq_length"] == 32
    assert meta["dataset"] == "data_seq32_dataset.pt" and meta["tokens_seen"] == res["tokens_seen"] > 0
    assert meta["final_loss"] == pytest.approx(reports[-1]["loss"]) and meta["batch_size"] == 8
    assert meta["eval_loss"] == pytest.approx(reports[-1]["eval_loss"])
    assert os.path.isfile(res["state_path"])


def test_two_gloo_processes_equal_one_process_with_twice_the_batch(data, tmp_path):
    kw = dict(total_steps=4, dropout=0.0, warmup=0.0)
    r2 = train(cfg_for(data, tmp_path / "ddp" / "m.bin", batch_size=4, world_size=2, **kw), opts(report_steps=2))
    r1 = train(cfg_for(data, tmp_path / "one" / "m.bin", batch_size=8, **kw), opts(report_steps=2))
    a, b = weights(r2["last_checkpoint"]), weights(r1["last_checkpoint"])
    init = weights(r1["last_checkpoint"])
    assert max_diff(a, b) < 2e-5
    assert r2["final_loss"] == pytest.approx(r1["final_loss"], rel=1e-5)
    assert r2["tokens_seen"] == r1["tokens_seen"]
    del init


def test_accumulation_equals_larger_batch(data, tmp_path):
    kw = dict(total_steps=4, dropout=0.0, warmup=0.0)
    ra = train(cfg_for(data, tmp_path / "acc" / "m.bin", batch_size=4, accumulation_steps=2, **kw), opts())
    rb = train(cfg_for(data, tmp_path / "big" / "m.bin", batch_size=8, **kw), opts())
    assert max_diff(weights(ra["last_checkpoint"]), weights(rb["last_checkpoint"])) < 2e-5


def test_stop_and_resume_is_bit_identical(data, tmp_path):
    # dropout on (model default 0.1): the per-rank RNG state must be restored too
    full = train(cfg_for(data, tmp_path / "full" / "m.bin", dropout=0.1), opts())
    part = train(cfg_for(data, tmp_path / "part" / "m.bin", dropout=0.1), opts(stop_after_steps=3))
    assert part["stopped"] == "stop_after_steps" and part["steps"] == 3
    assert part["last_checkpoint"].endswith("m.bin-3")
    rest = train(cfg_for(data, tmp_path / "part" / "m.bin", dropout=0.1), opts(resume=True))
    assert rest["steps"] == 8
    assert max_diff(weights(full["last_checkpoint"]), weights(rest["last_checkpoint"])) == 0.0
    assert rest["tokens_seen"] == full["tokens_seen"]


def test_sigterm_writes_checkpoint_exits_cleanly_and_resume_matches(data, tmp_path):
    out = tmp_path / "sig" / "m.bin"
    n = 40
    cmd = [sys.executable, "-m", "miniroberta.cli", "pretrain", "--dataset_path", data["ds"], "--vocab_path",
           data["vocab"], "--config_path", data["config"], "--output_model_path", str(out), "--total_steps", str(n),
           "--batch_size", "8", "--learning_rate", "1e-3", "--warmup", "0.25", "--report_steps", "1",
           "--save_checkpoint_steps", "1000", "--threads", "1", "--no_progress", "--debug_step_sleep", "0.1",
           "--precision", "fp32"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = f"{out}.metrics.jsonl"
    t0 = time.time()
    while time.time() - t0 < 120:
        if os.path.exists(metrics) and sum(1 for l in open(metrics) if '"report"' in l) >= 3:
            break
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    st = torch.load(f"{out}.state.pt", weights_only=True)
    k = st["step"]
    assert 3 <= k < n and os.path.isfile(f"{out}-{k}"), err
    assert "stopping at step" in err
    rest = train(cfg_for(data, out, total_steps=n), opts(resume=True))
    full = train(cfg_for(data, tmp_path / "full" / "m.bin", total_steps=n), opts())
    assert max_diff(weights(full["last_checkpoint"]), weights(rest["last_checkpoint"])) <= 1e-6


def test_resume_refused_on_other_dataset_or_config(data, tmp_path):
    out = tmp_path / "m.bin"
    train(cfg_for(data, out, total_steps=2), opts())
    with pytest.raises(PretrainError, match="dataset"):
        train(cfg_for(data, out, total_steps=2, dataset_path=data["ds2"]), opts(resume=True))
    bigger = tmp_path / "big.json"
    bigger.write_text(json.dumps({**MODEL, "num_hidden_layers": 3}))
    with pytest.raises(PretrainError, match="num_hidden_layers"):
        train(cfg_for(data, out, total_steps=2, config_path=str(bigger)), opts(resume=True))
    with pytest.raises(PretrainError, match="learning_rate"):
        train(cfg_for(data, out, total_steps=2, learning_rate=5e-4), opts(resume=True))
    with pytest.raises(FileNotFoundError, match="no training state"):
        train(cfg_for(data, tmp_path / "none.bin"), opts(resume=True))


def test_resume_with_another_pretrained_model_path_is_refused_not_ignored(data, tmp_path):
    """--pretrained_model_path only matters when a run starts: naming another one on --resume is refused."""
    out = tmp_path / "r" / "m.bin"
    cfg = PretrainConfig(dataset_path=data["ds"], output_model_path=str(out), vocab_path=data["vocab"],
                         config_path=data["config"], total_steps=6, batch_size=4, learning_rate=1e-3)
    first = train(cfg, RunOptions(report_steps=3, save_checkpoint_steps=3, progress=False, stop_after_steps=3))
    other = dict(cfg.__dict__, pretrained_model_path=first["last_checkpoint"])
    with pytest.raises(PretrainError, match="is used only when a run starts.*random initialisation"):
        train(PretrainConfig(**other), RunOptions(report_steps=3, save_checkpoint_steps=3, progress=False,
                                                  resume=True))
    assert train(cfg, RunOptions(report_steps=3, save_checkpoint_steps=3, progress=False, resume=True))["steps"] == 6


def test_nan_stops_with_clear_error_and_last_good_checkpoint_intact(data, tmp_path):
    out = tmp_path / "m.bin"
    with pytest.raises(PretrainError, match="NaN/inf.*step 5.*m.bin-4"):
        train(cfg_for(data, out), opts(save_checkpoint_steps=2, debug_nan_at_step=5))
    assert os.path.isfile(f"{out}-4") and not os.path.exists(f"{out}-6")
    sd = weights(f"{out}-4")
    assert all(torch.isfinite(v).all() for v in sd.values())
    assert torch.load(f"{out}.state.pt", weights_only=True)["step"] == 4


def test_pretrained_model_path_loads_weights_only(data, tmp_path):
    first = train(cfg_for(data, tmp_path / "s1" / "m.bin", total_steps=3), opts())
    # a tiny learning rate: after one update the weights are still those of the checkpoint
    res = train(cfg_for(data, tmp_path / "s2" / "m.bin", total_steps=1, learning_rate=1e-12, warmup=0.0,
                        pretrained_model_path=first["last_checkpoint"]), opts())
    assert max_diff(weights(first["last_checkpoint"]), weights(res["last_checkpoint"])) < 1e-8
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({**MODEL, "hidden_size": 64, "intermediate_size": 128}))
    with pytest.raises(Exception, match="shape"):
        train(cfg_for(data, tmp_path / "s3" / "m.bin", config_path=str(wrong),
                      pretrained_model_path=first["last_checkpoint"]), opts())


def test_vocab_must_match_dataset(data, tmp_path):
    other = make_vocab(tmp_path / "v2.txt", n_ordinary=121)
    with pytest.raises(ValueError, match="different vocab"):
        train(cfg_for(data, tmp_path / "m.bin", vocab_path=other), opts())


# ------------------------------------------------------------------------ the reference command lines
STAGE1 = ("--dataset_path cluecorpussmall_seq128_dataset.pt --vocab_path models/google_zh_vocab.txt "
          "--config_path models/bert/medium_config.json "
          "--output_model_path models/cluecorpussmall_roberta_medium_seq128_model.bin "
          "--world_size 8 --gpu_ranks 0 1 2 3 4 5 6 7 --total_steps 1000000 --save_checkpoint_steps 100000 "
          "--report_steps 50000 --learning_rate 1e-4 --batch_size 64 --data_processor mlm --target mlm")
STAGE2 = ("--dataset_path cluecorpussmall_seq512_dataset.pt --vocab_path models/google_zh_vocab.txt "
          "--pretrained_model_path models/cluecorpussmall_roberta_medium_seq128_model.bin-1000000 "
          "--config_path models/bert/medium_config.json "
          "--output_model_path models/cluecorpussmall_roberta_medium_seq512_model.bin "
          "--world_size 8 --gpu_ranks 0 1 2 3 4 5 6 7 --total_steps 250000 --save_checkpoint_steps 50000 "
          "--report_steps 10000 --learning_rate 5e-5 --batch_size 16 --data_processor mlm --target mlm")


def parse(line):
    import argparse
    p = argparse.ArgumentParser()
    configure(p)
    return configs_from_args(p.parse_args(cli.normalize_argv(line.split())))


def test_reference_command_lines_parse():
    c1, o1 = parse(STAGE1)
    assert (c1.world_size, c1.batch_size, c1.total_steps, c1.learning_rate, c1.global_batch) == (8, 64, 1000000, 1e-4, 512)
    assert o1.gpu_ranks == list(range(8)) and o1.save_checkpoint_steps == 100000 and o1.report_steps == 50000
    assert c1.warmup == 0.1 and c1.config_path == "models/bert/medium_config.json"
    c2, o2 = parse(STAGE2)
    assert c2.pretrained_model_path.endswith("seq128_model.bin-1000000") and c2.batch_size == 16
    assert c2.learning_rate == 5e-5 and c2.total_steps == 250000


@pytest.mark.skipif(torch.cuda.device_count() >= 8, reason="this machine has 8 GPUs")
def test_stage1_line_without_8_gpus_gives_a_clear_error(tmp_path, monkeypatch, capsys):
    # lay the reference's files out under their names, then run the stage-1 line verbatim
    monkeypatch.chdir(tmp_path)
    os.makedirs("models/bert")
    vocab = make_vocab(tmp_path / "models" / "google_zh_vocab.txt")
    make_dataset(tmp_path / "cluecorpussmall_seq128_dataset.pt", vocab)
    with open("models/bert/medium_config.json", "w") as f:
        json.dump({"emb_size": 512, "feedforward_size": 2048, "hidden_size": 512, "hidden_act": "gelu",
                   "heads_num": 8, "layers_num": 8, "max_seq_length": 512, "dropout": 0.1,
                   "data_processor": "mlm", "embedding": ["word", "pos", "seg"], "encoder": "transformer",
                   "mask": "fully_visible", "target": ["mlm"], "tie_weights": True}, f)
    rc = cli.main(["pretrain"] + STAGE1.split())
    err = capsys.readouterr().err
    assert rc == 2 and "8 GPU(s)" in err and "drop --gpu_ranks" in err


def test_unsupported_target_is_refused():
    with pytest.raises(ValueError, match="MLM target only"):
        parse(STAGE1.replace("--target mlm", "--target bert"))


def test_unpadded_forward_equals_the_model_forward():
    from miniroberta.modeling.config import ModelConfig
    from miniroberta.data.masking import MaskingConfig, SpecialIds, collate
    from miniroberta.modeling.bert import build_mlm
    from miniroberta.modeling.unpad import UnpaddedMLM
    vocab = {t: i for i, t in enumerate(SPECIALS + [f"w{i}" for i in range(120)])}
    sp = SpecialIds.from_vocab(vocab)
    rng = np.random.default_rng(0)
    inst = [np.r_[sp.cls, rng.integers(7, 127, int(rng.integers(2, 30))), sp.sep] for _ in range(6)]
    b = collate(inst, range(6), 0, sp, MaskingConfig(), pad_to_multiple_of=8)
    assert b.has_padding and b.real_index is not None
    t = b.to_torch()
    torch.manual_seed(0)
    model = build_mlm(ModelConfig(**MODEL), init="uer", seed=0)
    model.eval()
    ref = model(t["input_ids"], t["attention_mask"], None, masked_positions=t["masked_positions"]).logits
    got = UnpaddedMLM(model).eval()(t["input_ids"], t["attention_mask"], t["masked_positions"], t["real_index"],
                                    t["masked_real_index"])
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=1e-5)
    # gradients agree too
    model.train()
    for mod in model.modules():
        if isinstance(mod, torch.nn.Dropout):
            mod.p = 0.0
    for sa in (layer.attention.self for layer in model.bert.encoder.layer):
        sa.dropout_p = 0.0
    g1 = torch.autograd.grad(model(t["input_ids"], t["attention_mask"], None,
                                   masked_positions=t["masked_positions"]).logits.square().sum(),
                             list(model.parameters()))
    g2 = torch.autograd.grad(UnpaddedMLM(model)(t["input_ids"], t["attention_mask"], t["masked_positions"],
                                                t["real_index"], t["masked_real_index"]).square().sum(),
                             list(model.parameters()))
    for a, c in zip(g1, g2):
        torch.testing.assert_close(c, a, atol=1e-4, rtol=1e-4)


def test_time_budget_stops_cleanly_with_a_checkpoint(data, tmp_path):
    res = train(cfg_for(data, tmp_path / "m.bin", total_steps=50), opts(time_budget_s=1e-6))
    assert res["stopped"] == "time_budget" and res["steps"] == 1
    assert res["last_checkpoint"].endswith("m.bin-1") and os.path.isfile(res["last_checkpoint"])


def test_whole_word_dataset_trains_and_missing_boundaries_are_refused(data, tmp_path):
    vocab = data["vocab"]
    inst = [[4] + list(range(7, 7 + n)) + [5] for n in (5, 9, 12, 20)] * 4
    ws = [[1] + [int(i % 3 == 0) for i in range(len(x) - 2)] + [1] for x in inst]
    m = dict(vocab_sha256=sha256_file(vocab), vocab_size=127, seq_length=32)
    wwm = write_dataset(str(tmp_path / "wwm_dataset"), inst, m, word_starts=ws)
    res = train(cfg_for(data, tmp_path / "w" / "m.bin", dataset_path=wwm, total_steps=2), opts())
    assert res["steps"] == 2 and res["final_loss"] > 0
    with pytest.raises(ValueError, match="word boundaries"):
        train(cfg_for(data, tmp_path / "x" / "m.bin", whole_word_masking=True), opts())


def test_rerun_on_an_earlier_runs_output_is_refused_unless_resume_or_overwrite(data, tmp_path):
    from miniroberta.outputs import OutputExists
    out = tmp_path / "m.bin"
    train(cfg_for(data, out, total_steps=4), opts(save_checkpoint_steps=2))
    with pytest.raises(OutputExists, match="--resume.*--overwrite"):
        train(cfg_for(data, out, total_steps=4), opts())
    res = train(cfg_for(data, out, total_steps=4), opts(overwrite=True))
    assert res["steps"] == 4 and any(p.name.startswith("m.bin.state.pt.old-") for p in tmp_path.iterdir())
    # checkpoints present but the state gone: --resume auto is a refusal with the fix, not a fresh start
    os.unlink(f"{out}.state.pt")
    with pytest.raises(FileNotFoundError, match="--pretrained_model_path .*m.bin-4"):
        train(cfg_for(data, out, total_steps=4), opts(resume="auto"))


def test_a_damaged_training_state_is_refused_naming_the_file(data, tmp_path):
    out = tmp_path / "m.bin"
    train(cfg_for(data, out, total_steps=4), opts(stop_after_steps=2))
    st = f"{out}.state.pt"
    raw = bytearray(open(st, "rb").read())
    raw[len(raw) // 2] ^= 0xFF
    open(st, "wb").write(bytes(raw))
    with pytest.raises(PretrainError, match="state.pt"):
        train(cfg_for(data, out, total_steps=4), opts(resume=True))


def test_bf16_run_resumes_bit_identically(data, tmp_path):
    """bf16 keeps fp32 masters in the state: a stopped bf16 run resumes to the same weights."""
    full = train(cfg_for(data, tmp_path / "full" / "m.bin", precision="bf16"), opts())
    part = train(cfg_for(data, tmp_path / "part" / "m.bin", precision="bf16"), opts(stop_after_steps=3))
    assert part["precision"] == "bf16"
    with pytest.raises(PretrainError, match="precision bf16"):
        train(cfg_for(data, tmp_path / "part" / "m.bin", precision="fp32"), opts(resume=True))
    rest = train(cfg_for(data, tmp_path / "part" / "m.bin", precision="auto"), opts(resume=True))
    assert max_diff(weights(full["last_checkpoint"]), weights(rest["last_checkpoint"])) == 0.0


def test_mlm_kl_is_zero_for_equal_logits_and_positive_otherwise():
    from miniroberta.modeling.loss import kl_div_sum as mlm_kl_sum
    torch.manual_seed(0)
    s, t = torch.randn(6, 30), torch.randn(6, 30)
    assert float(mlm_kl_sum(s, s, 2.0)) == pytest.approx(0.0, abs=1e-6)
    direct = sum(float((torch.softmax(t[i] / 2, -1) * (torch.log_softmax(t[i] / 2, -1)
                                                          - torch.log_softmax(s[i] / 2, -1))).sum()) for i in range(6))
    assert float(mlm_kl_sum(s, t, 2.0)) == pytest.approx(4.0 * direct, rel=1e-5)


def test_pretrain_with_the_student_as_its_own_teacher_adds_nothing(data, tmp_path):
    """General distillation: with the student equal to the teacher (no dropout, first update) the KL
    term is zero, so the first report's loss equals plain MLM's; another teacher changes it."""
    base = train(cfg_for(data, tmp_path / "t" / "m.bin", total_steps=2, dropout=0.0), opts(report_steps=1))
    teacher = base["last_checkpoint"]

    def first_loss(out, **kw):
        r = train(cfg_for(data, out, total_steps=1, dropout=0.0, pretrained_model_path=teacher, **kw),
                  opts(report_steps=1))
        recs = [json.loads(l) for l in open(r["metrics_path"])]
        return next(x["loss"] for x in recs if x.get("event") == "report")
    plain = first_loss(tmp_path / "a" / "m.bin")
    self_taught = first_loss(tmp_path / "b" / "m.bin", teacher_path=teacher, distill_alpha=1.0)
    assert self_taught == pytest.approx(plain, abs=1e-5)
    other = train(cfg_for(data, tmp_path / "o" / "m.bin", total_steps=3, dropout=0.0, seed=99), opts())
    distilled = first_loss(tmp_path / "c" / "m.bin", teacher_path=other["last_checkpoint"], distill_alpha=1.0)
    assert distilled > plain + 1e-3


def test_distillation_with_the_padded_forward_equals_the_unpadded_one(data, tmp_path):
    """`--teacher` with `--no_unpad`: the teacher runs the padded forward like the student (it got the unpadded
    forward's positional arguments before: masked positions as token types), and the loss matches `--unpad`."""
    teacher = train(cfg_for(data, tmp_path / "t" / "m.bin", total_steps=3, dropout=0.0, seed=99), opts())

    def first_loss(out, unpad):
        r = train(cfg_for(data, out, total_steps=1, dropout=0.0, teacher_path=teacher["last_checkpoint"],
                          distill_alpha=1.0), opts(report_steps=1, unpad=unpad))
        recs = [json.loads(l) for l in open(r["metrics_path"])]
        return next(x["loss"] for x in recs if x.get("event") == "report")
    assert first_loss(tmp_path / "p" / "m.bin", unpad=False) == pytest.approx(
        first_loss(tmp_path / "u" / "m.bin", unpad=True), abs=1e-4)


def test_general_distillation_under_ddp_and_resume(data, tmp_path):
    """`pretrain --teacher` in two gloo processes equals one process with twice the batch (the teacher
    sees each rank's masked batch), and a stopped distillation run resumes bit-identically."""
    teacher = train(cfg_for(data, tmp_path / "t" / "m.bin", total_steps=3, dropout=0.0, seed=99),
                    opts())["last_checkpoint"]
    kw = dict(total_steps=4, dropout=0.0, warmup=0.0, teacher_path=teacher, distill_alpha=0.5,
              distill_temperature=2.0)
    r2 = train(cfg_for(data, tmp_path / "ddp" / "m.bin", batch_size=4, world_size=2, **kw), opts(report_steps=2))
    r1 = train(cfg_for(data, tmp_path / "one" / "m.bin", batch_size=8, **kw), opts(report_steps=2))
    assert max_diff(weights(r2["last_checkpoint"]), weights(r1["last_checkpoint"])) < 2e-5
    assert r2["final_loss"] == pytest.approx(r1["final_loss"], rel=1e-5)
    plain = train(cfg_for(data, tmp_path / "plain" / "m.bin", batch_size=8, total_steps=4, dropout=0.0, warmup=0.0),
                  opts(report_steps=2))
    assert abs(plain["final_loss"] - r1["final_loss"]) > 1e-3      # the KL term is in the loss
    kw["dropout"] = 0.1
    full = train(cfg_for(data, tmp_path / "full" / "m.bin", **kw), opts())
    part = train(cfg_for(data, tmp_path / "part" / "m.bin", **kw), opts(stop_after_steps=2))
    assert part["steps"] == 2
    rest = train(cfg_for(data, tmp_path / "part" / "m.bin", **kw), opts(resume=True))
    assert max_diff(weights(full["last_checkpoint"]), weights(rest["last_checkpoint"])) == 0.0


def test_bad_settings_are_refused_together_before_any_work(tmp_path, capsys):
    """Every bad value is named in one error (--learning_rate inf used to be accepted)."""
    rc = cli.main(["pretrain", "--dataset_path", str(tmp_path / "none"), "--output_model_path",
                   str(tmp_path / "m.bin"), "--learning_rate", "inf", "--warmup", "1.5", "--mask_rate", "0",
                   "--total_steps", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and "4 problems with the pretraining settings" in err
    for want in ("--learning_rate: must be a finite number", "--warmup: must be <= 1", "--mask_rate: must be > 0",
                 "--total_steps: must be >= 1"):
        assert want in err
    assert not (tmp_path / "m.bin.state.pt").exists()
