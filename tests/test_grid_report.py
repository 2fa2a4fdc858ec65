"""Grid (resume, seeds -> mean ± std, setup mismatch) and the score table (layout, partial
scores, reference rows, CSV/JSON, plot)."""
from __future__ import annotations

import csv
import io
import json
import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _ft_data as D  # noqa: E402

from miniroberta import cli  # noqa: E402
from miniroberta.finetune.config import GridConfig  # noqa: E402
from miniroberta.finetune.grid import cell_path, run_grid, Cell  # noqa: E402
from miniroberta.finetune.report import REFERENCE_SCORES, TASK_COLUMNS, build_report  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def grid_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid")
    vocab = D.write_vocab(root / "vocab.txt")
    model = D.tiny_model(root / "tiny.safetensors", len(vocab.read_text(encoding="utf-8").split()), hidden=64)
    data = root / "data"
    D.write_single(data / "chnsenticorp", n_train=48, n_dev=16)   # a generated task under a preset's name
    return dict(root=root, vocab=str(vocab), model=str(model), data=str(data))


def _grid(env, out, **kw):
    args = dict(epochs_num_list=(1,), batch_size_list=(16,), learning_rate_list=(1e-3, 3e-3), seeds=(1, 2),
                vocab_path=env["vocab"], seq_length=16, progress=False, cache_dir=str(env["root"] / "cache"),
                threads=1)
    args.update(kw)
    return run_grid(GridConfig(pretrained_model_path=env["model"], tasks="chnsenticorp", data_dir=env["data"],
                               out_dir=str(out), **args))


def test_grid_runs_cells_then_resumes_without_rerunning(grid_env):
    out = grid_env["root"] / "g1"
    s1 = _grid(grid_env, out)
    assert s1["cells_run"] == 4 and s1["cells_skipped"] == 0
    t = s1["tasks"]["chnsenticorp"]
    assert {r["setting"] for r in t["settings"]} == {"e1_b16_lr0.001", "e1_b16_lr0.003"}
    # mean ± std over the two seeds, recomputed from the cell files
    for r in t["settings"]:
        accs = [json.loads(Path(cell_path(str(out), Cell("chnsenticorp", 1, 16, r["lr"], s))).read_text())
                ["best_dev_acc"] for s in (1, 2)]
        assert r["best_dev_acc_mean"] == pytest.approx(statistics.fmean(accs))
        assert r["best_dev_acc_std"] == pytest.approx(statistics.stdev(accs))
        assert r["n_seeds"] == 2 and "last_dev_acc_mean" in r
    assert t["best"]["best_dev_acc_mean"] == max(r["best_dev_acc_mean"] for r in t["settings"])
    assert "best_by_last_epoch" in t
    assert s1["model"]["num_parameters"] > 0
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "cells").rglob("*.json")}
    # a re-run skips every finished cell
    s2 = _grid(grid_env, out)
    assert s2["cells_run"] == 0 and s2["cells_skipped"] == 4
    assert {p: p.stat().st_mtime_ns for p in (out / "cells").rglob("*.json")} == mtimes
    assert s2["tasks"] == s1["tasks"]
    # an interrupted grid (one cell missing) resumes with just that cell
    victim = Path(cell_path(str(out), Cell("chnsenticorp", 1, 16, 3e-3, 2)))
    victim.unlink()
    s3 = _grid(grid_env, out)
    assert s3["cells_run"] == 1 and s3["cells_skipped"] == 3 and victim.is_file()
    assert json.loads(victim.read_text())["best_dev_acc"] == pytest.approx(
        next(r for r in s1["tasks"]["chnsenticorp"]["settings"] if r["lr"] == 3e-3)["per_seed"][1]["best_dev_acc"])
    # extending a list only runs the new cells
    s4 = _grid(grid_env, out, learning_rate_list=(1e-3, 3e-3, 1e-2), seeds=(1,))
    assert s4["cells_run"] == 1 and s4["cells_skipped"] == 2


def test_grid_refuses_a_different_setup_in_the_same_dir(grid_env):
    out = grid_env["root"] / "g2"
    _grid(grid_env, out, learning_rate_list=(1e-3,), seeds=(1,))
    with pytest.raises(ValueError, match="different setup"):
        _grid(grid_env, out, learning_rate_list=(1e-3,), seeds=(1,), seq_length=24)


def test_grid_refuses_finished_cells_when_the_task_data_changed(grid_env, tmp_path):
    import shutil
    data = tmp_path / "data"
    shutil.copytree(grid_env["data"], data)
    out = tmp_path / "g_data"
    env = {**grid_env, "data": str(data)}
    _grid(env, out, learning_rate_list=(1e-3,), seeds=(1,))
    assert _grid(env, out, learning_rate_list=(1e-3,), seeds=(1,))["cells_skipped"] == 1
    dev = data / "chnsenticorp" / "dev.tsv"
    lines = dev.read_text(encoding="utf-8").splitlines(keepends=True)
    dev.write_text("".join(lines[:-1]), encoding="utf-8")          # one dev row fewer
    with pytest.raises(ValueError, match="chnsenticorp train/dev files"):
        _grid(env, out, learning_rate_list=(1e-3,), seeds=(1,))


def test_grid_cli_with_parallel_jobs(grid_env, capsys):
    out = grid_env["root"] / "g3"
    rc = cli.main(["grid", "--pretrained_model_path", grid_env["model"], "--tasks", "chnsenticorp",
                   "--data_dir", grid_env["data"], "--out", str(out), "--epochs_num_list", "1",
                   "--batch_size_list", "16", "--learning_rate_list", "1e-3,3e-3", "--seeds", "1",
                   "--jobs", "2", "--threads", "1", "--vocab_path", grid_env["vocab"], "--seq_length", "16",
                   "--max_train_examples", "32", "--no_progress", "--cache_dir", str(grid_env["root"] / "cache")])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["cells_run"] == 2 and "chnsenticorp" in printed["best"]
    cells = sorted((out / "cells" / "chnsenticorp").glob("*.json"))
    assert [c.name for c in cells] == ["e1_b16_lr0.001_s1.json", "e1_b16_lr0.003_s1.json"]
    c = json.loads(cells[0].read_text())
    assert c["n_train"] == 32 and c["subsampled"] and c["max_train_examples"] == 32
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tasks"]["chnsenticorp"]["subsampled"] is True
    # each worker ran on its own slice of the cores, with as many threads as its slice has cores (--threads 1)
    from miniroberta.engine.threads import available_cores
    policies = [json.loads(p.read_text())["thread_policy"] for p in cells]
    assert all(pol["threads"] == 1 for pol in policies)
    if len(available_cores()) >= 2:
        assert not set(policies[0]["affinity"]) & set(policies[1]["affinity"]), policies


# ------------------------------------------------------------------------ report
def _summary(tmp: Path, name: str, accs: dict[str, float], params: int, seeds: int = 1) -> Path:
    d = tmp / name
    d.mkdir()
    tasks = {}
    for t, a in accs.items():
        row = dict(setting="e3_b32_lr0.0001", epochs=3, batch=32, lr=1e-4, n_seeds=seeds, best_dev_acc_mean=a,
                   best_dev_acc_std=0.01 if seeds > 1 else 0.0, last_dev_acc_mean=a - 0.01, last_dev_acc_std=0.0,
                   macro_f1_mean=a - 0.02, macro_f1_std=0.0)
        last = dict(row, setting="e8_b64_lr3e-05", best_dev_acc_mean=a - 0.05, last_dev_acc_mean=a - 0.005)
        tasks[t] = dict(best=row, best_by_last_epoch=last, settings=[row, last],
                        note="partial train" if t == "iflytek" else "", subsampled=False)
    s = dict(kind="miniroberta-grid", out_dir=str(d), tasks=tasks,
             model=dict(name=name, num_parameters=params, pretrained_model_path=f"/models/{name}.safetensors"))
    (d / "summary.json").write_text(json.dumps(s))
    return d


def test_report_layout_scores_partial_and_reference(tmp_path):
    full = dict(book_review=0.85, chnsenticorp=0.92, lcqmc=0.83, tnews=0.60, iflytek=0.50, ocnli=0.62)
    a = _summary(tmp_path, "small_full", full, 3_000_000, seeds=3)
    b = _summary(tmp_path, "big_partial", dict(book_review=0.88, tnews=0.65), 30_000_000)
    rep = build_report([str(a), str(b)], out_dir=str(tmp_path / "rep"), reference=True, model_names=["A", "B"])
    md = rep["markdown"]
    assert md.splitlines()[0] == "| Model | Score | book_review | chnsenticorp | lcqmc | tnews | iflytek | ocnli |"
    mean = 100 * sum(full.values()) / 6
    row_a = next(l for l in md.splitlines() if l.startswith("| A |"))
    assert f"| {mean:.1f} |" in row_a and "85.0 ± 1.0" in row_a and "50.0 ± 1.0‡" in row_a
    row_b = next(l for l in md.splitlines() if l.startswith("| B |"))
    assert f"({100 * (0.88 + 0.65) / 2:.1f})" in row_b and row_b.count("–") == 4
    assert "partial" in md and "partial train" in md
    for name, r in REFERENCE_SCORES.items():
        assert f"| UER {name} [reference] | {r['score']:.1f} |" in md
    rows = list(csv.DictReader(io.StringIO((tmp_path / "rep" / "report.csv").read_text(encoding="utf-8"))))
    assert rows[0]["Model"] == "A" and float(rows[0]["Score"]) == pytest.approx(mean, abs=0.01)
    assert rows[1]["Score"] == "" and float(rows[1]["score_partial"]) == pytest.approx(76.5)
    assert rows[1]["lcqmc"] == "" and rows[1]["n_tasks"] == "2"
    js = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert js["columns"] == ["Model", "Score", *TASK_COLUMNS] and js["rows"][1]["score"] is None
    assert (tmp_path / "rep" / "score_vs_size.png").read_bytes()[:4] == b"\x89PNG"
    # the reference Score column equals the mean of its six tasks (to rounding)
    for r in REFERENCE_SCORES.values():
        assert sum(r[t] for t in TASK_COLUMNS) / 6 == pytest.approx(r["score"], abs=0.06)


def test_report_last_epoch_metric_and_cli_formats(tmp_path, capsys):
    a = _summary(tmp_path, "m", dict(book_review=0.80), 1_000_000)
    rep = build_report([str(a)], reference=False, metric="last")
    assert rep["rows"][0]["scores"]["book_review"] == pytest.approx(100 * (0.80 - 0.005))
    assert rep["rows"][0]["details"]["book_review"]["setting"] == "e8_b64_lr3e-05"
    assert len(rep["rows"]) == 1 and "paths" in rep and not rep["paths"]
    assert cli.main(["report", str(a), "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("Model,Score,book_review") and len(out.splitlines()) == 2
    assert cli.main(["report", str(a), "--format", "json", "--reference"]) == 0
    js = json.loads(capsys.readouterr().out)
    assert len(js["rows"]) == 1 + len(REFERENCE_SCORES)
    with pytest.raises(ValueError, match="names"):
        build_report([str(a)], model_names=["x", "y"])


def test_a_diverged_cell_is_recorded_and_left_out(grid_env, monkeypatch):
    """Divergence is told by the engine's exception type (DivergedError), not by its message; any other
    training error (here one that even mentions a NaN) stops the grid."""
    import miniroberta.finetune.grid as grid
    from miniroberta.engine.trainer import DivergedError, TrainingError
    real = grid.run_finetune

    def fake(cfg):
        if cfg.learning_rate > 2e-3:
            raise DivergedError("loss became nan at epoch 1 step 2; lower --learning_rate")
        if cfg.learning_rate < 1e-4:
            raise TrainingError("any other error stops the grid, even one that says the loss became nan")
        return real(cfg)

    monkeypatch.setattr(grid, "run_finetune", fake)
    out = grid_env["root"] / "g4"
    s = _grid(grid_env, out, seeds=(1,))
    assert s["cells_run"] == 2
    assert [f["setting"] for f in s["failed_cells"]] == ["e1_b16_lr0.003"]
    assert [r["setting"] for r in s["tasks"]["chnsenticorp"]["settings"]] == ["e1_b16_lr0.001"]
    bad = json.loads(Path(cell_path(str(out), Cell("chnsenticorp", 1, 16, 3e-3, 1))).read_text())
    assert "loss became nan" in bad["failed"]
    assert _grid(grid_env, out, seeds=(1,))["cells_run"] == 0       # a failed cell is finished too
    with pytest.raises(RuntimeError, match="stops the grid"):
        _grid(grid_env, out, seeds=(1,), learning_rate_list=(1e-3, 3e-3, 1e-5))
    assert not Path(cell_path(str(out), Cell("chnsenticorp", 1, 16, 1e-5, 1))).exists()


def test_grid_baseline_arm_runs_the_same_grid_from_random_init_and_report_shows_the_delta(grid_env, tmp_path):
    out = tmp_path / "gb"
    s = _grid(grid_env, out, seeds=(1,), baseline=True)
    b = s["baseline"]
    assert (out / "no-pretraining" / "summary.json").is_file() and b["model"]["pretrained_model_path"] is None
    # same architecture, same cells
    assert b["model"]["name"] == s["model"]["name"] and b["model"]["num_parameters"] == s["model"]["num_parameters"]
    assert [r["setting"] for r in b["tasks"]["chnsenticorp"]["settings"]] == \
        [r["setting"] for r in s["tasks"]["chnsenticorp"]["settings"]]
    want = 100 * (s["tasks"]["chnsenticorp"]["best"]["best_dev_acc_mean"]
                  - b["tasks"]["chnsenticorp"]["best"]["best_dev_acc_mean"])
    assert s["delta"]["chnsenticorp"] == pytest.approx(want)
    # the grid directory alone brings both rows and the delta into the report
    rep = build_report([str(out)], reference=False, model_names=["tiny", "tiny · no pretraining"])
    kinds = [r["kind"] for r in rep["rows"]]
    assert kinds == ["pretrained", "no-pretraining", "delta"]
    d = rep["rows"][2]
    assert d["scores"]["chnsenticorp"] == pytest.approx(want) and d["score"] is None  # one task: partial
    assert "no pretraining" in rep["markdown"] and "Δ tiny − no pretraining" in rep["markdown"]
    # a second run resumes both arms without re-running a cell
    s2 = _grid(grid_env, out, seeds=(1,), baseline=True)
    assert s2["cells_run"] == 0 and s2["baseline"]["cells_run"] == 0


def test_report_delta_row_values_and_plot_styles(tmp_path):
    full = dict(book_review=0.85, chnsenticorp=0.92, lcqmc=0.83, tnews=0.60, iflytek=0.50, ocnli=0.62)
    none = {t: v - 0.05 for t, v in full.items()}
    a = _summary(tmp_path, "pre", full, 3_000_000)
    b = _summary(tmp_path, "none", none, 3_000_000)
    sb = json.loads((b / "summary.json").read_text())
    sb["model"]["pretrained_model_path"] = None
    sb["model"]["name"] = "none"
    sa = json.loads((a / "summary.json").read_text())
    sa["model"]["name"] = sb["model"]["name"] = "L2_H128"
    sa["baseline"] = sb
    (a / "summary.json").write_text(json.dumps(sa))
    rep = build_report([str(a)], out_dir=str(tmp_path / "rep"), reference=True)
    delta = next(r for r in rep["rows"] if r["kind"] == "delta")
    assert delta["score"] == pytest.approx(5.0) and delta["tasks_better"] == 6
    assert delta["margins"] == {} and delta["tasks_within_noise"] == []     # no n_dev in these summaries: no margin
    line = next(l for l in rep["markdown"].splitlines() if "Δ" in l)
    assert "| +5.0 |" in line
    csv_rows = list(csv.DictReader(io.StringIO(rep["csv"])))
    assert [r["kind"] for r in csv_rows[:3]] == ["pretrained", "no-pretraining", "delta"]
    assert (tmp_path / "rep" / "score_vs_size.png").read_bytes()[:4] == b"\x89PNG"


def test_max_train_tokens_subsamples_by_budget_and_marks_it():
    import numpy as np
    from miniroberta.data.tasks import subsample_tokens
    lengths = np.arange(1, 101)
    assert subsample_tokens(lengths, int(lengths.sum())) is None          # everything fits: the whole set
    idx = subsample_tokens(lengths, 1000, seed=0)
    assert idx is not None and lengths[idx].sum() <= 1000 and (np.diff(idx) > 0).all()
    # the cut is the longest prefix of a fixed order: one more example would pass the budget
    order = np.random.RandomState(0).permutation(100)
    assert lengths[order[:len(idx) + 1]].sum() > 1000
    assert np.array_equal(idx, subsample_tokens(lengths, 1000, seed=0))   # deterministic


def test_grid_with_max_train_tokens_records_the_subsample(grid_env, tmp_path):
    s = _grid(grid_env, tmp_path / "gt", seeds=(1,), learning_rate_list=(1e-3,), finetune_overrides={"max_train_tokens": 200})
    t = s["tasks"]["chnsenticorp"]
    assert t["subsampled"] and 0 < t["n_train"] < 48


def test_noise_margin_marks_a_delta_inside_the_dev_sets_sampling_error(tmp_path):
    """Δ cells inside 1.96 x the standard error of a difference of two accuracies on n_dev examples get a °."""
    from miniroberta.finetune.report import noise_margin
    assert noise_margin(89.25, 89.42, 1200) == pytest.approx(196 * ((0.8925 * 0.1075 + 0.8942 * 0.1058) / 1200) ** 0.5)
    assert noise_margin(89.0, 88.0, 0) is None and noise_margin(89.0, 88.0, None) is None
    pre = dict(book_review=0.85, chnsenticorp=0.8925, lcqmc=0.83, tnews=0.60, iflytek=0.50, ocnli=0.62)
    none = dict(pre, chnsenticorp=0.8942, tnews=0.50)
    dirs = []
    for name, accs in (("pre", pre), ("none", none)):
        d = _summary(tmp_path, name, accs, 3_000_000)
        s = json.loads((d / "summary.json").read_text())
        for t in s["tasks"]:
            s["tasks"][t]["n_dev"] = 1200
        s["model"]["name"] = "L2_H128"
        if name == "none":
            s["model"]["pretrained_model_path"] = None
        (d / "summary.json").write_text(json.dumps(s))
        dirs.append(str(d))
    rep = build_report(dirs, reference=False)
    delta = next(r for r in rep["rows"] if r["kind"] == "delta")
    assert delta["tasks_within_noise"] == ["book_review", "chnsenticorp", "iflytek", "lcqmc", "ocnli"]
    line = next(l for l in rep["markdown"].splitlines() if "Δ" in l)
    assert "| -0.2° |" in line and "| +10.0 |" in line      # tnews: 10 points on 1,200 examples is measured
    assert "° = inside the 95 % margin" in rep["markdown"]


def test_score_vs_size_labels_do_not_overlap_and_partial_scores_are_not_drawn(tmp_path):
    """One size, three points (ours, its no-pretraining arm, the UER reference): three labels that do not
    overlap (the two L2_H128† labels used to); a partial mean is left off the six-task axis, and the legend
    says so."""
    from miniroberta.finetune.report import draw_score_vs_size, label_offsets, load_models, reference_rows
    full = dict(book_review=0.70, chnsenticorp=0.75, lcqmc=0.50, tnews=0.13, iflytek=0.127, ocnli=0.387)
    a = _summary(tmp_path, "pre", full, 3_200_000)
    b = _summary(tmp_path, "none", {t: v - 0.004 for t, v in full.items()}, 3_200_000)
    c = _summary(tmp_path, "part", dict(tnews=0.5), 5_000_000)
    for d, name, pre in ((a, "L2_H128", "/m/p"), (b, "L2_H128", None), (c, "L4_H256", "/m/q")):
        s = json.loads((d / "summary.json").read_text())
        s["model"].update(name=name, pretrained_model_path=pre)
        for t in s["tasks"].values():
            t["subsampled"] = True
        (d / "summary.json").write_text(json.dumps(s))
    rows = load_models([str(a), str(b), str(c)]) + reference_rows()
    fig = draw_score_vs_size(rows)
    ax = fig.axes[0]
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    texts = [t for t in ax.texts]
    assert sorted(t.get_text() for t in texts).count("L2_H128†") == 2
    boxes = [t.get_window_extent(r) for t in texts]
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            assert not boxes[i].overlaps(boxes[j]), (texts[i].get_text(), texts[j].get_text())
    labels = ax.get_legend_handles_labels()[1]
    assert any(lab.startswith("not drawn: 1 partial score") for lab in labels)
    assert [t.get_text() for t in texts].count("L4_H256") == 1     # the reference Mini only, not the partial row
    import matplotlib.pyplot as plt
    plt.close(fig)
    assert label_offsets([(1.0, 5.0)]) == [(4.0, 4.0, "bottom")]
    assert [o[2] for o in label_offsets([(1.0, 5.0), (1.0, 7.0), (1.0, 6.0)])] == ["top", "bottom", "center"]
