"""``reproduce --dry_run``: every step of a study with its estimated wall time, from short measured runs
scaled by FLOPs.

Writes nothing outside one temp folder, removed at the end (also on SIGTERM, see ``utils.terminate_as_exit``):
a 200 kB preprocess slice and in-memory training-step timings of two models (the recipe's smallest and a larger
one, :func:`calibrate_steps`) at the study's precision; every pretraining stage and grid cell is then
``steps x (overhead + FLOPs / measured rate)`` with the FLOPs of ``modeling.bert.flops_per_token``. Seconds on
any preset, even 24 models. Durations print as ``h:mm:ss`` or, past a day, ``N d hh:mm``; a plan of more than
:data:`PLAUSIBLE_DAYS` days here is said to be meant for other hardware.
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from typing import Any, Callable

import numpy as np
import torch

from miniroberta.data import preprocess as pre_mod
from miniroberta.data import tasks as task_data
from miniroberta.engine.device import resolve_device
from miniroberta.engine.optim import OptimConfig, build_adamw, param_groups
from miniroberta.engine.precision import Precision
from miniroberta.modeling.bert import BertForMaskedLM, BertForSequenceClassification, flops_per_token
from miniroberta.modeling.config import ModelConfig, preset
from miniroberta.modeling.tokenizer import BertTokenizer, read_vocab
from miniroberta.study.heldout import HELDOUT_BYTES, resolve_heldout
from miniroberta.study.paths import corpus_files
from miniroberta.study.recipe import STAGES, data_parallel_plan, stage_datasets, study_precision
from miniroberta.study.steps import dist_env, read_manifest

PLAUSIBLE_DAYS = 30     # a plan longer than this on this machine is meant for other hardware


def format_eta(seconds: float) -> str:
    """``m:ss`` under an hour, ``h:mm:ss`` under a day, ``N d hh:mm`` under 1,000 days, else ``~N years``."""
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return "?"
    s = int(round(max(0.0, seconds)))
    days, rem = divmod(s, 86400)
    h, rem = divmod(rem, 3600)
    m, sec = divmod(rem, 60)
    if days >= 1000:
        return f"~{days / 365.25:,.0f} years"
    if days:
        return f"{days:,} d {h:02d}:{m:02d}"
    return f"{h:d}:{m:02d}:{sec:02d}" if h else f"{m:d}:{sec:02d}"


def plausibility(total_s: float, device: str) -> str | None:
    """A warning when the plan cannot be what the user meant to run here (None when it is plausible)."""
    if not math.isfinite(total_s) or total_s <= 0:
        return "the estimate is not a positive finite time; the calibration failed -- re-run the dry run"
    if total_s > PLAUSIBLE_DAYS * 86400:
        return (f"this plan would take {format_eta(total_s)} on this {device}: the recipe is sized for other "
                f"hardware (the reference: 8 GPUs for weeks). Choose a preset sized for this machine "
                f"(--preset cpu-smoke, cpu-hour or gpu-day), fewer --models, or fewer steps with --set")
    return None


def train_flops(cfg: ModelConfig, seq: int, batch: int, mlm: bool = True, mask_rate: float = 0.15) -> float:
    """FLOPs of one training step of ``batch`` sequences of ``seq`` tokens (``modeling.bert.flops_per_token``:
    forward + backward, the MLM head on the masked positions only, or no head for a classifier)."""
    return float(batch * seq) * flops_per_token(cfg, seq, mask_rate if mlm else 0.0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_train_step(model: str, vocab_size: int, seq: int, micro: int, steps: int, device: torch.device,
                    mlm: bool = True, precision: str = "fp32") -> dict[str, Any]:
    """Measured seconds of one optimizer step (forward, backward, the engine's AdamW) of ``model`` on random
    ids at ``precision``, in memory only (nothing is written): the fastest of ``steps`` after a warm-up."""
    cfg = preset(model, vocab_size=vocab_size, num_labels=3)
    m = (BertForMaskedLM(cfg) if mlm else BertForSequenceClassification(cfg)).to(device).train()
    prec = Precision(precision, m)
    opt = build_adamw(param_groups(prec.named_master(), 0.01), OptimConfig(learning_rate=1e-4))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, vocab_size, (micro, seq), generator=g).to(device)
    if mlm:
        pos = torch.randperm(micro * seq, generator=g)[: max(1, int(0.15 * micro * seq))].to(device)
        kw = dict(masked_positions=pos, labels=ids.reshape(-1).index_select(0, pos))
    else:
        kw = dict(labels=torch.randint(0, 3, (micro,), generator=g).to(device))

    def one() -> float:
        _sync(device)
        t0 = time.perf_counter()
        m(ids, **kw).loss.float().backward()
        prec.grads_to_master()
        opt.step()
        prec.master_to_model()
        prec.zero_grad()
        _sync(device)
        return time.perf_counter() - t0

    one()  # warm-up
    per = min(one() for _ in range(max(1, steps)))   # the least disturbed step (the machine may be shared)
    out = {"model": model, "s_per_micro": per, "micro": micro, "seq": seq,
           "flops": train_flops(cfg, seq, micro, mlm=mlm)}
    return out


class StepModel:
    """Step time as ``overhead + flops / rate``, fitted to two measured steps (a small and a larger
    model); with one point, time proportional to FLOPs."""

    def __init__(self, points: list[dict[str, Any]]) -> None:
        pts = sorted(points, key=lambda p: p["flops"])
        lo, hi = pts[0], pts[-1]
        self.rate = hi["flops"] / max(hi["s_per_micro"], 1e-9)
        self.overhead = 0.0
        if hi["flops"] > 1.5 * lo["flops"] and hi["s_per_micro"] > lo["s_per_micro"]:
            rate = (hi["flops"] - lo["flops"]) / (hi["s_per_micro"] - lo["s_per_micro"])
            overhead = lo["s_per_micro"] - lo["flops"] / rate
            if rate > 0 and overhead >= 0:
                self.rate, self.overhead = rate, overhead
        self.points = pts

    def seconds(self, flops: float, micro_steps: int = 1) -> float:
        return micro_steps * self.overhead + flops / self.rate

    def describe(self) -> str:
        pts = ", ".join(f"{p['model']} {p['s_per_micro']:.3g} s at {p['micro']} x {p['seq']}" for p in self.points)
        return f"{self.rate / 1e9:.1f} GFLOP/s + {1000 * self.overhead:.0f} ms/micro-step, from measured steps ({pts})"


def calibrate_steps(models: list[str], vocab_size: int, steps: int, device: torch.device, mlm: bool = True,
                    seq: int = 128, micro: int = 4, precision: str = "fp32") -> StepModel:
    """Measure the smallest model of the plan and a larger one (the largest, capped at L4_H512 so that
    the calibration stays a few seconds on a CPU) -- or, for a one-model plan, that model at two batch
    sizes -- then fit ``StepModel``."""
    def flops(m: str) -> float:
        return train_flops(preset(m, vocab_size=vocab_size), seq, micro, mlm)

    by_flops = sorted(set(models), key=flops)
    cap = flops("L4_H512")
    big = [m for m in by_flops if flops(m) <= cap]
    chosen = [(by_flops[0], micro)] + ([(big[-1], micro)] if big and big[-1] != by_flops[0] else
                                       [("L4_H512", micro)] if by_flops[-1] != by_flops[0] else
                                       [(by_flops[0], 4 * micro)])     # one model: two batch sizes
    return StepModel([time_train_step(m, vocab_size, seq, b, steps, device, mlm=mlm, precision=precision)
                      for m, b in chosen])


def time_preprocess(corpus: list[str], vocab: str, workdir: str, sample_bytes: int = 200_000) -> dict[str, Any]:
    """Bytes per second of ``build_dataset`` on the first ``sample_bytes`` of the corpus, built under
    ``workdir`` (a temp folder the caller removes)."""
    path = os.path.join(workdir, "calibration-dataset")
    t0 = time.perf_counter()
    m = pre_mod.build_dataset(corpus if len(corpus) > 1 else corpus[0], vocab, path, seq_length=128,
                              max_bytes=sample_bytes, overwrite=True, progress=False)
    dt = time.perf_counter() - t0
    used = int((m.get("corpus") or {}).get("bytes") or sample_bytes)
    return {"bytes_per_s": used / max(dt, 1e-6), "how": "build_dataset on a slice"}


def task_stats(data_dir: str, task: str, tokenizer: BertTokenizer, seq: int, sample: int = 512) -> dict[str, Any]:
    """Example counts of a task's train/dev files (as fine-tuning reads them) and the token lengths of
    up to ``sample`` examples of each (fine-tuning pads each batch to its longest example)."""
    tf = task_data.resolve_task(task, data_dir)
    out: dict[str, Any] = {}
    for split, path in (("train", tf.train_path), ("dev", tf.dev_path)):
        data = task_data.read_examples(path, tf.text_fields, tf.label_field, drop_labels=tf.drop_labels)
        idx = np.random.default_rng(0).permutation(len(data))[:sample]
        enc = task_data.encode_data(tokenizer, data.subset(sorted(int(i) for i in idx)), seq)
        out[split] = len(data)
        out[f"{split}_lengths"] = enc.lengths()
    return out


def _mean_batch_max(lengths: Any, batch: int, trials: int = 200) -> float:
    rng = np.random.default_rng(0)
    lengths = np.asarray(lengths)
    if len(lengths) == 0:
        return 0.0
    return float(np.mean([lengths[rng.integers(0, len(lengths), batch)].max() for _ in range(trials)]))


# ------------------------------------------------------------------ the plan
class _Plan:
    """What every row of the plan reads: the recipe, the device, the measured rates, the task statistics."""

    def __init__(self, recipe: dict[str, Any], out: str, work: str, calibration_steps: int,
                 max_tokens: int | None) -> None:
        self.recipe, self.work = recipe, work
        self.steps_dir = os.path.join(os.path.abspath(out), "steps")
        self.device = resolve_device("auto")
        self.precision, self.precision_reason = study_precision(recipe, self.device)
        self.max_tokens = max_tokens or (16384 if self.device.type == "cuda" else 2048)
        d = recipe["data"]
        corpus = os.path.abspath(d["corpus"])
        self.files = corpus_files(corpus)
        self.held = resolve_heldout(d["heldout"], corpus, self.files)
        if self.held.kind == "file":
            held = self.held.file_path()
            self.files = [f for f in self.files if os.path.realpath(f) != os.path.realpath(held)]
        self.vocab = os.path.abspath(d["vocab"])
        self.V = len(read_vocab(self.vocab))
        total = sum(os.path.getsize(f) for f in self.files)
        self.slice_bytes = min(total, d["max_bytes"] or total)
        self.models = list(recipe["models"])
        _, self.launched = dist_env()
        t0 = time.perf_counter()
        # timed at a micro-batch the stages will run (a GPU is overhead-bound at 4 sequences: the rate measured
        # there understated an H200 several times); the training steps first: the tokenizer's worker threads
        # stay busy for a while after preprocessing
        micro = 4 if self.device.type == "cpu" else self.max_tokens // 128
        self.pre = calibrate_steps(self.models, self.V, calibration_steps, self.device, mlm=True, micro=micro,
                                   precision=self.precision)
        self.ft = calibrate_steps(self.models, self.V, calibration_steps, self.device, mlm=False, micro=micro,
                                  precision=self.precision)
        self.prep = time_preprocess(self.files, self.vocab, work, sample_bytes=min(200_000, self.slice_bytes))
        g = recipe["grid"]
        tok = BertTokenizer(self.vocab)
        self.stats = {t: task_stats(os.path.abspath(d["data_dir"]), t, tok, g["seq_length"]) for t in g["tasks"]}
        self.calibration_s = time.perf_counter() - t0

    def state(self, step_id: str) -> str:
        m = read_manifest(self.steps_dir, step_id)
        return "" if m is None else ("cached" if m.get("status") == "done" else "interrupted: resumes")

    def row(self, step: str, what: str, estimate_s: float, calibration: str, state: bool = True) -> dict[str, Any]:
        return {"step": step, "what": what, "estimate_s": estimate_s, "calibration": calibration,
                "state": self.state(step) if state else ""}


def _data_rows(p: _Plan) -> list[dict[str, Any]]:
    d, g = p.recipe["data"], p.recipe["grid"]
    rows = []
    if p.held.kind == "slice":
        rows.append(p.row("heldout-slice", f"set aside 1 document in 20 of {len(p.files)} file(s)",
                          1.0 + (p.slice_bytes + 20 * HELDOUT_BYTES) / 50e6, "fixed: ~50 MB/s of reading and writing"))
    if d["decontaminate"]:
        rows.append(p.row("decontaminate", f"{p.slice_bytes / 1e6:.1f} MB against the dev/test texts of "
                                           f"{len(g['tasks'])} task(s)", 5.0 + p.slice_bytes / 3e6,
                          "fixed: ~5 s for the spans of six tasks + ~3 MB/s of corpus (measured on a 2-core EPYC)"))
    sources = stage_datasets(p.recipe)
    slice_bytes, n_files, tt_bytes = p.slice_bytes, len(p.files), 0
    if d["task_text"] or any(src == "task_text" for src, _ in sources):   # written for real: its exact bytes
        t0 = time.perf_counter()
        tt = task_data.write_train_texts(g["tasks"], os.path.join(p.work, "task_train_texts.txt"),
                                         os.path.abspath(d["data_dir"]), max_examples=g["max_train_examples"] or None)
        took = time.perf_counter() - t0
        rows.append(p.row("task-text", f"{tt['lines']:,} train texts ({tt['bytes'] / 1e6:.1f} MB) of "
                                       f"{len(g['tasks'])} task(s), decontaminated", took + 5.0 + tt["bytes"] / 3e6,
                          f"measured: {took:.1f} s to read and write them; + ~5 s for the dev/test spans and "
                          f"~3 MB/s of matching"))
        tt_bytes = tt["bytes"]
        if d["task_text"]:
            slice_bytes += tt_bytes
            n_files += 1
    procs = max(1, min(p.recipe["preprocess"]["processes_num"], os.cpu_count() or 1))
    for src, seq in sources:
        size, step = (slice_bytes, f"preprocess-seq{seq}") if src == "corpus" else (tt_bytes, f"preprocess-{src}-seq{seq}")
        what = f"{size / 1e6:.1f} MB of " + (f"{n_files} file(s)" if src == "corpus" else "the task texts, packed")
        # workers scale sub-linearly and never past the cores there are
        rows.append(p.row(step, what, size / p.prep["bytes_per_s"] / procs ** 0.8,
                          f"{p.prep['bytes_per_s'] / 1e6:.2f} MB/s ({p.prep['how']})"))
    return rows


def _pretrain_rows(p: _Plan, m: str) -> list[dict[str, Any]]:
    cfg = preset(m, vocab_size=p.V)
    rows = []
    for stage in STAGES:
        s = p.recipe[stage]
        if not s["total_steps"]:
            rows.append(p.row(f"pretrain-{m}-{stage}", "skipped (total_steps = 0)", 0.0, "", state=False))
            continue
        procs, accum = data_parallel_plan(s["world_size"], p.launched, f"{stage}.world_size") \
            if s["world_size"] % p.launched == 0 else (p.launched, 1)
        per_proc = s["batch_size"] * accum
        micro = max(1, min(per_proc, p.max_tokens // s["seq_length"]))
        s_per_step = p.pre.seconds(train_flops(cfg, s["seq_length"], per_proc, mask_rate=s["mask_rate"]),
                                   math.ceil(per_proc / micro))
        est = s["total_steps"] * s_per_step
        note = (f"{s_per_step:.3g} s/step (batch {per_proc} x seq {s['seq_length']}"
                + (f", {s['world_size']} data-parallel as {procs} process(es) x {accum} accumulation"
                   if s["world_size"] > 1 else "") + "; scaled by FLOPs from the measured MLM steps)")
        budget = s["time_budget_s"]
        if budget and est > budget:
            note += f"; capped by time_budget_s ({s['total_steps'] * budget / est:.0f} of {s['total_steps']} steps)"
            est = budget
        rows.append(p.row(f"pretrain-{m}-{stage}", f"{s['total_steps']:,} steps", est, note))
    params = cfg.num_parameters()
    rows.append(p.row(f"export-{m}", "HF export + parity check", 2.0 + params * 4 / 100e6,
                      "fixed: ~2 s + writing the weights at ~100 MB/s"))
    return rows


def _grid_seconds(p: _Plan, ccfg: ModelConfig, st: dict[str, Any], batch_max: dict, task: str) -> tuple[float, int]:
    """(seconds, cells) of one task of a model's grid."""
    g, T = p.recipe["grid"], p.recipe["grid"]["seq_length"]
    n_train = min(st["train"], g["max_train_examples"] or st["train"])
    if g["max_train_tokens"]:
        n_train = min(n_train, int(g["max_train_tokens"] / max(1.0, float(st["train_lengths"].mean()))))
    n_dev = min(st["dev"], g["max_dev_examples"] or st["dev"])
    dev_len = float(st["dev_lengths"].mean()) if len(st["dev_lengths"]) else T
    bmax = max(g["batch_size"])
    total, cells = 0.0, 0
    runs = len(g["learning_rate"]) * len(g["seeds"])
    for e in g["epochs"]:
        for b in g["batch_size"]:
            steps = e * math.ceil(n_train / b) * runs
            if (task, b) not in batch_max:      # a batch is padded to its longest example
                batch_max[(task, b)] = max(1, int(round(_mean_batch_max(st["train_lengths"], b))))
            padded = batch_max[(task, b)]
            micro = max(1, min(b, p.max_tokens // padded))
            total += steps * p.ft.seconds(train_flops(ccfg, padded, b, mlm=False), math.ceil(b / micro))
            # evaluation: forward only, a third of a training step's FLOPs
            total += e * runs * p.ft.seconds(train_flops(ccfg, max(1, int(dev_len)), n_dev, mlm=False) / 3.0,
                                             math.ceil(n_dev / bmax))
            cells += runs
    return total, cells


def _grid_row(p: _Plan, m: str, batch_max: dict) -> dict[str, Any]:
    g = p.recipe["grid"]
    ccfg = preset(m, vocab_size=p.V, num_labels=3)
    total, cells = 0.0, 0
    for t, st in p.stats.items():
        s, c = _grid_seconds(p, ccfg, st, batch_max, t)
        total, cells = total + s, cells + c
    par = min(g["jobs"], max(1, torch.cuda.device_count())) if p.device.type == "cuda" else 1
    arms = 2 if g["baseline"] else 1
    bmax = max(g["batch_size"])
    return p.row(f"grid-{m}", f"{cells * arms} cells on {len(p.stats)} task(s)"
                 + (" (pretrained + no-pretraining arm)" if arms == 2 else ""), arms * total / par,
                 f"{p.ft.seconds(train_flops(ccfg, g['seq_length'], bmax, mlm=False)):.3g} s/step at batch {bmax} "
                 f"x seq {g['seq_length']} (scaled by FLOPs from the measured steps and the tasks' token lengths)"
                 + ("" if par > 1 else "; --jobs gives no speed-up on CPU (cores are shared)" if p.device.type == "cpu"
                    else f"; the {g['jobs']} job(s) share one GPU: counted as one"))


def _distill_rows(p: _Plan) -> list[dict[str, Any]]:
    """Plan rows of the [distill] stage: per task the teacher's fine-tuning run, then one run per student
    plus the teacher's logits over the student's training texts (one forward pass: a third of a step).
    An upper bound: the largest grid epochs at the smallest grid batch (the grid picks the real setting)."""
    g, dd = p.recipe["grid"], p.recipe["distill"]
    e, b = max(g["epochs"]), min(g["batch_size"])
    n_transfer = 0
    if dd["transfer_path"] and os.path.isfile(dd["transfer_path"]):
        with open(dd["transfer_path"], "rb") as f:
            n_transfer = sum(1 for line in f if line.strip())
    rows = []
    for t in [x for x in dd["tasks"] if x in p.stats]:
        st = p.stats[t]
        n_train = min(st["train"], g["max_train_examples"] or st["train"])
        padded = max(1, int(round(_mean_batch_max(st["train_lengths"], b))))
        micro = max(1, min(b, p.max_tokens // padded))

        def run_s(m: str, n: int) -> float:
            step = p.ft.seconds(train_flops(preset(m, vocab_size=p.V, num_labels=3), padded, b, mlm=False),
                                math.ceil(b / micro))
            return e * math.ceil(n / b) * step
        note = f"upper bound: {e} epochs at batch {b} (the grid's largest / smallest; its best setting is used)"
        rows.append(p.row(f"teacher-{dd['teacher']}-{t}", f"fine-tune the teacher on {t}",
                          run_s(dd["teacher"], n_train), note))
        n = n_train + n_transfer
        for m in p.models:
            if m != dd["teacher"]:
                rows.append(p.row(f"distill-{m}-{t}", f"{n:,} texts ({n_transfer:,} unlabeled), teacher logits once",
                                  run_s(m, n) + run_s(dd["teacher"], n) / (3.0 * e), note))
    return rows


def _estimate_plan(recipe: dict[str, Any], out: str, work: str, calibration_steps: int = 3,
                   max_tokens: int | None = None) -> dict[str, Any]:
    """Every step of the study with its estimated wall time (see the module docstring)."""
    p = _Plan(recipe, out, work, calibration_steps, max_tokens)
    rows = _data_rows(p)
    batch_max: dict[tuple[str, int], int] = {}
    for m in p.models:
        rows += _pretrain_rows(p, m)
        rows.append(_grid_row(p, m, batch_max))
    dd = recipe["distill"]
    if dd["enabled"] and dd["teacher"] in p.models and len(p.models) > 1:
        rows += _distill_rows(p)
    rows.append(p.row("report", "tables, score-vs-size and loss plots", 5.0, "fixed"))
    rows += [p.row(f"card-{m}", "model card README.md", 1.0, "fixed") for m in p.models]
    total = sum(r["estimate_s"] for r in rows)
    return {"device": p.device.type, "threads": torch.get_num_threads(), "rows": rows,
            "pretrain_steps": p.pre.describe(), "finetune_steps": p.ft.describe(), "load_average": _load(),
            "cpus": os.cpu_count(), "total_s": total, "remaining_s": sum(r["estimate_s"] for r in rows
                                                                          if r["state"] != "cached"),
            "calibration_s": p.calibration_s, "recipe": recipe.get("description", ""),
            "precision": p.precision, "precision_reason": p.precision_reason, "heldout": p.held.why,
            "warning": plausibility(total, p.device.type),
            "tasks": {t: {"train": st["train"], "dev": st["dev"],
                          "mean_train_tokens": round(float(st["train_lengths"].mean()), 1)}
                      for t, st in p.stats.items()}}


def estimate_plan(recipe: dict[str, Any], out: str, calibration_steps: int = 3,
                  max_tokens: int | None = None) -> dict[str, Any]:
    """See ``_estimate_plan``; this wrapper owns the one temp folder (removed even on SIGTERM) and points
    torch's own cache (``torchinductor_<user>``, made in the system temp folder by the optimizer) into it."""
    prev = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="miniroberta-dryrun-") as work:
        if prev is None:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(work, "torchinductor")
        try:
            return _estimate_plan(recipe, out, work, calibration_steps, max_tokens)
        finally:
            if prev is None:
                os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def print_plan(recipe: dict[str, Any], out: str, calibration_steps: int = 3,
               say: Callable[[str], None] = print) -> dict[str, Any]:
    plan = estimate_plan(recipe, out, calibration_steps)
    w = max(len(r["step"]) for r in plan["rows"])
    say(f"plan for {out} -- {plan['recipe']}")
    say(f"recipe layers: {' <- '.join(recipe.get('sources', []))}; models: {', '.join(recipe['models'])}")
    busy = plan["load_average"] is not None and plan["cpus"] and plan["load_average"] > plan["cpus"]
    say(f"estimates measured on {plan['device']} ({plan['threads']} threads, precision {plan['precision']}: "
        f"{plan['precision_reason']}) in {plan['calibration_s']:.1f} s of calibration; load average "
        f"{plan['load_average']} on {plan['cpus']} CPUs"
        + (" -- the machine is busy, so these times are inflated by the other processes" if busy else ""))
    say(f"held-out text: {plan['heldout']}")
    say(f"pretraining steps: {plan['pretrain_steps']}")
    say(f"fine-tuning steps: {plan['finetune_steps']}\n")
    say(f"{'step':<{w}}  {'work':<32} {'estimate':>12}  {'state':<10} calibration")
    for r in plan["rows"]:
        say(f"{r['step']:<{w}}  {r['what']:<32} {format_eta(r['estimate_s']):>12}  {r['state'] or 'to run':<10} "
            f"{r['calibration']}")
    say(f"\ntotal {format_eta(plan['total_s'])}; still to run {format_eta(plan['remaining_s'])}")
    if plan["warning"]:
        say(f"warning: {plan['warning']}")
    return plan


__all__ = ["estimate_plan", "print_plan", "format_eta", "plausibility", "train_flops", "StepModel",
           "calibrate_steps", "time_train_step", "PLAUSIBLE_DAYS"]
