"""Tokenizer parity with transformers' BertTokenizer (tokenizers-backed) and BertTokenizerLegacy (pure Python)."""
import hashlib
from pathlib import Path

import pytest

from miniroberta.data import paths
from miniroberta.modeling.tokenizer import BertTokenizer, VocabError

transformers = pytest.importorskip("transformers")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
GOOGLE_VOCAB = DATA / "vocab" / "google_zh_vocab.txt"

TEXTS = [
    "中国的首都是北京。",                                     # Chinese
    "Hello World! It's UNAFFABLE, isn't it?",               # English, casing, apostrophes
    "2023年12月31日 3.14159 1,000,000 007",                  # digits
    "，。！？《》“”‘’、；：（）【】——……~@#$%^&*()_+-=[]{}|\\", # punctuation, CJK and ASCII
    "ＡＢＣ１２３ｘｙｚ！？　全角空格",                         # full-width characters
    "我爱你😀👍🏻🇨🇳❤️",                                      # emoji (incl. modifiers, flags, variation selector)
    "BERT模型在2018年由Google发布,   效果很好!!Visit https://example.com/a_b?x=1",  # mixed
    "",                                                      # empty
    "   \t\n  ",                                             # whitespace only
    "café naïve Ångström ÉCOLE",                             # accents (stripped when lower-casing)
    "zero\u200bwidth\x00nul\ufffdrepl\u3000ideographic",     # control / format characters
    "a" * 120 + " 很长的词",                                  # a word over max_input_chars_per_word -> [UNK]
    "中国的首都是[MASK]京。[SEP] [CLS][PAD] [UNK]",            # special tokens in raw text
    "ｓｕｐｅｒ１２３ＡＢＣ", "한국어 テスト ไทย Ελληνικά русский",  # other scripts
]
PAIRS = [("我喜欢这本书。", "Ta hated it!"), ("", "只有第二句"), ("first ＡＢＣ", "second 😀 sentence")]


def _hf(vocab):
    return [transformers.BertTokenizer(str(vocab)), transformers.BertTokenizerLegacy(str(vocab))]


def _check_parity(vocab):
    ours = BertTokenizer(vocab)
    for hf in _hf(vocab):
        name = type(hf).__name__
        for text in TEXTS:
            want = hf.encode(text, add_special_tokens=False)
            assert ours.encode_ids(text) == want, (name, text)
            full = hf(text, return_token_type_ids=True)
            enc = ours.encode(text)
            assert enc.input_ids == full["input_ids"], (name, text)
            assert enc.token_type_ids == full["token_type_ids"], (name, text)
            assert ours.tokenize(text) == hf.tokenize(text), (name, text)
        for a, b in PAIRS:
            full = hf(a, b, return_token_type_ids=True)
            enc = ours.encode(a, b)
            assert (enc.input_ids, enc.token_type_ids) == (full["input_ids"], full["token_type_ids"]), (name, a, b)
        assert ours.encode_batch_ids(TEXTS) == [hf.encode(t, add_special_tokens=False) for t in TEXTS]
        assert (ours.pad_id, ours.unk_id, ours.cls_id, ours.sep_id, ours.mask_id) == (
            hf.pad_token_id, hf.unk_token_id, hf.cls_token_id, hf.sep_token_id, hf.mask_token_id)


@pytest.mark.skipif(not GOOGLE_VOCAB.exists(), reason="../shared/data/vocab/google_zh_vocab.txt not available")
def test_parity_google_vocab():
    _check_parity(GOOGLE_VOCAB)


@pytest.mark.skipif(not GOOGLE_VOCAB.exists(), reason="../shared/data/vocab/google_zh_vocab.txt not available")
def test_decode_matches_transformers():
    """fill-mask `sequence`/`token_str` strings come from decode; they must be transformers' strings."""
    ours = BertTokenizer(GOOGLE_VOCAB)
    hf = transformers.BertTokenizer(str(GOOGLE_VOCAB))
    for text in TEXTS:
        ids = hf(text)["input_ids"]
        for skip in (True, False):
            assert ours.decode(ids, skip_special_tokens=skip) == hf.decode(ids, skip_special_tokens=skip), text
    for i in (0, 100, 103, 704, 8024, 13768, 21127):
        assert ours.decode([i], skip_special_tokens=False) == hf.decode([i]), i
    assert ours.decode_batch([[101, 704, 102], [13768]], skip_special_tokens=False) == [
        hf.decode([101, 704, 102]), hf.decode([13768])]


TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "中", "国", "##国", "的", "hello", "hel", "##lo", "world",
              "un", "##aff", "##able", "!", ",", ".", "1", "##2", "##3", "2", "。", "cafe", "##s", "'", "a", "##a"]


def test_parity_tiny_vocab(make_vocab):
    vocab = make_vocab(TINY_VOCAB[5:])
    _check_parity(vocab)
    ours = BertTokenizer(vocab)
    assert ours.encode_ids("Hello unaffable 123") == [9, 13, 14, 15, 19, 20, 21]
    assert ours.encode_ids("中国国外") == [5, 6, 6, 1]


def test_vocab_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "dup.txt"
    bad.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na\na\n", encoding="utf-8")
    with pytest.raises(VocabError, match=r"dup\.txt:7: duplicate token 'a'"):
        BertTokenizer(bad)
    nospecial = tmp_path / "nospecial.txt"
    nospecial.write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(VocabError, match=r"lacks the special tokens"):
        BertTokenizer(nospecial)
    with pytest.raises(VocabError, match="does not exist"):
        BertTokenizer(tmp_path / "missing.txt")


# ------------------------------------------------------------------ where the data and the vocab are found
def test_data_root_is_beside_the_checkout_never_inside_it(monkeypatch, tmp_path):
    repo = Path(__file__).resolve().parents[1]
    monkeypatch.delenv(paths.ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert paths.candidates()[0] == (repo.parent / "shared" / "data").resolve()
    assert all(c != (repo / "shared" / "data").resolve() for c in paths.candidates())
    monkeypatch.setenv(paths.ENV, str(tmp_path / "mine"))             # an explicit choice wins, existing or not
    assert paths.find_data_root() is None and paths.data_root() == tmp_path / "mine"
    (tmp_path / "mine" / "vocab").mkdir(parents=True)
    assert paths.find_data_root() == tmp_path / "mine"
    assert paths.default_vocab_path() == tmp_path / "mine" / "vocab" / paths.VOCAB_NAME
    monkeypatch.setenv(paths.TASKS_ENV, str(tmp_path / "tasks"))
    assert paths.default_tasks_dir() == tmp_path / "tasks"


def test_one_vocab_resolver(monkeypatch, tmp_path, make_vocab):
    monkeypatch.setenv(paths.ENV, str(tmp_path / "data"))
    shared = make_vocab(name="shared.txt")
    (tmp_path / "data" / "vocab").mkdir(parents=True)
    (tmp_path / "data" / "vocab" / paths.VOCAB_NAME).write_bytes(shared.read_bytes())
    model = tmp_path / "model"
    model.mkdir()
    assert paths.resolve_vocab(model) == str(paths.default_vocab_path())          # the shared default, last
    beside = make_vocab(["好"], name="model/vocab.txt")
    assert paths.resolve_vocab(model) == str(beside)                               # beside the model, first
    assert paths.resolve_vocab(model, shared) == str(shared)                       # --vocab_path wins
    sha = hashlib.sha256(shared.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match="SHA-256 differs"):
        paths.resolve_vocab(model, meta={"vocab_sha256": sha})                   # the recorded vocab must match
    with pytest.raises(FileNotFoundError, match="--vocab_path"):
        paths.resolve_vocab(model, tmp_path / "missing.txt")
