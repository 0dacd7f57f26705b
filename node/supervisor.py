"""Supervision of a node's parts: one exit stack for their cleanups, one task group for their loops, one stop signal.

Pattern: a part registers how to close it right where it is created, so a start that fails half-way closes exactly
what it created, in reverse order, and a stop never has to guess what exists. Every background loop belongs to the
one task group; a loop that fails is logged with its traceback, and an essential one stops the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from node.errors import NodeError, UnrecoverableError

log = logging.getLogger(__name__)


class PartFailed(UnrecoverableError):
    """An essential part of the node failed (or ended on its own); the node stopped."""


class _Stopping(Exception):
    """Raised inside the task group to end it: the group then cancels every task it runs."""


class Supervisor:
    """Runs the parts of a node as one unit, in one supervising task.

    ``start(assemble)`` runs ``assemble(self)`` inside one ``AsyncExitStack`` and, within it, one
    ``asyncio.TaskGroup``. While assembling, each part registers how to close it (``cleanup``) right after it is
    created, and background loops are started with ``spawn``. ``start`` returns when ``assemble`` has returned (the
    node is ready), or raises what made it fail after closing exactly what had been created.

    ``request_stop`` (or ``stop``) is the one stop signal: the group is ended (every loop is cancelled), then the
    parts close in reverse order of creation; a cleanup that fails is logged and the others still run. A stop
    requested while the parts are still being assembled cancels the assembly (``start`` then raises). A loop
    that raises is logged with its traceback; an essential loop that raises or returns also stops the node and
    names itself in ``failure``.
    """

    def __init__(self, name: str = "node") -> None:
        self.name = name
        self.created: list[str] = []  # parts in order of creation
        self.closed: list[str] = []  # parts in order of closing
        self.failure: str | None = None  # the essential part that stopped the node
        self._stop = asyncio.Event()
        self._stack: contextlib.AsyncExitStack | None = None
        self._group: asyncio.TaskGroup | None = None
        self._main: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None

    async def start(self, assemble: Callable[[Supervisor], Awaitable[None]]) -> None:
        if self._main is not None:
            raise RuntimeError(f"{self.name} was already started")
        self._ready = ready = asyncio.get_running_loop().create_future()
        self._main = main = asyncio.create_task(self._run(assemble, ready), name=self.name)
        try:
            await asyncio.wait([ready, main], return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            main.cancel()
            raise
        if not ready.done():
            if main.cancelled() and self._stop.is_set():
                raise NodeError(f"{self.name} was stopped while starting")
            main.result()  # raises what ended the start
            raise NodeError(f"{self.name} ended while starting")

    async def _run(self, assemble: Callable[[Supervisor], Awaitable[None]], ready: asyncio.Future[None]) -> None:
        error: Exception | None = None
        async with contextlib.AsyncExitStack() as stack:
            self._stack = stack
            try:
                async with asyncio.TaskGroup() as group:
                    self._group = group
                    try:
                        await assemble(self)
                        if self.failure is not None:
                            raise PartFailed(f"the {self.failure} of {self.name} failed while it was starting")
                    except Exception as exc:
                        error = exc
                        raise _Stopping from None
                    ready.set_result(None)
                    await self._stop.wait()
                    raise _Stopping
            except* _Stopping:
                pass
            finally:
                self._group = None
        self._stack = None
        if error is not None:
            raise error

    def cleanup(self, part: str, close: Callable[[], object]) -> None:
        """Register how to close ``part``, which was just created (``close`` may be sync or async)."""
        if self._stack is None:
            raise RuntimeError(f"{self.name} is not assembling")
        self.created.append(part)

        async def run() -> None:
            try:
                result = close()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("closing a part failed", extra={"part": part})
            finally:
                self.closed.append(part)

        self._stack.push_async_callback(run)

    def spawn(self, name: str, coro: Coroutine[Any, Any, object], *, essential: bool) -> None:
        """Run ``coro`` in the group until the node stops."""
        if self._group is None:
            coro.close()
            raise RuntimeError(f"{self.name} is not running")
        self._group.create_task(self._guard(name, coro, essential), name=f"{self.name}:{name}")

    async def _guard(self, name: str, coro: Coroutine[Any, Any, object], essential: bool) -> None:
        try:
            await coro
        except Exception:
            if essential:
                log.critical("essential part failed: the node stops", extra={"part": name}, exc_info=True)
                self._fail(name)
            else:
                log.error("background task failed", extra={"task": name}, exc_info=True)
            return
        if essential and not self._stop.is_set():
            log.critical("essential part ended: the node stops", extra={"part": name})
            self._fail(name)

    def _fail(self, name: str) -> None:
        if self.failure is None:
            self.failure = name
        self._stop.set()

    def request_stop(self) -> None:
        self._stop.set()
        if self._main is not None and self._ready is not None and not self._ready.done():
            self._main.cancel()  # still assembling: do not wait for it to finish

    async def wait(self) -> str | None:
        """Until the node has stopped; returns the essential part that failed, or None after a requested stop."""
        if self._main is not None:
            await asyncio.wait([self._main])
        return self.failure

    async def stop(self) -> None:
        """Stop and close everything. Safe before ``start``, after a failed start, and when called twice."""
        self.request_stop()
        if self._main is not None:
            await asyncio.wait([self._main])
            if not self._main.cancelled():
                self._main.exception()  # already raised by start(); read so asyncio does not warn about it
