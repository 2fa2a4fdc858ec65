"""Fault injection for the inference edges (marker ``faults``): damaged ONNX graphs and side files refused
by every loader (serve, fill-mask --onnx, predict --onnx) with one line naming the file; export-onnx and
embed refuse to overwrite, a second export to one --out fails at once naming the first, a dead export's
temp folder is removed, a full disk is one line naming the path, the free space and what is intact."""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from _serve_models import classifier_dir, mlm_dir, small_vocab  # noqa: E402

from miniroberta import cli, utils  # noqa: E402
from miniroberta.infer import onnx_export  # noqa: E402
from miniroberta.infer.backends import OnnxBackend, meta_digest  # noqa: E402
from miniroberta.infer.onnx_export import export_onnx  # noqa: E402
from miniroberta.integrity import IntegrityError  # noqa: E402

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("one_torch_thread")]
REPO = Path(__file__).resolve().parents[1]


def env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "src"))


def leftovers(d: Path) -> list[str]:
    return sorted(n for n in os.listdir(d) if n.endswith((".tmp", ".old")))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("faults_infer")
    vocab = small_vocab(d / "vocab.txt")
    cls = classifier_dir(d / "cls" / "model", vocab)
    mlm = mlm_dir(d / "mlm", vocab)
    export_onnx(str(cls), "classify", str(d / "good" / "classify.onnx"))
    export_onnx(str(mlm), "fill-mask", str(d / "good" / "fill.onnx"))
    return dict(dir=d, cls=cls, mlm=mlm, good=d / "good")


@pytest.fixture
def copy(exported, tmp_path):
    """A fresh copy of the exported folder to damage."""
    dst = tmp_path / "onnx"
    shutil.copytree(exported["good"], dst, ignore=shutil.ignore_patterns(".*"))
    return dst


def flip(path: Path, at: float) -> None:
    b = bytearray(path.read_bytes())
    b[int(at * (len(b) - 1))] ^= 0x10
    path.write_bytes(bytes(b))


# ------------------------------------------------------------------------------ damaged graphs
@pytest.mark.parametrize("damage", ["flip-start", "flip-middle", "flip-end", "truncate", "empty"])
def test_damaged_graph_refused_by_every_loader(copy, damage, capsys):
    g = copy / "classify.onnx"
    if damage.startswith("flip"):
        flip(g, {"flip-start": 0.0, "flip-middle": 0.5, "flip-end": 1.0}[damage])
    else:
        g.write_bytes(g.read_bytes()[: len(g.read_bytes()) // 3] if damage == "truncate" else b"")
    with pytest.raises(IntegrityError, match=f"{g}: damaged"):
        OnnxBackend(g)
    (copy / "in.tsv").write_text("text_a\n好的\n", encoding="utf-8")
    assert cli.main(["predict", "--onnx", str(g), "--input", str(copy / "in.tsv"),
                     "--output", str(copy / "out.tsv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(g) in err[0] and "damaged" in err[0] and "Traceback" not in err[0]
    assert not (copy / "out.tsv").exists()


def test_damaged_fill_mask_graph_refused_by_the_command(copy, capsys):
    flip(copy / "fill.onnx", 0.7)
    assert cli.main(["fill-mask", "--onnx", str(copy / "fill.onnx"), "中国[MASK]"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fill.onnx: damaged" in err[0]


def test_damaged_graph_refused_by_serve(copy):
    flip(copy / "classify.onnx", 0.5)
    r = subprocess.run([sys.executable, "-m", "miniroberta.cli", "serve", "--onnx", str(copy / "classify.onnx"),
                        "--port", "0"], env=env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("miniroberta serve: error:") and "classify.onnx: damaged" in lines[-1]
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("edit", ["labels", "task", "garbage", "hash"])
def test_damaged_side_json_refused(copy, edit):
    side = copy / "classify.onnx.json"
    meta = json.loads(side.read_text(encoding="utf-8"))
    if edit == "labels":
        meta["labels"] = meta["labels"][::-1]          # swapped labels would invert every prediction
    elif edit == "task":
        meta["task"] = "embed"
    elif edit == "hash":
        meta["integrity"]["graph"]["sha256"] = "0" * 64
    text = json.dumps(meta) if edit != "garbage" else side.read_text(encoding="utf-8")[:-40]
    side.write_text(text, encoding="utf-8")
    with pytest.raises(IntegrityError, match="classify.onnx.json: (damaged or edited|unreadable)"):
        OnnxBackend(copy / "classify.onnx")


def test_damaged_vocab_beside_the_graph_refused(copy, capsys):
    flip(copy / "vocab.txt", 0.5)
    assert cli.main(["fill-mask", "--onnx", str(copy / "fill.onnx"), "中国[MASK]"]) == 2
    err = capsys.readouterr().err
    assert "vocab.txt: its SHA-256 differs" in err and "Traceback" not in err


def test_graph_without_a_recorded_hash_loads_with_a_warning_and_truncation_is_one_line(copy, capsys):
    """An export from before hashes were recorded: used (warned); truncated, onnxruntime's failure is one line."""
    side = copy / "classify.onnx.json"
    meta = json.loads(side.read_text(encoding="utf-8"))
    del meta["integrity"], meta["meta_sha256"]
    side.write_text(json.dumps(meta), encoding="utf-8")
    OnnxBackend(copy / "classify.onnx")
    assert "unverified" in capsys.readouterr().err
    g = copy / "classify.onnx"
    g.write_bytes(g.read_bytes()[:5000])
    with pytest.raises(RuntimeError, match=f"{g}: onnxruntime cannot load this graph") as e:
        OnnxBackend(g)
    assert "\n" not in str(e.value)


def test_side_json_hash_covers_its_content(exported):
    meta = json.loads((exported["good"] / "classify.onnx.json").read_text(encoding="utf-8"))
    assert meta["meta_sha256"] == meta_digest(meta)
    assert meta["integrity"]["graph"]["size"] == os.path.getsize(exported["good"] / "classify.onnx")


# ------------------------------------------------------------------------------ outputs
def test_export_refuses_an_existing_graph_unless_overwrite(exported, tmp_path, capsys):
    out = tmp_path / "o" / "c.onnx"
    shutil.copytree(exported["good"], out.parent, ignore=shutil.ignore_patterns(".*"))
    (out.parent / "classify.onnx").rename(out)
    (out.parent / "classify.onnx.json").rename(str(out) + ".json")
    before = out.read_bytes()
    args = ["export-onnx", "--model", str(exported["cls"]), "--task", "classify", "--out", str(out)]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "c.onnx already exists" in err and "--overwrite" in err and out.read_bytes() == before
    assert cli.main(args + ["--overwrite"]) == 0
    kept = sorted(p.name for p in out.parent.iterdir() if ".old-" in p.name)
    assert len(kept) == 2 and kept[0].startswith("c.onnx.json.old-") and kept[1].startswith("c.onnx.old-")
    assert (out.parent / kept[1]).read_bytes() == before
    assert OnnxBackend(out).task == "classify"
    assert leftovers(out.parent) == []


HOLD = """
import sys
from miniroberta.outputs import claim_output
c = claim_output(sys.argv[1], command="first export")
print("held", flush=True)
sys.stdin.readline()
"""


def test_second_export_to_one_out_fails_at_once_naming_the_first(exported, tmp_path):
    out = tmp_path / "busy.onnx"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], env=env(), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.time()
        r = subprocess.run([sys.executable, "-m", "miniroberta.cli", "export-onnx", "--model", str(exported["cls"]),
                            "--task", "classify", "--out", str(out)], env=env(), capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 2 and f"is being written by pid {holder.pid}" in r.stderr, r.stderr[-2000:]
        assert "first export" in r.stderr and time.time() - t0 < 120
        assert not out.exists()
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
        holder.stdout.close()


def test_dead_exports_temp_folder_is_removed(exported, tmp_path):
    """Claiming --out removes the temp folder of a killed export (its pid gone on this host), first thing."""
    out = tmp_path / "x.onnx"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".x.onnx.{utils.host_tag()}-{dead.pid}-abc123.tmp"
    stale.mkdir()
    (stale / "fp32.onnx").write_bytes(b"half")
    live = tmp_path / f".x.onnx.{utils.host_tag()}-{os.getpid()}-abc123.tmp"   # a live writer's: kept
    live.mkdir()
    with pytest.raises(ValueError, match="classifier"):     # fails after the claim, before any export work
        export_onnx(str(exported["mlm"]), "classify", str(out))
    assert not stale.exists() and live.is_dir() and not out.exists()


def test_full_disk_during_export_is_one_line(exported, tmp_path, monkeypatch):
    """The graph's write fails half-way (ENOSPC): one line naming the path, the free space and what is
    intact; the temp folder is gone, nothing is left at --out."""
    out = tmp_path / "full" / "c.onnx"

    def half_written(backend, tok, path, opset=18):
        Path(path).write_bytes(b"\x08\x07half a graph")
        raise OSError(errno.ENOSPC, "No space left on device", path)
    monkeypatch.setattr(onnx_export, "export_graph", half_written)
    with pytest.raises(utils.OutputWriteError) as e:
        export_onnx(str(exported["cls"]), "classify", str(out))
    msg = str(e.value)
    assert str(out) in msg and "no space left" in msg and "free there" in msg and "nothing was written" in msg
    assert "\n" not in msg and not out.exists() and leftovers(out.parent) == []
    assert [n for n in os.listdir(out.parent) if not n.endswith(".lock")] == []


def test_embed_refuses_an_existing_output_unless_overwrite(exported, tmp_path, capsys):
    (tmp_path / "in.txt").write_text("好的\n坏了\n", encoding="utf-8")
    out = tmp_path / "f.npy"
    out.write_bytes(b"earlier run")
    args = ["embed", "--model", str(exported["mlm"]), "--input", str(tmp_path / "in.txt"), "--output", str(out)]
    assert cli.main(args) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == b"earlier run"
    assert cli.main(args + ["--overwrite"]) == 0
    assert np.load(out).shape == (2, 128)
    assert [p.read_bytes() for p in tmp_path.glob("f.npy.old-*")] == [b"earlier run"]
