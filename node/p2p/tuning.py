"""Per-message CPU fixes for py-libp2p 0.8.1 (pinned in ``pyproject.toml``), scoped to this node's hosts.

Measured on a gossipsub mesh of ~500 B messages, the Python node spent 2-3x the CPU per message of a js-libp2p
mesh, and a profile put most of it in four behaviours of py-libp2p 0.8.1 that this module replaces:

1. ``GossipSub.publish`` sends an IDONTWANT control RPC to every v1.2 mesh peer for every message
   (``_emit_idontwant_for_message``). js-libp2p sends none below 512 bytes of data (``idontwantMinDataSize``), and
   below that size the control RPC costs more than the duplicate it saves. ``TunedGossipSub`` skips it there.
2. ``YamuxStream._auto_tune_and_send_window_update`` sends a WINDOW_UPDATE frame after nearly every read
   (``PY_YAMUX_RELEASE_ON_READ`` defaults to on, and a partial-slack branch fires on the other reads), and pubsub
   reads the varint length prefix one byte per call: one RPC cost three encrypted frames back.
   ``TunedYamuxStream`` credits the window when half of it is consumed (go-yamux's ``GrowTo`` hysteresis) and
   serves a read from the stream's buffer without the connection lock and per-read debug formatting of
   ``Yamux.read_stream``.
3. Pubsub attaches our signed peer record to every RPC and ``env_to_send_in_RPC`` parses our record and lists our
   addresses each time to decide whether to re-sign; and ``maybe_consume_signed_record`` verifies the sender's
   record signature on every RPC received (twice for an RPC with control messages). Here our record is reused
   for ``RECORD_REFRESH_S`` and a peer's record bytes, once verified and stored, are not verified again for
   ``RECORD_REVERIFY_S`` while they stay the same bytes.
4. ``Pubsub.continuously_read_stream`` reads each RPC with ``read_varint_prefixed_bytes_limited``: a
   ``NetStream.read`` (and its state lock) per byte of the length prefix, then one for the body. When the whole
   RPC is already buffered on a tuned stream it is taken in one call.

Left as they are: the per-frame debug f-strings of ``Yamux.handle_incoming`` (a ~350-line loop; overriding it
would copy it) and the two reads per Noise frame.

Scope: (1) is a subclass that ``host.py`` uses; for (2) and (4) ``tune_host`` re-classes the host's muxer negotiator,
whose connections and streams then re-class themselves (none of these adds state); the two record functions are
module-level names inside ``libp2p.pubsub.pubsub`` and ``libp2p.pubsub.gossipsub``, as is the reader of (4) in
the first, so ``install`` rebinds those names there to wrappers that take the new path only for hosts passed to
``tune_host`` (for the reader: streams of ``TunedYamux``) and call the library's function otherwise.
``GPUNET_P2P_TUNING=0`` in the environment turns all of it off (the benchmark's "before" figures).
tests/unit/test_p2p_tuning.py pins each replaced upstream behaviour by source hash, so an upgrade that changes
one fails there first.
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import trio
from libp2p.abc import IHost, IMuxedConn, IMuxedStream, ISecureConn
from libp2p.network.stream.net_stream import StreamState
from libp2p.peer.id import ID
from libp2p.pubsub import gossipsub as _gossipsub_module
from libp2p.pubsub import pubsub as _pubsub_module
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.stream_muxer.muxer_multistream import MuxerMultistream
from libp2p.stream_muxer.yamux.yamux import Yamux, YamuxStream

ENV_FLAG = "GPUNET_P2P_TUNING"
# js-libp2p gossipsub's ``GossipsubIdontwantMinDataSize``.
IDONTWANT_MIN_DATA_BYTES = 512
RECORD_REFRESH_S = 10.0
RECORD_REVERIFY_S = 60.0
_MAX_CACHED_PEERS = 4096
_MAX_VARINT_BYTES = 10


def enabled() -> bool:
    """True unless ``GPUNET_P2P_TUNING`` is 0/false/no/off (read at each host start)."""
    return os.environ.get(ENV_FLAG, "1").strip().lower() not in ("0", "false", "no", "off")


# ---- 1. IDONTWANT only for messages of at least 512 bytes ---------------------------------------------------


class TunedGossipSub(GossipSub):
    """GossipSub that, like js-libp2p, sends no IDONTWANT for messages under ``IDONTWANT_MIN_DATA_BYTES``.

    py-libp2p 0.8.1 ``GossipSub.publish`` awaits ``_emit_idontwant_for_message(msg_id, topics)`` for every message
    it forwards or publishes, with no size threshold. ``publish`` notes the size (no await lies between that and
    the call) and the emitter consumes the note.
    """

    _small_message = False

    async def publish(self, msg_forwarder: ID, pubsub_msg: Any) -> None:
        self._small_message = len(pubsub_msg.data) < IDONTWANT_MIN_DATA_BYTES
        try:
            await super().publish(msg_forwarder, pubsub_msg)
        finally:
            self._small_message = False

    async def _emit_idontwant_for_message(self, msg_id: bytes, topic_ids: Iterable[str]) -> None:
        small, self._small_message = self._small_message, False
        if small:
            return
        await super()._emit_idontwant_for_message(msg_id, topic_ids)


# ---- 2. yamux: window updates at half the window, reads served from the buffer --------------------------------


class TunedYamuxStream(YamuxStream):
    """A yamux stream of ``TunedYamux`` (instances are re-classed by the connection, see there)."""

    async def _auto_tune_and_send_window_update(self, *, bytes_read: int = 0) -> None:
        """Credit the peer only when at least half the target window was consumed (go-yamux ``GrowTo``).

        Replaces py-libp2p 0.8.1's version, whose release-on-read and partial-slack branches send a
        WINDOW_UPDATE frame after nearly every read. The check runs without ``window_lock``: it is synchronous,
        and trio switches tasks only at an await.
        """
        buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
        delta = self.target_recv_window - (self.recv_window + buffered)
        if delta <= 0 or delta < self._grow_threshold():
            return
        async with self.window_lock:
            buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
            total = self._grow_to_delta(buffered)
            if total > 0:
                total += self._apply_autotune_epoch(buffered)
            self._pending_recv_release = 0
        if total > 0:
            await self.send_window_update(total, skip_lock=True)

    async def read(self, n: int | None = -1) -> bytes:
        """Serve ``read(n)``, n > 0, from the buffer when it holds data and the stream is open; else upstream.

        py-libp2p 0.8.1 goes through ``Yamux.read_stream``, which takes the connection's ``streams_lock`` and
        formats several debug f-strings per call, for each byte of a varint prefix as for a body. On this path
        the result is the same: those bytes, from the same buffer, with the same window accounting.
        """
        if n is None or n <= 0 or self.closed or self.reset_received:
            return await super().read(n)
        buffer = self.conn.stream_buffers.get(self.stream_id)
        if not buffer or self.conn.event_shutting_down.is_set() or self.stream_id not in self.conn.streams:
            return await super().read(n)
        data = bytes(buffer[:n])
        del buffer[:n]
        await trio.lowlevel.checkpoint()
        await self._auto_tune_and_send_window_update(bytes_read=len(data))
        return data

    async def wait_for_data(self) -> bool:
        """While the stream is open with an empty buffer, wait as ``Yamux.read_stream`` does (the connection sets the
        stream's event on data, FIN, RST and shutdown). False when there is nothing to wait for."""
        conn = self.conn
        if self.closed or self.reset_received or self.recv_closed or conn.event_shutting_down.is_set():
            return False
        if conn.stream_buffers.get(self.stream_id):
            return False  # a partial message: the library's reader assembles it
        event = conn.stream_events.get(self.stream_id)
        if event is None:
            return False
        await event.wait()
        if conn.stream_events.get(self.stream_id) is event:
            conn.stream_events[self.stream_id] = trio.Event()
        return True

    def take_prefixed(self, max_length: int) -> tuple[bytes, int] | None:
        """One varint-length-prefixed message, if the buffer holds all of it: (body, bytes consumed); else None.

        None also when the stream is not open or the prefix is malformed or over ``max_length``: the caller then
        reads through the library, which raises the library's errors for those cases."""
        if self.closed or self.reset_received or self.conn.event_shutting_down.is_set():
            return None
        buffer = self.conn.stream_buffers.get(self.stream_id)
        if not buffer:
            return None
        length = shift = 0
        for pos in range(min(len(buffer), _MAX_VARINT_BYTES)):
            byte = buffer[pos]
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
        else:
            return None
        end = pos + 1 + length
        if length > max_length or len(buffer) < end:
            return None
        body = bytes(buffer[pos + 1:end])
        del buffer[:end]
        return body, end


class TunedMuxerMultistream(MuxerMultistream):
    """py-libp2p 0.8.1 ``MuxerMultistream.new_conn`` builds a plain ``Yamux`` for /yamux/1.0.0 whatever class the
    host's ``muxer_opt`` names; this re-classes it as ``TunedYamux`` (which adds no state) before it is started."""

    async def new_conn(self, conn: ISecureConn, peer_id: ID) -> IMuxedConn:
        muxed = await super().new_conn(conn, peer_id)
        if type(muxed) is Yamux:
            muxed.__class__ = TunedYamux
        return muxed


class TunedYamux(Yamux):
    """Yamux whose streams are ``TunedYamuxStream``.

    py-libp2p 0.8.1 builds ``YamuxStream`` inside ``open_stream`` and ``handle_incoming`` with no factory hook;
    every stream reaches its user through ``open_stream`` or ``accept_stream``, and nothing reads from it before,
    so both re-class the stream there (``TunedYamuxStream`` adds no state).
    """

    async def open_stream(self) -> YamuxStream:
        stream = await super().open_stream()
        if type(stream) is YamuxStream:
            stream.__class__ = TunedYamuxStream
        return stream

    async def accept_stream(self) -> IMuxedStream:
        stream = await super().accept_stream()
        if type(stream) is YamuxStream:
            stream.__class__ = TunedYamuxStream
        return stream


# ---- 3. signed peer records: ours built once, each peer's verified once -----------------------------------------


@dataclass(slots=True)
class _RecordCache:
    own: bytes = b""
    own_at: float = float("-inf")
    verified: dict[bytes, tuple[bytes, float]] = field(default_factory=dict)


_hosts: weakref.WeakKeyDictionary[IHost, _RecordCache] = weakref.WeakKeyDictionary()
_upstream: dict[str, Callable[..., Any]] = {}


def tune_host(host: IHost) -> None:
    """Apply (2) and (3) to ``host``, before it listens or dials (no-op when tuning is off): its connections get
    ``TunedYamux``, its pubsub the cached record paths."""
    if not enabled():
        return
    install()
    _hosts.setdefault(host, _RecordCache())
    network: Any = host.get_network()  # the Swarm; INetworkService does not declare its upgrader
    upgrader = network.upgrader
    if type(upgrader.muxer_multistream) is MuxerMultistream:
        upgrader.muxer_multistream.__class__ = TunedMuxerMultistream


def _env_to_send_in_rpc(host: IHost) -> tuple[bytes, bool]:
    """py-libp2p 0.8.1 ``env_to_send_in_RPC``: re-checks (and parses) our record against our addresses on every
    RPC. Cached here for ``RECORD_REFRESH_S``; a refresh calls the library's function, which re-signs if our
    addresses changed."""
    cache = _hosts.get(host)
    upstream = _upstream["env_to_send_in_RPC"]
    if cache is None:
        return upstream(host)
    now = time.monotonic()
    if now - cache.own_at < RECORD_REFRESH_S:
        return cache.own, False
    envelope, created = upstream(host)
    cache.own, cache.own_at = envelope, now
    return envelope, created


def _maybe_consume_signed_record(msg: Any, host: IHost, peer_id: ID) -> bool:
    """py-libp2p 0.8.1 ``maybe_consume_signed_record``: verifies and stores the sender's record on every RPC.

    Here the library's function runs for a record whose bytes differ from the last ones accepted from that peer,
    or once those are ``RECORD_REVERIFY_S`` old (which also renews the peerstore's address TTL); the same bytes
    in between were verified and stored already, and give the same answer, True."""
    cache = _hosts.get(host)
    upstream = _upstream["maybe_consume_signed_record"]
    if cache is None or not msg.HasField("senderRecord"):
        return upstream(msg, host, peer_id)
    record = msg.senderRecord
    key = peer_id.to_bytes()
    now = time.monotonic()
    seen = cache.verified.get(key)
    if seen is not None and seen[0] == record and now - seen[1] < RECORD_REVERIFY_S:
        return True
    ok = upstream(msg, host, peer_id)
    if ok:
        if len(cache.verified) >= _MAX_CACHED_PEERS:
            cache.verified.clear()
        cache.verified[key] = (record, now)
    else:
        cache.verified.pop(key, None)
    return ok


# ---- 4. pubsub reads an RPC in one call ----------------------------------------------------------------------------


async def _read_varint_prefixed_bytes_limited(reader: Any, max_length: int) -> bytes:
    """py-libp2p 0.8.1 ``Pubsub.continuously_read_stream`` reads each RPC with ``read_varint_prefixed_bytes_limited``:
    one ``NetStream.read(1)`` per byte of the length prefix, then the body, each read taking the stream's state
    lock. On an open stream of ``TunedYamuxStream`` whose buffer holds the whole RPC, this takes it in one call
    (same bytes, same window accounting); anything else goes through the library's function."""
    muxed = getattr(reader, "muxed_stream", None)
    if type(muxed) is TunedYamuxStream:
        while getattr(reader, "_state", None) in _READABLE:
            taken = muxed.take_prefixed(max_length)
            if taken is not None:
                await trio.lowlevel.checkpoint()
                await muxed._auto_tune_and_send_window_update(bytes_read=taken[1])
                return taken[0]
            if not await muxed.wait_for_data():
                break
    return await _upstream["read_varint_prefixed_bytes_limited"](reader, max_length)


_READABLE = (StreamState.OPEN, StreamState.CLOSE_WRITE)

_PATCHED: dict[str, tuple[Callable[..., Any], tuple[Any, ...]]] = {
    "env_to_send_in_RPC": (_env_to_send_in_rpc, (_pubsub_module, _gossipsub_module)),
    "maybe_consume_signed_record": (_maybe_consume_signed_record, (_pubsub_module, _gossipsub_module)),
    "read_varint_prefixed_bytes_limited": (_read_varint_prefixed_bytes_limited, (_pubsub_module,)),
}
_REPLACEMENTS = {name: replacement for name, (replacement, _modules) in _PATCHED.items()}


def install() -> None:
    """Rebind the patched names in pubsub and gossipsub to the scoped wrappers (idempotent)."""
    for name, (replacement, modules) in _PATCHED.items():
        for module in modules:
            current = getattr(module, name)
            if current is replacement:
                continue
            original = _upstream.setdefault(name, current)
            if current is not original:
                raise RuntimeError(f"{module.__name__}.{name} was already replaced by someone else")
            setattr(module, name, replacement)


# ---- what host.py uses -------------------------------------------------------------------------------------------


def gossipsub_class() -> type[GossipSub]:
    return TunedGossipSub if enabled() else GossipSub
