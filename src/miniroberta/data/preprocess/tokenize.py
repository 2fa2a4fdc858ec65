"""BERT WordPiece ids of corpus lines, exactly as the reference (Google / UER-py BERT), fast.

Tokenization is BERT's WordPiece as run by HF ``tokenizers`` (Rust) with Google's / UER's
``max_input_chars_per_word=200``. The per-character part (BERT normalisation and the split into words)
is a per-code-point table derived from the Rust normalizer itself and applied with numpy (or
``str.translate``); each distinct word is tokenized once by the Rust WordPiece model and cached. Lines
holding a character whose normalisation is not a plain per-character map (combining marks, unusual white
space) go through the full Rust pipeline. All paths give identical ids (tested).

Whole-word masking: ``jieba`` segments every line; a token starts a word (bit 1) unless it is a ``##``
continuation of the previous token's BERT word, or it begins inside the same jieba word as the previous
token. ``[CLS]`` and ``[SEP]`` are words of their own.
"""
from __future__ import annotations

import bisect
import unicodedata
from itertools import chain
from typing import Sequence

import numpy as np
from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordPiece

# UER-py / Google BERT use 200 (HF's BertTokenizer uses 100): a word of 101..200 characters is split
# into pieces by the reference but becomes one [UNK] in HF. Needed to match the reference counts.
MAX_INPUT_CHARS_PER_WORD = 200
_SENTINEL = "\x00"          # table value of characters that need the full Rust pipeline
_MAX_CACHED_WORDS = 1 << 19  # bound on the per-worker word -> ids cache


class CorpusTokenizer:
    """BERT WordPiece ids of corpus lines, exactly as the reference (Google/UER BERT tokenizer).

    Three paths, all giving the ids of the full Rust pipeline (``self.rust``):

    * ``encode_batch`` (the fast one): every code point gets a class from a lazily filled table
      derived from the Rust normalizer and pre-tokenizer -- removed, white space, a token of its own
      (CJK ideographs, punctuation: id looked up once), or a word character (normalised to one code
      point). Classes, ids and word runs are computed with numpy over a whole batch of lines; only
      runs of word characters (Latin words, numbers) go through the Rust WordPiece model, once per
      distinct word (cached).
    * ``encode`` (per line, ``str.translate`` with the same kind of table) for lines the fast path
      cannot take.
    * the Rust pipeline itself for lines holding a code point whose normalisation is not a plain
      per-character map (combining marks left after normalisation, multi-character expansions).
    """

    _REMOVED, _SPACE, _SINGLE, _WORD, _UNSAFE = 0, 1, 2, 3, 4

    def __init__(self, vocab: dict[str, int], lowercase: bool = True,
                 max_input_chars_per_word: int = MAX_INPUT_CHARS_PER_WORD) -> None:
        tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=max_input_chars_per_word))
        tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                    strip_accents=None, lowercase=lowercase)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        # No added special tokens: a literal "[CLS]" in the corpus is text ("[", "cl", "##s", "]"), as in
        # the reference, not the special id.
        self.rust = tok
        self._normalize = tok.normalizer.normalize_str
        self._pre = tok.pre_tokenizer.pre_tokenize_str
        self._model_tokenize = tok.model.tokenize
        self.table: dict[int, str] = _CharTable(self._char_map)
        self.words: dict[str, list[int]] = _WordCache(self._word_ids)
        self.fallbacks = 0      # lines that went through the full Rust pipeline
        self._kinds: dict[str, str] = {}
        n = 0x110000
        self._known = np.zeros(n, dtype=bool)
        self._cls = np.zeros(n, dtype=np.uint8)
        self._norm = np.zeros(n, dtype=np.uint32)     # _WORD: the normalised code point
        self._single = np.zeros(n, dtype=np.int64)    # _SINGLE: the token id
        self._learn(np.array([10], dtype=np.uint32))

    # ------------------------------------------------------------ per-character tables
    def _kind(self, d: str) -> str:
        k = self._kinds.get(d)
        if k is None:
            if not self._pre(d):
                k = "space"
            elif len(self._pre("a" + d + "a")) == 3:
                k = "punct"
            else:
                k = "word"
            self._kinds[d] = k
        return k

    def _char_map(self, cp: int) -> str:
        """str.translate value: normalised text with punctuation spaced out, or the sentinel."""
        out = []
        for d in self._normalize(chr(cp)):
            kind = self._kind(d)
            if kind == "space":
                out.append(" ")
            elif d.isspace() or d == _SENTINEL or unicodedata.category(d).startswith("M"):
                return _SENTINEL                           # context-dependent: use the Rust pipeline
            elif kind == "punct":
                out.append(" " + d + " ")
            else:
                out.append(d)
        return "".join(out)

    def _learn(self, cps: np.ndarray) -> None:
        for cp in cps.tolist():
            n = self._normalize(chr(cp))
            core = n.strip(" ")
            kinds = [self._kind(d) for d in n]
            if n == "":
                c = self._REMOVED
            elif all(k == "space" for k in kinds):
                c = self._SPACE
            elif len(core) == 1 and self._kind(core) != "space" \
                    and not unicodedata.category(core).startswith("M") \
                    and (self._kind(core) == "punct" or (n.startswith(" ") and n.endswith(" "))):
                c = self._SINGLE                            # CJK ideograph (" 中 ") or punctuation
                ids = [t.id for t in self._model_tokenize(core)]
                if len(ids) != 1:
                    c = self._UNSAFE
                else:
                    self._single[cp] = ids[0]
            elif len(n) == 1 and kinds[0] == "word" and not unicodedata.category(n).startswith("M"):
                c = self._WORD
                self._norm[cp] = ord(n)
            else:
                c = self._UNSAFE
            self._cls[cp] = c
            self._known[cp] = True

    def _word_ids(self, word: str) -> list[int]:
        if len(self.words) >= _MAX_CACHED_WORDS:
            self.words.clear()
        return [t.id for t in self._model_tokenize(word)]

    # ------------------------------------------------------------ encoding
    def encode(self, line: str) -> list[int]:
        """Ids of one line (per-line path; ``encode_batch`` is the fast one)."""
        norm = line.translate(self.table)
        if _SENTINEL in norm:
            self.fallbacks += 1
            return self.rust.encode(line, add_special_tokens=False).ids
        return list(chain.from_iterable(map(self.words.__getitem__, norm.split())))

    def encode_batch(self, lines: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Ids of many lines (none containing ``\\n``): (all ids concatenated, ids per line)."""
        nl = len(lines)
        if nl == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        cps = np.frombuffer("\n".join(lines).encode("utf-32-le"), dtype=np.uint32)
        unknown = ~self._known[cps]
        if unknown.any():
            self._learn(np.unique(cps[unknown]))
        cl = self._cls[cps]
        line_of = np.cumsum(cps == 10)          # the separating "\n" (class _SPACE) opens the next line
        bad_lines: list[int] = []
        if (cl == self._UNSAFE).any():
            bad_lines = np.unique(line_of[cl == self._UNSAFE]).tolist()
            cl = cl.copy()
            cl[np.isin(line_of, bad_lines)] = self._REMOVED
        keep = cl != self._REMOVED
        c = cl[keep]
        cp = cps[keep]
        lo = line_of[keep]
        is_word = c == self._WORD
        prev_word = np.empty_like(is_word)
        prev_word[:1] = False                   # (a batch whose characters were all removed is empty)
        prev_word[1:] = is_word[:-1]
        next_word = np.empty_like(is_word)
        next_word[-1:] = False
        next_word[:-1] = is_word[1:]
        run_start = np.flatnonzero(is_word & ~prev_word)
        run_end = np.flatnonzero(is_word & ~next_word) + 1
        item_mask = c == self._SINGLE
        item_mask[run_start] = True
        items = np.flatnonzero(item_mask)
        lengths = np.ones(len(items), dtype=np.int64)
        run_item = np.searchsorted(items, run_start)            # where each run sits among the items
        out_ids: list[list[int]] = []
        if len(run_start):
            normed = self._norm[cp].tobytes().decode("utf-32-le")   # word characters, normalised
            get = self.words.__getitem__
            out_ids = [get(normed[s:e]) for s, e in zip(run_start.tolist(), run_end.tolist())]
            lengths[run_item] = [len(x) for x in out_ids]
        ends = np.cumsum(lengths)
        flat = np.empty(int(ends[-1]) if len(ends) else 0, dtype=np.int64)
        single_items = np.flatnonzero(c[items] == self._SINGLE)
        flat[ends[single_items] - 1] = self._single[cp[items[single_items]]]
        if out_ids:
            run_lens = lengths[run_item]
            starts = ends[run_item] - run_lens
            pos = np.repeat(starts - np.concatenate(([0], np.cumsum(run_lens)[:-1])), run_lens) \
                + np.arange(int(run_lens.sum()))
            flat[pos] = np.fromiter(chain.from_iterable(out_ids), dtype=np.int64, count=int(run_lens.sum()))
        counts = np.bincount(lo[items], weights=lengths, minlength=nl).astype(np.int64)
        if bad_lines:                                           # splice in the Rust-pipeline lines
            pieces = np.split(flat, np.cumsum(counts)[:-1])
            for i in bad_lines:
                self.fallbacks += 1
                pieces[i] = np.array(self.rust.encode(lines[i], add_special_tokens=False).ids, dtype=np.int64)
                counts[i] = len(pieces[i])
            flat = np.concatenate(pieces) if pieces else flat
        return flat, counts

    def encode_with_word_ids(self, lines: Sequence[str]) -> list[tuple[list[int], list[int], list[int | None]]]:
        """(ids, start char offsets, pre-token word index) per line, from the full Rust pipeline."""
        out: list[tuple[list[int], list[int], list[int | None]]] = []
        for e in self.rust.encode_batch(list(lines), add_special_tokens=False):
            out.append((e.ids, [o[0] for o in e.offsets], e.word_ids))
        return out


class _CharTable(dict):
    def __init__(self, fn):
        super().__init__()
        self._fn = fn

    def __missing__(self, cp: int) -> str:
        v = self._fn(cp)
        self[cp] = v
        return v


class _WordCache(dict):
    def __init__(self, fn):
        super().__init__()
        self._fn = fn

    def __missing__(self, w: str) -> list[int]:
        v = self._fn(w)
        self[w] = v
        return v


def word_start_bits(line: str, offsets: Sequence[int], word_ids: Sequence[int | None],
                    jieba_starts: Sequence[int]) -> list[int]:
    """1 where a token starts a whole word, 0 where it continues one.

    A token continues the previous one when it is a ``##`` piece of the same BERT word (same
    ``word_ids``) or when both begin inside the same jieba word (e.g. 中 国 in 中国). ``jieba_starts``
    are the character offsets of the jieba words of ``line``."""
    bits = []
    prev_w = prev_j = None
    for off, w in zip(offsets, word_ids):
        j = bisect.bisect_right(jieba_starts, off) - 1
        bits.append(0 if (prev_w is not None and (w == prev_w or j == prev_j)) else 1)
        prev_w, prev_j = w, j
    return bits


def jieba_word_starts(line: str) -> list[int]:
    import jieba  # noqa: PLC0415 -- optional (jieba): whole-word masking only
    starts = []
    pos = 0
    for w in jieba.cut(line):
        starts.append(pos)
        pos += len(w)
    return starts


__all__ = ["CorpusTokenizer", "word_start_bits", "jieba_word_starts", "MAX_INPUT_CHARS_PER_WORD"]
