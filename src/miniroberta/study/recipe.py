"""Recipes for ``miniroberta reproduce``: every setting of the study in one TOML file.

``recipes/reference.toml`` is the reference recipe (UER-py's miniatures model card) and the
schema: a key that is not in it is an error. A recipe is built by layering, last wins::

    reference.toml  <-  recipes/<preset>.toml  <-  --recipe FILE.toml  <-  --set key=value ...

Values keep the reference's types (an int may be given where a float is expected; lists stay
lists). ``--set`` accepts dotted keys (``stage1.total_steps=100``) and TOML values
(``grid.tasks=["tnews","ocnli"]``, ``grid.epochs=[3]``, ``stage1.precision="bf16"``); a bare word is a string.
``stageN.bf16 = true|false`` (0.1) is still accepted as ``stageN.precision = "bf16"|"fp32"``.

Every key is checked once, by typed configs: a stage's keys are fields of ``pretrain.config.PretrainConfig``
(what changes the weights), ``RunOptions`` (speed, logging, stopping) or :class:`StageData` (what the stage
trains on), and take their bounds, choices and results/speed tag from there (:func:`stage_configs` builds the
two configs a stage runs with); the other sections are the dataclasses below. Every problem -- unknown keys,
wrong types, values out of bounds -- is collected and raised as one :class:`RecipeError`, each line naming the
layer that set the key (the TOML file, the preset or the ``--set``) and the key.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
from dataclasses import dataclass
from importlib import resources
from typing import Any, Iterable

from miniroberta.data.tasks import TASK_NAMES, TaskDataError
from miniroberta.data.tasks import parse_tasks as _parse_tasks
from miniroberta.engine.precision import resolve_precision
from miniroberta.modeling.config import ALIASES, ConfigError, preset_names
from miniroberta.pretrain.config import PretrainConfig, RunOptions
from miniroberta.settings import field_problems, fields_by_effect, flag_of, meta, option

PRESETS = ("reference", "cpu-smoke", "cpu-hour", "gpu-day")
TASKS = TASK_NAMES
STAGES = ("stage1", "stage2")


class RecipeError(ValueError):
    """A recipe file, preset or override that cannot be used, naming the key and the fix."""

    def __init__(self, problems: str | list[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        msg = self.problems[0] if len(self.problems) == 1 else (
            f"{len(self.problems)} problems with the recipe:\n" + "\n".join(f"  - {p}" for p in self.problems))
        super().__init__(msg)


# ------------------------------------------------------------------ typed sections
@dataclass(kw_only=True)
class TopRecipe:
    description: str = option("", "what the recipe is for", effect="speed", cli=False)
    models: list[str] = option(default_factory=list, help="model sizes", effect="result", cli=False)
    seed: int = option(7, "seed of the initialisation, data order and masks", effect="result", cli=False)


@dataclass(kw_only=True)
class DataRecipe:
    corpus: str = option("../shared/data/corpus", "corpus file or folder of *.txt", effect="result", cli=False)
    vocab: str = option("../shared/data/vocab/google_zh_vocab.txt", "vocab.txt", effect="result", cli=False)
    data_dir: str = option("../shared/data/tasks", "task data folder", effect="result", cli=False)
    max_bytes: int = option(0, "the first N bytes of the corpus (0: all)", effect="result", cli=False, ge=0)
    heldout: str = option("", "held-out file, never trained on", effect="result", cli=False)
    decontaminate: bool = option(False, "leave dev/test-overlapping lines out", effect="result", cli=False)
    task_text: bool = option(False, "the tasks' unlabeled train texts join the corpus", effect="result", cli=False)


@dataclass(kw_only=True)
class PreprocessRecipe:
    processes_num: int = option(1, "worker processes", effect="speed", cli=False, ge=1)
    dynamic_masking: bool = option(True, "masks drawn at training time", effect="result", cli=False)
    dup_factor: int = option(5, "static masking: copies per document", effect="result", cli=False, ge=1)
    full_sentences: bool = option(False, "pack documents into full windows", effect="result", cli=False)
    whole_word_masking: bool = option(False, "whole-word masking", effect="result", cli=False)
    span_masking: bool = option(False, "span masking", effect="result", cli=False)
    span_geo_prob: float = option(0.2, "span masking's p", effect="result", cli=False, gt=0, le=1)
    span_max_length: int = option(10, "the longest span", effect="result", cli=False, ge=1)
    on_error: str = option("fail", "a line that is not UTF-8", effect="result", cli=False,
                           choices=("fail", "skip", "replace"))


@dataclass(kw_only=True)
class StageData:
    """The keys of a stage that are not pretraining settings: what it trains on."""
    data: str = option("corpus", "the general corpus or the tasks' unlabeled train texts", effect="result",
                       cli=False, choices=("corpus", "task_text"))
    seq_length: int = option(128, "window length", effect="result", cli=False, ge=8, le=512)


@dataclass(kw_only=True)
class ExportRecipe:
    type: str = option("mlm", "mlm: encoder + MLM head (the reference); bert: also pooler + NSP head",
                       effect="result", cli=False, choices=("mlm", "bert"))
    parity_check: bool = option(True, "compare with transformers' BertForMaskedLM", effect="result", cli=False)
    parity_atol: float = option(1e-4, "largest |logit difference| accepted", effect="result", cli=False, gt=0)


@dataclass(kw_only=True)
class GridRecipe:
    tasks: list[str] = option(default_factory=lambda: list(TASK_NAMES), help="tasks", effect="result", cli=False)
    epochs: list[int] = option(default_factory=lambda: [3, 5, 8], help="epochs", effect="result", cli=False)
    batch_size: list[int] = option(default_factory=lambda: [32, 64], help="batch sizes", effect="result", cli=False)
    learning_rate: list[float] = option(default_factory=lambda: [3e-5, 1e-4, 3e-4], help="learning rates",
                                        effect="result", cli=False)
    seeds: list[int] = option(default_factory=lambda: [7], help="seeds", effect="result", cli=False)
    seq_length: int = option(128, "fine-tuning length", effect="result", cli=False, ge=8, le=512)
    max_train_examples: int = option(0, "0: the whole split", effect="result", cli=False, ge=0)
    max_dev_examples: int = option(0, "0: the whole split", effect="result", cli=False, ge=0)
    max_train_tokens: int = option(0, "0: no limit", effect="result", cli=False, ge=0)
    baseline: bool = option(True, "the no-pretraining arm", effect="result", cli=False)
    jobs: int = option(1, "cells in parallel", effect="speed", cli=False, ge=1)

    def problems(self) -> list[str]:
        out = []
        unknown = [t for t in self.tasks if t not in TASK_NAMES]
        if unknown:
            out.append(f"--tasks: unknown task(s) {unknown}; choose from {', '.join(TASK_NAMES)}")
        for k in ("epochs", "batch_size", "learning_rate", "seeds"):
            v = getattr(self, k)
            if not v:
                out.append(f"--{k}: the list is empty; give at least one value")
            elif k != "seeds" and any(x <= 0 for x in v):
                out.append(f"--{k}: values must be positive, got {v}")
        return out


@dataclass(kw_only=True)
class DistillRecipe:
    enabled: bool = option(True, "distil the other models from the teacher", effect="result", cli=False)
    teacher: str = option("L12_H768", "the teacher, a model of the study", effect="result", cli=False)
    tasks: list[str] = option(default_factory=list, help="tasks", effect="result", cli=False)
    temperature: float = option(2.0, "softmax temperature", effect="result", cli=False, gt=0)
    alpha: float = option(0.0, "weight of the hard-label loss", effect="result", cli=False, ge=0, le=1)
    transfer_path: str = option("", "unlabeled in-domain texts", effect="result", cli=False)

    def problems(self) -> list[str]:
        unknown = [t for t in self.tasks if t not in TASK_NAMES]
        return [f"--tasks: unknown task(s) {unknown}; choose from {', '.join(TASK_NAMES)}"] if unknown else []


@dataclass(kw_only=True)
class ReportRecipe:
    reference: bool = option(True, "the reference rows beside ours", effect="result", cli=False)


SECTIONS: dict[str, type] = {"data": DataRecipe, "preprocess": PreprocessRecipe, "export": ExportRecipe,
                             "grid": GridRecipe, "distill": DistillRecipe, "report": ReportRecipe}
STAGE_CLASSES: tuple[type, ...] = (StageData, PretrainConfig, RunOptions)


def stage_field(key: str) -> tuple[type, dataclasses.Field] | None:
    """The class and field that declare the stage key ``key`` (StageData, PretrainConfig or RunOptions)."""
    for cls in STAGE_CLASSES:
        for f in dataclasses.fields(cls):
            if f.name == key:
                return cls, f
    return None


def stage_effect(key: str) -> str:
    """``result`` or ``speed``: the settings tag of the stage key's field."""
    found = stage_field(key)
    if found is None:
        raise KeyError(f"stage key {key!r} is no field of {', '.join(c.__name__ for c in STAGE_CLASSES)}")
    return meta(found[1])["effect"]


def split_by_effect(section: dict[str, Any], cls: type | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(result settings, speed options) of a recipe section, by the settings tags of its fields: what a
    step's fingerprint holds, and what its manifest records without fingerprinting. ``cls`` None: a stage."""
    speed = set(fields_by_effect(cls, "speed")) if cls is not None else {k for k in section if stage_effect(k) == "speed"}
    return ({k: v for k, v in section.items() if k not in speed}, {k: v for k, v in section.items() if k in speed})


def stage_configs(stage: dict[str, Any], seed: int, processes: int | None = None, accumulation: int = 1,
                  **paths: Any) -> tuple[PretrainConfig, RunOptions]:
    """The ``PretrainConfig`` and ``RunOptions`` a recipe stage runs with. Recipe conventions are mapped once
    here: ``time_budget_s = 0`` is no budget; ``world_size`` is the reference's data-parallel width, run as
    ``processes`` processes x ``accumulation`` steps (``reproduce`` decides them from the launch). ``paths``:
    ``dataset_path``, ``output_model_path``, ``vocab_path``, ``config_path`` ... and run options such as
    ``metrics_path``; placeholders when only validating."""
    cfg_names = {f.name for f in dataclasses.fields(PretrainConfig)}
    opt_names = {f.name for f in dataclasses.fields(RunOptions)}
    cfg_kw = {k: v for k, v in stage.items() if k in cfg_names}
    opt_kw = {k: v for k, v in stage.items() if k in opt_names}
    if "time_budget_s" in opt_kw:
        opt_kw["time_budget_s"] = float(opt_kw["time_budget_s"]) or None
    cfg_kw.update(seed=seed, world_size=processes or stage.get("world_size", 1), accumulation_steps=accumulation)
    cfg_kw.update({k: v for k, v in paths.items() if k in cfg_names})
    opt_kw.update({k: v for k, v in paths.items() if k in opt_names})
    cfg_kw.setdefault("output_model_path", "-")
    return PretrainConfig(**cfg_kw), RunOptions(**opt_kw)


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


def _unknown(key: str, schema: dict[str, Any], source: str) -> str:
    section = key.rsplit(".", 1)[0] if "." in key else ""
    close = difflib.get_close_matches(key, list(schema), n=1)
    known = sorted(k for k in schema if (k.rsplit(".", 1)[0] if "." in k else "") == section)
    hint = (f"did you mean {close[0]!r}?" if close else
            f"known settings{f' of [{section}]' if section else ''}: {', '.join(known or sorted(schema))}")
    return f"{source}: unknown setting {key!r}; {hint}"


class _Layers:
    """The recipe being layered, with the source of every key (for error messages) and every problem."""

    def __init__(self) -> None:
        self.recipe = reference_recipe()
        self.schema = _flatten(self.recipe)
        self.origin = {k: "reference.toml" for k in self.schema}
        self.problems: list[str] = []

    def apply(self, layer: dict[str, Any], source: str) -> None:
        for key, value in _flatten(layer).items():
            if key in ("stage1.bf16", "stage2.bf16"):       # 0.1's switch, kept as an alias of precision
                if not isinstance(value, bool):
                    self.problems.append(f"{source}: {key} must be a boolean (it is an alias of "
                                         f"{key.split('.')[0]}.precision = \"bf16\"|\"fp32\")")
                    continue
                key, value = key.replace("bf16", "precision"), "bf16" if value else "fp32"
            if key not in self.schema:
                self.problems.append(_unknown(key, self.schema, source))
                continue
            try:
                _set(self.recipe, key, _coerce(key, value, self.schema[key], source))
            except RecipeError as e:
                self.problems.append(str(e))
                continue
            self.origin[key] = source


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
    """Reference <- preset <- recipe file <- ``--set`` overrides <- ``models``; every key checked once
    (:func:`check`), every problem named in one :class:`RecipeError`."""
    layers = _Layers()
    sources = ["reference"]
    if preset and preset != "reference":
        layers.apply(_read_packaged(preset), f"preset {preset} (recipes/{preset}.toml)")
        sources.append(f"preset:{preset}")
    if recipe_path:
        layers.apply(read_recipe_file(recipe_path), os.fspath(recipe_path))
        sources.append(f"file:{os.fspath(recipe_path)}")
    for text in overrides:
        key, value = parse_override(text)
        layers.apply(_nest(key, value), f"--set {text}")
        sources.append(f"set:{text}")
    recipe = layers.recipe
    if models is not None:
        recipe["models"] = list(models)
        layers.origin["models"] = "--models"
    problems = layers.problems + check(recipe, layers.origin)
    if problems:
        raise RecipeError(problems)
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


# ------------------------------------------------------------------ checks
def _problems_of(obj: Any, section: str, present: Iterable[str], origin: dict[str, str]) -> list[str]:
    """``obj``'s field problems and ``problems()`` rules (``--name: ...``), as ``SOURCE: section.key: ...``
    for the keys of the recipe section (``present``)."""
    flags = {flag_of(f).lstrip("-"): f.name for f in dataclasses.fields(obj)}
    flags.update({f.name: f.name for f in dataclasses.fields(obj)})
    present = set(present)
    out = []
    probs = field_problems(obj)
    extra = getattr(obj, "problems", None)
    if callable(extra) and not probs:
        probs += list(extra())
    for p in probs:
        name, _, what = p.partition(": ")
        key = flags.get(name.lstrip("-"), name.lstrip("-"))
        if key not in present:
            continue            # a default of the config class, not a key of the recipe
        full = f"{section}.{key}" if section else key
        out.append(f"{origin.get(full, 'the recipe')}: {full}: {what}")
    return out


def _check_stage(recipe: dict[str, Any], s: str, origin: dict[str, str]) -> list[str]:
    st = dict(recipe[s])
    unknown = [k for k in st if stage_field(k) is None]
    out = [f"{origin.get(f'{s}.{k}', 'the recipe')}: {s}.{k}: not a setting of a pretraining stage" for k in unknown]
    st = {k: v for k, v in st.items() if k not in unknown}
    if s == "stage2" and st.get("total_steps") == 0:
        st.pop("total_steps")                            # stage 2 skipped: the stage-1 weights are the result
    data = StageData(**{k: v for k, v in st.items() if k in {f.name for f in dataclasses.fields(StageData)}})
    try:
        cfg, opts = stage_configs(st, seed=recipe["seed"])
    except TypeError as e:       # a key of the wrong kind (cannot happen with the reference's schema)
        return out + [f"{s}: {e}"]
    for obj in (data, cfg, opts):
        out += _problems_of(obj, s, st, origin)
    return out


def check(recipe: dict[str, Any], origin: dict[str, str] | None = None) -> list[str]:
    """Every problem of a layered recipe, each naming its source and key (empty: usable). Canonicalises
    ``models`` and ``distill.teacher`` in place."""
    origin = origin or {}
    out: list[str] = []
    models = []
    for m in recipe["models"]:
        try:
            models.append(canonical_model(m))
        except RecipeError as e:
            out.append(f"{origin.get('models', 'the recipe')}: models: {e}")
    recipe["models"] = models
    if not models and not out:
        out.append("models: the list is empty; name at least one model (--models tiny)")
    if len(set(models)) != len(models):
        out.append(f"{origin.get('models', 'the recipe')}: models: duplicates in {models}")
    out += _problems_of(TopRecipe(**{k: v for k, v in recipe.items() if not isinstance(v, dict) and k != "sources"}),
                        "", ["seed", "description"], origin)
    for s in STAGES:
        out += _check_stage(recipe, s, origin)
    for name, cls in SECTIONS.items():
        out += _problems_of(cls(**recipe[name]), name, recipe[name], origin)
    dd = recipe["distill"]
    if dd["enabled"]:
        try:
            dd["teacher"] = canonical_model(dd["teacher"])
        except RecipeError as e:
            out.append(f"{origin.get('distill.teacher', 'the recipe')}: distill.teacher: {e}")
    return out


def validate(recipe: dict[str, Any]) -> None:
    """Raise one :class:`RecipeError` naming every problem of ``recipe``."""
    problems = check(recipe)
    if problems:
        raise RecipeError(problems)


def typed(recipe: dict[str, Any], section: str) -> Any:
    """A section of a checked recipe as its dataclass (``grid`` -> :class:`GridRecipe` ...)."""
    return SECTIONS[section](**recipe[section])


def study_precision(recipe: dict[str, Any], device: Any) -> tuple[str, str]:
    """(``fp32``|``bf16``, the reason): the one precision of a study, decided once at its start. The
    precision the stages name when they name one (``auto`` stages follow it); else ``auto`` resolved from
    the device's capabilities (``engine.precision.resolve_precision``, never a timing). Every stage whose
    precision is ``auto`` and the fine-tuning grid run with it."""
    asked = [recipe[s]["precision"] for s in STAGES if recipe[s]["total_steps"]]
    explicit = sorted(set(asked) - {"auto"})
    if len(explicit) == 1:
        stages = [s for s in STAGES if recipe[s]["total_steps"] and recipe[s]["precision"] != "auto"]
        return explicit[0], f"{' and '.join(f'{s}.precision' for s in stages)} of the recipe"
    return resolve_precision("auto", device)


def stage_datasets(recipe: dict[str, Any]) -> list[tuple[str, int]]:
    """(source, seq) of every dataset a stage trains on (``stageN.data``, ``stageN.seq_length``): ``corpus``
    first, then ``task_text``."""
    return sorted({(recipe[s]["data"], recipe[s]["seq_length"]) for s in STAGES if recipe[s]["total_steps"]},
                  key=lambda x: (x[0] != "corpus", x[1]))


def data_parallel_plan(recipe_world: int, launched: int, key: str) -> tuple[int, int]:
    """(processes, gradient accumulation steps) that give the recipe's global batch
    ``batch_size x world_size`` with the ``launched`` processes (torchrun's WORLD_SIZE, else 1)."""
    if recipe_world % launched:
        raise ValueError(f"{key} = {recipe_world} (global batch = batch_size x {recipe_world}) is not a multiple of "
                         f"the {launched} processes launched; launch {recipe_world} (or a divisor of it) with torchrun, "
                         f"or --set {key}={launched}")
    return launched, recipe_world // launched


def parse_tasks(spec: str) -> list[str]:
    """``all`` or task names (``data.tasks.parse_tasks``: the one rule), as a recipe error."""
    try:
        return _parse_tasks(spec)
    except TaskDataError as e:
        raise RecipeError(f"--tasks {spec!r}: {e}") from None


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
           "canonical_model", "parse_tasks", "dumps_toml", "get", "ConfigError", "check", "validate", "typed",
           "stage_configs", "stage_datasets", "study_precision", "data_parallel_plan", "stage_field", "stage_effect", "split_by_effect", "StageData", "GridRecipe",
           "DataRecipe", "PreprocessRecipe", "ExportRecipe", "DistillRecipe", "ReportRecipe", "TopRecipe", "SECTIONS"]
