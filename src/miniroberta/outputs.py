"""One writer per output, no silent overwrite, no leftovers.

``claim_output(path, resume=..., overwrite=...)`` is called once when a command starts writing an
output (a dataset folder, a checkpoint prefix, a grid or study folder). It

1. takes an exclusive lock (``filelock``) on ``.<name>.lock`` beside ``path`` for the life of the run and
   records the holder (pid, host, command, start time) in ``.<name>.owner.json``; a second run on the
   same output fails at once with ``OutputBusy`` naming that holder. The lock is the kernel's
   (``flock``), so a killed run never leaves a stale lock; the empty ``.lock`` file itself stays;
2. removes the temp files of dead runs on this output (``clean_stale_temps``): the atomic writers
   name them ``.<target>.<host>-<pid>-<random>.tmp``; one whose pid is gone on this host is deleted,
   and a folder left half-swapped by ``atomic_dir`` is put back;
3. refuses an output that already holds an earlier run (``OutputExists``) unless ``resume`` (continue
   it) or ``overwrite`` (move it aside to ``<name>.old-<time>`` with ``retire`` and say so).

Use it as a context manager, or keep the returned ``Claim`` and call ``release()``::

    with claim_output(args.output_model_path, resume=args.resume, overwrite=args.overwrite,
                      command="pretrain", related=[state_path]) as claim:
        ...  # claim.existed: there was an earlier run (only possible with resume)
"""
from __future__ import annotations

import datetime
import json
import os
import shutil
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

import filelock

from miniroberta.utils import TEMP_RE, OutputWriteError, atomic_write_json, host_tag, log, write_error


class OutputError(RuntimeError):
    """An output that cannot be claimed; the message says why and how to proceed."""


class OutputBusy(OutputError):
    """Another live run holds the output."""


class OutputExists(OutputError, FileExistsError):
    """The output holds an earlier run and neither resume nor overwrite was asked for."""


def lock_path(path: str) -> str:
    path = os.path.abspath(os.fspath(path))
    return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.lock")


def owner_path(path: str) -> str:
    path = os.path.abspath(os.fspath(path))
    return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.owner.json")


def read_owner(path: str) -> dict[str, Any]:
    """The holder recorded for ``path`` (empty when unknown)."""
    try:
        with open(owner_path(path), encoding="utf-8") as f:
            d = json.load(f)
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


def _live_owner(path: str) -> dict[str, Any]:
    """The holder's record, unless it is missing or left by a killed run (its pid gone on this host)."""
    info = read_owner(path)
    live = info and (info.get("host") != socket.gethostname() or pid_alive(int(info.get("pid") or 0)))
    return info if live else {}


def describe_owner(info: dict[str, Any]) -> str:
    if not info:
        return "another process (holder not recorded yet)"
    cmd = f" ({info['command']})" if info.get("command") else ""
    return f"pid {info.get('pid')} on host {info.get('host')}{cmd}, since {info.get('started', '?')}"


@dataclass
class Claim:
    """A held output. ``existed``: the output held an earlier run (continued with ``resume``);
    ``retired``: where ``overwrite`` moved the earlier outputs."""

    path: str
    lock: filelock.BaseFileLock
    existed: bool = False
    retired: list[str] = field(default_factory=list)
    removed_temps: list[str] = field(default_factory=list)

    def release(self) -> None:
        if self.lock.is_locked:
            try:
                os.unlink(owner_path(self.path))
            except OSError:
                pass
            self.lock.release()

    def __enter__(self) -> "Claim":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _acquire(path: str, command: str | None) -> filelock.BaseFileLock:
    lp = lock_path(path)
    parent = os.path.dirname(lp)
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as e:
        raise _as_output_error(path, e) from None
    lock = filelock.FileLock(lp, timeout=0)
    deadline = time.monotonic() + 2.0
    while True:
        try:
            lock.acquire()
            break
        except filelock.Timeout:
            # a holder that has just taken the lock records itself a moment later, and one that is just
            # finishing frees it: look again for a short while before naming whoever holds it
            info = _live_owner(path)
            if info or time.monotonic() >= deadline:
                raise OutputBusy(f"{path} is being written by {describe_owner(info)}; two runs must not write "
                                 f"one output -- wait for that run to finish (or stop it), or choose another "
                                 f"output") from None
            time.sleep(0.05)
        except OSError as e:
            raise _as_output_error(path, e) from None
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command or " ".join(sys.argv[:3]),
            "started": datetime.datetime.now().isoformat(timespec="seconds")}
    try:
        atomic_write_json(owner_path(path), info)
    except (OSError, OutputWriteError) as e:
        lock.release()
        raise (e if isinstance(e, OutputWriteError) else _as_output_error(path, e)) from None
    return lock


def _as_output_error(path: str, e: OSError) -> Exception:
    err = write_error(path, e, os.path.exists(path))
    return err if isinstance(err, OutputWriteError) else OutputError(f"cannot claim {path}: {e}")


def _holds_run(path: str) -> bool:
    """An existing file, or a folder with anything but our own lock/owner files in it."""
    if os.path.isdir(path):
        return any(not n.endswith((".lock", ".owner.json")) for n in os.listdir(path))
    return os.path.exists(path)


def claim_output(path: str | os.PathLike, resume: bool = False, overwrite: bool = False,
                 related: Iterable[str | os.PathLike] = (), command: str | None = None,
                 can_resume: bool = True, what: str = "the output of an earlier run",
                 check_existing: bool = True) -> Claim:
    """Lock ``path`` for this run, clean dead runs' temp files, refuse an earlier run's output unless
    ``resume`` or ``overwrite``. ``related``: other paths that belong to this output (e.g. the
    training-state file and step checkpoints ``<path>-<step>``) -- they count as "an earlier run" and
    are retired with it. ``can_resume``: the command has a ``--resume``; only named in the message.
    ``check_existing=False``: lock and clean only (the caller decides about existing files)."""
    if resume and overwrite:
        raise OutputError("--resume and --overwrite contradict each other; pass one of them")
    path = os.path.abspath(os.fspath(path))
    lock = _acquire(path, command)
    claim = Claim(path, lock)
    try:
        claim.removed_temps = clean_stale_temps(path)
        rel = [os.path.abspath(os.fspath(p)) for p in related]
        existing = [p for p in [path, *rel] if _holds_run(p)] if check_existing else []
        if existing and overwrite:
            claim.retired = [d for d in (retire(p, reason="--overwrite") for p in existing) if d]
        elif existing and resume:
            claim.existed = True
        elif existing:
            how = ("pass --resume to continue it, or --overwrite to move it aside to "
                   if can_resume else "pass --overwrite to move it aside to ")
            raise OutputExists(f"{existing[0]} already exists ({what}); {how}"
                               f"{os.path.basename(existing[0])}.old-<time> and start over, or choose another output")
    except BaseException:
        claim.release()
        raise
    return claim


def run_files(output_model_path: str | os.PathLike) -> list[str]:
    """The files a pretraining run writes beside its ``--output_model_path`` prefix besides the prefix
    itself: the training state ``<prefix>.state.pt``, step checkpoints ``<prefix>-<step>`` and their
    integrity manifests -- the ``related`` paths of its claim (an earlier run holds any of them)."""
    prefix = os.path.abspath(os.fspath(output_model_path))
    d, base = os.path.dirname(prefix), os.path.basename(prefix)
    try:
        names = os.listdir(d)
    except OSError:
        return []
    out = []
    for n in sorted(names):
        core = n[: -len(".sha256.json")] if n.endswith(".sha256.json") else n
        if core == base + ".state.pt" or (core.startswith(base + "-") and core[len(base) + 1:].isdigit()):
            out.append(os.path.join(d, n))
    return out


def retire(path: str, reason: str = "settings or inputs changed") -> str | None:
    """Move ``path`` aside to ``<path>.old-<YYYYmmdd-HHMMSS>`` (never delete: a pretraining stage or a
    grid can be days of work) and say so. Returns the new name, or None when ``path`` does not exist."""
    path = os.fspath(path)
    if not os.path.lexists(path):
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = f"{path}.old-{stamp}"
    n = 1
    while os.path.lexists(dest):
        dest = f"{path}.old-{stamp}-{n}"
        n += 1
    try:
        os.replace(path, dest)
    except OSError as e:
        raise _as_output_error(path, e) from None
    log(f"{reason}: kept the previous {path} as {dest}")
    return dest


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def clean_stale_temps(path: str | os.PathLike) -> list[str]:
    """Remove temp files/folders of dead runs whose target name starts with ``basename(path)`` (so the
    temps of ``<path>``, ``<path>-<step>`` and ``<path>.state.pt`` all count). Only temps made on this
    host by a pid that no longer runs are touched. A ``.old`` folder whose target is missing (a run died
    in the middle of ``atomic_dir``'s swap) is renamed back. Returns what was removed or restored."""
    path = os.path.abspath(os.fspath(path))
    parent, base = os.path.dirname(path), os.path.basename(path)
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    me = host_tag()
    done = []
    for n in sorted(names):
        m = TEMP_RE.match(n)
        if not m or not m["target"].startswith((base, "." + base)) or m["host"] != me:
            continue
        pid = int(m["pid"])
        if pid == os.getpid() or pid_alive(pid):
            continue
        full = os.path.join(parent, n)
        target = os.path.join(parent, m["target"])
        try:
            if m["kind"] == "old" and not os.path.lexists(target):
                os.replace(full, target)
                log(f"restored {target} from an interrupted replacement ({n})")
            elif os.path.isdir(full) and not os.path.islink(full):
                shutil.rmtree(full)
            else:
                os.unlink(full)
        except OSError as e:
            log(f"warning: cannot remove the stale temp {full} ({e})")
            continue
        done.append(full)
    if done:
        log(f"removed {len(done)} temp file(s) left by stopped runs beside {path}")
    return done


__all__ = ["claim_output", "Claim", "run_files", "OutputError", "OutputBusy", "OutputExists", "retire", "clean_stale_temps",
           "pid_alive", "lock_path", "owner_path", "read_owner"]
