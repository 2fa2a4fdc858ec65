"""miniroberta.settings: one declaration per option gives the CLI, the checks and the resume rule."""
from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from miniroberta import cli
from miniroberta.settings import (ConfigError, add_options, fields_by_effect, from_args, help_text, option,
                                  result_dict, resume_mismatches, validate)


@dataclass(kw_only=True)
class Demo:
    path: str = option(help="where to write", effect="result", resume=False)
    lr: float = option(1e-4, "peak learning rate", effect="result", gt=0)
    warmup: float = option(0.1, "warmup fraction", effect="result", ge=0, le=1)
    dropout: float | None = option(None, "override dropout", effect="result", ge=0, lt=1,
                                   default_text="the model's")
    kind: str = option("a", "which kind", effect="result", choices=("a", "b"))
    fused: bool = option(True, "use the slow path", effect="speed")
    verbose: bool = option(False, "say more", effect="speed")
    ranks: list[int] | None = option(None, "ranks", effect="speed")
    resume: bool | str = option(False, "continue", effect="speed", const=True,
                                parse=lambda s: "auto" if s == "auto" else s == "yes")
    hook: int | None = option(None, effect="speed", hidden=True)

    def problems(self) -> list[str]:
        return ["--warmup must be 0 with kind b"] if self.kind == "b" and self.warmup else []


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(formatter_class=cli.HelpFormatter)
    add_options(p, Demo)
    return p


def test_generated_options_round_trip():
    a = parser().parse_args(["--path", "x", "--lr", "3e-4", "--no_fused", "--verbose", "--ranks", "0", "1",
                             "--resume", "--kind", "b", "--warmup", "0"])
    d = from_args(Demo, a)
    assert d == Demo(path="x", lr=3e-4, warmup=0.0, kind="b", fused=False, verbose=True, ranks=[0, 1], resume=True)
    assert from_args(Demo, parser().parse_args(["--path", "x", "--resume", "auto"])).resume == "auto"
    assert from_args(Demo, parser().parse_args(["--path", "x"])) == Demo(path="x")
    with pytest.raises(SystemExit):
        parser().parse_args([])                      # --path has no default: required


def test_help_shows_each_default_once_and_hides_hooks(capsys):
    with pytest.raises(SystemExit):
        parser().parse_args(["--help"])
    h = capsys.readouterr().out
    assert h.count("(default: 0.0001)") == 1 and h.count("(default: the model's)") == 1
    assert "--no_fused" in h and "--hook" not in h
    assert "use the slow path" in h and "(default: True)" not in h and "(default: False)" not in h
    assert help_text(Demo.__dataclass_fields__["kind"]) == "which kind (default: a)"


def test_validate_names_every_problem_at_once():
    bad = Demo(path="x", lr=float("inf"), warmup=1.5, dropout=1.0, kind="c")
    with pytest.raises(ConfigError) as e:
        validate(bad)
    msg = str(e.value)
    assert len(e.value.problems) == 4 and msg.startswith("4 problems with the Demo:")
    for want in ("--lr: must be a finite number", "--warmup: must be <= 1", "--dropout: must be < 1",
                 "--kind: must be one of a, b"):
        assert want in msg
    with pytest.raises(ConfigError, match="expected float, got str"):
        validate(Demo(path="x", lr="1e-4"))          # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="must be 0 with kind b"):   # the class's own cross-field rule
        validate(Demo(path="x", kind="b"))
    assert validate(Demo(path="x", lr=1, warmup=1)) is not None   # ints are floats; bounds inclusive


def test_effects_decide_what_a_resume_must_match():
    assert fields_by_effect(Demo, "speed") == ["fused", "verbose", "ranks", "resume", "hook"]
    r = result_dict(Demo(path="x"))
    assert set(r) == {"lr", "warmup", "dropout", "kind"}      # path: a location, declared resume=False
    assert resume_mismatches(r, {**r, "lr": 2e-4}) == ["lr: 0.0001 -> 0.0002"]
    assert resume_mismatches(r, dict(r)) == []
    with pytest.raises(ValueError, match="help"):
        option(1, "", effect="speed")                 # a command-line option without help is refused
    with pytest.raises(ValueError, match="effect"):
        option(1, "x", effect="fast")


def _walk(p: argparse.ArgumentParser):
    for a in p._actions:
        if isinstance(a, argparse._HelpAction) or a.help == argparse.SUPPRESS:
            continue
        yield a


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_option_of_every_command_has_help_and_its_default_once(command):
    """Issue: 97 of 319 options had no help, or showed their default twice or as None."""
    import importlib
    mod_name, conf_fn, _, _ = cli.COMMANDS[command]
    p = argparse.ArgumentParser(prog=f"miniroberta {command}", formatter_class=cli.HelpFormatter)
    getattr(importlib.import_module(mod_name), conf_fn)(p)
    fmt = p._get_formatter()
    bad = []
    for a in _walk(p):
        name = a.option_strings[0] if a.option_strings else a.dest
        h = fmt._expand_help(a) if a.help else ""
        if not h.strip():
            bad.append(f"{name}: no help")
        elif h.count("(default") > 1:
            bad.append(f"{name}: default shown {h.count('(default')} times: {h!r}")
        elif "(default: None)" in h:
            bad.append(f"{name}: default shown as None")
    assert not bad, "\n".join(bad)
