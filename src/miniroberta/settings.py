"""Typed settings: a config dataclass is the single source of each option's default, help and checks.

Every field of a command's config is declared with :func:`option`::

    @dataclass
    class OptimSettings:
        learning_rate: float = option(1e-4, "peak learning rate", effect="result", gt=0)
        threads: int | None = option(None, "torch threads", effect="speed", ge=1,
                                     default_text="the cores this process may run on")

and the rest is derived from the declarations, once, here:

* :func:`add_options` generates the argparse options (``--learning_rate``; bools become ``--flag`` or
  ``--no_flag``; ``X | None`` takes an ``X``; lists take several values) with the help text and the
  default shown exactly once;
* :func:`from_args` builds the dataclass back from the parsed namespace;
* :func:`validate` checks every field (type, finiteness, bounds, choices) and the class's own cross-field
  rules (a ``problems(self) -> list[str]`` method), collects *every* problem and raises one
  :class:`ConfigError` naming them all;
* ``effect`` tags a field as ``"result"`` (changes the trained weights or the written outputs) or
  ``"speed"`` (speed, logging, placement, when to stop): :func:`result_dict` is what a training state
  records and a resume must match, :func:`fields_by_effect` is what ``reproduce`` and ``grid`` split on.
  A result field that names a location rather than content (an output path, a dataset path whose content
  is hashed separately) is declared with ``resume=False``.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from dataclasses import MISSING, Field
from typing import Any, Callable, Iterable, Sequence

EFFECTS = ("result", "speed")
_KEY = "miniroberta"


class ConfigError(ValueError):
    """One or more settings are invalid; ``problems`` lists each one (``--name: what is wrong``)."""

    def __init__(self, problems: Sequence[str], what: str = "settings") -> None:
        self.problems = list(problems)
        if len(self.problems) == 1:
            msg = self.problems[0]
        else:
            msg = f"{len(self.problems)} problems with the {what}:\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(msg)


def option(default: Any = MISSING, help: str = "", *, effect: str, default_factory: Any = MISSING,
           choices: Sequence[Any] | None = None, gt: float | None = None, ge: float | None = None,
           lt: float | None = None, le: float | None = None, flag: str | None = None,
           aliases: Sequence[str] = (), cli: bool = True, hidden: bool = False, group: str | None = None,
           default_text: str | None = None, resume: bool | None = None, metavar: str | None = None,
           parse: Callable[[str], Any] | None = None, const: Any = MISSING, repeatable: bool = False) -> Any:
    """A dataclass field with the metadata the generated CLI, the checks and the resume rule read.

    ``help``: one sentence, no default in it (the default is appended once, from the value or
    ``default_text``). ``effect``: "result" or "speed". ``gt/ge/lt/le``: numeric bounds. ``flag``: the
    command-line name when it is not ``--<field>`` (``--no_correct_bias`` for a bool that defaults to
    True). ``const``: the value of the option given without an argument (``--resume`` = ``--resume yes``).
    ``aliases``: more spellings. ``cli=False``: not on the command line (set by code: a recipe,
    a test hook); ``hidden``: on it but not in ``--help``. ``resume``: whether a resume must match it
    (default: ``effect == "result"``). ``parse``: the converter of one command-line string.
    ``repeatable``: a list option that may be given several times (``--onnx a --onnx b`` = ``--onnx a b``)."""
    if effect not in EFFECTS:
        raise ValueError(f"effect must be one of {EFFECTS}, got {effect!r}")
    if cli and not hidden and not help:
        raise ValueError("a command-line option needs help text")
    meta = dict(help=help, effect=effect, choices=tuple(choices) if choices is not None else None, gt=gt, ge=ge,
                lt=lt, le=le, flag=flag, aliases=tuple(aliases), cli=cli, hidden=hidden, group=group,
                default_text=default_text, resume=(effect == "result") if resume is None else resume,
                metavar=metavar, parse=parse, const=const, repeatable=repeatable)
    kw: dict[str, Any] = {"metadata": {_KEY: meta}}
    if default_factory is not MISSING:
        kw["default_factory"] = default_factory
    elif default is not MISSING:
        kw["default"] = default
    return dataclasses.field(**kw)


def meta(f: Field) -> dict[str, Any]:
    """The :func:`option` metadata of a field (a plain field counts as a result setting, not on the CLI)."""
    return f.metadata.get(_KEY) or dict(help="", effect="result", choices=None, gt=None, ge=None, lt=None, le=None,
                                        flag=None, aliases=(), cli=False, hidden=False, group=None,
                                        default_text=None, resume=True, metavar=None, parse=None, const=MISSING)


# --------------------------------------------------------------------------------------- types
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unwrap(tp: Any) -> tuple[Any, bool]:
    """(the type without ``None``, whether ``None`` is allowed)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), optional
    return tp, False


def _item_type(tp: Any) -> Any:
    """``list[int]`` -> int, ``tuple[str, ...]`` -> str; None when ``tp`` is no sequence type."""
    if typing.get_origin(tp) in (list, tuple, Sequence):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return args[0] if args else str
    return None


def _scalar_of(tp: Any) -> Any:
    """The scalar a union like ``bool | str`` parses to on the command line (str when ambiguous)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return str
    return tp


def _default(f: Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def _show(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return " ".join(map(str, v)) if v else "none"
    return str(v)


def help_text(f: Field) -> str:
    """The option's help with its default shown once."""
    m = meta(f)
    h = m["help"].rstrip()
    d = _default(f)
    if m["default_text"] is not None:
        return f"{h} (default: {m['default_text']})"
    if d is MISSING or d is None or isinstance(d, bool):
        return h           # required, described in words, or a flag (off unless given)
    return f"{h} (default: {_show(d)})"


# --------------------------------------------------------------------------------------- argparse
def flag_of(f: Field) -> str:
    m = meta(f)
    if m["flag"]:
        return m["flag"]
    if _default(f) is True:
        return f"--no_{f.name}"
    return f"--{f.name}"


def add_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type,
                only: Iterable[str] | None = None, skip: Iterable[str] = (),
                groups: dict[str, argparse._ArgumentGroup] | None = None) -> None:
    """Add one option per command-line field of the dataclass ``cls`` (in declaration order; ``only``
    or ``skip`` select fields). A field's ``group`` puts it under that heading of ``parser``."""
    hints = _hints(cls)
    only = set(only) if only is not None else None
    skip = set(skip)
    groups = groups if groups is not None else {}
    for f in dataclasses.fields(cls):
        m = meta(f)
        if not m["cli"] or f.name in skip or (only is not None and f.name not in only):
            continue
        target = parser
        if m["group"] and isinstance(parser, argparse.ArgumentParser):
            if m["group"] not in groups:
                groups[m["group"]] = parser.add_argument_group(m["group"])
            target = groups[m["group"]]
        tp, optional = _unwrap(hints[f.name])
        d = _default(f)
        kw: dict[str, Any] = {"dest": f.name, "help": argparse.SUPPRESS if m["hidden"] else help_text(f)}
        names = [flag_of(f), *m["aliases"]]
        if tp is bool:
            if d is True:
                kw.update(action="store_false", default=True)
            elif d is None:
                kw.update(action="store_const", const=True, default=None)
            else:
                kw.update(action="store_true", default=False)
            target.add_argument(*names, **kw)
            continue
        item = _item_type(tp)
        if m["const"] is not MISSING:
            kw.update(nargs="?", const=m["const"], type=m["parse"] or _scalar_of(tp), default=d)
        elif item is not None:
            kw.update(nargs="*" if optional or d in ([], ()) else "+", type=m["parse"] or _scalar_of(item),
                      default=None if d is MISSING else (list(d) if isinstance(d, (list, tuple)) else d))
            if d is MISSING:
                kw["required"] = True
            if m.get("repeatable"):   # argparse copies the default before extending it
                kw.update(action="extend", nargs="+")
        else:
            kw.update(type=m["parse"] or _scalar_of(tp))
            if d is MISSING:
                kw["required"] = True
            else:
                kw["default"] = d
        if m["choices"] is not None:
            kw["choices"] = list(m["choices"])
        if m["metavar"]:
            kw["metavar"] = m["metavar"]
        target.add_argument(*names, **kw)


def from_args(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """The dataclass ``cls`` from a namespace made by :func:`add_options` (fields not on the command line
    keep their defaults unless given in ``overrides``)."""
    kw: dict[str, Any] = {}
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in overrides:
            kw[f.name] = overrides[f.name]
        elif hasattr(args, f.name) and f.init:
            v = getattr(args, f.name)
            tp, _ = _unwrap(hints[f.name])
            if isinstance(v, list) and typing.get_origin(tp) is tuple:
                v = tuple(v)
            kw[f.name] = v
    return cls(**kw)


# --------------------------------------------------------------------------------------- checks
def _type_ok(v: Any, tp: Any) -> bool:
    if tp is Any:
        return True
    if tp is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if tp is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if tp is bool:
        return isinstance(v, bool)
    if tp is str:
        return isinstance(v, str)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(v, a) for a in typing.get_args(tp))
    if origin in (list, tuple, Sequence):
        item = _item_type(tp)
        return isinstance(v, (list, tuple)) and all(_type_ok(x, item) for x in v)
    if origin is dict:
        return isinstance(v, dict)
    if isinstance(tp, type):
        return isinstance(v, tp)
    return True


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def field_problems(obj: Any) -> list[str]:
    """Type, finiteness, bound and choice problems of every field of the dataclass ``obj``."""
    out = []
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        m = meta(f)
        v = getattr(obj, f.name)
        name = flag_of(f).lstrip("-") if m["flag"] else f.name
        tp, optional = _unwrap(hints[f.name])
        if v is None:
            if not optional and hints[f.name] is not Any:
                out.append(f"--{name}: a value is required")
            continue
        if not _type_ok(v, tp):
            out.append(f"--{name}: expected {_type_name(tp)}, got {type(v).__name__} {v!r}")
            continue
        if isinstance(v, float) and not math.isfinite(v):
            out.append(f"--{name}: must be a finite number, got {v}")
            continue
        if m["choices"] is not None and v not in m["choices"]:
            out.append(f"--{name}: must be one of {', '.join(map(str, m['choices']))}, got {v!r}")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            bounds = [(m["gt"], lambda a, b: a > b, ">"), (m["ge"], lambda a, b: a >= b, ">="),
                      (m["lt"], lambda a, b: a < b, "<"), (m["le"], lambda a, b: a <= b, "<=")]
            for b, ok, sym in bounds:
                if b is not None and not ok(v, b):
                    out.append(f"--{name}: must be {sym} {b:g}, got {v:g}")
                    break
    return out


def validate(obj: Any, what: str | None = None) -> Any:
    """Raise one :class:`ConfigError` naming every problem of ``obj`` (its fields, then its own
    ``problems()`` rules); returns ``obj`` when there are none."""
    problems = field_problems(obj)
    extra = getattr(obj, "problems", None)
    if callable(extra) and not problems:   # cross-field rules assume well-typed fields
        problems += list(extra())
    if problems:
        raise ConfigError(problems, what or type(obj).__name__)
    return obj


# --------------------------------------------------------------------------------------- effects
def fields_by_effect(cls: type, effect: str) -> list[str]:
    """The names of the fields of ``cls`` tagged ``effect``."""
    return [f.name for f in dataclasses.fields(cls) if meta(f)["effect"] == effect]


def result_dict(obj: Any) -> dict[str, Any]:
    """The settings a resume must match: result fields not declared ``resume=False``, as plain values."""
    out = {}
    for f in dataclasses.fields(obj):
        m = meta(f)
        if m["effect"] == "result" and m["resume"]:
            v = getattr(obj, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


def resume_mismatches(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``name: saved -> now`` for each setting that differs (a setting missing on one side counts
    as a difference only when the other side is not its default None)."""
    out = []
    for k in sorted(set(saved) | set(current)):
        a, b = saved.get(k), current.get(k)
        if isinstance(a, tuple):
            a = list(a)
        if isinstance(b, tuple):
            b = list(b)
        if a != b and not (isinstance(a, float) and isinstance(b, float) and math.isclose(a, b, rel_tol=1e-12)):
            out.append(f"{k}: {a!r} -> {b!r}")
    return out


def replace(obj: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` that re-validates."""
    return validate(dataclasses.replace(obj, **changes))


__all__ = ["ConfigError", "option", "meta", "help_text", "flag_of", "add_options", "from_args", "field_problems",
           "validate", "fields_by_effect", "result_dict", "resume_mismatches", "replace", "EFFECTS"]
