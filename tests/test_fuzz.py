"""Property-based fuzzing of every reader of user files: any byte string either parses or raises the
project's own error naming the file (and ``file:line`` for undecodable lines) -- never a traceback of
another kind. About 2,500 examples in all, a few seconds."""
from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from miniroberta.data.preprocess import CorpusError, build_dataset
from miniroberta.data.tasks import TaskDataError, read_examples
from miniroberta.modeling.tokenizer import VocabError, read_vocab
from miniroberta.textio import InputError, read_text_lines

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
def fuzz(n: int) -> settings:
    return settings(max_examples=n, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck),
                    database=None)

# bytes that look like the files: separators, JSON punctuation, CJK in UTF-8, broken UTF-8, BOMs
ATOMS = [b"\t", b"\n", b"\r\n", b"\r", b" ", b"{", b"}", b'"', b":", b",", b"[", b"]", b"label", b"text_a", b"text_b",
         b"sentence", b"sentence1", b"sentence2", b"id", b"0", b"1", b"-", b"null", b"true", "好".encode(),
         "中国".encode(), b"\xe4\xb8", b"\xff", b"\xc3\x28", b"\xef\xbb\xbf", b"\x00", b"\\u4e2d", b"\\ud800", b"a"]
shaped = st.lists(st.sampled_from(ATOMS), max_size=60).map(b"".join)
raw = st.binary(max_size=300)
data_bytes = st.one_of(shaped, raw)

_n = itertools.count()


def fresh(tmp: Path, name: str, content: bytes) -> Path:
    d = tmp / f"f{next(_n)}"
    d.mkdir()
    p = d / name
    p.write_bytes(content)
    return p


def check_error(e: Exception, path: Path) -> None:
    msg = str(e)
    assert str(path) in msg, msg
    if "UTF-8" in msg:
        assert re.search(re.escape(str(path)) + r":\d+", msg), msg


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def vocab(tmp) -> Path:
    p = tmp / "vocab.txt"
    p.write_text("".join(t + "\n" for t in SPECIAL + ["好", "中", "国", "a", "##b"]), encoding="utf-8")
    return p


@fuzz(500)
@given(content=data_bytes)
def test_vocab_reader(tmp, content):
    p = fresh(tmp, "vocab.txt", content)
    try:
        v = read_vocab(p)
    except VocabError as e:
        check_error(e, p)
    else:
        assert all(t in v for t in SPECIAL)


@fuzz(700)
@given(content=data_bytes, require_label=st.booleans(), skip=st.booleans())
def test_tsv_task_reader(tmp, content, require_label, skip):
    p = fresh(tmp, "train.tsv", content)
    try:
        d = read_examples(str(p), require_label=require_label, skip_bad_rows=skip)
    except TaskDataError as e:
        check_error(e, p)
    else:
        assert len(d) == len(d.lines) == len(d.texts[0]) and all(n >= 2 for n in d.lines)


@fuzz(700)
@given(content=data_bytes, require_label=st.booleans(), skip=st.booleans())
def test_json_task_reader(tmp, content, require_label, skip):
    p = fresh(tmp, "dev.json", content)
    try:
        d = read_examples(str(p), require_label=require_label, skip_bad_rows=skip, id_field="id")
    except TaskDataError as e:
        check_error(e, p)
    else:
        assert len(d) == len(d.lines) and all(isinstance(t, str) for t in d.texts[0])


@fuzz(400)
@given(content=data_bytes, keep_blank=st.booleans())
def test_input_reader(tmp, content, keep_blank):
    p = fresh(tmp, "input.txt", content)
    try:
        rows = read_text_lines(p, keep_blank=keep_blank)
    except InputError as e:
        check_error(e, p)
    else:
        assert [n for n, _ in rows] == sorted({n for n, _ in rows})
        assert all("\n" not in t for _, t in rows)


@fuzz(150)
@given(content=data_bytes, on_error=st.sampled_from(["fail", "skip", "replace"]))
def test_corpus_reader(tmp, vocab, content, on_error):
    p = fresh(tmp, "corpus.txt", content)
    try:
        m = build_dataset(p, vocab, p.parent / "ds", seq_length=8, on_error=on_error, progress=False)
    except CorpusError as e:
        check_error(e, p)
    else:
        assert m["num_instances"] >= 1 and m["num_tokens"] >= 2
