"""Recipes of `miniroberta reproduce`: reference values, presets, overrides, model names, errors."""
from __future__ import annotations

import argparse

import pytest

from miniroberta.modeling.config import preset_names
from miniroberta.study.recipe import (PRESETS, TASKS, RecipeError, canonical_model, dumps_toml, load_recipe, parse_override,
                                parse_tasks, read_recipe_file, reference_recipe)


def test_reference_recipe_is_the_model_card():
    r = load_recipe()
    s1, s2, g = r["stage1"], r["stage2"], r["grid"]
    assert (s1["seq_length"], s1["total_steps"], s1["batch_size"], s1["world_size"]) == (128, 1_000_000, 64, 8)
    assert (s1["learning_rate"], s1["warmup"], s1["save_checkpoint_steps"]) == (1e-4, 0.1, 100_000)
    assert (s2["seq_length"], s2["total_steps"], s2["batch_size"], s2["world_size"]) == (512, 250_000, 16, 8)
    assert (s2["learning_rate"], s2["warmup"], s2["save_checkpoint_steps"]) == (5e-5, 0.1, 50_000)
    assert g["epochs"] == [3, 5, 8] and g["batch_size"] == [32, 64] and g["learning_rate"] == [3e-5, 1e-4, 3e-4]
    assert g["seq_length"] == 128 and g["tasks"] == list(TASKS)
    assert r["models"] == preset_names() and len(r["models"]) == 24
    assert r["export"]["type"] == "mlm" and r["seed"] == 7
    assert r["preprocess"]["dynamic_masking"] is True and r["preprocess"]["full_sentences"] is False


@pytest.mark.parametrize("name", PRESETS)
def test_presets_load_and_only_scale_down(name):
    ref = load_recipe()
    r = load_recipe(name)
    assert r["sources"][0] == "reference"
    for s in ("stage1", "stage2"):
        assert r[s]["total_steps"] <= ref[s]["total_steps"]
        if name != "cpu-hour":   # the reference's schedule, except where a sweep chose another (docs/quality.md)
            assert r[s]["learning_rate"] == ref[s]["learning_rate"] and r[s]["warmup"] == ref[s]["warmup"]
    assert r["stage1"]["seq_length"] == 128 and r["stage1"]["data"] == "corpus"
    # stage 2 is the reference's seq-512 stage, except where cpu-hour adapts to the tasks' texts at seq 128
    assert (r["stage2"]["seq_length"], r["stage2"]["data"]) == ((128, "task_text") if name == "cpu-hour" else (512, "corpus"))
    assert r["grid"]["baseline"] is True                 # every preset shows the no-pretraining row
    if name != "reference":
        assert r["data"]["heldout"]                      # and scores a held-out file no run trains on


def test_reference_preset_is_the_reference_optimisation_and_cpu_hour_the_measured_recipe():
    ref = load_recipe("reference")
    for s in ("stage1", "stage2"):
        assert ref[s]["correct_bias"] is False and ref[s]["precision"] == "fp32" and ref[s]["init"] == "uer"
        assert ref[s]["mask_rate"] == 0.15
    assert ref["stage1"]["learning_rate"] == 1e-4 and ref["stage1"]["batch_size"] * ref["stage1"]["world_size"] == 512
    hour = load_recipe("cpu-hour")
    assert hour["stage1"]["learning_rate"] == 1.5e-3 and hour["stage1"]["warmup"] == 0.05
    assert hour["grid"]["max_train_tokens"] == 2_000_000
    # both stages capped so that the grid (~22 min here) still fits the hour
    assert hour["stage1"]["time_budget_s"] + hour["stage2"]["time_budget_s"] <= 32 * 60
    # the measured choices: stage 2 on the tasks' unlabeled train texts, the grid at lr 1e-3
    assert hour["stage2"]["data"] == "task_text" and hour["stage2"]["total_steps"] == 2000
    assert hour["data"]["task_text"] is False and hour["preprocess"]["full_sentences"] is False
    assert hour["grid"]["learning_rate"] == [1e-3]
    assert ref["data"]["task_text"] is False and ref["stage1"]["data"] == ref["stage2"]["data"] == "corpus"


def test_stage_data_is_corpus_or_task_text():
    with pytest.raises(RecipeError, match=r"--set stage2.data=\"tasks\": stage2.data: must be one of corpus, task_text"):
        load_recipe("cpu-smoke", overrides=['stage2.data="tasks"'])


def test_cpu_smoke_is_small():
    r = load_recipe("cpu-smoke")
    assert r["models"] == ["L2_H128"]
    assert r["stage1"]["total_steps"] < 100 and r["stage2"]["total_steps"] < 100
    g = r["grid"]
    assert len(g["epochs"]) * len(g["batch_size"]) * len(g["learning_rate"]) * len(g["seeds"]) == 1
    assert 0 < g["max_train_examples"] <= 1000 and 0 < g["max_dev_examples"] <= 1000
    assert 0 < r["data"]["max_bytes"] <= 1_000_000


def test_overrides_layer_in_order(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text('[stage1]\ntotal_steps = 77\nlearning_rate = 2e-4\n[grid]\ntasks = ["tnews"]\n', encoding="utf-8")
    r = load_recipe("cpu-smoke", str(f), ["stage1.total_steps=5", "grid.epochs=2", "stage2.bf16=true",
                                          "data.corpus=/some/dir/x.txt", 'grid.tasks=["ocnli", "lcqmc"]'])
    assert r["stage1"]["total_steps"] == 5            # --set beats the file
    assert r["stage1"]["learning_rate"] == 2e-4       # the file beats the preset
    assert r["stage1"]["batch_size"] == load_recipe("cpu-smoke")["stage1"]["batch_size"]  # preset kept
    assert r["grid"]["epochs"] == [2]                 # a scalar becomes a one-element list
    assert r["grid"]["tasks"] == ["ocnli", "lcqmc"]
    assert r["stage2"]["precision"] == "bf16" and r["data"]["corpus"] == "/some/dir/x.txt"  # bf16=true: alias
    assert r["sources"][:3] == ["reference", "preset:cpu-smoke", f"file:{f}"]


def test_int_accepted_for_float_and_float_for_int():
    r = load_recipe(overrides=["stage1.learning_rate=1", "stage1.total_steps=1e3"])
    assert r["stage1"]["learning_rate"] == 1.0 and isinstance(r["stage1"]["learning_rate"], float)
    assert r["stage1"]["total_steps"] == 1000 and isinstance(r["stage1"]["total_steps"], int)


@pytest.mark.parametrize("override, words", [
    ("stage1.total_step=5", "unknown setting 'stage1.total_step'"),
    ("stage3.total_steps=5", "unknown setting"),
    ("stage1.total_steps=fast", "must be an integer"),
    ("stage1.total_steps=0", "stage1.total_steps: must be >= 1, got 0"),
    ("stage1.total_steps=1.5", "must be an integer"),
    ("stage1.bf16=1", "must be a boolean"),
    ("stage1.precision=fp16", "stage1.precision: must be one of auto, fp32, bf16"),
    ("stage1.correct_bias=1", "must be a boolean"),
    ("stage1.mask_rate=0", "mask_rate"),
    ("grid.max_train_tokens=-1", "max_train_tokens"),
    ("stage1.warmup=1.5", "stage1.warmup: must be <= 1"),
    ("stage1.learning_rate=inf", "stage1.learning_rate: must be a finite number"),
    ("grid.jobs=0", "grid.jobs: must be >= 1"),
    ("distill.alpha=2", "distill.alpha: must be <= 1"),
    ("stage1.seq_length=1024", "512"),
    ("grid.tasks=[\"cmnli\"]", "unknown task"),
    ("grid.epochs=[]", "empty"),
    ("export.type=onnx", "export.type"),
    ("stage1", "KEY=VALUE"),
])
def test_bad_overrides_fail_with_the_key(override, words):
    with pytest.raises(RecipeError, match=words.replace("[", r"\[").replace("(", r"\(")):
        load_recipe("cpu-smoke", overrides=[override])


def test_bad_recipe_file(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("[stage1]\nlearnin_rate = 1e-4\n", encoding="utf-8")
    with pytest.raises(RecipeError, match=r"bad\.toml: unknown setting 'stage1\.learnin_rate'"):
        load_recipe(recipe_path=str(f))
    f.write_text("[stage1\n", encoding="utf-8")
    with pytest.raises(RecipeError, match="invalid TOML"):
        read_recipe_file(str(f))
    with pytest.raises(FileNotFoundError):
        load_recipe(recipe_path=str(tmp_path / "missing.toml"))
    with pytest.raises(RecipeError, match="unknown preset"):
        load_recipe("gpu-week")


def test_all_24_sizes_and_aliases_accepted():
    names = preset_names()
    assert len(names) == 24
    for n in names:
        assert canonical_model(n) == n and canonical_model(n.lower()) == n
    assert [canonical_model(a) for a in ("tiny", "mini", "small", "medium", "base")] == \
        ["L2_H128", "L4_H256", "L4_H512", "L8_H512", "L12_H768"]
    r = load_recipe("cpu-smoke", models=names)
    assert r["models"] == names
    for bad in ("L3_H128", "L2_H100", "huge", ""):
        with pytest.raises(RecipeError, match="unknown model"):
            canonical_model(bad)
    with pytest.raises(RecipeError, match="duplicates"):
        load_recipe(models=["tiny", "L2_H128"])


def test_tasks_spec():
    assert parse_tasks("all") == list(TASKS)
    assert parse_tasks("tnews, ocnli") == ["tnews", "ocnli"]
    with pytest.raises(RecipeError, match="unknown task"):
        parse_tasks("tnews,afqmc")


def test_parse_override_values():
    assert parse_override("a.b=3") == ("a.b", 3)
    assert parse_override("a.b=true") == ("a.b", True)
    assert parse_override("a.b=[1, 2]") == ("a.b", [1, 2])
    assert parse_override("a.b=../x/y.txt") == ("a.b", "../x/y.txt")
    assert parse_override('a.b="quoted"') == ("a.b", "quoted")


def test_resolved_recipe_round_trips(tmp_path):
    r = load_recipe("cpu-hour", overrides=["grid.tasks=[\"tnews\"]", "data.corpus=C:\\\\x \"y\""])
    f = tmp_path / "resolved.toml"
    f.write_text(dumps_toml(r), encoding="utf-8")
    again = load_recipe(recipe_path=str(f))
    strip = lambda d: {k: v for k, v in d.items() if k != "sources"}  # noqa: E731
    assert strip(again) == strip(r)
    assert set(strip(reference_recipe())) == set(strip(r))


def test_cli_flags_become_overrides():
    from miniroberta.study.reproduce import configure, resolve_recipe
    p = argparse.ArgumentParser()
    configure(p)
    args = p.parse_args(["--preset", "cpu-smoke", "--models", "tiny,L4_H512", "--tasks", "tnews,ocnli",
                         "--corpus", "/c", "--vocab", "/v.txt", "--data_dir", "/d", "--jobs", "3",
                         "--set", "stage1.time_budget_s=60"])
    r = resolve_recipe(args)
    assert r["models"] == ["L2_H128", "L4_H512"]
    assert r["grid"]["tasks"] == ["tnews", "ocnli"] and r["grid"]["jobs"] == 3
    assert (r["data"]["corpus"], r["data"]["vocab"], r["data"]["data_dir"]) == ("/c", "/v.txt", "/d")
    assert r["stage1"]["time_budget_s"] == 60


def test_every_problem_is_named_once_with_its_layer_and_key(tmp_path):
    """All the problems of all the layers in one error: each line names the file / preset / --set and the key."""
    f = tmp_path / "mine.toml"
    f.write_text("[stage1]\nlearning_rate = -1.0\nlearnin_rate = 1e-4\n[grid]\nepochs = [0]\n", encoding="utf-8")
    with pytest.raises(RecipeError) as e:
        load_recipe("cpu-smoke", str(f), ["stage2.precision=fp16", "stage1.total_steps=fast"])
    msg = str(e.value)
    assert msg.startswith("5 problems with the recipe:")
    for line in (f"{f}: unknown setting 'stage1.learnin_rate'; did you mean 'stage1.learning_rate'?",
                 f"{f}: stage1.learning_rate: must be > 0, got -1",
                 f"{f}: grid.epochs: values must be positive, got [0]",
                 "--set stage2.precision=fp16: stage2.precision: must be one of auto, fp32, bf16, got 'fp16'",
                 "--set stage1.total_steps=fast: stage1.total_steps must be an integer"):
        assert line in msg, line


def test_stage_keys_are_fields_of_the_pretraining_configs_and_split_by_their_tags():
    """A stage's keys are PretrainConfig / RunOptions / StageData fields; what a step fingerprints (result) and
    what it only records (speed) come from the fields' settings tags, not from a list of reproduce's own."""
    from miniroberta.pretrain.config import PretrainConfig, RunOptions
    from miniroberta.settings import fields_by_effect
    from miniroberta.study.recipe import split_by_effect, stage_configs, stage_field
    ref = reference_recipe()
    for s in ("stage1", "stage2"):
        for k in ref[s]:
            assert stage_field(k) is not None, k
    result, speed = split_by_effect(load_recipe("cpu-hour")["stage1"])
    assert set(speed) == {"save_checkpoint_steps", "report_steps", "time_budget_s"}
    assert set(speed) <= set(fields_by_effect(RunOptions, "speed"))
    assert {"learning_rate", "precision", "batch_size", "total_steps"} <= set(result)
    cfg, opts = stage_configs(load_recipe("cpu-hour")["stage1"], seed=7, processes=1, accumulation=2,
                              output_model_path="m", metrics_path="x.jsonl")
    assert isinstance(cfg, PretrainConfig) and cfg.learning_rate == 1.5e-3 and cfg.accumulation_steps == 2
    assert opts.time_budget_s == 1440.0 and opts.metrics_path == "x.jsonl" and cfg.output_model_path == "m"
    _, opts0 = stage_configs(load_recipe("cpu-smoke")["stage1"], seed=7)
    assert opts0.time_budget_s is None                      # the recipe's 0 = no budget


def test_study_precision_is_decided_once_from_the_device():
    """auto: from the device's capabilities (never a timing), so the same recipe on the same machine always
    trains the same way; a precision the stages name is kept for every auto stage and the grid."""
    import torch
    from miniroberta.engine.precision import resolve_precision
    from miniroberta.study.recipe import study_precision
    cpu = torch.device("cpu")
    r = load_recipe("cpu-smoke")
    assert study_precision(r, cpu) == resolve_precision("auto", cpu) == study_precision(r, cpu)
    r = load_recipe("cpu-smoke", overrides=["stage1.precision=fp32"])
    assert study_precision(r, cpu) == ("fp32", "stage1.precision of the recipe")
    assert study_precision(load_recipe("gpu-day"), cpu)[0] == "bf16"
