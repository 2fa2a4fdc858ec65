"""Classification task files: presets for the six reference tasks, readers for UER-style TSV
and CLUE JSON lines, label maps and cached tokenization.

Readers find columns **by name** (lcqmc's header is ``text_a text_b label``, UER's is
``label text_a text_b``). Every malformed row is an error naming ``file:line`` -- or, with
``skip_bad_rows``, is skipped and counted. Label maps are built from the train set
(numeric labels in numeric order, e.g. tnews ``100..116`` -> ``0..14``; other labels sorted)
and saved with the model; a dev label unseen in train is an error naming file and line.

Tokenized files are cached as ``.npz`` under ``cache_dir`` keyed by (file sha256, vocab
sha256, seq_length, fields, truncation, reader options), written atomically.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from miniroberta.utils import atomic_write, find_shared_data, sha256_bytes, sha256_file

CACHE_VERSION = "1"


class TaskDataError(ValueError):
    """A task file that cannot be used, naming file, line and the fix."""


# ---------------------------------------------------------------------------------- presets
@dataclass(frozen=True)
class TaskSpec:
    """Where a task's files live under ``data_dir/<name>/`` and how to read them."""

    name: str
    train: str
    dev: str
    test: str | None
    text_fields: tuple[str, ...]
    label_field: str = "label"
    drop_labels: tuple[str, ...] = ()
    id_field: str | None = None          # id column of the unlabeled test file
    submission: str = "tsv"              # "clue": JSON lines {id, label}; "tsv": UER's label column
    note: str = ""


TASKS: dict[str, TaskSpec] = {
    "book_review": TaskSpec("book_review", "train.tsv", "dev.tsv", None, ("text_a",)),
    "chnsenticorp": TaskSpec("chnsenticorp", "train.tsv", "dev.tsv", None, ("text_a",)),
    "lcqmc": TaskSpec("lcqmc", "train.tsv", "dev.tsv", None, ("text_a", "text_b")),
    "tnews": TaskSpec("tnews", "train.json", "dev.json", "test.json", ("sentence",), id_field="id", submission="clue"),
    "iflytek": TaskSpec("iflytek", "train_partial_fewclue.json", "dev.json", "test.json", ("sentence",),
                        id_field="id", submission="clue",
                        note="iflytek trained on the partial FewCLUE-derived train set (train_partial_fewclue.json, "
                             "4,529 of the official 12,133 examples); not comparable to a full-train score"),
    "ocnli": TaskSpec("ocnli", "train.json", "dev.json", "test.json", ("sentence1", "sentence2"),
                      drop_labels=("-",), id_field="id", submission="clue"),
}
TASK_NAMES = tuple(TASKS)


def default_data_dir() -> str:
    """``$MINIROBERTA_DATA_DIR`` (a tasks folder), else ``tasks/`` of ``utils.find_shared_data()``
    (``$MINIROBERTA_DATA`` or ``../shared/data`` beside the repository)."""
    env = os.environ.get("MINIROBERTA_DATA_DIR")
    if env:
        return env
    data = find_shared_data()
    return str((data if data is not None else Path(__file__).resolve().parents[2].parent / "shared" / "data") / "tasks")


def default_vocab_path() -> str:
    return str(Path(default_data_dir()).parent / "vocab" / "google_zh_vocab.txt")


def parse_tasks(spec: str | Sequence[str]) -> list[str]:
    """``all`` or a comma-separated list of preset names."""
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if items == ["all"]:
        return list(TASK_NAMES)
    bad = [t for t in items if t not in TASKS]
    if bad:
        raise TaskDataError(f"unknown task(s) {bad}; choose from {', '.join(TASK_NAMES)} or 'all'")
    if not items:
        raise TaskDataError("no task given; pass --tasks all or a comma-separated list")
    return items


@dataclass
class TaskFiles:
    """Resolved paths and reader options for one fine-tuning run."""

    name: str
    train_path: str
    dev_path: str
    test_path: str | None
    text_fields: tuple[str, ...] | None
    label_field: str = "label"
    drop_labels: tuple[str, ...] = ()
    id_field: str | None = None
    submission: str = "tsv"
    note: str = ""


def resolve_task(task: str | None = None, data_dir: str | None = None, train_path: str | None = None,
                 dev_path: str | None = None, test_path: str | None = None,
                 text_fields: Sequence[str] | str | None = None, label_field: str | None = None) -> TaskFiles:
    """A preset (``task`` + ``data_dir``), optionally with explicit paths/fields overriding it,
    or fully explicit ``train_path``/``dev_path``."""
    if isinstance(text_fields, str):
        text_fields = tuple(f.strip() for f in text_fields.split(",") if f.strip())
    if task:
        if task not in TASKS:
            raise TaskDataError(f"unknown task {task!r}; presets: {', '.join(TASK_NAMES)} "
                                f"(or give --train_path/--dev_path with --text_fields/--label_field)")
        spec = TASKS[task]
        d = os.path.join(data_dir or default_data_dir(), task)
        if not os.path.isdir(d) and not (train_path and dev_path):
            raise TaskDataError(f"task directory {d} does not exist; pass --data_dir pointing to the folder "
                                f"holding {', '.join(TASK_NAMES)}")
        return TaskFiles(
            name=task,
            train_path=train_path or os.path.join(d, spec.train),
            dev_path=dev_path or os.path.join(d, spec.dev),
            test_path=test_path or (os.path.join(d, spec.test) if spec.test else None),
            text_fields=tuple(text_fields) if text_fields else spec.text_fields,
            label_field=label_field or spec.label_field,
            drop_labels=spec.drop_labels, id_field=spec.id_field, submission=spec.submission, note=spec.note)
    if not (train_path and dev_path):
        raise TaskDataError("give --task NAME (with --data_dir) or both --train_path and --dev_path")
    name = Path(train_path).resolve().parent.name or "task"
    return TaskFiles(name=name, train_path=train_path, dev_path=dev_path, test_path=test_path,
                     text_fields=tuple(text_fields) if text_fields else None, label_field=label_field or "label",
                     id_field="id")


# ---------------------------------------------------------------------------------- readers
def numbered_lines(f, path: str, fail) -> Iterator[tuple[int, str]]:
    """(1-based line number, decoded line) of a binary file; a line that is not UTF-8 goes to
    ``fail(lineno, message)`` (which raises, or counts it with ``--skip_bad_rows``) and is skipped.
    Lines end at ``\\n`` only, so the numbers are an editor's."""
    for lineno, raw in enumerate(f, start=1):
        try:
            yield lineno, raw.decode("utf-8")
        except UnicodeDecodeError as e:
            fail(lineno, f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); convert the file "
                         f"to UTF-8, e.g. `iconv -f GB18030 -t UTF-8`")


@dataclass
class TaskData:
    """Examples of one file. ``labels`` is None for an unlabeled file; ``lines`` are 1-based."""

    path: str
    text_fields: tuple[str, ...]
    texts: list[list[str]]               # one list per text field
    labels: list[str] | None
    ids: list[Any]
    lines: list[int]
    skipped: int = 0
    dropped: int = 0
    bad_rows: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.lines)

    @property
    def is_pair(self) -> bool:
        return len(self.text_fields) == 2

    def subset(self, idx: Sequence[int]) -> "TaskData":
        idx = list(idx)
        return TaskData(self.path, self.text_fields, [[t[i] for i in idx] for t in self.texts],
                        [self.labels[i] for i in idx] if self.labels is not None else None,
                        [self.ids[i] for i in idx], [self.lines[i] for i in idx], self.skipped, self.dropped)


def detect_format(path: str) -> str:
    low = path.lower()
    if low.endswith((".json", ".jsonl")):
        return "jsonl"
    if low.endswith((".tsv", ".txt", ".tab")):
        return "tsv"
    with open(path, "rb") as f:
        head = f.read(64).lstrip()
    return "jsonl" if head.startswith(b"{") else "tsv"


_JSON_TEXT_CANDIDATES = (("sentence1", "sentence2"), ("text_a", "text_b"), ("sentence",), ("text_a",), ("text",),
                         ("content",))


def _default_fields(available: Sequence[str], path: str) -> tuple[str, ...]:
    avail = set(available)
    for cand in (("text_a", "text_b"),) + _JSON_TEXT_CANDIDATES:
        if all(c in avail for c in cand):
            return cand
    raise TaskDataError(f"{path}: cannot tell which columns hold the text (found {sorted(avail)}); "
                        f"pass --text_fields, e.g. --text_fields text_a or --text_fields sentence1,sentence2")


def read_examples(path: str, text_fields: Sequence[str] | None = None, label_field: str = "label",
                  require_label: bool = True, drop_labels: Sequence[str] = (), id_field: str | None = None,
                  skip_bad_rows: bool = False, fmt: str | None = None) -> TaskData:
    """Read a UER-style TSV (header row; columns by name) or a JSON-lines file.

    ``require_label=False`` reads test sets: labels are read when the file has them (TSV: a label
    column; JSON lines: the first record has the label field), else ``labels`` is ``None``.
    Rows whose label is in ``drop_labels`` (ocnli ``-``) are dropped and counted in ``dropped``.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such task file")
    fmt = fmt or detect_format(path)
    if fmt not in ("tsv", "jsonl"):
        raise TaskDataError(f"unknown task file format {fmt!r} (tsv or jsonl)")
    fields = tuple(text_fields) if text_fields else None
    if fields is not None and not 1 <= len(fields) <= 2:
        raise TaskDataError(f"--text_fields takes one or two column names, got {list(fields)}")
    texts: list[list[str]] | None = None
    labels: list[str] | None = [] if require_label else None
    ids: list[Any] = []
    lines: list[int] = []
    skipped = dropped = 0
    bad: list[str] = []
    has_label: bool | None = True if require_label else None   # None: decided by the file
    drop = set(drop_labels)

    def accept(lineno: int, vals: list[str], lab: str | None, where: str, row_id: Any) -> None:
        """Keep a parsed row (``lab`` None: unlabeled file); empty or dropped labels are handled here."""
        nonlocal dropped
        if lab is not None:
            lab = lab.strip()
            if not lab:
                fail(lineno, f"empty label in {where} {label_field!r}")
                return
            if lab in drop:
                dropped += 1
                return
            labels.append(lab)
        for t, v in zip(texts, vals):
            t.append(v)
        ids.append(row_id)
        lines.append(lineno)

    def fail(lineno: int, msg: str) -> None:
        nonlocal skipped
        where = f"{path}:{lineno}: {msg}"
        if not skip_bad_rows:
            raise TaskDataError(where + " (fix the row, or pass --skip_bad_rows to skip and count such rows)")
        skipped += 1
        if len(bad) < 20:
            bad.append(where)

    with open(path, "rb") as fb:
        f = numbered_lines(fb, path, fail)
        if fmt == "tsv":
            header_line = next(f, (1, ""))[1]
            if not header_line:
                raise TaskDataError(f"{path}: empty file; a TSV task file needs a header row like 'label<TAB>text_a'")
            header = header_line.rstrip("\r\n").lstrip("\ufeff").split("\t")
            col = {name: i for i, name in enumerate(header)}
            if fields is None:
                fields = _default_fields(header, path)
            missing = [c for c in fields if c not in col]
            if missing:
                raise TaskDataError(f"{path}:1: header {header} lacks the text column(s) {missing}; "
                                    f"pass --text_fields naming the text columns")
            if label_field not in col:
                if require_label:
                    raise TaskDataError(f"{path}:1: header {header} has no label column {label_field!r}; "
                                        f"pass --label_field naming it")
                has_label = False
            else:
                has_label = True
                labels = []
            idc = col.get(id_field) if id_field else None
            texts = [[] for _ in fields]
            tcols = [col[c] for c in fields]
            lc = col.get(label_field) if has_label else None
            for lineno, raw in f:
                row = raw.rstrip("\r\n")
                if not row.strip():
                    fail(lineno, "empty line")
                    continue
                parts = row.split("\t")
                if len(parts) != len(header):
                    fail(lineno, f"expected {len(header)} tab-separated columns ({', '.join(header)}), got {len(parts)}")
                    continue
                vals = [parts[c] for c in tcols]
                empty = [fields[i] for i, v in enumerate(vals) if not v.strip()]
                if empty:
                    fail(lineno, f"empty text in column(s) {empty}")
                    continue
                accept(lineno, vals, parts[lc] if lc is not None else None, "column",
                       parts[idc] if idc is not None else len(ids))
        else:
            for lineno, raw in f:
                if lineno == 1:
                    raw = raw.lstrip("\ufeff")
                if not raw.strip():
                    fail(lineno, "empty line")
                    continue
                try:
                    obj = json.loads(raw)
                except json.JSONDecodeError as e:
                    fail(lineno, f"bad JSON ({e.msg} at column {e.colno})")
                    continue
                except RecursionError:
                    fail(lineno, "bad JSON (nested too deeply)")
                    continue
                if not isinstance(obj, dict):
                    fail(lineno, "a JSON-lines record must be an object")
                    continue
                if fields is None:
                    fields = _default_fields(list(obj), path)
                if texts is None:
                    texts = [[] for _ in fields]
                missing = [c for c in fields if c not in obj]
                if missing:
                    fail(lineno, f"record lacks the field(s) {missing} (has {sorted(obj)}); "
                                 f"--text_fields names the text fields")
                    continue
                vals = [obj[c] for c in fields]
                if any(not isinstance(v, str) for v in vals):
                    fail(lineno, f"text field(s) {list(fields)} must be strings")
                    continue
                empty = [fields[i] for i, v in enumerate(vals) if not v.strip()]
                if empty:
                    fail(lineno, f"empty text in field(s) {empty}")
                    continue
                if has_label is None:
                    has_label = obj.get(label_field) is not None
                    labels = [] if has_label else None
                if has_label and obj.get(label_field) is None:
                    fail(lineno, f"record has no label field {label_field!r} (has {sorted(obj)}); "
                                 f"pass --label_field naming it")
                    continue
                accept(lineno, vals, str(obj[label_field]) if has_label else None, "field",
                       obj.get(id_field, len(ids)) if id_field else len(ids))
    if fields is None:
        raise TaskDataError(f"{path}: no records")
    if texts is None:
        texts = [[] for _ in fields]
    if not lines:
        raise TaskDataError(f"{path}: no usable records (skipped {skipped}, dropped {dropped})")
    return TaskData(path, tuple(fields), texts, labels, ids, lines, skipped, dropped, bad)


# ---------------------------------------------------------------------------------- labels
@dataclass
class LabelMap:
    """Original label strings <-> class ids 0..n-1."""

    labels: list[str]

    @classmethod
    def from_labels(cls, labels: Sequence[str], source: str = "train") -> "LabelMap":
        uniq = set(labels)
        if len(uniq) < 2:
            raise TaskDataError(f"{source}: the train set has {len(uniq)} distinct label(s) {sorted(uniq)}; "
                                f"classification needs at least 2")

        def key(s: str):
            try:
                return (0, float(s), s)
            except ValueError:
                return (1, 0.0, s)

        return cls(sorted(uniq, key=key))

    @classmethod
    def from_id2label(cls, id2label: dict[int, str]) -> "LabelMap":
        return cls([str(id2label[i]) for i in range(len(id2label))])

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def label2id(self) -> dict[str, int]:
        return {l: i for i, l in enumerate(self.labels)}

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels))

    def encode(self, data: TaskData) -> np.ndarray:
        if data.labels is None:
            raise TaskDataError(f"{data.path}: has no labels")
        l2i = self.label2id
        out = np.empty(len(data.labels), dtype=np.int64)
        for i, lab in enumerate(data.labels):
            j = l2i.get(lab)
            if j is None:
                raise TaskDataError(f"{data.path}:{data.lines[i]}: label {lab!r} does not occur in the train set "
                                    f"(train labels: {self.labels[:20]}{' ...' if len(self) > 20 else ''}); "
                                    f"the model has no class for it -- fix the label or add train examples of it")
            out[i] = j
        return out


# ---------------------------------------------------------------------------------- encoding
@dataclass
class Encoded:
    """Token ids of one file, flat: example i is ``ids[offsets[i]:offsets[i+1]]``; tokens at
    positions >= ``type_split[i]`` (relative) have token type 1."""

    ids: np.ndarray
    offsets: np.ndarray
    type_split: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def subset(self, idx: Sequence[int]) -> "Encoded":
        idx = np.asarray(idx, dtype=np.int64)
        lens = self.lengths()[idx]
        offs = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(lens, out=offs[1:])
        ids = np.concatenate([self.ids[self.offsets[i]:self.offsets[i + 1]] for i in idx]) if len(idx) else \
            np.zeros(0, dtype=self.ids.dtype)
        return Encoded(ids, offs, self.type_split[idx])

    def batch(self, idx: Sequence[int], pad_id: int = 0):
        """Padded to the batch's longest: (input_ids, token_type_ids, attention_mask) int64 arrays."""
        lens = self.lengths()[np.asarray(idx)]
        T = int(lens.max())
        B = len(idx)
        ids = np.full((B, T), pad_id, dtype=np.int64)
        types = np.zeros((B, T), dtype=np.int64)
        mask = np.zeros((B, T), dtype=np.int64)
        for r, i in enumerate(idx):
            s, e = self.offsets[i], self.offsets[i + 1]
            n = e - s
            ids[r, :n] = self.ids[s:e]
            types[r, self.type_split[i]:n] = 1
            mask[r, :n] = 1
        return ids, types, mask


def encode_data(tokenizer, data: TaskData, seq_length: int, truncation: str = "longest_first") -> Encoded:
    if seq_length < 4:
        raise ValueError(f"seq_length {seq_length} is too short")
    a_ids = tokenizer.encode_batch_ids(data.texts[0])
    b_ids = tokenizer.encode_batch_ids(data.texts[1]) if data.is_pair else None
    chunks: list[list[int]] = []
    splits = np.empty(len(a_ids), dtype=np.int32)
    for i, a in enumerate(a_ids):
        enc = tokenizer.build_inputs(a, b_ids[i] if b_ids is not None else None, seq_length, truncation)
        chunks.append(enc.input_ids)
        try:
            splits[i] = enc.token_type_ids.index(1)
        except ValueError:
            splits[i] = len(enc.input_ids)
    offsets = np.zeros(len(chunks) + 1, dtype=np.int64)
    np.cumsum([len(c) for c in chunks], out=offsets[1:])
    dtype = np.int32 if tokenizer.vocab_size < 2 ** 31 else np.int64
    ids = np.fromiter((t for c in chunks for t in c), dtype=dtype, count=int(offsets[-1]))
    return Encoded(ids, offsets, splits)


def default_cache_dir() -> str:
    return os.environ.get("MINIROBERTA_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "miniroberta")


def cached_encode(tokenizer, data: TaskData, seq_length: int, truncation: str = "longest_first",
                  cache_dir: str | None = None, reader_key: dict[str, Any] | None = None) -> Encoded:
    """``encode_data`` with an on-disk cache (``cache_dir`` ``""`` disables it)."""
    if cache_dir == "":
        return encode_data(tokenizer, data, seq_length, truncation)
    cache_dir = cache_dir or default_cache_dir()
    key_obj = dict(v=CACHE_VERSION, file=sha256_file(data.path), vocab=tokenizer.sha256,
                   lowercase=getattr(tokenizer, "lowercase", True), seq=seq_length, trunc=truncation,
                   fields=list(data.text_fields), n=len(data), reader=reader_key or {})
    key = sha256_bytes(json.dumps(key_obj, sort_keys=True).encode())[:24]
    path = os.path.join(cache_dir, "tokenized", f"{Path(data.path).stem}-{key}.npz")
    if os.path.isfile(path):
        try:
            with np.load(path) as z:
                enc = Encoded(z["ids"], z["offsets"], z["type_split"])
            if len(enc) == len(data):
                return enc
        except (OSError, ValueError, KeyError):
            pass  # unreadable cache entry: rebuild it
    enc = encode_data(tokenizer, data, seq_length, truncation)
    try:
        with atomic_write(path, "wb") as f:
            np.savez(f, ids=enc.ids, offsets=enc.offsets, type_split=enc.type_split)
    except OSError:
        pass  # a read-only cache is not an error
    return enc


def subsample(n: int, k: int | None, seed: int = 0) -> np.ndarray | None:
    """Deterministic subset of ``k`` of ``n`` indices (sorted), or None for all."""
    if k is None or k >= n:
        return None
    rng = np.random.RandomState(seed)
    return np.sort(rng.choice(n, size=k, replace=False))


def subsample_tokens(lengths: np.ndarray, budget: int | None, seed: int = 0) -> np.ndarray | None:
    """Deterministic subset (sorted indices) whose token count fits ``budget``: a fixed random
    order, cut where the running sum of ``lengths`` would pass the budget; None when all fit."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if budget is None or int(lengths.sum()) <= int(budget):
        return None
    order = np.random.RandomState(seed).permutation(len(lengths))
    k = int(np.searchsorted(np.cumsum(lengths[order]), int(budget), side="right"))
    return np.sort(order[:max(1, k)])


def write_train_texts(tasks: Sequence[str], out_path: str, data_dir: str | None = None,
                      max_examples: int | None = None) -> dict[str, Any]:
    """The train texts of ``tasks`` as a pretraining corpus, **without their labels**: one text per line
    (both texts of a pair task, each on its line), whitespace runs collapsed, each distinct text once (first
    occurrence). ``max_examples`` takes each task's first examples only (a smoke run). Task-adaptive
    pretraining (Gururangan et al. 2020, "Don't Stop Pretraining"): the unlabeled text of the task is what
    a fine-tuning user always has. Dev/test texts are never read here; the caller decontaminates.

    Returns ``{"path", "lines", "bytes", "tasks": {task: {"examples", "texts"}}}``; written via a temp file."""
    seen: set[str] = set()
    per_task: dict[str, dict[str, int]] = {}
    n_bytes = 0
    with atomic_write(out_path, "wb") as f:
        for task in tasks:
            files = resolve_task(task, data_dir)
            data = read_examples(files.train_path, text_fields=files.text_fields, label_field=files.label_field,
                                 require_label=False, id_field=files.id_field)
            n = len(data) if not max_examples else min(len(data), int(max_examples))
            written = 0
            for i in range(n):
                for fld in data.texts:
                    text = " ".join(fld[i].split())
                    if text and text not in seen:
                        seen.add(text)
                        raw = (text + "\n").encode("utf-8")
                        f.write(raw)
                        n_bytes += len(raw)
                        written += 1
            per_task[task] = {"examples": n, "texts": written}
    return {"path": out_path, "lines": len(seen), "bytes": n_bytes, "tasks": per_task}


__all__ = ["subsample_tokens", "TaskSpec", "TASKS", "TASK_NAMES", "TaskFiles", "TaskData", "TaskDataError", "LabelMap", "Encoded",
           "resolve_task", "read_examples", "encode_data", "cached_encode", "parse_tasks", "default_data_dir",
           "default_vocab_path", "default_cache_dir", "subsample", "detect_format", "write_train_texts"]
