"""The only place where asyncio meets trio.

libp2p runs in a trio event loop on its own thread (``anyio.from_thread.start_blocking_portal(backend="trio")``).
- asyncio -> trio: ``BlockingPortal.call_async`` (anyio >= 4.16), which schedules the call in the trio loop and
  awaits its result without blocking the asyncio loop; cancelling the asyncio caller cancels the trio task.
  The few calls that must block (starting the portal thread, spawning a host) go through ``asyncio.to_thread``.
- trio -> asyncio: ``loop.call_soon_threadsafe`` into a bounded ``asyncio.Queue``; what does not fit is
  dropped and counted (``gpunet_p2p_bridge_dropped_total``). Protocol handlers written as asyncio coroutines
  are run with ``asyncio.run_coroutine_threadsafe`` and awaited from trio through the trio token.
Only the frozen dataclasses of ``models`` (bytes, ints, strs) and bytes cross; no libp2p object leaks out.

One ``P2PRuntime`` (one thread) can host several nodes: the tests and the benchmark run many nodes in one
portal. A node given no runtime makes its own and shuts it down on ``stop()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future
from typing import Any

import trio
from anyio.from_thread import BlockingPortal, start_blocking_portal
from prometheus_client import CollectorRegistry

from node.types import Validation

from .config import P2PConfig
from .errors import NotRunning
from .host import P2PHost
from .metrics import P2PMetrics
from .models import GossipMessage, PeerInfo

logger = logging.getLogger(__name__)

AsyncHandler = Callable[[str, bytes], Awaitable[bytes | None]]


class P2PRuntime:
    """A trio thread (blocking portal) shared by one or more nodes. Use as ``async with P2PRuntime() as rt``."""

    def __init__(self) -> None:
        self._cm: contextlib.AbstractContextManager[BlockingPortal] | None = None
        self._portal: BlockingPortal | None = None
        self._lock = threading.Lock()

    async def start(self) -> None:
        await asyncio.to_thread(self._start_sync)

    def _start_sync(self) -> None:
        with self._lock:
            if self._portal is None:
                cm = start_blocking_portal(backend="trio", name="gpunet-p2p")
                self._portal = cm.__enter__()
                self._cm = cm

    async def close(self) -> None:
        await asyncio.to_thread(self._close_sync)

    def _close_sync(self) -> None:
        with self._lock:
            cm, self._cm, self._portal = self._cm, None, None
        if cm is not None:
            cm.__exit__(None, None, None)

    async def __aenter__(self) -> P2PRuntime:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def portal(self) -> BlockingPortal:
        if self._portal is None:
            raise NotRunning("p2p runtime is not started")
        return self._portal

    async def call(self, func: Callable[..., Any], *args: Any) -> Any:
        """Run ``func(*args)`` (sync or async) in the trio thread; await the result without blocking asyncio."""
        return await self.portal.call_async(func, *args)

    async def spawn(self, host: P2PHost) -> Future:
        """Start ``host.run`` in the trio thread; return once it listens (a future of its end)."""
        portal = self.portal
        future, _ = await asyncio.to_thread(portal.start_task, host.run)
        return future


class P2PNode:
    """The asyncio face of a gossip node.

    ``validate(data, sender_peer_id) -> Validation`` must be synchronous and fast: it runs on the trio thread
    for every gossiped or synced message. ``live_offers()`` is called on the trio thread too (it must be
    thread-safe, e.g. return a snapshot list).
    """

    def __init__(
        self,
        config: P2PConfig,
        validate: Callable[[bytes, str], Validation],
        live_offers: Callable[[], list[bytes]] = list,
        *,
        runtime: P2PRuntime | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.config = config
        self.metrics = P2PMetrics(registry)
        self._own_runtime = runtime is None
        self._runtime = runtime if runtime is not None else P2PRuntime()
        self._host = P2PHost(config, validate, live_offers, on_message=self._from_trio, metrics=self.metrics)
        self._handlers: dict[str, AsyncHandler] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[GossipMessage] = asyncio.Queue(maxsize=config.bridge_queue_size)
        self._done: Future | None = None

    # ---- lifecycle -------------------------------------------------------------------------------------

    @property
    def peer_id(self) -> str:
        return self._host.peer_id

    @property
    def listen_addrs(self) -> tuple[str, ...]:
        """Full multiaddrs, each ending in /p2p/<peer id>."""
        return self._host.listen_addrs

    @property
    def topic(self) -> str:
        return self.config.topic

    async def start(self) -> None:
        if self._done is not None:
            raise RuntimeError("node already started")
        self._loop = asyncio.get_running_loop()
        if self._own_runtime:
            await self._runtime.start()
        try:
            self._done = await self._runtime.spawn(self._host)
        except BaseException:
            if self._own_runtime:
                await self._runtime.close()
            raise

    async def stop(self) -> None:
        if self._done is None:
            return
        done, self._done = self._done, None
        with contextlib.suppress(NotRunning):
            await self._runtime.call(self._host.stop)
        try:
            await asyncio.wrap_future(done)
        except Exception:
            logger.exception("p2p host ended with an error")
        finally:
            if self._own_runtime:
                await self._runtime.close()

    async def wait_ended(self) -> None:
        """Return when the host stops running (raise what ended it); cancelling the wait leaves the host running."""
        if self._done is None:
            raise NotRunning("p2p node is not started")
        await asyncio.shield(asyncio.wrap_future(self._done))

    async def __aenter__(self) -> P2PNode:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- trio -> asyncio ---------------------------------------------------------------------------------

    def _from_trio(self, msg: GossipMessage) -> None:
        """Called on the trio thread: never blocks."""
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._enqueue, msg)
        except RuntimeError:  # the asyncio loop is closed
            self.metrics.bridge_dropped.labels("message").inc()

    def _enqueue(self, msg: GossipMessage) -> None:
        try:
            self._queue.put_nowait(msg)
        except asyncio.QueueFull:
            self.metrics.bridge_dropped.labels("message").inc()

    @property
    def queue(self) -> asyncio.Queue[GossipMessage]:
        """Accepted messages (gossip and sync), oldest first."""
        return self._queue

    async def messages(self) -> AsyncIterator[GossipMessage]:
        while True:
            yield await self._queue.get()

    # ---- asyncio -> trio ---------------------------------------------------------------------------------

    async def publish(self, data: bytes) -> None:
        """Raises ``InvalidMessage`` when the local validator does not accept ``data``."""
        await self._runtime.call(self._host.publish, bytes(data))

    async def connect(self, multiaddr: str) -> str:
        return await self._runtime.call(self._host.connect, multiaddr)

    async def peers(self) -> list[PeerInfo]:
        return await self._runtime.call(self._host.peers)

    async def sync_from(self, peer: str, deadline_s: float | None = None) -> int:
        """Pull the live offers of ``peer`` (peer id or /p2p/ multiaddr); return how many were accepted."""
        return await self._runtime.call(self._host.sync_from, peer, deadline_s)

    async def request(
        self, peer: str, protocol: str, data: bytes, timeout: float, expect_reply: bool = True
    ) -> bytes | None:
        return await self._runtime.call(self._host.request, peer, protocol, bytes(data), timeout, expect_reply)

    def set_handler(self, protocol: str, callback: AsyncHandler) -> asyncio.Future[None] | None:
        """Serve ``protocol`` with ``callback(peer_id, body) -> reply | None``, run on this asyncio loop.

        Before ``start()`` this only records the handler. On a running node it returns a future that is
        done once the protocol is registered with libp2p.
        """
        self._handlers[protocol] = callback
        if self._done is None:
            self._host.set_handler(protocol, self._trio_handler(protocol))
            return None
        return asyncio.ensure_future(self._runtime.call(self._host.set_handler, protocol, self._trio_handler(protocol)))

    def _trio_handler(self, protocol: str) -> Callable[[str, bytes], Awaitable[bytes | None]]:
        async def handle(peer: str, body: bytes) -> bytes | None:
            loop = self._loop
            if loop is None:
                raise NotRunning("asyncio loop not bound")
            async def call() -> bytes | None:  # a coroutine for run_coroutine_threadsafe, whatever the awaitable
                return await self._handlers[protocol](peer, body)

            cfut: Future[bytes | None] = asyncio.run_coroutine_threadsafe(call(), loop)
            token = trio.lowlevel.current_trio_token()
            done = trio.Event()

            def wake(_f: Future[bytes | None]) -> None:
                with contextlib.suppress(trio.RunFinishedError):
                    token.run_sync_soon(done.set)

            cfut.add_done_callback(wake)
            try:
                await done.wait()
            except trio.Cancelled:
                cfut.cancel()
                raise
            reply = cfut.result()
            if reply is not None and not isinstance(reply, bytes | bytearray):
                raise TypeError("protocol handlers must return bytes or None")
            return None if reply is None else bytes(reply)

        return handle

    @property
    def host(self) -> P2PHost:
        """The trio-side host, for code that already runs in the runtime's trio thread."""
        return self._host
