"""Background tasks of the lease engine: one set, one stop signal, failures logged with their cause."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
K = TypeVar("K")


class Tasks:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[object]] = set()
        self.stopping = asyncio.Event()

    def spawn(self, coro: Coroutine[object, object, T]) -> asyncio.Task[T]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[T]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("lease task failed", exc_info=task.exception())

    async def pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if the engine stops meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)

    async def stop(self) -> None:
        self.stopping.set()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(BaseException):
                await t


class SingleFlight(Generic[K, T]):
    """At most one run of a job per key: a caller that comes while it runs waits for the same result."""

    def __init__(self) -> None:
        self._running: dict[K, asyncio.Future[T]] = {}

    async def run(self, key: K, job: Callable[[], Awaitable[T]]) -> T:
        running = self._running.get(key)
        if running is None:
            running = asyncio.ensure_future(job())
            self._running[key] = running
            running.add_done_callback(lambda _: self._running.pop(key, None))
        return await asyncio.shield(running)
