"""``build_dataset``: plan the byte ranges, run the workers, assemble, write the manifest last.

The dataset folder is claimed for the run (one writer; ``outputs.claim_output``), built under a pid-tagged
temporary name and renamed into place when complete (``utils.atomic_dir``); disk-full / read-only /
permission errors anywhere in between are one line naming the path, the free space and what is intact.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from miniroberta.data.dataset import default_manifest, token_dtype
from miniroberta.data.preprocess.assemble import Assembled, assemble
from miniroberta.data.preprocess.config import CorpusError, PreprocessConfig
from miniroberta.data.preprocess.corpus import ByteRange, hash_corpus, plan_ranges, resolve_corpus, warn_unk_rate
from miniroberta.data.preprocess.shards import (MAX_REPORTED_LINES, RangeResult, WorkerOptions, in_process,
                                                init_worker, process_range, stop_all)
from miniroberta.data.preprocess.tokenize import MAX_INPUT_CHARS_PER_WORD
from miniroberta.modeling.tokenizer import read_vocab
from miniroberta.outputs import claim_output
from miniroberta.utils import atomic_dir, log, sha256_file, write_error


def build_dataset(corpus_path: str | os.PathLike | Sequence[str | os.PathLike] | PreprocessConfig,
                  vocab_path: str | os.PathLike | None = None, dataset_path: str | os.PathLike | None = None,
                  **settings: Any) -> dict[str, Any]:
    """Preprocess a corpus into a dataset directory; returns the manifest.

    ``build_dataset(cfg)`` with a :class:`PreprocessConfig`, or ``build_dataset(corpus, vocab, out, **settings)``
    whose keywords are ``PreprocessConfig``'s fields (``seq_length=128, processes_num=1, max_bytes=None,
    overwrite=False, ...``; checked like the command line's, an unknown keyword is a ``TypeError``).
    ``corpus``: a file, a directory (its ``*.txt`` files in sorted order) or a list of files, read as one
    corpus.

    The dataset path is claimed for the run (a second build on it fails at once naming the first). An
    existing dataset is refused unless ``overwrite``; then it is replaced when the new one is complete, or,
    with ``keep_old`` (the CLI's ``--overwrite``), moved aside to ``NAME.old-<time>`` first."""
    if isinstance(corpus_path, PreprocessConfig):
        if vocab_path is not None or dataset_path is not None or settings:
            raise TypeError("build_dataset(cfg) takes no other arguments; set them in the PreprocessConfig")
        cfg = corpus_path.validate()
    else:
        if vocab_path is None or dataset_path is None:
            raise TypeError("build_dataset(corpus_path, vocab_path, dataset_path, **settings) needs all three paths")
        cfg = PreprocessConfig.of(corpus_path, vocab_path, dataset_path, **settings)
    t_start = time.time()
    out = os.path.abspath(cfg.dataset_path)
    files = resolve_corpus(cfg.corpus)
    read_vocab(cfg.vocab_path)                     # a bad vocab fails before anything is moved aside
    # one writer per dataset; an existing one is refused, or moved aside with --overwrite
    with claim_output(out, overwrite=cfg.overwrite and cfg.keep_old, can_resume=False, command="preprocess",
                      what="a dataset", check_existing=not cfg.overwrite or cfg.keep_old):
        existed = os.path.exists(out)
        try:
            return _build(cfg, files, out, t_start)
        except OSError as e:                       # a full disk, a read-only file system: one line
            err = write_error(out, e, existed)
            if err is e:
                raise
            raise err from None


@dataclass
class _Run:
    """The state of one build: settings, files, ranges, results, counts."""
    cfg: PreprocessConfig
    files: list[str]
    out: str
    t_start: float
    ranges: list[ByteRange] = field(default_factory=list)
    used: list[int] = field(default_factory=list)
    results: list[RangeResult] = field(default_factory=list)
    bar: Any = None

    def collect(self, r: RangeResult) -> None:
        self.results.append(r)
        if self.bar is not None:
            self.bar.update(r.bytes)
            insts = sum(x.instances for x in self.results) if not self.cfg.full_sentences else "-"
            self.bar.set_postfix(docs=sum(x.documents for x in self.results), inst=insts, refresh=False)


def _build(cfg: PreprocessConfig, files: list[str], out: str, t_start: float) -> dict[str, Any]:
    """``build_dataset`` once the output is claimed."""
    vocab = read_vocab(cfg.vocab_path)
    run = _Run(cfg, files, out, t_start)
    run.ranges, run.used = plan_ranges(files, cfg.processes_num, cfg.max_bytes, cfg.range_bytes)
    if sum(run.used) == 0:
        what = f"the first {cfg.max_bytes} bytes of " if cfg.max_bytes is not None else ""
        raise CorpusError(f"{what}the corpus {_names(files)} hold(s) no complete line; the corpus is empty (one "
                          f"document per line expected)" + (" -- raise --max_bytes" if cfg.max_bytes is not None else ""))
    hashed: dict[str, str] = {}
    hasher = threading.Thread(target=hash_corpus, args=(files, run.used, hashed), daemon=True)
    hasher.start()
    if cfg.progress and sys.stderr.isatty():   # no carriage-return bars in redirected logs (the end is logged)
        run.bar = tqdm(total=sum(run.used), unit="B", unit_scale=True, unit_divisor=1000, desc="preprocess",
                       file=sys.stderr, dynamic_ncols=True, smoothing=0.1)
    with atomic_dir(out, overwrite=cfg.overwrite and not cfg.keep_old) as tmp:
        _run_workers(run, tmp)
        if run.bar is not None:
            run.bar.close()
        run.results.sort(key=lambda r: r.index)
        _check_results(run)
        done = assemble(tmp, run.results, token_dtype(len(vocab)), cfg.seq_length, cfg.full_sentences,
                        cfg.whole_word_masking)
        hasher.join()
        manifest = _manifest(run, done, vocab, hashed.get("sha256"))
        with open(os.path.join(tmp, "manifest.json"), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2, ensure_ascii=False, sort_keys=True)
            f.write("\n")
    stats = manifest["stats"]
    warn_unk_rate(stats["unk_rate"], _unk(run), done.num_tokens, cfg.vocab_path, files)
    if cfg.progress:
        _summary(run, done, manifest)
    return manifest


def _names(files: list[str]) -> str:
    return f"{', '.join(files[:3])}{' …' if len(files) > 3 else ''}"


def _unk(run: _Run) -> int:
    return sum(r.unk_tokens for r in run.results)


def _run_workers(run: _Run, tmp: str) -> None:
    """Every byte range through ``process_range``: in this process, or in a pool of spawned workers."""
    cfg = run.cfg
    opts = WorkerOptions(vocab_path=cfg.vocab_path, seq_length=cfg.seq_length, full_sentences=cfg.full_sentences,
                         whole_word_masking=cfg.whole_word_masking, on_error=cfg.on_error)
    if cfg.processes_num == 1 or len(run.ranges) == 1:
        with in_process(opts, tmp):
            for r in run.ranges:
                res = process_range(r)
                run.collect(res)
                if res.invalid_count and cfg.on_error == "fail":
                    stop_all()                  # the rest is only validated
        return
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    with ctx.Pool(min(cfg.processes_num, len(run.ranges)), initializer=init_worker,
                  initargs=(opts, tmp, stop, True)) as pool:
        for res in pool.imap_unordered(process_range, run.ranges, chunksize=1):
            run.collect(res)


def _check_results(run: _Run) -> None:
    """Invalid UTF-8 (an error under ``on_error fail``, else a warning) and a corpus without documents."""
    invalid = sum(r.invalid_count for r in run.results)
    if invalid and run.cfg.on_error == "fail":
        raise CorpusError(invalid_utf8_message(run.results, run.files, run.cfg.on_error))
    if invalid:
        log(f"warning: {invalid_utf8_message(run.results, run.files, run.cfg.on_error)}")
    if sum(r.documents for r in run.results) == 0:
        raise CorpusError(f"the corpus {_names(run.files)} holds no document (every line is empty); nothing to "
                          f"preprocess")
    nul = sum(r.nul_lines for r in run.results)
    if nul:
        log(f"warning: {nul} corpus line(s) contain NUL bytes (dropped by the tokenizer's text cleaning); "
            f"is a binary file in the corpus?")


def invalid_utf8_message(results: list[RangeResult], files: list[str], on_error: str) -> str:
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
        shown = ", ".join(str(x) for x in per_file[fi][:MAX_REPORTED_LINES])
        parts.append(f"{files[fi]}: {counts[fi]} line(s), first at line(s) {shown} -- {files[fi]}:{per_file[fi][0]}")
    head = f"{total} corpus line(s) are not valid UTF-8 ({'; '.join(parts)})"
    if on_error == "fail":
        return (head + ". Fix the file (e.g. `iconv -f GB18030 -t UTF-8`), or pass --on_error skip to drop those "
                "lines or --on_error replace to decode them with U+FFFD (which the tokenizer drops).")
    return head + (" -- skipped (--on_error skip)" if on_error == "skip" else " -- decoded with U+FFFD (--on_error replace)")


def _stats(run: _Run, done: Assembled) -> dict[str, Any]:
    rs = run.results
    slots = done.num_instances * run.cfg.seq_length
    return {
        "lines": sum(r.lines for r in rs),
        "empty_lines": sum(r.empty_lines for r in rs),
        "invalid_utf8_lines": sum(r.invalid_count for r in rs),
        "nul_lines": sum(r.nul_lines for r in rs),
        "fallback_lines": sum(r.fallback_lines for r in rs),
        "max_line_bytes": max((r.max_line_bytes for r in rs), default=0),
        "fill_ratio": done.num_tokens / slots if slots else 0.0,
        "unk_rate": _unk(run) / done.num_tokens if done.num_tokens else 0.0,
        "seconds": round(time.time() - run.t_start, 3),
        "processes_num": run.cfg.processes_num,
        "tasks": len(run.ranges),          # byte ranges handed to the workers (the key predates the rename)
    }


def _manifest(run: _Run, done: Assembled, vocab: dict[str, int], corpus_sha256: str | None) -> dict[str, Any]:
    cfg, files, used = run.cfg, run.files, run.used
    total = sum(used)
    corpus = {
        "path": [os.path.abspath(f) for f in cfg.corpus] if isinstance(cfg.corpus, list)
        else os.path.abspath(cfg.corpus),
        "files": [{"path": os.path.abspath(f), "bytes": u, "size": os.path.getsize(f)} for f, u in zip(files, used)],
        "sha256": corpus_sha256,
        "size": total,
        "bytes": total,
        "max_bytes": cfg.max_bytes,
    }
    num_docs, unk = sum(r.documents for r in run.results), _unk(run)
    counts = {"num_documents": num_docs, "num_instances": done.num_instances, "num_tokens": done.num_tokens,
              "continuation_windows": done.continuation_windows, "unk_tokens": unk}
    return default_manifest(
        vocab_sha256=sha256_file(cfg.vocab_path), vocab_size=len(vocab), seq_length=cfg.seq_length, processor="mlm",
        full_sentences=cfg.full_sentences, dynamic_masking=cfg.dynamic_masking,
        dup_factor=1 if cfg.dynamic_masking else cfg.dup_factor, whole_word_masking=cfg.whole_word_masking,
        span_masking=cfg.span_masking, span_geo_prob=float(cfg.span_geo_prob), span_max_length=cfg.span_max_length,
        seed=cfg.seed, num_real_tokens=done.num_tokens, counts=counts, **counts,
        corpus=corpus, dtype=np.dtype(token_dtype(len(vocab))).name, on_error=cfg.on_error, stats=_stats(run, done),
        tokenizer={"kind": "bert-wordpiece", "lowercase": True,
                   "max_input_chars_per_word": MAX_INPUT_CHARS_PER_WORD, "special_tokens_in_text": False},
        word_segmenter="jieba" if cfg.whole_word_masking else None, chunk_hashes=done.chunk_hashes,
    )


def _summary(run: _Run, done: Assembled, manifest: dict[str, Any]) -> None:
    cfg, stats = run.cfg, manifest["stats"]
    elapsed = time.time() - run.t_start
    total = sum(run.used)
    slots = done.num_instances * cfg.seq_length
    log(f"preprocess: {run.out}\n"
        f"  documents            {manifest['num_documents']:,}  (lines {stats['lines']:,}, empty {stats['empty_lines']:,})\n"
        f"  instances            {done.num_instances:,}  (seq_length {cfg.seq_length}"
        f"{', full_sentences' if cfg.full_sentences else ''})\n"
        f"  real tokens          {done.num_tokens:,}\n"
        f"  fill ratio           {stats['fill_ratio']:.4f}  (real / {slots:,} slots)\n"
        f"  continuation windows {done.continuation_windows:,}\n"
        f"  [UNK] rate           {stats['unk_rate']:.5f}  ({manifest['unk_tokens']:,} tokens)\n"
        f"  corpus               {total / 1e6:.2f} MB in {elapsed:.1f} s "
        f"({total / 1e6 / max(elapsed, 1e-9):.2f} MB/s, {cfg.processes_num} process(es))")


__all__ = ["build_dataset", "invalid_utf8_message"]
