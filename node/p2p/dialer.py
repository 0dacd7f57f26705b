"""Reaching other peers: explicit dials, peer id / multiaddr targets, streams to them, bootstrap redials.

Every dial first asks ``PeerGuard.check_not_banned`` (a banned peer fails at once with ``PeerBanned``).
py-libp2p 0.8.1 refuses, for 60 s, every dial to a peer whose addresses all failed once (Swarm's negative peer
cache); ``connect`` lifts that block (``swarm.unblock_peer``) because each of its dials is explicit and paced by
its caller (bootstrap, offer sync, finding a restarted lease peer): a provider that restarts on its stable port
must be reachable at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import multiaddr
import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr

from .errors import PeerUnavailable
from .peer_guard import PeerGuard

logger = logging.getLogger(__name__)

MAX_REDIAL_BACKOFF_S = 60.0


@dataclass(slots=True)
class Redial:
    """A bootstrap address, redialled with doubling backoff while its peer is not connected."""

    addr: str
    next_at: float = 0.0
    backoff: float = 1.0

    @property
    def peer(self) -> str:
        return self.addr.rsplit("/p2p/", 1)[1]


class Dialer:
    """Dials and disconnects peers of the libp2p host that ``live_host()`` returns (it raises ``NotRunning``
    before the host exists); ``require_running()`` raises ``NotRunning`` unless the host serves."""

    def __init__(
        self,
        own_peer: str,
        dial_timeout_s: float,
        guard: PeerGuard,
        live_host: Callable[[], IHost],
        require_running: Callable[[], None],
        bootstrap: Iterable[str] = (),
    ) -> None:
        self._own_peer = own_peer
        self._dial_timeout_s = dial_timeout_s
        self._guard = guard
        self._live_host = live_host
        self._require_running = require_running
        self.redials = [Redial(a) for a in bootstrap]

    async def connect(self, addr: str) -> str:
        """Dial a full multiaddr (with /p2p/<id>); return the peer id.

        Raises ``PeerUnavailable``, or its subclass ``PeerBanned`` at once, without dialling, while the peer is
        banned."""
        self._require_running()
        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        except Exception as exc:
            raise PeerUnavailable(f"not a dialable /p2p/ multiaddr: {addr}") from exc
        if info.peer_id.to_base58() == self._own_peer:
            raise PeerUnavailable("refusing to dial ourselves")
        self._guard.check_not_banned(info.peer_id.to_base58())
        host = self._live_host()
        unblock = getattr(host.get_network(), "unblock_peer", None)  # see the module docstring
        if unblock is not None:
            unblock(info.peer_id)
        try:
            with trio.fail_after(self._dial_timeout_s):
                await host.connect(info)
        except Exception as exc:
            raise PeerUnavailable(f"dial {addr} failed: {exc!r}") from exc
        return info.peer_id.to_base58()

    async def disconnect(self, pid: ID) -> None:
        try:
            with trio.move_on_after(5):
                await self._live_host().disconnect(pid)
        except Exception:
            logger.debug("disconnect failed", exc_info=True)

    async def resolve(self, target: str) -> ID:
        """The peer of a peer id (not dialled here) or of a /p2p/ multiaddr (dialled)."""
        if target.startswith("/"):
            return ID.from_base58(await self.connect(target))
        try:
            pid = ID.from_base58(target)
        except Exception as exc:
            raise PeerUnavailable(f"not a peer id or multiaddr: {target!r}") from exc
        self._guard.check_not_banned(pid.to_base58())
        return pid

    async def open(self, target: str, protocol: str) -> tuple[ID, INetStream]:
        """A new ``protocol`` stream to ``target`` (peer id or /p2p/ multiaddr). Raises ``PeerUnavailable``."""
        pid = await self.resolve(target)
        try:
            return pid, await self._live_host().new_stream(pid, [TProtocol(protocol)])
        except trio.Cancelled:
            raise
        except Exception as exc:
            raise PeerUnavailable(f"cannot open {protocol} to {pid}: {exc!r}") from exc

    def redial_bootstrap(self, now: float, connected: set[str], nursery: trio.Nursery) -> None:
        """Start a dial, in ``nursery``, of each bootstrap peer that is due, not connected and not banned."""
        for redial in self.redials:
            peer = redial.peer
            if redial.next_at <= now and peer not in connected and not self._guard.is_banned(peer):
                redial.next_at = now + redial.backoff
                redial.backoff = min(redial.backoff * 2, MAX_REDIAL_BACKOFF_S)
                nursery.start_soon(self._dial_bootstrap, redial)

    async def _dial_bootstrap(self, redial: Redial) -> None:
        try:
            await self.connect(redial.addr)
            redial.backoff = 1.0
        except Exception as exc:
            logger.info("bootstrap dial failed", extra={"addr": redial.addr, "error": repr(exc)})
