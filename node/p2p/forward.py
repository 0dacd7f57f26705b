"""Port forwards over libp2p (``/gpunet/forward/1.0.0``): a TCP connection to a loopback port of one node becomes
one stream to another node, which connects it to a TCP address it chose for the stream's lease and port.

Stream layout (the opener is the consumer's node)::

    request  version u8 (= 1) | leaseId u256 | port u16                          (35 bytes, within 10 s)
    reply    status u8 | len u8 | reason UTF-8 (len bytes)                       (status 0: accepted)
    then     raw bytes both ways; each side closes its write half when its TCP peer did (half-close)

Status codes: see :class:`Refusal`. The accepting side asks its ``authorize(peer, lease_id, port)`` (asyncio)
for the address to connect to; it raises :class:`ForwardRefused` to refuse. Connections per lease and idle time
(no byte either way) are bounded. The listening side binds ``127.0.0.1`` only.

Everything here runs on the p2p runtime's trio thread; :class:`Forwards` is its asyncio face.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import struct
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import trio

from .bridge import P2PNode

log = logging.getLogger(__name__)

PROTOCOL = "/gpunet/forward/1.0.0"
VERSION = 1
_HEADER = struct.Struct(">B32sH")
HEADER_TIMEOUT_S = 10.0
CHUNK = 64 * 1024


class Refusal(enum.IntEnum):
    OK = 0
    MALFORMED = 1
    NOT_CONSUMER = 2  # the stream's peer is not the lease's consumer node
    UNKNOWN_LEASE = 3
    PORT_NOT_DECLARED = 4
    LEASE_NOT_RUNNING = 5
    TOO_MANY = 6  # connections of this lease at the bound
    UNREACHABLE = 7  # the container port does not accept connections


class ForwardRefused(Exception):
    def __init__(self, code: Refusal, reason: str) -> None:
        super().__init__(f"{code.name}: {reason}")
        self.code = code
        self.reason = reason


Authorize = Callable[[str, int, int], Awaitable[tuple[str, int]]]


def encode_request(lease_id: int, port: int) -> bytes:
    return _HEADER.pack(VERSION, lease_id.to_bytes(32, "big"), port)


def decode_request(data: bytes) -> tuple[int, int]:
    if len(data) != _HEADER.size:
        raise ForwardRefused(Refusal.MALFORMED, "header must be 35 bytes")
    version, lease_raw, port = _HEADER.unpack(data)
    if version != VERSION:
        raise ForwardRefused(Refusal.MALFORMED, f"unsupported version {version}")
    if not 0 < port < 65536:
        raise ForwardRefused(Refusal.MALFORMED, "port out of range")
    return int.from_bytes(lease_raw, "big"), port


def encode_reply(code: Refusal, reason: str = "") -> bytes:
    raw = reason.encode("utf-8")[:255].decode("utf-8", "ignore").encode("utf-8")  # never a cut character
    return bytes([code, len(raw)]) + raw


async def _read_exactly(stream: Any, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = await stream.read(n - len(out))
        if not chunk:
            break
        out += chunk
    return out


@dataclass
class _Activity:
    last: float = field(default_factory=trio.current_time)

    def touch(self) -> None:
        self.last = trio.current_time()


async def _tcp_to_stream(tcp: trio.SocketStream, stream: Any, act: _Activity) -> None:
    while True:
        data = await tcp.receive_some(CHUNK)
        if not data:
            with contextlib.suppress(Exception):
                await stream.close_write()
            return
        act.touch()
        await stream.write(data)


async def _stream_to_tcp(stream: Any, tcp: trio.SocketStream, act: _Activity) -> None:
    while True:
        try:
            data = await stream.read(CHUNK)
        except Exception:  # EOF (the other side closed its write half) or a reset
            data = b""
        if not data:
            with contextlib.suppress(Exception):
                await tcp.send_eof()
            return
        act.touch()
        await tcp.send_all(data)


async def splice(tcp: trio.SocketStream, stream: Any, idle_s: float) -> None:
    """Copy both ways until both halves are closed, or nothing moved for ``idle_s``."""
    act = _Activity()
    async with trio.open_nursery() as nursery:
        done = 0

        async def run(fn: Callable[..., Awaitable[None]], *args: Any) -> None:
            nonlocal done
            try:
                await fn(*args)
            except Exception:
                nursery.cancel_scope.cancel()
                return
            done += 1
            if done == 2:
                nursery.cancel_scope.cancel()

        async def watchdog() -> None:
            while True:
                await trio.sleep(max(0.1, min(1.0, idle_s / 4)))
                if trio.current_time() - act.last > idle_s:
                    nursery.cancel_scope.cancel()
                    return

        nursery.start_soon(run, _tcp_to_stream, tcp, stream, act)
        nursery.start_soon(run, _stream_to_tcp, stream, tcp, act)
        nursery.start_soon(watchdog)


@dataclass
class Forward:
    forward_id: int
    lease_id: int
    peer: str
    container_port: int
    local_port: int
    connections: int = 0
    scope: trio.CancelScope | None = None


class Forwards:
    """Both ends of port forwards on one node: ``serve`` accepts streams (provider), ``add`` listens on a loopback
    port and forwards its connections (consumer)."""

    def __init__(self, node: P2PNode, *, max_connections: int = 64, idle_s: float = 300.0) -> None:
        self.node = node
        self.max_connections = max_connections
        self.idle_s = idle_s
        self._authorize: Authorize | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._open: dict[int, int] = {}  # lease id -> accepted connections now (provider side)
        self._forwards: dict[int, Forward] = {}
        self._ids = itertools.count(1)

    # ---- provider: accept streams ------------------------------------------------------------------------
    async def serve(self, authorize: Authorize) -> None:
        """Accept forward streams; ``authorize`` (asyncio) returns the address to connect to, or raises
        :class:`ForwardRefused`."""
        self._authorize = authorize
        self._loop = asyncio.get_running_loop()
        host = self.node.host

        def register() -> None:
            from libp2p.custom_types import TProtocol

            host._live_host.set_stream_handler(TProtocol(PROTOCOL), self._accept)

        await self.node._runtime.call(_as_async(register))

    async def _ask(self, peer: str, lease_id: int, port: int) -> tuple[str, int]:
        loop, authorize = self._loop, self._authorize
        assert loop is not None and authorize is not None
        cfut: Future[tuple[str, int]] = asyncio.run_coroutine_threadsafe(_call(authorize, peer, lease_id, port),
                                                                         loop)
        token = trio.lowlevel.current_trio_token()
        ready = trio.Event()
        cfut.add_done_callback(lambda _f: token.run_sync_soon(ready.set))
        try:
            await ready.wait()
        except trio.Cancelled:
            cfut.cancel()
            raise
        return cfut.result()

    async def _accept(self, stream: Any) -> None:
        lease_id = -1
        counted = False
        try:
            peer = stream.muxed_conn.peer_id.to_base58()
            with trio.fail_after(HEADER_TIMEOUT_S):
                lease_id, port = decode_request(await _read_exactly(stream, _HEADER.size))
                host, target = await self._ask(peer, lease_id, port)
                if self._open.get(lease_id, 0) >= self.max_connections:
                    raise ForwardRefused(Refusal.TOO_MANY, f"at most {self.max_connections} connections per lease")
                self._open[lease_id] = self._open.get(lease_id, 0) + 1
                counted = True
                try:
                    tcp = await trio.open_tcp_stream(host, target)
                except OSError as exc:
                    raise ForwardRefused(Refusal.UNREACHABLE, f"port {port} does not accept connections") from exc
                await stream.write(encode_reply(Refusal.OK))
            async with tcp:
                await splice(tcp, stream, self.idle_s)
        except ForwardRefused as exc:
            with contextlib.suppress(Exception), trio.move_on_after(2):
                await stream.write(encode_reply(exc.code, exc.reason))
        except trio.TooSlowError:
            pass
        except Exception as exc:
            log.debug("forward stream failed", extra={"error": repr(exc)[:200]})
        finally:
            if counted:
                self._open[lease_id] -= 1
            with contextlib.suppress(Exception), trio.move_on_after(2):
                await stream.close()

    def connections(self, lease_id: int) -> int:
        return self._open.get(lease_id, 0)

    # ---- consumer: listen on loopback ---------------------------------------------------------------------
    async def add(self, lease_id: int, peer: str, container_port: int, local_port: int = 0) -> Forward:
        """Listen on ``127.0.0.1:local_port`` (0: any free port); each connection becomes a forward stream."""
        fwd = Forward(next(self._ids), lease_id, peer, container_port, local_port)

        async def start() -> int:
            listeners = await trio.open_tcp_listeners(local_port, host="127.0.0.1")
            bound = listeners[0].socket.getsockname()[1]

            async def run(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                with trio.CancelScope() as scope:
                    fwd.scope = scope
                    task_status.started()
                    await trio.serve_listeners(lambda tcp: self._connect(fwd, tcp), listeners)

            await self.node.host._live_nursery.start(run)
            return int(bound)

        fwd.local_port = await self.node._runtime.call(start)
        self._forwards[fwd.forward_id] = fwd
        return fwd

    async def probe(self, lease_id: int, peer: str, port: int) -> tuple[Refusal, str]:
        """Whether the other node would forward a connection to ``port`` now (it connects to the port and closes
        at once): readiness of a service."""
        async def ask() -> tuple[Refusal, str]:
            stream = None
            try:
                with trio.fail_after(HEADER_TIMEOUT_S):
                    _pid, stream = await self.node.host._open(peer, PROTOCOL)
                    await stream.write(encode_request(lease_id, port))
                    head = await _read_exactly(stream, 2)
                    if len(head) != 2:
                        return Refusal.UNREACHABLE, "no answer"
                    reason = (await _read_exactly(stream, head[1])).decode("utf-8", "replace")
                    return Refusal(head[0]) if head[0] in {r.value for r in Refusal} else Refusal.MALFORMED, reason
            finally:
                if stream is not None:
                    with contextlib.suppress(Exception), trio.move_on_after(2):
                        await stream.reset()

        result: tuple[Refusal, str] = await self.node._runtime.call(ask)
        return result

    async def _connect(self, fwd: Forward, tcp: trio.SocketStream) -> None:
        stream = None
        fwd.connections += 1
        try:
            async with tcp:
                with trio.fail_after(HEADER_TIMEOUT_S):
                    _pid, stream = await self.node.host._open(fwd.peer, PROTOCOL)
                    await stream.write(encode_request(fwd.lease_id, fwd.container_port))
                    head = await _read_exactly(stream, 2)
                    reason = (await _read_exactly(stream, head[1])).decode("utf-8", "replace") if len(head) == 2 else ""
                if len(head) != 2 or head[0] != Refusal.OK:
                    log.info("forward refused", extra={"lease_id": fwd.lease_id, "port": fwd.container_port,
                                                       "reason": reason or "no answer"})
                    return
                await splice(tcp, stream, self.idle_s)
        except Exception as exc:
            log.debug("forward connection failed", extra={"error": repr(exc)[:200]})
        finally:
            fwd.connections -= 1
            if stream is not None:
                with contextlib.suppress(Exception), trio.move_on_after(2):
                    await stream.close()

    async def remove(self, forward_id: int) -> bool:
        fwd = self._forwards.pop(forward_id, None)
        if fwd is None or fwd.scope is None:
            return False
        scope = fwd.scope
        await self.node._runtime.call(_as_async(scope.cancel))
        return True

    async def remove_lease(self, lease_id: int) -> int:
        ids = [f.forward_id for f in self._forwards.values() if f.lease_id == lease_id]
        for fid in ids:
            await self.remove(fid)
        return len(ids)

    def list(self, lease_id: int | None = None) -> list[Forward]:
        return [f for f in self._forwards.values() if lease_id is None or f.lease_id == lease_id]


def _as_async(fn: Callable[[], Any]) -> Callable[[], Awaitable[Any]]:
    async def run() -> Any:
        return fn()

    return run


async def _call(authorize: Authorize, peer: str, lease_id: int, port: int) -> tuple[str, int]:
    return await authorize(peer, lease_id, port)
