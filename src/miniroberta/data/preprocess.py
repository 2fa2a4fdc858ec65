"""``miniroberta preprocess``: corpus (one document per line) -> memory-mapped MLM dataset.

The ``mlm`` processor matches UER-py's exactly (see docs/preprocess.md): every line is one document,
``[CLS] + wordpiece ids + [SEP]``, cut into consecutive ``seq_length`` windows; continuation windows
do not start with ``[CLS]``, the last window is shorter, nothing is dropped and nothing is padded on
disk. ``full_sentences`` windows the concatenation of all documents as one stream instead.

How it scales
-------------
* The corpus (a file, a directory of ``*.txt`` or a list of files, read as one stream) is cut into
  byte ranges that end at line boundaries. Each range ("task") is tokenized independently by a pool
  of ``processes_num`` workers and written as small shard files into the dataset's temporary
  directory; the parent concatenates the shards in corpus order into ``tokens.npy`` /
  ``offsets.npy`` / ``word_starts.npy`` and writes ``manifest.json`` last. Every line is processed on
  its own, so the bytes do not depend on the number of processes, and memory is bounded by the task
  size (a few MiB per worker), never by the corpus size.
* Tokenization is exactly BERT's WordPiece as run by HF ``tokenizers`` (Rust) with Google's / UER's
  ``max_input_chars_per_word=200``. The per-character part (BERT normalisation and the split into
  words) is a per-code-point table derived from the Rust normalizer itself and applied with
  ``str.translate``; each distinct word is tokenized once by the Rust WordPiece model and cached.
  Lines holding a character whose normalisation is not a plain per-character map (combining marks,
  unusual white space) go through the full Rust pipeline. Both paths give identical ids (tested).
* Whole-word masking: ``jieba`` segments every line in the workers; a token starts a word (bit 1)
  unless it is a ``##`` continuation of the previous token's BERT word, or it begins inside the same
  jieba word as the previous token. ``[CLS]`` and ``[SEP]`` are words of their own.
"""
from __future__ import annotations

import argparse
import bisect
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import sys
import threading
import time
import unicodedata
from dataclasses import asdict, dataclass, field
from itertools import chain
from typing import Any, Iterable, Sequence

import numpy as np

from miniroberta.data.dataset import default_manifest, token_dtype
from miniroberta.outputs import claim_output
from miniroberta.utils import atomic_dir, terminate_as_exit
from miniroberta.utils import log as _log_to

def log(msg: str) -> None:
    _log_to(msg, sys.stderr)


# UER-py / Google BERT use 200 (HF's BertTokenizer uses 100): a word of 101..200 characters is split
# into pieces by the reference but becomes one [UNK] in HF. Needed to match the reference counts.
MAX_INPUT_CHARS_PER_WORD = 200
PROCESSORS = ("mlm",)
ON_ERROR = ("skip", "replace", "fail")
_SENTINEL = "\x00"          # table value of characters that need the full Rust pipeline
_MAX_CACHED_WORDS = 1 << 19  # bound on the per-worker word -> ids cache
_BATCH_BYTES = 1 << 19       # lines are tokenized and written in batches of about this many bytes
_MAX_REPORTED_LINES = 10


class CorpusError(ValueError):
    """A corpus that cannot be preprocessed, naming the file (and ``file:line`` for undecodable lines)."""


# ----------------------------------------------------------------------------- options
@dataclass
class PreprocessOptions:
    """Everything a worker needs to turn a byte range of the corpus into shard files."""
    vocab_path: str
    seq_length: int = 128
    full_sentences: bool = False
    whole_word_masking: bool = False
    on_error: str = "fail"
    lowercase: bool = True


@dataclass
class Task:
    index: int
    file_index: int
    path: str
    start: int
    end: int


@dataclass
class TaskResult:
    index: int
    file_index: int
    bytes: int = 0
    lines: int = 0
    documents: int = 0
    empty_lines: int = 0
    tokens: int = 0
    instances: int = 0
    continuation_windows: int = 0
    unk_tokens: int = 0
    nul_lines: int = 0
    fallback_lines: int = 0
    max_line_bytes: int = 0
    invalid_lines: list[int] = field(default_factory=list)   # 0-based line numbers inside the task
    invalid_count: int = 0
    validated_only: bool = False


# ----------------------------------------------------------------------------- tokenizer
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
        from tokenizers import Tokenizer, normalizers, pre_tokenizers
        from tokenizers.models import WordPiece
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

    def encode_with_word_ids(self, lines: Sequence[str]) -> list[tuple[list[int], list[int], list[int]]]:
        """(ids, start char offsets, pre-token word index) per line, from the full Rust pipeline."""
        out = []
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
    import jieba
    starts = []
    pos = 0
    for w in jieba.cut(line):
        starts.append(pos)
        pos += len(w)
    return starts


# ----------------------------------------------------------------------------- worker side
_W: dict[str, Any] = {}


def _init_worker(opts: PreprocessOptions, tmpdir: str, stop_event: Any, limit_threads: bool) -> None:
    if limit_threads:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        os.environ.setdefault("RAYON_NUM_THREADS", "1")
    from miniroberta.modeling.tokenizer import read_vocab
    vocab = read_vocab(opts.vocab_path)
    _W.update(opts=opts, tmpdir=tmpdir, stop=stop_event, tok=CorpusTokenizer(vocab, lowercase=opts.lowercase),
              cls=vocab["[CLS]"], sep=vocab["[SEP]"], unk=vocab["[UNK]"], dtype=token_dtype(len(vocab)))
    if opts.whole_word_masking:
        import logging

        import jieba
        jieba.setLogLevel(logging.WARNING)
        jieba.initialize()


def shard_paths(tmpdir: str, index: int) -> dict[str, str]:
    base = os.path.join(tmpdir, f"shard-{index:07d}")
    return {"tokens": base + ".tokens", "docs": base + ".docs", "ws": base + ".ws"}


def _decode_lines(raw_lines: list[bytes], res: TaskResult, on_error: str, validate_only: bool) -> list[str | None]:
    """Decode lines; an invalid line is recorded and becomes None (skip/fail) or is decoded with U+FFFD."""
    out: list[str | None] = []
    for i, b in enumerate(raw_lines):
        try:
            out.append(b.decode("utf-8"))
        except UnicodeDecodeError:
            res.invalid_count += 1
            if len(res.invalid_lines) < _MAX_REPORTED_LINES:
                res.invalid_lines.append(i)
            out.append(b.decode("utf-8", "replace") if on_error == "replace" and not validate_only else None)
    return out


def process_task(task: Task) -> TaskResult:
    """Tokenize one byte range of the corpus and write its shard files (runs in a worker)."""
    opts: PreprocessOptions = _W["opts"]
    res = TaskResult(index=task.index, file_index=task.file_index, bytes=task.end - task.start)
    with open(task.path, "rb") as f:
        f.seek(task.start)
        data = f.read(task.end - task.start)
    if task.start == 0 and data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]                                       # UTF-8 BOM
    raw_lines = data.split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()                                       # the range ends with a newline
    del data
    res.lines = len(raw_lines)
    stop = _W["stop"]
    validate_only = stop is not None and stop.is_set()
    # fast path: the whole range is valid UTF-8 (the common case)
    try:
        lines: list[str | None] = [b.decode("utf-8") for b in raw_lines] if not validate_only else []
    except UnicodeDecodeError:
        lines = _decode_lines(raw_lines, res, opts.on_error, validate_only)
    if validate_only:
        _decode_lines(raw_lines, res, opts.on_error, True)
        res.validated_only = True
        return res
    if res.invalid_count and opts.on_error == "fail":
        if stop is not None:
            stop.set()                                        # other tasks only validate from now on
        res.validated_only = True
        return res
    res.max_line_bytes = max((len(b) for b in raw_lines), default=0)
    res.nul_lines = sum(1 for b in raw_lines if b"\x00" in b)
    sizes = [len(b) + 1 for b in raw_lines]
    del raw_lines

    tok: CorpusTokenizer = _W["tok"]
    fallbacks0 = tok.fallbacks
    cls_id, sep_id, unk_id, dt = _W["cls"], _W["sep"], _W["unk"], _W["dtype"]
    S = opts.seq_length
    paths = shard_paths(_W["tmpdir"], task.index)
    ftok = open(paths["tokens"], "wb")
    fdoc = open(paths["docs"], "wb")
    fws = open(paths["ws"], "wb") if opts.whole_word_masking else None
    try:
        i = 0
        n = len(lines)
        while i < n:
            j, nbytes = i, 0
            while j < n and (j == i or nbytes < _BATCH_BYTES):
                nbytes += sizes[j]
                j += 1
            batch = [ln[:-1] if ln and ln.endswith("\r") else ln for ln in lines[i:j] if ln is not None]
            buf: list[int] = []
            lens: list[int] = []
            wsbuf: list[int] = []
            if opts.whole_word_masking:
                for line, (ids, offs, wids) in zip(batch, tok.encode_with_word_ids(batch)):
                    if not ids:
                        res.empty_lines += 1
                        continue
                    bits = word_start_bits(line, offs, wids, jieba_word_starts(line))
                    buf.extend([cls_id, *ids, sep_id])
                    wsbuf.extend([1, *bits, 1])                # [CLS] and [SEP] are words of their own
                    lens.append(len(ids) + 2)
            else:
                flat, counts = tok.encode_batch(batch)
                res.empty_lines += int(np.count_nonzero(counts == 0))
                counts = counts[counts > 0]
                doc_lens = counts + 2
                ends = np.cumsum(doc_lens)
                out = np.empty(int(ends[-1]) if len(ends) else 0, dtype=np.int64)
                body = np.ones(len(out), dtype=bool)
                body[ends - doc_lens] = False
                body[ends - 1] = False
                out[ends - doc_lens] = cls_id
                out[ends - 1] = sep_id
                out[body] = flat
                buf = out
                lens = doc_lens.tolist()
            arr = np.array(buf, dtype=dt)
            res.unk_tokens += int(np.count_nonzero(arr == unk_id))
            ftok.write(arr.tobytes())
            la = np.array(lens, dtype=np.int64)
            fdoc.write(la.tobytes())
            if fws is not None:
                fws.write(np.array(wsbuf, dtype=np.uint8).tobytes())
            res.documents += len(lens)
            res.tokens += len(buf)
            if not opts.full_sentences and len(la):
                k = (la + S - 1) // S
                res.instances += int(k.sum())
                res.continuation_windows += int((k - 1).sum())
            i = j
    finally:
        ftok.close()
        fdoc.close()
        if fws is not None:
            fws.close()
    res.fallback_lines = tok.fallbacks - fallbacks0
    return res


# ----------------------------------------------------------------------------- corpus planning
def resolve_corpus(corpus_path: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """A file, a directory (all ``*.txt`` in sorted order) or a list of files -> list of files."""
    if isinstance(corpus_path, (list, tuple)):
        files = [os.fspath(p) for p in corpus_path]
        if not files:
            raise ValueError("the corpus file list is empty; pass at least one corpus file")
    else:
        p = os.fspath(corpus_path)
        if os.path.isdir(p):
            files = sorted(os.path.join(p, n) for n in os.listdir(p)
                           if n.endswith(".txt") and os.path.isfile(os.path.join(p, n)))
            if not files:
                raise ValueError(f"{p}: the corpus directory holds no *.txt files (one document per line)")
        else:
            files = [p]
    for f in files:
        if not os.path.isfile(f):
            raise FileNotFoundError(f"corpus file {f!r} does not exist (pass --corpus_path with a text file, "
                                    f"one document per line, or a directory of *.txt files)")
    return files


def _find_newline_after(f, pos: int, size: int, block: int = 1 << 16) -> int:
    """Offset just past the first newline at or after ``pos`` (``size`` if there is none)."""
    f.seek(pos)
    while pos < size:
        b = f.read(block)
        if not b:
            break
        k = b.find(b"\n")
        if k >= 0:
            return pos + k + 1
        pos += len(b)
    return size


def _find_newline_before(f, limit: int, block: int = 1 << 16) -> int:
    """Offset just past the last newline in ``[0, limit)`` (0 if there is none)."""
    end = limit
    while end > 0:
        start = max(0, end - block)
        f.seek(start)
        b = f.read(end - start)
        k = b.rfind(b"\n")
        if k >= 0:
            return start + k + 1
        end = start
    return 0


def plan_tasks(files: list[str], processes_num: int, max_bytes: int | None,
               chunk_bytes: int | None = None) -> tuple[list[Task], list[int]]:
    """Byte ranges ending at line boundaries; returns the tasks and the bytes used of each file."""
    sizes = [os.path.getsize(f) for f in files]
    budget = sum(sizes) if max_bytes is None else int(max_bytes)
    used: list[int] = []
    for f, size in zip(files, sizes):
        if budget <= 0:
            used.append(0)
            continue
        if size <= budget:
            u = size
        else:
            with open(f, "rb") as fh:
                u = _find_newline_before(fh, budget)
        used.append(u)
        budget -= u
        if u < size:
            budget = 0                                   # the slice ends inside this file
    total = sum(used)
    if chunk_bytes is None:
        chunk_bytes = min(4 << 20, max(256 << 10, total // max(1, 8 * processes_num)))
    tasks: list[Task] = []
    for fi, (f, u) in enumerate(zip(files, used)):
        if u == 0:
            continue
        with open(f, "rb") as fh:
            pos = 0
            while pos < u:
                end = u if pos + chunk_bytes >= u else min(u, _find_newline_after(fh, pos + chunk_bytes - 1, u))
                tasks.append(Task(len(tasks), fi, f, pos, end))
                pos = end
    return tasks, used


def _hash_corpus(files: list[str], used: list[int], out: dict[str, str]) -> None:
    h = hashlib.sha256()
    for f, u in zip(files, used):
        left = u
        with open(f, "rb") as fh:
            while left > 0:
                b = fh.read(min(left, 1 << 20))
                if not b:
                    break
                h.update(b)
                left -= len(b)
    out["sha256"] = h.hexdigest()


# ----------------------------------------------------------------------------- assembling
def _write_npy_header(f, dtype: np.dtype, n: int) -> None:
    np.lib.format.write_array_header_1_0(
        f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": (n,)})


def _copy_file(src: str, dst) -> int:
    with open(src, "rb") as f:
        return _copy_stream(f, dst)


def _copy_stream(src, dst) -> int:
    n = 0
    while True:
        b = src.read(1 << 20)
        if not b:
            return n
        dst.write(b)
        n += len(b)


def _concat_shards(tmp: str, results: list[TaskResult], key: str, out_path: str, dtype: np.dtype, n: int) -> None:
    """Concatenate the workers' ``key`` shard files, in task order, into one ``.npy`` of ``n`` items."""
    with open(out_path, "wb") as f:
        _write_npy_header(f, dtype, n)
        for r in results:
            p = shard_paths(tmp, r.index)[key]
            if os.path.exists(p):
                _copy_file(p, f)
                os.unlink(p)


def _window_lengths(doc_lens: np.ndarray, S: int) -> np.ndarray:
    """Instance lengths of documents cut into consecutive windows of S tokens."""
    k = (doc_lens + S - 1) // S
    out = np.full(int(k.sum()), S, dtype=np.int64)
    last = np.cumsum(k) - 1
    out[last] = doc_lens - (k - 1) * S
    return out


def assemble(tmp: str, results: list[TaskResult], dtype: np.dtype, seq_length: int, full_sentences: bool,
             whole_word_masking: bool) -> tuple[int, int, int]:
    """Concatenate the shard files into tokens.npy / offsets.npy / word_starts.npy (streaming).
    Returns (num_instances, num_tokens, continuation_windows)."""
    S = seq_length
    num_tokens = sum(r.tokens for r in results)
    _concat_shards(tmp, results, "tokens", os.path.join(tmp, "tokens.npy"), dtype, num_tokens)
    if whole_word_masking:
        _concat_shards(tmp, results, "ws", os.path.join(tmp, "word_starts.npy"), np.dtype(np.uint8), num_tokens)
    if full_sentences:
        num_instances = (num_tokens + S - 1) // S
        starts_aligned = 0                                 # documents that begin a window
        pos = 0
        for r in results:
            p = shard_paths(tmp, r.index)["docs"]
            if os.path.exists(p):
                lens = np.fromfile(p, dtype=np.int64)
                starts = pos + np.concatenate(([0], np.cumsum(lens)[:-1])) if len(lens) else lens
                starts_aligned += int(np.count_nonzero(starts % S == 0))
                pos += int(lens.sum())
        continuation = num_instances - starts_aligned
        with open(os.path.join(tmp, "offsets.npy"), "wb") as f:
            _write_npy_header(f, np.int64, num_instances + 1)
            for a in range(0, num_instances + 1, 1 << 20):
                b = min(num_instances + 1, a + (1 << 20))
                f.write(np.minimum(np.arange(a, b, dtype=np.int64) * S, num_tokens).tobytes())
    else:
        num_instances = sum(r.instances for r in results)
        continuation = sum(r.continuation_windows for r in results)
        with open(os.path.join(tmp, "offsets.npy"), "wb") as f:
            _write_npy_header(f, np.int64, num_instances + 1)
            f.write(np.zeros(1, dtype=np.int64).tobytes())
            pos = 0
            for r in results:
                p = shard_paths(tmp, r.index)["docs"]
                if os.path.exists(p):
                    lens = _window_lengths(np.fromfile(p, dtype=np.int64), S)
                    f.write((pos + np.cumsum(lens)).tobytes())
                    pos += int(lens.sum())
            assert pos == num_tokens, (pos, num_tokens)
    for r in results:
        p = shard_paths(tmp, r.index)["docs"]
        if os.path.exists(p):
            os.unlink(p)
    return num_instances, num_tokens, continuation


# ----------------------------------------------------------------------------- driver
def _invalid_utf8_message(results: list[TaskResult], files: list[str], on_error: str) -> str:
    line_base: dict[int, int] = {}
    per_file: dict[int, list[int]] = {}
    counts: dict[int, int] = {}
    for r in sorted(results, key=lambda r: r.index):
        base = line_base.get(r.file_index, 0)
        if r.invalid_count:
            counts[r.file_index] = counts.get(r.file_index, 0) + r.invalid_count
            lst = per_file.setdefault(r.file_index, [])
            lst.extend(base + i + 1 for i in r.invalid_lines)
        line_base[r.file_index] = base + r.lines
    total = sum(counts.values())
    parts = []
    for fi in sorted(counts):
        shown = ", ".join(str(x) for x in per_file[fi][:_MAX_REPORTED_LINES])
        parts.append(f"{files[fi]}: {counts[fi]} line(s), first at line(s) {shown} -- {files[fi]}:{per_file[fi][0]}")
    head = f"{total} corpus line(s) are not valid UTF-8 ({'; '.join(parts)})"
    if on_error == "fail":
        return (head + ". Fix the file (e.g. `iconv -f GB18030 -t UTF-8`), or pass --on_error skip to drop those "
                "lines or --on_error replace to decode them with U+FFFD (which the tokenizer drops).")
    return head + (" -- skipped (--on_error skip)" if on_error == "skip" else " -- decoded with U+FFFD (--on_error replace)")


def build_dataset(corpus_path, vocab_path, dataset_path, seq_length=128, processes_num=1, dynamic_masking=True,
                  dup_factor=5, full_sentences=False, whole_word_masking=False, span_masking=False,
                  span_geo_prob=0.2, span_max_length=10, seed=7, on_error="fail", overwrite=False, max_bytes=None,
                  progress=True, chunk_bytes: int | None = None, keep_old: bool = False) -> dict:
    """Preprocess ``corpus_path`` into the dataset directory ``dataset_path``; returns the manifest.

    ``corpus_path``: a file, a directory (its ``*.txt`` files in sorted order) or a list of files, read
    as one corpus. ``max_bytes``: use only the first N bytes, cut at a line boundary. ``chunk_bytes``:
    size of the byte ranges handed to workers (default: derived from the corpus size).

    The dataset path is claimed for the run (a second build on it fails at once naming the first). An
    existing dataset is refused unless ``overwrite``; then it is replaced when the new one is complete, or,
    with ``keep_old`` (the CLI's ``--overwrite``), moved aside to ``NAME.old-<time>`` first."""
    from miniroberta.modeling.tokenizer import read_vocab

    t_start = time.time()
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if int(seq_length) < 2:
        raise ValueError(f"seq_length must be at least 2 ([CLS] and [SEP]), got {seq_length}")
    if int(processes_num) < 1:
        raise ValueError(f"processes_num must be >= 1, got {processes_num}")
    if not dynamic_masking and int(dup_factor) < 1:
        raise ValueError(f"dup_factor must be >= 1, got {dup_factor}")
    if whole_word_masking and span_masking:
        raise ValueError("--whole_word_masking and --span_masking are mutually exclusive; pick one")
    if span_masking and not (0.0 < float(span_geo_prob) <= 1.0 and int(span_max_length) >= 1):
        raise ValueError("span masking needs 0 < --span_geo_prob <= 1 and --span_max_length >= 1")
    if max_bytes is not None and int(max_bytes) <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    dataset_path = os.path.abspath(os.fspath(dataset_path))
    files = resolve_corpus(corpus_path)
    read_vocab(os.fspath(vocab_path))                        # a bad vocab fails before anything is moved aside
    # one writer per dataset; an existing one is refused, or moved aside with --overwrite
    with claim_output(dataset_path, overwrite=overwrite and keep_old, can_resume=False, command="preprocess",
                      what="a dataset", check_existing=not overwrite or keep_old):
        return _build(files, corpus_path, vocab_path, dataset_path, seq_length, processes_num, dynamic_masking,
                      dup_factor, full_sentences, whole_word_masking, span_masking, span_geo_prob, span_max_length,
                      seed, on_error, max_bytes, progress, chunk_bytes, t_start, replace=overwrite)


def _build(files, corpus_path, vocab_path, dataset_path, seq_length, processes_num, dynamic_masking, dup_factor,
           full_sentences, whole_word_masking, span_masking, span_geo_prob, span_max_length, seed, on_error,
           max_bytes, progress, chunk_bytes, t_start, replace=False) -> dict:
    """``build_dataset`` once the output is claimed."""
    from miniroberta.modeling.tokenizer import read_vocab
    from miniroberta.utils import sha256_file
    vocab_path = os.fspath(vocab_path)
    vocab = read_vocab(vocab_path)                           # clear error if missing / no special tokens
    dtype = token_dtype(len(vocab))
    seq_length = int(seq_length)
    processes_num = int(processes_num)
    tasks, used = plan_tasks(files, processes_num, max_bytes, chunk_bytes)
    total_bytes = sum(used)
    if total_bytes == 0:
        what = f"the first {max_bytes} bytes of " if max_bytes is not None else ""
        raise CorpusError(f"{what}the corpus {', '.join(files[:3])}{' …' if len(files) > 3 else ''} hold(s) no "
                         f"complete line; the corpus is empty (one document per line expected)"
                         + (" -- raise --max_bytes" if max_bytes is not None else ""))
    opts = PreprocessOptions(vocab_path=vocab_path, seq_length=seq_length, full_sentences=bool(full_sentences),
                             whole_word_masking=bool(whole_word_masking), on_error=on_error)
    hashed: dict[str, str] = {}
    hasher = threading.Thread(target=_hash_corpus, args=(files, used, hashed), daemon=True)
    hasher.start()

    bar = None
    if progress and sys.stderr.isatty():   # no carriage-return bars in redirected logs (the end is logged)
        from tqdm import tqdm
        bar = tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1000, desc="preprocess",
                   file=sys.stderr, dynamic_ncols=True, smoothing=0.1)
    results: list[TaskResult] = []
    docs = insts = 0
    with atomic_dir(dataset_path, overwrite=replace) as tmp:
        def collect(r: TaskResult) -> None:
            nonlocal docs, insts
            results.append(r)
            docs += r.documents
            insts += r.instances
            if bar is not None:
                bar.update(r.bytes)
                bar.set_postfix(docs=docs, inst=insts if not full_sentences else "-", refresh=False)

        if processes_num == 1 or len(tasks) == 1:
            saved = dict(_W)
            _init_worker(opts, tmp, None, limit_threads=False)
            try:
                for t in tasks:
                    r = process_task(t)
                    collect(r)
                    if r.invalid_count and on_error == "fail":
                        _W["stop"] = _AlwaysSet()
            finally:
                _W.clear()
                _W.update(saved)
        else:
            ctx = mp.get_context("spawn")
            stop = ctx.Event()
            with ctx.Pool(min(processes_num, len(tasks)), initializer=_init_worker,
                          initargs=(opts, tmp, stop, True)) as pool:
                for r in pool.imap_unordered(process_task, tasks, chunksize=1):
                    collect(r)
        if bar is not None:
            bar.close()
        results.sort(key=lambda r: r.index)
        invalid = sum(r.invalid_count for r in results)
        if invalid and on_error == "fail":
            raise CorpusError(_invalid_utf8_message(results, files, on_error))
        if invalid:
            log(f"warning: {_invalid_utf8_message(results, files, on_error)}")
        num_docs = sum(r.documents for r in results)
        if num_docs == 0:
            raise CorpusError(f"the corpus {', '.join(files[:3])}{' …' if len(files) > 3 else ''} holds no "
                             f"document (every line is empty); nothing to preprocess")
        num_instances, num_tokens, continuation = assemble(tmp, results, dtype, seq_length, bool(full_sentences),
                                                           bool(whole_word_masking))
        hasher.join()
        unk = sum(r.unk_tokens for r in results)
        nul = sum(r.nul_lines for r in results)
        if nul:
            log(f"warning: {nul} corpus line(s) contain NUL bytes (dropped by the tokenizer's text cleaning); "
                f"is a binary file in the corpus?")
        slots = num_instances * seq_length
        stats = {
            "lines": sum(r.lines for r in results),
            "empty_lines": sum(r.empty_lines for r in results),
            "invalid_utf8_lines": invalid,
            "nul_lines": nul,
            "fallback_lines": sum(r.fallback_lines for r in results),
            "max_line_bytes": max((r.max_line_bytes for r in results), default=0),
            "fill_ratio": num_tokens / slots if slots else 0.0,
            "unk_rate": unk / num_tokens if num_tokens else 0.0,
            "seconds": round(time.time() - t_start, 3),
            "processes_num": processes_num,
            "tasks": len(tasks),
        }
        corpus = {
            "path": [os.path.abspath(os.fspath(f)) for f in corpus_path] if isinstance(corpus_path, (list, tuple))
            else os.path.abspath(os.fspath(corpus_path)),
            "files": [{"path": os.path.abspath(f), "bytes": u, "size": os.path.getsize(f)} for f, u in zip(files, used)],
            "sha256": hashed.get("sha256"),
            "size": total_bytes,
            "bytes": total_bytes,
            "max_bytes": int(max_bytes) if max_bytes is not None else None,
        }
        manifest = default_manifest(
            vocab_sha256=sha256_file(vocab_path), vocab_size=len(vocab), seq_length=seq_length, processor="mlm",
            full_sentences=bool(full_sentences), dynamic_masking=bool(dynamic_masking),
            dup_factor=1 if dynamic_masking else int(dup_factor), whole_word_masking=bool(whole_word_masking),
            span_masking=bool(span_masking), span_geo_prob=float(span_geo_prob),
            span_max_length=int(span_max_length), seed=int(seed), num_documents=num_docs,
            num_instances=num_instances, num_tokens=num_tokens, num_real_tokens=num_tokens,
            continuation_windows=continuation,
            unk_tokens=unk, counts={"num_documents": num_docs, "num_instances": num_instances,
                                    "num_tokens": num_tokens, "continuation_windows": continuation,
                                    "unk_tokens": unk},
            corpus=corpus, dtype=np.dtype(dtype).name, on_error=on_error, stats=stats,
            tokenizer={"kind": "bert-wordpiece", "lowercase": True,
                       "max_input_chars_per_word": MAX_INPUT_CHARS_PER_WORD, "special_tokens_in_text": False},
            word_segmenter="jieba" if whole_word_masking else None,
        )
        with open(os.path.join(tmp, "manifest.json"), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2, ensure_ascii=False, sort_keys=True)
            f.write("\n")
    warn_unk_rate(stats["unk_rate"], unk, num_tokens, vocab_path, files)
    if progress:
        elapsed = time.time() - t_start
        log(f"preprocess: {dataset_path}\n"
            f"  documents            {num_docs:,}  (lines {stats['lines']:,}, empty {stats['empty_lines']:,})\n"
            f"  instances            {num_instances:,}  (seq_length {seq_length}"
            f"{', full_sentences' if full_sentences else ''})\n"
            f"  real tokens          {num_tokens:,}\n"
            f"  fill ratio           {stats['fill_ratio']:.4f}  (real / {slots:,} slots)\n"
            f"  continuation windows {continuation:,}\n"
            f"  [UNK] rate           {stats['unk_rate']:.5f}  ({unk:,} tokens)\n"
            f"  corpus               {total_bytes / 1e6:.2f} MB in {elapsed:.1f} s "
            f"({total_bytes / 1e6 / max(elapsed, 1e-9):.2f} MB/s, {processes_num} process(es))")
    return manifest


UNK_WARN_RATE = 0.05


def _cjk_share(files: list[str], sample_bytes: int = 1 << 16) -> float:
    """Share of CJK ideographs among the non-space characters of the corpus's first bytes."""
    text = ""
    for f in files[:3]:
        with open(f, "rb") as fh:
            text += fh.read(sample_bytes).decode("utf-8", "replace")
    chars = [c for c in text if not c.isspace()]
    if not chars:
        return 0.0
    return sum(1 for c in chars if "\u4e00" <= c <= "\u9fff" or "\u3400" <= c <= "\u4dbf") / len(chars)


def suggest_vocab(files: list[str], vocab_path: str) -> str:
    """A hint naming the vocab that fits the corpus (the shared Chinese BERT vocab for Chinese text)."""
    from miniroberta.utils import find_shared_data
    if _cjk_share(files) > 0.3:
        data = find_shared_data()
        zh = os.path.join(os.fspath(data), "vocab", "google_zh_vocab.txt") if data else None
        if zh and os.path.isfile(zh) and os.path.abspath(zh) != os.path.abspath(vocab_path):
            return f"the corpus is Chinese: use a Chinese BERT vocab, e.g. --vocab_path {zh}"
        return "the corpus is Chinese: use a Chinese BERT vocab (e.g. google_zh_vocab.txt, 21,128 tokens)"
    return "use the vocab the model was (or will be) trained with, one that covers the corpus's script"


def warn_unk_rate(rate: float, unk: int, num_tokens: int, vocab_path: str, files: list[str]) -> bool:
    """Warn when more than ``UNK_WARN_RATE`` of the tokens are [UNK]: the vocab does not fit the corpus."""
    if rate <= UNK_WARN_RATE:
        return False
    log(f"warning: {100 * rate:.1f}% of the {num_tokens:,} tokens are [UNK] ({unk:,}): the vocab {vocab_path} "
        f"does not fit this corpus; a model trained on it learns mostly [UNK]. {suggest_vocab(files, vocab_path)}, "
        f"and re-run with --overwrite")
    return True


def _available_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class _AlwaysSet:
    def is_set(self) -> bool:
        return True

    def set(self) -> None:
        pass


# ----------------------------------------------------------------------------- CLI
def _bool_str(s: str) -> bool:
    v = str(s).strip().lower()
    if v in ("true", "1", "yes"):
        return True
    if v in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {s!r}")


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpus_path", required=True, nargs="+",
                   help="corpus file (one document per line), a directory of *.txt files, or several files")
    p.add_argument("--vocab_path", required=True, help="BERT vocab.txt, e.g. ../shared/data/vocab/google_zh_vocab.txt")
    p.add_argument("--dataset_path", default="dataset.pt",
                   help="output dataset directory (the name is kept as given, e.g. x_seq128_dataset.pt)")
    p.add_argument("--processes_num", type=int, default=1, help="worker processes; the output is identical for any N")
    p.add_argument("--seq_length", type=int, default=128)
    p.add_argument("--data_processor", default="mlm", help="only mlm is supported")
    p.add_argument("--target", default=None, help="(2020 UER spelling of --data_processor; only mlm)")
    p.add_argument("--dynamic_masking", action="store_true", help="masks drawn at training time (the reference recipe)")
    p.add_argument("--dup_factor", type=int, default=5, help="static masking: copies with different masks")
    p.add_argument("--full_sentences", action="store_true",
                   help="RoBERTa packing: window all documents as one stream (far less padding)")
    p.add_argument("--whole_word_masking", action="store_true", help="store jieba word starts for whole-word masking")
    p.add_argument("--span_masking", action="store_true")
    p.add_argument("--span_geo_prob", type=float, default=0.2)
    p.add_argument("--span_max_length", type=int, default=10)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--on_error", choices=ON_ERROR, default="fail", help="what to do with lines that are not UTF-8")
    p.add_argument("--overwrite", action="store_true",
                   help="move an existing --dataset_path aside to NAME.old-<time> and build a new one")
    p.add_argument("--max_bytes", type=int, default=None, help="use only the first N bytes (cut at a line boundary)")
    p.add_argument("--no_progress", action="store_true", help="no progress bar or summary")
    # UER-py flags accepted for compatibility; they change nothing here
    p.add_argument("--docs_buffer_size", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--tokenizer", default=None, help=argparse.SUPPRESS)
    p.add_argument("--do_lower_case", type=_bool_str, default=None, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    for name in ("data_processor", "target"):
        v = getattr(args, name, None)
        if v is not None and v != "mlm":
            raise ValueError(f"--{name} {v}: only the mlm data processor is supported by miniroberta "
                             f"(one document per line; see docs/preprocess.md)")
    if args.tokenizer not in (None, "bert"):
        raise ValueError(f"--tokenizer {args.tokenizer}: only the BERT WordPiece tokenizer (bert) is supported")
    if args.tokenizer == "bert":
        log("note: --tokenizer bert is the only tokenizer; flag ignored")
    if args.docs_buffer_size is not None:
        log("note: --docs_buffer_size is ignored (memory is bounded without it; --full_sentences windows the "
            "whole corpus as one stream)")
    if args.do_lower_case is not None:
        log("note: --do_lower_case is ignored; miniroberta always lower-cases like the uncased Chinese BERT vocab")
    corpus = args.corpus_path[0] if len(args.corpus_path) == 1 else list(args.corpus_path)
    processes = args.processes_num
    cpus = _available_cpus()
    if processes > cpus:
        log(f"note: --processes_num {processes} > {cpus} available CPUs; using {cpus} "
            f"(the output is identical for any number of processes)")
        processes = cpus
    with terminate_as_exit():            # SIGTERM: the temp dataset folder is removed on the way out
        _run_build(args, corpus, processes)
    return 0


def _run_build(args: argparse.Namespace, corpus, processes: int) -> None:
    build_dataset(corpus, args.vocab_path, args.dataset_path, seq_length=args.seq_length,
                  processes_num=processes, dynamic_masking=args.dynamic_masking, dup_factor=args.dup_factor,
                  full_sentences=args.full_sentences, whole_word_masking=args.whole_word_masking,
                  span_masking=args.span_masking, span_geo_prob=args.span_geo_prob,
                  span_max_length=args.span_max_length, seed=args.seed, on_error=args.on_error,
                  overwrite=args.overwrite, keep_old=True, max_bytes=args.max_bytes, progress=not args.no_progress)


__all__ = ["build_dataset", "CorpusError", "warn_unk_rate", "CorpusTokenizer", "word_start_bits", "jieba_word_starts", "resolve_corpus",
           "plan_tasks", "configure", "run", "MAX_INPUT_CHARS_PER_WORD"]
