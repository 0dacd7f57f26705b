"""The libp2p host of a gpunet node (trio only): the one object the bridge talks to.

Standard libp2p building blocks only, so a go/js-libp2p peer can join: TCP, Noise, Yamux, gossipsub
(``gossip``) and two request/response protocols framed with varint length prefixes (``framing``). ``P2PHost``
builds the libp2p host, runs it (listen, join the topic, housekeeping every second) and hands each concern to
its part:
- ``gossip``: the gossipsub router and a pubsub that contains malformed input;
- ``gossip_intake``: the verdict on every gossiped or synced message (``judge``) and delivery of accepted gossip;
- ``peer_guard``: REJECT scores, bans and their expiry, the ban gate of every connection;
- ``dialer``: dials (``connect``), peer id / multiaddr targets, streams to peers, bootstrap redials;
- ``streams``: request/response protocols (``request``, ``set_handler``);
- ``offer_sync``: serving and pulling the offers sync (``sync_from``), whose codec is ``sync``.

py-libp2p 0.8.1 fact worked around here (measured): a dial waits 250 ms for a second address unless the per-peer
connection cap is reached: the cap is 1 (``P2PConfig.max_connections_per_peer``).
"""

from __future__ import annotations

from collections.abc import Callable

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetStream
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.tools.anyio_service import background_trio_service

from node.errors import InvalidMessage
from node.types import Validation

from . import tuning
from .config import SYNC_PROTOCOL, P2PConfig
from .dialer import Dialer
from .errors import NotRunning
from .gossip import new_gossipsub, new_pubsub
from .gossip_intake import GossipIntake, OnMessage, Validate
from .keys import load_or_create_node_key, peer_id_of
from .log_throttle import LogThrottle
from .metrics import P2PMetrics
from .models import PeerInfo
from .offer_sync import OfferSync
from .peer_guard import BanGate, BanNotifee, PeerGuard
from .streams import RequestStreams, TrioHandler

LiveOffers = Callable[[], list[bytes]]


def _connection_config(cfg: P2PConfig) -> ConnectionConfig:
    high = cfg.max_connections
    low = min(100, high * 2 // 3)
    return ConnectionConfig(
        max_connections=high,
        high_watermark=high,
        low_watermark=low,
        min_connections=min(50, low // 2),
        max_connections_per_peer=cfg.max_connections_per_peer,
        dial_timeout=cfg.dial_timeout_s,
    )


class P2PHost:
    """One libp2p node. Construct anywhere; ``run`` it inside trio; call the other methods from trio."""

    def __init__(
        self,
        config: P2PConfig,
        validate: Validate,
        live_offers: LiveOffers = list,
        on_message: OnMessage | None = None,
        metrics: P2PMetrics | None = None,
        key_pair: KeyPair | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics if metrics is not None else P2PMetrics()
        on_message = on_message or (lambda _m: None)
        self._key_pair = key_pair if key_pair is not None else load_or_create_node_key(config.key_path)
        self.peer_id = peer_id_of(self._key_pair)
        should_log = LogThrottle().allow
        self.guard = PeerGuard(
            config.gossip, self.metrics, self.peer_id, should_log, on_ban=self._on_ban, on_unban=self._on_unban
        )
        self._intake = GossipIntake(config, self.peer_id, validate, on_message, self.metrics, self.guard, should_log)
        self._dialer = Dialer(
            self.peer_id,
            config.dial_timeout_s,
            self.guard,
            lambda: self._live_host,
            self._require_running,
            config.bootstrap,
        )
        self._streams = RequestStreams(config.stream_timeout_s, self.metrics, should_log, self._dialer.open)
        self._sync = OfferSync(config, live_offers, self.metrics, should_log, self._dialer.open, self.judge, on_message)
        self._stop = trio.Event()
        self._started = False
        self._host: IHost | None = None
        self._pubsub: Pubsub | None = None
        self._gossipsub: GossipSub | None = None
        self._nursery: trio.Nursery | None = None
        self.listen_addrs: tuple[str, ...] = ()

    # ---- lifecycle -------------------------------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Listen, join the topic, and serve until ``stop()``. Calls ``task_status.started(self)`` when ready."""
        cfg = self.config
        host = new_host(
            key_pair=self._key_pair,
            sec_opt={
                NOISE_PROTOCOL_ID: NoiseTransport(self._key_pair, noise_privkey=create_x25519_key_pair().private_key)
            },
            muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
            listen_addrs=[multiaddr.Multiaddr(a) for a in cfg.listen_addrs],
            enable_mDNS=cfg.mdns,
            connection_config=_connection_config(cfg),
            resource_manager=BanGate(self.guard.refuse_connection),
        )
        host.get_network().register_notifee(BanNotifee(self.guard.refuse_connection, self._dialer.disconnect))
        tuning.tune_host(host)
        gossipsub = new_gossipsub(cfg.gossip)
        pubsub = new_pubsub(host, gossipsub, cfg.gossip, self.guard.malformed)
        self._host, self._gossipsub, self._pubsub = host, gossipsub, pubsub
        host.set_stream_handler(TProtocol(SYNC_PROTOCOL), self._sync.serve)
        self._streams.register_all(host)
        listen = [multiaddr.Multiaddr(a) for a in cfg.listen_addrs]
        try:
            async with (
                host.run(listen_addrs=listen),
                background_trio_service(pubsub),
                background_trio_service(gossipsub),
            ):
                await pubsub.wait_until_ready()
                pubsub.set_topic_validator(cfg.topic, self._intake.topic_validator, False)
                subscription = await pubsub.subscribe(cfg.topic)
                self.listen_addrs = tuple(str(a) for a in host.get_addrs())
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    nursery.start_soon(self._intake.drain, subscription)
                    nursery.start_soon(self._maintain)
                    self._started = True
                    task_status.started(self)
                    await self._stop.wait()
                    nursery.cancel_scope.cancel()
        finally:
            self._started = False
            self._nursery = None

    def stop(self) -> None:
        self._stop.set()

    @property
    def running(self) -> bool:
        return self._started

    def _require_running(self) -> None:
        if not self._started:
            raise NotRunning("p2p host is not running")

    # The libp2p parts exist from ``run`` on; before that these raise ``NotRunning``.
    @property
    def _live_host(self) -> IHost:
        if self._host is None:
            raise NotRunning("p2p host is not running")
        return self._host

    @property
    def _live_pubsub(self) -> Pubsub:
        if self._pubsub is None:
            raise NotRunning("p2p host is not running")
        return self._pubsub

    @property
    def _live_gossipsub(self) -> GossipSub:
        if self._gossipsub is None:
            raise NotRunning("p2p host is not running")
        return self._gossipsub

    @property
    def _live_nursery(self) -> trio.Nursery:
        if self._nursery is None:
            raise NotRunning("p2p host is not running")
        return self._nursery

    async def _maintain(self) -> None:
        """Every second: decay scores and end bans, publish the peer count, redial bootstrap peers."""
        while True:
            now = trio.current_time()
            self.guard.tick(now)
            connected = self._live_host.get_connected_peers()
            self.metrics.peers.set(len(connected))
            self._dialer.redial_bootstrap(now, {p.to_base58() for p in connected}, self._live_nursery)
            await trio.sleep(1.0)

    def _on_ban(self, pid: ID) -> None:
        """A ban started: no more gossip from or to the peer, and its connection is closed."""
        if self._pubsub is not None:
            self._pubsub.add_to_blacklist(pid)
        if self._nursery is not None:
            self._nursery.start_soon(self._dialer.disconnect, pid)

    def _on_unban(self, pid: ID) -> None:
        self._live_pubsub.remove_from_blacklist(pid)

    # ---- gossip ----------------------------------------------------------------------------------------

    async def publish(self, data: bytes) -> None:
        """Validate ``data`` locally, then publish it on the topic. Raises ``InvalidMessage`` if not accepted."""
        self._require_running()
        data = bytes(data)
        verdict = self.judge(data, self.peer_id)
        if not verdict.accepted:
            raise InvalidMessage(f"local validator said {verdict.verdict.value}: {verdict.reason}")
        await self._live_pubsub.publish(self.config.topic, data)

    def judge(self, data: bytes, sender: str) -> Validation:
        """The verdict on one message, counted once, REJECTs penalised (``GossipIntake.judge``). Never raises."""
        return self._intake.judge(data, sender)

    # ---- peers -------------------------------------------------------------------------------------------

    async def connect(self, addr: str) -> str:
        """Dial a full multiaddr (with /p2p/<id>); return the peer id.

        Raises ``PeerUnavailable``, or its subclass ``PeerBanned`` at once, without dialling, while the peer is
        banned."""
        return await self._dialer.connect(addr)

    def peers(self) -> list[PeerInfo]:
        self._require_running()
        mesh = self._live_gossipsub.mesh.get(self.config.topic, set())
        store = self._live_host.get_peerstore()
        out = []
        for pid in self._live_host.get_connected_peers():
            try:
                addrs = tuple(str(a) for a in store.addrs(pid))
            except Exception:
                addrs = ()
            out.append(PeerInfo(pid.to_base58(), addrs, pid in mesh))
        return out

    def mesh_size(self) -> int:
        self._require_running()
        return len(self._live_gossipsub.mesh.get(self.config.topic, ()))

    async def _open(self, target: str, protocol: str) -> tuple[ID, INetStream]:
        """A new ``protocol`` stream to ``target`` (peer id or /p2p/ multiaddr); ``forward`` uses it."""
        return await self._dialer.open(target, protocol)

    # ---- request/response ------------------------------------------------------------------------------

    def set_handler(self, protocol: str, handler: TrioHandler) -> None:
        """Serve ``protocol``: one framed request per stream, answered by ``handler`` (None: no reply)."""
        self._streams.set_handler(protocol, handler)
        if self._host is not None:
            self._streams.register(self._host, protocol)

    async def request(
        self, target: str, protocol: str, data: bytes, timeout: float, expect_reply: bool = True
    ) -> bytes | None:
        """Send one framed message to ``target`` (peer id or /p2p/ multiaddr) over ``protocol``.

        Returns the framed reply (``None`` when ``expect_reply`` is false). Raises ``RequestTimeout``,
        ``PeerUnavailable`` (dial/negotiation failed, or the peer closed without a reply) or ``FrameError``.
        """
        self._require_running()
        return await self._streams.request(target, protocol, data, timeout, expect_reply)

    # ---- offers sync -----------------------------------------------------------------------------------

    async def sync_from(self, target: str, deadline_s: float | None = None) -> int:
        """Pull all live offers of ``target`` page by page, validate each and deliver the accepted ones.

        Returns the number of accepted offers. Raises ``RequestTimeout`` when the deadline passes (offers
        of the pages received until then have been delivered), ``PeerUnavailable`` or ``FrameError``.
        """
        self._require_running()
        return await self._sync.pull(target, deadline_s)
