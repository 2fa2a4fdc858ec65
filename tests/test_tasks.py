"""Task readers, presets, label maps, bad-input errors and the tokenization cache.

Real-file checks read the first lines of the shared task files (copied into a temp folder
with the same layout) and UER-py's own sample files."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _ft_data as D  # noqa: E402

from miniroberta.data import tasks  # noqa: E402
from miniroberta.modeling.tokenizer import BertTokenizer  # noqa: E402

TASKS_DIR = D.SHARED / "tasks"
UER_DIR = D.SHARED / "uer" / "datasets" / "test_data"
needs_data = pytest.mark.skipif(not TASKS_DIR.is_dir(), reason="shared data not available")


@pytest.fixture(scope="module")
def head_dir(tmp_path_factory):
    """The first 40 lines of every shared task file, same layout as the data dir."""
    if not TASKS_DIR.is_dir():
        pytest.skip("shared data not available")
    root = tmp_path_factory.mktemp("tasks")
    for spec in tasks.TASKS.values():
        (root / spec.name).mkdir()
        for name in (spec.train, spec.dev, spec.test):
            if name:
                with open(TASKS_DIR / spec.name / name, encoding="utf-8") as f:
                    lines = [next(f) for _ in range(40)]
                (root / spec.name / name).write_text("".join(lines), encoding="utf-8")
    return root


@needs_data
def test_every_preset_resolves_to_existing_files():
    for name, spec in tasks.TASKS.items():
        files = tasks.resolve_task(name, str(TASKS_DIR))
        assert os.path.isfile(files.train_path) and os.path.isfile(files.dev_path), name
        assert files.test_path is None or os.path.isfile(files.test_path)
    assert "partial" in tasks.TASKS["iflytek"].note and "train_partial_fewclue.json" in tasks.resolve_task(
        "iflytek", str(TASKS_DIR)).train_path


def test_presets_read_first_lines_of_each_real_file(head_dir):
    expect = {
        "book_review": (("text_a",), "1", "洋洋洒洒五百多页"),
        "chnsenticorp": (("text_a",), "1", "這間酒店環境"),
        "lcqmc": (("text_a", "text_b"), "1", "开初婚未育证明怎么弄？"),
        "tnews": (("sentence",), "102", "江疏影甜甜圈自拍"),
        "iflytek": (("sentence",), "110", "朴朴快送超市"),
        "ocnli": (("sentence1", "sentence2"), "entailment", "身上裹一件工厂发的棉大衣"),
    }
    for name, (fields, first_label, first_text) in expect.items():
        f = tasks.resolve_task(name, str(head_dir))
        dev = tasks.read_examples(f.dev_path, f.text_fields, f.label_field, drop_labels=f.drop_labels)
        assert dev.text_fields == fields
        assert dev.labels[0] == first_label, name
        assert dev.texts[0][0].startswith(first_text), name
        assert dev.lines[0] == (2 if f.dev_path.endswith(".tsv") else 1)
    # lcqmc: label is the LAST column; text_b read by name
    lc = tasks.read_examples(tasks.resolve_task("lcqmc", str(head_dir)).dev_path, ("text_a", "text_b"))
    assert lc.texts[1][0] == "初婚未育情况证明怎么开？" and lc.labels[:2] == ["1", "0"]


def test_unlabeled_clue_test_files_keep_their_ids(head_dir):
    for name in ("tnews", "iflytek", "ocnli"):
        f = tasks.resolve_task(name, str(head_dir))
        te = tasks.read_examples(f.test_path, f.text_fields, require_label=False, id_field=f.id_field)
        assert te.labels is None and te.ids[:3] == [0, 1, 2] and len(te) == 40
        assert tasks.TASKS[name].submission == "clue"


@needs_data
def test_tnews_label_codes_map_in_numeric_order():
    codes = [json.loads(l)["label"] for l in (TASKS_DIR / "tnews" / "labels.json").read_text().splitlines()]
    lm = tasks.LabelMap.from_labels(codes)
    assert len(lm) == 15 and "105" not in lm.labels and "111" not in lm.labels
    assert lm.labels[0] == "100" and lm.labels[-1] == "116"
    assert lm.label2id["106"] == 5 and lm.id2label[5] == "106"   # the gap at 105 is closed


def test_label_map_orders_numbers_numerically_and_strings_alphabetically():
    assert tasks.LabelMap.from_labels(["10", "9", "100", "9"]).labels == ["9", "10", "100"]
    assert tasks.LabelMap.from_labels(["neutral", "entailment", "contradiction"]).labels == \
        ["contradiction", "entailment", "neutral"]
    with pytest.raises(tasks.TaskDataError, match="at least 2"):
        tasks.LabelMap.from_labels(["1", "1"])


def test_ocnli_dash_labels_are_dropped_and_counted(tmp_path):
    p = tmp_path / "dev.json"
    recs = [{"sentence1": "甲", "sentence2": "乙", "label": lab, "id": i}
            for i, lab in enumerate(["entailment", "-", "neutral", "-", "contradiction"])]
    p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")
    d = tasks.read_examples(str(p), ("sentence1", "sentence2"), drop_labels=("-",))
    assert d.labels == ["entailment", "neutral", "contradiction"] and d.dropped == 2 and d.lines == [1, 3, 5]


@pytest.mark.skipif(not UER_DIR.is_dir(), reason="UER samples not available")
def test_uer_sample_files():
    for task in ("book_review", "chnsenticorp"):
        tr = tasks.read_examples(str(UER_DIR / task / "train.tsv"))
        assert tr.text_fields == ("text_a",) and set(tr.labels) == {"0", "1"}
        assert len(tr) == len((UER_DIR / task / "train.tsv").read_text(encoding="utf-8").splitlines()) - 1
        te = tasks.read_examples(str(UER_DIR / task / "test_nolabel.tsv"), require_label=False)
        assert te.labels is None and len(te) == 50
        with pytest.raises(tasks.TaskDataError, match="no label column"):
            tasks.read_examples(str(UER_DIR / task / "test_nolabel.tsv"))


def test_uer_style_pair_tsv_and_explicit_fields(tmp_path):
    p = tmp_path / "train.tsv"
    p.write_text("label\ttext_a\ttext_b\tid\n1\t你好\t您好\tx7\n0\t早上\t晚上\tx8\n", encoding="utf-8")
    d = tasks.read_examples(str(p), id_field="id")
    assert d.text_fields == ("text_a", "text_b") and d.ids == ["x7", "x8"]
    d1 = tasks.read_examples(str(p), text_fields=["text_b"])
    assert d1.texts == [["您好", "晚上"]]
    q = tmp_path / "custom.tsv"
    q.write_text("y\tcontent\n2\t内容\n", encoding="utf-8")
    assert tasks.read_examples(str(q), text_fields=["content"], label_field="y").labels == ["2"]


# ------------------------------------------------------------------------ bad inputs
def _tsv(tmp_path, body: str, name="data.tsv") -> str:
    p = tmp_path / name
    p.write_text(body, encoding="utf-8")
    return str(p)


@pytest.mark.parametrize("body,line,msg", [
    ("label\ttext_a\n1\t好\n0\n", 3, "expected 2 tab-separated columns"),
    ("label\ttext_a\n1\t好\n0\t  \n", 3, "empty text"),
    ("label\ttext_a\n1\t好\n\t坏\n", 3, "empty label"),
    ("label\ttext_a\n1\t好\n\n0\t坏\n", 3, "empty line"),
    ("label\ttext_a\n1\t好\n0\t坏\textra\n", 3, "expected 2"),
])
def test_bad_tsv_rows_name_file_and_line(tmp_path, body, line, msg):
    path = _tsv(tmp_path, body)
    with pytest.raises(tasks.TaskDataError, match=msg) as e:
        tasks.read_examples(path)
    assert f"{path}:{line}:" in str(e.value) and "--skip_bad_rows" in str(e.value)
    d = tasks.read_examples(path, skip_bad_rows=True)
    assert d.skipped == 1 and len(d) == len(body.strip("\n").split("\n")) - 2   # header + the bad row
    assert d.bad_rows and f"{path}:{line}:" in d.bad_rows[0]


@pytest.mark.parametrize("lines,line,msg", [
    (['{"sentence": "好", "label": "1"}', '{"sentence": "坏", "label": '], 2, "bad JSON"),
    (['{"sentence": "好", "label": "1"}', '{"text": "坏", "label": "0"}'], 2, "lacks the field"),
    (['{"sentence": "好", "label": "1"}', '{"sentence": "", "label": "0"}'], 2, "empty text"),
    (['{"sentence": "好", "label": "1"}', '{"sentence": "坏"}'], 2, "no label field"),
    (['{"sentence": "好", "label": "1"}', '[1, 2]'], 2, "must be an object"),
])
def test_bad_json_rows_name_file_and_line(tmp_path, lines, line, msg):
    p = tmp_path / "train.json"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(tasks.TaskDataError, match=msg) as e:
        tasks.read_examples(str(p))
    assert f"{p}:{line}:" in str(e.value)
    d = tasks.read_examples(str(p), skip_bad_rows=True)
    assert d.skipped == 1 and len(d) == 1


def test_missing_columns_and_files(tmp_path):
    with pytest.raises(tasks.TaskDataError, match="lacks the text column"):
        tasks.read_examples(_tsv(tmp_path, "label\ttext_a\n1\t好\n"), text_fields=["text_b"])
    with pytest.raises(tasks.TaskDataError, match="cannot tell which columns"):
        tasks.read_examples(_tsv(tmp_path, "label\tbody\n1\t好\n"))
    with pytest.raises(FileNotFoundError):
        tasks.read_examples(str(tmp_path / "nope.tsv"))
    with pytest.raises(tasks.TaskDataError, match="unknown task"):
        tasks.resolve_task("cmnli")
    with pytest.raises(tasks.TaskDataError, match="unknown task"):
        tasks.parse_tasks("tnews,foo")
    assert tasks.parse_tasks("all") == list(tasks.TASK_NAMES) and tasks.parse_tasks("tnews, ocnli") == ["tnews", "ocnli"]


def test_dev_label_unseen_in_train_names_file_and_line(tmp_path):
    tr = tasks.read_examples(_tsv(tmp_path, "label\ttext_a\n0\t好\n1\t坏\n", "train.tsv"))
    dv_path = _tsv(tmp_path, "label\ttext_a\n0\t好\n1\t坏\n2\t中\n", "dev.tsv")
    lm = tasks.LabelMap.from_labels(tr.labels)
    with pytest.raises(tasks.TaskDataError, match="does not occur in the train set") as e:
        lm.encode(tasks.read_examples(dv_path))
    assert f"{dv_path}:4:" in str(e.value) and "'2'" in str(e.value)


# ------------------------------------------------------------------------ encoding + cache
@pytest.fixture()
def tok(tmp_path):
    return BertTokenizer(D.write_vocab(tmp_path / "vocab.txt"))


def test_pair_encoding_longest_first_types_and_padding(tmp_path, tok):
    p = _tsv(tmp_path, "text_a\ttext_b\tlabel\n好好好好好好好好\t坏坏\t1\n甲\t乙丙\t0\n")
    d = tasks.read_examples(p)
    enc = tasks.encode_data(tok, d, seq_length=8)
    ids, types, mask = enc.batch([0, 1])
    cls, sep = tok.cls_id, tok.sep_id
    # example 0: budget 5 -> a keeps 3, b keeps 2 (longest first)
    assert ids[0].tolist() == [cls] + tok.convert_tokens_to_ids(list("好好好")) + [sep] + \
        tok.convert_tokens_to_ids(list("坏坏")) + [sep]
    assert types[0].tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    # example 1 is padded to the batch's longest (8)
    assert mask[1].tolist() == [1] * 6 + [0, 0] and ids[1, 6:].tolist() == [tok.pad_id] * 2
    assert types[1].tolist() == [0, 0, 0, 1, 1, 1, 0, 0]
    concat = tasks.encode_data(tok, d, seq_length=8, truncation="concat")
    assert concat.batch([0])[0][0].tolist()[:8] == [cls] + tok.convert_tokens_to_ids(list("好" * 7))


def test_tokenization_cache_is_keyed_and_reused(tmp_path, tok):
    p = _tsv(tmp_path, "label\ttext_a\n1\t好的\n0\t坏了\n")
    d = tasks.read_examples(p)
    cache = str(tmp_path / "cache")
    a = tasks.cached_encode(tok, d, 16, cache_dir=cache)
    files = sorted((tmp_path / "cache" / "tokenized").glob("*.npz"))
    assert len(files) == 1
    b = tasks.cached_encode(tok, d, 16, cache_dir=cache)
    assert np.array_equal(a.ids, b.ids) and np.array_equal(a.offsets, b.offsets)
    tasks.cached_encode(tok, d, 8, cache_dir=cache)                       # other seq_length: new entry
    assert len(list((tmp_path / "cache" / "tokenized").glob("*.npz"))) == 2
    # a changed file gets a new key (content hash), never a stale entry
    Path(p).write_text("label\ttext_a\n1\t甲乙\n0\t丙\n", encoding="utf-8")
    c = tasks.cached_encode(tok, tasks.read_examples(p), 16, cache_dir=cache)
    assert c.ids.tolist() != a.ids.tolist()
    assert not list((tmp_path / "cache" / "tokenized").glob("*.tmp"))


def test_subsample_is_deterministic():
    a, b = tasks.subsample(100, 10, seed=0), tasks.subsample(100, 10, seed=0)
    assert a.tolist() == b.tolist() and len(set(a.tolist())) == 10
    assert tasks.subsample(5, 10) is None and tasks.subsample(5, None) is None
