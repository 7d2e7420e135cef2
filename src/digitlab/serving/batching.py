"""Bounded queues and dynamic micro-batching for a server on an asyncio event loop.

`Gate` bounds how many requests a server holds at once (a place in line each) and how many of them
do the heavy per-request work at the same time (a turn each); a request that finds no place is
refused at once with `Busy`, so latency never grows without bound. `MicroBatcher` stacks the items
that arrive together into one call of a batch function (one forward pass for many requests), as
production model servers do: a batch runs when it holds `max_batch` items or when its oldest item
has waited `max_wait_s`, and the next one gathers while it runs. Both live on the event loop and
need no locks; the batch function runs in one worker thread of its own.

Nothing here knows about images or models; digitlab.serving.app puts them together.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any


class Busy(Exception):
    """The server holds as many requests as it may: the caller should answer 503 with Retry-After."""

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Gate:
    """At most `working` requests do their heavy work at once and `waiting` more wait; beyond that, Busy.

    A ticket is a place in the whole line, a turn a go at the work. A request takes its ticket before
    its body arrives and holds it to the end, so the bodies held in memory (and the items waiting in a
    MicroBatcher behind the gate) are bounded by working + waiting.
    """

    def __init__(self, working: int, waiting: int, retry_after_s: int = 2):
        if working < 1 or waiting < 0:
            raise ValueError(f"a gate needs at least one working place and no negative queue, got {working}, {waiting}")
        self.places, self.held, self.retry_after_s = working + waiting, 0, retry_after_s
        self.turns = asyncio.Semaphore(working)

    @contextlib.asynccontextmanager
    async def ticket(self):
        """A place in line for the duration of the block; Busy at once when every place is taken."""
        if self.held >= self.places:
            raise Busy(
                f"busy: {self.places} requests are already being served or waiting; retry in {self.retry_after_s} s",
                self.retry_after_s,
            )
        self.held += 1
        try:
            yield
        finally:
            self.held -= 1


@dataclass
class _Waiting:
    item: Any
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)


class MicroBatcher:
    """`await batcher.submit(item)` -> process([...item...])[i]: items that arrive together share one call.

    `process(items)` takes a list and returns one result per item, in order; it runs in a single worker
    thread, one batch at a time (a forward pass is no faster run twice at once on the same cores). A batch
    holds at most `max_batch` items and waits at most `max_wait_s` after its first item arrived for more to
    join. An exception from `process` is raised to every caller of that batch. A caller that goes away
    (its task cancelled) only drops its own result.
    """

    def __init__(self, process: Callable[[list], Sequence], max_batch: int = 64, max_wait_s: float = 0.002):
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError(f"max_batch must be at least 1 and max_wait_s not negative, got {max_batch}, {max_wait_s}")
        self.process, self.max_batch, self.max_wait_s = process, max_batch, max_wait_s
        self.batches = 0  # batches run so far, and the items in them: how much batching happened
        self.items = 0
        self._waiting: list[_Waiting] = []
        self._full = asyncio.Event()
        self._runner: asyncio.Task | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="digitlab-batch")

    async def submit(self, item):
        """Queue `item`, wait for its batch to run, and return its result (or raise the batch's error)."""
        waiting = _Waiting(item, asyncio.get_running_loop().create_future())
        self._waiting.append(waiting)
        if len(self._waiting) >= self.max_batch:
            self._full.set()
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run())
        return await waiting.future

    def close(self) -> None:
        """Stop the worker thread (after the batch it is running, if any)."""
        self._thread.shutdown(wait=False, cancel_futures=True)

    async def _run(self) -> None:
        while self._waiting:
            left = self.max_wait_s - (time.monotonic() - self._waiting[0].arrived)
            if left > 0 and len(self._waiting) < self.max_batch:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._full.wait(), left)
            batch = [waiting for waiting in self._waiting[: self.max_batch] if not waiting.future.done()]
            del self._waiting[: self.max_batch]
            self._full.clear()
            if len(self._waiting) >= self.max_batch:
                self._full.set()
            if batch:
                await self._run_batch(batch)

    async def _run_batch(self, batch: list[_Waiting]) -> None:
        loop = asyncio.get_running_loop()
        self.batches, self.items = self.batches + 1, self.items + len(batch)
        try:
            results = await loop.run_in_executor(self._thread, self.process, [waiting.item for waiting in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"the batch function gave {len(results)} results for {len(batch)} items")
        except Exception as error:  # every caller of this batch hears of it; the batcher goes on
            for waiting in batch:
                if not waiting.future.done():
                    waiting.future.set_exception(error)
            return
        for waiting, result in zip(batch, results, strict=True):
            if not waiting.future.done():
                waiting.future.set_result(result)
