"""Model cards (interop/cards.py): YAML front matter and model-index that a model hub parses, scores with their
flags, label names with their meaning, no local paths. Parsed offline with huggingface_hub when it is there."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from miniroberta.interop.cards import (Score, classifier_card, export_card, label_meanings, model_index, scores_from,
                                       study_card)
from miniroberta.modeling.config import preset

hub = pytest.importorskip("huggingface_hub")
from huggingface_hub import ModelCard  # noqa: E402
from huggingface_hub.repocard_data import model_index_to_eval_results  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _parse(text: str) -> tuple[dict, str, list]:
    card = ModelCard(text)                       # offline: parses the YAML block, never calls the Hub
    meta = card.data.to_dict()
    name, results = model_index_to_eval_results(meta["model-index"]) if "model-index" in meta else (None, [])
    return meta, name, results


def test_export_card_front_matter_and_no_local_paths_or_raw_keys():
    meta = {"step": 200, "tokens_seen": 123456789, "final_loss": 6.1234, "dataset": "/home/u/runs/data/seq128",
            "pretrained_from": "models/x_seq128_model.bin-200", "vocab_path": "/home/u/vocab.txt",
            "converted_from": "/home/u/models/x_seq128_model.bin-200", "dataset_hash": "ab" * 32,
            "eval_loss": 5.5, "precision": "bf16", "some_internal_key": "value"}
    text = export_card(preset("tiny"), meta, scores={"chnsenticorp": 0.914, "tnews": 62.0}, type="mlm")
    for leak in ("/home/u", "models/x_seq128_model.bin-200", "bin-200", "some_internal_key", "dataset_hash",
                 "vocab_path", "converted_from", "pretrained_from"):
        assert leak not in text, leak
    for want in ("| Steps | 200 |", "| Tokens seen | 123,456,789 |", "| Final MLM loss | 6.123 |",
                 "| Dataset | seq128 |", "| Held-out MLM loss | 5.5 |", "| Initialised from | an earlier checkpoint",
                 "## Intended use and limitations", "pipeline('fill-mask'"):
        assert want in text, want
    meta_, name, results = _parse(text)
    assert (meta_["language"], meta_["license"], meta_["library_name"], meta_["pipeline_tag"]) == \
        ("zh", "apache-2.0", "transformers", "fill-mask")
    assert meta_["datasets"] == ["chnsenticorp", "clue"] and "chinese" in meta_["tags"]
    assert name == "miniroberta L2_H128"
    assert {(r.dataset_config or r.dataset_type, r.metric_type, r.metric_value) for r in results} == \
        {("chnsenticorp", "accuracy", 91.4), ("tnews", "accuracy", 62.0)}


def test_export_card_without_scores_has_no_model_index_and_still_parses():
    text = export_card(preset("medium"), {}, type="bert")
    meta, name, results = _parse(text)
    assert "model-index" not in meta and meta["pipeline_tag"] == "fill-mask" and not results
    assert "records no training information" in text and "BertForPreTraining" in text


def test_study_card_keeps_the_flags_and_the_no_pretraining_row():
    ours = [Score("book_review", 70.4, "†"), Score("iflytek", 12.7, "†‡"), Score("tnews", 50.0)]
    base = [Score("book_review", 66.0, "†"), Score("iflytek", 10.1, "†‡"), Score("tnews", 48.2)]
    text = study_card(preset("tiny"), "miniroberta L2_H128", [("Steps", 12500), ("Final MLM loss", 6.19)], ours, base,
                      training=["Masked-language modelling ..."])
    lines = text.splitlines()
    assert "| miniroberta L2_H128 | 70.4† | 12.7†‡ | 50.0 |" in lines
    assert "| L2_H128 · no pretraining | 66.0† | 10.1†‡ | 48.2 |" in lines
    assert any(line.startswith("† trained on a deterministic subsample") for line in lines)
    assert any(line.startswith("‡ iflytek is trained on the partial") for line in lines)
    assert "| Steps | 12,500 |" in lines and "## Training data and budget" in text
    meta, name, results = _parse(text)
    got = {r.dataset_config or r.dataset_type: (r.metric_value, r.metric_name) for r in results}
    assert got == {"book_review": (70.4, "dev accuracy (%) †"), "iflytek": (12.7, "dev accuracy (%) †‡"),
                   "tnews": (50.0, "dev accuracy (%)")}
    assert name == "miniroberta L2_H128" and set(meta["datasets"]) == {"book_review", "clue"}


def test_scores_from_a_grid_summary_carry_the_flags():
    details = {"iflytek": {"subsampled": True, "note": "partial train"}, "tnews": {"subsampled": False}}
    s = {x.task: x for x in scores_from({"iflytek": 12.7, "tnews": 0.5}, details, percent=True)}
    assert s["iflytek"].flags == "†‡" and s["tnews"].flags == "" and s["tnews"].value == 0.5
    assert scores_from({"tnews": 0.5}, percent=False)[0].value == 50.0


@pytest.mark.skipif(not (DATA / "tasks" / "tnews" / "labels.json").is_file(), reason="shared task data missing")
def test_label_meanings_from_the_task_label_files_and_known_tasks():
    m = label_meanings("tnews", ["100", "101", "116"], str(DATA / "tasks"))
    assert m == {"100": "news_story", "101": "news_culture", "116": "news_game"}
    assert label_meanings("chnsenticorp", ["0", "1"], str(DATA / "tasks")) == {"0": "negative", "1": "positive"}
    assert label_meanings("iflytek", ["0"], str(DATA / "tasks")) == {"0": "打车"}
    assert label_meanings("ocnli", ["entailment"])["entailment"].startswith("the hypothesis follows")
    assert label_meanings("unknown_task", ["a"], str(DATA / "tasks")) == {}


def test_classifier_card_labels_subsample_and_scores(tmp_path):
    """What finetune's card must say: the task, its labels with their meaning, the 1,000-example subsample, the
    dev scores (flagged †), the base model by name; a hub parses it."""
    text = classifier_card(preset("tiny", num_labels=2), "chnsenticorp", ["0", "1"], dev_accuracy=0.8725,
                           dev_macro_f1=0.8711, n_train=1000, n_train_total=9600, n_dev=1200, n_dev_total=1200,
                           base_model="/home/u/runs/quickstart/hf_model", settings={"epochs": 3, "batch_size": 32,
                                                                                    "learning_rate": 1e-4})
    assert "| 0 | 0 | negative |" in text and "| 1 | 1 | positive |" in text
    assert "1,000 examples of 9,600 (a deterministic subsample" in text and "/home/u" not in text
    assert "from the pretrained `hf_model`" in text and "| chnsenticorp |" in text and "87.2†" in text
    meta, name, results = _parse(text)
    assert meta["pipeline_tag"] == "text-classification" and meta["datasets"] == ["chnsenticorp"]
    assert name == "L2_H128 fine-tuned on chnsenticorp"
    assert sorted((r.metric_type, r.metric_value, r.metric_name) for r in results) == \
        [("accuracy", 87.25, "dev accuracy (%) †"), ("f1", 87.11, "dev macro-F1 (%) †")]
    # a file written to disk loads with ModelCard.load too
    p = tmp_path / "README.md"
    p.write_text(text, encoding="utf-8")
    assert ModelCard.load(p).data.to_dict()["license"] == "apache-2.0"
    # random init: said, no subsample flag when the whole train set was used
    t2 = classifier_card(preset("tiny", num_labels=3), "ocnli", ["contradiction", "entailment", "neutral"],
                         dev_accuracy=61.0, n_train=50437, n_train_total=50437, pretrained=False)
    assert "random initialisation (no pretraining)" in t2 and "61.0 |" in t2 and "61.0†" not in t2
    assert "| 0 | contradiction | the hypothesis contradicts the premise |" in t2


def test_yaml_strings_are_quoted_safely():
    text = export_card(preset("tiny"), {}, name='a "quoted": name # not a comment', type="mlm",
                       scores={"tnews": 50.0})
    meta, name, _ = _parse(text)
    assert name == 'a "quoted": name # not a comment'


def test_export_checkpoint_card_parses_and_model_index_matches(tmp_path):
    from miniroberta.interop.checkpoint import save_native
    from miniroberta.interop.export import export_checkpoint
    from miniroberta.modeling.bert import BertForMaskedLM
    cfg = preset("tiny", vocab_size=40)
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
                                                  + [f"t{i}" for i in range(35)]) + "\n", encoding="utf-8")
    torch.manual_seed(0)
    save_native(tmp_path / "m.safetensors", BertForMaskedLM(cfg).state_dict(), cfg,
                {"step": 7, "vocab_path": str(tmp_path / "vocab.txt"), "pretrained_from": str(tmp_path / "x-2")})
    out = export_checkpoint(tmp_path / "m.safetensors", tmp_path / "hf", scores={"ocnli": 0.6})
    text = (Path(out) / "README.md").read_text(encoding="utf-8")
    assert str(tmp_path) not in text
    meta, name, results = _parse(text)
    assert results[0].dataset_config == "ocnli" and results[0].metric_value == 60.0
    assert model_index(name, [Score("ocnli", 60.0)]) == meta["model-index"]
    files = json.loads((Path(out) / "integrity.json").read_text())
    assert "README.md" in files["files"] and files["complete"] is True
