"""Penalties and bans of gossip peers: the policy the host consults, and the two libp2p hooks that enforce a ban.

py-libp2p's validators can only say yes/no, and its peer scorer counts every "no" as an invalid message, so an
IGNORE could not be kept penalty-free there: the library's score parameters are left at their neutral defaults and
``PeerGuard`` counts REJECTs per forwarding peer instead (decayed every second by ``tick``); above
``GossipParams.reject_penalty_threshold`` the peer is banned for ``ban_s``, and the host, told through ``on_ban``,
blacklists it in pubsub and disconnects it (``on_unban`` lifts the blacklist when the ban ends).

While a ban lasts the peer cannot come back: py-libp2p 0.8.1's ``ConnectionGate`` filters IP addresses only, so
the peer id gate is the swarm's resource manager (``BanGate``), whose ``open_connection`` the swarm asks, with
the remote peer id, for every inbound and outbound connection right after the security handshake and before it
registers the connection (no ``connected`` notification, no identify, no pubsub stream). A notifee
(``BanNotifee``) closes any connection that got past it in the instant of a ban. Our own dials (``connect``,
bootstrap redials, requests and syncs to a peer id) refuse a banned peer before dialling, with ``PeerBanned``
(``check_not_banned``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import multiaddr
import trio
from libp2p.abc import INetConn, INetStream, INetwork, INotifee
from libp2p.peer.id import ID
from libp2p.rcmgr import ResourceManager
from libp2p.rcmgr.manager import ConnectionScope

from .config import GossipParams
from .errors import PeerBanned
from .metrics import P2PMetrics

logger = logging.getLogger(__name__)


class PeerGuard:
    """REJECT scores per peer, bans and their expiry, and the ban check of every connection and dial.

    Times come from ``clock`` (trio's clock by default). ``on_ban(peer)`` / ``on_unban(peer)`` are the host's
    actions when a ban starts / ends; ``should_log()`` rate-limits the log lines.
    """

    def __init__(
        self,
        params: GossipParams,
        metrics: P2PMetrics,
        own_peer: str,
        should_log: Callable[[], bool],
        on_ban: Callable[[ID], None] = lambda _p: None,
        on_unban: Callable[[ID], None] = lambda _p: None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self._params = params
        self._metrics = metrics
        self._own_peer = own_peer
        self._should_log = should_log
        self.on_ban = on_ban
        self.on_unban = on_unban
        self._clock = clock
        self.rejects: dict[str, float] = {}
        self.banned: dict[str, float] = {}  # peer id -> when its ban ends (``clock`` time)

    def is_banned(self, peer: str) -> bool:
        return peer in self.banned

    def penalise(self, peer: str) -> None:
        """One more REJECT of ``peer``; over the threshold it is banned."""
        score = self.rejects.get(peer, 0.0) + 1.0
        self.rejects[peer] = score
        if score > self._params.reject_penalty_threshold and peer not in self.banned:
            self.ban(peer)

    def malformed(self, peer: ID, reason: str, exc: Exception, weight: int) -> None:
        """Malformed pubsub input from ``peer``: counted, and weighs as ``weight`` REJECTs."""
        self._metrics.stream_errors.labels("/meshsub", reason).inc()
        if self._should_log():
            logger.info("malformed pubsub input", extra={"peer": str(peer), "error": repr(exc)})
        try:
            peer_str = peer.to_base58()
        except Exception:
            return
        if peer_str == self._own_peer:
            return
        for _ in range(weight):
            self.penalise(peer_str)

    def ban(self, peer: str) -> None:
        try:
            pid = ID.from_base58(peer)
        except Exception:
            return
        self.banned[peer] = self._clock() + self._params.ban_s
        self._metrics.peer_bans.inc()
        logger.warning("banning peer for rejected messages", extra={"peer": peer})
        self.on_ban(pid)

    def tick(self, now: float) -> None:
        """Once a second: decay the scores, end the bans due by ``now`` (``clock`` time)."""
        decay = self._params.reject_penalty_decay
        self.rejects = {p: s * decay for p, s in self.rejects.items() if s * decay >= 0.5}
        for peer, until in list(self.banned.items()):
            if until <= now:
                del self.banned[peer]
                self.on_unban(ID.from_base58(peer))

    def refuse_connection(self, peer: str, direction: str) -> bool:
        """The ban check of every connection and dial: True (and counted) when ``peer`` is banned."""
        if peer not in self.banned:
            return False
        label = direction if direction in ("inbound", "outbound") else "unknown"
        self._metrics.banned_connections_refused.labels(label).inc()
        if self._should_log():
            logger.info("refused a connection of a banned peer", extra={"peer": peer, "direction": direction})
        return True

    def check_not_banned(self, peer: str) -> None:
        """Before our own dial: raise ``PeerBanned`` (and count the refusal) while ``peer`` is banned."""
        if self.refuse_connection(peer, "outbound"):
            left = max(0.0, self.banned[peer] - self._clock())
            raise PeerBanned(
                f"peer {peer} is banned for too many rejected messages ({left:.0f} s left); not dialling it"
            )


class BanGate(ResourceManager):
    """libp2p's default resource manager that also refuses every connection of a banned peer.

    The swarm calls ``open_connection`` with the remote peer id once the security handshake has told it who the
    peer is (and earlier with ``None``, which passes through); ``None`` back makes the swarm close the connection
    before registering it. ``refuse(peer_id, direction)`` says whether to refuse (and counts the refusal).
    """

    def __init__(self, refuse: Callable[[str, str], bool]) -> None:
        # The settings of ``libp2p.rcmgr.new_resource_manager()``, which ``new_host`` uses when given none.
        super().__init__(enable_memory_pooling=True)
        self._refuse = refuse

    def open_connection(
        self, peer_id: object | None = None, endpoint_ip: str | None = None, direction: str = "inbound"
    ) -> ConnectionScope | None:
        if peer_id is not None and self._refuse(str(peer_id), str(direction)):
            return None
        return super().open_connection(peer_id, endpoint_ip=endpoint_ip, direction=direction)


class BanNotifee(INotifee):
    """Closes a banned peer's connection as soon as it is registered: the ones that passed ``BanGate`` just
    before the ban (the gate refuses all others before they are registered)."""

    def __init__(self, refuse: Callable[[str, str], bool], disconnect: Callable[[ID], Awaitable[None]]) -> None:
        self._refuse = refuse
        self._disconnect = disconnect

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        peer = conn.muxed_conn.peer_id
        if self._refuse(peer.to_base58(), str(getattr(conn, "direction", "unknown"))):
            await self._disconnect(peer)

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        pass

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        pass

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        pass
