"""``miniroberta reproduce``: the whole reference study as one resumable command.

The command line (generated from :class:`ReproduceOptions`), the recipe it resolves (``study.recipe``), and
the run: one study per ``--out`` (claimed, resumed by default), its steps in ``study.pipeline``, each cached
with a manifest by ``study.steps``; ``--dry_run`` prints the plan of ``study.plan``.

A re-run skips a step whose manifest is ``done`` with the same fingerprint (settings + input hashes); a step
left ``running`` (killed, crashed) is resumed -- pretraining from its last checkpoint, the grid from its
finished cells; a step whose settings or inputs changed is redone from scratch together with everything
downstream of it (their fingerprints change too). ``events.jsonl`` logs every decision.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, fields
from typing import Any

from miniroberta.optional import have, install_hint, plots_available
from miniroberta.outputs import claim_output
from miniroberta.settings import add_options, from_args, help_text, option, validate
from miniroberta.study.pipeline import Study
from miniroberta.study.plan import print_plan
from miniroberta.study.recipe import PRESETS, RecipeError, canonical_model, dumps_toml, load_recipe, parse_tasks
from miniroberta.study.steps import dist_env
from miniroberta.utils import format_duration, log, terminate_as_exit

STUDY, PLAN = "the study", "planning"


@dataclass(kw_only=True)
class ReproduceOptions:
    """The options of ``miniroberta reproduce`` (the study's own settings are the recipe's)."""
    models: str | None = option(None, "comma list of model sizes: aliases (tiny, mini, small, medium, base) or "
                                "L*_H*", effect="result", group=STUDY, default_text="the recipe's models")
    corpus: str | None = option(None, "corpus file or directory of *.txt (without the held-out file named by "
                                "data.heldout: it is taken from the data folder, or a held-out slice of this "
                                "corpus is set aside)", effect="result", group=STUDY,
                                default_text="the recipe's data.corpus, ../shared/data/corpus")
    vocab: str | None = option(None, "vocab file", effect="result", group=STUDY,
                               default_text="../shared/data/vocab/google_zh_vocab.txt")
    tasks: str | None = option(None, "'all' or a comma list of tasks", effect="result", group=STUDY,
                               default_text="the recipe's grid.tasks")
    data_dir: str | None = option(None, "task data directory", effect="result", group=STUDY,
                                  default_text="../shared/data/tasks")
    out: str = option("runs/reproduce", "output directory; every step is cached here", effect="result",
                      group=STUDY)
    recipe: str | None = option(None, "a recipe TOML file layered over the reference (and the preset)",
                                effect="result", group=STUDY, default_text="none")
    preset: str = option("reference", "budget preset layered over the reference recipe", effect="result",
                         group=STUDY, choices=PRESETS)
    overrides: list[str] = option(default_factory=list, help="override one recipe setting, e.g. --set "
                                  "stage1.total_steps=100 (repeatable)", effect="result", group=STUDY, flag="--set",
                                  metavar="KEY=VALUE", default_text="none")
    jobs: int | None = option(None, "fine-tuning cells in parallel", effect="speed", group=STUDY, ge=1,
                              default_text="the recipe's grid.jobs")
    overwrite: bool = option(False, "move an existing --out aside to OUT.old-<time> and start the study over "
                             "(without it an existing study is resumed)", effect="speed", group=STUDY)
    progress: bool = option(True, "no progress bars", effect="speed", group=STUDY)
    dry_run: bool = option(False, "print the plan with the time of every step estimated from short measured runs "
                           "scaled by FLOPs (seconds; writes nothing outside a temp folder it removes)",
                           effect="speed", group=PLAN)
    calibration_steps: int = option(3, "timed steps per model in --dry_run", effect="speed", group=PLAN, ge=1)
    show_recipe: bool = option(False, "print the resolved recipe as TOML and exit", effect="speed", group=PLAN)


def configure(p: argparse.ArgumentParser) -> None:
    """The options are generated from ``ReproduceOptions`` (help and default shown once); ``--set`` repeats."""
    groups: dict = {}
    add_options(p, ReproduceOptions, skip=("overrides",), groups=groups)
    f = next(f for f in fields(ReproduceOptions) if f.name == "overrides")
    groups[STUDY].add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                               help=help_text(f))


def resolve_recipe(args: argparse.Namespace) -> dict[str, Any]:
    overrides = list(args.overrides)
    for flag, key in (("corpus", "data.corpus"), ("vocab", "data.vocab"), ("data_dir", "data.data_dir")):
        v = getattr(args, flag)
        if v is not None:
            overrides.append(f"{key}={json.dumps(v)}")
    if args.tasks is not None:
        overrides.append(f"grid.tasks={json.dumps(parse_tasks(args.tasks))}")
    if args.jobs is not None:
        overrides.append(f"grid.jobs={args.jobs}")
    models = [canonical_model(m) for m in args.models.split(",") if m.strip()] if args.models else None
    return load_recipe(args.preset, args.recipe, overrides, models)


def check_optional_dependencies(recipe: dict[str, Any]) -> None:
    """Said when the study starts, not after hours of work: without matplotlib the report's two PNGs are
    skipped, without transformers the export's parity check is; everything else stands."""
    plots_available("reproduce", "the plots (score_vs_size.png, pretrain_loss.png)")
    if recipe["export"]["parity_check"] and not have("transformers"):
        log(f"warning: reproduce: transformers is not installed, so the export's parity check against it will be "
            f"skipped; {install_hint('transformers')} to run it")


def run(args: argparse.Namespace) -> int:
    validate(from_args(ReproduceOptions, args), "reproduce options")   # bounds and choices, every problem at once
    try:
        recipe = resolve_recipe(args)
    except RecipeError as e:
        raise ValueError(str(e)) from None
    if args.show_recipe:
        sys.stdout.write(dumps_toml(recipe))
        return 0
    if args.dry_run:
        with terminate_as_exit():
            print_plan(recipe, args.out, calibration_steps=args.calibration_steps)
        return 0
    check_optional_dependencies(recipe)
    rank, _ = dist_env()
    # one study per --out (the other ranks of a torchrun join rank 0's); an earlier one is resumed
    claim = claim_output(args.out, resume=not args.overwrite, overwrite=args.overwrite, command="reproduce",
                         what="an earlier study") if rank == 0 else None
    try:
        study = Study(recipe, args.out, progress=args.progress)
        summary = study.run()
    finally:
        if claim is not None:
            claim.release()
    if study.rank == 0:
        ran = [k for k, v in summary["actions"].items() if v != "skip"]
        log(f"reproduce: {len(summary['actions'])} steps, {len(ran)} run ({', '.join(ran) or 'none'}), "
            f"{format_duration(summary['elapsed_s'])}; report in {summary['report']}")
        md = os.path.join(summary["report"], "report.md")
        if os.path.isfile(md):
            with open(md, encoding="utf-8") as f:
                sys.stdout.write(f.read())
    return 0


__all__ = ["ReproduceOptions", "configure", "run", "resolve_recipe", "check_optional_dependencies"]
