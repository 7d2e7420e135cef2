"""Bounded queues and dynamic micro-batching for a server on an asyncio event loop.

`Gate` bounds how many requests a server holds at once (a place in line each), how many of them
do the heavy per-request work at the same time (a turn each) and what their work may cost together, and
shares both fairly between clients; a request that finds no place is refused at once with `Busy`, so
latency never grows without bound. `MicroBatcher` stacks the items
that arrive together into one call of a batch function (one forward pass for many requests), as
production model servers do: a batch runs when it holds `max_batch` items or when its oldest item
has waited `max_wait_s`, and the next one gathers while it runs. Both live on the event loop and
need no locks; the batch function runs in one worker thread of its own.

Nothing here knows about images or models; digitlab.serving.app puts them together.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import math
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

    A ticket is a place in the whole line, a turn a go at the work. A request takes its ticket once its body
    is in hand (a client that is slow to send holds no place) and keeps it to the end, so the items waiting in
    a MicroBatcher behind the gate are bounded by working + waiting. Places are shared fairly between clients:
    when the line is full, a client holding fewer places than the busiest one takes the newest waiting place of
    that one (whose request gets Busy), so no client keeps more than its part of the line while others want in;
    and a freed turn goes to the waiting request of the client with the fewest turns under way. A turn also
    costs: the costs of the turns under way stay within `budget` (say, the memory the decoders may hold), and a
    request whose cost does not fit waits for others to end; one alone always runs.
    """

    def __init__(self, working: int, waiting: int, retry_after_s: int = 2, budget: float = math.inf):
        if working < 1 or waiting < 0:
            raise ValueError(f"a gate needs at least one working place and no negative queue, got {working}, {waiting}")
        self.places, self.working, self.retry_after_s, self.budget = working + waiting, working, retry_after_s, budget
        self.tickets: list[Ticket] = []
        self.spent = 0.0  # the costs of the turns under way
        self.evicted = 0  # places taken back from a busier client, so far

    @property
    def held(self) -> int:
        """Places taken now."""
        return len(self.tickets)

    @contextlib.asynccontextmanager
    async def ticket(self, client: str = ""):
        """A place in line for `client` for the duration of the block; Busy at once when every place is taken
        and no busier client has a waiting one to give up."""
        if len(self.tickets) >= self.places:
            victim = self._busier_than(client)
            if victim is None:
                raise self._busy()
            self.tickets.remove(victim)
            self.evicted += 1
            victim.future.set_exception(self._busy(f"busy: another client's turn; retry in {self.retry_after_s} s"))
        ticket = Ticket(client, asyncio.get_running_loop().create_future())
        self.tickets.append(ticket)
        try:
            yield ticket
        finally:
            if ticket in self.tickets:
                self.tickets.remove(ticket)
            if not ticket.future.done():
                ticket.future.cancel()
            self._next()

    @contextlib.asynccontextmanager
    async def turn(self, ticket: Ticket, cost: float = 0.0):
        """Wait for a go at the work (fair between clients, within the budget) and hold it for the block;
        Busy if a less busy client takes this ticket's place meanwhile."""
        ticket.cost, ticket.asked = cost, True
        self._next()
        await ticket.future  # raises Busy when evicted
        try:
            yield
        finally:
            ticket.running = False
            self.spent -= ticket.cost
            self._next()

    def _busy(self, message: str | None = None) -> Busy:
        default = f"busy: {self.places} requests are already being served or waiting; retry in {self.retry_after_s} s"
        return Busy(message or default, self.retry_after_s)

    def _busier_than(self, client: str) -> Ticket | None:
        """The newest waiting ticket of the client holding the most places, if it holds more than `client` would."""
        holding = collections.Counter(ticket.client for ticket in self.tickets)
        waiting = [ticket for ticket in self.tickets if not ticket.running and not ticket.future.done()]
        if not waiting:
            return None
        busiest = max(waiting, key=lambda ticket: (holding[ticket.client], ticket.number))
        return busiest if holding[busiest.client] > holding[client] + 1 else None

    def _next(self) -> None:
        """Hand out turns: to the asking ticket of the client with the fewest running, while one fits."""
        while True:
            running = [ticket for ticket in self.tickets if ticket.running]
            asking = [
                ticket for ticket in self.tickets if ticket.asked and not ticket.running and not ticket.future.done()
            ]
            if not asking or len(running) >= self.working:
                return
            under_way = collections.Counter(ticket.client for ticket in running)
            chosen = min(asking, key=lambda ticket: (under_way[ticket.client], ticket.number))
            if running and self.spent + chosen.cost > self.budget:
                return  # it waits for room; nothing jumps ahead of it
            chosen.running, self.spent = True, self.spent + chosen.cost
            chosen.future.set_result(None)


_numbers = itertools.count()


@dataclass(eq=False)
class Ticket:
    """One request's place in a Gate's line."""

    client: str
    future: asyncio.Future
    cost: float = 0.0
    asked: bool = False  # waiting for, or holding, a turn
    running: bool = False
    number: int = field(default_factory=lambda: next(_numbers))


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
