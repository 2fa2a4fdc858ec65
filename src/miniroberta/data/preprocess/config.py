"""``PreprocessConfig``: every setting of ``miniroberta preprocess`` / ``build_dataset``, declared once.

The command's options are generated from it (``settings.add_options``: help text, default shown once,
bounds and choices checked by ``settings.validate``). ``effect="result"`` marks what changes the written
dataset; ``"speed"`` what only changes how fast or how loudly it is written (the output is byte-identical
for any ``processes_num`` and ``range_bytes``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

from miniroberta.settings import option, validate

ON_ERROR = ("skip", "replace", "fail")
PROCESSORS = ("mlm",)

IO, WINDOWS, MASKING, RUN = "input and output", "windows", "masking (recorded for training)", "run"


class CorpusError(ValueError):
    """A corpus that cannot be preprocessed, naming the file (and ``file:line`` for undecodable lines)."""


@dataclass(kw_only=True)
class PreprocessConfig:
    """What ``build_dataset`` builds and how."""
    corpus_path: list[str] = option(
        help="corpus file (one document per line), a directory of *.txt files, or several files", effect="result",
        resume=False, group=IO)
    vocab_path: str = option(help="BERT vocab.txt, e.g. ../shared/data/vocab/google_zh_vocab.txt", effect="result",
                             resume=False, group=IO)
    dataset_path: str = option("dataset.pt", "output dataset directory (the name is kept as given, e.g. "
                               "x_seq128_dataset.pt)", effect="result", resume=False, group=IO)
    max_bytes: int | None = option(None, "use only the first N bytes of the corpus (cut at a line boundary)",
                                   effect="result", gt=0, group=IO, default_text="the whole corpus")
    on_error: str = option("fail", "what to do with lines that are not valid UTF-8", effect="result",
                           choices=ON_ERROR, group=IO)
    overwrite: bool = option(False, "move an existing --dataset_path aside to NAME.old-<time> and build a new one",
                             effect="speed", group=IO)
    keep_old: bool = option(False, "with overwrite: move the old dataset aside first (the CLI's --overwrite) "
                            "rather than replace it once the new one is complete", effect="speed", cli=False)
    seq_length: int = option(128, "window length in tokens ([CLS] and [SEP] included)", effect="result", ge=2,
                             group=WINDOWS)
    full_sentences: bool = option(False, "RoBERTa packing: window all documents as one stream (far less padding)",
                                  effect="result", group=WINDOWS)
    dynamic_masking: bool = option(True, "masks drawn at training time (the reference recipe); false: static "
                                   "masks, --dup_factor fixed copies", effect="result", cli=False)
    dup_factor: int = option(5, "static masking: copies with different masks", effect="result", ge=1,
                             group=MASKING)
    whole_word_masking: bool = option(False, "store jieba word starts for whole-word masking", effect="result",
                                      group=MASKING)
    span_masking: bool = option(False, "span masking (geometric span lengths), recorded for training",
                                effect="result", group=MASKING)
    span_geo_prob: float = option(0.2, "span masking: p of the geometric span length", effect="result", gt=0, le=1,
                                  group=MASKING)
    span_max_length: int = option(10, "span masking: longest span", effect="result", ge=1, group=MASKING)
    seed: int = option(7, "masking seed, recorded in the manifest and used by training", effect="result",
                       group=MASKING)
    processes_num: int = option(1, "worker processes (the output is identical for any number)", effect="speed",
                                ge=1, group=RUN)
    progress: bool = option(True, "no progress bar or summary", effect="speed", group=RUN)
    range_bytes: int | None = option(None, "bytes of corpus per worker task", effect="speed", ge=1, cli=False,
                                     default_text="derived from the corpus size: 256 KiB to 4 MiB")

    def problems(self) -> list[str]:
        out = []
        if not self.corpus_path:
            out.append("--corpus_path: the corpus file list is empty; pass at least one corpus file")
        if self.whole_word_masking and self.span_masking:
            out.append("--whole_word_masking and --span_masking are mutually exclusive; pick one")
        return out

    def validate(self) -> "PreprocessConfig":
        return validate(self, "preprocess settings")

    @property
    def corpus(self) -> str | list[str]:
        """The corpus as given: one path (a file or a directory) or a list of files."""
        return self.corpus_path[0] if len(self.corpus_path) == 1 else list(self.corpus_path)

    @classmethod
    def of(cls, corpus_path: str | os.PathLike | Sequence[str | os.PathLike], vocab_path: str | os.PathLike,
           dataset_path: str | os.PathLike, **settings: Any) -> "PreprocessConfig":
        """From paths (``str`` or ``PathLike``; the corpus one path or several) and keyword settings named
        as the fields (an unknown keyword is a ``TypeError`` naming it); validated."""
        paths = [corpus_path] if isinstance(corpus_path, (str, os.PathLike)) else list(corpus_path)
        return cls(corpus_path=[os.fspath(p) for p in paths], vocab_path=os.fspath(vocab_path),
                   dataset_path=os.fspath(dataset_path), **settings).validate()


__all__ = ["PreprocessConfig", "CorpusError", "ON_ERROR", "PROCESSORS"]
