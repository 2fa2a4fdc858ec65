"""Small shared helpers: atomic writes (pid-tagged temp names, umask permissions, one-line disk errors),
hashing, JSONL metrics, progress lines."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
from typing import IO, Any, Callable, Iterator

# The data-root resolver lives in data/paths.py (which imports nothing from the package); this is its old
# name, kept for the callers not yet switched (study/quickstart.py, study/sweep.py, interop/export.py, data/tasks.py).


def fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- temp names, permissions, errors
# Temp files and folders made by the atomic writers are named ``.<target>.<host>-<pid>-<random>.tmp`` (and
# ``.old`` for a folder being replaced), so that a later run can tell a dead run's leftovers from a live
# writer's (``miniroberta.outputs.clean_stale_temps``).
TEMP_RE = re.compile(r"^\.(?P<target>.+)\.(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[A-Za-z0-9_]+\.(?P<kind>tmp|old)$")
_UMASK: int | None = None


def host_tag() -> str:
    """8 hex digits naming this host in temp names (pids are only meaningful on their own host)."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def temp_prefix(path: str) -> str:
    """``.<name>.<host>-<pid>-`` for temp files of ``path``, created in its folder."""
    return f".{os.path.basename(path)}.{host_tag()}-{os.getpid()}-"


def umask() -> int:
    """The process umask (read once; ``os.umask`` can only be read by setting it)."""
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0o022)
        os.umask(_UMASK)
    return _UMASK


def file_mode() -> int:
    return 0o666 & ~umask()


def dir_mode() -> int:
    return 0o777 & ~umask()


class OutputWriteError(RuntimeError):
    """Writing an output failed for a reason outside the program (disk full, read-only, no permission);
    one line naming the path, the free space and what is intact."""


def free_space(path: str) -> int | None:
    """Bytes available to this user on the file system holding ``path`` (or its nearest existing parent)."""
    p = os.path.abspath(path)
    while p and not os.path.exists(p):
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    try:
        st = os.statvfs(p)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _human_bytes(n: int | None) -> str:
    if n is None:
        return "unknown"
    x = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if x < 1000 or unit == "TB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1000.0
    return f"{x:.1f} TB"


def write_error(path: str, e: OSError, existed: bool) -> OSError | OutputWriteError:
    """``OutputWriteError`` for disk full / read-only / permission errors, else ``e`` unchanged."""
    intact = (f"the previous {path} is intact" if existed else f"nothing was written to {path}")
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return OutputWriteError(f"cannot write {path}: no space left on the device ({_human_bytes(free_space(path))} "
                                f"free there); {intact} -- free some space or write elsewhere, then re-run")
    if e.errno == errno.EROFS:
        return OutputWriteError(f"cannot write {path}: the file system is read-only; {intact} -- choose an "
                                f"output on a writable disk")
    if e.errno in (errno.EACCES, errno.EPERM):
        where = e.filename or os.path.dirname(os.path.abspath(path))
        return OutputWriteError(f"cannot write {path}: permission denied on {where}; {intact} -- fix the "
                                f"permissions (e.g. chmod u+w) or choose another output")
    return e


@contextlib.contextmanager
def _translate_write_errors(path: str, existed: bool) -> Iterator[None]:
    try:
        yield
    except OSError as e:
        err = write_error(path, e, existed)
        if err is e:
            raise
        raise err from None


def _makedirs(d: str, target: str) -> None:
    with _translate_write_errors(target, os.path.exists(target)):
        os.makedirs(d, exist_ok=True)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None,
                 before_replace: Callable[[], None] | None = None) -> Iterator[IO]:
    """Write to a unique temp file beside ``path``; fsync and rename on success, delete on error.
    A crash never leaves a half-written ``path``; the temp name carries host and pid (see ``TEMP_RE``)
    so the next run on ``path`` removes a dead run's temp file. The file gets the umask's mode
    (0644 by default), not mkstemp's 0600. Disk full, read-only and permission errors become one
    ``OutputWriteError`` line naming ``path``. ``before_replace`` runs once the data is on disk, just
    before the rename (the integrity manifest of the old file is dropped there)."""
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    existed = os.path.exists(path)
    _makedirs(d, path)
    with _translate_write_errors(path, existed):
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=d)
    try:
        with _translate_write_errors(path, existed):
            os.fchmod(fd, file_mode())
            with os.fdopen(fd, mode, encoding=encoding if "b" not in mode else None) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            if before_replace is not None:
                before_replace()
            os.replace(tmp, path)
        fsync_dir(d)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[str]:
    """Build a directory under a unique temp name beside ``path`` and rename it into place
    when the block succeeds. With ``overwrite`` an existing ``path`` is replaced (the old one is
    renamed to a pid-tagged ``.old`` name for the moment of the swap and then deleted; if the
    process dies in between, ``outputs.clean_stale_temps`` puts it back). Folders get the umask's mode
    (0755 by default), not mkdtemp's 0700."""
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    existed = os.path.exists(path)
    _makedirs(parent, path)
    if existed and not overwrite:
        raise FileExistsError(f"{path} already exists (pass --overwrite to replace it)")
    with _translate_write_errors(path, existed):
        tmp = tempfile.mkdtemp(prefix=temp_prefix(path), suffix=".tmp", dir=parent)
        os.chmod(tmp, dir_mode())
    try:
        yield tmp
        with _translate_write_errors(path, existed):
            for root, dirs, files in os.walk(tmp):
                for name in dirs:
                    os.chmod(os.path.join(root, name), dir_mode())
                for name in files:
                    with open(os.path.join(root, name), "rb") as f:
                        os.fsync(f.fileno())
            if os.path.exists(path):
                old = os.path.join(parent, temp_prefix(path) + uuid.uuid4().hex[:8] + ".old")
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
                if os.path.exists(old):
                    shutil.rmtree(old)       # raise rather than leave a hidden leftover
            else:
                os.replace(tmp, path)
        fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def terminate_as_exit() -> Iterator[None]:
    """SIGTERM raises ``SystemExit(143)`` while the block runs, so ``finally`` clauses and the atomic
    writers' cleanup run (temp files and folders are removed at once, not left for the next run); the
    previous handler is restored after. A no-op outside the main thread."""

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    try:
        prev = signal.signal(signal.SIGTERM, handler)
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, prev)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def sha256_bytes(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


class JsonlWriter:
    """Append-only metrics file; each record is one line, flushed immediately."""

    def __init__(self, path: str | os.PathLike | None) -> None:
        self.path = os.fspath(path) if path else None
        self.f = None
        if self.path:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            self.f = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        if self.f is not None:
            self.f.write(json.dumps(record, ensure_ascii=False) + "\n")
            self.f.flush()

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None


def format_duration(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:d}:{s:02d}"


def log(msg: str, stream: IO | None = None) -> None:
    stream = stream or sys.stderr
    stream.write(f"[{time.strftime('%H:%M:%S')}] {msg}\n")
    stream.flush()


def human_count(n: float) -> str:
    for unit in ("", "K", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.3g}{unit}"
        n /= 1000.0
    return f"{n:.3g}P"
