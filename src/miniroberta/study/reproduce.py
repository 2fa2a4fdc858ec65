"""``miniroberta reproduce``: the whole reference study as one resumable command.

Steps (each cached under ``--out`` with a manifest in ``steps/<id>.json``)::

    decontaminate                             corpus less the lines overlapping dev/test texts -> data/corpus/
    task-text                                 the tasks' train texts, labels dropped -> data/task_text/
    preprocess-seq128, preprocess-seq512      corpus -> data/seq<S>/ (memory-mapped MLM datasets)
    preprocess-task_text-seq<S>               task texts, packed -> data/task_text_seq<S>/ (stageN.data = task_text)
    pretrain-<M>-stage1                       data/seq128 -> models/<M>/stage1/model.safetensors-<step>
    pretrain-<M>-stage2                       stage-1 final weights (weights only) + data/seq512 -> models/<M>/stage2/
    export-<M>                                stage-2 final -> models/<M>/hf/ (+ parity check against transformers)
    grid-<M>                                  fine-tuning grid on every task -> models/<M>/grid/
    report                                    report/report.{md,csv,json}, score_vs_size.png, pretrain_loss.png
    card-<M>                                  models/<M>/hf/README.md from the measured results

A manifest records the step's settings, the hashes of its inputs, package versions, the git
revision, its result and timings. A re-run skips a step whose manifest is ``done`` with the same
fingerprint (settings + input hashes); a step left ``running`` (killed, crashed) is resumed --
pretraining from its last checkpoint, the grid from its finished cells; a step whose settings or
inputs changed is redone from scratch together with everything downstream of it (their
fingerprints change too). ``events.jsonl`` logs every decision (run / resume / redo / skip / done).

Under ``torchrun`` every rank runs this command: rank 0 does all the single-process steps and
writes the manifests, the other ranks wait for the datasets and join the two pretraining stages
(``train`` picks the distributed setup up from the environment), then exit.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any, Callable

from miniroberta import __version__
from miniroberta.data import preprocess as pre_mod
from miniroberta.finetune import grid as grid_mod
from miniroberta.finetune import report as report_mod
from miniroberta.interop import convert as convert_mod
from miniroberta.pretrain import launch as pretrain_mod
from miniroberta.study.recipe import (PRESETS, STAGES, RecipeError, canonical_model, dumps_toml, load_recipe, parse_tasks)
from miniroberta.optional import have, install_hint, plots_available
from miniroberta.outputs import claim_output, retire
from miniroberta.utils import atomic_write, terminate_as_exit, JsonlWriter, atomic_write_json, atomic_write_text, format_duration, log, sha256_file

STEP_FORMAT = "miniroberta-reproduce-step/1"

HELDOUT_SEQ = 128            # the held-out file is scored in windows of the fine-tuning length
HELDOUT_BYTES = 400_000       # its first 400 kB
HELDOUT_WINDOWS = 2048        # windows scored per evaluation


class StepError(RuntimeError):
    """A step that failed; names the step and where its log and outputs are."""


class Interrupted(RuntimeError):
    """A step stopped by a signal after saving its state; the next run resumes it."""


# ------------------------------------------------------------------ helpers
def _json_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def corpus_files(corpus: str) -> list[str]:
    """A file, or the ``*.txt`` files of a directory in name order (what preprocess reads)."""
    if os.path.isdir(corpus):
        files = sorted(os.path.join(corpus, f) for f in os.listdir(corpus)
                       if f.endswith(".txt") and os.path.isfile(os.path.join(corpus, f)))
        if not files:
            raise FileNotFoundError(f"--corpus {corpus}: the directory has no *.txt files")
        return files
    if os.path.isfile(corpus):
        return [corpus]
    raise FileNotFoundError(f"--corpus {corpus}: no such file or directory (default: ../shared/data/corpus)")


def hash_files(paths: list[str]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(os.path.basename(p).encode() + b"\0" + sha256_file(p).encode() + b"\n")
    return h.hexdigest()


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version
    out = {"python": platform.python_version(), "miniroberta": __version__}
    for pkg in ("torch", "transformers", "numpy", "tokenizers", "safetensors"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def git_revision() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return "unknown (not a git checkout)"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10)
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"


def dist_env() -> tuple[int, int]:
    """(rank, world_size) from torchrun's environment; (0, 1) otherwise."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def checkpoint_step(path: str) -> int:
    tail = path.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def list_checkpoints(prefix: str) -> list[str]:
    """``<prefix>-<step>`` files, by step."""
    d, base = os.path.split(prefix)
    if not os.path.isdir(d):
        return []
    found = [os.path.join(d, f) for f in os.listdir(d) if f.startswith(base + "-") and f[len(base) + 1:].isdigit()]
    return sorted(found, key=checkpoint_step)


# ------------------------------------------------------------------ step runner
class Runner:
    """Runs steps once: a done step with the same fingerprint is skipped, a running one resumed."""

    def __init__(self, out: str, rank: int = 0, world_size: int = 1) -> None:
        self.out = os.path.abspath(out)
        self.rank, self.world_size = rank, world_size
        self.steps_dir = os.path.join(self.out, "steps")
        os.makedirs(self.steps_dir, exist_ok=True)
        self.events = JsonlWriter(os.path.join(self.out, "events.jsonl") if rank == 0 else None)
        self.env = {"versions": versions(), "git_revision": git_revision(), "host": platform.node(),
                    "world_size": world_size}
        self.actions: dict[str, str] = {}

    def manifest_path(self, step_id: str) -> str:
        return os.path.join(self.steps_dir, f"{step_id}.json")

    def read_manifest(self, step_id: str) -> dict[str, Any] | None:
        p = self.manifest_path(step_id)
        if not os.path.isfile(p):
            return None
        try:
            with open(p, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, json.JSONDecodeError):
            return None  # a torn manifest cannot happen (atomic writes) but is treated as "not run"

    def event(self, step_id: str, action: str, **kw: Any) -> None:
        self.actions[step_id] = action if action != "done" else self.actions.get(step_id, action)
        self.events.write({"time": time.time(), "step": step_id, "action": action, **kw})

    def state(self, step_id: str, fingerprint: str) -> str:
        """``cached``, ``resume``, ``redo`` (settings/inputs changed) or ``new``."""
        m = self.read_manifest(step_id)
        if m is None:
            return "new"
        if m.get("fingerprint") != fingerprint:
            return "redo"
        return "cached" if m.get("status") == "done" else "resume"

    def run(self, step_id: str, settings: dict[str, Any], inputs: dict[str, str],
            fn: Callable[[bool, bool], dict[str, Any]], outputs: list[str] | None = None,
            all_ranks: bool = False, options: dict[str, Any] | None = None,
            complete: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any]:
        """Run ``fn(resume, fresh)`` unless cached; returns the step's result dict.

        ``settings`` and ``inputs`` make the fingerprint; ``options`` (recorded, not fingerprinted) are
        settings that do not change the result (checkpoint/report intervals, time budgets).
        ``complete(manifest)`` may say a done step is not finished after all (a pretraining stage
        stopped by its time budget, re-run with a different budget), which resumes it.
        ``fresh`` is true when earlier outputs (from other settings) must be discarded."""
        fingerprint = _json_hash({"settings": settings, "inputs": inputs})
        if self.rank != 0:
            if not all_ranks:
                return self.wait_done(step_id, fingerprint)
            st = self.state(step_id, fingerprint)
            if st == "cached":
                return self.read_manifest(step_id)["result"]
            fn(st == "resume", False)  # rank 0 cleans and records; we only join the collective work
            return self.wait_done(step_id, fingerprint)
        st = self.state(step_id, fingerprint)
        if st == "cached" and complete is not None and not complete(self.read_manifest(step_id)):
            st = "resume"
        if st == "cached":
            m = self.read_manifest(step_id)
            missing = [p for p in (m.get("outputs") or []) if not os.path.exists(p)]
            if not missing:
                self.event(step_id, "skip")
                log(f"[{step_id}] cached ({m.get('finished_at', '?')}); skipping")
                return m["result"]
            log(f"[{step_id}] manifest is done but outputs are missing ({missing[0]}); redoing the step")
            st = "redo"
        prev = self.read_manifest(step_id)
        manifest = {
            "format": STEP_FORMAT, "step": step_id, "status": "running", "fingerprint": fingerprint,
            "settings": settings, "options": options or {}, "inputs": inputs, **self.env,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "attempts": int((prev or {}).get("attempts", 0)) + 1,
        }
        atomic_write_json(self.manifest_path(step_id), manifest)
        action = {"new": "run", "resume": "resume", "redo": "redo"}[st]
        self.event(step_id, action)
        log(f"[{step_id}] {'resuming' if st == 'resume' else 'settings or inputs changed: redoing' if st == 'redo' else 'running'}")
        t0 = time.time()
        try:
            result = fn(st == "resume", st == "redo")
        except BaseException as e:
            self.event(step_id, "failed", error=f"{type(e).__name__}: {e}")
            raise
        manifest.update(status="done", result=result, outputs=[os.path.abspath(p) for p in (outputs or [])],
                        elapsed_s=round(time.time() - t0, 3), finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        atomic_write_json(self.manifest_path(step_id), manifest)
        self.event(step_id, "done", elapsed_s=manifest["elapsed_s"])
        log(f"[{step_id}] done in {format_duration(time.time() - t0)}")
        return result

    def wait_done(self, step_id: str, fingerprint: str, poll_s: float = 0.5) -> dict[str, Any]:
        """Non-zero ranks: wait until rank 0 has recorded the step."""
        while True:
            m = self.read_manifest(step_id)
            if m and m.get("fingerprint") == fingerprint and m.get("status") == "done":
                return m["result"]
            time.sleep(poll_s)


# ------------------------------------------------------------------ the pipeline
@dataclasses.dataclass
class Paths:
    out: str

    def dataset(self, seq: int, source: str = "corpus") -> str:
        return os.path.join(self.out, "data", f"seq{seq}" if source == "corpus" else f"{source}_seq{seq}")

    @property
    def heldout(self) -> str:
        return os.path.join(self.out, "data", f"heldout_seq{HELDOUT_SEQ}")

    def model_dir(self, m: str) -> str:
        return os.path.join(self.out, "models", m)

    def stage_prefix(self, m: str, stage: str) -> str:
        return os.path.join(self.model_dir(m), stage, "model.safetensors")

    def metrics(self, m: str, stage: str) -> str:
        return os.path.join(self.model_dir(m), stage, "metrics.jsonl")

    def hf(self, m: str) -> str:
        return os.path.join(self.model_dir(m), "hf")

    def grid(self, m: str) -> str:
        return os.path.join(self.model_dir(m), "grid")

    @property
    def report(self) -> str:
        return os.path.join(self.out, "report")


class Study:
    """The study of one recipe under one output directory; ``run()`` does every step in order."""

    def __init__(self, recipe: dict[str, Any], out: str, progress: bool = True) -> None:
        self.recipe = recipe
        self.paths = Paths(os.path.abspath(out))
        self.progress = progress
        rank, world = dist_env()
        self.rank, self.world_size = rank, world
        self.runner = Runner(self.paths.out, rank, world)
        d = recipe["data"]
        self.corpus = os.path.abspath(d["corpus"])
        self.vocab = os.path.abspath(d["vocab"])
        self.data_dir = os.path.abspath(d["data_dir"])
        if not os.path.isfile(self.vocab):
            raise FileNotFoundError(f"--vocab {d['vocab']}: no such file (default ../shared/data/vocab/google_zh_vocab.txt)")
        self.corpus_files = corpus_files(self.corpus)
        self.heldout_file = resolve_heldout(d["heldout"], self.corpus)
        if self.heldout_file:   # never trained on
            self.corpus_files = [f for f in self.corpus_files if os.path.realpath(f) != os.path.realpath(self.heldout_file)]
            if not self.corpus_files:
                raise ValueError(f"data.heldout {d['heldout']} is the whole corpus; nothing is left to train on")
        self._hashes: dict[str, str] = {}

    # ---------------------------------------------------------------- inputs
    def corpus_hash(self) -> str:
        if "corpus" not in self._hashes:
            self._hashes["corpus"] = hash_files(self.corpus_files)
        return self._hashes["corpus"]

    def vocab_hash(self) -> str:
        if "vocab" not in self._hashes:
            self._hashes["vocab"] = sha256_file(self.vocab)
        return self._hashes["vocab"]

    def stage_datasets(self) -> list[tuple[str, int]]:
        return stage_datasets(self.recipe)

    # ---------------------------------------------------------------- steps
    def decontaminate(self) -> dict[str, Any] | None:
        """``data.decontaminate``: the corpus without the documents that share a 20-character span with a
        dev or test text of the tasks the grid scores (``data/decontam.py``); the files go to
        ``OUT/data/corpus``, every removed line is listed in its ``decontamination.json``."""
        if not self.recipe["data"]["decontaminate"]:
            return None
        from miniroberta.data import decontam
        tasks = list(self.recipe["grid"]["tasks"])
        max_bytes = self.recipe["data"]["max_bytes"] or None
        settings = {"tasks": tasks, "n": decontam.DEFAULT_N, "splits": ["dev", "test"], "max_bytes": max_bytes}
        inputs = {"corpus": self.corpus_hash(), "eval_texts": hash_files(self.task_files(tasks, ("dev", "test")))}
        out = os.path.join(self.paths.out, "data", "corpus")

        def fn(resume: bool, fresh: bool) -> dict[str, Any]:
            spans = decontam.task_spans(tasks, self.data_dir, splits=("dev", "test"))
            rep = decontam.decontaminate(self.corpus_files, spans, out, max_bytes=max_bytes)
            removed = len(rep["removed"])
            log(f"decontaminate: {removed:,} corpus lines share a {spans.n}-character span with a dev/test text of "
                f"{', '.join(tasks)}; left out (listed in {out}/decontamination.json)")
            return {"files": [f["out"] for f in rep["files"] if f["bytes"]], "removed": removed,
                    "kept": sum(f["kept"] for f in rep["files"]), "eval_texts": spans.texts,
                    "report": os.path.join(out, "decontamination.json")}

        return self.runner.run("decontaminate", settings, inputs, fn,
                               outputs=[os.path.join(out, "decontamination.json")])

    def task_files(self, tasks: list[str], splits: tuple[str, ...]) -> list[str]:
        from miniroberta.data import tasks as T
        out = []
        for t in tasks:
            tf = T.resolve_task(t, self.data_dir)
            paths = {"train": tf.train_path, "dev": tf.dev_path, "test": tf.test_path}
            out += [paths[s] for s in splits if paths[s] and os.path.isfile(paths[s])]
        return out

    def task_text(self) -> dict[str, Any] | None:
        """``data.task_text``: the grid tasks' train texts without labels (``tasks.write_train_texts``), less
        every text that shares a 20-character span with a dev/test text, as one more corpus file in
        ``OUT/data/task_text`` (the removed texts listed in its ``decontamination.json``)."""
        if not self.recipe["data"]["task_text"] and all(src != "task_text" for src, _ in self.stage_datasets()):
            return None
        from miniroberta.data import decontam
        tasks = list(self.recipe["grid"]["tasks"])
        max_examples = self.recipe["grid"]["max_train_examples"] or None
        settings = {"tasks": tasks, "max_examples": max_examples, "n": decontam.DEFAULT_N, "splits": ["dev", "test"]}
        inputs = {"train_texts": hash_files(self.task_files(tasks, ("train",))),
                  "eval_texts": hash_files(self.task_files(tasks, ("dev", "test")))}
        out = os.path.join(self.paths.out, "data", "task_text")

        def fn(resume: bool, fresh: bool) -> dict[str, Any]:
            spans = decontam.task_spans(tasks, self.data_dir, splits=("dev", "test"))
            rep = decontam.task_train_texts(tasks, spans, out, self.data_dir, max_examples=max_examples)
            written, f = rep["written"], rep["file"]
            log(f"task-text: {written['lines']:,} distinct train texts of {', '.join(tasks)} (labels dropped); "
                f"{f['removed']:,} share a {spans.n}-character span with a dev/test text and are left out; "
                f"{f['kept']:,} lines, {f['bytes'] / 1e6:.1f} MB join the stage-1 corpus")
            return {"files": [f["out"]], "texts": written["lines"], "kept": f["kept"], "removed": f["removed"],
                    "bytes": f["bytes"], "tasks": written["tasks"], "report": os.path.join(out, "decontamination.json")}

        return self.runner.run("task-text", settings, inputs, fn, outputs=[os.path.join(out, "decontamination.json")])

    def preprocess(self, seq: int, clean: dict[str, Any] | None = None,
                   task: dict[str, Any] | None = None, source: str = "corpus") -> dict[str, Any]:
        p = dict(self.recipe["preprocess"])
        if source == "task_text":   # the task texts alone, packed: one short text per window would be mostly padding
            assert task is not None
            p["full_sentences"] = True
            settings = {"seq_length": seq, "source": source, "seed": self.recipe["seed"], **p}
            inputs = {"task_text": hash_files(task["files"]), "vocab": self.vocab_hash()}
            files, max_bytes = list(task["files"]), None
        else:
            settings = {"seq_length": seq, "max_bytes": self.recipe["data"]["max_bytes"], "seed": self.recipe["seed"], **p}
            inputs = {"corpus": self.corpus_hash(), "vocab": self.vocab_hash()}
            if clean is not None:       # the decontaminated copy, already cut to max_bytes
                settings["decontaminate"] = True
                inputs["decontaminated"] = hash_files(clean["files"])
            files = list(clean["files"] if clean is not None else self.corpus_files)
            max_bytes = None if clean is not None else self.recipe["data"]["max_bytes"] or None
            if task is not None and self.recipe["data"]["task_text"]:   # first: max_bytes still cuts the corpus
                settings["task_text"] = True
                inputs["task_text"] = hash_files(task["files"])
                files = list(task["files"]) + files
                max_bytes = max_bytes + task["bytes"] if max_bytes else None
        out = self.paths.dataset(seq, source)

        def fn(resume: bool, fresh: bool) -> dict[str, Any]:
            pre = pre_mod
            from miniroberta.data.dataset import MlmDataset
            pre.build_dataset(files if len(files) > 1 else files[0],
                              self.vocab, out, seq_length=seq, processes_num=p["processes_num"],
                              dynamic_masking=p["dynamic_masking"], dup_factor=p["dup_factor"],
                              full_sentences=p["full_sentences"], whole_word_masking=p["whole_word_masking"],
                              span_masking=p["span_masking"], span_geo_prob=p["span_geo_prob"],
                              span_max_length=p["span_max_length"], seed=self.recipe["seed"],
                              on_error=p["on_error"], overwrite=True, max_bytes=max_bytes,
                              progress=self.progress)
            ds = MlmDataset(out)
            return {"path": out, "content_hash": ds.content_hash, "num_instances": len(ds),
                    "num_tokens": int(ds.manifest["num_tokens"]),
                    "num_real_tokens": ds.manifest.get("num_real_tokens"),
                    "corpus_bytes": (ds.manifest.get("corpus") or {}).get("bytes")}

        step = f"preprocess-seq{seq}" if source == "corpus" else f"preprocess-{source}-seq{seq}"
        return self.runner.run(step, settings, inputs, fn, outputs=[os.path.join(out, "manifest.json")])

    def heldout(self) -> dict[str, Any] | None:
        """The held-out file as a dataset (seq 128, the first 400 kB): the fixed yardstick of every stage."""
        if not self.heldout_file:
            return None
        settings = {"seq_length": HELDOUT_SEQ, "max_bytes": HELDOUT_BYTES}
        inputs = {"heldout": hash_files([self.heldout_file]), "vocab": self.vocab_hash()}
        out = self.paths.heldout

        def fn(resume: bool, fresh: bool) -> dict[str, Any]:
            from miniroberta.data.dataset import MlmDataset
            pre_mod.build_dataset(self.heldout_file, self.vocab, out, seq_length=HELDOUT_SEQ, max_bytes=HELDOUT_BYTES,
                                  overwrite=True, progress=False)
            ds = MlmDataset(out)
            return {"path": out, "file": self.heldout_file, "content_hash": ds.content_hash,
                    "num_instances": len(ds)}

        return self.runner.run("preprocess-heldout", settings, inputs, fn, outputs=[os.path.join(out, "manifest.json")])

    def pretrain(self, model: str, stage: str, dataset: dict[str, Any], init: dict[str, Any] | None,
                 heldout: dict[str, Any] | None = None) -> dict[str, Any]:
        s = self.recipe[stage]
        run_options = ("save_checkpoint_steps", "report_steps", "time_budget_s")
        settings = {"model": model, "seed": self.recipe["seed"], **{k: v for k, v in s.items() if k not in run_options}}
        options = {k: s[k] for k in run_options}
        inputs = {"dataset": dataset["content_hash"], "vocab": self.vocab_hash()}
        if init is not None:
            inputs["init"] = init["final_checkpoint_sha256"]
        if heldout is not None:   # what is measured, not what is trained: an option
            options["heldout"] = heldout["content_hash"]
        prefix = self.paths.stage_prefix(model, stage)
        metrics = self.paths.metrics(model, stage)
        stage_dir = os.path.dirname(prefix)

        def fn(resume: bool, fresh: bool) -> dict[str, Any]:
            pt = pretrain_mod
            if fresh and self.rank == 0:
                retire(stage_dir)
            os.makedirs(stage_dir, exist_ok=True)
            procs, accum = data_parallel_plan(s["world_size"], self.world_size, f"{stage}.world_size")
            cfg = make_dataclass(pt.PretrainConfig, dict(
                dataset_path=dataset["path"], vocab_path=self.vocab, config_path=model, output_model_path=prefix,
                pretrained_model_path=init["final_checkpoint"] if init else None, total_steps=s["total_steps"],
                batch_size=s["batch_size"], world_size=procs, accumulation_steps=accum,
                learning_rate=s["learning_rate"], warmup=s["warmup"], seed=self.recipe["seed"],
                precision=s["precision"], correct_bias=s["correct_bias"], mask_rate=s["mask_rate"], init=s["init"]))
            every = s["report_steps"] * max(1, s["total_steps"] // 20 // s["report_steps"])
            opts = make_dataclass(pt.RunOptions, dict(
                save_checkpoint_steps=s["save_checkpoint_steps"], report_steps=s["report_steps"], resume="auto",
                time_budget_s=float(s["time_budget_s"]) or None, metrics_path=metrics, progress=self.progress,
                eval_dataset_path=heldout["path"] if heldout else None, eval_steps=every,
                eval_max_instances=HELDOUT_WINDOWS))
            with fresh_rendezvous(1 + 2 * self.recipe["models"].index(model) + STAGES.index(stage)):
                res = pt.train(cfg, opts)
            if self.rank != 0:
                return {}
            stopped = res.get("stopped")
            if stopped and stopped != "time_budget":  # "signal" (SIGTERM/SIGINT) or a test hook
                raise Interrupted(f"pretraining stopped early ({stopped}) at step {res.get('steps')}; "
                                  f"re-run the same command to resume from {res.get('last_checkpoint')}")
            return self._pretrain_result(res, prefix, metrics)

        def complete(m: dict[str, Any]) -> bool:
            r = m.get("result") or {}
            return ((r.get("steps") or 0) >= s["total_steps"]
                    or (m.get("options") or {}).get("time_budget_s") == s["time_budget_s"] != 0)

        return self.runner.run(f"pretrain-{model}-{stage}", settings, inputs, fn, all_ranks=True,
                               outputs=[metrics], options=options, complete=complete)

    def _pretrain_result(self, res: dict[str, Any], prefix: str, metrics: str) -> dict[str, Any]:
        ckpts = list_checkpoints(prefix)
        final = res.get("last_checkpoint") or (ckpts[-1] if ckpts else None)
        if not final or not os.path.isfile(final):
            raise StepError(f"pretraining finished but left no checkpoint {prefix}-<step>; see {metrics}")
        out = {k: v for k, v in res.items() if isinstance(v, (int, float, str, bool, list, dict, type(None)))}
        out.update(final_checkpoint=os.path.abspath(final), final_checkpoint_sha256=sha256_file(final),
                   checkpoints=[os.path.abspath(c) for c in ckpts], metrics_path=os.path.abspath(metrics))
        return out

    def export(self, model: str, stage2: dict[str, Any]) -> dict[str, Any]:
        e = dict(self.recipe["export"])
        # without transformers the parity check is skipped (said at the start); installing it later redoes it
        e["parity_check"] = bool(e["parity_check"]) and have("transformers")
        settings = dict(e)
        inputs = {"checkpoint": stage2["final_checkpoint_sha256"], "vocab": self.vocab_hash()}
        out = self.paths.hf(model)

        def fn(resume: bool, fresh: bool) -> dict[str, Any]:
            conv = convert_mod
            conv.export_checkpoint(stage2["final_checkpoint"], out, vocab_path=self.vocab, type=e["type"],
                                   overwrite=True)
            # a fresh id per write: the directory (and its README.md) was replaced, so the card step must run again
            result: dict[str, Any] = {"path": out, "written_id": uuid.uuid4().hex}
            if e["parity_check"]:
                result["parity"] = parity_check(stage2["final_checkpoint"], out, self.vocab, self.sample_texts(),
                                                atol=e["parity_atol"])
                if not result["parity"]["passed"]:
                    raise StepError(f"export-{model}: transformers' BertForMaskedLM on {out} differs from our model by "
                                    f"{result['parity']['max_abs_diff']:.3g} > parity_atol {e['parity_atol']} "
                                    f"(layer_norm_type {result['parity'].get('layer_norm_type')})")
            return result

        return self.runner.run(f"export-{model}", settings, inputs, fn,
                               outputs=[os.path.join(out, "config.json"), os.path.join(out, "model.safetensors")])

    def sample_texts(self, n: int = 4) -> list[str]:
        texts = []
        with open(self.corpus_files[0], encoding="utf-8", errors="replace") as f:
            for line in f:
                line = line.strip()
                if line:
                    texts.append(line[:200])
                if len(texts) >= n:
                    break
        return texts or ["北京是中国的首都。"]

    def grid(self, model: str, export: dict[str, Any], stage2: dict[str, Any]) -> dict[str, Any]:
        g = self.recipe["grid"]
        settings = {k: v for k, v in g.items() if k != "jobs"}
        inputs = {"model": stage2["final_checkpoint_sha256"], "vocab": self.vocab_hash(),
                  "tasks": self.tasks_hash(g["tasks"])}
        out = self.paths.grid(model)

        def fn(resume: bool, fresh: bool) -> dict[str, Any]:
            gr = grid_mod
            if fresh:
                retire(out)
            res = gr.run_grid(export["path"], g["tasks"], self.data_dir, out, epochs_list=tuple(g["epochs"]),
                              batch_list=tuple(g["batch_size"]), lr_list=tuple(g["learning_rate"]),
                              seeds=tuple(g["seeds"]), vocab_path=self.vocab, seq_length=g["seq_length"],
                              jobs=g["jobs"], max_train_examples=g["max_train_examples"] or None,
                              max_dev_examples=g["max_dev_examples"] or None, progress=self.progress,
                              finetune_overrides={"max_train_tokens": g["max_train_tokens"]}
                              if g["max_train_tokens"] else None, baseline=g["baseline"])
            out_res = {"path": out, "grid": _jsonable(res), "scores": best_scores(res)}
            if "baseline" in res:
                out_res.update(baseline_scores=best_scores(res["baseline"]),
                               delta={t: round(v, 4) for t, v in res["delta"].items()})
            return out_res

        return self.runner.run(f"grid-{model}", settings, inputs, fn, outputs=[out])

    def _best_setting(self, grid: dict[str, Any], task: str) -> dict[str, Any]:
        best = grid["grid"]["tasks"][task]["best"]
        return dict(epochs_num=int(best["epochs"]), batch_size=int(best["batch"]), learning_rate=float(best["lr"]))

    def _classifier_run(self, step_id: str, out: str, export: dict[str, Any], grid: dict[str, Any], task: str,
                        inputs: dict[str, str], teacher: dict[str, Any] | None = None) -> dict[str, Any]:
        """One fine-tuning (teacher) or distillation (student) run with the model's best grid setting."""
        g, dd = self.recipe["grid"], self.recipe["distill"]
        settings = dict(task=task, seq_length=g["seq_length"], seed=g["seeds"][0], **self._best_setting(grid, task))
        if teacher is not None:
            settings.update(temperature=dd["temperature"], alpha=dd["alpha"], transfer=dd["transfer_path"])
            inputs = {**inputs, "teacher": teacher["sha256"]}

        def fn(resume: bool, fresh: bool) -> dict[str, Any]:
            from miniroberta.finetune.trainer import FinetuneConfig, run_finetune
            if fresh:
                retire(out)
            extra = {}
            if teacher is not None:
                extra = dict(teacher_path=teacher["path"], temperature=dd["temperature"], alpha=dd["alpha"],
                             transfer_path=os.path.abspath(dd["transfer_path"]) if dd["transfer_path"] else None)
            cfg = FinetuneConfig(pretrained_model_path=export["path"], task=task, data_dir=self.data_dir,
                                 vocab_path=self.vocab, seq_length=g["seq_length"], seed=g["seeds"][0],
                                 max_train_examples=g["max_train_examples"] or None,
                                 max_train_tokens=g["max_train_tokens"] or None,
                                 max_dev_examples=g["max_dev_examples"] or None, output_dir=out, run_test=False,
                                 overwrite=True, progress=self.progress, **self._best_setting(grid, task), **extra)
            res = run_finetune(cfg)
            model_dir = res["paths"]["model_dir"]
            from miniroberta.finetune.grid import model_fingerprint
            return {"path": model_dir, "result": res["paths"]["result"], "best_dev_acc": res["best_dev_acc"],
                    "sha256": model_fingerprint(model_dir)["sha256"]}

        return self.runner.run(step_id, settings, inputs, fn, outputs=[os.path.join(out, "result.json")])

    def distill_plan(self) -> list[str]:
        """The tasks the [distill] stage runs on; empty (with the reason said) when it cannot run."""
        dd, models = self.recipe["distill"], self.recipe["models"]
        if not dd["enabled"]:
            return []
        why = (f"the teacher {dd['teacher']} is not among the models {models}" if dd["teacher"] not in models else
               "there is no other model to distil into" if len(models) < 2 else "")
        tasks = [t for t in dd["tasks"] if t in self.recipe["grid"]["tasks"]]
        why = why or ("" if tasks else f"none of distill.tasks {dd['tasks']} is in grid.tasks")
        if why and self.rank == 0:
            log(f"distill: skipped -- {why} (set distill.teacher / distill.tasks, or distill.enabled=false)")
        return [] if why else tasks

    def distill(self, exports: dict[str, Any], grids: dict[str, Any], final: dict[str, Any],
                tasks: list[str]) -> dict[str, Any]:
        """Teachers fine-tuned per task, then every other model distilled from them (recipe [distill])."""
        dd = self.recipe["distill"]
        t = dd["teacher"]
        out: dict[str, Any] = {}
        for task in tasks:
            teacher = self._classifier_run(
                f"teacher-{t}-{task}", os.path.join(self.paths.model_dir(t), f"teacher-{task}"), exports[t],
                grids[t], task, {"model": final[t]["final_checkpoint_sha256"], "tasks": self.tasks_hash([task])})
            for m in self.recipe["models"]:
                if m == t:
                    continue
                out[f"{m}-{task}"] = self._classifier_run(
                    f"distill-{m}-{task}", os.path.join(self.paths.model_dir(m), f"distill-{task}"), exports[m],
                    grids[m], task, {"model": final[m]["final_checkpoint_sha256"], "tasks": self.tasks_hash([task])},
                    teacher=teacher)
        return out

    def tasks_hash(self, tasks: list[str]) -> str:
        """Hash of the train and dev files the grid reads (test files do not matter)."""
        from miniroberta.data import tasks as T
        files = []
        for t in tasks:
            try:
                tf = T.resolve_task(t, self.data_dir)
            except T.TaskDataError as e:
                raise FileNotFoundError(f"--data_dir {self.data_dir}: {e}") from None
            for p in (tf.train_path, tf.dev_path):
                if not os.path.isfile(p):
                    raise FileNotFoundError(f"--data_dir {self.data_dir}: task {t} has no {os.path.basename(p)}")
                files.append(p)
        return hash_files(files)

    def report(self, models: list[str], grids: dict[str, dict[str, Any]],
               pretrains: dict[str, dict[str, dict[str, Any]]],
               distilled: dict[str, Any] | None = None) -> dict[str, Any]:
        distilled = distilled or {}
        settings = {"reference": self.recipe["report"]["reference"], "models": models}
        students = [m for m in models if any(k.startswith(m + "-") for k in distilled)]
        inputs = {m: _json_hash(grids[m].get("scores")) for m in models}
        inputs.update({f"{m}-baseline": _json_hash(grids[m].get("baseline_scores")) for m in models})
        inputs.update({f"distill-{k}": v["sha256"] for k, v in distilled.items()})
        inputs.update({f"{m}-{s}-metrics": pretrains[m][s]["final_checkpoint_sha256"] for m in models for s in STAGES
                       if pretrains[m][s]})
        out = self.paths.report

        def fn(resume: bool, fresh: bool) -> dict[str, Any]:
            rp = report_mod
            names = []
            for m in models:
                names += [m] + ([f"{m} · no pretraining"] if "baseline_scores" in grids[m] else [])
            names += [f"{m} ← {self.recipe['distill']['teacher']} (PD)" for m in students]
            inputs_ = [grids[m]["path"] for m in models]
            for m in students:   # a student's distilled tasks are one row
                inputs_ += [v["result"] for k, v in distilled.items() if k.startswith(m + "-")]
            res = rp.build_report(inputs_, out_dir=out, reference=self.recipe["report"]["reference"],
                                  model_names=names)
            curves = os.path.join(out, "pretrain_loss.png")
            if plots:
                plot_loss_curves({m: {s: pretrains[m][s]["metrics_path"] for s in STAGES if pretrains[m][s]}
                                  for m in models}, curves)
            return {"path": out, "loss_curves": curves if plots else None, "report": _jsonable(res)}

        plots = plots_available("reproduce")
        settings["plots"] = plots                       # installing matplotlib later redoes the report with them
        return self.runner.run("report", settings, inputs, fn,
                               outputs=[os.path.join(out, "report.md")]
                               + ([os.path.join(out, "pretrain_loss.png")] if plots else []))

    def card(self, model: str, pre: dict[str, dict[str, Any]], datasets: dict[tuple[str, int], dict[str, Any]],
             export: dict[str, Any], grid: dict[str, Any]) -> dict[str, Any]:
        settings = {"recipe": self.recipe.get("description", ""), "sources": self.recipe.get("sources", [])}
        inputs = {"export": _json_hash(export), "scores": _json_hash(grid.get("scores")),
                  **{s: pre[s]["final_checkpoint_sha256"] for s in STAGES if pre[s]}}
        path = os.path.join(export["path"], "README.md")

        def fn(resume: bool, fresh: bool) -> dict[str, Any]:
            conv = convert_mod
            from miniroberta.interop.checkpoint import load_weights
            config, _, _ = load_weights(export["path"])
            meta = self.card_meta(model, pre, datasets, export)
            text = conv.model_card(config, meta, scores=grid.get("scores") or None, type=self.recipe["export"]["type"],
                                   name=f"miniroberta {model}")
            atomic_write_text(path, text)
            return {"path": path, "meta": meta, "scores": grid.get("scores")}

        return self.runner.run(f"card-{model}", settings, inputs, fn, outputs=[path])

    def card_meta(self, model: str, pre: dict[str, dict[str, Any]], datasets: dict[tuple[str, int], dict[str, Any]],
                  export: dict[str, Any]) -> dict[str, Any]:
        """Flat facts for the model card, all taken from the step results (nothing typed by hand)."""
        d = self.recipe["data"]
        names = [os.path.basename(f) for f in self.corpus_files]
        corpus = (f"{os.path.basename(self.corpus.rstrip(os.sep))}: {len(names)} file(s)"
                  + (f", first {d['max_bytes']:,} bytes" if d["max_bytes"] else "")
                  + f" (sha256 {self.corpus_hash()[:12]})")
        ds = "; ".join(f"{'' if src == 'corpus' else 'task texts, '}seq {seq}: {v.get('num_instances'):,} instances, "
                       f"{v.get('num_tokens'):,} tokens" for (src, seq), v in sorted(datasets.items()))
        meta: dict[str, Any] = {
            "corpus": corpus,
            "dataset": ds,
            "steps": sum(int(pre[s].get("steps") or 0) for s in STAGES),
            "tokens_seen": sum(int(pre[s].get("tokens_seen") or 0) for s in STAGES),
            "final_loss": (pre["stage2"] or pre["stage1"]).get("final_loss"),
            "seed": self.recipe["seed"],
            "vocab_sha256": self.vocab_hash(),
        }
        for s in STAGES:
            r, rs = pre[s], self.recipe[s]
            if not r:
                meta[s] = "skipped (total_steps = 0)"
                continue
            meta[f"{s}"] = (("the tasks' unlabeled train texts (packed), " if rs["data"] == "task_text" else "")
                            + f"seq {rs['seq_length']}, {int(r.get('steps') or 0):,} of {rs['total_steps']:,} steps, "
                            f"batch {rs['batch_size']} x {rs['world_size']}, lr {rs['learning_rate']:g}, "
                            f"warmup {rs['warmup']:g}, {int(r.get('tokens_seen') or 0):,} real tokens, "
                            f"final MLM loss {_fmt_num(r.get('final_loss'))}, "
                            f"{format_duration(float(r.get('wall_time_s') or 0))} wall"
                            + (f", stopped by time budget" if r.get("stopped") == "time_budget" else "")
                            + (f", held-out MLM loss {r['eval']['loss']:.3f} ({os.path.basename(self.heldout_file or '')}, "
                               f"all-[MASK])" if isinstance(r.get("eval"), dict) and r["eval"].get("loss") else ""))
        par = export.get("parity")
        if par:
            meta["parity_vs_transformers"] = (f"max |logit diff| {par['max_abs_diff']:.2g} over {par['tokens']} tokens "
                                              f"({par['reference']}), argmax agreement {par['argmax_agreement']:.3f}")
        layers = [x for x in self.recipe.get("sources", []) if not x.startswith("set:")]
        n_set = sum(1 for x in self.recipe.get("sources", []) if x.startswith("set:"))
        meta["recipe"] = (" <- ".join(layers) + (f" + {n_set} override(s)" if n_set else "")
                          + " (the resolved recipe is recipe.toml of the run)")[:200]
        meta["generated_by"] = f"miniroberta {__version__} reproduce, git {self.runner.env['git_revision'][:16]}"
        return meta

    def _ds_key(self, stage: str) -> tuple[str, int]:
        return self.recipe[stage]["data"], self.recipe[stage]["seq_length"]

    # ---------------------------------------------------------------- all
    def run(self) -> dict[str, Any]:
        models = self.recipe["models"]
        t0 = time.time()
        if self.rank == 0:
            atomic_write_text(os.path.join(self.paths.out, "recipe.toml"), dumps_toml(self.recipe))
        clean = self.decontaminate()
        task = self.task_text()
        datasets = {(src, seq): self.preprocess(seq, clean, task, src) for src, seq in self.stage_datasets()}
        heldout = self.heldout()
        pre: dict[str, dict[str, dict[str, Any]]] = {}
        final: dict[str, dict[str, Any]] = {}
        for m in models:
            s1 = self.pretrain(m, "stage1", datasets[self._ds_key("stage1")], None, heldout)
            s2 = (self.pretrain(m, "stage2", datasets[self._ds_key("stage2")], s1, heldout)
                  if self.recipe["stage2"]["total_steps"] else {})          # stage2.total_steps = 0: skipped
            pre[m] = {"stage1": s1, "stage2": s2}
            final[m] = s2 or s1
        if self.rank != 0:
            return {}
        exports = {m: self.export(m, final[m]) for m in models}
        grids = {m: self.grid(m, exports[m], final[m]) for m in models}
        distill_tasks = self.distill_plan()
        distilled = self.distill(exports, grids, final, distill_tasks) if distill_tasks else {}
        report = self.report(models, grids, pre, distilled)
        cards = {m: self.card(m, pre[m], datasets, exports[m], grids[m]) for m in models}
        summary = {"out": self.paths.out, "models": models, "elapsed_s": round(time.time() - t0, 3),
                   "actions": dict(self.runner.actions), "report": report.get("path"),
                   "scores": {m: grids[m].get("scores") for m in models},
                   "no_pretraining_scores": {m: grids[m].get("baseline_scores") for m in models},
                   "distilled_dev_acc": {k: v["best_dev_acc"] for k, v in distilled.items()},
                   "heldout_loss": {m: (final[m].get("eval") or {}).get("loss") for m in models},
                   "decontaminated": {k: clean[k] for k in ("removed", "kept", "report")} if clean else None,
                   "task_text": {k: task[k] for k in ("kept", "removed", "bytes", "tasks", "report")} if task else None,
                   "cards": {m: c["path"] for m, c in cards.items()}}
        atomic_write_json(os.path.join(self.paths.out, "summary.json"), summary)
        return summary


def stage_datasets(recipe: dict[str, Any]) -> list[tuple[str, int]]:
    """(source, seq) of every dataset a stage trains on (``stageN.data``, ``stageN.seq_length``): ``corpus``
    first, then ``task_text``."""
    return sorted({(recipe[s]["data"], recipe[s]["seq_length"]) for s in STAGES if recipe[s]["total_steps"]},
                  key=lambda x: (x[0] != "corpus", x[1]))


def make_dataclass(cls, kw: dict[str, Any]):
    """``cls(**kw)``, failing clearly when ``cls`` lacks a field that carries a real setting."""
    names = {f.name for f in dataclasses.fields(cls)}
    missing = [k for k, v in kw.items() if k not in names and v not in (None, False)]
    if missing:
        raise RuntimeError(f"{cls.__module__}.{cls.__name__} has no field(s) {missing}; reproduce cannot pass "
                           f"these recipe settings")
    return cls(**{k: v for k, v in kw.items() if k in names})


@contextlib.contextmanager
def fresh_rendezvous(index: int):
    """Under torchrun, give pretraining stage ``index`` its own rendezvous store.

    ``train`` initialises and destroys the default process group once per call. A second
    ``init_process_group`` in the same torchrun job would reuse the agent's store, whose keys
    still hold the first group's gloo/NCCL addresses, and hang connecting to them. So every stage
    gets a fresh store hosted by rank 0 on ``MASTER_PORT + index`` (those ports must be reachable
    from the other nodes, like ``MASTER_PORT`` itself)."""
    if "TORCHELASTIC_RUN_ID" not in os.environ and "TORCHELASTIC_USE_AGENT_STORE" not in os.environ \
            or "MASTER_PORT" not in os.environ:
        yield
        return
    saved = {k: os.environ.get(k) for k in ("MASTER_PORT", "TORCHELASTIC_USE_AGENT_STORE")}
    base = int(os.environ.get("MINIROBERTA_BASE_MASTER_PORT") or saved["MASTER_PORT"])
    os.environ["MINIROBERTA_BASE_MASTER_PORT"] = str(base)
    os.environ["MASTER_PORT"] = str(base + index)
    os.environ["TORCHELASTIC_USE_AGENT_STORE"] = "False"
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def data_parallel_plan(recipe_world: int, launched: int, key: str) -> tuple[int, int]:
    """(processes, gradient accumulation steps) that give the recipe's global batch
    ``batch_size x world_size`` with the ``launched`` processes (torchrun's WORLD_SIZE, else 1)."""
    if recipe_world % launched:
        raise ValueError(f"{key} = {recipe_world} (global batch = batch_size x {recipe_world}) is not a multiple of "
                         f"the {launched} processes launched; launch {recipe_world} (or a divisor of it) with torchrun, "
                         f"or --set {key}={launched}")
    return launched, recipe_world // launched


def best_scores(summary: dict[str, Any]) -> dict[str, float]:
    """Task -> dev accuracy in % of the best grid setting, from ``run_grid``'s summary
    (``tasks.<task>.best.best_dev_acc_mean``: selected and scored by best-epoch dev accuracy)."""
    scores: dict[str, float] = {}
    for task, t in (summary.get("tasks") or {}).items():
        best = (t or {}).get("best") or {}
        v = best.get("best_dev_acc_mean", best.get("best_dev_acc"))
        if isinstance(v, (int, float)):
            scores[task] = round(100.0 * float(v), 2)
    return scores


def _fmt_num(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, (int, float)) else "n/a"


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


# ------------------------------------------------------------------ parity
def parity_check(checkpoint: str, hf_dir: str, vocab: str, texts: list[str], atol: float = 1e-4) -> dict[str, Any]:
    """MLM logits of transformers' ``BertForMaskedLM.from_pretrained(hf_dir)`` vs our model from the
    native checkpoint, on ``texts`` (padded batch). Records max |diff| and argmax agreement."""
    import torch
    from transformers import BertForMaskedLM as HFBertForMaskedLM

    from miniroberta.interop.checkpoint import load_model
    from miniroberta.modeling.tokenizer import BertTokenizer

    ours, _ = load_model(checkpoint, "mlm")
    ours.eval()
    theirs = HFBertForMaskedLM.from_pretrained(hf_dir)
    theirs.eval()
    tok = BertTokenizer(vocab)
    encs = [tok.encode(t, max_length=64) for t in texts]
    T = max(len(e.input_ids) for e in encs)
    ids = torch.zeros(len(encs), T, dtype=torch.long)
    mask = torch.zeros(len(encs), T, dtype=torch.long)
    types = torch.zeros(len(encs), T, dtype=torch.long)
    for i, e in enumerate(encs):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        types[i, :n] = torch.tensor(e.token_type_ids)
        mask[i, :n] = 1
    with torch.no_grad():
        a = ours(ids, attention_mask=mask, token_type_ids=types).logits
        b = theirs(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
    real = mask.bool()
    diff = (a - b).abs()[real]
    max_diff = float(diff.max())
    agree = float((a.argmax(-1) == b.argmax(-1))[real].float().mean())
    return {"max_abs_diff": max_diff, "atol": atol, "passed": bool(max_diff <= atol), "argmax_agreement": agree,
            "tokens": int(real.sum()), "reference": f"transformers {versions()['transformers']} BertForMaskedLM",
            "layer_norm_type": ours.config.layer_norm_type}


# ------------------------------------------------------------------ loss curves
def resolve_heldout(spec: str, corpus: str) -> str | None:
    """``data.heldout``: "" (none), a file name in the corpus directory, or a path."""
    if not spec:
        return None
    cands = [spec] + ([os.path.join(corpus, spec)] if os.path.isdir(corpus) else [])
    for c in cands:
        if os.path.isfile(c):
            return os.path.abspath(c)
    raise FileNotFoundError(f"data.heldout {spec!r}: no such file (looked at {', '.join(cands)}); give a file name in "
                            f"the corpus directory, a path, or \"\" for none")


def read_eval_curve(path: str) -> tuple[list[int], list[float]]:
    """Held-out loss records (``eval_loss``) of a metrics file, last value per step."""
    last: dict[int, float] = {}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(r.get("eval_loss"), (int, float)) and isinstance(r.get("step"), int):
                    last[r["step"]] = float(r["eval_loss"])
    ks = sorted(last)
    return ks, [last[k] for k in ks]


def read_loss_curve(path: str) -> tuple[list[int], list[float]]:
    steps, losses = [], []
    if not os.path.isfile(path):
        return steps, losses
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
            loss = next((r[k] for k in ("loss", "mlm_loss", "train_loss") if isinstance(r.get(k), (int, float))), None)
            step = r.get("step")
            if loss is None or not isinstance(step, int) or r.get("event", r.get("kind", "train")) not in ("train", "report"):
                continue
            steps.append(step)
            losses.append(float(loss))
    # a resumed run re-reports steps it had reported before being killed: keep the last value per step
    last = dict(zip(steps, losses))
    ks = sorted(last)
    return ks, [last[k] for k in ks]


def plot_loss_curves(metrics: dict[str, dict[str, str]], out_png: str) -> str:
    """One panel per stage that ran, one colour per model: the training MLM loss (solid) and the
    held-out loss with fixed all-[MASK] masks (dashed, dots), against step."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [s for s in STAGES if any(s in p for p in metrics.values())]
    fig, axes = plt.subplots(1, len(stages), figsize=(5.5 * len(stages), 4), squeeze=False)
    drawn = 0
    for ax, stage in zip(axes[0], stages):
        for i, (m, paths) in enumerate(metrics.items()):
            if stage not in paths:
                continue
            color = f"C{i % 10}"
            x, y = read_loss_curve(paths[stage])
            if x:
                ax.plot(x, y, label=f"{m} train", color=color, marker="." if len(x) < 30 else None)
                drawn += 1
            ex, ey = read_eval_curve(paths[stage])
            if ex:
                ax.plot(ex, ey, "--", marker="o", ms=3, color=color, label=f"{m} held-out")
        ax.set_title(f"{stage}: MLM loss")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if not drawn:
        plt.close(fig)
        raise StepError(f"no loss records found in {metrics}; cannot draw the loss curves")
    fig.tight_layout()
    with atomic_write(out_png, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return out_png


# ------------------------------------------------------------------ dry run: plan + calibration
def _device() -> str:
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def _sync(device: str) -> None:
    if device == "cuda":
        import torch
        torch.cuda.synchronize()


def train_flops(cfg: Any, seq: int, batch: int, mlm: bool = True, mask_rate: float = 0.15) -> float:
    """FLOPs of one training step (forward + backward = 3 x forward) of ``batch`` sequences of ``seq``
    tokens: per layer the four attention projections, the FFN, the score and weighted-sum matmuls; the
    MLM head on the masked positions only (as the trainer computes it), or a classifier head."""
    H, I, L, V = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.vocab_size
    per_token = L * (2 * (4 * H * H + 2 * H * I) + 4 * seq * H)
    head = mask_rate * 2 * (H * H + H * V) if mlm else 0.0
    return 3.0 * batch * seq * (per_token + head)


def time_train_step(model: str, vocab_size: int, seq: int, micro: int, steps: int, device: str,
                    mlm: bool = True) -> dict[str, Any]:
    """Measured seconds of one optimizer step (forward, backward, AdamW) of ``model`` on random ids,
    in memory only (nothing is written): the fastest of ``steps`` steps after a warm-up step."""
    import torch

    from miniroberta.modeling.bert import BertForMaskedLM, BertForSequenceClassification
    from miniroberta.modeling.config import preset
    cfg = preset(model, vocab_size=vocab_size, num_labels=3)
    m = (BertForMaskedLM(cfg) if mlm else BertForSequenceClassification(cfg)).to(device).train()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, vocab_size, (micro, seq), generator=g).to(device)
    if mlm:
        pos = torch.randperm(micro * seq, generator=g)[: max(1, int(0.15 * micro * seq))].to(device)
        labels = ids.reshape(-1).index_select(0, pos)
        kw = dict(masked_positions=pos, labels=labels)
    else:
        kw = dict(labels=torch.randint(0, 3, (micro,), generator=g).to(device))

    def one() -> float:
        _sync(device)
        t0 = time.perf_counter()
        m(ids, **kw).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        return time.perf_counter() - t0

    one()  # warm-up
    per = min(one() for _ in range(max(1, steps)))   # the least disturbed step (the machine may be shared)
    out = {"model": model, "s_per_micro": per, "micro": micro, "seq": seq,
           "flops": train_flops(cfg, seq, micro, mlm=mlm)}
    if not mlm:
        m.eval()
        with torch.no_grad():
            m(ids)
            _sync(device)
            t0 = time.perf_counter()
            m(ids)
            _sync(device)
        out["s_per_eval_example"] = (time.perf_counter() - t0) / micro
    del m, opt
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


def calibrate_steps(models: list[str], vocab_size: int, steps: int, device: str, mlm: bool = True,
                    seq: int = 128, micro: int = 4) -> StepModel:
    """Measure the smallest model of the plan and a larger one (the largest, capped at L4_H512 so that
    the calibration stays a few seconds on a CPU) -- or, for a one-model plan, that model at two batch
    sizes -- then fit ``StepModel``."""
    from miniroberta.modeling.config import preset
    by_flops = sorted(set(models), key=lambda m: train_flops(preset(m, vocab_size=vocab_size), seq, micro, mlm))
    cap = train_flops(preset("L4_H512", vocab_size=vocab_size), seq, micro, mlm)
    big = [m for m in by_flops if train_flops(preset(m, vocab_size=vocab_size), seq, micro, mlm) <= cap]
    chosen = [(by_flops[0], micro)] + ([(big[-1], micro)] if big and big[-1] != by_flops[0] else
                                       [("L4_H512", micro)] if by_flops[-1] != by_flops[0] else
                                       [(by_flops[0], 4 * micro)])     # one model: two batch sizes
    return StepModel([time_train_step(m, vocab_size, seq, b, steps, device, mlm=mlm) for m, b in chosen])


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


def task_stats(data_dir: str, task: str, tokenizer, seq: int, sample: int = 512) -> dict[str, Any]:
    """Example counts of a task's train/dev files (as fine-tuning reads them) and the token lengths of
    up to ``sample`` examples of each (fine-tuning pads each batch to its longest example)."""
    import numpy as np

    from miniroberta.data import tasks as T
    tf = T.resolve_task(task, data_dir)
    out: dict[str, Any] = {}
    for split, path in (("train", tf.train_path), ("dev", tf.dev_path)):
        data = T.read_examples(path, tf.text_fields, tf.label_field, drop_labels=tf.drop_labels)
        idx = np.random.default_rng(0).permutation(len(data))[:sample]
        enc = T.encode_data(tokenizer, data.subset(sorted(int(i) for i in idx)), seq)
        out[split] = len(data)
        out[f"{split}_lengths"] = enc.lengths()
    return out


def _mean_batch_max(lengths, batch: int, trials: int = 200) -> float:
    import numpy as np
    rng = np.random.default_rng(0)
    lengths = np.asarray(lengths)
    if len(lengths) == 0:
        return 0.0
    return float(np.mean([lengths[rng.integers(0, len(lengths), batch)].max() for _ in range(trials)]))


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


def _estimate_plan(recipe: dict[str, Any], out: str, work: str, calibration_steps: int = 3,
                   max_tokens: int | None = None) -> dict[str, Any]:
    """Every step of the study with its estimated wall time, from short measured runs scaled by FLOPs.

    Writes nothing outside one temp folder, removed at the end (also on SIGTERM, see
    ``utils.terminate_as_exit``): a 200 kB preprocess slice and two in-memory training-step timings (the
    recipe's smallest model and a larger one, see ``calibrate_steps``); every pretraining stage and grid
    cell is then ``steps x (overhead + FLOPs / measured rate)``. Seconds on any preset, even 24 models."""
    from miniroberta.modeling.config import preset
    from miniroberta.modeling.tokenizer import BertTokenizer, read_vocab
    device = _device()
    max_tokens = max_tokens or (16384 if device == "cuda" else 2048)
    d = recipe["data"]
    files = corpus_files(os.path.abspath(d["corpus"]))
    held = resolve_heldout(d["heldout"], os.path.abspath(d["corpus"]))
    files = [f for f in files if not held or os.path.realpath(f) != os.path.realpath(held)]
    vocab = os.path.abspath(d["vocab"])
    V = len(read_vocab(vocab))
    total_bytes = sum(os.path.getsize(f) for f in files)
    slice_bytes = min(total_bytes, d["max_bytes"] or total_bytes)
    runner = Runner.__new__(Runner)  # only to read manifests, without creating anything
    runner.steps_dir = os.path.join(os.path.abspath(out), "steps")

    def cached(step_id: str) -> str:
        m = runner.read_manifest(step_id)
        return "" if m is None else ("cached" if m.get("status") == "done" else "interrupted: resumes")

    rows: list[dict[str, Any]] = []
    calib_t0 = time.perf_counter()
    _, launched = dist_env()
    models = list(recipe["models"])
    # the training steps first: the tokenizer's worker threads stay busy for a while after preprocessing
    pre_model = calibrate_steps(models, V, calibration_steps, device, mlm=True)
    g = recipe["grid"]
    ft_model = calibrate_steps(models, V, calibration_steps, device, mlm=False)
    c = time_preprocess(files, vocab, work, sample_bytes=min(200_000, slice_bytes))
    procs_pre = max(1, min(recipe["preprocess"]["processes_num"], os.cpu_count() or 1))
    if d["decontaminate"]:
        rows.append({"step": "decontaminate", "what": f"{slice_bytes / 1e6:.1f} MB against the dev/test texts of "
                                                      f"{len(g['tasks'])} task(s)",
                     "estimate_s": 5.0 + slice_bytes / 3e6,
                     "calibration": "fixed: ~5 s for the spans of six tasks + ~3 MB/s of corpus (measured on a 2-core EPYC)",
                     "state": cached("decontaminate")})
    n_files = len(files)
    sources = stage_datasets(recipe)
    tt_bytes = 0
    if d["task_text"] or any(src == "task_text" for src, _ in sources):   # written for real: its exact bytes
        from miniroberta.data.tasks import write_train_texts
        t0 = time.perf_counter()
        tt = write_train_texts(g["tasks"], os.path.join(work, "task_train_texts.txt"), os.path.abspath(d["data_dir"]),
                               max_examples=g["max_train_examples"] or None)
        took = time.perf_counter() - t0
        rows.append({"step": "task-text", "what": f"{tt['lines']:,} train texts ({tt['bytes'] / 1e6:.1f} MB) of "
                                                  f"{len(g['tasks'])} task(s), decontaminated",
                     "estimate_s": took + 5.0 + tt["bytes"] / 3e6,
                     "calibration": f"measured: {took:.1f} s to read and write them; + ~5 s for the dev/test spans and "
                                    f"~3 MB/s of matching", "state": cached("task-text")})
        tt_bytes = tt["bytes"]
        if d["task_text"]:
            slice_bytes += tt_bytes
            n_files += 1
    for src, seq in sources:
        size, step = (slice_bytes, f"preprocess-seq{seq}") if src == "corpus" else (tt_bytes, f"preprocess-{src}-seq{seq}")
        rows.append({"step": step, "what": f"{size / 1e6:.1f} MB of " + (f"{n_files} file(s)" if src == "corpus"
                                                                          else "the task texts, packed"),
                     # workers scale sub-linearly and never past the cores there are
                     "estimate_s": size / c["bytes_per_s"] / procs_pre ** 0.8,
                     "calibration": f"{c['bytes_per_s'] / 1e6:.2f} MB/s ({c['how']})", "state": cached(step)})
    tok = BertTokenizer(vocab)
    stats = {t: task_stats(os.path.abspath(d["data_dir"]), t, tok, g["seq_length"]) for t in g["tasks"]}
    T = g["seq_length"]
    batch_max: dict[tuple[str, int], int] = {}
    for m in models:
        cfg = preset(m, vocab_size=V)
        for stage in STAGES:
            s = recipe[stage]
            if not s["total_steps"]:
                rows.append({"step": f"pretrain-{m}-{stage}", "what": "skipped (total_steps = 0)", "estimate_s": 0.0,
                             "calibration": "", "state": ""})
                continue
            procs, accum = data_parallel_plan(s["world_size"], launched, f"{stage}.world_size") \
                if s["world_size"] % launched == 0 else (launched, 1)
            per_proc_batch = s["batch_size"] * accum
            micro = max(1, min(per_proc_batch, max_tokens // s["seq_length"]))
            n_micro = math.ceil(per_proc_batch / micro)
            s_per_step = pre_model.seconds(train_flops(cfg, s["seq_length"], per_proc_batch), n_micro)
            est = s["total_steps"] * s_per_step
            budget = s["time_budget_s"]
            note = f"{s_per_step:.3g} s/step (batch {per_proc_batch} x seq {s['seq_length']}" + \
                   (f", {s['world_size']} data-parallel as {procs} process(es) x {accum} accumulation" if s["world_size"] > 1 else "") + \
                   f"; scaled by FLOPs from the measured MLM steps)"
            if budget and est > budget:
                note += f"; capped by time_budget_s ({s['total_steps'] * budget / est:.0f} of {s['total_steps']} steps)"
                est = budget
            rows.append({"step": f"pretrain-{m}-{stage}", "what": f"{s['total_steps']:,} steps", "estimate_s": est,
                         "calibration": note, "state": cached(f"pretrain-{m}-{stage}")})
        params = cfg.num_parameters()
        rows.append({"step": f"export-{m}", "what": "HF export + parity check", "estimate_s": 2.0 + params * 4 / 100e6,
                     "calibration": "fixed: ~2 s + writing the weights at ~100 MB/s", "state": cached(f"export-{m}")})
        total = 0.0
        cells = 0
        bmax = max(g["batch_size"])
        ccfg = preset(m, vocab_size=V, num_labels=3)
        for t, st in stats.items():
            n_train = min(st["train"], g["max_train_examples"] or st["train"])
            if g["max_train_tokens"]:
                n_train = min(n_train, int(g["max_train_tokens"] / max(1.0, float(st["train_lengths"].mean()))))
            n_dev = min(st["dev"], g["max_dev_examples"] or st["dev"])
            dev_len = float(st["dev_lengths"].mean()) if len(st["dev_lengths"]) else T
            for e in g["epochs"]:
                for b in g["batch_size"]:
                    runs = len(g["learning_rate"]) * len(g["seeds"])
                    steps = e * math.ceil(n_train / b) * runs
                    # a batch is padded to its longest example
                    if (t, b) not in batch_max:
                        batch_max[(t, b)] = max(1, int(round(_mean_batch_max(st["train_lengths"], b))))
                    padded = batch_max[(t, b)]
                    micro = max(1, min(b, max_tokens // padded))
                    total += steps * ft_model.seconds(train_flops(ccfg, padded, b, mlm=False), math.ceil(b / micro))
                    # evaluation: forward only, a third of a training step's FLOPs
                    total += e * runs * ft_model.seconds(train_flops(ccfg, max(1, int(dev_len)), n_dev, mlm=False) / 3.0,
                                                         math.ceil(n_dev / bmax))
                    cells += runs
        par = min(g["jobs"], max(1, _gpu_count())) if device == "cuda" else 1
        arms = 2 if g["baseline"] else 1
        rows.append({"step": f"grid-{m}", "what": f"{cells * arms} cells on {len(stats)} task(s)"
                     + (" (pretrained + no-pretraining arm)" if arms == 2 else ""), "estimate_s": arms * total / par,
                     "calibration": f"{ft_model.seconds(train_flops(ccfg, T, bmax, mlm=False)):.3g} s/step at batch {bmax} "
                                    f"x seq {T} (scaled by FLOPs from the measured steps and the tasks' token lengths)"
                                    + ("" if par > 1 else "; --jobs gives no speed-up on CPU (cores are shared)"),
                     "state": cached(f"grid-{m}")})
    dd = recipe["distill"]
    if dd["enabled"] and dd["teacher"] in models and len(models) > 1:
        rows += _distill_rows(recipe, stats, V, ft_model, max_tokens, cached)
    rows.append({"step": "report", "what": "tables, score-vs-size and loss plots", "estimate_s": 5.0,
                 "calibration": "fixed", "state": cached("report")})
    for m in models:
        rows.append({"step": f"card-{m}", "what": "model card README.md", "estimate_s": 1.0, "calibration": "fixed",
                     "state": cached(f"card-{m}")})
    todo = sum(r["estimate_s"] for r in rows if r["state"] != "cached")
    return {"device": device, "threads": _threads(), "rows": rows, "pretrain_steps": pre_model.describe(),
            "finetune_steps": ft_model.describe(), "load_average": _load(), "cpus": os.cpu_count(), "total_s": sum(r["estimate_s"] for r in rows),
            "remaining_s": todo, "calibration_s": time.perf_counter() - calib_t0, "recipe": recipe.get("description", ""),
            "tasks": {t: {"train": st["train"], "dev": st["dev"],
                          "mean_train_tokens": round(float(st["train_lengths"].mean()), 1)} for t, st in stats.items()}}


def _distill_rows(recipe, stats, V, ft_model, max_tokens, cached) -> list[dict[str, Any]]:
    """Plan rows of the [distill] stage: per task the teacher's fine-tuning run, then one run per student
    plus the teacher's logits over the student's training texts (one forward pass: a third of a step).
    An upper bound: the largest grid epochs at the smallest grid batch (the grid picks the real setting)."""
    from miniroberta.modeling.config import preset
    g, dd, models = recipe["grid"], recipe["distill"], list(recipe["models"])
    e, b = max(g["epochs"]), min(g["batch_size"])
    n_transfer = 0
    if dd["transfer_path"] and os.path.isfile(dd["transfer_path"]):
        with open(dd["transfer_path"], "rb") as f:
            n_transfer = sum(1 for line in f if line.strip())
    rows = []
    for t in [x for x in dd["tasks"] if x in stats]:
        st = stats[t]
        n_train = min(st["train"], g["max_train_examples"] or st["train"])
        padded = max(1, int(round(_mean_batch_max(st["train_lengths"], b))))
        micro = max(1, min(b, max_tokens // padded))

        def run_s(m: str, n: int) -> float:
            step = ft_model.seconds(train_flops(preset(m, vocab_size=V, num_labels=3), padded, b, mlm=False),
                                    math.ceil(b / micro))
            return e * math.ceil(n / b) * step
        note = f"upper bound: {e} epochs at batch {b} (the grid's largest / smallest; its best setting is used)"
        rows.append({"step": f"teacher-{dd['teacher']}-{t}", "what": f"fine-tune the teacher on {t}",
                     "estimate_s": run_s(dd["teacher"], n_train), "calibration": note,
                     "state": cached(f"teacher-{dd['teacher']}-{t}")})
        n = n_train + n_transfer
        for m in models:
            if m != dd["teacher"]:
                rows.append({"step": f"distill-{m}-{t}", "what": f"{n:,} texts ({n_transfer:,} unlabeled), "
                                                                 f"teacher logits once",
                             "estimate_s": run_s(m, n) + run_s(dd["teacher"], n) / (3.0 * e), "calibration": note,
                             "state": cached(f"distill-{m}-{t}")})
    return rows


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _gpu_count() -> int:
    import torch
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _threads() -> int:
    import torch
    return torch.get_num_threads()


def print_plan(recipe: dict[str, Any], out: str, calibration_steps: int = 3) -> dict[str, Any]:
    plan = estimate_plan(recipe, out, calibration_steps)
    w = max(len(r["step"]) for r in plan["rows"])
    print(f"plan for {out} -- {plan['recipe']}")
    print(f"recipe layers: {' <- '.join(recipe.get('sources', []))}; models: {', '.join(recipe['models'])}")
    busy = plan["load_average"] is not None and plan["cpus"] and plan["load_average"] > plan["cpus"]
    print(f"estimates measured on {plan['device']} ({plan['threads']} threads) in "
          f"{plan['calibration_s']:.1f} s of calibration; load average {plan['load_average']} on {plan['cpus']} CPUs"
          + (" -- the machine is busy, so these times are inflated by the other processes" if busy else ""))
    print(f"pretraining steps: {plan['pretrain_steps']}")
    print(f"fine-tuning steps: {plan['finetune_steps']}\n")
    print(f"{'step':<{w}}  {'work':<32} {'estimate':>10}  {'state':<10} calibration")
    for r in plan["rows"]:
        print(f"{r['step']:<{w}}  {r['what']:<32} {format_duration(r['estimate_s']):>10}  {r['state'] or 'to run':<10} "
              f"{r['calibration']}")
    print(f"\ntotal {format_duration(plan['total_s'])}; still to run {format_duration(plan['remaining_s'])}")
    return plan



# ------------------------------------------------------------------ CLI
def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", default=None,
                   help="comma list of model sizes: aliases (tiny, mini, small, medium, base) or L*_H*; default: the recipe's")
    p.add_argument("--corpus", default=None, help="corpus file or directory of *.txt (default: recipe data.corpus = ../shared/data/corpus)")
    p.add_argument("--vocab", default=None, help="vocab file (default: ../shared/data/vocab/google_zh_vocab.txt)")
    p.add_argument("--tasks", default=None, help="'all' or a comma list of tasks (default: the recipe's grid.tasks)")
    p.add_argument("--data_dir", default=None, help="task data directory (default: ../shared/data/tasks)")
    p.add_argument("--out", default="runs/reproduce", help="output directory; every step is cached here")
    p.add_argument("--recipe", default=None, help="a recipe TOML file layered over the reference (and the preset)")
    p.add_argument("--preset", default="reference", choices=PRESETS, help="budget preset layered over the reference recipe")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one recipe setting, e.g. --set stage1.total_steps=100 (repeatable)")
    p.add_argument("--jobs", type=int, default=None, help="fine-tuning cells in parallel (grid.jobs)")
    p.add_argument("--dry_run", action="store_true",
                   help="print the plan with the time of every step estimated from short measured runs scaled by "
                        "FLOPs (seconds; writes nothing outside a temp folder it removes)")
    p.add_argument("--calibration_steps", type=int, default=3, help="timed steps per model/stage in --dry_run")
    p.add_argument("--show_recipe", action="store_true", help="print the resolved recipe as TOML and exit")
    p.add_argument("--overwrite", action="store_true",
                   help="move an existing --out aside to OUT.old-<time> and start the study over (default: resume it)")
    p.add_argument("--no_progress", action="store_true", help="no progress bars")


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
        study = Study(recipe, args.out, progress=not args.no_progress)
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


__all__ = ["Study", "Runner", "estimate_plan", "print_plan", "configure", "run", "parity_check", "plot_loss_curves", "read_loss_curve",
           "resolve_recipe", "best_scores", "StepError"]
