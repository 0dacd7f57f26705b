"""The libp2p host of a gpunet node (trio only).

Standard libp2p building blocks only, so a go/js-libp2p peer can join: TCP, Noise, Yamux, gossipsub
(/meshsub/1.2.0, 1.1.0, 1.0.0) with StrictSign and the default (from + seqno) message ids, plus two
request/response protocols framed with varint length prefixes (``framing``).

Facts about py-libp2p 0.8.1 this module works around (measured):
- gossipsub's heartbeat defaults to 120 s: ``GossipParams.heartbeat_interval_s`` (1 s) is passed explicitly;
- a per-forwarder spam limit (10 msgs/topic/s) silently stops forwarding: configured, off by default (see
  ``GossipParams``);
- a subscription queue holds 32 messages and drops the rest: ``_drain`` empties it in a task that only does
  non-blocking work per message;
- a node receives its own publishes: filtered unless ``deliver_own_messages``;
- pubsub RPCs over 1 MiB are dropped: publishes are capped at ``GossipParams.max_message_bytes``;
- a dial waits 250 ms for a second address unless the per-peer connection cap is reached: the cap is 1;
- per-message CPU (IDONTWANT below 512 B, a yamux window update per read, signed peer records re-verified and
  rebuilt per RPC): ``tuning``.

Validation: the synchronous ``validate(data, sender)`` callback is the pubsub topic validator (a message it
does not ACCEPT is neither delivered nor forwarded). ``judge`` wraps it: it counts every message once
(``gpunet_gossip_messages_total{verdict,reason}``), and a validator that raises gives IGNORE
(``validator_error``) and an error log with the traceback, never a REJECT: a bug on our side must not penalise
the honest peer that forwarded the message. py-libp2p's validators can only say yes/no, and its
peer scorer counts every "no" as an invalid message, so IGNORE could not be kept penalty-free there: the
library's score parameters are left at their neutral defaults and a local penalty counts REJECTs per
forwarding peer instead (decayed every second); above a threshold the peer is blacklisted in pubsub and
disconnected for ``ban_s``.

While a ban lasts the peer cannot come back: py-libp2p 0.8.1's ``ConnectionGate`` filters IP addresses only, so
the peer id gate is the swarm's resource manager (``_BanGate``), whose ``open_connection`` the swarm asks, with
the remote peer id, for every inbound and outbound connection right after the security handshake and before it
registers the connection (no ``connected`` notification, no identify, no pubsub stream). A notifee
(``_BanNotifee``) closes any connection that got past it in the instant of a ban. Our own dials (``connect``,
bootstrap redials, requests and syncs to a peer id) refuse a banned peer before dialling, with ``PeerBanned``.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.rcmgr import ResourceManager
from libp2p.rcmgr.manager import ConnectionScope
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.tools.anyio_service import background_trio_service

from node.errors import InvalidMessage
from node.types import Validation, Verdict

from . import sync as sync_codec
from . import tuning
from .config import SYNC_PROTOCOL, P2PConfig
from .errors import NotRunning, PeerBanned, PeerUnavailable, RequestTimeout
from .framing import MAX_FRAME_BYTES, FrameError, read_frame, write_frame
from .keys import load_or_create_node_key, peer_id_of
from .metrics import P2PMetrics
from .models import GossipMessage, PeerInfo

logger = logging.getLogger(__name__)

Validate = Callable[[bytes, str], Validation]
LiveOffers = Callable[[], list[bytes]]
OnMessage = Callable[[GossipMessage], None]
# A protocol handler gets (peer id, request body) and returns the reply body, or None for no reply.
TrioHandler = Callable[[str, bytes], Awaitable[bytes | None]]

GOSSIP_PROTOCOLS = (PROTOCOL_ID_V12, PROTOCOL_ID_V11, PROTOCOL_ID)
VALIDATOR_ERROR = Validation(Verdict.IGNORE, "validator_error")
OVERSIZE = Validation(Verdict.REJECT, "oversize")
_MAX_SYNC_PAGES = 10_000
_FORWARDER_MEMORY = 8192
_LOG_EVERY_S = 5.0


@dataclass(slots=True)
class _Redial:
    addr: str
    next_at: float = 0.0
    backoff: float = 1.0


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


class _BanGate(ResourceManager):
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


class _BanNotifee(INotifee):
    """Closes a banned peer's connection as soon as it is registered: the ones that passed ``_BanGate`` just
    before the ban (the gate refuses all others before they are registered)."""

    def __init__(self, owner: P2PHost) -> None:
        self._owner = owner

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        peer = conn.muxed_conn.peer_id
        if self._owner._refuse_connection(peer.to_base58(), str(getattr(conn, "direction", "unknown"))):
            await self._owner._disconnect(peer)

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


class _GuardedPubsub(Pubsub):
    """Pubsub that contains errors caused by malformed input to the peer that sent it.

    In py-libp2p 0.8.1 one crafted message (e.g. a garbage public key in ``Message.key``) raises out of
    ``push_msg`` or the stream reader, which stops the pubsub service and the host with it. Here such an
    error drops that message or that stream, counts it, and penalises the sending peer (a malformed RPC
    weighs as ten rejected messages).
    """

    def __init__(self, owner: P2PHost, *args, **kwargs) -> None:
        self._owner = owner
        super().__init__(*args, **kwargs)

    async def push_msg(self, msg_forwarder: ID, msg) -> None:
        try:
            await super().push_msg(msg_forwarder, msg)
        except Exception as exc:
            self._owner._malformed(msg_forwarder, "malformed_message", exc, weight=1)

    async def _teardown_if_connected(self, peer_id: ID) -> None:
        """py-libp2p 0.8.1 ``del``s the peer after awaiting the stream reset; if the peer's disconnect removed it
        meanwhile (as when we blacklist and disconnect a peer), the KeyError stops the whole pubsub service."""
        stream = self.peers.get(peer_id)
        if stream is not None:
            await _reset(stream)
            self.peers.pop(peer_id, None)
        self._forget_all_subscriptions(peer_id)

    async def stream_handler(self, stream) -> None:
        try:
            await super().stream_handler(stream)
        except Exception as exc:
            await _reset(stream)
            self._owner._malformed(stream.muxed_conn.peer_id, "malformed_rpc", exc, weight=10)


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
        self._validate = validate
        self._on_message = on_message or (lambda _m: None)
        self._key_pair = key_pair if key_pair is not None else load_or_create_node_key(config.key_path)
        self.peer_id = peer_id_of(self._key_pair)
        self._pager = sync_codec.OfferPager(live_offers, config.sync_page_offers, config.sync_page_bytes)
        self._handlers: dict[str, TrioHandler] = {}
        self._forwarders: OrderedDict[bytes, tuple[str, int]] = OrderedDict()
        self._rejects: dict[str, float] = {}
        self._banned: dict[str, float] = {}
        self._redials = [_Redial(a) for a in config.bootstrap]
        self._stop = trio.Event()
        self._started = False
        self._last_log = 0.0
        self._host: IHost | None = None
        self._pubsub: Pubsub | None = None
        self._gossipsub: GossipSub | None = None
        self._nursery: trio.Nursery | None = None
        self.listen_addrs: tuple[str, ...] = ()

    # ---- lifecycle -------------------------------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Listen, join the topic, and serve until ``stop()``. Calls ``task_status.started(self)`` when ready."""
        cfg, gp = self.config, self.config.gossip
        host = new_host(
            key_pair=self._key_pair,
            sec_opt={
                NOISE_PROTOCOL_ID: NoiseTransport(self._key_pair, noise_privkey=create_x25519_key_pair().private_key)
            },
            muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
            listen_addrs=[multiaddr.Multiaddr(a) for a in cfg.listen_addrs],
            enable_mDNS=cfg.mdns,
            connection_config=_connection_config(cfg),
            resource_manager=_BanGate(self._refuse_connection),
        )
        host.get_network().register_notifee(_BanNotifee(self))
        tuning.tune_host(host)
        gossipsub = tuning.gossipsub_class()(
            protocols=list(GOSSIP_PROTOCOLS),
            degree=gp.degree,
            degree_low=gp.degree_low,
            degree_high=gp.degree_high,
            time_to_live=gp.fanout_ttl_s,
            gossip_window=gp.gossip_window,
            gossip_history=gp.gossip_history,
            heartbeat_interval=gp.heartbeat_interval_s,
            prune_back_off=gp.prune_back_off_s,
            adaptive_gossip_enabled=gp.adaptive_gossip,
            spam_protection_enabled=gp.spam_max_msgs_per_s is not None,
            max_messages_per_topic_per_second=gp.spam_max_msgs_per_s or 10.0,
            eclipse_protection_enabled=gp.eclipse_protection,
        )
        pubsub = _GuardedPubsub(self, host, gossipsub, strict_signing=True, seen_ttl=gp.seen_ttl_s)
        self._host, self._gossipsub, self._pubsub = host, gossipsub, pubsub
        host.set_stream_handler(TProtocol(SYNC_PROTOCOL), self._serve_sync)
        for protocol in self._handlers:
            self._register(protocol)
        listen = [multiaddr.Multiaddr(a) for a in cfg.listen_addrs]
        try:
            async with (
                host.run(listen_addrs=listen),
                background_trio_service(pubsub),
                background_trio_service(gossipsub),
            ):
                await pubsub.wait_until_ready()
                pubsub.set_topic_validator(cfg.topic, self._topic_validator, False)
                subscription = await pubsub.subscribe(cfg.topic)
                self.listen_addrs = tuple(str(a) for a in host.get_addrs())
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    nursery.start_soon(self._drain, subscription)
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
        """Run the validator with the size cap, timing, counting (once per message) and the REJECT penalty.

        Never raises: an exception in the validator is IGNORE ``validator_error`` plus an error log with the
        traceback (at most one per ``_LOG_EVERY_S``; the counter counts them all)."""
        if len(data) > self.config.gossip.max_message_bytes:
            verdict = OVERSIZE
        else:
            t0 = time.perf_counter()
            try:
                verdict = self._validate(data, sender)
                if not isinstance(verdict, Validation):
                    raise TypeError(f"validator returned {type(verdict).__name__}, not Validation")
            except Exception:
                if self._should_log():
                    logger.exception("gossip validator raised; treating as IGNORE", extra={"sender": sender})
                verdict = VALIDATOR_ERROR
            self.metrics.validation_seconds.observe(time.perf_counter() - t0)
        self.metrics.record_verdict(verdict.verdict.value, verdict.reason or "unspecified")
        if verdict.verdict is Verdict.REJECT and sender != self.peer_id:
            self._penalise(sender)
        return verdict

    def _topic_validator(self, forwarder: ID, msg) -> bool:
        try:
            sender = forwarder.to_base58()
            if sender == self.peer_id:
                return True  # own publishes were validated in publish()
            verdict = self.judge(bytes(msg.data), sender)
            if verdict.accepted:
                key = bytes(msg.from_id) + bytes(msg.seqno)
                self._forwarders[key] = (sender, time.time_ns())
                if len(self._forwarders) > _FORWARDER_MEMORY:
                    self._forwarders.popitem(last=False)
            return verdict.accepted
        except Exception:  # belt and braces: nothing in here may break pubsub's read loop
            logger.exception("topic validator wrapper failed")
            return False

    async def _drain(self, subscription) -> None:
        """Empty the 32-slot subscription queue as fast as it fills: per message, only non-blocking work."""
        own = ID.from_base58(self.peer_id).to_bytes()
        topic = self.config.topic
        async for msg in subscription:
            try:
                from_id = bytes(msg.from_id)
                if from_id == own and not self.config.deliver_own_messages:
                    continue
                origin = ID(from_id).to_base58()
                sender, at_ns = self._forwarders.pop(from_id + bytes(msg.seqno), (origin, time.time_ns()))
                self._on_message(GossipMessage(bytes(msg.data), sender, topic, at_ns, origin, "gossip"))
            except Exception:
                logger.exception("delivering a gossip message failed")

    # ---- penalties and housekeeping ----------------------------------------------------------------------

    def _malformed(self, peer: ID, reason: str, exc: Exception, weight: int) -> None:
        self.metrics.stream_errors.labels("/meshsub", reason).inc()
        if self._should_log():
            logger.info("malformed pubsub input", extra={"peer": str(peer), "error": repr(exc)})
        try:
            peer_str = peer.to_base58()
        except Exception:
            return
        if peer_str == self.peer_id:
            return
        for _ in range(weight):
            self._penalise(peer_str)

    def _penalise(self, peer: str) -> None:
        score = self._rejects.get(peer, 0.0) + 1.0
        self._rejects[peer] = score
        if score > self.config.gossip.reject_penalty_threshold and peer not in self._banned:
            self._ban(peer)

    def _ban(self, peer: str) -> None:
        try:
            pid = ID.from_base58(peer)
        except Exception:
            return
        self._banned[peer] = trio.current_time() + self.config.gossip.ban_s
        self.metrics.peer_bans.inc()
        logger.warning("banning peer for rejected messages", extra={"peer": peer})
        if self._pubsub is not None:
            self._pubsub.add_to_blacklist(pid)
        if self._nursery is not None:
            self._nursery.start_soon(self._disconnect, pid)

    def _refuse_connection(self, peer: str, direction: str) -> bool:
        """The ban check of every connection and dial: True (and counted) when ``peer`` is banned."""
        if peer not in self._banned:
            return False
        label = direction if direction in ("inbound", "outbound") else "unknown"
        self.metrics.banned_connections_refused.labels(label).inc()
        if self._should_log():
            logger.info("refused a connection of a banned peer", extra={"peer": peer, "direction": direction})
        return True

    def _check_not_banned(self, peer: str) -> None:
        if self._refuse_connection(peer, "outbound"):
            left = max(0.0, self._banned[peer] - trio.current_time())
            raise PeerBanned(
                f"peer {peer} is banned for too many rejected messages ({left:.0f} s left); not dialling it"
            )

    async def _disconnect(self, pid: ID) -> None:
        try:
            with trio.move_on_after(5):
                await self._live_host.disconnect(pid)
        except Exception:
            logger.debug("disconnect failed", exc_info=True)

    async def _maintain(self) -> None:
        decay = self.config.gossip.reject_penalty_decay
        while True:
            now = trio.current_time()
            self._rejects = {p: s * decay for p, s in self._rejects.items() if s * decay >= 0.5}
            for peer, until in list(self._banned.items()):
                if until <= now:
                    del self._banned[peer]
                    self._live_pubsub.remove_from_blacklist(ID.from_base58(peer))
            connected = self._live_host.get_connected_peers()
            self.metrics.peers.set(len(connected))
            connected_ids = {p.to_base58() for p in connected}
            for redial in self._redials:
                peer = redial.addr.rsplit("/p2p/", 1)[1]
                if redial.next_at <= now and peer not in connected_ids and peer not in self._banned:
                    redial.next_at = now + redial.backoff
                    redial.backoff = min(redial.backoff * 2, 60.0)
                    self._live_nursery.start_soon(self._dial_bootstrap, redial)
            await trio.sleep(1.0)

    async def _dial_bootstrap(self, redial: _Redial) -> None:
        try:
            await self.connect(redial.addr)
            redial.backoff = 1.0
        except Exception as exc:
            logger.info("bootstrap dial failed", extra={"addr": redial.addr, "error": repr(exc)})

    def _should_log(self) -> bool:
        now = time.monotonic()
        if now - self._last_log >= _LOG_EVERY_S:
            self._last_log = now
            return True
        return False

    # ---- peers -------------------------------------------------------------------------------------------

    async def connect(self, addr: str) -> str:
        """Dial a full multiaddr (with /p2p/<id>); return the peer id.

        Raises ``PeerUnavailable``, or its subclass ``PeerBanned`` at once, without dialling, while the peer is
        banned."""
        self._require_running()
        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        except Exception as exc:
            raise PeerUnavailable(f"not a dialable /p2p/ multiaddr: {addr}") from exc
        if info.peer_id.to_base58() == self.peer_id:
            raise PeerUnavailable("refusing to dial ourselves")
        self._check_not_banned(info.peer_id.to_base58())
        # py-libp2p 0.8.1 refuses, for 60 s, every dial to a peer whose addresses all failed once (Swarm's
        # negative peer cache). This is an explicit dial (bootstrap, offer sync, finding a restarted lease peer,
        # each paced by its caller): a provider that restarts on its stable port must be reachable at once.
        unblock = getattr(self._live_host.get_network(), "unblock_peer", None)
        if unblock is not None:
            unblock(info.peer_id)
        try:
            with trio.fail_after(self.config.dial_timeout_s):
                await self._live_host.connect(info)
        except Exception as exc:
            raise PeerUnavailable(f"dial {addr} failed: {exc!r}") from exc
        return info.peer_id.to_base58()

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

    async def _resolve(self, target: str) -> ID:
        if target.startswith("/"):
            return ID.from_base58(await self.connect(target))
        try:
            pid = ID.from_base58(target)
        except Exception as exc:
            raise PeerUnavailable(f"not a peer id or multiaddr: {target!r}") from exc
        self._check_not_banned(pid.to_base58())
        return pid

    async def _open(self, target: str, protocol: str):
        pid = await self._resolve(target)
        try:
            return pid, await self._live_host.new_stream(pid, [TProtocol(protocol)])
        except trio.Cancelled:
            raise
        except Exception as exc:
            raise PeerUnavailable(f"cannot open {protocol} to {pid}: {exc!r}") from exc

    # ---- request/response ------------------------------------------------------------------------------

    def set_handler(self, protocol: str, handler: TrioHandler) -> None:
        """Serve ``protocol``: one framed request per stream, answered by ``handler`` (None: no reply)."""
        if protocol == SYNC_PROTOCOL or protocol.startswith("/meshsub/"):
            raise ValueError(f"{protocol} is reserved")
        self._handlers[protocol] = handler
        if self._host is not None:
            self._register(protocol)

    def _register(self, protocol: str) -> None:
        async def serve(stream) -> None:
            await self._serve_request(protocol, stream)

        self._live_host.set_stream_handler(TProtocol(protocol), serve)

    async def _serve_request(self, protocol: str, stream) -> None:
        timeout = self.config.stream_timeout_s
        try:
            peer = stream.muxed_conn.peer_id.to_base58()
            body = await read_frame(stream, timeout=timeout, max_bytes=MAX_FRAME_BYTES)
            if body is None:
                raise FrameError("stream closed before the request")
            handler = self._handlers.get(protocol)
            if handler is None:
                raise FrameError("no handler")
            with trio.fail_after(timeout):
                reply = await handler(peer, body)
            if reply is not None:
                await write_frame(stream, reply, timeout=timeout)
            await _close(stream)
        except FrameError as exc:
            self.metrics.stream_errors.labels(protocol, "frame").inc()
            logger.debug("bad frame", extra={"protocol": protocol, "error": str(exc)})
            await _reset(stream)
        except trio.TooSlowError:
            self.metrics.stream_errors.labels(protocol, "timeout").inc()
            await _reset(stream)
        except Exception:
            self.metrics.stream_errors.labels(protocol, "handler_error").inc()
            if self._should_log():
                logger.exception("request handler failed", extra={"protocol": protocol})
            await _reset(stream)

    async def request(
        self, target: str, protocol: str, data: bytes, timeout: float, expect_reply: bool = True
    ) -> bytes | None:
        """Send one framed message to ``target`` (peer id or /p2p/ multiaddr) over ``protocol``.

        Returns the framed reply (``None`` when ``expect_reply`` is false). Raises ``RequestTimeout``,
        ``PeerUnavailable`` (dial/negotiation failed, or the peer closed without a reply) or ``FrameError``.
        """
        self._require_running()
        stream = None
        try:
            with trio.fail_after(timeout):
                _pid, stream = await self._open(target, protocol)
                await write_frame(stream, bytes(data), timeout=timeout)
                if not expect_reply:
                    await _close(stream)
                    stream = None
                    return None
                reply = await read_frame(stream, timeout=timeout, max_bytes=MAX_FRAME_BYTES)
                if reply is None:
                    raise PeerUnavailable(f"{target} closed {protocol} without a reply")
                await _close(stream)
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
                await _reset(stream)

    # ---- offers sync -----------------------------------------------------------------------------------

    async def _serve_sync(self, stream) -> None:
        timeout = self.config.stream_timeout_s
        try:
            for _ in range(_MAX_SYNC_PAGES):
                body = await read_frame(stream, timeout=timeout, max_bytes=sync_codec.MAX_REQUEST_FRAME)
                if body is None:
                    break
                page = self._pager.page(sync_codec.decode_request(body))
                self.metrics.sync_offers.labels("served").inc(len(page.blobs))
                await write_frame(
                    stream, sync_codec.encode_page(page), timeout=timeout, max_bytes=sync_codec.MAX_RESPONSE_FRAME
                )
            await _close(stream)
        except FrameError as exc:
            self.metrics.stream_errors.labels(SYNC_PROTOCOL, "frame").inc()
            logger.debug("bad sync request", extra={"error": str(exc)})
            await _reset(stream)
        except Exception:
            self.metrics.stream_errors.labels(SYNC_PROTOCOL, "handler_error").inc()
            if self._should_log():
                logger.exception("serving offers sync failed")
            await _reset(stream)

    async def sync_from(self, target: str, deadline_s: float | None = None) -> int:
        """Pull all live offers of ``target`` page by page, validate each and deliver the accepted ones.

        Returns the number of accepted offers. Raises ``RequestTimeout`` when the deadline passes (offers
        of the pages received until then have been delivered), ``PeerUnavailable`` or ``FrameError``.
        """
        self._require_running()
        deadline_s = self.config.sync_deadline_s if deadline_s is None else deadline_s
        accepted = 0
        stream = None
        try:
            with trio.fail_after(deadline_s):
                pid, stream = await self._open(target, SYNC_PROTOCOL)
                sender = pid.to_base58()
                cursor = b""
                for _ in range(_MAX_SYNC_PAGES):
                    req = sync_codec.SyncRequest(cursor, self.config.sync_page_offers)
                    await write_frame(stream, sync_codec.encode_request(req), timeout=deadline_s)
                    body = await read_frame(
                        stream, timeout=self.config.stream_timeout_s, max_bytes=sync_codec.MAX_RESPONSE_FRAME
                    )
                    if body is None:
                        raise FrameError("sync responder closed the stream mid-way")
                    page = sync_codec.decode_page(body)
                    self.metrics.sync_offers.labels("received").inc(len(page.blobs))
                    for i, blob in enumerate(page.blobs):
                        if self.judge(blob, sender).accepted:
                            accepted += 1
                            self._on_message(
                                GossipMessage(blob, sender, self.config.topic, time.time_ns(), sender, "sync")
                            )
                        if i % 64 == 63:
                            await trio.sleep(0)
                    if page.next_cursor is None:
                        break
                    if page.next_cursor <= cursor:
                        raise FrameError("sync cursor did not advance")
                    cursor = page.next_cursor
                await _close(stream)
                stream = None
        except trio.TooSlowError as exc:
            raise RequestTimeout(f"offers sync from {target} passed its {deadline_s} s deadline") from exc
        except (FrameError, PeerUnavailable):
            raise
        except Exception as exc:
            raise PeerUnavailable(f"offers sync from {target} failed: {exc!r}") from exc
        finally:
            if stream is not None:
                await _reset(stream)
        return accepted


async def _close(stream) -> None:
    try:
        with trio.move_on_after(2):
            await stream.close()
    except Exception:
        pass


async def _reset(stream) -> None:
    try:
        with trio.move_on_after(2):
            await stream.reset()
    except Exception:
        pass
