"""``miniroberta`` -- one entry point, one subcommand per job.

Every option is declared with underscores as in UER-py (``--corpus_path``); the dashed
spelling (``--corpus-path``) is accepted too. Subcommand modules are imported lazily so
``miniroberta --help`` is instant; each module exposes ``configure(parser)`` and ``run(args)``
(or the named functions below).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

from miniroberta.version import __version__
from miniroberta.modeling.config import ALIASES, preset, preset_names

# name -> (module, configure function, run function, one-line help)
COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "quickstart": ("miniroberta.study.quickstart", "configure", "run",
                   "preprocess a corpus slice, pretrain a tiny model, export it and show fill-mask predictions"),
    "preprocess": ("miniroberta.data.preprocess", "configure", "run",
                   "turn a corpus (one document per line) into a memory-mapped MLM dataset"),
    "pretrain": ("miniroberta.pretrain.launch", "configure", "run",
                 "MLM pretraining (single process, DDP via --world_size or torchrun), resumable"),
    "convert": ("miniroberta.interop.convert", "configure", "run",
                "convert between native, HuggingFace and UER-py checkpoints"),
    "fill-mask": ("miniroberta.infer.pipelines", "configure_fill_mask", "run_fill_mask",
                  "predict [MASK] tokens, like transformers' fill-mask pipeline"),
    "embed": ("miniroberta.infer.pipelines", "configure_embed", "run_embed",
              "write sentence or token features of texts to a .npy file"),
    "export-onnx": ("miniroberta.infer.onnx_export", "configure", "run",
                    "export a model head to ONNX (dynamic axes, parity-checked), optionally int8-quantized"),
    "serve": ("miniroberta.serve.app", "configure", "run",
              "HTTP server: /fill-mask /embed /classify with dynamic micro-batching, /healthz, /metrics"),
    "finetune": ("miniroberta.finetune.run", "configure", "run",
                 "fine-tune a pretrained model for sequence classification on one task"),
    "distill": ("miniroberta.finetune.distill", "configure", "run",
                "task distillation (PD): train a student on a fine-tuned teacher's soft targets (+ unlabeled text)"),
    "grid": ("miniroberta.finetune.grid", "configure", "run",
             "run the reference hyper-parameter grid on one or more tasks (resumable)"),
    "report": ("miniroberta.finetune.report", "configure", "run",
               "print the score table (Markdown/CSV/JSON) and plot score against size"),
    "predict": ("miniroberta.finetune.predict", "configure", "run",
                "label unlabeled files with a fine-tuned model (CLUE submission format)"),
    "reproduce": ("miniroberta.study.reproduce", "configure", "run",
                  "run the whole reference study (preprocess, 2-stage pretrain, export, grid, report)"),
    "sweep": ("miniroberta.study.sweep", "configure", "run",
              "short pretraining runs at one token budget, scored by held-out MLM loss: find a recipe"),
    "presets": ("miniroberta.cli", "configure_presets", "run_presets",
                "list the 24 model sizes and their parameter counts"),
}


class HelpFormatter(argparse.HelpFormatter):
    """Shows an option's default exactly once: options generated from the config dataclasses
    (``miniroberta.settings``) carry it in their help already; for the others ``(default: X)`` is
    appended, except for flags (off unless given), ``None`` and help that already names its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        h = action.help or ""
        if ("(default" in h or "%(default)" in h or action.default in (None, argparse.SUPPRESS, False, True)
                or action.required or isinstance(action, (argparse._StoreConstAction, argparse._StoreTrueAction,
                                                          argparse._StoreFalseAction))):
            return h
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            h += " (default: %(default)s)"
        return h


def normalize_argv(argv: list[str]) -> list[str]:
    """``--corpus-path=x`` -> ``--corpus_path=x``; stops at a bare ``--``."""
    out = []
    for i, a in enumerate(argv):
        if a == "--":
            out.extend(argv[i:])
            break
        if a.startswith("--") and len(a) > 2:
            name, eq, val = a.partition("=")
            a = name.replace("-", "_").replace("__", "--", 1) + eq + val
        out.append(a)
    return out


def _top_parser() -> argparse.ArgumentParser:
    lines = "\n".join(f"  {n:<11} {h}" for n, (_, _, _, h) in COMMANDS.items())
    p = argparse.ArgumentParser(
        prog="miniroberta",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Pretrain, convert, fine-tune and serve compact Chinese BERT/RoBERTa encoders.",
        epilog=f"commands:\n{lines}\n\n`miniroberta COMMAND --help` for a command's options; "
               f"options accept UER-py's underscore spelling and the dashed one.")
    p.add_argument("--version", action="version", version=f"miniroberta {__version__}")
    p.add_argument("command", nargs="?", choices=list(COMMANDS), metavar="COMMAND", help="one of the commands below")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        if argv and argv[0] not in ("-h", "--help", "--version") and not argv[0].startswith("-"):
            top.error(f"unknown command {argv[0]!r}; choose from {', '.join(COMMANDS)}")
        top.parse_args(argv[:1] if argv else ["--help"])
        return 0
    name, rest = argv[0], normalize_argv(argv[1:])
    mod_name, conf_fn, run_fn, help_text = COMMANDS[name]
    mod = importlib.import_module(mod_name)
    parser = argparse.ArgumentParser(prog=f"miniroberta {name}", description=help_text,
                                     formatter_class=HelpFormatter)
    getattr(mod, conf_fn)(parser)
    args = parser.parse_args(rest)
    try:
        rc = getattr(mod, run_fn)(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError, OSError) as e:
        # OSError: disk full, read-only or permission errors not already turned into one line (their
        # message names the path); anything else is a bug and keeps its traceback
        if getattr(args, "traceback", False) or _debug():
            raise
        print(f"miniroberta {name}: error: {e}", file=sys.stderr)
        return 2
    return int(rc or 0)


def _debug() -> bool:
    return os.environ.get("MINIROBERTA_DEBUG", "") not in ("", "0")


# ------------------------------------------------------------------ presets
def configure_presets(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vocab_size", type=int, default=21128, help="vocabulary size the parameter counts assume")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run_presets(args: argparse.Namespace) -> int:
    rev = {v: k for k, v in ALIASES.items()}
    rows: list[dict] = []
    for n in preset_names():
        c = preset(n, vocab_size=args.vocab_size)
        rows.append(dict(name=n, alias=rev.get(n, ""), layers=c.num_hidden_layers, hidden=c.hidden_size,
                         heads=c.num_attention_heads, ffn=c.intermediate_size,
                         params=c.num_parameters(mlm_head=False, pooler=False)))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"{'preset':<9} {'alias':<7} {'L':>3} {'H':>4} {'heads':>5} {'FFN':>5} {'params (encoder)':>17}")
        for r in rows:
            print(f"{r['name']:<9} {r['alias']:<7} {r['layers']:>3} {r['hidden']:>4} {r['heads']:>5} {r['ffn']:>5} "
                  f"{r['params'] / 1e6:>16.1f}M")
    return 0


if __name__ == "__main__":
    sys.exit(main())
