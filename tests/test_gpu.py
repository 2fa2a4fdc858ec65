"""Checks that need a CUDA device (marker ``gpu``; skipped cleanly without one, deselected by default).

Run on a GPU machine with ``python -m pytest -q -m gpu tests/test_gpu.py``: the engine's CUDA paths --
deterministic bf16 choice, CPU/GPU parity of the model, the padding-free forward, a pretraining run that
is stopped and resumed, and two-rank DDP (NCCL) equal to one rank with twice the batch when two GPUs exist.
"""
from __future__ import annotations

import json

import pytest
import torch

from test_pretrain import MODEL, make_dataset, make_vocab

from miniroberta.engine.precision import resolve_precision
from miniroberta.interop.checkpoint import load_weights
from miniroberta.modeling.bert import build_mlm
from miniroberta.modeling.config import ModelConfig
from miniroberta.pretrain.launch import PretrainConfig, RunOptions, train

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("gpu")
    vocab = make_vocab(d / "vocab.txt")
    ds = make_dataset(d / "data_seq32", vocab, n=256)
    (d / "model.json").write_text(json.dumps(MODEL))
    return {"dir": d, "vocab": vocab, "ds": ds, "config": str(d / "model.json")}


def _cfg(data, out, **kw):
    base = dict(dataset_path=data["ds"], output_model_path=str(out), vocab_path=data["vocab"],
                config_path=data["config"], total_steps=24, batch_size=16, learning_rate=3e-3, warmup=0.1, seed=3)
    return PretrainConfig(**{**base, **kw})


def test_auto_precision_is_bf16_on_a_bf16_gpu_every_time():
    dev = torch.device("cuda")
    got = {resolve_precision("auto", dev) for _ in range(5)}
    assert len(got) == 1
    kind, why = got.pop()
    assert kind == ("bf16" if torch.cuda.is_bf16_supported() else "fp32") and why.startswith("auto:")


def test_the_model_on_cuda_equals_the_model_on_cpu():
    torch.backends.cuda.matmul.allow_tf32 = False
    mc = ModelConfig(**MODEL)
    model = build_mlm(mc, seed=0).eval()
    ids = torch.randint(7, 127, (4, 20))
    mask = torch.ones_like(ids)
    mask[1, 15:] = 0
    with torch.no_grad():
        cpu = model(ids, mask).logits
        gpu = model.cuda()(ids.cuda(), mask.cuda()).logits.cpu()
    torch.testing.assert_close(gpu[mask.bool()], cpu[mask.bool()], atol=1e-4, rtol=1e-4)


def test_pretraining_on_cuda_learns_and_a_stopped_run_resumes(data, tmp_path):
    full = train(_cfg(data, tmp_path / "a" / "m.bin"), RunOptions(device="cuda", report_steps=4,
                                                                 save_checkpoint_steps=100, progress=False))
    assert full["precision"] in ("bf16", "fp32") and full["steps"] == 24
    recs = [json.loads(x) for x in open(full["metrics_path"], encoding="utf-8")]
    losses = [r["loss"] for r in recs if r.get("event") == "report"]
    assert losses[-1] < losses[0] - 0.25
    opts = dict(device="cuda", report_steps=4, save_checkpoint_steps=100, progress=False)
    part = train(_cfg(data, tmp_path / "b" / "m.bin"), RunOptions(**opts, stop_after_steps=10))
    assert part["stopped"] and part["steps"] == 10
    done = train(_cfg(data, tmp_path / "b" / "m.bin"), RunOptions(**opts, resume=True))
    assert done["steps"] == 24
    _, a, _ = load_weights(full["last_checkpoint"])
    _, b, _ = load_weights(done["last_checkpoint"])
    # CUDA's embedding backward accumulates with atomics, so the two runs agree to float noise, not bits
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 5e-3, worst


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_two_nccl_ranks_equal_one_rank_with_twice_the_batch(data, tmp_path):
    one = train(_cfg(data, tmp_path / "one" / "m.bin", batch_size=16, precision="fp32"),
                RunOptions(device="cuda", report_steps=6, save_checkpoint_steps=100, progress=False))
    two = train(_cfg(data, tmp_path / "two" / "m.bin", batch_size=8, world_size=2, precision="fp32"),
                RunOptions(device="cuda", report_steps=6, save_checkpoint_steps=100, progress=False))
    _, a, _ = load_weights(one["last_checkpoint"])
    _, b, _ = load_weights(two["last_checkpoint"])
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-3, worst
