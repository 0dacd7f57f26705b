"""``/gpunet/offers-sync/1.0.0``: a late joiner pulls the live offers of a peer, one bounded page at a time.

Wire format (each message is one length-prefixed frame, see ``framing``; both sides use one stream for all
pages, the requester closes it when done):

    request  = version:u8(=1) | cursor_len:u8 (0 or 32) | cursor | limit:u16 big-endian
    response = version:u8(=1) | flags:u8 (bit 0: more pages) | next_cursor:32 bytes (only if more)
               | count:uvarint | count * (len:uvarint | blob)

Blobs are ordered by their sha256; the cursor is the hash of the last blob of the previous page, so offers
added or removed between pages never make the requester skip an offer that was live throughout.
The pure codec and the paging live here; the stream handling is in ``offer_sync``.
"""

from __future__ import annotations

import bisect
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from .framing import FrameError, decode_uvarint, encode_uvarint

VERSION = 1
CURSOR_BYTES = 32
MAX_REQUEST_FRAME = 64
MAX_PAGE_OFFERS = 1024  # hard protocol cap; the responder's configured page is smaller
MAX_RESPONSE_FRAME = 1024 * 1024


@dataclass(frozen=True, slots=True)
class SyncRequest:
    cursor: bytes = b""
    limit: int = 256


@dataclass(frozen=True, slots=True)
class SyncPage:
    blobs: tuple[bytes, ...]
    next_cursor: bytes | None  # None: this was the last page


def encode_request(req: SyncRequest) -> bytes:
    if len(req.cursor) not in (0, CURSOR_BYTES) or not 0 < req.limit <= 0xFFFF:
        raise ValueError("bad sync request")
    return bytes((VERSION, len(req.cursor))) + req.cursor + req.limit.to_bytes(2, "big")


def decode_request(body: bytes) -> SyncRequest:
    if len(body) < 4 or body[0] != VERSION:
        raise FrameError("bad sync request header")
    clen = body[1]
    if clen not in (0, CURSOR_BYTES) or len(body) != 2 + clen + 2:
        raise FrameError("bad sync request length")
    limit = int.from_bytes(body[2 + clen :], "big")
    if limit == 0:
        raise FrameError("sync request limit is zero")
    return SyncRequest(cursor=bytes(body[2 : 2 + clen]), limit=limit)


def encode_page(page: SyncPage) -> bytes:
    out = bytearray((VERSION, 1 if page.next_cursor is not None else 0))
    if page.next_cursor is not None:
        if len(page.next_cursor) != CURSOR_BYTES:
            raise ValueError("bad cursor")
        out += page.next_cursor
    out += encode_uvarint(len(page.blobs))
    for blob in page.blobs:
        out += encode_uvarint(len(blob))
        out += blob
    return bytes(out)


def decode_page(body: bytes, max_offers: int = MAX_PAGE_OFFERS) -> SyncPage:
    if len(body) < 3 or body[0] != VERSION or body[1] not in (0, 1):
        raise FrameError("bad sync page header")
    pos = 2
    next_cursor = None
    if body[1] == 1:
        next_cursor = bytes(body[pos : pos + CURSOR_BYTES])
        if len(next_cursor) != CURSOR_BYTES:
            raise FrameError("truncated cursor")
        pos += CURSOR_BYTES
    count, pos = decode_uvarint(body, pos)
    if count > max_offers:
        raise FrameError(f"sync page with {count} offers exceeds the cap of {max_offers}")
    blobs = []
    for _ in range(count):
        n, pos = decode_uvarint(body, pos)
        if pos + n > len(body):
            raise FrameError("truncated blob")
        blobs.append(bytes(body[pos : pos + n]))
        pos += n
    if pos != len(body):
        raise FrameError("trailing bytes after sync page")
    return SyncPage(tuple(blobs), next_cursor)


class OfferPager:
    """Serves pages from ``live_offers()``, sorted by hash.

    The first page of a sync (no cursor) always reflects the offers live now: ``live_offers()`` is read and the
    sorted snapshot is rebuilt unless it holds the same blobs. The following pages reuse the snapshot for up to
    ``cache_s``, so a many-page sync does not hash and sort the book once per page (the cursor keeps a change
    between pages from making the requester skip an offer). Serving a first page from a snapshot up to
    ``cache_s`` old, as this once did, handed a late joiner the book of the previous sync: an offer superseded
    since, or none at all.
    """

    def __init__(
        self,
        live_offers: Callable[[], list[bytes]],
        page_offers: int,
        page_bytes: int,
        cache_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._live_offers = live_offers
        self._page_offers = page_offers
        self._page_bytes = page_bytes
        self._cache_s = cache_s
        self._clock = clock
        self._snapshot: tuple[list[bytes], list[bytes]] | None = None
        self._source: list[bytes] = []
        self._snapshot_at = 0.0

    def _sorted(self, first_page: bool) -> tuple[list[bytes], list[bytes]]:
        now = self._clock()
        if first_page or self._snapshot is None or now - self._snapshot_at > self._cache_s:
            live = self._live_offers()
            if self._snapshot is None or live != self._source:
                pairs = sorted((hashlib.sha256(b).digest(), bytes(b)) for b in live)
                self._snapshot = ([h for h, _ in pairs], [b for _, b in pairs])
                self._source = live
            self._snapshot_at = now
        assert self._snapshot is not None
        return self._snapshot

    def page(self, req: SyncRequest) -> SyncPage:
        hashes, blobs = self._sorted(first_page=not req.cursor)
        start = bisect.bisect_right(hashes, req.cursor) if req.cursor else 0
        limit = min(req.limit, self._page_offers)
        budget = self._page_bytes - 64  # header and varints
        out: list[bytes] = []
        i = start
        while i < len(blobs) and len(out) < limit:
            size = len(blobs[i]) + 10
            if size > self._page_bytes - 64:
                i += 1  # a blob that can never fit a page is not served
                continue
            if size > budget:
                break
            out.append(blobs[i])
            budget -= size
            i += 1
        more = i < len(blobs)
        # at least one blob is consumed or skipped per page, so i > start whenever more is true
        return SyncPage(tuple(out), hashes[i - 1] if more else None)
