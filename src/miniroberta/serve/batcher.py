"""Dynamic micro-batching for the server: items of concurrent requests run as one model call.

Each request submits its items (one per text) to an endpoint's ``MicroBatcher`` and awaits
their results. One worker task per endpoint takes the first queued item, then keeps collecting
until ``max_batch`` items are gathered or ``max_wait_ms`` have passed since that first item --
but it stops waiting early when no other request of this endpoint is still being parsed, so a
lone request is not held back (the wait only pays off when more items are on their way). While
a batch runs (in the single model thread), newly arriving items queue up and form the next
batch, so under load batches fill without any waiting at all.

Items carry a key (``top_k`` for fill-mask, pooling for embed, single/pair for classify); one
collected batch is split by key and each group is one call of the endpoint's ``run`` function
(the pipelines in ``infer/pipelines.py``, which sort by length and pad per batch). Items are checked
before they are submitted (``serve/requests.py``); if a call fails anyway, each of its items is run
again alone, so an exception fails only the request whose item caused it and every batch-mate is
answered. The worker keeps running.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import time
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Sequence

RunFn = Callable[[Hashable, list[Any]], Sequence[Any]]


@dataclass
class _Item:
    key: Hashable
    payload: Any
    future: asyncio.Future


class MicroBatcher:
    """Collects (key, item) pairs from concurrent requests and runs them in batches."""

    def __init__(self, name: str, run: RunFn, executor: concurrent.futures.Executor, max_batch: int = 32,
                 max_wait_ms: float = 5.0, on_batch: Callable[[str, int, float], None] | None = None) -> None:
        if max_batch < 1:
            raise ValueError(f"--max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"--max_wait_ms must be >= 0, got {max_wait_ms}")
        self.name = name
        self.run = run
        self.executor = executor
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.on_batch = on_batch
        self.inflight = 0            # requests of this endpoint inside the server (counted by the app)
        self._waiting = 0            # of those, the ones whose items are submitted
        self._queue: asyncio.Queue[_Item] | None = None
        self._task: asyncio.Task | None = None

    @property
    def arriving(self) -> int:
        """Requests of this endpoint being received or parsed: their items may join the batch."""
        return self.inflight - self._waiting

    # --------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._worker(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        """Cancel the worker; items still queued (none after a graceful drain) get an error."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        while self._queue is not None and not self._queue.empty():
            item = self._queue.get_nowait()
            if not item.future.done():
                item.future.set_exception(RuntimeError("server shutting down"))

    # ------------------------------------------------------------------------------ submit
    async def submit(self, items: Sequence[tuple[Hashable, Any]]) -> list[Any]:
        """Queue ``(key, payload)`` items; returns their results in order (raises the first error)."""
        if self._queue is None:
            raise RuntimeError(f"the {self.name} batcher is not running")
        loop = asyncio.get_running_loop()
        futures = []
        for key, payload in items:
            fut = loop.create_future()
            futures.append(fut)
            self._queue.put_nowait(_Item(key, payload, fut))
        self._waiting += 1
        try:
            return list(await asyncio.gather(*futures))
        finally:
            self._waiting -= 1

    # ------------------------------------------------------------------------------ worker
    async def _collect(self) -> list[_Item]:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        batch = [await self._queue.get()]
        deadline = loop.time() + self.max_wait
        while len(batch) < self.max_batch:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - loop.time()
            if remaining <= 0 or self.arriving <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), min(remaining, 0.001)))
            except asyncio.TimeoutError:
                continue
        return batch

    async def _worker(self) -> None:
        while True:
            batch = await self._collect()
            groups: dict[Hashable, list[_Item]] = {}
            for item in batch:
                groups.setdefault(item.key, []).append(item)
            for key, group in groups.items():
                live = [it for it in group if not it.future.done()]  # a cancelled request's items are skipped
                if live:
                    await self._run_group(key, live)

    def _call(self, key: Hashable, payloads: list[Any]) -> Sequence[Any]:
        results = self.run(key, payloads)
        if len(results) != len(payloads):
            raise RuntimeError(f"{self.name}: {len(results)} results for {len(payloads)} items")
        return results

    async def _run_group(self, key: Hashable, live: list[_Item]) -> None:
        """One model call for ``live``; when it fails, each item runs alone, so that an item the model
        cannot take fails only its own request and its batch-mates are answered."""
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        try:
            results = await loop.run_in_executor(self.executor, self._call, key, [it.payload for it in live])
        except Exception as e:  # noqa: BLE001 - reported to the requests, the worker lives on
            if len(live) > 1:
                for it in live:
                    if not it.future.done():
                        await self._run_group(key, [it])
                return
            if not live[0].future.done():
                live[0].future.set_exception(e)
            return
        finally:
            if self.on_batch is not None:
                self.on_batch(self.name, len(live), time.perf_counter() - t0)
        for it, res in zip(live, results):
            if not it.future.done():
                it.future.set_result(res)


__all__ = ["MicroBatcher"]
