"""Recipes for ``miniroberta reproduce``: every setting of the study in one TOML file.

``recipes/reference.toml`` is the reference recipe (UER-py's miniatures model card) and the
schema: a key that is not in it is an error. A recipe is built by layering, last wins::

    reference.toml  <-  recipes/<preset>.toml  <-  --recipe FILE.toml  <-  --set key=value ...

Values keep the reference's types (an int may be given where a float is expected; lists stay
lists). ``--set`` accepts dotted keys (``stage1.total_steps=100``) and TOML values
(``grid.tasks=["tnews","ocnli"]``, ``grid.epochs=[3]``, ``stage1.precision="bf16"``); a bare word is a string.
``stageN.bf16 = true|false`` (0.1) is still accepted as ``stageN.precision = "bf16"|"fp32"``.
"""
from __future__ import annotations

import copy
import os
import tomllib
from importlib import resources
from typing import Any, Iterable

from miniroberta.modeling.config import ALIASES, ConfigError, preset_names

PRESETS = ("reference", "cpu-smoke", "cpu-hour", "gpu-day")
TASKS = ("book_review", "chnsenticorp", "lcqmc", "tnews", "iflytek", "ocnli")
STAGES = ("stage1", "stage2")


class RecipeError(ValueError):
    """A recipe file, preset or override that cannot be used, naming the key and the fix."""


# ------------------------------------------------------------------ loading
def _read_packaged(name: str) -> dict[str, Any]:
    try:
        text = resources.files("miniroberta.study").joinpath("recipes", f"{name}.toml").read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:  # a packaging bug, but say where
        raise RecipeError(f"miniroberta/study/recipes/{name}.toml: {e}") from None


def reference_recipe() -> dict[str, Any]:
    """The reference recipe as a nested dict (a fresh copy)."""
    return _read_packaged("reference")


def read_recipe_file(path: str | os.PathLike) -> dict[str, Any]:
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"--recipe {path}: no such file") from None
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{path}: invalid TOML ({e}); fix the line named") from None


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _type_name(v: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list"}.get(type(v), type(v).__name__)


def _coerce(key: str, value: Any, ref: Any, source: str) -> Any:
    """``value`` converted to the type of the reference value ``ref``, or RecipeError."""
    if isinstance(ref, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(ref, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():  # 1e6 written as a float
            return int(value)
    elif isinstance(ref, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(ref, str):
        if isinstance(value, str):
            return value
    elif isinstance(ref, list):
        if isinstance(value, list):
            if ref:
                return [_coerce(f"{key}[{i}]", x, ref[0], source) for i, x in enumerate(value)]
            return value
        if not isinstance(value, dict):  # a scalar where a list is expected: a one-element list
            return [_coerce(f"{key}[0]", value, ref[0], source) if ref else value]
    raise RecipeError(f"{source}: {key} must be {_type_name(ref)} (like the reference value {ref!r}), got {value!r}")


def _apply(recipe: dict[str, Any], layer: dict[str, Any], source: str, schema: dict[str, Any]) -> None:
    for key, value in _flatten(layer).items():
        if key in ("stage1.bf16", "stage2.bf16"):       # 0.1's switch, kept as an alias of precision
            if not isinstance(value, bool):
                raise RecipeError(f"{source}: {key} must be a boolean (it is an alias of "
                                  f"{key.split('.')[0]}.precision = \"bf16\"|\"fp32\")")
            key, value = key.replace("bf16", "precision"), "bf16" if value else "fp32"
        if key not in schema:
            raise RecipeError(f"{source}: unknown setting {key!r}; known settings: {', '.join(sorted(schema))}")
        _set(recipe, key, _coerce(key, value, schema[key], source))


def _set(recipe: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    d = recipe
    for p in parts[:-1]:
        d = d.setdefault(p, {})
    d[parts[-1]] = value


def get(recipe: dict[str, Any], key: str) -> Any:
    d: Any = recipe
    for p in key.split("."):
        d = d[p]
    return d


def parse_override(text: str) -> tuple[str, Any]:
    """``"stage1.total_steps=100"`` -> ``("stage1.total_steps", 100)``; the value is read as TOML,
    and as a plain string when it is not valid TOML (``data.corpus=/x/y``)."""
    key, eq, raw = text.partition("=")
    key = key.strip()
    if not eq or not key:
        raise RecipeError(f"--set {text!r}: expected KEY=VALUE, e.g. --set stage1.total_steps=100")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def load_recipe(preset: str | None = None, recipe_path: str | None = None,
                overrides: Iterable[str] = (), models: Iterable[str] | None = None) -> dict[str, Any]:
    """Reference <- preset <- recipe file <- ``--set`` overrides <- ``models``; validated."""
    ref = reference_recipe()
    schema = _flatten(ref)
    recipe = copy.deepcopy(ref)
    sources = ["reference"]
    if preset and preset != "reference":
        layer = _read_packaged(preset)
        _apply(recipe, layer, f"preset {preset}", schema)
        sources.append(f"preset:{preset}")
    if recipe_path:
        _apply(recipe, read_recipe_file(recipe_path), os.fspath(recipe_path), schema)
        sources.append(f"file:{os.fspath(recipe_path)}")
    for text in overrides:
        key, value = parse_override(text)
        _apply(recipe, _nest(key, value), f"--set {text}", schema)
        sources.append(f"set:{text}")
    if models is not None:
        recipe["models"] = list(models)
    recipe["models"] = [canonical_model(m) for m in recipe["models"]]
    validate(recipe)
    recipe["sources"] = sources
    return recipe


def _nest(key: str, value: Any) -> dict[str, Any]:
    d: dict[str, Any] = {}
    _set(d, key, value)
    return d


def canonical_model(name: str) -> str:
    """``tiny`` -> ``L2_H128``; ``l4_h256`` -> ``L4_H256``; anything else is an error."""
    key = ALIASES.get(name.strip().lower(), name.strip()).upper().replace("-", "_")
    if key not in preset_names():
        raise RecipeError(f"unknown model {name!r}; use an alias ({', '.join(sorted(ALIASES))}) or one of the 24 "
                          f"sizes L{{2,4,6,8,10,12}}_H{{128,256,512,768}}")
    return key


def validate(recipe: dict[str, Any]) -> None:
    if recipe["distill"]["enabled"]:
        recipe["distill"]["teacher"] = canonical_model(recipe["distill"]["teacher"])
    if not recipe["models"]:
        raise RecipeError("models: the list is empty; name at least one model (--models tiny)")
    if len(set(recipe["models"])) != len(recipe["models"]):
        raise RecipeError(f"models: duplicates in {recipe['models']}")
    for s in STAGES:
        st = recipe[s]
        for k in ("total_steps", "batch_size", "save_checkpoint_steps", "report_steps", "seq_length", "world_size"):
            if k == "total_steps" and s == "stage2" and st[k] == 0:
                continue                                # stage 2 skipped: the stage-1 weights are the result
            if st[k] <= 0:
                raise RecipeError(f"{s}.{k} must be positive, got {st[k]}")
        if not 0.0 <= st["warmup"] < 1.0:
            raise RecipeError(f"{s}.warmup is a fraction of total_steps in [0, 1), got {st['warmup']}")
        if st["learning_rate"] <= 0:
            raise RecipeError(f"{s}.learning_rate must be positive, got {st['learning_rate']}")
        if st["time_budget_s"] < 0:
            raise RecipeError(f"{s}.time_budget_s must be >= 0 (0 = no budget), got {st['time_budget_s']}")
        if st["precision"] not in ("auto", "fp32", "bf16"):
            raise RecipeError(f"{s}.precision must be auto, fp32 or bf16, got {st['precision']!r}")
        if st["init"] not in ("uer", "hf"):
            raise RecipeError(f"{s}.init must be uer or hf, got {st['init']!r}")
        if not 0.0 < st["mask_rate"] < 1.0:
            raise RecipeError(f"{s}.mask_rate must be in (0, 1), got {st['mask_rate']}")
        if st["data"] not in ("corpus", "task_text"):
            raise RecipeError(f"{s}.data must be corpus or task_text, got {st['data']!r}")
        if st["seq_length"] > 512:
            raise RecipeError(f"{s}.seq_length {st['seq_length']} exceeds the 512 positions of the miniatures")
    g = recipe["grid"]
    unknown = [t for t in g["tasks"] if t not in TASKS]
    if unknown:
        raise RecipeError(f"grid.tasks: unknown task(s) {unknown}; choose from {', '.join(TASKS)}")
    for k in ("epochs", "batch_size", "learning_rate", "seeds"):
        if not g[k]:
            raise RecipeError(f"grid.{k} is empty; give at least one value")
        if k != "seeds" and any(v <= 0 for v in g[k]):
            raise RecipeError(f"grid.{k} values must be positive, got {g[k]}")
    dd = recipe["distill"]
    if dd["enabled"]:
        unknown = [t for t in dd["tasks"] if t not in TASKS]
        if unknown:
            raise RecipeError(f"distill.tasks: unknown task(s) {unknown}; choose from {', '.join(TASKS)}")
        if dd["temperature"] <= 0 or not 0.0 <= dd["alpha"] <= 1.0:
            raise RecipeError("distill.temperature must be > 0 and distill.alpha in [0, 1]")
    if g["max_train_tokens"] < 0:
        raise RecipeError(f"grid.max_train_tokens must be >= 0 (0 = no limit), got {g['max_train_tokens']}")
    if g["jobs"] < 1:
        raise RecipeError(f"grid.jobs must be >= 1, got {g['jobs']}")
    if recipe["data"]["max_bytes"] < 0:
        raise RecipeError("data.max_bytes must be >= 0 (0 = the whole corpus)")
    if recipe["export"]["type"] not in ("mlm", "bert"):
        raise RecipeError(f"export.type must be mlm (encoder + MLM head, the reference) or bert (also pooler + NSP head), got {recipe['export']['type']!r}")
    if recipe["preprocess"]["on_error"] not in ("fail", "skip", "replace"):
        raise RecipeError(f"preprocess.on_error must be fail, skip or replace, got {recipe['preprocess']['on_error']!r}")


def parse_tasks(spec: str) -> list[str]:
    """``all`` or a comma list of task names."""
    if spec.strip().lower() == "all":
        return list(TASKS)
    tasks = [t.strip() for t in spec.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise RecipeError(f"--tasks {spec!r}: unknown task(s) {unknown}; use 'all' or a comma list of {', '.join(TASKS)}")
    return tasks


def dumps_toml(recipe: dict[str, Any]) -> str:
    """Write a (resolved) recipe back as TOML -- enough for our value types (scalars, flat lists)."""
    def val(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        raise TypeError(f"cannot write {v!r} as TOML")

    lines = [f"# layers: {' <- '.join(recipe.get('sources', []))}"] if recipe.get("sources") else []
    lines += [f"{k} = {val(v)}" for k, v in recipe.items() if not isinstance(v, dict) and k != "sources"]
    for k, v in recipe.items():
        if isinstance(v, dict):
            lines.append(f"\n[{k}]")
            lines.extend(f"{kk} = {val(vv)}" for kk, vv in v.items())
    return "\n".join(lines) + "\n"


__all__ = ["RecipeError", "PRESETS", "TASKS", "STAGES", "load_recipe", "reference_recipe", "parse_override",
           "canonical_model", "parse_tasks", "dumps_toml", "get", "ConfigError"]
