"""Real libp2p hosts on loopback TCP, driven through the asyncio bridge. No mocks, no fixed sleeps."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import Awaitable, Callable

import multiaddr
import pytest
import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.validators import PUBSUB_SIGNING_PREFIX

from node.errors import InvalidMessage
from node.p2p import LEASE_PROTOCOL, SYNC_PROTOCOL, GossipParams, P2PConfig
from node.p2p.bridge import P2PNode, P2PRuntime
from node.p2p.errors import PeerBanned, PeerUnavailable, RequestTimeout
from node.p2p.framing import FrameError, encode_uvarint
from node.types import ACCEPTED, Validation, Verdict

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TOPIC = "gpunet/31337/0x0000000000000000000000000000000000000001/offers/1"


def ok_validator(data: bytes, sender: str) -> Validation:
    if data.startswith(b"ok"):
        return ACCEPTED
    if data.startswith(b"boom"):
        raise RuntimeError("validator bug")
    return Validation(Verdict.REJECT, "bad_prefix")


def accept_all(data: bytes, sender: str) -> Validation:
    return ACCEPTED


async def wait_until(cond: Callable[[], Awaitable[bool] | bool], timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while True:
        res = cond()
        if asyncio.iscoroutine(res):
            res = await res
        if res:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.02)


def counter(node: P2PNode, verdict: str, reason: str) -> float:
    value = node.metrics.registry.get_sample_value(
        "gpunet_gossip_messages_total", {"verdict": verdict, "reason": reason}
    )
    return value or 0.0


@pytest.fixture
async def runtime():
    async with P2PRuntime() as rt:
        yield rt


@pytest.fixture
async def make_node(tmp_path, runtime):
    """Start nodes in the shared runtime; all are stopped at teardown."""
    nodes: list[P2PNode] = []

    async def make(validate=ok_validator, live_offers=list, gossip: GossipParams | None = None, **kw) -> P2PNode:
        cfg = P2PConfig(
            key_path=tmp_path / f"n{len(nodes)}" / "node.key",
            topic=TOPIC,
            gossip=gossip or GossipParams(),
            **kw,
        )
        node = P2PNode(cfg, validate, live_offers, runtime=runtime)
        await node.start()
        nodes.append(node)
        return node

    yield make
    await asyncio.gather(*(n.stop() for n in nodes), return_exceptions=True)


async def in_mesh(node: P2PNode) -> bool:
    return any(p.in_mesh for p in await node.peers())


async def drain(node: P2PNode) -> list:
    out = []
    while not node.queue.empty():
        out.append(node.queue.get_nowait())
    return out


async def line(make_node, n: int, **kw) -> list[P2PNode]:
    nodes = [await make_node(**kw) for _ in range(n)]
    for a, b in itertools.pairwise(nodes):
        await b.connect(a.listen_addrs[0])
    for node in nodes:
        await wait_until(lambda node=node: in_mesh(node), what="mesh")
    return nodes


# ---- gossip ---------------------------------------------------------------------------------------------


async def test_ten_node_mesh_delivers_to_all(make_node) -> None:
    hub = await make_node()
    nodes = [hub] + [await make_node(bootstrap=(hub.listen_addrs[0],)) for _ in range(9)]
    # chain some leaves too so the mesh is not only a star
    for a, b in itertools.pairwise(nodes[1:]):
        await b.connect(a.listen_addrs[0])
    for node in nodes:
        await wait_until(lambda node=node: in_mesh(node), what="mesh")
    await nodes[5].publish(b"ok hello mesh")
    for node in nodes:
        if node is nodes[5]:
            continue
        await wait_until(lambda node=node: not node.queue.empty(), what="delivery")
        msg = node.queue.get_nowait()
        assert msg.data == b"ok hello mesh"
        assert msg.origin == nodes[5].peer_id
        assert msg.topic == TOPIC and msg.via == "gossip"
    assert nodes[5].queue.empty()  # own publishes are not echoed back
    assert all(p.peer_id.startswith("12D3KooW") for p in await hub.peers())
    assert all(a.endswith("/p2p/" + hub.peer_id) for a in hub.listen_addrs)


async def test_reject_is_neither_delivered_nor_forwarded(make_node) -> None:
    a = await make_node(validate=accept_all)  # a misbehaving publisher: accepts its own garbage
    b = await make_node()
    c = await make_node()
    await b.connect(a.listen_addrs[0])
    await c.connect(b.listen_addrs[0])
    for node in (a, b, c):
        await wait_until(lambda node=node: in_mesh(node), what="mesh")
    await a.publish(b"bad offer")
    await a.publish(b"boom")  # the validator raises on this one
    await a.publish(b"ok marker")
    await wait_until(lambda: c.queue.qsize() >= 1, what="marker at C")
    got_c = [m.data for m in await drain(c)]
    got_b = [m.data for m in await drain(b)]
    assert got_c == [b"ok marker"]
    assert got_b == [b"ok marker"]
    assert counter(b, "reject", "bad_prefix") == 1
    assert counter(b, "ignore", "validator_error") == 1  # our bug, not the sender's fault: no penalty
    assert counter(b, "reject", "validator_error") == 0
    assert counter(b, "accept", "ok") == 1
    assert counter(c, "reject", "bad_prefix") == 0  # never reached C
    assert counter(c, "accept", "ok") == 1


async def test_local_publish_is_validated(make_node) -> None:
    node = await make_node()
    with pytest.raises(InvalidMessage):
        await node.publish(b"not ok")
    with pytest.raises(InvalidMessage):
        await node.publish(b"ok" + b"x" * (300 * 1024))  # over max_message_bytes
    assert counter(node, "reject", "oversize") == 1


def _signed_spam_frames(attacker: P2PNode, frames: int, per_frame: int) -> list[bytes]:
    """Validly signed pubsub RPCs carrying invalid payloads, as raw length-prefixed frames."""
    key = attacker.host._key_pair.private_key
    from_id = ID.from_base58(attacker.peer_id).to_bytes()
    out, seq = [], 1 << 40
    for _ in range(frames):
        rpc = rpc_pb2.RPC()
        for _ in range(per_frame):
            seq += 1
            msg = rpc_pb2.Message(
                data=b"spam %d" % seq, topicIDs=[TOPIC], from_id=from_id, seqno=seq.to_bytes(8, "big")
            )
            msg.signature = key.sign(PUBSUB_SIGNING_PREFIX.encode() + msg.SerializeToString())
            rpc.publish.append(msg)
        body = rpc.SerializeToString()
        out.append(encode_uvarint(len(body)) + body)
    return out


@pytest.mark.parametrize("ban", [True, False], ids=["ban", "no-ban"])
async def test_invalid_flood_does_not_stall_valid_traffic(make_node, tmp_path, ban: bool) -> None:
    gossip = GossipParams() if ban else GossipParams(reject_penalty_threshold=1e12)
    a, b, c = await line(make_node, 3, gossip=gossip)
    # the attacker lives in its own trio thread, as it would in its own process
    async with P2PRuntime() as other:
        cfg = P2PConfig(key_path=tmp_path / "attacker" / "node.key", topic=TOPIC)
        attacker = P2PNode(cfg, accept_all, runtime=other)
        await attacker.start()
        try:
            await attacker.connect(b.listen_addrs[0])
            frames = _signed_spam_frames(attacker, frames=120, per_frame=50)  # 6000 invalid messages

            async def flood() -> int:  # ~3000 msgs/s over a raw gossipsub stream, bypassing any queue
                sent = 0
                try:
                    stream = await attacker.host._host.new_stream(ID.from_base58(b.peer_id), [PROTOCOL_ID_V11])
                    for frame in frames:
                        await stream.write(frame)
                        sent += 50
                        await trio.sleep(1 / 60)
                except Exception:
                    pass  # banned and disconnected
                return sent

            flood_task = asyncio.ensure_future(other.call(flood))
            await wait_until(lambda: counter(b, "reject", "bad_prefix") >= 40, what="flood reaching B")
            t0 = time.monotonic()
            republished = 0
            seen: set[bytes] = set()

            def arrived(i: int) -> bool:
                while not c.queue.empty():
                    seen.add(c.queue.get_nowait().data.split(b" again")[0])
                return b"ok valid %d" % i in seen

            for i in range(20):  # each valid message must cross B while B is being flooded
                # py-libp2p 0.8.1 occasionally drops a message right after a burst or a disconnect (the ban):
                # one republish (new bytes) is tolerated per run, more fails the test
                for attempt in range(3):
                    await a.publish(b"ok valid %d" % i + (b" again %d" % attempt if attempt else b""))
                    try:
                        await wait_until(lambda i=i: arrived(i), timeout=3, what=f"valid {i} at C")
                        break
                    except AssertionError:
                        republished += 1
                else:
                    raise AssertionError(f"valid message {i} never reached C under flood")
            elapsed = time.monotonic() - t0
            assert republished <= 1
            sent = await flood_task
        finally:
            await attacker.stop()
    seen.update(m.data.split(b" again")[0] for m in await drain(c))
    assert seen == {b"ok valid %d" % i for i in range(20)}  # all valid ones, nothing else
    assert counter(c, "reject", "bad_prefix") == 0  # nothing invalid was forwarded
    bans = b.metrics.registry.get_sample_value("gpunet_p2p_peer_bans_total")
    if ban:
        assert bans == 1
        assert sent < 6000  # cut off
    else:
        assert bans == 0
        assert sent == 6000
        assert counter(b, "reject", "bad_prefix") > 3000
    assert elapsed < 10, f"valid traffic took {elapsed:.1f}s under flood"


async def test_garbage_on_the_wire_does_not_crash(make_node, runtime) -> None:
    a, b = await line(make_node, 2)

    async def send_raw(protocol: str, payload: bytes) -> None:
        stream = await a.host._host.new_stream(ID.from_base58(b.peer_id), [TProtocol(protocol)])
        with contextlib.suppress(Exception), trio.move_on_after(2):
            await stream.write(payload)
            await stream.read(1)  # until the peer resets/closes
        with contextlib.suppress(Exception):
            await stream.reset()

    await runtime.call(send_raw, "/meshsub/1.1.0", os.urandom(4096))
    # a well-formed RPC whose message carries a garbage public key (kills an unguarded py-libp2p 0.8.1 pubsub)
    evil = rpc_pb2.RPC()
    evil.publish.append(
        rpc_pb2.Message(
            data=b"ok",
            topicIDs=[TOPIC],
            from_id=os.urandom(34),
            seqno=b"\0" * 8,
            key=os.urandom(40),
            signature=b"s" * 64,
        )
    )
    body = evil.SerializeToString()
    await runtime.call(send_raw, "/meshsub/1.1.0", encode_uvarint(len(body)) + body)
    await runtime.call(send_raw, "/meshsub/1.1.0", encode_uvarint(50 * 1024 * 1024) + b"x" * 100)
    await runtime.call(send_raw, SYNC_PROTOCOL, encode_uvarint(10 * 1024 * 1024))
    await runtime.call(send_raw, SYNC_PROTOCOL, encode_uvarint(4) + b"\x09\x09\x09\x09")
    registered = b.set_handler(LEASE_PROTOCOL, _echo)
    if registered is not None:
        await registered  # registered with libp2p, not just recorded
    await runtime.call(send_raw, LEASE_PROTOCOL, encode_uvarint(2 * 1024 * 1024))
    await runtime.call(send_raw, LEASE_PROTOCOL, b"\xff" * 12)
    errors = b.metrics.registry.get_sample_value(
        "gpunet_p2p_stream_errors_total", {"protocol": SYNC_PROTOCOL, "reason": "frame"}
    )
    assert errors == 2
    assert (
        b.metrics.registry.get_sample_value(
            "gpunet_p2p_stream_errors_total", {"protocol": "/meshsub", "reason": "malformed_message"}
        )
        == 1
    )
    # still alive: gossip and requests both work
    await wait_until(lambda: in_mesh(a), what="mesh after garbage")
    await a.publish(b"ok after garbage")
    await wait_until(lambda: not b.queue.empty(), what="delivery after garbage")
    assert (await drain(b))[0].data == b"ok after garbage"
    assert await a.request(b.peer_id, LEASE_PROTOCOL, b"ping", timeout=5) == b"echo:ping"


# ---- offers sync ----------------------------------------------------------------------------------------


async def test_late_joiner_syncs_all_pages(make_node) -> None:
    offers = [b"ok offer %04d " % i + os.urandom(200) for i in range(600)]
    offers += [b"invalid %d" % i for i in range(7)]
    old = await make_node(live_offers=lambda: list(offers), sync_page_offers=256)
    late = await make_node(sync_page_offers=256)
    n = await late.sync_from(old.listen_addrs[0])
    assert n == 600
    got = await drain(late)
    assert sorted(m.data for m in got) == sorted(offers[:600])
    assert all(m.via == "sync" and m.sender == old.peer_id for m in got)
    assert counter(late, "reject", "bad_prefix") == 7
    served = old.metrics.registry.get_sample_value("gpunet_p2p_sync_offers_total", {"direction": "served"})
    assert served == 607
    # by peer id as well, now that the address is known
    assert await late.sync_from(old.peer_id) == 600


async def test_sync_right_after_another_sees_the_offers_live_now(make_node) -> None:
    # A node that joins right after another synced from the same peer gets that peer's book as it is now (the
    # peer's offer was superseded in between), not the previous sync's snapshot.
    live = [b"ok offer v1"]
    old = await make_node(live_offers=lambda: list(live))
    first, second = await make_node(), await make_node()
    assert await first.sync_from(old.listen_addrs[0]) == 1
    live[:] = [b"ok offer v2"]
    assert await second.sync_from(old.listen_addrs[0]) == 1
    assert [m.data for m in await drain(second)] == [b"ok offer v2"]


async def test_sync_from_unknown_peer_fails_cleanly(make_node) -> None:
    node = await make_node()
    with pytest.raises(PeerUnavailable):
        await node.sync_from("/ip4/127.0.0.1/tcp/1/p2p/12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo")


# ---- request / response -------------------------------------------------------------------------------


async def _echo(peer: str, body: bytes) -> bytes:
    return b"echo:" + body


async def test_request_response_with_timeout(make_node) -> None:
    a = await make_node()
    b = await make_node()
    seen: list[tuple[str, bytes]] = []
    release = asyncio.Event()

    async def lease_handler(peer: str, body: bytes) -> bytes | None:
        seen.append((peer, body))
        if body == b"slow":
            await release.wait()
        if body == b"fire-and-forget":
            return None
        return b"reply:" + body

    b.set_handler(LEASE_PROTOCOL, lease_handler)
    await a.connect(b.listen_addrs[0])
    assert await a.request(b.peer_id, LEASE_PROTOCOL, b"hello", timeout=5) == b"reply:hello"
    assert seen[-1] == (a.peer_id, b"hello")
    big = os.urandom(1024 * 1024 - 16)
    echoed = await a.request(b.peer_id, LEASE_PROTOCOL, big[:-8], timeout=10)  # reply near the 1 MiB cap
    assert echoed == b"reply:" + big[:-8]
    with pytest.raises(RequestTimeout):
        await a.request(b.peer_id, LEASE_PROTOCOL, b"slow", timeout=0.5)
    release.set()
    assert await a.request(b.peer_id, LEASE_PROTOCOL, b"fire-and-forget", expect_reply=False, timeout=5) is None
    await wait_until(lambda: seen[-1][1] == b"fire-and-forget", what="one-way message")
    with pytest.raises(FrameError):
        await a.request(b.peer_id, LEASE_PROTOCOL, b"x" * (1024 * 1024 + 1), timeout=5)
    with pytest.raises(PeerUnavailable):
        await a.request(b.peer_id, "/gpunet/unknown/1.0.0", b"x", timeout=5)


async def test_handler_error_resets_stream(make_node) -> None:
    a = await make_node()
    b = await make_node()

    async def broken(peer: str, body: bytes) -> bytes:
        raise ValueError("bug in handler")

    b.set_handler(LEASE_PROTOCOL, broken)
    await a.connect(b.listen_addrs[0])
    with pytest.raises(PeerUnavailable):
        await a.request(b.peer_id, LEASE_PROTOCOL, b"hi", timeout=5)
    errors = b.metrics.registry.get_sample_value(
        "gpunet_p2p_stream_errors_total", {"protocol": LEASE_PROTOCOL, "reason": "handler_error"}
    )
    assert errors == 1
    b.set_handler(LEASE_PROTOCOL, _echo)  # replaced on a running node
    await wait_until(lambda: b._handlers[LEASE_PROTOCOL] is _echo)
    assert await a.request(b.peer_id, LEASE_PROTOCOL, b"hi", timeout=5) == b"echo:hi"


async def test_restart_keeps_peer_id(tmp_path) -> None:
    cfg = P2PConfig(key_path=tmp_path / "keys" / "node.key", topic=TOPIC)
    async with P2PNode(cfg, ok_validator) as node:
        first = node.peer_id
    assert oct((tmp_path / "keys" / "node.key").stat().st_mode & 0o777) == "0o600"
    async with P2PNode(cfg, ok_validator) as node:
        assert node.peer_id == first


async def test_an_explicit_dial_is_not_refused_by_the_librarys_failed_peer_block(make_node, runtime) -> None:
    """py-libp2p blocks a peer for 60 s once all its addresses failed (a provider that was down while its consumer
    redialled it); our explicit dials lift that block, so a restarted provider is found by the next redial."""
    provider, consumer = await make_node(), await make_node()
    swarm = await runtime.call(lambda: consumer.host._live_host.get_network())
    swarm._negative_peer_cache.mark_failed(provider.peer_id)  # as after dials to it failed
    assert swarm_blocks(consumer, provider.peer_id)
    assert await consumer.connect(provider.listen_addrs[0]) == provider.peer_id
    assert not swarm_blocks(consumer, provider.peer_id)


def swarm_blocks(node: P2PNode, peer_id: str) -> bool:
    return node.host._live_host.get_network()._negative_peer_cache.is_blocked(peer_id)


def test_upstream_negative_peer_cache_unchanged() -> None:
    """The block lifted in ``Dialer.connect``: if an upgrade drops ``unblock_peer`` or the cache, revisit it."""
    from libp2p.network import swarm

    assert hasattr(swarm.Swarm, "unblock_peer") and swarm._NegativePeerCache()._ttl == 60.0


# ---- bans -----------------------------------------------------------------------------------------------


async def connected(node: P2PNode, other: P2PNode) -> bool:
    return any(p.peer_id == other.peer_id for p in await node.peers())


async def ban_for_rejects(runtime: P2PRuntime, node: P2PNode, peer: str) -> None:
    """Drive ``peer`` over ``node``'s REJECT threshold through the real penalty path (one verdict per message)."""

    def reject_until_banned() -> None:
        threshold = node.host.config.gossip.reject_penalty_threshold
        for _ in range(int(threshold) + 1):
            node.host.judge(b"invalid offer", peer)

    await runtime.call(reject_until_banned)
    assert node.metrics.registry.get_sample_value("gpunet_p2p_peer_bans_total") == 1


async def test_a_banned_peer_cannot_reconnect_while_the_ban_lasts(make_node, runtime) -> None:
    a = await make_node(gossip=GossipParams(reject_penalty_threshold=3, ban_s=600))
    b = await make_node()
    await b.connect(a.listen_addrs[0])
    await wait_until(lambda: connected(a, b), what="A sees B")
    await ban_for_rejects(runtime, a, b.peer_id)
    await wait_until(lambda: _both_apart(a, b), timeout=20, what="the banned peer disconnected on both sides")

    # B dials A again: the connection is refused (B may briefly think it got through: the refusal comes right
    # after the handshake, once A knows who is dialling), and it does not come back.
    with contextlib.suppress(PeerUnavailable):
        await b.connect(a.listen_addrs[0])
    await wait_until(lambda: _both_apart(a, b), timeout=20, what="B's redial refused by A")
    refused = a.metrics.registry.get_sample_value(
        "gpunet_p2p_banned_connections_refused_total", {"direction": "inbound"}
    )
    assert refused is not None and refused >= 1
    assert not await connected(a, b)

    # A dial by the library itself (its auto-connector, a stream to a peer id) is refused after the handshake.
    async def library_dial() -> None:
        with contextlib.suppress(Exception), trio.fail_after(15):
            await a.host._live_host.connect(info_from_p2p_addr(multiaddr.Multiaddr(b.listen_addrs[0])))

    await runtime.call(library_dial)
    assert not await connected(a, b)  # never registered on A's side; B sees A's close a moment later
    await wait_until(lambda: _both_apart(a, b), timeout=20, what="A's own library dial to B refused")
    refused_out = a.metrics.registry.get_sample_value(
        "gpunet_p2p_banned_connections_refused_total", {"direction": "outbound"}
    )
    assert refused_out is not None and refused_out >= 1

    # A does not dial B either: an explicit dial fails at once with an error that names the ban.
    t0 = time.monotonic()
    with pytest.raises(PeerBanned, match="banned"):
        await a.connect(b.listen_addrs[0])
    assert time.monotonic() - t0 < 5
    with pytest.raises(PeerBanned, match="banned"):
        await a.request(b.peer_id, LEASE_PROTOCOL, b"x", timeout=5)
    with pytest.raises(PeerBanned, match="banned"):
        await a.sync_from(b.listen_addrs[0])
    assert await _both_apart(a, b)


async def test_a_banned_peer_connects_again_once_the_ban_expires(make_node, runtime) -> None:
    a = await make_node(gossip=GossipParams(reject_penalty_threshold=3, ban_s=2))
    b = await make_node()
    await b.connect(a.listen_addrs[0])
    await wait_until(lambda: in_mesh(a), what="mesh before the ban")
    await ban_for_rejects(runtime, a, b.peer_id)
    await wait_until(lambda: b.peer_id not in a.host.guard.banned, timeout=20, what="the ban expiring")

    await b.connect(a.listen_addrs[0])
    await wait_until(lambda: connected(a, b), timeout=20, what="A accepting B again")
    assert await a.connect(b.listen_addrs[0]) == b.peer_id  # A may dial B again too
    await wait_until(lambda: _in_mesh_of(a, b), timeout=20, what="B back in A's mesh")
    await b.publish(b"ok after the ban")
    await wait_until(lambda: not a.queue.empty(), what="B's gossip reaching A again")
    assert (await drain(a))[-1].data == b"ok after the ban"


async def _in_mesh_of(node: P2PNode, other: P2PNode) -> bool:
    return any(p.peer_id == other.peer_id and p.in_mesh for p in await node.peers())


async def _both_apart(a: P2PNode, b: P2PNode) -> bool:
    return not await connected(a, b) and not await connected(b, a)


def test_upstream_resource_manager_is_the_ban_gate_hook() -> None:
    """``BanGate`` is new_host's default resource manager plus a peer check in ``open_connection``: if an upgrade
    changes the factory's settings or the swarm stops asking ``open_connection`` with the peer id, revisit it."""
    import inspect
    import re

    from libp2p.network.swarm import Swarm
    from libp2p.rcmgr import ResourceManager, new_resource_manager

    factory = inspect.signature(new_resource_manager).parameters
    own = inspect.signature(ResourceManager.__init__).parameters
    differ = {n for n, p in factory.items() if p.default != own[n].default}
    assert differ == {"enable_memory_pooling"} and factory["enable_memory_pooling"].default is True
    for method in (Swarm.upgrade_inbound_raw_conn, Swarm.upgrade_outbound_raw_conn):
        assert re.search(r"open_connection\(\s*peer_id,", inspect.getsource(method)), method.__name__
