"""Node assembly: parts close exactly as far as they were created, loops live in one task group, a failing
essential loop stops the node loudly; the chain-event fan-out; the provider's offer publisher (against fakes)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

import node.service as service
from node.chain.anvil import devnet_key
from node.chain.events import ChainEvent, Reorged
from node.chain.stake_view import StakeCache
from node.chain_fanout import RECENT_EVENTS, ChainEventRouter
from node.config import NodeConfig, ProviderConfig
from node.crypto.eip712 import Domain
from node.errors import ChainError, ChainMismatch, ConfigError, NodeError
from node.protocol.offers import SignedOffer
from node.provider.gpus import GpuDevice
from node.provider.publisher import OfferPublisher
from node.supervisor import PartFailed, Supervisor


# ---------------------------------------------------------------------------------------------- supervisor
@dataclass
class Loop:
    """A fake background loop: runs until cancelled, or raises / returns when told to."""

    started: asyncio.Event = field(default_factory=asyncio.Event)
    trigger: asyncio.Event = field(default_factory=asyncio.Event)
    error: BaseException | None = None
    cancelled: bool = False

    async def run(self) -> None:
        self.started.set()
        try:
            await self.trigger.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        if self.error is not None:
            raise self.error


async def wait_for(cond: Any, timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not cond():
            await asyncio.sleep(0.01)
    await asyncio.wait_for(poll(), timeout)


async def test_start_returns_when_ready_and_stop_closes_in_reverse_order_once():
    sup, closed, loop = Supervisor("t"), [], Loop()

    async def close_async() -> None:
        await asyncio.sleep(0)
        closed.append("p2p")

    async def assemble(s: Supervisor) -> None:
        s.cleanup("database", lambda: closed.append("database"))
        s.cleanup("p2p", close_async)
        s.spawn("gossip", loop.run(), essential=True)
        await loop.started.wait()  # readiness: start() must not return before this
        s.cleanup("api", lambda: closed.append("api"))

    await sup.start(assemble)
    assert loop.started.is_set() and sup.created == ["database", "p2p", "api"] and closed == []
    await sup.stop()
    assert loop.cancelled
    assert closed == ["api", "p2p", "database"] == sup.closed
    assert sup.failure is None and await sup.wait() is None
    await sup.stop()  # a second stop is a no-op
    assert closed == ["api", "p2p", "database"]
    with pytest.raises(RuntimeError):
        await sup.start(assemble)


async def test_a_start_that_fails_half_way_closes_exactly_what_it_created_and_raises_the_cause():
    sup, closed, loop = Supervisor("t"), [], Loop()

    async def assemble(s: Supervisor) -> None:
        s.cleanup("database", lambda: closed.append("database"))
        s.cleanup("p2p", lambda: closed.append("p2p"))
        s.spawn("poller", loop.run(), essential=True)
        await loop.started.wait()
        raise OSError(98, "address already in use")  # the API port is taken
        s.cleanup("api", lambda: closed.append("api"))  # never reached

    with pytest.raises(OSError, match="already in use"):
        await sup.start(assemble)
    assert loop.cancelled
    assert sup.created == ["database", "p2p"] and closed == ["p2p", "database"]
    await sup.stop()
    await sup.stop()
    assert closed == ["p2p", "database"]


async def test_a_stop_requested_while_starting_cancels_the_assembly():
    sup, closed, slow = Supervisor("t"), [], asyncio.Event()

    async def assemble(s: Supervisor) -> None:
        s.cleanup("database", lambda: closed.append("database"))
        slow.set()
        await asyncio.sleep(3600)  # e.g. an RPC endpoint that never answers

    starting = asyncio.create_task(sup.start(assemble))
    await slow.wait()
    sup.request_stop()  # what SIGTERM does
    with pytest.raises(NodeError, match="stopped while starting"):
        await asyncio.wait_for(starting, 5)
    assert closed == ["database"]
    await sup.stop()


async def test_stop_before_start_is_safe():
    sup = Supervisor("t")
    await sup.stop()
    await sup.stop()
    assert sup.closed == [] and await sup.wait() is None


async def test_an_essential_loop_that_raises_is_logged_with_its_traceback_and_stops_everything(caplog):
    sup, closed, poller, other = Supervisor("t"), [], Loop(error=RuntimeError("rpc went away")), Loop()

    async def assemble(s: Supervisor) -> None:
        s.cleanup("database", lambda: closed.append("database"))
        s.spawn("log poller", poller.run(), essential=True)
        s.spawn("housekeeping", other.run(), essential=False)

    await sup.start(assemble)
    with caplog.at_level(logging.ERROR):
        poller.trigger.set()
        assert await asyncio.wait_for(sup.wait(), 5) == "log poller"
    assert other.cancelled and closed == ["database"]
    [rec] = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert rec.part == "log poller" and rec.exc_info is not None  # type: ignore[attr-defined]
    assert "rpc went away" in caplog.text and "Traceback" in caplog.text
    await sup.stop()


async def test_an_essential_loop_that_ends_on_its_own_stops_the_node(caplog):
    sup, host = Supervisor("t"), Loop()

    async def assemble(s: Supervisor) -> None:
        s.spawn("p2p host", host.run(), essential=True)

    await sup.start(assemble)
    host.trigger.set()  # returns without an error: the host stopped under us
    assert await asyncio.wait_for(sup.wait(), 5) == "p2p host"
    assert "essential part ended" in caplog.text


async def test_a_failing_optional_loop_is_logged_with_its_traceback_and_the_rest_runs_on(caplog):
    sup, announcer, poller = Supervisor("t"), Loop(error=ValueError("bad price")), Loop()

    async def assemble(s: Supervisor) -> None:
        s.spawn("offer announcer", announcer.run(), essential=False)
        s.spawn("log poller", poller.run(), essential=True)

    await sup.start(assemble)
    with caplog.at_level(logging.ERROR):
        announcer.trigger.set()
        await wait_for(lambda: "background task failed" in caplog.text)
    [rec] = [r for r in caplog.records if r.getMessage() == "background task failed"]
    assert rec.exc_info is not None and "bad price" in caplog.text
    await asyncio.sleep(0.05)
    assert not poller.cancelled and sup.failure is None
    await sup.stop()
    assert poller.cancelled and sup.failure is None


async def test_a_cleanup_that_fails_is_logged_and_the_others_still_run(caplog):
    sup, closed = Supervisor("t"), []

    def broken() -> None:
        raise OSError("disk gone")

    async def assemble(s: Supervisor) -> None:
        s.cleanup("database", lambda: closed.append("database"))
        s.cleanup("offer store", broken)
        s.cleanup("api", lambda: closed.append("api"))

    await sup.start(assemble)
    await sup.stop()
    assert closed == ["api", "database"] and sup.closed == ["api", "offer store", "database"]
    assert "closing a part failed" in caplog.text and "disk gone" in caplog.text


async def test_an_essential_failure_while_starting_fails_the_start():
    sup, poller, closed = Supervisor("t"), Loop(error=RuntimeError("boom")), []

    async def assemble(s: Supervisor) -> None:
        s.cleanup("database", lambda: closed.append("database"))
        s.spawn("log poller", poller.run(), essential=True)
        poller.trigger.set()
        await wait_for(lambda: s.failure is not None)

    with pytest.raises(PartFailed, match="log poller"):
        await sup.start(assemble)
    assert closed == ["database"]


async def test_spawn_outside_a_running_node_is_refused():
    sup = Supervisor("t")
    loop = Loop()
    with pytest.raises(RuntimeError):
        sup.spawn("x", loop.run(), essential=False)
    with pytest.raises(RuntimeError):
        sup.cleanup("x", lambda: None)


# ---------------------------------------------------------------------------------------------- the node
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def deployments_file(tmp_path: Path, chain_id: int) -> Path:
    addr = {"address": "0x" + "11" * 20}
    path = tmp_path / "deployments.json"
    path.write_text(json.dumps({"chainId": chain_id, "deployBlock": 0, "contracts": {
        "DevToken": addr, "ProviderStaking": addr, "LeaseEscrow": addr}}))
    return path


async def test_node_start_with_rpc_down_closes_the_database_and_stops_twice(tmp_path):
    cfg = NodeConfig(data_dir=tmp_path / "n", rpc_url=f"http://127.0.0.1:{free_port()}",
                     deployments=deployments_file(tmp_path, 31337))
    node = service.Node(cfg)
    with pytest.raises(ChainError, match="unreachable"):
        await node.start()
    sup = node.supervisor
    assert "database" in sup.created and "chain client" not in sup.created  # it failed before connecting
    assert sup.closed == sup.created[::-1]
    await node.stop()
    await node.stop()
    assert sup.closed == sup.created[::-1]


@pytest.fixture
async def fake_rpc():
    """A JSON-RPC endpoint that only knows its chain id (mainnet)."""

    async def rpc(request: web.Request) -> web.Response:
        body = await request.json()
        if body["method"] != "eth_chainId":
            return web.json_response({"jsonrpc": "2.0", "id": body["id"], "error": {"code": -32601, "message": "no"}})
        return web.json_response({"jsonrpc": "2.0", "id": body["id"], "result": "0x1"})

    app = web.Application()
    app.router.add_post("/", rpc)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_node_start_against_the_wrong_chain_closes_what_it_opened(tmp_path, fake_rpc):
    cfg = NodeConfig(data_dir=tmp_path / "n", rpc_url=fake_rpc, deployments=deployments_file(tmp_path, 31337),
                     dev_account=1)
    node = service.Node(cfg)
    with pytest.raises(ChainMismatch, match="chain 1"):
        await node.start()
    sup = node.supervisor
    assert "database" in sup.created and "chain client" not in sup.created
    assert sup.closed == sup.created[::-1]
    await node.stop()
    await node.stop()
    assert sup.closed == sup.created[::-1]


async def test_a_node_without_a_wallet_refuses_fund_moving_calls():
    node = service.Node(NodeConfig())
    with pytest.raises(ConfigError, match="no wallet"):
        await node.cancel_offers()
    with pytest.raises(ConfigError, match="no wallet"):
        await node.publish_offer()
    with pytest.raises(ConfigError, match="no wallet"):
        await node.open_lease({"offer_id": "0x" + "ab" * 32, "gpus": 1, "deposit": 1})
    with pytest.raises(ValueError, match="offer_id"):
        await node.open_lease({"gpus": 1, "deposit": 1})


async def test_run_forever_exits_with_an_error_when_an_essential_part_fails(monkeypatch, tmp_path):
    closed: list[str] = []

    class FailingNode(service.Node):
        async def _assemble(self, sup: Supervisor) -> None:
            sup.cleanup("database", lambda: closed.append("database"))
            sup.spawn("log poller", self._poll(), essential=True)

        async def _poll(self) -> None:
            await asyncio.sleep(0.01)
            raise RuntimeError("handler bug")

    monkeypatch.setattr(service, "Node", FailingNode)
    with pytest.raises(PartFailed, match="log poller") as info:
        await asyncio.wait_for(service.run_forever(NodeConfig(data_dir=tmp_path)), 10)
    assert isinstance(info.value, NodeError)  # the CLI prints it and exits 1
    assert closed == ["database"]


# ---------------------------------------------------------------------------------------------- chain events
def event(name: str, **args: Any) -> ChainEvent:
    return ChainEvent(name=name, address="0x" + "22" * 20, block_number=7, block_hash="0x00",
                      log_index=0, tx_hash="0xab", args=args)


class RecordingStakes(StakeCache):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    async def on_event(self, ev: ChainEvent, staking: Any, escrow: Any) -> None:
        self.seen.append(ev.name)


class BrokenLeases:
    def __init__(self) -> None:
        self.seen: list[str] = []

    async def on_chain_event(self, ev: ChainEvent) -> None:
        self.seen.append(ev.name)
        raise KeyError("lease 9")


async def test_chain_events_reach_the_explorer_list_the_stake_cache_and_then_the_lease_engine(caplog):
    stakes = RecordingStakes()
    router = ChainEventRouter(stakes, staking=None, escrow=None)  # type: ignore[arg-type]
    await router(event("Staked", provider="0x" + "33" * 20, amount=5))
    leases = BrokenLeases()
    router.leases = leases
    await router(Reorged(3))
    await router(event("LeaseOpened", leaseId=1, offerHash=b"\x01\x02"))
    await router(event("LeaseClosed", leaseId=1))
    assert stakes.seen == ["Staked", "LeaseOpened", "LeaseClosed"]
    assert leases.seen == ["LeaseOpened", "LeaseClosed"]  # a failing engine still gets the next event
    assert "lease event handling failed" in caplog.text and "reorg" in caplog.text
    latest = router.latest(2)
    assert [e["event"] for e in latest] == ["LeaseClosed", "LeaseOpened"]
    assert latest[1]["offerHash"] == "0102" and latest[1]["block"] == 7
    await router(event("LeaseSettled", leaseId=1, seq=3, amount=9))
    await router(event("LeaseSettled", leaseId=2, seq=1, amount=9))
    txs = router.lease_transactions(1)
    assert [(t["event"], t.get("seq")) for t in txs] == [("LeaseOpened", None), ("LeaseClosed", None),
                                                         ("LeaseSettled", 3)]
    assert all(set(t) <= {"block", "event", "tx", "seq"} and t["tx"] for t in txs)
    for i in range(RECENT_EVENTS + 5):
        await router(event("Staked", n=i))
    assert router.lease_transactions(1) == []  # as far back as the recent list reaches
    assert len(router.latest(10_000)) == RECENT_EVENTS and router.latest(0) == []


# ---------------------------------------------------------------------------------------------- publisher
@dataclass
class Receipt:
    tx_hash: str


@dataclass
class FakeMarket:
    added: list[SignedOffer] = field(default_factory=list)

    def encode_offer(self, so: SignedOffer) -> bytes:
        return b"offer:%d" % so.offer.nonce

    def add(self, so: SignedOffer, blob: bytes) -> None:
        self.added.append(so)

    def withdrawal_message(self, private_key: bytes, provider: bytes, nonce_below: int) -> bytes:
        return b"withdraw:%d" % nonce_below


@dataclass
class FakeGossip:
    sent: list[bytes] = field(default_factory=list)

    async def publish(self, data: bytes) -> None:
        self.sent.append(data)


@dataclass
class FakeEscrow:
    cancelled: list[int] = field(default_factory=list)
    fail: bool = False

    async def cancel_offers_below(self, key: str, nonce: int) -> Receipt:
        if self.fail:
            raise ChainError("rpc down")
        self.cancelled.append(nonce)
        return Receipt(f"0x{nonce:x}")


@dataclass
class FakeNonces:
    floors: list[int] = field(default_factory=list)

    def raise_nonce(self, provider: bytes, nonce: int) -> None:
        self.floors.append(nonce)


def make_publisher(gpus: int = 2, busy: set[int] | None = None, now: float = 1000.0) -> tuple[OfferPublisher, Any]:
    devices = tuple(GpuDevice(i, f"SIM-{i}", "SIM-A100", 40960 - i, simulated=True) for i in range(gpus))
    parts = (FakeMarket(), FakeGossip(), FakeEscrow(), FakeNonces())
    key = devnet_key(1)
    from eth_account import Account

    pub = OfferPublisher(config=ProviderConfig(enabled=True, offer_ttl=600), wallet_key=key,
                         address=Account.from_key(key).address, domain=Domain(31337, "0x" + "44" * 20),
                         devices=devices, book=parts[0], gossip=parts[1], escrow=parts[2], nonces=parts[3],
                         busy_devices=lambda: busy if busy is not None else set(), clock=lambda: now)
    return pub, parts


async def test_publisher_keeps_one_live_offer_sized_to_the_free_gpus():
    busy: set[int] = set()
    pub, (market, gossip, escrow, _) = make_publisher(gpus=2, busy=busy)
    first = await pub.publish()
    assert first is not None and first["gpu_count"] == 2 and first["vram_mib"] == 40959
    assert escrow.cancelled == []  # nothing to supersede yet
    assert gossip.sent == [b"offer:1000000"] and len(market.added) == 1
    busy.add(0)  # a lease of this offer took GPU 0
    second = await pub.publish()
    assert second is not None and second["gpu_count"] == 1 and second["vram_mib"] == 40959
    assert second["nonce"] == first["nonce"] + 1  # the clock stood still: still strictly increasing
    assert escrow.cancelled == [second["nonce"]]  # the previous offer cancelled on-chain
    assert pub.live_offer_id == market.added[-1].offer.struct_hash()
    assert [v["offer_id"] for v in pub.published] == [first["offer_id"], second["offer_id"]]


async def test_publisher_withdraws_everything_when_no_gpu_is_free():
    busy = {0, 1}
    pub, (_, gossip, escrow, nonces) = make_publisher(gpus=2, busy=busy)
    assert await pub.publish() is None and gossip.sent == []  # nothing ever offered: nothing to withdraw
    busy.clear()
    await pub.publish()
    busy.update({0, 1})
    assert await pub.publish() is None
    assert gossip.sent[-1] == b"withdraw:%d" % pub.nonce and nonces.floors == [pub.nonce]
    assert escrow.cancelled == [pub.nonce] and pub.live_offer_id is None


async def test_publisher_capacity_changes_wake_the_announcer_only_when_the_live_offer_cannot_cover_them():
    busy: set[int] = set()
    pub, _ = make_publisher(gpus=2, busy=busy)
    await pub.publish()
    live = pub.live_offer_id
    assert live is not None
    busy.add(0)
    pub.on_capacity_change(live)  # a lease of the live offer: counted on-chain, no re-offer
    assert not pub.capacity_changed.is_set()
    pub.on_capacity_change(b"\x99" * 32)  # a lease of an older offer took or freed GPUs
    assert pub.capacity_changed.is_set()
    pub.capacity_changed.clear()
    busy.add(1)
    pub.on_capacity_change(live)  # nothing free any more: withdraw
    assert pub.capacity_changed.is_set()


async def test_publisher_keeps_the_new_offer_when_the_on_chain_cancel_fails(caplog):
    pub, (_, gossip, escrow, _) = make_publisher()
    await pub.publish()
    escrow.fail = True
    view = await pub.publish()
    assert view is not None and len(gossip.sent) == 2
    assert "could not cancel the previous offer" in caplog.text
    with pytest.raises(ChainError):
        await pub.cancel_all()


async def test_publisher_without_devices_has_nothing_to_offer():
    pub, _ = make_publisher(gpus=0)
    with pytest.raises(ConfigError, match="no GPUs"):
        await pub.publish()


async def test_a_refused_chain_endpoint_leaves_no_open_http_session(tmp_path, fake_rpc, monkeypatch):
    from node.chain import client as chain_client
    from node.chain.artifacts import load_deployment
    from node.storage.db import Database

    closed: list[bool] = []
    original = chain_client.ResilientHTTPProvider.disconnect

    async def disconnect(self):  # the boundary under test: was the session closed?
        closed.append(True)
        await original(self)

    monkeypatch.setattr(chain_client.ResilientHTTPProvider, "disconnect", disconnect)
    deployment = load_deployment(deployments_file(tmp_path, 31337))
    with pytest.raises(ChainMismatch, match="chain 1"):
        await chain_client.ChainClient.connect(fake_rpc, deployment, Database(tmp_path / "c.sqlite"), None)
    assert closed == [True]
