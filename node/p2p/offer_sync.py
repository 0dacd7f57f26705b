"""The two stream halves of ``/gpunet/offers-sync/1.0.0`` (the wire format and the paging are in ``sync``).

``serve`` answers a peer's page requests from this node's live offers; ``pull`` walks a peer's pages on one
stream, judges every offer like a gossiped one and delivers the accepted ones as ``GossipMessage(via="sync")``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import trio

from node.types import Validation

from . import sync as sync_codec
from .config import SYNC_PROTOCOL, P2PConfig
from .errors import PeerUnavailable, RequestTimeout
from .framing import FrameError, read_frame, write_frame
from .metrics import P2PMetrics
from .models import GossipMessage
from .streams import OpenStream, close_quietly, reset_quietly

logger = logging.getLogger(__name__)

MAX_SYNC_PAGES = 10_000


class OfferSync:
    """Serves this node's live offers to syncing peers and pulls a peer's live offers."""

    def __init__(
        self,
        config: P2PConfig,
        live_offers: Callable[[], list[bytes]],
        metrics: P2PMetrics,
        should_log: Callable[[], bool],
        open_stream: OpenStream,
        judge: Callable[[bytes, str], Validation],
        on_message: Callable[[GossipMessage], None],
    ) -> None:
        self._config = config
        self._pager = sync_codec.OfferPager(live_offers, config.sync_page_offers, config.sync_page_bytes)
        self._metrics = metrics
        self._should_log = should_log
        self._open = open_stream
        self._judge = judge
        self._on_message = on_message

    async def serve(self, stream: Any) -> None:
        """The stream handler of ``SYNC_PROTOCOL``: one page per request until the requester closes."""
        timeout = self._config.stream_timeout_s
        try:
            for _ in range(MAX_SYNC_PAGES):
                body = await read_frame(stream, timeout=timeout, max_bytes=sync_codec.MAX_REQUEST_FRAME)
                if body is None:
                    break
                page = self._pager.page(sync_codec.decode_request(body))
                self._metrics.sync_offers.labels("served").inc(len(page.blobs))
                await write_frame(
                    stream, sync_codec.encode_page(page), timeout=timeout, max_bytes=sync_codec.MAX_RESPONSE_FRAME
                )
            await close_quietly(stream)
        except FrameError as exc:
            self._metrics.stream_errors.labels(SYNC_PROTOCOL, "frame").inc()
            logger.debug("bad sync request", extra={"error": str(exc)})
            await reset_quietly(stream)
        except Exception:
            self._metrics.stream_errors.labels(SYNC_PROTOCOL, "handler_error").inc()
            if self._should_log():
                logger.exception("serving offers sync failed")
            await reset_quietly(stream)

    async def pull(self, target: str, deadline_s: float | None = None) -> int:
        """Pull all live offers of ``target`` page by page, validate each and deliver the accepted ones.

        Returns the number of accepted offers. Raises ``RequestTimeout`` when the deadline passes (offers
        of the pages received until then have been delivered), ``PeerUnavailable`` or ``FrameError``.
        """
        config = self._config
        deadline_s = config.sync_deadline_s if deadline_s is None else deadline_s
        accepted = 0
        stream = None
        try:
            with trio.fail_after(deadline_s):
                pid, stream = await self._open(target, SYNC_PROTOCOL)
                sender = pid.to_base58()
                cursor = b""
                for _ in range(MAX_SYNC_PAGES):
                    req = sync_codec.SyncRequest(cursor, config.sync_page_offers)
                    await write_frame(stream, sync_codec.encode_request(req), timeout=deadline_s)
                    body = await read_frame(
                        stream, timeout=config.stream_timeout_s, max_bytes=sync_codec.MAX_RESPONSE_FRAME
                    )
                    if body is None:
                        raise FrameError("sync responder closed the stream mid-way")
                    page = sync_codec.decode_page(body)
                    self._metrics.sync_offers.labels("received").inc(len(page.blobs))
                    for i, blob in enumerate(page.blobs):
                        if self._judge(blob, sender).accepted:
                            accepted += 1
                            self._on_message(
                                GossipMessage(blob, sender, config.topic, time.time_ns(), sender, "sync")
                            )
                        if i % 64 == 63:
                            await trio.sleep(0)
                    if page.next_cursor is None:
                        break
                    if page.next_cursor <= cursor:
                        raise FrameError("sync cursor did not advance")
                    cursor = page.next_cursor
                await close_quietly(stream)
                stream = None
        except trio.TooSlowError as exc:
            raise RequestTimeout(f"offers sync from {target} passed its {deadline_s} s deadline") from exc
        except (FrameError, PeerUnavailable):
            raise
        except Exception as exc:
            raise PeerUnavailable(f"offers sync from {target} failed: {exc!r}") from exc
        finally:
            if stream is not None:
                await reset_quietly(stream)
        return accepted
