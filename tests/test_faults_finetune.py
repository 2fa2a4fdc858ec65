"""Fault injection for fine-tuning, distillation, the grid and predict (marker ``faults``; seconds each).

What a careful operator does to these commands -- change the data under a stopped run, delete or damage its
state, flip bytes in the caches, kill the grid with -9 or TERM, kill a run after a periodic save -- and what
each must answer: a one-line error naming the cause and the fix, a rebuilt cache that says so, workers that
die with their grid, a state that resumes bit-identically.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _ft_data as D  # noqa: E402
from _serve_models import classifier_dir, small_vocab  # noqa: E402

from miniroberta import cli, integrity  # noqa: E402
from miniroberta.data import tasks  # noqa: E402
from miniroberta.finetune import FinetuneConfig, FinetuneError, GridConfig, run_finetune  # noqa: E402
from miniroberta.finetune.grid import run_grid  # noqa: E402
from miniroberta.modeling.tokenizer import BertTokenizer  # noqa: E402

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("one_torch_thread")]

REPO = Path(__file__).resolve().parents[1]
FAST = dict(epochs_num=2, batch_size=16, learning_rate=2e-3, seq_length=16, dropout=0.1, progress=False, threads=1,
            precision="fp32")
MAIN = "import sys; from miniroberta.cli import main; sys.exit(main(sys.argv[1:]))"
KILL_AFTER_SAVE = """
import os, signal, sys
from miniroberta.engine import trainer
n, real, count = int(os.environ["KILL_AFTER_SAVE"]), trainer.Trainer.save, [0]
def save(self, *a, **k):
    real(self, *a, **k)
    count[0] += 1
    if count[0] == n:
        os.kill(os.getpid(), signal.SIGKILL)
trainer.Trainer.save = save
from miniroberta.cli import main
sys.exit(main(sys.argv[1:]))
"""


def child_env(**kw: str) -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "src"), **kw)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("ftfaults")
    vocab = D.write_vocab(root / "vocab.txt")
    model = D.tiny_model(root / "tiny.safetensors", len(vocab.read_text(encoding="utf-8").split()), hidden=32)
    data = root / "tasks"
    D.write_single(data / "chnsenticorp", n_train=48, n_dev=16)    # a generated task under a preset's name
    return dict(root=root, vocab=str(vocab), model=str(model), data=str(data), cache=str(root / "cache"))


def _cfg(env, task_dir: Path, out: Path, **kw) -> FinetuneConfig:
    return FinetuneConfig(**{**dict(pretrained_model_path=env["model"], vocab_path=env["vocab"],
                                    train_path=str(task_dir / "train.tsv"), dev_path=str(task_dir / "dev.tsv"),
                                    output_dir=str(out), cache_dir=env["cache"], seed=5, save_model=False), **FAST,
                          **kw})


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith(f"miniroberta {command}: error:")]
    assert len(errors) == 1 and not any("Traceback" in line for line in err), err
    return errors[0]


# ------------------------------------------------------------------------ resume
def test_resume_refuses_changed_labels_or_another_tasks_rows(env, tmp_path):
    d = D.write_single(tmp_path / "task", n_train=48, n_dev=16)
    out = tmp_path / "out"
    assert run_finetune(_cfg(env, d, out, stop_after_steps=2))["stopped"]
    train = d / "train.tsv"
    original = train.read_text(encoding="utf-8")
    lines = original.splitlines(keepends=True)
    lines[1] = ("0" if lines[1][0] == "1" else "1") + lines[1][1:]           # one label flipped
    train.write_text("".join(lines), encoding="utf-8")
    with pytest.raises(FinetuneError, match="the training labels changed") as e:
        run_finetune(_cfg(env, d, out, resume=True))
    assert "\n" not in str(e.value) and "--overwrite" in str(e.value)
    rows = D.single_task(64, seed=9)                                       # another task's rows (and more)
    train.write_text("label\ttext_a\n" + "".join(f"{y}\t{t}\n" for y, t in rows), encoding="utf-8")
    with pytest.raises(FinetuneError, match="the training texts"):
        run_finetune(_cfg(env, d, out, resume=True))
    train.write_text(original, encoding="utf-8")
    res = run_finetune(_cfg(env, d, out, resume=True))                      # the same data: it continues
    assert not res.get("stopped") and len(res["epochs"]) == 2


def test_resume_of_a_state_without_manifest_or_damaged_is_one_line(env, tmp_path, capsys):
    d = D.write_single(tmp_path / "task", n_train=48, n_dev=16)
    out = tmp_path / "out"
    assert run_finetune(_cfg(env, d, out, stop_after_steps=2))["stopped"]
    state = out / "train_state.pt"
    argv = ["finetune", "--pretrained_model_path", env["model"], "--vocab_path", env["vocab"], "--train_path",
            str(d / "train.tsv"), "--dev_path", str(d / "dev.tsv"), "--output_dir", str(out), "--cache_dir",
            env["cache"], "--seed", "5", "--epochs_num", "2", "--batch_size", "16", "--learning_rate", "2e-3",
            "--seq_length", "16", "--dropout", "0.1", "--threads", "1", "--precision", "fp32", "--no_progress",
            "--resume"]
    manifest = Path(str(state) + ".sha256.json")
    saved_manifest = manifest.read_bytes()
    manifest.unlink()
    assert cli.main(argv) == 2
    assert "no integrity manifest" in _one_line_error(capsys, "finetune")
    manifest.write_bytes(saved_manifest)
    raw = bytearray(state.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    state.write_bytes(bytes(raw))
    assert cli.main(argv) == 2
    assert "damaged" in _one_line_error(capsys, "finetune")
    state.write_bytes(b"\x80\x02not a pickle at all")                        # junk with a matching manifest
    integrity.record(state)
    assert cli.main(argv) == 2
    assert "cannot read the training state" in _one_line_error(capsys, "finetune")


def test_resume_with_another_precision_is_refused(env, tmp_path):
    d = D.write_single(tmp_path / "task", n_train=48, n_dev=16)
    out = tmp_path / "out"
    assert run_finetune(_cfg(env, d, out, stop_after_steps=2))["stopped"]
    with pytest.raises(FinetuneError, match="trained with --precision fp32, not bf16"):
        run_finetune(_cfg(env, d, out, resume=True, precision="bf16"))
    assert not run_finetune(_cfg(env, d, out, resume=True, precision="auto")).get("stopped")


def test_killed_after_a_periodic_save_resumes_bit_identically(env, tmp_path):
    """kill -9 right after the state of step 10 (of 6 per epoch) was written: the rerun with --resume ends with
    the weights of an uninterrupted run."""
    from safetensors.torch import load_file
    d = D.write_single(tmp_path / "task", n_train=96, n_dev=16)
    full = run_finetune(_cfg(env, d, tmp_path / "full", save_model=True))
    argv = ["finetune", "--pretrained_model_path", env["model"], "--vocab_path", env["vocab"], "--train_path",
            str(d / "train.tsv"), "--dev_path", str(d / "dev.tsv"), "--output_dir", str(tmp_path / "part"),
            "--cache_dir", env["cache"], "--seed", "5", "--epochs_num", "2", "--batch_size", "16",
            "--learning_rate", "2e-3", "--seq_length", "16", "--dropout", "0.1", "--threads", "1", "--precision",
            "fp32", "--no_progress", "--save_steps", "5"]
    p = subprocess.run([sys.executable, "-c", KILL_AFTER_SAVE, *argv], env=child_env(KILL_AFTER_SAVE="2"),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr
    st = torch.load(tmp_path / "part" / "train_state.pt", weights_only=True)
    assert st["step"] == 10 and [e["epoch"] for e in st["task"]["epochs"]] == [1]   # mid-epoch 2
    rest = run_finetune(_cfg(env, d, tmp_path / "part", save_model=True, resume=True, save_steps=5))
    assert [e["dev_acc"] for e in rest["epochs"]] == [e["dev_acc"] for e in full["epochs"]]
    a = load_file(str(tmp_path / "full" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "part" / "model" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------ bad settings and data
def test_max_train_examples_zero_is_one_line_and_leaves_no_output(env, tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli.main(["finetune", "--pretrained_model_path", env["model"], "--task", "chnsenticorp", "--data_dir",
                   env["data"], "--max_train_examples", "0", "--output_dir", str(out)])
    assert rc == 2 and "--max_train_examples: must be >= 1, got 0" in _one_line_error(capsys, "finetune")
    assert not out.exists()
    rc = cli.main(["finetune", "--pretrained_model_path", env["model"], "--task", "chnsenticorp", "--data_dir",
                   env["data"], "--learning_rate", "inf", "--output_dir", str(out)])
    assert rc == 2 and "--learning_rate: must be a finite number" in _one_line_error(capsys, "finetune")
    assert not out.exists()


def test_a_train_label_outside_the_tasks_label_set_names_file_and_line(env, tmp_path, capsys):
    data = tmp_path / "tasks"
    shutil.copytree(env["data"], data)
    train = data / "chnsenticorp" / "train.tsv"
    train.write_text(train.read_text(encoding="utf-8") + "2\t的一是好\n", encoding="utf-8")
    n = len(train.read_text(encoding="utf-8").splitlines())
    argv = ["finetune", "--pretrained_model_path", env["model"], "--vocab_path", env["vocab"], "--task",
            "chnsenticorp", "--data_dir", str(data), "--epochs_num", "1", "--batch_size", "16", "--seq_length", "16",
            "--threads", "1", "--no_progress", "--cache_dir", env["cache"], "--output_dir", str(tmp_path / "o")]
    assert cli.main(argv) == 2
    line = _one_line_error(capsys, "finetune")
    assert f"{train}:{n}:" in line and "'2' is not one of the task's 2 labels" in line
    assert not (tmp_path / "o").exists()
    assert cli.main(argv + ["--skip_bad_rows"]) == 0             # skipped and counted: still a 2-class model
    res = json.loads((tmp_path / "o" / "result.json").read_text())
    assert res["labels"] == ["0", "1"] and res["train_skipped"] == 1


# ------------------------------------------------------------------------ caches
def test_a_damaged_tokenization_cache_is_rebuilt_and_said(tmp_path):
    tok = BertTokenizer(D.write_vocab(tmp_path / "vocab.txt"))
    d = D.write_single(tmp_path / "task", n_train=32, n_dev=8)
    data = tasks.read_examples(str(d / "train.tsv"))
    cache = str(tmp_path / "cache")
    said: list[str] = []
    ref = tasks.cached_encode(tok, data, 16, cache_dir=cache, say=said.append)
    entry = next((tmp_path / "cache" / "tokenized").glob("*.npz"))
    good = entry.read_bytes()
    damages = {"flipped byte": lambda b: b[:100] + bytes([b[100] ^ 1]) + b[101:],
               "BadZipFile": lambda b: b"PK\x03\x04 this is no zip archive", "truncated": lambda b: b[:len(b) // 2]}
    for what, damage in damages.items():
        entry.write_bytes(damage(good))
        if what != "flipped byte":
            integrity.record(entry)            # a manifest that matches the damage: the reader must still cope
        said.clear()
        enc = tasks.cached_encode(tok, data, 16, cache_dir=cache, say=said.append)
        assert np.array_equal(enc.ids, ref.ids) and np.array_equal(enc.offsets, ref.offsets), what
        assert len(said) == 1 and "damaged" in said[0] and "rebuilding" in said[0], (what, said)
        assert integrity.verify_file(entry)                                     # rewritten with its manifest
        said.clear()
        tasks.cached_encode(tok, data, 16, cache_dir=cache, say=said.append)
        assert said == []                                                       # and used from then on


def test_a_damaged_teacher_logit_cache_is_recomputed_and_said(tmp_path):
    from miniroberta.finetune.teacher import teacher_logits
    vocab = small_vocab(tmp_path / "vocab.txt")
    teacher = classifier_dir(tmp_path / "teacher", vocab)
    tok = BertTokenizer(str(vocab))
    d = D.write_single(tmp_path / "task", n_train=32, n_dev=8)
    enc = tasks.encode_data(tok, tasks.read_examples(str(d / "train.tsv")), 16)
    said: list[str] = []

    def logits():
        said.clear()
        arr, info = teacher_logits(str(teacher), enc, ["0", "1"], tok.sha256, tok.pad_id, str(tmp_path / "c"),
                                   torch.device("cpu"), say=said.append)
        return np.array(arr), info

    ref, info = logits()
    assert not info["cached"] and integrity.verify_file(info["cache"])
    again, info2 = logits()
    assert info2["cached"] and np.array_equal(again, ref)
    path = Path(info["cache"])

    def with_value(v):                       # a well-formed .npy whose manifest matches: only the values are wrong
        arr = ref.copy()
        arr[3, 1] = v
        np.save(path, arr)
        integrity.record(path)

    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0x40                          # a flipped byte in a logit (the 7.9e37 came from one)
    path.write_bytes(bytes(raw))
    for damage in (None, lambda: with_value(float("nan")), lambda: with_value(7.9e37), lambda: os.unlink(
            str(path) + ".sha256.json")):
        if damage is not None:
            damage()
        got, info3 = logits()
        assert not info3["cached"] and np.array_equal(got, ref)
        assert any("damaged" in s and "computing it again" in s for s in said), said


# ------------------------------------------------------------------------ predict
def test_predict_claims_its_output(tmp_path, capsys):
    vocab = small_vocab(tmp_path / "vocab.txt")
    model = classifier_dir(tmp_path / "clf", vocab)
    inp = tmp_path / "in.tsv"
    inp.write_text("text_a\n天气很好\n我们去公园\n", encoding="utf-8")
    out = tmp_path / "preds.tsv"
    argv = ["predict", "--model", str(model), "--input", str(inp), "--output", str(out), "--threads", "1"]
    assert cli.main(argv) == 0
    first = out.read_text(encoding="utf-8")
    capsys.readouterr()
    assert cli.main(argv) == 2
    assert "already exists" in _one_line_error(capsys, "predict") and out.read_text(encoding="utf-8") == first
    assert cli.main(argv + ["--overwrite"]) == 0
    assert [p.name for p in tmp_path.glob("preds.tsv.old-*")] and out.read_text(encoding="utf-8") == first


# ------------------------------------------------------------------------ the grid
def _children(pid: int) -> set[int]:
    out: set[int] = set()
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out |= {int(x) for x in f.read().split()}
    except OSError:
        pass
    return out


def _workers(pid: int) -> set[int]:
    """The pool workers among ``pid``'s children (not multiprocessing's resource tracker, which lives as long as
    the process that started it and exits with it)."""
    out = set()
    for c in _children(pid):
        try:
            with open(f"/proc/{c}/cmdline", "rb") as f:
                if b"spawn_main" in f.read():
                    out.add(c)
        except OSError:
            pass
    return out


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")      # exited (a zombie awaits its reaper)
    except OSError:
        return True


def _grid_argv(env, out: Path, jobs: int, epochs: int) -> list[str]:
    return ["grid", "--pretrained_model_path", env["model"], "--vocab_path", env["vocab"], "--tasks", "chnsenticorp",
            "--data_dir", env["data"], "--out", str(out), "--epochs_num_list", str(epochs), "--batch_size_list", "16",
            "--learning_rate_list", "1e-3" if jobs == 1 else "1e-3,3e-3", "--seeds", "1", "--jobs", str(jobs),
            "--threads", "1", "--seq_length", "16", "--cache_dir", env["cache"], "--precision", "fp32"]


def _wait_training(out: Path, n: int, p: subprocess.Popen, timeout: float = 120) -> list[Path]:
    """The ``.run`` folders of ``n`` cells whose training has started (their metrics have a start record)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert p.poll() is None, p.communicate()
        runs = [r for r in (out / "cells" / "chnsenticorp").glob("*.run")
                if (r / "metrics.jsonl").is_file() and (r / "metrics.jsonl").stat().st_size]
        if len(runs) >= n:
            return runs
        time.sleep(0.1)
    raise AssertionError("the grid's cells did not start")


def _grid_config(env, out: Path, jobs: int, epochs: int) -> GridConfig:
    return GridConfig(pretrained_model_path=env["model"], vocab_path=env["vocab"], tasks="chnsenticorp",
                      data_dir=env["data"], out_dir=str(out), epochs_num_list=(epochs,), batch_size_list=(16,),
                      learning_rate_list=(1e-3,) if jobs == 1 else (1e-3, 3e-3), seeds=(1,), jobs=jobs, threads=1,
                      seq_length=16, cache_dir=env["cache"], precision="fp32")


def _sigterm_when_training(out: Path, n: int, done: threading.Event) -> threading.Thread:
    """SIGTERM to this process once ``n`` cells train (the grid runs in the main thread and catches it)."""
    def watch() -> None:
        while not done.is_set():
            runs = [r for r in out.glob("cells/*/*.run/metrics.jsonl") if r.stat().st_size]
            if len(runs) >= n:
                time.sleep(0.3)
                if not done.is_set():
                    os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.05)
    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


def test_grid_killed_with_9_takes_its_workers_with_it(env, tmp_path):
    """kill -9 of `grid --jobs 2`: the kernel sends each worker SIGTERM (PR_SET_PDEATHSIG); each stops its cell
    cleanly -- a resumable state -- and exits, instead of living on re-parented."""
    out = tmp_path / "g"
    p = subprocess.Popen([sys.executable, "-c", MAIN, *_grid_argv(env, out, 2, 2000), "--no_progress"],
                         env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        runs = _wait_training(out, 2, p)
        assert len(_workers(p.pid)) == 2
        workers = _children(p.pid)                         # the two workers and multiprocessing's resource tracker
        p.kill()
        p.wait(60)
        deadline = time.time() + 60
        while time.time() < deadline and not all(_gone(w) for w in workers):
            time.sleep(0.1)
        assert all(_gone(w) for w in workers), [w for w in workers if not _gone(w)]
        for r in runs:
            assert (r / "train_state.pt").is_file() and integrity.verify_file(r / "train_state.pt")
    finally:
        if p.poll() is None:
            p.kill()
        for w in _children(p.pid):
            os.kill(w, signal.SIGKILL)


def test_grid_sigterm_stops_parallel_cells_with_resumable_states(env, tmp_path, capfd):
    """SIGTERM to `grid --jobs 2`: it is forwarded to the workers, each writes its cell's state, the grid says so
    and returns; no worker is left."""
    out = tmp_path / "g"
    before = _workers(os.getpid())
    done = threading.Event()
    t = _sigterm_when_training(out, 2, done)
    try:
        summary = run_grid(_grid_config(env, out, 2, 2000))
    finally:
        done.set()
        t.join()
    assert summary["stopped"]["reason"] == "signal" and len(summary["stopped"]["cell_states"]) == 2
    assert all(integrity.verify_file(p) for p in summary["stopped"]["cell_states"])
    assert "grid stopped (signal)" in capfd.readouterr().err
    deadline = time.time() + 30
    while time.time() < deadline and not all(_gone(w) for w in _workers(os.getpid()) - before):
        time.sleep(0.1)
    assert all(_gone(w) for w in _workers(os.getpid()) - before)


def test_grid_sigterm_mid_cell_stops_with_a_resumable_cell(env, tmp_path, capfd):
    """`grid --jobs 1` + SIGTERM mid-cell: a message and the cell's state (once a raw KeyError: 'model'); the same
    grid again resumes the cell and finishes it; no empty `saved ` log line."""
    out = tmp_path / "g"
    cfg = _grid_config(env, out, 1, 300)
    done = threading.Event()
    t = _sigterm_when_training(out, 1, done)
    try:
        summary = run_grid(cfg)
    finally:
        done.set()
        t.join()
    err = capfd.readouterr().err
    assert summary["stopped"]["reason"] == "signal" and "run the same command to continue" in err
    (state,) = summary["stopped"]["cell_states"]
    assert integrity.verify_file(state) and not list(out.glob("cells/*/*.json"))
    assert not [line for line in err.splitlines() if line.rstrip().endswith("saved")]   # the empty "saved " wart
    again = run_grid(cfg)
    assert "stopped" not in again and again["cells_run"] == 1
    assert "resumed at step" in capfd.readouterr().err
    assert len(list(out.glob("cells/*/*.json"))) == 1 and not Path(state).parent.exists()
