"""How many threads a process uses, and how its OpenMP threads wait: fair on shared cores.

Two facts measured on this project's 2-core machines (``bench/bench_threads.py``):

* OpenMP's default wait policy lets an idle worker thread spin for a while before it sleeps. With one
  process per machine that saves a wake-up; with two (two training runs, a grid's workers, tests beside a
  run) the spinning threads take the cores the other process's working threads need, and both crawl
  (two tiny pretraining runs side by side: 0.50 of the ideal throughput). The passive policy puts waiting
  threads to sleep at once. It has to be in the environment before the OpenMP runtime starts, i.e. before
  ``import torch``: :func:`set_wait_policy` is called by ``import miniroberta`` (and so by the CLI before
  any command imports torch) and keeps a value the user set.
* The thread count is the number of cores this process may run on (its CPU affinity mask, which
  ``taskset``, cgroups' cpusets and :func:`pin` narrow), divided among the processes one command starts
  on the same machine (DDP ranks, grid workers) -- never more threads than cores.

The policy changes speed only, never results: torch's CPU kernels give the same numbers for a given
thread count, and the count does not depend on load.
"""
from __future__ import annotations

import os
from typing import Any

WAIT_POLICY_ENV = "OMP_WAIT_POLICY"
DEFAULT_WAIT_POLICY = "PASSIVE"


def set_wait_policy(policy: str = DEFAULT_WAIT_POLICY) -> str:
    """Put ``OMP_WAIT_POLICY`` in the environment unless the user set it; returns the value in force.
    Takes effect only in a process whose OpenMP runtime has not started yet (and in its children)."""
    return os.environ.setdefault(WAIT_POLICY_ENV, policy)


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
    return {"threads": n, "cores": len(available_cores()), "share": share,
            "omp_wait_policy": os.environ.get(WAIT_POLICY_ENV, "(runtime default)")}


__all__ = ["set_wait_policy", "available_cores", "default_threads", "pin", "configure_threads",
           "DEFAULT_WAIT_POLICY", "WAIT_POLICY_ENV"]
