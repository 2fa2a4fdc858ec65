"""Fault injection on the data side (marker ``faults``): flipped bytes in a dataset's arrays, a truncated
array, a dataset written before chunk hashes, and a full disk / read-only file system under ``preprocess``
and ``convert`` (each a one-line error naming the path, nothing left behind)."""
from __future__ import annotations

import builtins
import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest

import miniroberta.interop.export as export_mod
from miniroberta.cli import main as cli_main
from miniroberta.data import chunks
from miniroberta.data.dataset import UNVERIFIED_WARNING, DatasetError, MlmDataset, default_manifest
from miniroberta.data.masking import MaskingConfig, SpecialIds
from miniroberta.data.preprocess import assemble as assemble_mod
from miniroberta.data.preprocess import build_dataset
from miniroberta.data.preprocess import shards as shards_mod
from miniroberta.interop.checkpoint import save_native
from miniroberta.modeling.bert import BertForMaskedLM
from miniroberta.modeling.tokenizer import read_vocab
from miniroberta.pretrain.batches import BatchSource, Stream

pytestmark = pytest.mark.faults


def leftovers(d: Path) -> list[str]:
    return sorted(n for n in os.listdir(d) if n.endswith((".tmp", ".old")))


@pytest.fixture(scope="module")
def big_dataset(tmp_path_factory):
    """600k instances, ~10.5 M tokens with word starts (tokens.npy 21 chunks, offsets 5, word_starts 11),
    written once from arrays; tests copy it."""
    d = tmp_path_factory.mktemp("big") / "ds"
    d.mkdir()
    rng = np.random.default_rng(1)
    lens = rng.integers(3, 33, 600_000)
    offsets = np.concatenate(([0], np.cumsum(lens)))
    tokens = rng.integers(5, 64, int(offsets[-1])).astype(np.uint16)
    tokens[offsets[:-1]], tokens[offsets[1:] - 1] = 2, 3                   # [CLS] ... [SEP]
    np.save(d / "tokens.npy", tokens)
    np.save(d / "offsets.npy", offsets)
    np.save(d / "word_starts.npy", rng.integers(0, 2, len(tokens)).astype(np.uint8))
    m = default_manifest(vocab_sha256="0" * 64, vocab_size=64, seq_length=32, num_instances=len(lens),
                         num_tokens=len(tokens), dtype="uint16", whole_word_masking=True)
    m[chunks.KEY] = chunks.hash_dir_arrays(str(d))
    (d / "manifest.json").write_text(json.dumps(m))
    return d


def copy_of(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def flip(path: Path, where: float) -> int:
    b = bytearray(path.read_bytes())
    i = min(len(b) - 1, int(len(b) * where))
    b[i] ^= 0x01
    path.write_bytes(bytes(b))
    return i


def read_everything(ds: MlmDataset) -> None:
    """Instances spaced closer than a chunk: every chunk of every array is read."""
    for i in [*range(0, len(ds), 8000), len(ds) - 1]:
        ds[i]
        ds.word_start_flags(i)


@pytest.mark.parametrize("name", ["tokens.npy", "offsets.npy", "word_starts.npy"])
@pytest.mark.parametrize("where", [0.0005, 0.5, 0.9995])
def test_flipped_byte_in_an_array_is_refused_naming_it(tmp_path, big_dataset, name, where):
    ds_path = copy_of(big_dataset, tmp_path / "ds")
    before = [MlmDataset(ds_path)[i].tolist() for i in (0, 300_000, 599_999)]
    at = flip(ds_path / name, where)
    with pytest.raises(DatasetError) as e:
        read_everything(MlmDataset(ds_path))           # the first/last chunk at open, the others when read
    msg = str(e.value)
    assert str(ds_path / name) in msg and "re-run" in msg and "preprocess" in msg and "\n" not in msg
    if "SHA-256" in msg:                                # the hash names the byte range that holds the flip
        lo, hi = (int(x.replace(",", "")) for x in msg.split("bytes ")[1].split(" (")[0].split("-"))
        assert lo <= at < hi
    flip(ds_path / name, where)                         # flipped back: the same data again
    ds = MlmDataset(ds_path)
    read_everything(ds)
    assert [ds[i].tolist() for i in (0, 300_000, 599_999)] == before


def test_each_chunk_is_verified_once_and_only_when_read(tmp_path, big_dataset):
    ds = MlmDataset(big_dataset)
    opened = ds.verification()
    assert opened["tokens.npy"][0] < opened["tokens.npy"][1]   # opening does not read the whole dataset
    flip(copy_of(big_dataset, tmp_path / "d2") / "tokens.npy", 0.17)     # chunk 4 of 21: not read at open
    damaged = MlmDataset(tmp_path / "d2")
    damaged[0]                                                 # instances outside the damaged chunk read fine
    with pytest.raises(DatasetError):
        read_everything(damaged)
    read_everything(ds)
    assert all(v == t for v, t in ds.verification().values())
    chunk_hash = chunks.ChunkVerifier.verify_chunk
    calls = []
    ds._vt.verify_chunk = lambda c: calls.append(c) or chunk_hash(ds._vt, c)
    read_everything(ds)                                        # all verified: nothing is hashed again
    assert calls == []


def test_damage_reaches_training_as_one_error(tmp_path, big_dataset, vocab_file):
    ds_path = copy_of(big_dataset, tmp_path / "ds")
    flip(ds_path / "tokens.npy", 0.5)
    ds = MlmDataset(ds_path)
    src = BatchSource(ds, Stream(len(ds), 3), SpecialIds.from_vocab(read_vocab(vocab_file)), MaskingConfig(),
                      batch_size=64, world=1, rank=0, j0=0, workers=2, pad_multiple=8)
    try:
        with pytest.raises(DatasetError, match=r"tokens\.npy: bytes .* differ from the SHA-256"):
            for _ in range(200):
                src.next()
    finally:
        src.close()


def test_truncated_array_refused_at_open(tmp_path, big_dataset):
    ds_path = copy_of(big_dataset, tmp_path / "ds")
    data = (ds_path / "tokens.npy").read_bytes()
    (ds_path / "tokens.npy").write_bytes(data[:-1000])
    with pytest.raises(DatasetError, match=r"tokens\.npy: .* bytes, but .* were written .*re-run"):
        MlmDataset(ds_path)


def test_dataset_without_chunk_hashes_loads_with_a_warning(tmp_path, big_dataset, capfd):
    """Datasets written before chunk hashes: read unverified after the full-pass range checks, with a
    warning naming the fix; their content hash (what a resume checks) is unchanged."""
    ds_path = copy_of(big_dataset, tmp_path / "old")
    m = json.loads((ds_path / "manifest.json").read_text())
    new_hash = MlmDataset(ds_path).content_hash
    del m[chunks.KEY]
    (ds_path / "manifest.json").write_text(json.dumps(m))
    capfd.readouterr()
    old = MlmDataset(ds_path)
    assert UNVERIFIED_WARNING.format(path=ds_path) in old.warnings
    assert "written without chunk hashes" in capfd.readouterr().err
    assert old.content_hash == new_hash and old.verification() == {}
    assert old[123].tolist() == MlmDataset(big_dataset)[123].tolist()
    tok = np.load(ds_path / "tokens.npy", mmap_mode="r+")
    tok[5_000_000] = 63000                                     # out of the vocab: still caught at open
    tok.flush()
    del tok
    with pytest.raises(DatasetError, match="outside the vocab"):
        MlmDataset(ds_path)


# ------------------------------------------------------------------ full disk / read-only: one line
def _preprocess_argv(corpus: Path, vocab: Path, out: Path) -> list[str]:
    return ["preprocess", "--corpus_path", str(corpus), "--vocab_path", str(vocab), "--dataset_path", str(out),
            "--no_progress"]


@pytest.mark.parametrize("err,words", [(errno.ENOSPC, "no space left on the device"),
                                       (errno.EROFS, "the file system is read-only")])
@pytest.mark.parametrize("stage", ["shards", "assemble"])
def test_preprocess_disk_errors_are_one_line(tmp_path, tiny_corpus, monkeypatch, capfd, err, words, stage):
    corpus, vocab = tiny_corpus
    real_open = builtins.open

    def failing_open(file, mode="r", *a, **k):
        if "w" in mode:
            raise OSError(err, os.strerror(err), str(file))
        return real_open(file, mode, *a, **k)
    monkeypatch.setattr(shards_mod if stage == "shards" else assemble_mod, "open", failing_open, raising=False)
    out = tmp_path / "out" / "ds"
    capfd.readouterr()
    assert cli_main(_preprocess_argv(corpus, vocab, out)) == 2
    lines = [ln for ln in capfd.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("miniroberta preprocess: error: cannot write ")
    assert str(out) in lines[0] and words in lines[0] and "nothing was written" in lines[0]
    assert "Errno" not in lines[0] and not out.exists() and leftovers(out.parent) == []


def test_preprocess_disk_full_keeps_the_previous_dataset(tmp_path, tiny_corpus, monkeypatch, capfd):
    corpus, vocab = tiny_corpus
    out = tmp_path / "ds"
    assert cli_main(_preprocess_argv(corpus, vocab, out)) == 0
    before = (out / "tokens.npy").read_bytes()

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(assemble_mod, "open", full, raising=False)
    with pytest.raises(Exception) as e:                          # the library's overwrite: replace when complete
        build_dataset(corpus, vocab, out, overwrite=True, progress=False)
    assert "no space left" in str(e.value) and "the previous" in str(e.value) and "is intact" in str(e.value)
    assert (out / "tokens.npy").read_bytes() == before and leftovers(tmp_path) == []


@pytest.mark.parametrize("err,words", [(errno.ENOSPC, "no space left on the device"),
                                       (errno.EROFS, "the file system is read-only")])
@pytest.mark.parametrize("target", ["hf", "native.safetensors"])
def test_convert_disk_errors_are_one_line(tmp_path, vocab_file, tiny_model_config, monkeypatch, capfd, err, words,
                                          target):
    src = tmp_path / "m.safetensors"
    save_native(src, BertForMaskedLM(tiny_model_config).state_dict(), tiny_model_config, {"step": 1})
    real_fsync = os.fsync

    def fail(*a, **k):
        raise OSError(err, os.strerror(err))

    def fsync_fails_on_data(fd):                      # the output's temp file, not the claim's owner record
        name = os.readlink(f"/proc/self/fd/{fd}")
        if target in name and ".tmp" in name and "owner" not in name:
            fail()
        return real_fsync(fd)
    monkeypatch.setattr(export_mod, "st_save", fail)                       # HF folder: inside its temp folder
    monkeypatch.setattr(os, "fsync", fsync_fails_on_data)                 # a single file: its temp file
    out = tmp_path / "out" / target
    capfd.readouterr()
    rc = cli_main(["convert", "--input_model_path", str(src), "--output_model_path", str(out), "--vocab_path",
                   str(vocab_file)])
    lines = [ln for ln in capfd.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("miniroberta convert: error: cannot write ")
    assert str(out) in lines[0] and words in lines[0] and "Errno" not in lines[0]
    assert not out.exists() and leftovers(out.parent) == []
