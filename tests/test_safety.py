"""Issue 11 ("never lose a run"): output claims, stale temps, integrity manifests, clear write errors,
permissions, data and config checks, optional dependencies. The crash/kill cases are in test_faults.py,
the readers' fuzzing in test_fuzz.py."""
from __future__ import annotations

import errno
import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from miniroberta import integrity, outputs, utils
from miniroberta.cli import main as cli_main
from miniroberta.data.dataset import DatasetError, MlmDataset, write_dataset
from miniroberta.data.tasks import TaskDataError, read_examples
from miniroberta.modeling.config import ConfigError, ModelConfig, preset
from miniroberta.textio import InputError, read_text_lines

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write_vocab(path: Path, n: int = 64) -> Path:
    toks = SPECIAL + [chr(0x4E00 + i) for i in range(n - len(SPECIAL))]
    path.write_text("".join(t + "\n" for t in toks), encoding="utf-8")
    return path


def hidden(d: Path) -> list[str]:
    return sorted(n for n in os.listdir(d) if n.endswith((".tmp", ".old")))


# ------------------------------------------------------------------ claims
HOLD = """
import sys, time
from miniroberta.outputs import claim_output
c = claim_output(sys.argv[1], command="holder-test")
print("held", flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def holder(tmp_path):
    """A second process holding the claim on tmp_path/out until the test ends."""
    target = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(target)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout.readline().strip() == "held"
    yield target, p
    p.stdin.close()
    p.wait(timeout=30)


def test_second_writer_refused_naming_the_first(holder):
    target, p = holder
    with pytest.raises(outputs.OutputBusy) as e:
        outputs.claim_output(target)
    msg = str(e.value)
    assert f"pid {p.pid}" in msg and socket.gethostname() in msg and "holder-test" in msg


def test_claim_released_when_holder_dies(holder):
    target, p = holder
    p.kill()
    p.wait(timeout=30)
    with outputs.claim_output(target) as c:          # the kernel dropped the lock with the process
        assert c.path == str(target)


def test_existing_output_refused_resumed_or_moved_aside(tmp_path, capfd):
    out = tmp_path / "run"
    out.mkdir()
    (out / "model.bin").write_text("old")
    with pytest.raises(outputs.OutputExists, match="--resume.*--overwrite"):
        outputs.claim_output(out)
    with pytest.raises(FileExistsError):             # what the commands' callers caught before
        outputs.claim_output(out, can_resume=False)
    with outputs.claim_output(out, resume=True) as c:
        assert c.existed and (out / "model.bin").read_text() == "old"
    with outputs.claim_output(out, overwrite=True) as c:
        assert not out.exists() and len(c.retired) == 1
        kept = Path(c.retired[0])
        assert kept.name.startswith("run.old-") and (kept / "model.bin").read_text() == "old"
    assert "kept the previous" in capfd.readouterr().err
    with pytest.raises(outputs.OutputError, match="contradict"):
        outputs.claim_output(out, resume=True, overwrite=True)


def test_related_paths_count_as_the_run(tmp_path):
    prefix = tmp_path / "m.bin"
    state = tmp_path / "m.bin.state.pt"
    state.write_bytes(b"x")
    with pytest.raises(outputs.OutputExists, match="state.pt"):
        outputs.claim_output(prefix, related=[state])
    with outputs.claim_output(prefix, related=[state], overwrite=True) as c:
        assert not state.exists() and Path(c.retired[0]).read_bytes() == b"x"


def test_claim_leaves_only_the_lock_file(tmp_path):
    with outputs.claim_output(tmp_path / "d"):
        assert json.loads(Path(outputs.owner_path(tmp_path / "d")).read_text())["pid"] == os.getpid()
    assert sorted(os.listdir(tmp_path)) == [".d.lock"]


# ------------------------------------------------------------------ stale temps
def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temps_of_dead_runs_removed_live_ones_kept(tmp_path):
    tag = utils.host_tag()
    dead = _dead_pid()
    (tmp_path / f".ds.{tag}-{dead}-abc123.tmp").mkdir()
    (tmp_path / f".ds.{tag}-{dead}-abc123.tmp" / "shard").write_bytes(b"x")
    (tmp_path / f".ds-100.{tag}-{dead}-zz.tmp").write_bytes(b"x")               # a step checkpoint's temp
    live = tmp_path / f".ds.{tag}-{os.getppid()}-keep.tmp"
    live.write_bytes(b"x")
    other_host = tmp_path / f".ds.00000000-{dead}-x.tmp"
    other_host.write_bytes(b"x")
    unrelated = tmp_path / f".other.{tag}-{dead}-x.tmp"
    unrelated.write_bytes(b"x")
    removed = outputs.clean_stale_temps(tmp_path / "ds")
    assert len(removed) == 2
    assert sorted(os.listdir(tmp_path)) == sorted([live.name, other_host.name, unrelated.name])


def test_interrupted_swap_is_put_back(tmp_path):
    dead = _dead_pid()
    old = tmp_path / f".hf.{utils.host_tag()}-{dead}-1234abcd.old"
    old.mkdir()
    (old / "config.json").write_text("{}")
    outputs.clean_stale_temps(tmp_path / "hf")
    assert (tmp_path / "hf" / "config.json").is_file() and not old.exists()


def test_temp_names_carry_host_and_pid(tmp_path, monkeypatch):
    seen = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (seen.append(os.path.basename(a)), real(a, b))[1])
    utils.atomic_write_text(tmp_path / "a.txt", "x")
    with utils.atomic_dir(tmp_path / "d") as t:
        Path(t, "f").write_text("y")
    for n in seen:
        m = utils.TEMP_RE.match(n)
        assert m and int(m["pid"]) == os.getpid() and m["host"] == utils.host_tag()


def test_atomic_dir_overwrite_leaves_no_old(tmp_path):
    for i in range(2):
        with utils.atomic_dir(tmp_path / "d", overwrite=True) as t:
            Path(t, "f").write_text(str(i))
    assert (tmp_path / "d" / "f").read_text() == "1" and hidden(tmp_path) == []


# ------------------------------------------------------------------ permissions
def test_outputs_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    utils._UMASK = None
    try:
        utils.atomic_write_text(tmp_path / "a.json", "{}")
        with utils.atomic_dir(tmp_path / "d") as t:
            os.makedirs(os.path.join(t, "sub"))
            Path(t, "sub", "f").write_text("x")
        assert stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode) == 0o644
        assert stat.S_IMODE(os.stat(tmp_path / "d").st_mode) == 0o755
        assert stat.S_IMODE(os.stat(tmp_path / "d" / "sub").st_mode) == 0o755
    finally:
        os.umask(old)
        utils._UMASK = None


# ------------------------------------------------------------------ write errors
def _failing_fsync(code: int):
    def f(fd):
        raise OSError(code, os.strerror(code))
    return f


@pytest.mark.parametrize("code,words", [(errno.ENOSPC, "no space left"), (errno.EROFS, "read-only"),
                                        (errno.EACCES, "permission denied")])
def test_write_errors_are_one_line_and_keep_the_previous_file(tmp_path, monkeypatch, code, words):
    p = tmp_path / "m.json"
    utils.atomic_write_text(p, "previous")
    monkeypatch.setattr(os, "fsync", _failing_fsync(code))
    with pytest.raises(utils.OutputWriteError) as e:
        utils.atomic_write_text(p, "new")
    msg = str(e.value)
    assert str(p) in msg and words in msg and "previous" in msg and "\n" not in msg
    if code == errno.ENOSPC:
        assert "free there" in msg
    assert p.read_text() == "previous" and hidden(tmp_path) == []


def test_cli_prints_write_error_as_one_line(tmp_path, monkeypatch, capfd):
    corpus = tmp_path / "c.txt"
    corpus.write_text("一丁\n", encoding="utf-8")
    vocab = write_vocab(tmp_path / "v.txt")
    monkeypatch.setattr(os, "fsync", _failing_fsync(errno.ENOSPC))
    rc = cli_main(["preprocess", "--corpus_path", str(corpus), "--vocab_path", str(vocab), "--dataset_path",
                   str(tmp_path / "ds"), "--no_progress"])
    err = capfd.readouterr().err
    assert rc == 2 and "no space left" in err and "Traceback" not in err
    assert not (tmp_path / "ds").exists() and hidden(tmp_path) == []


# ------------------------------------------------------------------ integrity
def _native(tmp_path: Path) -> Path:
    from miniroberta.interop.checkpoint import save_native
    from miniroberta.modeling.bert import BertForMaskedLM
    cfg = preset("tiny", vocab_size=64)
    torch.manual_seed(0)
    p = tmp_path / "m.safetensors"
    save_native(p, BertForMaskedLM(cfg).state_dict(), cfg, {"step": 1})
    return p


def flip_byte(p: Path, where: float = 0.5) -> None:
    b = bytearray(p.read_bytes())
    i = int(len(b) * where)
    b[i] ^= 0x01
    p.write_bytes(bytes(b))


def test_flipped_byte_in_native_checkpoint_refused(tmp_path):
    from miniroberta.interop.checkpoint import load_weights
    p = _native(tmp_path)
    assert Path(integrity.sidecar(str(p))).is_file()
    load_weights(p)
    flip_byte(p)
    with pytest.raises(integrity.IntegrityError, match=f"{p}: damaged"):
        load_weights(p)


def test_truncated_file_refused_and_unrecorded_file_loads(tmp_path):
    p = tmp_path / "s.pt"
    integrity.atomic_torch_save({"step": torch.tensor(3)}, p)
    assert int(integrity.verified_torch_load(p)["step"]) == 3
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(integrity.IntegrityError, match="truncated"):
        integrity.verified_torch_load(p)
    q = tmp_path / "foreign.pt"
    torch.save({"a": torch.zeros(1)}, q)
    assert integrity.verify_file(q) is False


def test_rewrite_replaces_the_recorded_hash(tmp_path):
    p = tmp_path / "x.bin"
    integrity.atomic_write_bytes(p, b"one")
    integrity.atomic_write_bytes(p, b"two")
    assert integrity.verify_file(p) is True


# ------------------------------------------------------------------ model card
def test_model_card_has_no_absolute_paths(tmp_path):
    from miniroberta.interop.export import model_card
    card = model_card(preset("tiny"), {"vocab_path": "/home/someone/data/vocab.txt",
                                       "dataset_path": "/srv/x/corpus_seq128_dataset.pt", "step": 5})
    assert "/home/" not in card and "/srv/" not in card and "vocab.txt" in card


# ------------------------------------------------------------------ config
def test_absurd_config_refused_before_allocation():
    with pytest.raises(ConfigError, match="num_hidden_layers 100,000"):
        ModelConfig(num_hidden_layers=100000)
    with pytest.raises(ConfigError, match="memory"):
        ModelConfig(hidden_size=8192, num_attention_heads=64, intermediate_size=32768, num_hidden_layers=250)
    with pytest.raises(ConfigError, match="more than this machine"):
        preset("base").check_memory(available=10 ** 8)


def test_config_file_with_huge_layers_names_file(tmp_path):
    from miniroberta.modeling.config import load_config
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"layers_num": 100000, "hidden_size": 128, "heads_num": 2, "feedforward_size": 512}))
    with pytest.raises(ConfigError, match=str(p)):
        load_config(str(p))


# ------------------------------------------------------------------ dataset checks
def _ds(tmp_path, instances, V=64, name="ds", **kw):
    m = {"vocab_sha256": "0" * 64, "vocab_size": V, "seq_length": 8, **kw}
    return write_dataset(tmp_path / name, instances, m)


def test_out_of_range_ids_named(tmp_path):
    p = _ds(tmp_path, [[2, 5, 3], [2, 6, 3]])
    tok = np.load(Path(p, "tokens.npy"))
    tok[4] = 60
    np.save(Path(p, "tokens.npy"), tok)
    m = json.loads(Path(p, "manifest.json").read_text())
    m["vocab_size"] = 50
    Path(p, "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DatasetError, match=r"tokens.npy: 1 token id\(s\) outside the vocab \[0, 50\), the first 60 "
                                           r"at position 4 \(instance 1\)"):
        MlmDataset(p)


def test_bad_offsets_named(tmp_path):
    p = _ds(tmp_path, [[2, 5, 3], [2, 6, 3]])
    np.save(Path(p, "offsets.npy"), np.array([0, 4, 3, 6], dtype=np.int64)[[0, 2, 3]] * 0 + np.array([0, 0, 6]))
    with pytest.raises(DatasetError, match="instance 0 has 0 tokens"):
        MlmDataset(p)


def test_degenerate_data_warned(tmp_path, capfd):
    ds = MlmDataset(_ds(tmp_path, [[0] * 8] * 20))
    assert any("id 0" in w for w in ds.warnings) and "degenerate" in capfd.readouterr().err
    ds = MlmDataset(_ds(tmp_path, [[2, 1, 1, 3]] * 5, name="unk", unk_tokens=10))
    assert any("[UNK]" in w for w in ds.warnings)
    ok = MlmDataset(_ds(tmp_path, [[2, 5, 6, 7, 3], [2, 8, 9, 3]], name="ok"))
    assert ok.warnings == []


def test_preprocess_warns_when_the_vocab_does_not_fit(tmp_path, capfd):
    from miniroberta.data.preprocess import build_dataset
    vocab = tmp_path / "en.txt"
    vocab.write_text("".join(t + "\n" for t in SPECIAL + ["the", "a"]), encoding="utf-8")
    corpus = tmp_path / "c.txt"
    corpus.write_text("今天天气很好。\n我们去公园散步吧。\n", encoding="utf-8")
    m = build_dataset(corpus, vocab, tmp_path / "ds", progress=False)
    err = capfd.readouterr().err
    assert m["stats"]["unk_rate"] > 0.5
    assert "[UNK]" in err and "does not fit this corpus" in err and "Chinese" in err


# ------------------------------------------------------------------ readers
def test_task_reader_names_file_and_line_of_bad_utf8(tmp_path):
    p = tmp_path / "train.tsv"
    p.write_bytes("label\ttext_a\n1\t好\n0\t".encode() + b"\xff\xfe bad\n1\tok\n")
    with pytest.raises(TaskDataError, match=rf"{p}:3: not valid UTF-8 \(byte 0xff"):
        read_examples(str(p))
    d = read_examples(str(p), skip_bad_rows=True)
    assert d.lines == [2, 4] and d.skipped == 1
    j = tmp_path / "dev.json"
    j.write_bytes(b'{"sentence": "a", "label": "1"}\n{"sentence": "\xc3", "label": "0"}\n')
    with pytest.raises(TaskDataError, match=rf"{j}:2: not valid UTF-8"):
        read_examples(str(j))


def test_input_reader_numbers_lines(tmp_path):
    p = tmp_path / "in.txt"
    p.write_bytes(b"\xef\xbb\xbfa[MASK]\n\n\nb\r\n")
    assert read_text_lines(p) == [(1, "a[MASK]"), (4, "b")]
    assert read_text_lines(p, keep_blank=True) == [(1, "a[MASK]"), (2, ""), (3, ""), (4, "b")]
    p.write_bytes(b"ok\n\x80\n")
    with pytest.raises(InputError, match=rf"{p}:2: not valid UTF-8"):
        read_text_lines(p)


def test_corpus_utf8_error_names_file_line(tmp_path):
    from miniroberta.data.preprocess import CorpusError, build_dataset
    corpus = tmp_path / "c.txt"
    corpus.write_bytes("一\n".encode() + b"\xff\n")
    with pytest.raises(CorpusError, match=rf"{corpus}:2"):
        build_dataset(corpus, write_vocab(tmp_path / "v.txt"), tmp_path / "ds", progress=False)


# ------------------------------------------------------------------ misshaped tensors
def test_misshaped_first_layer_tensor_is_the_one_named(tmp_path):
    from miniroberta.interop.convert import convert
    from miniroberta.interop.uer import hf_to_uer
    from miniroberta.modeling.bert import BertForMaskedLM
    u = hf_to_uer(dict(BertForMaskedLM(preset("tiny", vocab_size=64)).state_dict()), vintage="new", type="mlm")
    k = "encoder.transformer.0.feed_forward.linear_1.weight"
    u[k] = torch.zeros(500, 128)
    torch.save(u, tmp_path / "m.bin-1")
    with pytest.raises(ValueError) as e:
        convert(str(tmp_path / "m.bin-1"), str(tmp_path / "hf"), vocab_path=str(write_vocab(tmp_path / "v.txt")))
    msg = str(e.value)
    assert "layer.0.intermediate.dense.weight: (500, 128), expected (512, 128)" in msg
    assert "layer.1" not in msg and "output.dense" not in msg


# ------------------------------------------------------------------ CLI and extras
@pytest.mark.parametrize("command", ["grid", "preprocess", "reproduce", "convert"])
def test_help_shows_no_none_defaults(command, capsys):
    with pytest.raises(SystemExit):
        cli_main([command, "--help"])
    out = capsys.readouterr().out
    assert "(default: None)" not in out and "--overwrite" in out


def test_missing_matplotlib_skips_plots_with_a_warning(tmp_path, monkeypatch, capfd):
    from miniroberta import optional
    from miniroberta.finetune import report
    monkeypatch.setattr(optional, "have", lambda m: False)
    monkeypatch.setattr(optional, "_warned", set())
    rows = [dict(num_parameters=1e6 * i, score=50.0 + i, score_partial=None, reference=False, model_name=str(i),
                 name=str(i)) for i in (1, 2)]
    assert report.plot_score_vs_size(rows, str(tmp_path / "p.png")) is None
    err = capfd.readouterr().err
    assert "miniroberta[plot]" in err and "skipped" in err and not (tmp_path / "p.png").exists()
    with pytest.raises(optional.MissingDependency, match=r"miniroberta\[plot\]"):
        optional.require("matplotlib", "report --plot")


def test_corpus_of_removed_characters_is_a_clear_error(tmp_path):
    """Found by test_fuzz: a corpus whose characters the tokenizer all drops (NUL) crashed with IndexError."""
    from miniroberta.data.preprocess import CorpusError, build_dataset
    corpus = tmp_path / "c.txt"
    corpus.write_bytes(b"\x00\n\x00\x00\n")
    with pytest.raises(CorpusError, match="holds no document"):
        build_dataset(corpus, write_vocab(tmp_path / "v.txt"), tmp_path / "ds", progress=False)


def test_pretrain_run_files_are_the_claims_related_paths(tmp_path):
    prefix = tmp_path / "m.bin"
    for n in ("m.bin-100", "m.bin-100.sha256.json", "m.bin.state.pt", "m.bin.state.pt.sha256.json", "m.bin-x",
              "other.bin-100", "m.bin.metrics.jsonl"):
        (tmp_path / n).write_bytes(b"x")
    assert [os.path.basename(p) for p in outputs.run_files(prefix)] == [
        "m.bin-100", "m.bin-100.sha256.json", "m.bin.state.pt", "m.bin.state.pt.sha256.json"]
    with pytest.raises(outputs.OutputExists, match="m.bin-100"):
        outputs.claim_output(prefix, related=outputs.run_files(prefix))


def test_preprocess_cli_overwrite_moves_the_old_dataset_aside(tmp_path, capfd):
    corpus = tmp_path / "c.txt"
    corpus.write_text("一丁\n", encoding="utf-8")
    vocab = write_vocab(tmp_path / "v.txt")
    argv = ["preprocess", "--corpus_path", str(corpus), "--vocab_path", str(vocab), "--dataset_path",
            str(tmp_path / "ds"), "--no_progress"]
    assert cli_main(argv) == 0
    old = MlmDataset(tmp_path / "ds")[0].tolist()
    assert cli_main(argv) == 2 and "--overwrite to move it aside" in capfd.readouterr().err
    corpus.write_text("丁一一\n", encoding="utf-8")
    assert cli_main(argv + ["--overwrite"]) == 0
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("ds.old-")]
    assert len(kept) == 1 and MlmDataset(kept[0])[0].tolist() == old
    assert MlmDataset(tmp_path / "ds")[0].tolist() != old and "kept the previous" in capfd.readouterr().err


def test_reproduce_says_at_the_start_what_it_will_skip(monkeypatch, capfd):
    from miniroberta import optional
    from miniroberta.study import reproduce
    from miniroberta.study.recipe import load_recipe
    monkeypatch.setattr(optional, "have", lambda m: False)
    monkeypatch.setattr(reproduce, "have", lambda m: False)
    monkeypatch.setattr(optional, "_warned", set())
    reproduce.check_optional_dependencies(load_recipe("cpu-smoke"))
    err = capfd.readouterr().err
    assert "miniroberta[plot]" in err and "miniroberta[hf]" in err and "parity check" in err
