"""Classification task files: the registry of the six reference tasks, readers for UER-style TSV
and CLUE JSON lines, label maps and cached tokenization.

The task registry (``TASKS``, ``TASK_NAMES``, ``parse_tasks``) is the one list of task names: the grid,
the report's columns and the study's recipes read it from here.

Readers find columns **by name** (lcqmc's header is ``text_a text_b label``, UER's is
``label text_a text_b``). Every malformed row is an error naming ``file:line`` -- or, with
``skip_bad_rows``, is skipped and counted. A preset knows its label set: a train or dev label outside
it (a ``2`` in chnsenticorp) is a bad row, not a silent third class. Label maps are built from the
train set (numeric labels in numeric order, e.g. tnews ``100..116`` -> ``0..14``; other labels sorted)
and saved with the model; a dev label unseen in train is an error naming file and line.

Tokenized files are cached as ``.npz`` under ``cache_dir`` keyed by (file sha256, vocab sha256,
seq_length, fields, truncation, reader options), written atomically with a SHA-256 manifest; an entry
that fails its hash, cannot be read (``BadZipFile``, truncated) or does not fit the data is rebuilt,
and the rebuild is logged.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from miniroberta.integrity import atomic_write_bytes, verify_file
from miniroberta.textio import read_text_lines
from miniroberta.data.paths import default_tasks_dir, default_vocab_path
from miniroberta.utils import OutputWriteError, atomic_write, log, sha256_bytes, sha256_file

CACHE_VERSION = "2"     # 2: entries carry a SHA-256 manifest and are checked when read


class TaskDataError(ValueError):
    """A task file that cannot be used, naming file, line and the fix."""


# ---------------------------------------------------------------------------------- the task registry
@dataclass(frozen=True)
class TaskSpec:
    """Where a task's files live under ``data_dir/<name>/``, how to read them and its label set."""

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
    labels: tuple[str, ...] | None = None   # every label a train/dev row may carry (None: any)


BINARY = ("0", "1")
TNEWS_LABELS = tuple(str(c) for c in range(100, 117) if c not in (105, 111))   # CLUE codes, 15 classes
IFLYTEK_LABELS = tuple(str(i) for i in range(119))
OCNLI_LABELS = ("contradiction", "entailment", "neutral")

TASKS: dict[str, TaskSpec] = {
    "book_review": TaskSpec("book_review", "train.tsv", "dev.tsv", None, ("text_a",), labels=BINARY),
    "chnsenticorp": TaskSpec("chnsenticorp", "train.tsv", "dev.tsv", None, ("text_a",), labels=BINARY),
    "lcqmc": TaskSpec("lcqmc", "train.tsv", "dev.tsv", None, ("text_a", "text_b"), labels=BINARY),
    "tnews": TaskSpec("tnews", "train.json", "dev.json", "test.json", ("sentence",), id_field="id", submission="clue",
                      labels=TNEWS_LABELS),
    "iflytek": TaskSpec("iflytek", "train_partial_fewclue.json", "dev.json", "test.json", ("sentence",),
                        id_field="id", submission="clue", labels=IFLYTEK_LABELS,
                        note="iflytek trained on the partial FewCLUE-derived train set (train_partial_fewclue.json, "
                             "4,529 of the official 12,133 examples); not comparable to a full-train score"),
    "ocnli": TaskSpec("ocnli", "train.json", "dev.json", "test.json", ("sentence1", "sentence2"),
                      drop_labels=("-",), id_field="id", submission="clue", labels=OCNLI_LABELS),
}
TASK_NAMES = tuple(TASKS)   # the reference order: the report's columns, ``--tasks all``


def default_data_dir() -> str:
    """The tasks folder: ``$MINIROBERTA_DATA_DIR``, else ``<data root>/tasks`` (``data.paths``)."""
    return str(default_tasks_dir())


def parse_tasks(spec: str | Sequence[str]) -> list[str]:
    """``all`` (any case) or task names separated by commas or spaces (one string, or a list of them as
    argparse gives); each name once, in the order given. An unknown name is an error listing the choices."""
    parts = [spec] if isinstance(spec, str) else list(spec)
    items = [t for p in parts for t in str(p).replace(",", " ").split()]
    if [t.lower() for t in items] == ["all"]:
        return list(TASK_NAMES)
    if not items:
        raise TaskDataError(f"no task given; pass --tasks all or a comma-separated list of {', '.join(TASK_NAMES)}")
    bad = [t for t in items if t not in TASKS]
    if bad:
        raise TaskDataError(f"unknown task(s) {bad}; choose from {', '.join(TASK_NAMES)} or 'all'")
    return list(dict.fromkeys(items))


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
    labels: tuple[str, ...] | None = None   # the preset's label set (None: whatever the train file holds)

    def reader_options(self) -> dict[str, Any]:
        """The ``read_examples`` keywords of the train and dev files."""
        return dict(text_fields=self.text_fields, label_field=self.label_field, drop_labels=self.drop_labels,
                    allowed_labels=self.labels)


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
            drop_labels=spec.drop_labels, id_field=spec.id_field, submission=spec.submission, note=spec.note,
            labels=spec.labels)
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


class _Rows:
    """The rows of one file as they are read: kept rows, counts of skipped and dropped ones. ``fail``
    raises a ``TaskDataError`` naming ``file:line`` or, with ``skip_bad_rows``, counts the row."""

    def __init__(self, path: str, label_field: str, skip_bad_rows: bool, drop_labels: Sequence[str],
                 allowed_labels: Sequence[str] | None) -> None:
        self.path, self.label_field, self.skip_bad_rows = path, label_field, skip_bad_rows
        self.drop, self.allowed = set(drop_labels), (None if allowed_labels is None else tuple(allowed_labels))
        self.texts: list[list[str]] | None = None
        self.labels: list[str] | None = None
        self.ids: list[Any] = []
        self.lines: list[int] = []
        self.skipped = self.dropped = 0
        self.bad: list[str] = []

    def fail(self, lineno: int, msg: str) -> None:
        where = f"{self.path}:{lineno}: {msg}"
        if not self.skip_bad_rows:
            raise TaskDataError(where + " (fix the row, or pass --skip_bad_rows to skip and count such rows)")
        self.skipped += 1
        if len(self.bad) < 20:
            self.bad.append(where)

    def accept(self, lineno: int, vals: list[str], lab: str | None, where: str, row_id: Any) -> None:
        """Keep a parsed row (``lab`` None: an unlabeled file); empty, dropped and foreign labels here."""
        if lab is not None:
            lab = lab.strip()
            if not lab:
                self.fail(lineno, f"empty label in {where} {self.label_field!r}")
                return
            if lab in self.drop:
                self.dropped += 1
                return
            if self.allowed is not None and lab not in self.allowed:
                preview = ", ".join(self.allowed[:20]) + (" ..." if len(self.allowed) > 20 else "")
                self.fail(lineno, f"label {lab!r} is not one of the task's {len(self.allowed)} labels ({preview}); "
                                  f"a model trained on it would get a class the task does not have")
                return
            assert self.labels is not None
            self.labels.append(lab)
        assert self.texts is not None
        for t, v in zip(self.texts, vals):
            t.append(v)
        self.ids.append(row_id)
        self.lines.append(lineno)


def _read_tsv(f: Iterator[tuple[int, str]], rows: _Rows, fields: tuple[str, ...] | None, require_label: bool,
              id_field: str | None) -> tuple[str, ...]:
    """A UER-style TSV: a header row, columns by name. Returns the text fields used."""
    path, label_field = rows.path, rows.label_field
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
    if label_field not in col and require_label:
        raise TaskDataError(f"{path}:1: header {header} has no label column {label_field!r}; "
                            f"pass --label_field naming it")
    lc = col.get(label_field)
    rows.labels = [] if lc is not None else None
    idc = col.get(id_field) if id_field else None
    rows.texts = [[] for _ in fields]
    tcols = [col[c] for c in fields]
    for lineno, raw in f:
        row = raw.rstrip("\r\n")
        if not row.strip():
            rows.fail(lineno, "empty line")
            continue
        parts = row.split("\t")
        if len(parts) != len(header):
            rows.fail(lineno, f"expected {len(header)} tab-separated columns ({', '.join(header)}), got {len(parts)}")
            continue
        vals = [parts[c] for c in tcols]
        empty = [fields[i] for i, v in enumerate(vals) if not v.strip()]
        if empty:
            rows.fail(lineno, f"empty text in column(s) {empty}")
            continue
        rows.accept(lineno, vals, parts[lc] if lc is not None else None, "column",
                    parts[idc] if idc is not None else len(rows.ids))
    return fields


def _json_record(rows: _Rows, lineno: int, raw: str) -> dict[str, Any] | None:
    if lineno == 1:
        raw = raw.lstrip("\ufeff")
    if not raw.strip():
        rows.fail(lineno, "empty line")
        return None
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as e:
        rows.fail(lineno, f"bad JSON ({e.msg} at column {e.colno})")
        return None
    except RecursionError:
        rows.fail(lineno, "bad JSON (nested too deeply)")
        return None
    if not isinstance(obj, dict):
        rows.fail(lineno, "a JSON-lines record must be an object")
        return None
    return obj


def _read_jsonl(f: Iterator[tuple[int, str]], rows: _Rows, fields: tuple[str, ...] | None, require_label: bool,
                id_field: str | None) -> tuple[str, ...] | None:
    """CLUE JSON lines: one object per line. Returns the text fields used (None: no record at all)."""
    label_field = rows.label_field
    has_label: bool | None = True if require_label else None   # None: decided by the first record
    rows.labels = [] if require_label else None
    for lineno, raw in f:
        obj = _json_record(rows, lineno, raw)
        if obj is None:
            continue
        if fields is None:
            fields = _default_fields(list(obj), rows.path)
        if rows.texts is None:
            rows.texts = [[] for _ in fields]
        missing = [c for c in fields if c not in obj]
        if missing:
            rows.fail(lineno, f"record lacks the field(s) {missing} (has {sorted(obj)}); "
                              f"--text_fields names the text fields")
            continue
        vals = [obj[c] for c in fields]
        if any(not isinstance(v, str) for v in vals):
            rows.fail(lineno, f"text field(s) {list(fields)} must be strings")
            continue
        empty = [fields[i] for i, v in enumerate(vals) if not v.strip()]
        if empty:
            rows.fail(lineno, f"empty text in field(s) {empty}")
            continue
        if has_label is None:
            has_label = obj.get(label_field) is not None
            rows.labels = [] if has_label else None
        if has_label and obj.get(label_field) is None:
            rows.fail(lineno, f"record has no label field {label_field!r} (has {sorted(obj)}); "
                              f"pass --label_field naming it")
            continue
        rows.accept(lineno, vals, str(obj[label_field]) if has_label else None, "field",
                    obj.get(id_field, len(rows.ids)) if id_field else len(rows.ids))
    return fields


def read_examples(path: str, text_fields: Sequence[str] | None = None, label_field: str = "label",
                  require_label: bool = True, drop_labels: Sequence[str] = (), id_field: str | None = None,
                  skip_bad_rows: bool = False, fmt: str | None = None,
                  allowed_labels: Sequence[str] | None = None) -> TaskData:
    """Read a UER-style TSV (header row; columns by name) or a JSON-lines file.

    ``require_label=False`` reads test sets: labels are read when the file has them (TSV: a label
    column; JSON lines: the first record has the label field), else ``labels`` is ``None``.
    Rows whose label is in ``drop_labels`` (ocnli ``-``) are dropped and counted in ``dropped``; a
    label outside ``allowed_labels`` (a preset's label set) is a bad row naming ``file:line``.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such task file")
    fmt = fmt or detect_format(path)
    if fmt not in ("tsv", "jsonl"):
        raise TaskDataError(f"unknown task file format {fmt!r} (tsv or jsonl)")
    fields = tuple(text_fields) if text_fields else None
    if fields is not None and not 1 <= len(fields) <= 2:
        raise TaskDataError(f"--text_fields takes one or two column names, got {list(fields)}")
    rows = _Rows(path, label_field, skip_bad_rows, drop_labels, allowed_labels)
    with open(path, "rb") as fb:
        f = numbered_lines(fb, path, rows.fail)
        reader = _read_tsv if fmt == "tsv" else _read_jsonl
        fields = reader(f, rows, fields, require_label, id_field)
    if fields is None:
        raise TaskDataError(f"{path}: no records")
    if not rows.lines:
        raise TaskDataError(f"{path}: no usable records (skipped {rows.skipped}, dropped {rows.dropped})")
    return TaskData(path, tuple(fields), rows.texts or [[] for _ in fields], rows.labels, rows.ids, rows.lines,
                    rows.skipped, rows.dropped, rows.bad)


def read_transfer(path: str, n_fields: int) -> TaskData:
    """Unlabeled texts (distillation's transfer set): one text (or ``n_fields`` tab-separated texts) per
    line; blank lines are skipped; a line with another number of fields is an error naming it."""
    texts: list[list[str]] = [[] for _ in range(n_fields)]
    lines = []
    for lineno, line in read_text_lines(path):
        parts = line.split("\t")
        if len(parts) != n_fields:
            raise TaskDataError(f"{path}:{lineno}: expected {n_fields} tab-separated text(s) (the task's text "
                                f"fields), found {len(parts)}; fix the line or remove it")
        for k in range(n_fields):
            texts[k].append(parts[k])
        lines.append(lineno)
    if not lines:
        raise TaskDataError(f"{path}: no texts (one text, or one tab-separated pair, per line)")
    fields = tuple(f"text_{chr(ord('a') + k)}" for k in range(n_fields))
    return TaskData(path=os.path.abspath(path), text_fields=fields, texts=texts, labels=None,
                    ids=list(range(len(lines))), lines=lines)


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

    def subset(self, indices: Sequence[int] | np.ndarray) -> "Encoded":
        idx = np.asarray(indices, dtype=np.int64)
        lens = self.lengths()[idx]
        offs = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(lens, out=offs[1:])
        ids = np.concatenate([self.ids[self.offsets[i]:self.offsets[i + 1]] for i in idx]) if len(idx) else \
            np.zeros(0, dtype=self.ids.dtype)
        return Encoded(ids, offs, self.type_split[idx])

    def concat(self, other: "Encoded") -> "Encoded":
        """This file's examples followed by ``other``'s."""
        offs = np.concatenate([self.offsets, self.offsets[-1] + other.offsets[1:]])
        return Encoded(np.concatenate([self.ids, other.ids]), offs, np.concatenate([self.type_split, other.type_split]))

    def digest(self) -> str:
        """SHA-256 of the token ids, offsets and segment splits: the identity of the encoded data."""
        h = hashlib.sha256()
        for arr in (self.ids, self.offsets, self.type_split):
            h.update(str(arr.dtype).encode())
            h.update(np.ascontiguousarray(arr).view(np.uint8).data)
        return h.hexdigest()

    def problem(self, vocab_size: int) -> str | None:
        """What is wrong with the arrays (a damaged cache entry), or None."""
        o = np.asarray(self.offsets)
        if o.ndim != 1 or len(o) < 1 or o[0] != 0 or o[-1] != len(self.ids) or (np.diff(o) < 1).any():
            return "offsets do not cut the token ids into non-empty examples"
        if len(self.type_split) != len(self) or (self.type_split < 0).any() or \
                (self.type_split > np.diff(o)).any():
            return "segment splits outside their examples"
        if len(self.ids) and (int(self.ids.min()) < 0 or int(self.ids.max()) >= vocab_size):
            return f"token ids outside the vocabulary (0..{vocab_size - 1})"
        return None

    def batch(self, idx: Sequence[int] | np.ndarray, pad_id: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Padded to the batch's longest: (input_ids, token_type_ids, attention_mask) int64 arrays."""
        lens = self.lengths()[np.asarray(idx)]
        longest = int(lens.max())
        rows = len(idx)
        ids = np.full((rows, longest), pad_id, dtype=np.int64)
        types = np.zeros((rows, longest), dtype=np.int64)
        mask = np.zeros((rows, longest), dtype=np.int64)
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


def _read_cache_entry(path: str, n: int, vocab_size: int) -> tuple[Encoded | None, str]:
    """(the cached arrays, "") or (None, why the entry cannot be used)."""
    try:
        if not verify_file(path):
            return None, "no integrity manifest"
        with np.load(path, allow_pickle=False) as z:
            enc = Encoded(z["ids"], z["offsets"], z["type_split"])
    except Exception as e:  # noqa: BLE001 -- BadZipFile, a truncated file, a wrong hash, a missing array ...
        return None, f"{type(e).__name__}: {str(e)[:200]}"
    if len(enc) != n:
        return None, f"{len(enc)} examples, the file has {n}"
    why = enc.problem(vocab_size)
    return (None, why) if why else (enc, "")


def cached_encode(tokenizer, data: TaskData, seq_length: int, truncation: str = "longest_first",
                  cache_dir: str | None = None, reader_key: dict[str, Any] | None = None,
                  say: Callable[[str], None] = log) -> Encoded:
    """``encode_data`` with an on-disk cache (``cache_dir`` ``""`` disables it). An entry is used only if
    it matches its SHA-256 manifest and fits the data; anything else is rebuilt (and ``say`` says so). A
    cache that cannot be written (read-only, full) is skipped with a warning, never an error."""
    if cache_dir == "":
        return encode_data(tokenizer, data, seq_length, truncation)
    cache_dir = cache_dir or default_cache_dir()
    key_obj = dict(v=CACHE_VERSION, file=sha256_file(data.path), vocab=tokenizer.sha256,
                   lowercase=getattr(tokenizer, "lowercase", True), seq=seq_length, trunc=truncation,
                   fields=list(data.text_fields), n=len(data), reader=reader_key or {})
    key = sha256_bytes(json.dumps(key_obj, sort_keys=True).encode())[:24]
    path = os.path.join(cache_dir, "tokenized", f"{Path(data.path).stem}-{key}.npz")
    if os.path.exists(path):
        enc, why = _read_cache_entry(path, len(data), tokenizer.vocab_size)
        if enc is not None:
            return enc
        say(f"warning: the tokenization cache entry {path} is damaged ({why}); rebuilding it")
    enc = encode_data(tokenizer, data, seq_length, truncation)
    buf = io.BytesIO()
    np.savez(buf, ids=enc.ids, offsets=enc.offsets, type_split=enc.type_split)
    try:
        atomic_write_bytes(path, buf.getvalue())    # the entry, then its SHA-256 manifest
    except (OSError, OutputWriteError) as e:
        say(f"warning: cannot write the tokenization cache ({e}); continuing without it")
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


__all__ = ["TaskSpec", "TASKS", "TASK_NAMES", "BINARY", "TNEWS_LABELS", "IFLYTEK_LABELS", "OCNLI_LABELS",
           "TaskFiles", "TaskData", "TaskDataError", "LabelMap", "Encoded", "resolve_task", "read_examples",
           "read_transfer", "encode_data", "cached_encode", "parse_tasks", "default_data_dir", "default_vocab_path",
           "default_cache_dir", "subsample", "subsample_tokens", "detect_format", "write_train_texts"]
