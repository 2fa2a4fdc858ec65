"""BERT WordPiece tokenizer on HF ``tokenizers`` (Rust), loaded from any ``vocab.txt``.

Normalisation is Google BERT's (clean text, split CJK characters, lower-case + strip accents
when ``lowercase``), so ids equal transformers' ``BertTokenizer`` and ``BertTokenizerLegacy``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Sequence

from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import WordPiece

from miniroberta.utils import atomic_write_text, sha256_file

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


class VocabError(ValueError):
    """A vocab file that cannot be used, naming the file, line and fix."""


def read_vocab(path: str | os.PathLike) -> dict[str, int]:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise VocabError(f"vocab file {path!r} does not exist (pass --vocab_path pointing to a BERT vocab.txt, "
                         f"e.g. ../shared/data/vocab/google_zh_vocab.txt)")
    vocab: dict[str, int] = {}
    with open(path, "rb") as f:
        raw = f.read()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise VocabError(f"{path}:{line}: vocab is not valid UTF-8 ({e.reason})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for i, tok in enumerate(lines):
        tok = tok.rstrip("\r")
        if tok == "":
            raise VocabError(f"{path}:{i + 1}: empty token line; a BERT vocab has one token per line")
        if tok in vocab:
            raise VocabError(f"{path}:{i + 1}: duplicate token {tok!r} (first at line {vocab[tok] + 1}); "
                             f"ids would be ambiguous -- remove the duplicate")
        vocab[tok] = i
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise VocabError(f"{path}: vocab lacks the special tokens {missing}; a BERT vocab needs "
                         f"{list(SPECIAL_TOKENS)} (is this a BERT vocab.txt?)")
    return vocab


@dataclass
class Encoding:
    input_ids: list[int]
    token_type_ids: list[int]


class BertTokenizer:
    """WordPiece tokenizer with the special-token ids and helpers the rest of the package uses."""

    def __init__(self, vocab_path: str | os.PathLike, lowercase: bool = True,
                 max_input_chars_per_word: int = 100) -> None:
        self.vocab_path = os.fspath(vocab_path)
        self.vocab = read_vocab(self.vocab_path)
        self.lowercase = lowercase
        # read_vocab numbers the lines 0..n-1 and refuses duplicates: every id gets its token
        self.ids_to_tokens: list[str] = [""] * len(self.vocab)
        for t, i in self.vocab.items():
            self.ids_to_tokens[i] = t
        tok = Tokenizer(WordPiece(self.vocab, unk_token="[UNK]", max_input_chars_per_word=max_input_chars_per_word))
        tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                    strip_accents=None, lowercase=lowercase)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##")
        tok.add_special_tokens(list(SPECIAL_TOKENS))
        self._tok = tok
        self.pad_id = self.vocab["[PAD]"]
        self.unk_id = self.vocab["[UNK]"]
        self.cls_id = self.vocab["[CLS]"]
        self.sep_id = self.vocab["[SEP]"]
        self.mask_id = self.vocab["[MASK]"]
        self._sha: str | None = None

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return len(self.vocab)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def sha256(self) -> str:
        if self._sha is None:
            self._sha = sha256_file(self.vocab_path)
        return self._sha

    @property
    def special_ids(self) -> tuple[int, ...]:
        return (self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id)

    def tokenize(self, text: str) -> list[str]:
        return self._tok.encode(text, add_special_tokens=False).tokens

    def encode_ids(self, text: str) -> list[int]:
        """WordPiece ids of ``text`` without special tokens."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch_ids(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        return [self.ids_to_tokens[int(i)] for i in ids]

    def convert_tokens_to_ids(self, tokens: Iterable[str]) -> list[int]:
        return [self.vocab.get(t, self.unk_id) for t in tokens]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def decode_batch(self, sequences: Sequence[Iterable[int]], skip_special_tokens: bool = True) -> list[str]:
        return self._tok.decode_batch([[int(i) for i in ids] for ids in sequences],
                                      skip_special_tokens=skip_special_tokens)

    # ------------------------------------------------------------ model input
    def build_inputs(self, ids_a: list[int], ids_b: list[int] | None = None,
                     max_length: int | None = None, truncation: str = "longest_first") -> Encoding:
        """``[CLS] a [SEP]`` or ``[CLS] a [SEP] b [SEP]`` with token types 0/1.

        ``truncation``: ``longest_first`` (HF/Google: drop from the longer of a, b one token at a
        time) or ``concat`` (UER-py: cut the concatenation at ``max_length``)."""
        a = list(ids_a)
        b = list(ids_b) if ids_b is not None else None
        if max_length is not None and truncation == "longest_first":
            budget = max_length - (3 if b is not None else 2)
            if budget < 0:
                raise ValueError(f"max_length {max_length} too short for the special tokens")
            if b is None:
                a = a[:budget]
            else:
                la, lb = len(a), len(b)
                while la + lb > budget:
                    if la > lb:
                        la -= 1
                    else:
                        lb -= 1
                a, b = a[:la], b[:lb]
        ids = [self.cls_id] + a + [self.sep_id]
        types = [0] * len(ids)
        if b is not None:
            ids += b + [self.sep_id]
            types += [1] * (len(b) + 1)
        if max_length is not None and truncation == "concat":
            ids, types = ids[:max_length], types[:max_length]
        elif max_length is not None and truncation not in ("longest_first", "concat"):
            raise ValueError(f"unknown truncation {truncation!r}")
        return Encoding(ids, types)

    def encode(self, text: str, pair: str | None = None, max_length: int | None = None,
               truncation: str = "longest_first") -> Encoding:
        return self.build_inputs(self.encode_ids(text), self.encode_ids(pair) if pair is not None else None,
                                 max_length, truncation)

    def save_vocab(self, directory: str | os.PathLike) -> str:
        out = os.path.join(os.fspath(directory), "vocab.txt")
        atomic_write_text(out, "".join(t + "\n" for t in self.ids_to_tokens))
        return out


def load_tokenizer(vocab_path: str | os.PathLike, lowercase: bool = True) -> BertTokenizer:
    return BertTokenizer(vocab_path, lowercase=lowercase)


__all__ = ["BertTokenizer", "load_tokenizer", "read_vocab", "VocabError", "SPECIAL_TOKENS", "Encoding"]
