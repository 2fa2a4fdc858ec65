"""The ``miniroberta preprocess`` command: options generated from ``PreprocessConfig``, plus UER-py's
spellings (``--dynamic_masking``, ``--data_processor mlm``, ...) accepted as in the reference."""
from __future__ import annotations

import argparse

from miniroberta.data.preprocess.build import build_dataset
from miniroberta.data.preprocess.config import MASKING, PROCESSORS, PreprocessConfig
from miniroberta.engine.threads import available_cores
from miniroberta.settings import add_options, from_args
from miniroberta.utils import log, terminate_as_exit


def _bool_str(s: str) -> bool:
    v = str(s).strip().lower()
    if v in ("true", "1", "yes"):
        return True
    if v in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {s!r}")


def configure(p: argparse.ArgumentParser) -> None:
    """The options are generated from ``PreprocessConfig`` (defaults, help, checks)."""
    groups: dict = {}
    add_options(p, PreprocessConfig, groups=groups)
    # UER-py's flag: without it the masks are static (--dup_factor copies), as in the reference tool;
    # build_dataset's own default is dynamic masking (PreprocessConfig.dynamic_masking)
    groups[MASKING].add_argument("--dynamic_masking", action="store_true",
                                 help="masks drawn at training time (the reference recipe); without it, static "
                                      "masks: --dup_factor fixed copies, as in UER-py")
    g = p.add_argument_group("accepted for UER-py compatibility")
    g.add_argument("--data_processor", default="mlm", help="only mlm (one document per line) is supported")
    g.add_argument("--target", default=None, help="the 2020 UER-py spelling of --data_processor; only mlm")
    g.add_argument("--tokenizer", default=None, help="only bert (BERT WordPiece) is supported; a note when given")
    g.add_argument("--docs_buffer_size", type=int, default=None,
                   help="ignored with a note: memory is bounded without it")
    g.add_argument("--do_lower_case", type=_bool_str, default=None,
                   help="ignored with a note: the text is always lower-cased, like the uncased Chinese BERT vocab")


def _uer_flags(args: argparse.Namespace) -> None:
    for name in ("data_processor", "target"):
        v = getattr(args, name, None)
        if v is not None and v not in PROCESSORS:
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


def config_from_args(args: argparse.Namespace) -> PreprocessConfig:
    """The command line's ``PreprocessConfig`` (``--overwrite`` keeps the old dataset as NAME.old-<time>;
    ``--processes_num`` is capped at the CPUs this process may use, with a note)."""
    _uer_flags(args)
    cfg = from_args(PreprocessConfig, args, dynamic_masking=bool(args.dynamic_masking), keep_old=True)
    cpus = len(available_cores())
    if isinstance(cfg.processes_num, int) and cfg.processes_num > cpus:
        log(f"note: --processes_num {cfg.processes_num} > {cpus} available CPUs; using {cpus} "
            f"(the output is identical for any number of processes)")
        cfg.processes_num = cpus
    return cfg.validate()


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    with terminate_as_exit():            # SIGTERM: the temp dataset folder is removed on the way out
        build_dataset(cfg)
    return 0


__all__ = ["configure", "run", "config_from_args"]
