"""Fault injection for the study's writers and the HF export (marker ``faults``): an export's integrity.json
covers every file and a flipped byte or swapped labels in any of them is refused naming it; an old export
(weights-only manifest) still loads; `report` claims its output; a full disk is one line."""
from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from miniroberta import integrity, utils
from miniroberta.interop.checkpoint import load_finetuned, load_model, load_weights, save_native
from miniroberta.interop.export import write_hf_dir
from miniroberta.modeling.bert import BertForMaskedLM, BertForSequenceClassification
from miniroberta.modeling.config import preset

pytestmark = pytest.mark.faults

REPO = Path(__file__).resolve().parents[1]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _vocab(path: Path, n: int = 64) -> str:
    path.write_text("\n".join(SPECIAL + [f"t{i}" for i in range(n - len(SPECIAL))]) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture
def classifier(tmp_path) -> Path:
    """A fine-tuned-classifier folder as finetune writes it: weights, config with id2label, vocab, tokenizer
    files, card, finetune.json with the labels."""
    cfg = preset("tiny", vocab_size=64, num_labels=2)
    from miniroberta.modeling.config import replace
    cfg = replace(cfg, id2label={0: "negative", 1: "positive"})
    torch.manual_seed(0)
    out = tmp_path / "model"
    ft = {"task": "chnsenticorp", "labels": ["negative", "positive"], "seq_length": 32, "text_fields": ["text_a"]}
    write_hf_dir(BertForSequenceClassification(cfg).state_dict(), cfg, _vocab(tmp_path / "v.txt"), str(out),
                 architecture="BertForSequenceClassification", card="# card\n",
                 extra_files={"finetune.json": json.dumps(ft)})
    return out


def test_the_export_manifest_covers_every_file(classifier):
    m = json.loads((classifier / integrity.DIR_MANIFEST).read_text())
    on_disk = sorted(p.name for p in classifier.iterdir() if p.name != integrity.DIR_MANIFEST)
    assert sorted(m["files"]) == on_disk and m["complete"] is True
    assert {"vocab.txt", "config.json", "finetune.json", "README.md", "tokenizer_config.json",
            "special_tokens_map.json", "model.safetensors"} <= set(m["files"])
    assert integrity.verify_dir(classifier) is True
    model, ft = load_finetuned(str(classifier))
    assert ft["labels"] == ["negative", "positive"]


@pytest.mark.parametrize("name", ["vocab.txt", "config.json", "finetune.json", "tokenizer_config.json", "README.md"])
def test_a_flipped_byte_in_any_export_file_is_refused_naming_it(classifier, name):
    p = classifier / name
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0x01
    p.write_bytes(bytes(b))
    for load in (lambda: load_weights(classifier), lambda: load_finetuned(str(classifier)),
                 lambda: load_model(classifier, "cls")):
        with pytest.raises(integrity.IntegrityError) as e:
            load()
        msg = str(e.value)
        assert msg.startswith(f"{p}: damaged") and "\n" not in msg


def test_swapped_labels_are_refused(classifier):
    """Inverting the labels (finetune.json or config.json's id2label) would invert every prediction: refused."""
    fj = classifier / "finetune.json"
    ft = json.loads(fj.read_text())
    ft["labels"] = ft["labels"][::-1]
    fj.write_text(json.dumps(ft))
    with pytest.raises(integrity.IntegrityError, match=r"finetune\.json: damaged"):
        load_finetuned(str(classifier))
    fj.write_text(json.dumps({**ft, "labels": ft["labels"][::-1]}))     # restored byte for byte? not quite:
    integrity.update_dir(classifier, ["finetune.json"])               # re-recorded by a writer: accepted
    load_finetuned(str(classifier))
    cj = classifier / "config.json"
    c = json.loads(cj.read_text())
    c["id2label"] = {"0": "positive", "1": "negative"}
    c["label2id"] = {"positive": 0, "negative": 1}
    cj.write_text(json.dumps(c, indent=2))
    with pytest.raises(integrity.IntegrityError, match=r"config\.json: damaged"):
        load_finetuned(str(classifier))


def test_a_file_added_or_removed_after_the_export_is_refused(classifier):
    (classifier / "tokenizer.json").write_text("{}")
    with pytest.raises(integrity.IntegrityError, match=r"tokenizer\.json: not in .*integrity\.json"):
        load_weights(classifier)
    (classifier / "tokenizer.json").unlink()
    (classifier / "vocab.txt").unlink()
    with pytest.raises(integrity.IntegrityError, match=r"vocab\.txt: missing"):
        load_weights(classifier)


def test_an_old_export_with_a_weights_only_manifest_loads_with_the_old_check(classifier):
    """Exports written before the manifest covered every file list model.safetensors only: the weights are
    still checked, the other files load unverified (docs/safety.md)."""
    m = json.loads((classifier / integrity.DIR_MANIFEST).read_text())
    old = {"format": m["format"], "files": {"model.safetensors": m["files"]["model.safetensors"]}}
    (classifier / integrity.DIR_MANIFEST).write_text(json.dumps(old))
    v = classifier / "vocab.txt"
    v.write_bytes(v.read_bytes() + b"extra\n")
    load_finetuned(str(classifier))                          # the old check: weights only
    w = classifier / "model.safetensors"
    b = bytearray(w.read_bytes())
    b[-3] ^= 0x01
    w.write_bytes(bytes(b))
    with pytest.raises(integrity.IntegrityError, match=r"model\.safetensors: damaged"):
        load_finetuned(str(classifier))


def test_cli_names_the_damaged_vocab_in_one_line(tmp_path):
    cfg = preset("tiny", vocab_size=64)
    torch.manual_seed(0)
    save_native(tmp_path / "m.safetensors", BertForMaskedLM(cfg).state_dict(), cfg, {"step": 1})
    vocab = _vocab(tmp_path / "v.txt")
    r = subprocess.run([sys.executable, "-m", "miniroberta.cli", "convert", "--input_model_path",
                        str(tmp_path / "m.safetensors"), "--output_model_path", str(tmp_path / "hf"), "--vocab_path",
                        vocab], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    v = tmp_path / "hf" / "vocab.txt"
    v.write_text(v.read_text().replace("t1\n", "t2\n", 1))
    r = subprocess.run([sys.executable, "-m", "miniroberta.cli", "convert", "--input_model_path", str(tmp_path / "hf"),
                        "--output_model_path", str(tmp_path / "again.safetensors")], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"miniroberta convert: error: {v}: damaged")


def test_full_disk_while_writing_an_export_is_one_line(tmp_path, monkeypatch):
    cfg = preset("tiny", vocab_size=64)
    vocab = _vocab(tmp_path / "v.txt")
    sd = BertForMaskedLM(cfg).state_dict()
    write_hf_dir(sd, cfg, vocab, str(tmp_path / "hf"))
    before = {p.name: p.read_bytes() for p in (tmp_path / "hf").iterdir()}

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr("miniroberta.interop.export.shutil.copyfile", full)
    with pytest.raises(utils.OutputWriteError) as e:
        write_hf_dir(sd, cfg, vocab, str(tmp_path / "hf"), overwrite=True)
    msg = str(e.value)
    assert "no space left" in msg and "is intact" in msg and str(tmp_path / "hf") in msg and "\n" not in msg
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in (tmp_path / "hf").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "v.txt"]       # no temp folder left


def _summary(d: Path) -> Path:
    d.mkdir(parents=True)
    row = dict(setting="e3_b32_lr0.0001", epochs=3, batch=32, lr=1e-4, n_seeds=1, best_dev_acc_mean=0.8,
               best_dev_acc_std=0.0, last_dev_acc_mean=0.79, last_dev_acc_std=0.0, macro_f1_mean=0.78, macro_f1_std=0.0)
    s = dict(kind="miniroberta-grid", out_dir=str(d), model=dict(name="L2_H128", num_parameters=3_200_000,
                                                                   pretrained_model_path="/m/x.safetensors"),
             tasks={"tnews": dict(best=row, best_by_last_epoch=row, settings=[row], note="", subsampled=False)})
    (d / "summary.json").write_text(json.dumps(s))
    return d


def test_report_claims_its_output(tmp_path):
    g = _summary(tmp_path / "g")
    out = tmp_path / "rep"
    cmd = [sys.executable, "-m", "miniroberta.cli", "report", str(g), "--out", str(out), "--reference"]
    assert subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120).returncode == 0
    md = (out / "report.md").read_bytes()
    (out / "notes.txt").write_text("mine")                          # not the report's: never touched
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "already exists" in r.stderr and "--overwrite" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and (out / "report.md").read_bytes() == md
    r = subprocess.run(cmd + ["--overwrite"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    old = [p.name for p in out.iterdir() if ".old-" in p.name]
    assert any(n.startswith("report.md.old-") for n in old) and (out / "notes.txt").read_text() == "mine"


def test_report_on_a_full_disk_is_one_line(tmp_path, monkeypatch):
    from miniroberta.finetune.report import build_report
    g = _summary(tmp_path / "g")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr("os.fsync", full)
    with pytest.raises(utils.OutputWriteError, match="no space left"):
        build_report([str(g)], out_dir=str(tmp_path / "rep"), reference=False)
