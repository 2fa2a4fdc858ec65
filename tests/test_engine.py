"""The training engine's pieces: fused losses, dropout masks, precision, optimizer groups, resume."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from miniroberta.engine.optim import OptimConfig, lr_factor, param_groups
from miniroberta.engine.precision import Precision, resolve_precision
from miniroberta.engine.trainer import Trainer
from miniroberta.modeling.bert import build_mlm, dropout, dropout_mask
from miniroberta.modeling.config import ModelConfig
from miniroberta.modeling.loss import cross_entropy_sum, linear_cross_entropy_sum

MC = ModelConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 max_position_embeddings=32)


@pytest.mark.parametrize("M", [0, 1, 31, 70])
def test_fused_losses_equal_cross_entropy_in_float64(M):
    torch.manual_seed(M)
    V, H = 300, 16
    x0, w0, b0 = torch.randn(M, H, dtype=torch.float64), torch.randn(V, H, dtype=torch.float64), \
        torch.randn(V, dtype=torch.float64)
    labels = torch.randint(0, V, (M,))
    ref_in = [a.clone().requires_grad_() for a in (x0, w0, b0)]
    logits_ref = ref_in[0] @ ref_in[1].t() + ref_in[2]
    ref = F.cross_entropy(logits_ref, labels, reduction="sum")
    (ref * 0.3).backward()
    got_in = [a.float().requires_grad_() for a in (x0, w0, b0)]
    loss, correct = linear_cross_entropy_sum(*got_in, labels)
    (loss * 0.3).backward()
    assert loss.dtype == torch.float32 and float(loss.detach()) == pytest.approx(float(ref.detach()), rel=1e-5, abs=1e-5)
    assert int(correct) == int((logits_ref.argmax(-1) == labels).sum())
    for g, r in zip(got_in, ref_in):
        torch.testing.assert_close(g.grad.double(), r.grad, atol=1e-5, rtol=1e-4)
    lg = (x0 @ w0.t() + b0).float().requires_grad_()
    loss2, correct2 = cross_entropy_sum(lg, labels)
    (loss2 * 0.3).backward()
    assert float(loss2.detach()) == pytest.approx(float(ref.detach()), rel=1e-5, abs=1e-5) and int(correct2) == int(correct)
    if M:
        torch.testing.assert_close(lg.grad.double(), (torch.softmax(x0 @ w0.t() + b0, -1)
                                                      - F.one_hot(labels, V)) * 0.3, atol=1e-6, rtol=1e-4)


def test_bf16_loss_is_the_float32_loss_of_the_bf16_logits():
    torch.manual_seed(0)
    logits = (torch.randn(40, 500) * 4).bfloat16().requires_grad_()
    labels = torch.randint(0, 500, (40,))
    loss, _ = cross_entropy_sum(logits, labels)
    ref = F.cross_entropy(logits.detach().float(), labels, reduction="sum")
    assert float(loss.detach()) == pytest.approx(float(ref.detach()), rel=1e-5)
    loss.backward()
    assert logits.grad.dtype == torch.bfloat16


def test_dropout_masks_rate_scale_and_seeding():
    torch.manual_seed(3)
    m = dropout_mask((1000, 1000), 0.1, torch.float32, torch.device("cpu"))
    vals = torch.unique(m).tolist()
    assert len(vals) == 2 and vals[0] == 0.0 and vals[1] == pytest.approx(1 / 0.9)
    assert float((m == 0).float().mean()) == pytest.approx(round(0.1 * 65536) / 65536, abs=2e-3)
    torch.manual_seed(3)
    assert torch.equal(m, dropout_mask((1000, 1000), 0.1, torch.float32, torch.device("cpu")))
    x = torch.randn(64, 64, requires_grad=True)
    assert dropout(x, 0.1, False) is x and dropout(x, 0.0, True) is x
    y = dropout(x, 0.5, True)
    y.sum().backward()
    torch.testing.assert_close(x.grad, (y.detach() != 0).float() * 2.0)


def test_weight_decay_rule_matches_the_name_rule_for_bert():
    model = build_mlm(MC)
    decay, no_decay = param_groups(model.named_parameters(), 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    by_name = {n for n in names.values() if "bias" in n or "LayerNorm" in n}
    assert {names[id(p)] for p in no_decay["params"]} == by_name
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0


def test_schedule_warmup_then_linear_decay():
    f = [lr_factor(s, 100, 0.1) for s in range(100)]
    assert f[0] == 0.0 and f[10] == 1.0 and f[55] == pytest.approx(0.5) and f[99] == pytest.approx(1 / 90)


def test_bf16_precision_keeps_fp32_masters_and_exports_them():
    model = build_mlm(MC, seed=0)
    ref = {k: v.clone() for k, v in model.state_dict().items()}
    prec = Precision("bf16", model)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    sd = prec.state_dict()
    assert all(sd[k].dtype == torch.float32 and torch.equal(sd[k], ref[k]) for k in ref)
    assert sd["cls.predictions.decoder.weight"] is not None  # tied key present, equal to the embeddings
    torch.testing.assert_close(sd["cls.predictions.decoder.weight"], sd["bert.embeddings.word_embeddings.weight"])


def test_resolve_precision_says_why():
    kind, why = resolve_precision("auto", torch.device("cpu"))
    assert kind in ("fp32", "bf16") and why
    assert resolve_precision("fp32", torch.device("cpu")) == ("fp32", "requested")
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp16", torch.device("cpu"))


def test_auto_precision_follows_the_cpu_flags_not_a_timing(monkeypatch):
    """The same command on the same machine trains the same way, however busy the machine is: ``auto`` reads
    the CPU's flags and times nothing (a timing under load picked fp32 one run and bf16 the next)."""
    from miniroberta.engine import device, precision
    flags = {"avx2": True, "avx512f": True, "avx512_bf16": False, "amx_bf16": False, "amx_tile": False,
             "avx512_vnni": True}
    info = {"model": "test CPU", "cores": 2, "flags": flags, "torch_cpu_capability": "AVX512"}
    monkeypatch.setattr(device, "cpu_info", lambda: info)
    monkeypatch.setattr(precision, "cpu_info", lambda: info)
    monkeypatch.setattr(torch, "matmul", lambda *a, **k: (_ for _ in ()).throw(AssertionError("timed a matmul")))
    assert [resolve_precision("auto", torch.device("cpu"))[0] for _ in range(5)] == ["fp32"] * 5
    flags["avx512_bf16"] = True
    kind, why = resolve_precision("auto", torch.device("cpu"))
    assert kind == "bf16" and "AVX512-BF16" in why
    flags.update(avx512_bf16=False, amx_bf16=True)
    assert resolve_precision("auto", torch.device("cpu")) == ("bf16", "auto: this CPU (test CPU) computes bf16 "
                                                              "natively (AMX)")


class _Batch:
    def __init__(self, x, y):
        self.x, self.y = x, y
        self.units, self.real_tokens, self.padded_tokens = len(y), len(y), len(y)


class _Task:
    name = "toy"

    def loss(self, model, b):
        logits = model(b.x.to(next(model.parameters()).dtype)).float()
        return F.cross_entropy(logits, b.y, reduction="sum"), (logits.argmax(-1) == b.y).sum()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_trainer_state_roundtrip_continues_identically(precision):
    """Two updates, state_dict, two more == a fresh trainer loaded from that state doing the same two."""
    torch.manual_seed(0)
    batches = [_Batch(torch.randn(8, 6), torch.randint(0, 3, (8,))) for _ in range(4)]

    def model():
        torch.manual_seed(1)
        return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))

    def trainer(m):
        return Trainer(m, optim=OptimConfig(learning_rate=1e-2, warmup=0.25), total_steps=4,
                       device=torch.device("cpu"), precision=precision)
    t1 = trainer(model())
    for b in batches[:2]:
        t1.train_step([b], _Task())
    st = copy.deepcopy(t1.state_dict(tokens_seen=16))   # as if written to disk
    for b in batches[2:]:
        t1.train_step([b], _Task())
    m2 = model()
    m2.load_state_dict(st["model"])   # the fp32 masters, before the Trainer casts the model
    t2 = trainer(m2)
    t2.load_state_dict(st)
    assert t2.step == 2
    for b in batches[2:]:
        t2.train_step([b], _Task())
    a, c = t1.precision.state_dict(), t2.precision.state_dict()
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_shape_buckets_change_nothing_but_the_shapes():
    """Bucketed packing (filler rows for kernel reuse) gives the loss and gradients of the plain
    padding-free forward: filler rows get exactly zero gradient."""
    import numpy as np

    from miniroberta.data.masking import MaskingConfig, SpecialIds, collate
    from miniroberta.modeling.unpad import UnpaddedMLM
    vocab = {t: i for i, t in enumerate(["[PAD]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
                                        + [f"w{i}" for i in range(91)])}
    sp = SpecialIds.from_vocab(vocab)
    rng = np.random.default_rng(0)
    inst = [np.r_[sp.cls, rng.integers(6, 97, int(rng.integers(3, 30))), sp.sep] for _ in range(7)]
    b = collate(inst, range(7), 0, sp, MaskingConfig(), pad_to_multiple_of=8)
    t = b.to_torch()
    cfg = ModelConfig(**{**MC.to_dict(), "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0})
    model = build_mlm(cfg, seed=0).train()
    out = {}
    for bucket in (False, True):
        model.zero_grad()
        loss, correct = UnpaddedMLM(model, bucket=bucket).train()(
            t["input_ids"], t["attention_mask"], t["masked_positions"], t["real_index"], t["masked_real_index"],
            labels=t["labels"])
        loss.backward()
        out[bucket] = (float(loss.detach()), int(correct), {n: p.grad.clone() for n, p in model.named_parameters()})
    assert out[True][0] == pytest.approx(out[False][0], rel=1e-6) and out[True][1] == out[False][1]
    for n, g in out[False][2].items():
        torch.testing.assert_close(out[True][2][n], g, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("fused", [True, False])
def test_adamw_without_bias_correction_matches_the_reference_update(fused):
    """correct_bias=False on torch's AdamW == the reference AdamW (UER-py/HF optimization.py,
    correct_bias=False), written out directly: m, v moments, p -= lr*m/(sqrt(v)+eps), then decay."""
    from miniroberta.engine.optim import OptimConfig, build_adamw, lr_factor, param_groups, set_lr
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(8, 5))
    b = torch.nn.Parameter(torch.randn(5))
    cfg = OptimConfig(learning_rate=1e-3, warmup=0.25, weight_decay=0.01, adam_eps=1e-6, correct_bias=False)
    opt = build_adamw(param_groups([("w", w), ("b", b)], cfg.weight_decay), cfg)
    if not fused:
        opt = torch.optim.AdamW(param_groups([("w", w), ("b", b)], cfg.weight_decay), lr=cfg.learning_rate,
                                betas=cfg.betas, eps=cfg.adam_eps)
    ref = [w.detach().clone(), b.detach().clone()]
    m = [torch.zeros_like(x) for x in ref]
    v = [torch.zeros_like(x) for x in ref]
    total = 12
    for step in range(total):
        grads = [torch.randn_like(x) for x in ref]
        lr = cfg.learning_rate * lr_factor(step, total, cfg.warmup)
        w.grad, b.grad = grads[0].clone(), grads[1].clone()
        set_lr(opt, lr, cfg, step + 1)
        opt.step()
        for i, (g, wd) in enumerate(zip(grads, (cfg.weight_decay, 0.0))):
            m[i].mul_(0.9).add_(g, alpha=0.1)
            v[i].mul_(0.999).addcmul_(g, g, value=0.001)
            ref[i] = ref[i] - lr * m[i] / (v[i].sqrt() + cfg.adam_eps)
            ref[i] = ref[i] - lr * wd * ref[i]
    # (the reference decays after the Adam step, torch before it: lr^2*wd-sized differences)
    torch.testing.assert_close(w.detach(), ref[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(b.detach(), ref[1], rtol=0, atol=1e-6)


def test_bias_correction_changes_the_first_updates():
    from miniroberta.engine.optim import OptimConfig, build_adamw, param_groups, set_lr
    out = {}
    for cb in (True, False):
        torch.manual_seed(0)
        p = torch.nn.Parameter(torch.zeros(4, 4))
        cfg = OptimConfig(learning_rate=1e-3, weight_decay=0.0, correct_bias=cb)
        opt = build_adamw(param_groups([("p", p)], 0.0), cfg)
        p.grad = torch.ones(4, 4)
        set_lr(opt, 1e-3, cfg, 1)
        opt.step()
        out[cb] = float(p.detach().abs().max())
    # corrected: lr * 1 ; uncorrected: lr * 0.1 / (sqrt(0.001) + eps) = lr * 3.16
    assert out[True] == pytest.approx(1e-3, rel=1e-3)
    assert out[False] == pytest.approx(1e-3 * 0.1 / (0.001 ** 0.5 + 1e-6), rel=1e-3)


def test_thread_policy_keeps_the_users_setting_and_sizes_threads_from_the_affinity_mask(monkeypatch):
    """`import miniroberta` (before torch starts OpenMP) sets a short OpenMP spin count unless the user chose a
    wait policy or a spin count; threads = the cores this process may use, shared among one command's processes."""
    import os
    import subprocess
    import sys
    from miniroberta.engine import threads
    code = "import miniroberta, os; print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'))"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}

    def policy(**extra):
        return subprocess.run([sys.executable, "-c", code], env={**env, **extra}, capture_output=True,
                              text=True).stdout.strip()
    assert policy() == f"{threads.DEFAULT_SPINCOUNT} None"
    assert policy(OMP_WAIT_POLICY="ACTIVE") == "None ACTIVE"
    assert policy(OMP_WAIT_POLICY="") == "None"     # an empty setting is the user's choice too: no spin count added
    assert policy(GOMP_SPINCOUNT="20k") == "20k None"
    monkeypatch.setattr(threads, "available_cores", lambda: [0, 1, 2, 3])
    assert threads.default_threads() == 4 and threads.default_threads(share=2) == 2
    assert threads.default_threads(share=8) == 1
    before = torch.get_num_threads()
    try:
        info = threads.configure_threads(None, share=4)
        assert info["threads"] == 1 == torch.get_num_threads() and info["cores"] == 4
        assert threads.configure_threads(3)["threads"] == 3 == torch.get_num_threads()
        with pytest.raises(ValueError, match="--threads"):
            threads.configure_threads(-1)
    finally:
        torch.set_num_threads(before)


def test_pin_gives_disjoint_slices_of_the_available_cores(monkeypatch):
    from miniroberta.engine import threads
    got = []
    monkeypatch.setattr(threads, "available_cores", lambda: [2, 3, 5, 7])
    monkeypatch.setattr(threads.os, "sched_setaffinity", lambda pid, cores: got.append(list(cores)))
    assert [threads.pin(i, 2) for i in range(2)] == [[2, 3], [5, 7]]
    assert [threads.pin(i, 4) for i in range(4)] == [[2], [3], [5], [7]]
    assert threads.pin(5, 4) == [3]             # more processes than cores: slices wrap around
    assert got[:2] == [[2, 3], [5, 7]]
