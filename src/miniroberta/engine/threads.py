"""How many threads a process uses, and how long its OpenMP threads spin: fair on shared cores.

Measured on this project's 2-core machines (``bench/bench_threads.py``, docs/performance.md):

* OpenMP (libgomp, which torch's CPU wheels use) lets a thread that waits for work spin 300,000 times
  before it sleeps. With one process per machine that saves a wake-up between two operations; with two
  (two training runs, a run beside the test suite) the spinning threads take the cores the other
  process's working threads need, and both crawl: two tiny pretraining runs side by side delivered
  0.38-0.44 of one run's throughput. Sleeping at once (``OMP_WAIT_POLICY=PASSIVE``) fixes the pair
  (1.14) but makes every wake-up a system call, which in this project's VMs cost a run alone 11-25 %.
  A short spin (``GOMP_SPINCOUNT``, :data:`DEFAULT_SPINCOUNT` = 1000) keeps the waits between back-to-back
  operations spinning and gives the core away soon when another process needs it: pair 1.11, a run alone
  1.10x the runtime default's speed (its long spins also took the core from the batch-preparation
  thread). It has to be in the
  environment before the OpenMP runtime starts, i.e. before ``import torch``: :func:`set_wait_policy`
  is called by ``import miniroberta`` (and so by the CLI before any command imports torch) and leaves
  alone a policy or spin count the user set.
* The thread count is the number of cores this process may run on (its CPU affinity mask, which
  ``taskset``, cgroups' cpusets and :func:`pin` narrow), divided among the processes one command starts
  on the same machine (DDP ranks, grid workers) -- never more threads than cores.

Both change speed only: the thread count does not depend on load, and the spin count changes no
arithmetic (bf16 with several threads is not bit-reproducible run to run anyway: docs/performance.md).
"""
from __future__ import annotations

import os
from typing import Any

WAIT_POLICY_ENV = "OMP_WAIT_POLICY"
SPINCOUNT_ENV = "GOMP_SPINCOUNT"
DEFAULT_SPINCOUNT = "1000"


def set_wait_policy(spincount: str = DEFAULT_SPINCOUNT) -> str:
    """Put ``GOMP_SPINCOUNT`` in the environment unless the user chose a wait policy or a spin count;
    returns what is in force. Takes effect only in a process whose OpenMP runtime has not started yet
    (and in its children)."""
    if WAIT_POLICY_ENV in os.environ or SPINCOUNT_ENV in os.environ:   # the user's choice (even an empty one)
        return describe_policy()
    os.environ[SPINCOUNT_ENV] = spincount
    return describe_policy()


def describe_policy() -> str:
    pol, spin = os.environ.get(WAIT_POLICY_ENV), os.environ.get(SPINCOUNT_ENV)
    if spin:
        return f"{SPINCOUNT_ENV}={spin}" + (f", {WAIT_POLICY_ENV}={pol}" if pol else "")
    return f"{WAIT_POLICY_ENV}={pol}" if pol else "the OpenMP runtime's default"


def available_cores() -> list[int]:
    """The CPUs this process may run on (its affinity mask; all CPUs where there is no such call)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def default_threads(share: int = 1) -> int:
    """Threads for one of ``share`` processes started together on this machine."""
    return max(1, len(available_cores()) // max(1, share))


def pin(index: int, share: int) -> list[int]:
    """Restrict this process to the ``index``-th of ``share`` disjoint slices of the available cores
    (no slice is empty: with more processes than cores, slices wrap around). Returns the slice."""
    cores = available_cores()
    n = max(1, len(cores) // max(1, share))
    start = (index * n) % len(cores)
    mine = cores[start:start + n] or cores[:n]
    try:
        os.sched_setaffinity(0, mine)
    except (AttributeError, OSError):
        pass
    return mine


def configure_threads(threads: int | None = None, share: int = 1) -> dict[str, Any]:
    """Set torch's intra-op threads (``threads``, else :func:`default_threads`) and return what is in
    force, for the run's log and metrics."""
    import torch  # noqa: PLC0415 -- this module is imported before torch, to set the OpenMP policy first
    n = int(threads) if threads else default_threads(share)
    if n < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return {"threads": n, "cores": len(available_cores()), "share": share, "openmp_wait": describe_policy()}


__all__ = ["set_wait_policy", "describe_policy", "available_cores", "default_threads", "pin", "configure_threads",
           "DEFAULT_SPINCOUNT", "WAIT_POLICY_ENV", "SPINCOUNT_ENV"]
