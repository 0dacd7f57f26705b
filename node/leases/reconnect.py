"""Finding a lease's provider again: the consumer remembers the addresses of the providers it is connected to and,
when one goes quiet (a restart, a dropped connection), dials them again. The provider's messages then flow over the
new connection (it sends to the consumer; it needs no address of its own for it). A provider keeps its listen port
across restarts (``node.p2p.stable_addrs``), so a remembered address stays good.

Works with any transport that can list its connected peers and dial an address (the node's libp2p bridge);
with one that cannot, it does nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)

REDIAL_EVERY_S = 3.0


class Reconnector:
    def __init__(self, transport: object) -> None:
        self._peers: Callable[[], Awaitable[list[Any]]] | None = getattr(transport, "peers", None)
        self._connect: Callable[[str], Awaitable[str]] | None = getattr(transport, "connect", None)
        self.addrs: dict[str, tuple[str, ...]] = {}  # peer id -> dialable /p2p/ multiaddrs last seen
        self._last_dial: dict[str, float] = {}

    async def remember(self, wanted: set[str]) -> None:
        """Note the addresses of the connected peers among ``wanted``."""
        if self._peers is None or not wanted:
            return
        try:
            peers = await self._peers()
        except Exception:
            return
        for info in peers:
            pid = str(getattr(info, "peer_id", ""))
            addrs = tuple(_dialable(str(a), pid) for a in getattr(info, "addrs", ()))
            if pid in wanted and addrs:
                self.addrs[pid] = addrs

    async def redial(self, quiet: Iterable[str]) -> list[str]:
        """Dial the remembered addresses of each quiet peer (at most every ``REDIAL_EVERY_S``); returns the
        peers reached."""
        reached: list[str] = []
        if self._connect is None:
            return reached
        now = time.monotonic()
        for pid in quiet:
            if now - self._last_dial.get(pid, 0.0) < REDIAL_EVERY_S or not self.addrs.get(pid):
                continue
            self._last_dial[pid] = now
            for addr in self.addrs[pid]:
                try:
                    await self._connect(addr)
                    log.info("lease peer dialled again", extra={"peer": pid, "addr": addr})
                    reached.append(pid)
                    break
                except Exception as exc:
                    log.info("lease peer not reachable yet", extra={"peer": pid, "addr": addr,
                                                                    "error": repr(exc)[:200]})
        return reached


def _dialable(addr: str, pid: str) -> str:
    return addr if "/p2p/" in addr else f"{addr}/p2p/{pid}"
