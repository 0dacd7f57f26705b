"""The py-libp2p overrides of ``node.p2p.tuning``: each one pinned to the upstream code it replaces, and measured
against it on two real hosts on loopback (the library's behaviour with ``GPUNET_P2P_TUNING=0``, ours without).

A failure of a ``test_upstream_*`` pin means py-libp2p changed code an override relies on or replaces: re-read the
new upstream function, check the override still matches its assumptions (docstrings in ``tuning.py``), drop the
override if upstream fixed the behaviour, then update the pinned hash.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from libp2p.network.stream.net_stream import NetStream
from libp2p.peer import peerstore
from libp2p.peer.peerstore import PeerStore
from libp2p.pubsub import gossipsub as gossipsub_module
from libp2p.pubsub import pubsub as pubsub_module
from libp2p.pubsub import utils as pubsub_utils
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.stream_muxer.muxer_multistream import MuxerMultistream
from libp2p.stream_muxer.yamux.yamux import Yamux, YamuxStream
from libp2p.utils import varint

from node.p2p import GossipParams, P2PConfig, tuning
from node.p2p.host import P2PHost
from node.types import ACCEPTED

TOPIC = "gpunet/31337/0x0000000000000000000000000000000000000001/offers/1"


def source_hash(obj: Callable[..., Any]) -> str:
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()[:16]


def test_libp2p_is_the_pinned_version() -> None:
    assert importlib.metadata.version("libp2p") == "0.8.1"
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    assert '"libp2p==0.8.1"' in pyproject.read_text()


# ---- pins: the upstream code each override replaces or relies on ------------------------------------------------


def test_upstream_idontwant_on_every_publish_unchanged() -> None:
    # publish() calls _emit_idontwant_for_message with no size threshold and no await before it (TunedGossipSub
    # notes the size at the top of publish and the emitter consumes the note).
    assert source_hash(GossipSub.publish) == "b978282af46297f7"
    assert source_hash(GossipSub._emit_idontwant_for_message) == "54753ff6cf35dec6"
    body = inspect.getsource(GossipSub.publish)
    before_emit = body.split("await self._emit_idontwant_for_message(msg_id, pubsub_msg.topicIDs)")[0]
    assert "await" not in before_emit.split("async def publish")[1]


def test_upstream_yamux_window_update_per_read_unchanged() -> None:
    # TunedYamuxStream replaces the window-update policy and the buffered read; TunedYamux re-classes the streams
    # that open_stream / accept_stream hand out, which needs YamuxStream.__init__ to hold all of a stream's state.
    assert source_hash(YamuxStream._auto_tune_and_send_window_update) == "6ebcbd822fe7f996"
    assert source_hash(YamuxStream.read) == "ca585f2199fd4e83"
    assert source_hash(YamuxStream.__init__) == "ab24c0709285d573"
    assert source_hash(Yamux.read_stream) == "d07c99299384666d"
    assert source_hash(Yamux.open_stream) == "f3e0ef79ec21d0cb"
    assert source_hash(Yamux.accept_stream) == "167dcb5e053184fc"
    # new_conn builds Yamux itself (the host's muxer_opt class is not used); TunedMuxerMultistream re-classes it.
    assert source_hash(MuxerMultistream.new_conn) == "91d21f40f524ad99"
    assert "__slots__" not in vars(YamuxStream)


def test_upstream_signed_record_per_rpc_unchanged() -> None:
    # The two functions are looked up by name in pubsub's and gossipsub's module globals at each call.
    assert source_hash(peerstore.env_to_send_in_RPC) == "9fea9d702c187d22"
    assert source_hash(pubsub_utils.maybe_consume_signed_record) == "11b2181c27d75df4"
    assert source_hash(Pubsub.continuously_read_stream) == "ac0c4ad87ca39288"
    for module in (pubsub_module, gossipsub_module):
        for name in ("env_to_send_in_RPC", "maybe_consume_signed_record"):
            assert name in inspect.getsource(module), f"{module.__name__} no longer calls {name}"
            upstream = getattr(peerstore, name, None) or getattr(pubsub_utils, name)
            assert getattr(module, name) in (upstream, tuning._REPLACEMENTS[name])


def test_upstream_rpc_read_per_byte_unchanged() -> None:
    # continuously_read_stream reads each RPC through the module-level name read_varint_prefixed_bytes_limited,
    # which reads the prefix one NetStream.read(1) at a time; the fast path relies on NetStream._state and on the
    # stream events that Yamux.read_stream waits on (pinned above).
    assert source_hash(varint.read_varint_prefixed_bytes_limited) == "75623a1c5c4e2c39"
    assert source_hash(NetStream.read) == "cc3b280850abe4b3"
    assert "read_varint_prefixed_bytes_limited(" in inspect.getsource(Pubsub.continuously_read_stream)
    assert pubsub_module.read_varint_prefixed_bytes_limited in (
        varint.read_varint_prefixed_bytes_limited, tuning._REPLACEMENTS["read_varint_prefixed_bytes_limited"])


def test_tuning_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(tuning.ENV_FLAG, raising=False)
    assert tuning.enabled() and tuning.gossipsub_class() is tuning.TunedGossipSub
    for off in ("0", "false", "OFF", "no"):
        monkeypatch.setenv(tuning.ENV_FLAG, off)
        assert not tuning.enabled()
        assert tuning.gossipsub_class() is GossipSub


# ---- behaviour: the library's work per message, and ours, on two real hosts -----------------------------------------


@dataclass
class Traffic:
    counts: Counter[str]
    muxers: set[type]
    streams: set[type]


def run_pair(tmp: Path, sizes: list[int]) -> Traffic:
    """Two hosts; A publishes one message per size in ``sizes``; counts the library's per-message work."""
    counts: Counter[str] = Counter()
    muxers: set[type] = set()
    streams: set[type] = set()

    async def main() -> None:
        received: list[bytes] = []
        hosts = []
        async with trio.open_nursery() as nursery:
            for name in ("a", "b"):
                cfg = P2PConfig(key_path=tmp / name / "node.key", topic=TOPIC, gossip=GossipParams())
                host = P2PHost(cfg, lambda d, s: ACCEPTED, on_message=lambda m: received.append(m.data))
                await nursery.start(host.run)
                hosts.append(host)
            a, b = hosts
            await b.connect(a.listen_addrs[0])
            with trio.fail_after(20):
                while a.mesh_size() < 1 or b.mesh_size() < 1:
                    await trio.sleep(0.02)
            await trio.sleep(0.3)  # let the subscription and graft exchange settle before counting
            counts.clear()
            for seq, size in enumerate(sizes):
                await a.publish(b"%d " % seq + b"x" * (size - 3))
                await trio.sleep(0.01)
            with trio.fail_after(20):
                while len(received) < len(sizes):
                    await trio.sleep(0.02)
            await trio.sleep(0.3)  # control RPCs that follow the last message
            for host in hosts:
                for conns in host._live_host.get_network().connections.values():
                    for conn in conns:
                        muxers.add(type(conn.muxed_conn))
                        streams.update(type(s) for s in conn.muxed_conn.streams.values())
                host.stop()

    trio.run(main)
    return Traffic(counts, muxers, streams)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Count the library calls each override avoids, in whichever mode runs."""
    counts: Counter[str] = Counter()

    def wrap(owner: Any, name: str, key: str) -> None:
        original = getattr(owner, name)
        if inspect.iscoroutinefunction(original):
            async def acounting(*args: Any, **kwargs: Any) -> Any:
                counts[key] += 1
                return await original(*args, **kwargs)
            monkeypatch.setattr(owner, name, acounting)
        else:
            def counting(*args: Any, **kwargs: Any) -> Any:
                counts[key] += 1
                return original(*args, **kwargs)
            monkeypatch.setattr(owner, name, counting)

    wrap(GossipSub, "emit_idontwant", "idontwant")
    wrap(YamuxStream, "send_window_update", "window_update")
    wrap(pubsub_utils, "consume_envelope", "record_verify")
    wrap(PeerStore, "get_local_record", "own_record")
    wrap(NetStream, "read", "stream_read")
    yield counts


SMALL = [400] * 20


def traffic(tmp: Path, monkeypatch: pytest.MonkeyPatch, counted: Counter[str], on: bool, sizes: list[int]) -> Traffic:
    monkeypatch.setenv(tuning.ENV_FLAG, "1" if on else "0")
    result = run_pair(tmp / ("on" if on else "off"), sizes)
    result.counts = counted.copy()
    counted.clear()
    return result


def test_idontwant_skipped_below_512_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           counted: Counter[str]) -> None:
    upstream = traffic(tmp_path, monkeypatch, counted, False, SMALL)
    assert upstream.counts["idontwant"] >= len(SMALL), "py-libp2p no longer sends IDONTWANT for small messages"
    ours = traffic(tmp_path, monkeypatch, counted, True, SMALL)
    assert ours.counts["idontwant"] == 0
    large = traffic(tmp_path, monkeypatch, counted, True, [600] * 5)
    assert large.counts["idontwant"] >= 5, "messages of 512 bytes and more still get IDONTWANT"


def test_yamux_window_updates_at_half_window(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             counted: Counter[str]) -> None:
    upstream = traffic(tmp_path, monkeypatch, counted, False, SMALL)
    assert upstream.counts["window_update"] >= len(SMALL), "py-libp2p no longer sends a window update per read"
    assert upstream.muxers == {Yamux} and YamuxStream in upstream.streams
    ours = traffic(tmp_path, monkeypatch, counted, True, SMALL)
    assert ours.counts["window_update"] <= 2  # 20 x 400 B is far below half of the 256 KiB window
    assert ours.muxers == {tuning.TunedYamux} and ours.streams == {tuning.TunedYamuxStream}


def test_yamux_window_still_credited_for_bulk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              counted: Counter[str]) -> None:
    # 40 x 100 KiB = 4 MiB through one stream: the sender's 256 KiB window must be credited again and again.
    ours = traffic(tmp_path, monkeypatch, counted, True, [100 * 1024] * 40)
    assert 4 <= ours.counts["window_update"] < 40


def test_rpc_read_in_one_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, counted: Counter[str]) -> None:
    upstream = traffic(tmp_path, monkeypatch, counted, False, SMALL)
    assert upstream.counts["stream_read"] >= 3 * len(SMALL), "py-libp2p no longer reads an RPC byte by byte"
    ours = traffic(tmp_path, monkeypatch, counted, True, SMALL)
    # what is left are the reads of stream set-up (multistream-select, identify), not of the messages
    assert ours.counts["stream_read"] <= upstream.counts["stream_read"] - 3 * len(SMALL)


def test_signed_records_verified_once_and_ours_built_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          counted: Counter[str]) -> None:
    upstream = traffic(tmp_path, monkeypatch, counted, False, SMALL)
    assert upstream.counts["record_verify"] >= len(SMALL), "py-libp2p no longer verifies the record per RPC"
    assert upstream.counts["own_record"] >= len(SMALL), "py-libp2p no longer rebuilds our record per RPC"
    ours = traffic(tmp_path, monkeypatch, counted, True, SMALL)
    assert ours.counts["record_verify"] <= 2  # once per peer and direction
    assert ours.counts["own_record"] <= 8  # identify and subscription announcements, not per message


def test_record_cache_reverifies_changed_bytes_and_rejects_bad_ones() -> None:
    class Msg:
        def __init__(self, record: bytes) -> None:
            self.senderRecord = record

        def HasField(self, name: str) -> bool:
            return name == "senderRecord"

    class Peer:
        def to_bytes(self) -> bytes:
            return b"peer"

    calls: list[bytes] = []
    verdict = {b"good": True, b"good2": True, b"bad": False}
    class FakeHost:
        pass

    host: Any = FakeHost()
    tuning._upstream.setdefault("maybe_consume_signed_record", pubsub_utils.maybe_consume_signed_record)
    saved = tuning._upstream["maybe_consume_signed_record"]
    tuning._upstream["maybe_consume_signed_record"] = lambda m, h, p: calls.append(m.senderRecord) or verdict[
        m.senderRecord]
    try:
        tuning._hosts[host] = tuning._RecordCache()
        consume = tuning._maybe_consume_signed_record
        assert consume(Msg(b"good"), host, Peer()) and consume(Msg(b"good"), host, Peer())
        assert calls == [b"good"]
        assert consume(Msg(b"good2"), host, Peer()) and calls == [b"good", b"good2"]
        assert not consume(Msg(b"bad"), host, Peer()) and not consume(Msg(b"bad"), host, Peer())
        assert calls[-2:] == [b"bad", b"bad"]  # a rejected record is checked again every time
        tuning._hosts[host].verified[b"peer"] = (b"good", time.monotonic() - tuning.RECORD_REVERIFY_S - 1)
        assert consume(Msg(b"good"), host, Peer()) and calls[-1] == b"good"  # and an accepted one when stale
    finally:
        tuning._upstream["maybe_consume_signed_record"] = saved
        tuning._hosts.pop(host, None)
