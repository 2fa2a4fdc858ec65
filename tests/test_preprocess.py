"""Tests for `miniroberta preprocess` (corpus -> memory-mapped MLM dataset)."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest

from miniroberta.cli import main as cli_main
from miniroberta.data.dataset import MlmDataset
from miniroberta.data.preprocess import (CorpusTokenizer, PreprocessConfig, build_dataset, jieba_word_starts,
                                         word_start_bits)
from miniroberta.settings import ConfigError, flag_of, meta
from miniroberta.modeling.tokenizer import BertTokenizer, VocabError, read_vocab

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
VOCAB = DATA / "vocab" / "google_zh_vocab.txt"
SAMPLE = DATA / "corpus" / "cluecorpussmall_sampled.txt"
need_data = pytest.mark.skipif(not (VOCAB.is_file() and SAMPLE.is_file()), reason="../shared/data not present")

TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "中", "国", "人", "民", "好", "a", "##b"]
PAD, UNK, CLS, SEP, MASK, ZH, GUO, REN, MIN, HAO = range(10)


@pytest.fixture
def tiny_vocab(make_vocab) -> Path:
    return make_vocab(TINY_VOCAB[5:])


def build(corpus, vocab, out, **kw):
    kw.setdefault("progress", False)
    return build_dataset(corpus, vocab, out, **kw)


def instances(path) -> list[list[int]]:
    ds = MlmDataset(path)
    return [ds[i].tolist() for i in range(len(ds))]


def leftovers(parent: Path) -> list[str]:
    return sorted(n for n in os.listdir(parent) if n.endswith(".tmp") or n.endswith(".old"))


# ------------------------------------------------------------------ windows
def test_windows_hand_checked(tmp_path, tiny_vocab):
    corpus = tmp_path / "c.txt"
    # 7 tokens -> 4 + 3; 3 tokens; empty line -> nothing; exactly 4 -> one window; 5 -> 4 + lone [SEP];
    # last line without newline is kept
    corpus.write_text("中国人民好\n好\n\n中国\n中国人\n民", encoding="utf-8")
    m = build(corpus, tiny_vocab, tmp_path / "ds", seq_length=4)
    assert instances(tmp_path / "ds") == [
        [CLS, ZH, GUO, REN], [MIN, HAO, SEP],
        [CLS, HAO, SEP],
        [CLS, ZH, GUO, SEP],
        [CLS, ZH, GUO, REN], [SEP],
        [CLS, MIN, SEP],
    ]
    assert m["num_documents"] == 5 and m["num_instances"] == 7 and m["num_tokens"] == 22
    assert m["continuation_windows"] == 2
    assert m["stats"]["empty_lines"] == 1 and m["stats"]["lines"] == 6
    assert m["stats"]["fill_ratio"] == pytest.approx(22 / 28)
    assert m["dtype"] == "uint16" and m["processor"] == "mlm"
    assert np.load(tmp_path / "ds" / "tokens.npy").dtype == np.uint16


def test_full_sentences_packs_one_stream(tmp_path, tiny_vocab):
    corpus = tmp_path / "c.txt"
    corpus.write_text("中国人民好\n好\n中国\n", encoding="utf-8")
    m = build(corpus, tiny_vocab, tmp_path / "ds", seq_length=4, full_sentences=True)
    stream = [CLS, ZH, GUO, REN, MIN, HAO, SEP, CLS, HAO, SEP, CLS, ZH, GUO, SEP]
    assert instances(tmp_path / "ds") == [stream[0:4], stream[4:8], stream[8:12], stream[12:14]]
    # documents start at 0, 7, 10; windows at 0, 4, 8, 12
    assert m["num_instances"] == 4 and m["full_sentences"] is True
    assert m["continuation_windows"] == 3   # only window 0 starts with a document's [CLS]


def test_masking_options_in_manifest(tmp_path, tiny_vocab):
    corpus = tmp_path / "c.txt"
    corpus.write_text("中国\n", encoding="utf-8")
    m = build(corpus, tiny_vocab, tmp_path / "a", dynamic_masking=False, dup_factor=3, span_masking=True,
              span_geo_prob=0.3, span_max_length=7, seed=11)
    saved = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert saved == m
    assert (m["dynamic_masking"], m["dup_factor"], m["span_masking"], m["span_geo_prob"], m["span_max_length"],
            m["seed"]) == (False, 3, True, 0.3, 7, 11)
    m2 = build(corpus, tiny_vocab, tmp_path / "b", dynamic_masking=True, dup_factor=5)
    assert m2["dup_factor"] == 1            # --dynamic_masking forces dup_factor 1, as in the reference
    with pytest.raises(ValueError, match="mutually exclusive"):
        build(corpus, tiny_vocab, tmp_path / "c", whole_word_masking=True, span_masking=True)


# ------------------------------------------------------------------ reference parity
@need_data
def test_reference_counts_on_clue_sample(tmp_path):
    m = build(SAMPLE, VOCAB, tmp_path / "ds", seq_length=128, processes_num=2, dynamic_masking=True)
    assert (m["num_instances"], m["num_tokens"], m["continuation_windows"]) == (6613, 662985, 4116)
    assert m["num_documents"] == 2497
    ds = MlmDataset(tmp_path / "ds")
    assert len(ds) == 6613 and ds.lengths().max() == 128
    assert m["corpus"]["sha256"] == "07317cf41df54666f310ebbc1da7c447c06fac9e5fecfa277a01fc13cd30bf65"
    assert m["vocab_sha256"] == BertTokenizer(VOCAB).sha256


@need_data
def test_fast_path_equals_rust_tokenizer():
    ref = BertTokenizer(VOCAB, max_input_chars_per_word=200)
    fast = CorpusTokenizer(read_vocab(VOCAB))
    lines = SAMPLE.read_text(encoding="utf-8").split("\n")[:600]
    tricky = ["Café déjà vu", "İstanbul ǅ ß ﬁ", "e\u0301\u0323 x\u0308", "zero\u200bwidth\u00a0nbsp\u3000全角",
              "ＡＢＣ１２３！", "emoji 😀👍🏽", "tab\tsep\x0bvt\x1cfs\x85nel", "a" * 150 + " " + "b" * 250,
              "中\x00国\ufffd人", "🄰 Ⅻ ㍿ ﹏", "हिन्दी ไทย 한국어 العربية", "\u2028line\u2029sep", "3.14%和1,000元"]
    for line in lines + tricky:
        assert fast.encode(line) == ref.encode_ids(line), line[:40]
    assert fast.fallbacks > 0               # the tricky lines exercised the full Rust pipeline too
    # the vectorised batch path, on batches mixing ordinary and tricky lines, empty lines included
    mixed = [x for pair in zip(lines[:len(tricky)], tricky) for x in pair] + ["", "  "] + lines[len(tricky):]
    expect = [ref.encode_ids(x) for x in mixed]
    fast2 = CorpusTokenizer(read_vocab(VOCAB))
    for a in range(0, len(mixed), 97):
        flat, counts = fast2.encode_batch(mixed[a:a + 97])
        assert counts.tolist() == [len(x) for x in expect[a:a + 97]]
        assert flat.tolist() == [t for x in expect[a:a + 97] for t in x]
    assert fast2.fallbacks > 0
    # a literal special token in the text is text, as in the reference (not the special id)
    assert 101 not in fast.encode("[CLS] 你好 [SEP]")


@need_data
def test_same_bytes_for_1_and_3_processes(tmp_path):
    kw = dict(seq_length=64, max_bytes=300_000)
    build(SAMPLE, VOCAB, tmp_path / "p1", processes_num=1, **kw)
    build(SAMPLE, VOCAB, tmp_path / "p3", processes_num=3, range_bytes=30_000, **kw)
    for name in ("tokens.npy", "offsets.npy"):
        assert (tmp_path / "p1" / name).read_bytes() == (tmp_path / "p3" / name).read_bytes(), name
    m = json.loads((tmp_path / "p3" / "manifest.json").read_text())
    assert m["stats"]["tasks"] > 3 and m["num_instances"] > 100
    assert m["corpus"]["size"] <= 300_000 and SAMPLE.read_bytes()[: m["corpus"]["size"]].endswith(b"\n")


@need_data
def test_full_sentences_same_for_1_and_2_processes(tmp_path):
    kw = dict(seq_length=100, max_bytes=120_000, full_sentences=True)
    m1 = build(SAMPLE, VOCAB, tmp_path / "p1", processes_num=1, **kw)
    m2 = build(SAMPLE, VOCAB, tmp_path / "p2", processes_num=2, range_bytes=10_000, **kw)
    for name in ("tokens.npy", "offsets.npy"):
        assert (tmp_path / "p1" / name).read_bytes() == (tmp_path / "p2" / name).read_bytes(), name
    assert m1["continuation_windows"] == m2["continuation_windows"]
    ds = MlmDataset(tmp_path / "p2")
    lens = ds.lengths()
    assert (lens[:-1] == 100).all() and 0 < lens[-1] <= 100        # one stream: only the last window is short
    # the same tokens as the per-document processor, only windowed differently
    build(SAMPLE, VOCAB, tmp_path / "docs", seq_length=100, max_bytes=120_000)
    assert (tmp_path / "p1" / "tokens.npy").read_bytes() == (tmp_path / "docs" / "tokens.npy").read_bytes()
    starts = np.flatnonzero(np.asarray(ds.tokens) == 101)             # every [CLS] starts a document
    assert m2["continuation_windows"] == len(ds) - np.count_nonzero(starts % 100 == 0)


def test_failure_leaves_no_dataset(tmp_path, tiny_vocab, monkeypatch):
    import miniroberta.data.preprocess.build as pp
    corpus = tmp_path / "c.txt"
    corpus.write_text("中国\n好\n", encoding="utf-8")

    def boom(*a, **k):
        raise RuntimeError("disk full")
    monkeypatch.setattr(pp, "assemble", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        build(corpus, tiny_vocab, tmp_path / "ds")
    assert not (tmp_path / "ds").exists() and leftovers(tmp_path) == []


@need_data
def test_whole_word_bitmap_same_for_1_and_2_processes(tmp_path):
    kw = dict(seq_length=64, max_bytes=40_000, whole_word_masking=True)
    build(SAMPLE, VOCAB, tmp_path / "p1", processes_num=1, **kw)
    build(SAMPLE, VOCAB, tmp_path / "p2", processes_num=2, range_bytes=8_000, **kw)
    for name in ("tokens.npy", "offsets.npy", "word_starts.npy"):
        assert (tmp_path / "p1" / name).read_bytes() == (tmp_path / "p2" / name).read_bytes(), name
    # the ids do not depend on whole-word masking
    build(SAMPLE, VOCAB, tmp_path / "plain", seq_length=64, max_bytes=40_000)
    assert (tmp_path / "p1" / "tokens.npy").read_bytes() == (tmp_path / "plain" / "tokens.npy").read_bytes()
    ws = np.load(tmp_path / "p1" / "word_starts.npy")
    assert 0.3 < ws.mean() < 0.95            # Chinese words are 1-4 characters long


# ------------------------------------------------------------------ whole words
@need_data
def test_whole_word_bitmap_known_sentence(tmp_path):
    tok = BertTokenizer(VOCAB, max_input_chars_per_word=200)
    assert jieba_word_starts("我爱北京天安门") == [0, 1, 2, 4]
    corpus = tmp_path / "c.txt"
    corpus.write_text("我爱北京天安门\n我喜欢tensorflow游戏\n圆周率约3.14\n", encoding="utf-8")
    m = build(corpus, VOCAB, tmp_path / "ds", whole_word_masking=True)
    ds = MlmDataset(tmp_path / "ds")
    assert m["whole_word_masking"] is True and ds.word_starts is not None
    assert ds.word_start_flags(0).astype(int).tolist() == [1, 1, 1, 1, 0, 1, 0, 0, 1]
    pieces = tok.tokenize("tensorflow")
    assert len(pieces) >= 2 and pieces[1].startswith("##")
    # 我 / 喜欢 / tensorflow / 游戏 ; the ## pieces continue their word
    expect = [1, 1, 1, 0] + [1] + [0] * (len(pieces) - 1) + [1, 0, 1]
    assert ds.word_start_flags(1).astype(int).tolist() == expect
    assert ds[1].tolist()[1:-1] == tok.encode_ids("我喜欢tensorflow游戏")
    # 圆周率 / 约 / 3.14 (one jieba word over three BERT words 3 . 14)
    assert ds.word_start_flags(2).astype(int).tolist() == [1, 1, 0, 0, 1, 1, 0, 0, 1]


def test_word_start_bits_rules():
    # token offsets / BERT word ids / jieba word starts -> bits
    assert word_start_bits("", [0, 1, 2, 4], [0, 1, 2, 2], [0, 2]) == [1, 0, 1, 0]
    assert word_start_bits("", [], [], [0]) == []


# ------------------------------------------------------------------ bad input
def test_invalid_utf8_fail_skip_replace(tmp_path, tiny_vocab):
    corpus = tmp_path / "c.txt"
    corpus.write_bytes("中国\n".encode() + b"\xff\xfe bad\n" + "人民\n".encode() + b"\xc3 bad\n" + "好\n".encode())
    with pytest.raises(ValueError) as e:
        build(corpus, tiny_vocab, tmp_path / "ds", on_error="fail")
    msg = str(e.value)
    assert "2 corpus line(s) are not valid UTF-8" in msg and "line(s) 2, 4" in msg and "--on_error" in msg
    assert not (tmp_path / "ds").exists() and leftovers(tmp_path) == []
    m = build(corpus, tiny_vocab, tmp_path / "skip", on_error="skip")
    assert instances(tmp_path / "skip") == [[CLS, ZH, GUO, SEP], [CLS, REN, MIN, SEP], [CLS, HAO, SEP]]
    assert m["stats"]["invalid_utf8_lines"] == 2 and m["on_error"] == "skip"
    m = build(corpus, tiny_vocab, tmp_path / "rep", on_error="replace")
    assert m["num_documents"] == 5 and m["stats"]["invalid_utf8_lines"] == 2
    assert instances(tmp_path / "rep")[1] == [CLS, UNK, SEP]     # "bad" is not in the tiny vocab; U+FFFD dropped


@need_data
def test_invalid_utf8_line_numbers_across_tasks_and_processes(tmp_path):
    lines = SAMPLE.read_bytes().split(b"\n")[:300]
    lines[7] = b"\x80" + lines[7]
    lines[250] = lines[250][:10] + b"\xed\xa0\x80" + lines[250][10:]     # encoded surrogate: invalid
    corpus = tmp_path / "c.txt"
    corpus.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(ValueError, match=r"2 corpus line\(s\).*line\(s\) 8, 251"):
        build(corpus, VOCAB, tmp_path / "ds", processes_num=2, range_bytes=20_000)
    assert leftovers(tmp_path) == [] and not (tmp_path / "ds").exists()


def test_nul_bytes_are_dropped_like_the_reference(tmp_path, tiny_vocab):
    corpus = tmp_path / "c.txt"
    corpus.write_bytes("中\x00国\n\x00\x00\n好\n".encode())
    m = build(corpus, tiny_vocab, tmp_path / "ds")
    assert instances(tmp_path / "ds") == [[CLS, ZH, GUO, SEP], [CLS, HAO, SEP]]
    assert m["stats"]["nul_lines"] == 2 and m["stats"]["empty_lines"] == 1


def test_very_long_line(tmp_path, tiny_vocab):
    corpus = tmp_path / "c.txt"
    n = 600_000
    corpus.write_text("中国" * n + "\n" + "a" * 1_000_000 + "\n好\n", encoding="utf-8")
    m = build(corpus, tiny_vocab, tmp_path / "ds", seq_length=128, range_bytes=1 << 16)
    # 2n + 2 tokens -> ceil(/128) windows; a 1M-char word is one [UNK] (longer than 200 characters)
    docs = [2 * n + 2, 3, 3]
    assert m["num_tokens"] == sum(docs)
    assert m["num_instances"] == sum(-(-d // 128) for d in docs)
    ds = MlmDataset(tmp_path / "ds")
    assert ds[len(ds) - 2].tolist() == [CLS, UNK, SEP] and ds[len(ds) - 1].tolist() == [CLS, HAO, SEP]
    assert m["stats"]["max_line_bytes"] == 6 * n


def test_crlf_and_bom_give_the_same_dataset(tmp_path, tiny_vocab):
    plain = tmp_path / "plain.txt"
    plain.write_text("中国人\n好\n民\n", encoding="utf-8")
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(b"\xef\xbb\xbf" + "中国人\r\n好\r\n\r\n民\r\n".encode())
    build(plain, tiny_vocab, tmp_path / "a")
    m = build(crlf, tiny_vocab, tmp_path / "b")
    assert (tmp_path / "a" / "tokens.npy").read_bytes() == (tmp_path / "b" / "tokens.npy").read_bytes()
    assert (tmp_path / "a" / "offsets.npy").read_bytes() == (tmp_path / "b" / "offsets.npy").read_bytes()
    assert m["num_documents"] == 3 and m["stats"]["empty_lines"] == 1
    assert instances(tmp_path / "b")[0] == [CLS, ZH, GUO, REN, SEP]   # no [UNK] from the BOM


def test_empty_corpus_is_a_clear_error(tmp_path, tiny_vocab):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        build(empty, tiny_vocab, tmp_path / "ds")
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n\t\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no document"):
        build(blank, tiny_vocab, tmp_path / "ds")
    assert not (tmp_path / "ds").exists() and leftovers(tmp_path) == []
    os.mkdir(tmp_path / "nodir")
    with pytest.raises(ValueError, match="no \\*.txt"):
        build(tmp_path / "nodir", tiny_vocab, tmp_path / "ds")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build(tmp_path / "missing.txt", tiny_vocab, tmp_path / "ds")


def test_vocab_without_special_tokens(tmp_path):
    vocab = tmp_path / "v.txt"
    vocab.write_text("[PAD]\n[UNK]\n中\n国\n", encoding="utf-8")
    corpus = tmp_path / "c.txt"
    corpus.write_text("中国\n", encoding="utf-8")
    with pytest.raises(VocabError, match=r"lacks the special tokens \['\[CLS\]', '\[SEP\]', '\[MASK\]'\]"):
        build(corpus, vocab, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_existing_output_refused_unless_overwrite(tmp_path, tiny_vocab):
    corpus = tmp_path / "c.txt"
    corpus.write_text("中国\n", encoding="utf-8")
    build(corpus, tiny_vocab, tmp_path / "ds")
    corpus.write_text("好\n", encoding="utf-8")
    with pytest.raises(FileExistsError, match="--overwrite"):
        build(corpus, tiny_vocab, tmp_path / "ds")
    assert instances(tmp_path / "ds") == [[CLS, ZH, GUO, SEP]]
    build(corpus, tiny_vocab, tmp_path / "ds", overwrite=True)
    assert instances(tmp_path / "ds") == [[CLS, HAO, SEP]]
    assert leftovers(tmp_path) == []


# ------------------------------------------------------------------ corpus forms
def test_directory_list_and_max_bytes(tmp_path, tiny_vocab):
    d = tmp_path / "corpus"
    d.mkdir()
    (d / "b.txt").write_text("好\n民", encoding="utf-8")           # no trailing newline: kept, not merged
    (d / "a.txt").write_bytes(b"\xef\xbb\xbf" + "中国\n".encode())
    (d / "skip.md").write_text("人人人\n", encoding="utf-8")
    m = build(d, tiny_vocab, tmp_path / "dir")
    expect = [[CLS, ZH, GUO, SEP], [CLS, HAO, SEP], [CLS, MIN, SEP]]
    assert instances(tmp_path / "dir") == expect and m["num_documents"] == 3
    build([d / "a.txt", d / "b.txt"], tiny_vocab, tmp_path / "list")
    assert instances(tmp_path / "list") == expect
    # a.txt is 3 + 7 bytes; 12 bytes reach into b.txt's first line ("好\n" is 4 bytes) -> cut before it
    m = build(d, tiny_vocab, tmp_path / "cut", max_bytes=12)
    assert instances(tmp_path / "cut") == expect[:1] and m["corpus"]["size"] == 10
    m = build(d, tiny_vocab, tmp_path / "cut2", max_bytes=14)
    assert instances(tmp_path / "cut2") == expect[:2] and m["corpus"]["size"] == 14
    with pytest.raises(ValueError, match="max_bytes"):
        build(d, tiny_vocab, tmp_path / "cut3", max_bytes=5)


# ------------------------------------------------------------------ CLI
def test_cli_reference_flags(tmp_path, tiny_vocab, capfd):
    corpus = tmp_path / "c.txt"
    corpus.write_text("中国人民好\n", encoding="utf-8")
    out = tmp_path / "x_seq4_dataset.pt"
    rc = cli_main(["preprocess", "--corpus-path", str(corpus), "--vocab_path", str(tiny_vocab), "--dataset_path",
                   str(out), "--processes_num", "1", "--seq_length", "4", "--dynamic_masking", "--data_processor",
                   "mlm", "--docs_buffer_size", "1000", "--tokenizer", "bert", "--do_lower_case", "true"])
    assert rc == 0 and MlmDataset(out).seq_length == 4 and len(MlmDataset(out)) == 2
    err = capfd.readouterr().err
    assert "instances            2" in err and "--docs_buffer_size is ignored" in err
    rc = cli_main(["preprocess", "--corpus_path", str(corpus), "--vocab_path", str(tiny_vocab), "--dataset_path",
                   str(out)])
    assert rc == 2 and "--overwrite" in capfd.readouterr().err
    rc = cli_main(["preprocess", "--corpus_path", str(corpus), "--vocab_path", str(tiny_vocab), "--dataset_path",
                   str(tmp_path / "o"), "--data_processor", "bert"])
    assert rc == 2 and "only the mlm data processor is supported" in capfd.readouterr().err
    # more processes than CPUs: capped with a note (the output does not depend on it)
    rc = cli_main(["preprocess", "--corpus_path", str(corpus), "--vocab_path", str(tiny_vocab), "--dataset_path",
                   str(out), "--overwrite", "--processes_num", "4096", "--seq_length", "4"])
    assert rc == 0 and "available CPUs; using" in capfd.readouterr().err and len(MlmDataset(out)) == 2


# ------------------------------------------------------------------ PreprocessConfig: the one source of the settings
def test_every_option_has_help_with_its_default_shown_once(capsys):
    with pytest.raises(SystemExit):
        cli_main(["preprocess", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for f in dataclasses.fields(PreprocessConfig):
        if not meta(f)["cli"]:
            continue
        assert flag_of(f) in out, f.name
    for flag, default in (("--seq_length", "128"), ("--dup_factor", "5"), ("--span_geo_prob", "0.2"),
                          ("--dataset_path", "dataset.pt"), ("--on_error", "fail"), ("--max_bytes", "the whole corpus")):
        assert out.count(f"(default: {default})") >= 1, flag
    assert "(default: None)" not in out and "(default: False)" not in out and out.count("(default: 128)") == 1


def test_bad_settings_are_one_error_naming_each(tmp_path, tiny_vocab, capfd):
    corpus = tmp_path / "c.txt"
    corpus.write_text("中国\n", encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        build(corpus, tiny_vocab, tmp_path / "ds", seq_length=1, span_geo_prob=2.0, on_error="ignore")
    msg = str(e.value)
    assert "3 problems" in msg and "--seq_length: must be >= 2" in msg and "--span_geo_prob" in msg \
        and "--on_error: must be one of skip, replace, fail" in msg
    with pytest.raises(TypeError, match="chunk_bytes"):
        build(corpus, tiny_vocab, tmp_path / "ds", chunk_bytes=10)          # not a setting
    rc = cli_main(["preprocess", "--corpus_path", str(corpus), "--vocab_path", str(tiny_vocab), "--dataset_path",
                   str(tmp_path / "ds"), "--seq_length", "1"])
    assert rc == 2 and "--seq_length: must be >= 2, got 1" in capfd.readouterr().err
    assert not (tmp_path / "ds").exists()


def test_config_object_and_keywords_build_the_same_dataset(tmp_path, tiny_vocab):
    corpus = tmp_path / "c.txt"
    corpus.write_text("中国人民好\n好\n", encoding="utf-8")
    cfg = PreprocessConfig(corpus_path=[str(corpus)], vocab_path=str(tiny_vocab), dataset_path=str(tmp_path / "a"),
                           seq_length=4, progress=False)
    build_dataset(cfg)
    build(corpus, tiny_vocab, tmp_path / "b", seq_length=4)
    for f in ("tokens.npy", "offsets.npy"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    ma, mb = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in "ab")
    assert ma["chunk_hashes"] == mb["chunk_hashes"] and ma["corpus"]["path"] == str(corpus)
    assert MlmDataset(tmp_path / "a").content_hash == MlmDataset(tmp_path / "b").content_hash
