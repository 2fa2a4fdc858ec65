"""`miniroberta reproduce`: the step cache (unit tests) and the cpu-smoke study end to end on a slice of
../shared/data -- killed mid stage 1, resumed to completion, then re-run with every step skipped."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from miniroberta.outputs import retire
from miniroberta.study.curves import read_loss_curve
from miniroberta.study.pipeline import best_scores
from miniroberta.study.steps import Runner

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


# ------------------------------------------------------------------ step cache
def _events(out, study: bool = False) -> list[dict]:
    """The step decisions of events.jsonl (``study``: also the study-wide records: precision, held-out text)."""
    p = Path(out) / "events.jsonl"
    ev = [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines()] if p.exists() else []
    return ev if study else [e for e in ev if e["step"] != "study"]


def test_runner_skips_resumes_and_redoes(tmp_path):
    calls = []

    def fn(resume, fresh):
        calls.append((resume, fresh))
        (tmp_path / "o.txt").write_text("x")
        return {"n": len(calls)}

    r = Runner(str(tmp_path))
    out = [str(tmp_path / "o.txt")]
    assert r.run("s", {"a": 1}, {"in": "h1"}, fn, outputs=out) == {"n": 1}
    assert r.run("s", {"a": 1}, {"in": "h1"}, fn, outputs=out) == {"n": 1}      # cached
    assert calls == [(False, False)]
    m = json.loads((tmp_path / "steps" / "s.json").read_text())
    assert m["status"] == "done" and m["inputs"] == {"in": "h1"} and m["settings"] == {"a": 1}
    assert m["versions"]["torch"] and m["git_revision"] and m["elapsed_s"] >= 0
    # changed settings or inputs: redo with fresh=True
    r.run("s", {"a": 2}, {"in": "h1"}, fn, outputs=out)
    r.run("s", {"a": 2}, {"in": "h2"}, fn, outputs=out)
    assert calls[1:] == [(False, True), (False, True)]
    # options are recorded but do not invalidate
    r.run("s", {"a": 2}, {"in": "h2"}, fn, outputs=out, options={"report_steps": 9})
    assert len(calls) == 3
    # an output deleted by hand: the step runs again
    os.unlink(out[0])
    r.run("s", {"a": 2}, {"in": "h2"}, fn, outputs=out)
    assert len(calls) == 4
    # a step that died while running is resumed
    def boom(resume, fresh):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        r.run("t", {}, {}, boom)
    assert json.loads((tmp_path / "steps" / "t.json").read_text())["status"] == "running"
    r.run("t", {}, {}, fn)
    assert calls[-1] == (True, False)
    # complete() can reopen a done step (pretraining stopped by its budget, budget changed)
    r.run("t", {}, {}, fn, complete=lambda m: False)
    assert calls[-1] == (True, False)
    actions = [(e["step"], e["action"]) for e in _events(tmp_path)]
    assert actions.count(("s", "skip")) == 2 and ("t", "failed") in actions and ("t", "resume") in actions


def test_retire_keeps_previous_outputs(tmp_path):
    d = tmp_path / "stage1"
    d.mkdir()
    (d / "model.safetensors-100").write_text("w")
    kept = retire(str(d))
    assert not d.exists() and Path(kept, "model.safetensors-100").read_text() == "w"
    d.mkdir()
    assert retire(str(d)) != kept and retire(str(tmp_path / "missing")) is None


def test_loss_curve_keeps_last_report_per_step(tmp_path):
    p = tmp_path / "m.jsonl"
    rows = [{"event": "start", "step": 0}, {"event": "report", "step": 2, "loss": 9.0},
            {"event": "report", "step": 4, "loss": 8.0}, {"event": "checkpoint", "step": 4},
            {"event": "start", "step": 2}, {"event": "report", "step": 4, "loss": 7.5},
            {"event": "report", "step": 6, "loss": 7.0}]
    p.write_text("\n".join(json.dumps(r) for r in rows) + '\n{"event": "rep', encoding="utf-8")  # torn last line
    assert read_loss_curve(str(p)) == ([2, 4, 6], [9.0, 7.5, 7.0])


def test_best_scores_from_grid_summary():
    s = {"tasks": {"tnews": {"best": {"best_dev_acc_mean": 0.5234}}, "ocnli": {"best": None}}}
    assert best_scores(s) == {"tnews": 52.34}


# ------------------------------------------------------------------ end to end
pytestmark_data = pytest.mark.skipif(not (DATA / "corpus").is_dir(), reason="../shared/data is not available")

SMALL = [
    "--preset", "cpu-smoke", "--tasks", "chnsenticorp,tnews",
    "--set", "data.max_bytes=60000",
    "--set", "stage1.total_steps=8", "--set", "stage1.batch_size=4",
    "--set", "stage1.save_checkpoint_steps=2", "--set", "stage1.report_steps=2",
    "--set", "stage2.total_steps=4", "--set", "stage2.batch_size=2",
    "--set", "stage2.save_checkpoint_steps=2", "--set", "stage2.report_steps=1",
    "--set", "grid.max_train_examples=32", "--set", "grid.max_dev_examples=32",
    "--no_progress",
]


def _cmd(out: Path) -> list[str]:
    return [sys.executable, "-m", "miniroberta.cli", "reproduce", "--out", str(out),
            "--corpus", str(DATA / "corpus"), "--vocab", str(DATA / "vocab" / "google_zh_vocab.txt"),
            "--data_dir", str(DATA / "tasks"), *SMALL]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "2", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Run 1 killed (SIGTERM) once stage 1 has saved a checkpoint; run 2 resumes and completes;
    run 3 finds everything cached."""
    out = tmp_path_factory.mktemp("reproduce") / "run"
    first_ckpt = out / "models" / "L2_H128" / "stage1" / "model.safetensors-2"
    p = subprocess.Popen(_cmd(out), cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t0 = time.time()
    while not first_ckpt.exists() and p.poll() is None and time.time() - t0 < 300:
        time.sleep(0.05)
    assert p.poll() is None, "run 1 ended before stage 1 saved its first checkpoint:\n" + p.stdout.read()[-3000:]
    p.send_signal(signal.SIGTERM)
    log1 = p.communicate(timeout=300)[0]
    killed_rc = p.returncode
    n1 = len(_events(out))
    r2 = subprocess.run(_cmd(out), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert r2.returncode == 0, r2.stdout[-3000:] + r2.stderr[-5000:]
    n2 = len(_events(out))
    t3 = time.time()
    r3 = subprocess.run(_cmd(out), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert r3.returncode == 0, r3.stderr[-3000:]
    ev = _events(out)
    return dict(out=out, log1=log1, killed_rc=killed_rc, run1=ev[:n1], run2=ev[n1:n2], run3=ev[n2:], r2=r2, r3=r3,
                t3=time.time() - t3)


def _manifest(out: Path, step: str) -> dict:
    return json.loads((out / "steps" / f"{step}.json").read_text(encoding="utf-8"))


STEPS = ["decontaminate", "task-text", "preprocess-seq128", "preprocess-seq512", "preprocess-heldout", "pretrain-L2_H128-stage1", "pretrain-L2_H128-stage2",
         "export-L2_H128", "grid-L2_H128", "report", "card-L2_H128"]


@pytestmark_data
def test_kill_then_resume_then_all_cached(study):
    run1 = [(e["step"], e["action"]) for e in study["run1"]]
    assert study["killed_rc"] != 0
    assert ("pretrain-L2_H128-stage1", "run") in run1 and ("pretrain-L2_H128-stage1", "done") not in run1
    run2 = [(e["step"], e["action"]) for e in study["run2"]]
    assert ("preprocess-seq128", "skip") in run2 and ("pretrain-L2_H128-stage1", "resume") in run2
    assert [s for s, a in run2 if a == "done"] == STEPS[5:]   # the datasets were done before the kill
    # stage 1 really continued from its checkpoint: the second session starts past step 0
    starts = [json.loads(line) for line in (study["out"] / "models/L2_H128/stage1/metrics.jsonl").read_text().splitlines()
              if '"event": "start"' in line]
    assert len(starts) == 2 and starts[0]["step"] == 0 and starts[1]["step"] >= 2
    # the third run re-ran nothing
    assert [(e["step"], e["action"]) for e in study["run3"]] == [(s, "skip") for s in STEPS]
    assert f"{len(STEPS)} steps, 0 run" in study["r3"].stderr
    for s in STEPS:
        m = _manifest(study["out"], s)
        assert m["status"] == "done" and m["git_revision"] and m["versions"]["miniroberta"] and m["fingerprint"]
        assert m["attempts"] == (2 if s == "pretrain-L2_H128-stage1" else 1)


@pytestmark_data
def test_the_training_corpus_holds_no_scored_dev_text(study):
    """cpu-smoke decontaminates: the dataset is built from the cleaned copy, whose every line is free of
    20-character spans of the grid tasks' dev/test texts, and the removed lines are listed."""
    from miniroberta.data.decontam import task_spans
    out = study["out"]
    res = _manifest(out, "decontaminate")["result"]
    assert res["files"] and all(f.startswith(str(out / "data" / "corpus")) for f in res["files"])
    assert _manifest(out, "preprocess-seq128")["settings"]["decontaminate"] is True
    rep = json.loads(Path(res["report"]).read_text(encoding="utf-8"))
    assert sum(f["bytes"] for f in rep["files"]) <= 60000 and len(rep["removed"]) == res["removed"]
    es = task_spans(["chnsenticorp", "tnews"], str(DATA / "tasks"))
    for f in res["files"]:
        assert not any(es.match(line) for line in open(f, encoding="utf-8"))


@pytestmark_data
def test_the_task_text_joins_the_corpus_without_labels_or_dev_text(study):
    """cpu-smoke's data.task_text: the grid tasks' first train examples (grid.max_train_examples), their
    texts only, decontaminated, are a file of the stage-1 corpus."""
    from miniroberta.data.decontam import task_spans
    from miniroberta.data.tasks import read_examples, resolve_task
    out = study["out"]
    res = _manifest(out, "task-text")["result"]
    assert res["files"] == [str(out / "data" / "task_text" / "task_train_texts.txt")]
    lines = Path(res["files"][0]).read_text(encoding="utf-8").splitlines()
    assert len(lines) == res["kept"] == len(set(lines)) and res["kept"] + res["removed"] == sum(
        t["texts"] for t in res["tasks"].values())
    assert set(res["tasks"]) == {"chnsenticorp", "tnews"} and all(t["examples"] == 32 for t in res["tasks"].values())
    es = task_spans(["chnsenticorp", "tnews"], str(DATA / "tasks"))
    expected = []
    for task in ("chnsenticorp", "tnews"):
        tf = resolve_task(task, str(DATA / "tasks"))
        data = read_examples(tf.train_path, text_fields=tf.text_fields)
        expected += [" ".join(t.split()) for t in data.texts[0][:32]]
    kept = [t for t in dict.fromkeys(expected) if es.match(t) is None]
    assert lines == kept and len(kept) < len(set(expected))   # in order; tnews repeats titles of its dev set
    m = _manifest(out, "preprocess-seq128")
    assert m["settings"]["task_text"] is True and "task_text" in m["inputs"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task_text"]["kept"] == res["kept"]


@pytestmark_data
def test_datasets_and_checkpoints(study):
    from miniroberta.interop.checkpoint import load_weights
    from miniroberta.data.dataset import MlmDataset
    out = study["out"]
    for seq in (128, 512):
        ds = MlmDataset(out / "data" / f"seq{seq}")
        assert ds.seq_length == seq and len(ds) > 10 and max(ds.lengths()) <= seq
        assert _manifest(out, f"preprocess-seq{seq}")["result"]["content_hash"] == ds.content_hash
    s1 = _manifest(out, "pretrain-L2_H128-stage1")["result"]
    s2 = _manifest(out, "pretrain-L2_H128-stage2")["result"]
    assert s1["steps"] == 8 and s2["steps"] == 4
    assert s1["final_checkpoint"].endswith("stage1/model.safetensors-8")
    assert s2["final_checkpoint"].endswith("stage2/model.safetensors-4")
    cfg, sd, _ = load_weights(s2["final_checkpoint"])
    assert cfg.name == "L2_H128" and "bert.embeddings.word_embeddings.weight" in sd
    # stage 2 starts from the stage-1 final weights
    start2 = json.loads((out / "models/L2_H128/stage2/metrics.jsonl").read_text().splitlines()[0])
    assert json.dumps(start2).count("stage1/model.safetensors-8") >= 1
    assert _manifest(out, "pretrain-L2_H128-stage2")["inputs"]["init"] == s1["final_checkpoint_sha256"]


@pytestmark_data
def test_hf_export_loads_in_transformers(study):
    import torch
    from transformers import BertForMaskedLM

    from miniroberta.interop.checkpoint import load_model
    from miniroberta.modeling.tokenizer import BertTokenizer
    out = study["out"]
    exp = _manifest(out, "export-L2_H128")["result"]
    assert exp["parity"]["passed"] and exp["parity"]["max_abs_diff"] < 1e-4
    hf = BertForMaskedLM.from_pretrained(out / "models/L2_H128/hf").eval()
    ours, _ = load_model(_manifest(out, "pretrain-L2_H128-stage2")["result"]["final_checkpoint"], "mlm")
    ours.eval()
    ids = torch.tensor([BertTokenizer(DATA / "vocab" / "google_zh_vocab.txt").encode("中国的首都是北京。").input_ids])
    with torch.no_grad():
        assert torch.allclose(hf(input_ids=ids).logits, ours(ids).logits, atol=1e-4)


@pytestmark_data
def test_grid_report_plots_and_card(study):
    out = study["out"]
    summary = json.loads((out / "models/L2_H128/grid/summary.json").read_text())
    assert set(summary["tasks"]) == {"chnsenticorp", "tnews"}
    scores = _manifest(out, "grid-L2_H128")["result"]["scores"]
    assert set(scores) == {"chnsenticorp", "tnews"} and all(0 <= v <= 100 for v in scores.values())
    md = (out / "report" / "report.md").read_text(encoding="utf-8")
    assert "L2_H128" in md and "[reference]" in md and "83.4" in md  # ours beside the reference Tiny row
    assert f"{scores['tnews']:.1f}" in md
    assert (out / "report" / "report.csv").read_text().count("\n") >= 2
    assert json.loads((out / "report" / "report.json").read_text())["rows"]
    for png in ("score_vs_size.png", "pretrain_loss.png"):
        assert (out / "report" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = (out / "models/L2_H128/hf/README.md").read_text(encoding="utf-8")
    s2 = _manifest(out, "pretrain-L2_H128-stage2")["result"]
    s1 = _manifest(out, "pretrain-L2_H128-stage1")["result"]
    assert f"| Final MLM loss | {s2['final_loss']:.4g} |" in card
    assert "| Steps | 12 |" in card
    assert f"{s1['tokens_seen'] + s2['tokens_seen']:,}" in card or str(s1["tokens_seen"] + s2["tokens_seen"]) in card
    assert "3.2M" in card  # size
    assert "corpus: 12 file(s), first 60,000 bytes" in card   # the held-out file is not trained on
    assert "held-out MLM loss" in card
    # the no-pretraining arm: its own row and the difference, from the same grid
    grid = _manifest(out, "grid-L2_H128")["result"]
    assert set(grid["baseline_scores"]) == {"chnsenticorp", "tnews"}
    assert grid["delta"]["tnews"] == pytest.approx(scores["tnews"] - grid["baseline_scores"]["tnews"], abs=0.011)
    assert "| L2_H128 · no pretraining |" in md and "Δ L2_H128 − no pretraining" in md
    # the loss plot has the held-out curve: eval records in the stage metrics
    m1 = (out / "models/L2_H128/stage1/metrics.jsonl").read_text()
    assert '"eval_loss"' in m1
    row = [line for line in card.splitlines() if line.startswith("| miniroberta L2_H128 |")]
    assert row and f"{scores['chnsenticorp']:.1f}" in row[0] and f"{scores['tnews']:.1f}" in row[0]
    # the printed table is the report
    assert "| L2_H128 |" in study["r3"].stdout


@pytestmark_data
def test_dry_run_plan_measures(tmp_path):
    from miniroberta.study.recipe import load_recipe
    from miniroberta.study.plan import estimate_plan
    r = load_recipe("cpu-smoke", overrides=[f"data.corpus={json.dumps(str(DATA / 'corpus'))}",
                                            f"data.vocab={json.dumps(str(DATA / 'vocab' / 'google_zh_vocab.txt'))}",
                                            f"data.data_dir={json.dumps(str(DATA / 'tasks'))}",
                                            "data.max_bytes=20000", 'grid.tasks=["chnsenticorp"]'])
    plan = estimate_plan(r, str(tmp_path), calibration_steps=1)
    steps = [row["step"] for row in plan["rows"]]
    assert steps == ["decontaminate", "task-text", "preprocess-seq128", "preprocess-seq512", "pretrain-L2_H128-stage1",
                     "pretrain-L2_H128-stage2", "export-L2_H128", "grid-L2_H128", "report", "card-L2_H128"]
    assert all(row["estimate_s"] > 0 for row in plan["rows"]) and plan["total_s"] == pytest.approx(
        sum(row["estimate_s"] for row in plan["rows"]))
    # cpu-smoke's task text: chnsenticorp's first 256 train examples, distinct texts only
    n_texts = int(plan["rows"][1]["what"].split()[0].replace(",", ""))
    assert 200 < n_texts <= 256 and "decontaminated" in plan["rows"][1]["what"]
    s1 = plan["rows"][4]
    assert "s/step" in s1["calibration"] and s1["state"] == ""
    assert plan["tasks"]["chnsenticorp"]["train"] == 9600 and plan["tasks"]["chnsenticorp"]["dev"] == 1200
    assert plan["precision"] in ("fp32", "bf16") and plan["warning"] is None and "c3_documents.txt" in plan["heldout"]


def test_dry_run_durations_read_as_days_and_an_implausible_plan_is_said():
    from miniroberta.study.plan import format_eta, plausibility
    assert format_eta(59) == "0:59" and format_eta(3599) == "59:59" and format_eta(3600) == "1:00:00"
    assert format_eta(86399) == "23:59:59" and format_eta(86400) == "1 d 00:00"
    assert format_eta(754912 * 3600 + 21 * 60 + 9) == "~86 years"          # was printed as 754912:21:09
    assert format_eta(40 * 86400 + 5 * 3600 + 7 * 60) == "40 d 05:07"
    assert format_eta(float("nan")) == "?" and format_eta(float("inf")) == "?"
    assert plausibility(3600, "cpu") is None
    warn = plausibility(754912 * 3600, "cpu")
    assert "~86 years" in warn and "--preset cpu-smoke, cpu-hour or gpu-day" in warn
    assert "calibration failed" in plausibility(float("nan"), "cpu")


def test_the_dry_run_prints_days_for_the_reference_recipe(capsys, monkeypatch):
    """print_plan formats every duration with format_eta and ends with the plausibility warning."""
    from miniroberta.study import plan as plan_mod
    from miniroberta.study.recipe import load_recipe
    fake = {"rows": [{"step": "pretrain-L12_H768-stage1", "what": "1,000,000 steps", "estimate_s": 2.7e9,
                      "calibration": "x", "state": ""}], "recipe": "ref", "load_average": 0.5, "cpus": 2,
            "device": "cpu", "threads": 2, "precision": "fp32", "precision_reason": "auto: no bf16",
            "calibration_s": 1.0, "heldout": "none", "pretrain_steps": "p", "finetune_steps": "f",
            "total_s": 2.7e9, "remaining_s": 2.7e9, "warning": plan_mod.plausibility(2.7e9, "cpu")}
    monkeypatch.setattr(plan_mod, "estimate_plan", lambda *a, **k: fake)
    plan_mod.print_plan(load_recipe(), "runs/x")
    out = capsys.readouterr().out
    assert "~86 years" in out and "754912:" not in out and "warning: this plan would take" in out


@pytestmark_data
@pytest.mark.slow
def test_torchrun_two_cpu_processes(tmp_path):
    """Both pretraining stages run as 2-process DDP (gloo) under torchrun; rank 0 does the rest."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "miniroberta.cli",
           *_cmd(out)[3:], "--set", "stage1.world_size=2", "--set", "stage2.world_size=2",
           "--set", "stage1.total_steps=4", "--set", "stage2.total_steps=2", "--tasks", "chnsenticorp"]
    r = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-5000:]
    assert "global batch 8 (2 x 4 x 1)" in r.stderr and "global batch 4 (2 x 2 x 1)" in r.stderr
    assert [e["action"] for e in _events(out) if e["action"] in ("done", "skip")].count("done") == 8
    assert (out / "models/L2_H128/hf/README.md").is_file()


@pytestmark_data
@pytest.mark.slow
def test_stage_time_budget_then_a_larger_budget_resumes(tmp_path):
    """A stage stopped by its budget is done (a re-run skips it); a different budget resumes it from its
    checkpoint and everything downstream is redone."""
    out = tmp_path / "budget"
    base = [*_cmd(out), "--tasks", "chnsenticorp", "--set", "stage1.total_steps=100000",
            "--set", "stage1.save_checkpoint_steps=50000"]
    r1 = subprocess.run([*base, "--set", "stage1.time_budget_s=4"], cwd=REPO, env=_env(), capture_output=True,
                        text=True, timeout=600)
    assert r1.returncode == 0, r1.stderr[-3000:]
    s1 = _manifest(out, "pretrain-L2_H128-stage1")["result"]
    assert s1["stopped"] == "time_budget" and 0 < s1["steps"] < 100000
    r2 = subprocess.run([*base, "--set", "stage1.time_budget_s=4"], cwd=REPO, env=_env(), capture_output=True,
                        text=True, timeout=600)
    assert "8 steps, 0 run" in r2.stderr
    n = len(_events(out))
    r3 = subprocess.run([*base, "--set", "stage1.time_budget_s=8"], cwd=REPO, env=_env(), capture_output=True,
                        text=True, timeout=600)
    assert r3.returncode == 0, r3.stderr[-3000:]
    acts = {(e["step"], e["action"]) for e in _events(out)[n:]}
    assert ("pretrain-L2_H128-stage1", "resume") in acts and ("pretrain-L2_H128-stage2", "redo") in acts
    assert _manifest(out, "pretrain-L2_H128-stage1")["result"]["steps"] > s1["steps"]


@pytestmark_data
def test_distillation_stage_and_skipped_stage2(tmp_path):
    """recipe [distill]: a teacher fine-tuned per task with its best grid setting, the other model
    distilled from it, a "← teacher (PD)" report row; stage2.total_steps = 0 skips stage 2."""
    out = tmp_path / "run"
    cmd = [*_cmd(out), "--tasks", "chnsenticorp", "--models", "L2_H128,L2_H256", "--set", "stage2.total_steps=0",
           "--set", "grid.baseline=false", "--set", "distill.enabled=true", "--set", "distill.teacher=L2_H256",
           "--set", 'distill.tasks=["chnsenticorp"]']
    r = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    steps = {p.stem for p in (out / "steps").glob("*.json")}
    assert {"teacher-L2_H256-chnsenticorp", "distill-L2_H128-chnsenticorp"} <= steps
    assert not any("stage2" in s for s in steps) and "preprocess-seq512" not in steps
    d = _manifest(out, "distill-L2_H128-chnsenticorp")["result"]
    res = json.loads(Path(d["result"]).read_text())
    t = _manifest(out, "teacher-L2_H256-chnsenticorp")["result"]
    assert res["model"]["teacher"]["sha256"] == t["sha256"] and res["model"]["teacher"]["name"] == "L2_H256"
    md = (out / "report" / "report.md").read_text(encoding="utf-8")
    assert "| L2_H128 ← L2_H256 (PD) |" in md
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["distilled_dev_acc"]) == {"L2_H128-chnsenticorp"}


@pytestmark_data
def test_dry_run_plans_the_distillation_stage(tmp_path):
    from miniroberta.study.recipe import load_recipe
    from miniroberta.study.plan import estimate_plan
    r = load_recipe("cpu-smoke", overrides=[f"data.corpus={json.dumps(str(DATA / 'corpus'))}",
                                            f"data.vocab={json.dumps(str(DATA / 'vocab' / 'google_zh_vocab.txt'))}",
                                            f"data.data_dir={json.dumps(str(DATA / 'tasks'))}",
                                            "data.max_bytes=20000", 'grid.tasks=["chnsenticorp"]',
                                            'models=["tiny", "mini"]', "distill.enabled=true",
                                            'distill.teacher="mini"', 'distill.tasks=["chnsenticorp"]'])
    plan = estimate_plan(r, str(tmp_path), calibration_steps=1)
    rows = {row["step"]: row for row in plan["rows"]}
    t, d = rows["teacher-L4_H256-chnsenticorp"], rows["distill-L2_H128-chnsenticorp"]
    assert t["estimate_s"] > 0 and d["estimate_s"] > 0 and "upper bound" in t["calibration"]
    assert "distill-L4_H256-chnsenticorp" not in rows
    steps = [row["step"] for row in plan["rows"]]
    assert steps.index("grid-L4_H256") < steps.index("teacher-L4_H256-chnsenticorp") < steps.index("report")


@pytestmark_data
def test_a_stage_on_the_task_texts_alone(tmp_path):
    """stageN.data = "task_text" (cpu-hour's stage 2): the stage trains, from stage 1's weights, on a packed
    dataset of the tasks' unlabeled train texts only; the corpus is not preprocessed at that stage's length."""
    from miniroberta.data.dataset import MlmDataset
    out = tmp_path / "run"
    cmd = [*_cmd(out), "--tasks", "chnsenticorp", "--set", "grid.baseline=false", "--set", "data.task_text=false",
           "--set", 'stage2.data="task_text"', "--set", "stage2.seq_length=128"]
    r = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    steps = {p.stem for p in (out / "steps").glob("*.json")}
    assert {"task-text", "preprocess-seq128", "preprocess-task_text-seq128"} <= steps and "preprocess-seq512" not in steps
    tt = MlmDataset(out / "data" / "task_text_seq128")
    assert tt.manifest["full_sentences"] is True and tt.seq_length == 128
    corpus = _manifest(out, "preprocess-seq128")
    assert "task_text" not in corpus["settings"]          # data.task_text = false: stage 1 is the corpus alone
    s2 = _manifest(out, "pretrain-L2_H128-stage2")
    s1 = _manifest(out, "pretrain-L2_H128-stage1")
    assert s2["inputs"]["dataset"] == tt.content_hash != s1["inputs"]["dataset"]
    assert s2["inputs"]["init"] == s1["result"]["final_checkpoint_sha256"]
    card = (out / "models" / "L2_H128" / "hf" / "README.md").read_text(encoding="utf-8")
    assert "task texts, seq 128" in card and "unlabeled train texts (packed)" in card


@pytestmark_data
def test_one_precision_for_the_whole_study_recorded_with_its_reason(study):
    """auto is resolved once when the study starts: both stages and the grid run with the same explicit value,
    and the choice and its reason are in the log, events.jsonl, the step manifests and summary.json."""
    import torch
    from miniroberta.engine.precision import resolve_precision
    out = study["out"]
    want, why = resolve_precision("auto", torch.device("cpu"))
    recs = [e for e in _events(out, study=True) if e["step"] == "study" and e["action"] == "precision"]
    assert len(recs) == 3 and {(e["precision"], e["reason"]) for e in recs} == {(want, why)}   # once per invocation
    assert recs[0]["requested"] == {"stage1": "auto", "stage2": "auto"}
    for stage in ("stage1", "stage2"):
        m = _manifest(out, f"pretrain-L2_H128-{stage}")
        assert m["settings"]["precision"] == want and m["options"]["precision_reason"] == why
        assert m["result"]["precision"] == want                     # what pretraining really ran
    assert _manifest(out, "grid-L2_H128")["settings"]["precision"] == want
    summary = json.loads((out / "summary.json").read_text())
    assert summary["precision"]["value"] == want and summary["precision"]["reason"] == why
    assert f"precision {want} for every stage and the grid ({why}" in study["log1"]
    assert "Loading weights" not in study["r2"].stderr       # transformers' progress bar stays out of the log


@pytestmark_data
def test_the_card_is_hub_ready(study):
    """models/<M>/hf/README.md: YAML front matter a model hub parses, a model-index with the grid's scores and
    their flags, the no-pretraining row beside ours, training data and budget, intended use; no local path;
    the export's integrity.json covers the card."""
    from miniroberta.integrity import verify_dir
    out = study["out"]
    path = out / "models/L2_H128/hf/README.md"
    card = path.read_text(encoding="utf-8")
    assert str(out) not in card and "/tmp" not in card and "models/L2_H128" not in card
    assert "## Intended use and limitations" in card and "## Training data and budget" in card
    scores = _manifest(out, "grid-L2_H128")["result"]["scores"]
    base = _manifest(out, "grid-L2_H128")["result"]["baseline_scores"]
    row = next(line for line in card.splitlines() if line.startswith("| L2_H128 · no pretraining |"))
    assert f"{base['tnews']:.1f}†" in row                      # 32 train examples: a subsample, flagged
    assert "† trained on a deterministic subsample" in card
    assert verify_dir(out / "models/L2_H128/hf") is True
    hub = pytest.importorskip("huggingface_hub")
    from huggingface_hub.repocard_data import model_index_to_eval_results
    meta = hub.ModelCard.load(path).data.to_dict()
    assert (meta["language"], meta["license"], meta["library_name"], meta["pipeline_tag"]) == \
        ("zh", "apache-2.0", "transformers", "fill-mask")
    assert set(meta["datasets"]) == {"chnsenticorp", "clue"} and "miniroberta" in meta["tags"]
    name, results = model_index_to_eval_results(meta["model-index"])
    assert name == "miniroberta L2_H128"
    got = {(r.dataset_config or r.dataset_type): (r.metric_value, r.metric_name) for r in results}
    assert got == {"chnsenticorp": (round(scores["chnsenticorp"], 2), "dev accuracy (%) †"),
                   "tnews": (round(scores["tnews"], 2), "dev accuracy (%) †")}


# ------------------------------------------------------------------ the held-out text of a user's corpus
def _user_corpus(path: Path, n: int = 1200) -> Path:
    """n documents of the shared corpus plus exact copies of some of them (a corpus repeats itself)."""
    src = (DATA / "corpus" / "news_thucnews_sample.txt").read_text(encoding="utf-8").splitlines()
    docs = [d for d in src if d.strip()][:n]
    path.write_text("\n".join(docs + docs[::7]) + "\n", encoding="utf-8")
    return path


@pytestmark_data
def test_a_corpus_file_takes_the_held_out_file_from_the_data_folder(tmp_path):
    from miniroberta.study.heldout import resolve_heldout
    f = _user_corpus(tmp_path / "mine.txt", 50)
    h = resolve_heldout("c3_documents.txt", str(f), [str(f)], data_root=DATA)
    assert h.kind == "file" and h.file == str(DATA / "corpus" / "c3_documents.txt")
    with pytest.raises(FileNotFoundError, match="data.heldout"):
        resolve_heldout(str(tmp_path / "no" / "such.txt"), str(f), [str(f)], data_root=DATA)   # a typo'd path
    assert resolve_heldout("", str(f), [str(f)]).kind == "none"
    # the held-out file is the whole corpus: a slice of it is set aside instead
    assert resolve_heldout(str(f), str(f), [str(f)], data_root=None).kind == "slice"


@pytestmark_data
def test_a_held_out_slice_is_deterministic_and_never_trained_on(tmp_path):
    from miniroberta.study.heldout import held_out, resolve_heldout, split_heldout
    f = _user_corpus(tmp_path / "mine.txt")
    h = resolve_heldout("c3_documents.txt", str(f), [str(f)], data_root=None)
    assert h.kind == "slice" and "never trained on" in h.why
    a = split_heldout([str(f)], str(tmp_path / "a"), max_bytes=None)
    b = split_heldout([str(f)], str(tmp_path / "b"), max_bytes=None)
    held = Path(a["heldout"]).read_text(encoding="utf-8").splitlines()
    train = Path(a["train_files"][0]).read_text(encoding="utf-8").splitlines()
    assert held == Path(b["heldout"]).read_text(encoding="utf-8").splitlines() and held     # deterministic
    assert not set(held) & set(train)                       # the copies of a held-out document are held out too
    docs = [d for d in f.read_text(encoding="utf-8").splitlines() if d.strip()]
    assert len(train) + a["set_aside"] == len(docs) and 0.02 < a["set_aside"] / len(docs) < 0.09
    assert all(held_out(d.encode()) for d in held) and not any(held_out(d.encode()) for d in train)
    # max_bytes cuts the training copy (whole lines), not the held-out text
    c = split_heldout([str(f)], str(tmp_path / "c"), max_bytes=20_000)
    assert c["train_bytes"] <= 20_000 < c["train_bytes"] + 20_000 and c["train_lines"] < a["train_lines"]
    assert c["heldout_bytes"] == a["heldout_bytes"]


@pytestmark_data
def test_a_study_on_a_corpus_file_without_a_held_out_file_sets_a_slice_aside(tmp_path, capfd):
    """The first steps of a study on the user's corpus whose data.heldout exists nowhere: the slice step, said in
    the log, events.jsonl and the manifest; the held-out dataset is built from the slice; training reads the
    rest."""
    from miniroberta.study.pipeline import Study
    from miniroberta.study.recipe import load_recipe
    f = _user_corpus(tmp_path / "mine.txt", 600)
    r = load_recipe("cpu-smoke", overrides=[f"data.corpus={json.dumps(str(f))}", 'data.heldout="mine_heldout.txt"',
                                            f"data.vocab={json.dumps(str(DATA / 'vocab' / 'google_zh_vocab.txt'))}",
                                            f"data.data_dir={json.dumps(str(DATA / 'tasks'))}"])
    st = Study(r, str(tmp_path / "out"), progress=False)
    assert st.held.kind == "slice"
    st.announce()
    res = st.heldout_split()
    ds = st.heldout()
    err = capfd.readouterr().err
    assert "a held-out slice of the corpus is set aside" in err and "heldout-slice:" in err
    m = _manifest(tmp_path / "out", "heldout-slice")
    assert m["status"] == "done" and m["result"]["heldout"] == res["heldout"] == ds["file"]
    assert st.corpus_files == res["train_files"] and str(f) not in st.corpus_files
    ev = [e for e in _events(tmp_path / "out", study=True) if e["action"] == "heldout"]
    assert ev and ev[0]["kind"] == "slice"
    assert ds["num_instances"] > 0


@pytestmark_data
def test_reproduce_with_a_corpus_file_and_every_preset_plans(tmp_path):
    """`reproduce --preset cpu-smoke --corpus FILE` used to exit 2 (data.heldout 'c3_documents.txt': no such
    file); every preset now plans with the data folder's held-out file."""
    f = _user_corpus(tmp_path / "mine.txt", 200)
    for preset in ("cpu-smoke", "cpu-hour"):
        r = subprocess.run([sys.executable, "-m", "miniroberta.cli", "reproduce", "--preset", preset, "--corpus", str(f),
                            "--tasks", "chnsenticorp", "--models", "tiny", "--out", str(tmp_path / "o"), "--dry_run",
                            "--calibration_steps", "1"], cwd=REPO, env=_env(), capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        assert "held-out text: held-out file" in r.stdout and "c3_documents.txt" in r.stdout
    assert not (tmp_path / "o").exists()


def test_loss_panels_share_sensible_y_limits(tmp_path):
    """Stage 2 wobbling by 0.1 around 6.3 used to be autoscaled into swings: every panel shares one y-range,
    at least MIN_LOSS_SPAN wide."""
    import matplotlib
    matplotlib.use("Agg")
    from miniroberta.study.curves import MIN_LOSS_SPAN, loss_ylim, plot_loss_curves
    lo, hi = loss_ylim([6.30, 6.35, 6.28, 6.41])
    assert hi - lo >= MIN_LOSS_SPAN and lo < 6.28 and hi > 6.41
    lo, hi = loss_ylim([9.9, 7.0, 6.3, float("nan")])
    assert lo < 6.3 < 9.9 < hi and hi - lo < 4.5
    m1, m2 = tmp_path / "s1.jsonl", tmp_path / "s2.jsonl"
    m1.write_text("\n".join(json.dumps({"event": "report", "step": s, "loss": 10 - s / 25}) for s in range(10, 101, 10)))
    m2.write_text("\n".join(json.dumps({"event": "report", "step": s, "loss": 6.3 + 0.05 * (-1) ** s})
                            for s in range(1, 11)))
    import matplotlib.pyplot as plt
    saved = {}
    real = plt.close
    plt.close = lambda fig=None: saved.setdefault("fig", fig)     # keep the figure to look at it
    try:
        plot_loss_curves({"L2_H128": {"stage1": str(m1), "stage2": str(m2)}}, str(tmp_path / "p.png"))
    finally:
        plt.close = real
    a1, a2 = saved["fig"].axes
    assert a1.get_ylim() == a2.get_ylim() and a1.get_ylim()[0] < 6.25 and a1.get_ylim()[1] > 9.6
    real(saved["fig"])
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
