"""The step runner of ``miniroberta reproduce``: each step runs once, with a manifest.

A step is ``Runner.run(step_id, settings, inputs, fn, ...)``. Its manifest ``OUT/steps/<id>.json`` records
the settings that shape its result, the SHA-256 of its inputs, package versions, the git revision, its
result and timings; the fingerprint is a hash of settings + input hashes. A re-run skips a step whose
manifest is ``done`` with the same fingerprint, resumes one left ``running`` (killed, crashed) and redoes
one whose settings or inputs changed (``fresh=True``: earlier outputs must be set aside).
``OUT/events.jsonl`` logs every decision (run / resume / redo / skip / done / failed).

Under ``torchrun`` rank 0 writes the manifests; the other ranks wait for them (``wait_done``) or join
a step that runs on every rank (``all_ranks``).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import time
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Callable

from miniroberta.version import __version__
from miniroberta.utils import JsonlWriter, atomic_write_json, format_duration, log, write_error

STEP_FORMAT = "miniroberta-reproduce-step/1"


class StepError(RuntimeError):
    """A step that failed; names the step and where its log and outputs are."""


class Interrupted(RuntimeError):
    """A step stopped by a signal after saving its state; the next run resumes it."""


def json_hash(obj: Any) -> str:
    """SHA-256 of ``obj`` as canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def versions() -> dict[str, str]:
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


class Runner:
    """Runs steps once: a done step with the same fingerprint is skipped, a running one resumed."""

    def __init__(self, out: str, rank: int = 0, world_size: int = 1) -> None:
        self.out = os.path.abspath(out)
        self.rank, self.world_size = rank, world_size
        self.steps_dir = os.path.join(self.out, "steps")
        try:
            os.makedirs(self.steps_dir, exist_ok=True)
            self.events = JsonlWriter(os.path.join(self.out, "events.jsonl") if rank == 0 else None)
        except OSError as e:     # disk full, read-only, permission: one line naming the folder
            raise write_error(self.out, e, True) from None
        self.env: dict[str, Any] = {"versions": versions(), "git_revision": git_revision(), "host": platform.node(),
                    "world_size": world_size}
        self.actions: dict[str, str] = {}

    def manifest_path(self, step_id: str) -> str:
        return os.path.join(self.steps_dir, f"{step_id}.json")

    def read_manifest(self, step_id: str) -> dict[str, Any] | None:
        return read_manifest(self.steps_dir, step_id)  # a torn one cannot happen (atomic writes): "not run"

    def done_manifest(self, step_id: str) -> dict[str, Any]:
        """The manifest of a step that ``state`` found (it must still be readable)."""
        m = self.read_manifest(step_id)
        if m is None:
            raise StepError(f"[{step_id}] its manifest {os.path.join(self.steps_dir, step_id + '.json')} disappeared "
                            f"or became unreadable while the study ran")
        return m

    def event(self, step_id: str, action: str, **kw: Any) -> None:
        self.actions[step_id] = action if action != "done" else self.actions.get(step_id, action)
        self.note(step_id, action, **kw)

    def note(self, step_id: str, action: str, **kw: Any) -> None:
        """One line of ``events.jsonl`` (a decision that is not a step's: the study's precision ...)."""
        path = self.events.path or ""
        try:
            self.events.write({"time": time.time(), "step": step_id, "action": action, **kw})
        except OSError as e:
            raise write_error(path, e, True) from None

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
        fingerprint = json_hash({"settings": settings, "inputs": inputs})
        if self.rank != 0:
            if not all_ranks:
                return self.wait_done(step_id, fingerprint)
            st = self.state(step_id, fingerprint)
            if st == "cached":
                return self.done_manifest(step_id)["result"]
            fn(st == "resume", False)  # rank 0 cleans and records; we only join the collective work
            return self.wait_done(step_id, fingerprint)
        st = self.state(step_id, fingerprint)
        if st == "cached" and complete is not None and not complete(self.done_manifest(step_id)):
            st = "resume"
        if st == "cached":
            m = self.done_manifest(step_id)
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



def read_manifest(steps_dir: str, step_id: str) -> dict[str, Any] | None:
    """A step's manifest without a ``Runner`` (nothing is created): what ``--dry_run`` reads."""
    p = os.path.join(steps_dir, f"{step_id}.json")
    if not os.path.isfile(p):
        return None
    try:
        with open(p, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


__all__ = ["Runner", "StepError", "Interrupted", "json_hash", "versions", "git_revision", "dist_env",
           "read_manifest", "STEP_FORMAT"]
