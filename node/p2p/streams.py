"""Request/response protocols: one framed request per stream, answered by a handler (``framing`` frames).

``RequestStreams`` holds the handlers (set before or after the host starts), serves their streams and sends
requests; ``close_quietly`` / ``reset_quietly`` end a stream without raising (also used by sync and pubsub).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from .config import SYNC_PROTOCOL
from .errors import PeerUnavailable, RequestTimeout
from .framing import MAX_FRAME_BYTES, FrameError, read_frame, write_frame
from .metrics import P2PMetrics

logger = logging.getLogger(__name__)

# A protocol handler gets (peer id, request body) and returns the reply body, or None for no reply.
TrioHandler = Callable[[str, bytes], Awaitable[bytes | None]]
# Opens a stream of a protocol to a peer id or /p2p/ multiaddr (``Dialer.open``).
OpenStream = Callable[[str, str], Awaitable[tuple[ID, INetStream]]]


class RequestStreams:
    """The handlers of this node's request/response protocols, and requests to other nodes."""

    def __init__(
        self, stream_timeout_s: float, metrics: P2PMetrics, should_log: Callable[[], bool], open_stream: OpenStream
    ) -> None:
        self._timeout = stream_timeout_s
        self._metrics = metrics
        self._should_log = should_log
        self._open = open_stream
        self.handlers: dict[str, TrioHandler] = {}

    def set_handler(self, protocol: str, handler: TrioHandler) -> None:
        """Record the handler of ``protocol`` (``register`` serves it on a host)."""
        if protocol == SYNC_PROTOCOL or protocol.startswith("/meshsub/"):
            raise ValueError(f"{protocol} is reserved")
        self.handlers[protocol] = handler

    def register_all(self, host: IHost) -> None:
        for protocol in self.handlers:
            self.register(host, protocol)

    def register(self, host: IHost, protocol: str) -> None:
        async def serve(stream: Any) -> None:
            await self._serve_request(protocol, stream)

        host.set_stream_handler(TProtocol(protocol), serve)

    async def _serve_request(self, protocol: str, stream: Any) -> None:
        timeout = self._timeout
        try:
            peer = stream.muxed_conn.peer_id.to_base58()
            body = await read_frame(stream, timeout=timeout, max_bytes=MAX_FRAME_BYTES)
            if body is None:
                raise FrameError("stream closed before the request")
            handler = self.handlers.get(protocol)
            if handler is None:
                raise FrameError("no handler")
            with trio.fail_after(timeout):
                reply = await handler(peer, body)
            if reply is not None:
                await write_frame(stream, reply, timeout=timeout)
            await close_quietly(stream)
        except FrameError as exc:
            self._metrics.stream_errors.labels(protocol, "frame").inc()
            logger.debug("bad frame", extra={"protocol": protocol, "error": str(exc)})
            await reset_quietly(stream)
        except trio.TooSlowError:
            self._metrics.stream_errors.labels(protocol, "timeout").inc()
            await reset_quietly(stream)
        except Exception:
            self._metrics.stream_errors.labels(protocol, "handler_error").inc()
            if self._should_log():
                logger.exception("request handler failed", extra={"protocol": protocol})
            await reset_quietly(stream)

    async def request(
        self, target: str, protocol: str, data: bytes, timeout: float, expect_reply: bool = True
    ) -> bytes | None:
        """Send one framed message to ``target`` (peer id or /p2p/ multiaddr) over ``protocol``.

        Returns the framed reply (``None`` when ``expect_reply`` is false). Raises ``RequestTimeout``,
        ``PeerUnavailable`` (dial/negotiation failed, or the peer closed without a reply) or ``FrameError``.
        """
        stream = None
        try:
            with trio.fail_after(timeout):
                _pid, stream = await self._open(target, protocol)
                await write_frame(stream, bytes(data), timeout=timeout)
                if not expect_reply:
                    await close_quietly(stream)
                    stream = None
                    return None
                reply = await read_frame(stream, timeout=timeout, max_bytes=MAX_FRAME_BYTES)
                if reply is None:
                    raise PeerUnavailable(f"{target} closed {protocol} without a reply")
                await close_quietly(stream)
                stream = None
                return reply
        except trio.TooSlowError as exc:
            raise RequestTimeout(f"{protocol} request to {target} timed out after {timeout} s") from exc
        except (FrameError, PeerUnavailable):
            raise
        except Exception as exc:
            raise PeerUnavailable(f"{protocol} request to {target} failed: {exc!r}") from exc
        finally:
            if stream is not None:
                await reset_quietly(stream)


async def close_quietly(stream: Any) -> None:
    try:
        with trio.move_on_after(2):
            await stream.close()
    except Exception:
        pass


async def reset_quietly(stream: Any) -> None:
    try:
        with trio.move_on_after(2):
            await stream.reset()
    except Exception:
        pass
