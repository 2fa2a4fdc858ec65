"""Fault injection (marker ``faults``): kill -9 at the save points of preprocess and convert, flipped
bytes in every kind of checkpoint, concurrent writers, a full disk, a stopped dry run.

Kills are deterministic: a wrapper process counts calls of ``os.fsync`` / ``os.replace`` (the atomic
writers' save points) and SIGKILLs itself at the N-th one, so every point of a save is hit, not a
random sample of them.
"""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from miniroberta import integrity, utils
from miniroberta.interop.checkpoint import CheckpointError, load_weights, save_native
from miniroberta.modeling.config import preset

pytestmark = pytest.mark.faults

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

KILLER = """
import os, signal, sys
n, name = int(os.environ["KILL_AT"]), os.environ["KILL_ON"]
real, count = getattr(os, name), [0]
def hook(*a, **k):
    count[0] += 1
    if count[0] == n:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*a, **k)
setattr(os, name, hook)
from miniroberta.cli import main
sys.exit(main(sys.argv[1:]))
"""


def env(**kw) -> dict[str, str]:
    e = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "src"), **kw)
    return e


def run_cli(args: list[str], kill_on: str | None = None, kill_at: int = 0, **kw) -> subprocess.CompletedProcess:
    extra = {"KILL_ON": kill_on, "KILL_AT": str(kill_at)} if kill_on else {"KILL_ON": "getpid", "KILL_AT": "0"}
    return subprocess.run([sys.executable, "-c", KILLER, *args], env=env(**extra), capture_output=True, text=True,
                          timeout=300, **kw)


def leftovers(d: Path) -> list[str]:
    return sorted(n for n in os.listdir(d) if n.endswith((".tmp", ".old")))


def tree(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def write_vocab(path: Path, n: int = 64) -> Path:
    toks = SPECIAL + [chr(0x4E00 + i) for i in range(n - len(SPECIAL))]
    path.write_text("".join(t + "\n" for t in toks), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def corpus_and_vocab(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    vocab = write_vocab(d / "vocab.txt")
    rng = np.random.default_rng(0)
    lines = ["".join(chr(0x4E00 + int(i)) for i in rng.integers(0, 59, rng.integers(1, 300))) for _ in range(400)]
    (d / "c.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return d / "c.txt", vocab


def dataset_arrays(p: Path) -> tuple[bytes, bytes]:
    return (p / "tokens.npy").read_bytes(), (p / "offsets.npy").read_bytes()


# ------------------------------------------------------------------ kill -9 during saves
@pytest.mark.parametrize("kill_on,kill_at", [("replace", 1), ("fsync", 2), ("fsync", 3), ("fsync", 4), ("fsync", 5),
                                             ("replace", 2)])
def test_preprocess_killed_at_a_save_point_then_rerun(tmp_path, corpus_and_vocab, kill_on, kill_at):
    corpus, vocab = corpus_and_vocab
    args = lambda out: ["preprocess", "--corpus_path", str(corpus), "--vocab_path", str(vocab), "--dataset_path",
                        str(out), "--seq_length", "64", "--no_progress"]
    ref = tmp_path / "ref" / "ds"
    assert run_cli(args(ref)).returncode == 0
    out = tmp_path / "run" / "ds"
    r = run_cli(args(out), kill_on, kill_at)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    if not out.exists():
        left = leftovers(out.parent)                  # the killed run's temp folder (if it got that far) ...
        r = run_cli(args(out))
        assert r.returncode == 0, r.stderr[-2000:]
        if left:
            assert f"removed {len(left)} temp file(s) left by stopped runs" in r.stderr
    assert leftovers(out.parent) == []                # ... is removed by the rerun
    assert dataset_arrays(out) == dataset_arrays(ref)


@pytest.mark.parametrize("target,kill_on,kill_at", [("hf", "fsync", 4), ("hf", "replace", 2),
                                                    ("native.safetensors", "replace", 2),
                                                    ("native.safetensors", "replace", 3)])
def test_convert_killed_at_a_save_point_then_rerun(tmp_path, target, kill_on, kill_at):
    cfg = preset("tiny", vocab_size=64)
    from miniroberta.modeling.bert import BertForMaskedLM
    torch.manual_seed(0)
    src = tmp_path / "src.safetensors"
    save_native(src, BertForMaskedLM(cfg).state_dict(), cfg, {"step": 3})
    vocab = write_vocab(tmp_path / "vocab.txt")
    args = lambda out: ["convert", "--input_model_path", str(src), "--output_model_path", str(out),
                        "--vocab_path", str(vocab)]
    ref = tmp_path / "ref" / target
    assert run_cli(args(ref)).returncode == 0
    out = tmp_path / "run" / target
    r = run_cli(args(out), kill_on, kill_at)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    complete = out.is_dir() or Path(integrity.sidecar(str(out))).exists()
    if not complete:
        if out.exists():                                  # killed between the rename and the manifest
            assert load_weights(out)                      # intact, loads unverified
            out.unlink()
        r = run_cli(args(out))
        assert r.returncode == 0, r.stderr[-2000:]
    assert leftovers(out.parent) == []
    assert same_weights(out, ref)
    if out.is_dir():                                  # safetensors' header order is not byte-stable across processes
        skip = ("model.safetensors", integrity.DIR_MANIFEST)
        assert {k: v for k, v in tree(out).items() if k not in skip} == \
            {k: v for k, v in tree(ref).items() if k not in skip}


def same_weights(a: Path, b: Path) -> bool:
    ca, sa, ma = load_weights(a)                      # verified against its manifest
    cb, sb, mb = load_weights(b)
    return ca == cb and ma == mb and sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------ flipped bytes
def _checkpoints(tmp_path: Path) -> dict[str, tuple[Path, callable]]:
    from miniroberta.interop.convert import convert
    from miniroberta.modeling.bert import BertForMaskedLM
    cfg = preset("tiny", vocab_size=64)
    torch.manual_seed(0)
    native = tmp_path / "m.safetensors"
    save_native(native, BertForMaskedLM(cfg).state_dict(), cfg, {"step": 1})
    vocab = str(write_vocab(tmp_path / "v.txt"))
    convert(str(native), str(tmp_path / "hf"), vocab_path=vocab)
    convert(str(native), str(tmp_path / "uer" / "model.bin-1"), vocab_path=vocab)
    convert(str(native), str(tmp_path / "hfbin" / "pytorch_model.bin"), vocab_path=vocab)
    state = tmp_path / "m.safetensors.state.pt"
    integrity.atomic_torch_save({"optimizer": {"exp_avg": torch.randn(100)}, "step": 1}, state)
    return {"native": (native, lambda: load_weights(native)),
            "hf-dir": (tmp_path / "hf" / "model.safetensors", lambda: load_weights(tmp_path / "hf")),
            "uer": (tmp_path / "uer" / "model.bin-1", lambda: load_weights(tmp_path / "uer" / "model.bin-1")),
            "hf-bin": (tmp_path / "hfbin" / "pytorch_model.bin", lambda: load_weights(tmp_path / "hfbin")),
            "state": (state, lambda: integrity.verified_torch_load(state))}


@pytest.mark.parametrize("where", [0.001, 0.5, 0.999])
def test_flipped_byte_in_any_checkpoint_is_refused_naming_it(tmp_path, where):
    for kind, (path, load) in _checkpoints(tmp_path / str(where)).items():
        load()                                            # intact: loads
        b = bytearray(path.read_bytes())
        b[min(len(b) - 1, int(len(b) * where))] ^= 0x10
        path.write_bytes(bytes(b))
        with pytest.raises((integrity.IntegrityError, CheckpointError)) as e:
            load()
        assert str(path) in str(e.value) and "damaged" in str(e.value), kind


# ------------------------------------------------------------------ concurrent writers
def test_two_concurrent_preprocess_runs_one_refused(tmp_path, corpus_and_vocab):
    corpus, vocab = corpus_and_vocab
    cmd = [sys.executable, "-m", "miniroberta.cli", "preprocess", "--corpus_path", str(corpus), "--vocab_path",
           str(vocab), "--dataset_path", str(tmp_path / "ds"), "--no_progress"]
    procs = [subprocess.Popen(cmd, env=env(), stderr=subprocess.PIPE, text=True) for _ in range(2)]
    res = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    for p in procs:
        p.stderr.close()
    assert sorted(rc for rc, _ in res) == [0, 2], res
    err = next(e for rc, e in res if rc == 2)
    assert "is being written by pid" in err or "already exists" in err
    assert leftovers(tmp_path) == []


HOLD = """
import sys
from miniroberta.outputs import claim_output
c = claim_output(sys.argv[1], command="first")
print("held", flush=True)
sys.stdin.readline()
"""


@pytest.mark.parametrize("command", ["preprocess", "convert", "grid"])
def test_second_writer_of_a_command_exits_at_once(tmp_path, corpus_and_vocab, command):
    corpus, vocab = corpus_and_vocab
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], env=env(), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        args = {"preprocess": ["--corpus_path", str(corpus), "--vocab_path", str(vocab), "--dataset_path", str(out)],
                "convert": ["--input_model_path", str(tmp_path / "missing.safetensors"), "--output_model_path",
                            str(out) + "/"],
                "grid": ["--config_path", "tiny", "--vocab_path", str(vocab), "--tasks", "chnsenticorp",
                         "--data_dir", str(tmp_path), "--out", str(out)]}[command]
        t0 = time.time()
        r = run_cli([command, *args])
        assert r.returncode == 2 and f"is being written by pid {holder.pid}" in r.stderr, r.stderr[-2000:]
        assert time.time() - t0 < 60
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
        holder.stdout.close()


# ------------------------------------------------------------------ full disk
def test_full_disk_during_a_checkpoint_save_keeps_the_previous_one(tmp_path, monkeypatch):
    from miniroberta.modeling.bert import BertForMaskedLM
    cfg = preset("tiny", vocab_size=64)
    p = tmp_path / "m.safetensors"
    save_native(p, BertForMaskedLM(cfg).state_dict(), cfg, {"step": 1})
    before = p.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(utils.OutputWriteError) as e:
        save_native(p, BertForMaskedLM(cfg).state_dict(), cfg, {"step": 2})
    assert str(p) in str(e.value) and "no space left" in str(e.value) and "is intact" in str(e.value)
    monkeypatch.undo()
    assert p.read_bytes() == before and leftovers(tmp_path) == []
    assert integrity.verify_file(p) is True and load_weights(p)[2]["step"] == 1


def test_full_disk_during_preprocess_leaves_the_previous_dataset(tmp_path, corpus_and_vocab, monkeypatch):
    from miniroberta.data.preprocess import build_dataset
    corpus, vocab = corpus_and_vocab
    build_dataset(corpus, vocab, tmp_path / "ds", progress=False)
    ref = dataset_arrays(tmp_path / "ds")
    real = os.fsync
    calls = [0]

    def full_later(fd):
        calls[0] += 1
        if calls[0] >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)
    monkeypatch.setattr(os, "fsync", full_later)
    with pytest.raises(utils.OutputWriteError, match="no space left"):
        build_dataset(corpus, vocab, tmp_path / "ds2", progress=False)
    monkeypatch.undo()
    assert dataset_arrays(tmp_path / "ds") == ref and not (tmp_path / "ds2").exists()
    assert leftovers(tmp_path) == []


# ------------------------------------------------------------------ a stopped dry run
@pytest.mark.skipif(not (DATA / "vocab" / "google_zh_vocab.txt").is_file(), reason="../shared/data not present")
def test_stopped_dry_run_leaves_nothing_behind(tmp_path):
    tmp, cwd = tmp_path / "tmp", tmp_path / "cwd"
    tmp.mkdir()
    cwd.mkdir()
    cmd = [sys.executable, "-m", "miniroberta.cli", "reproduce", "--preset", "cpu-smoke", "--dry_run",
           "--out", str(cwd / "runs"), "--corpus", str(DATA / "corpus"),
           "--vocab", str(DATA / "vocab" / "google_zh_vocab.txt"), "--data_dir", str(DATA / "tasks")]
    p = subprocess.Popen(cmd, cwd=cwd, env=env(TMPDIR=str(tmp)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and not any(tmp.glob("miniroberta-dryrun-*/calibration-dataset")):
        time.sleep(0.02)                                  # until it is writing in its temp folder
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=120)
    p.stderr.close()
    assert list(tmp.iterdir()) == [] and list(cwd.iterdir()) == []


@pytest.mark.parametrize("processes", [1, 2])
def test_sigterm_during_preprocess_removes_its_temp_folder_at_once(tmp_path, corpus_and_vocab, processes):
    corpus, vocab = corpus_and_vocab
    big = tmp_path / "big.txt"
    big.write_bytes(corpus.read_bytes() * 200)              # ~35 MB: seconds of work
    out = tmp_path / "out" / "ds"
    cmd = [sys.executable, "-m", "miniroberta.cli", "preprocess", "--corpus_path", str(big), "--vocab_path",
           str(vocab), "--dataset_path", str(out), "--processes_num", str(processes), "--no_progress"]
    p = subprocess.Popen(cmd, env=env(), stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not (out.parent.is_dir() and leftovers(out.parent)):
        time.sleep(0.02)
    time.sleep(0.3)
    p.send_signal(signal.SIGTERM)
    rc = p.wait(timeout=120)
    p.stderr.close()
    if rc == 0:                                              # finished before the signal: nothing to check
        pytest.skip("preprocess finished before SIGTERM arrived")
    assert rc == 128 + signal.SIGTERM and leftovers(out.parent) == [] and not out.exists()
