"""One node process, assembled from its parts: storage, chain client, stake cache and log poller, offer market,
libp2p host (trio thread behind ``node.p2p.bridge``), lease engine, the provider's offer publisher and the HTTP API.

``Node`` only wires them (each part is built by a named step in ``node.assembly``) and is the surface the HTTP API
and the dashboard read and act through (``node.api.facade.NodeFacade``). A ``Supervisor`` owns what the wiring
creates: each part registers its own cleanup right where it is created, every background loop runs in one task
group, and one stop signal ends them all the same way (the group is cancelled, then the parts close in reverse order
of creation). A loop that fails is logged with its traceback; if it is essential (p2p host, gossip intake, log
poller) the node stops and ``run_forever`` raises ``PartFailed``, so the process exits non-zero instead of running
on half dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY

from node.api.requests import OpenLeaseRequest
from node.api.server import make_app, start_api
from node.assembly import (
    api_token,
    build_lease_side,
    check_stake,
    connect_chain,
    follow_market,
    gossip_intake,
    make_p2p,
    market_housekeeping,
    start_engine,
    start_forwards,
    sync_offers,
    write_node_info,
)
from node.chain.artifacts import Deployment
from node.chain.client import ChainClient
from node.chain.proxies import Escrow, Staking, Token
from node.chain.stake_view import StakeCache
from node.chain_fanout import ChainEventRouter
from node.config import NodeConfig
from node.crypto import eip712
from node.crypto.nodekey import signing_key
from node.crypto.wallet import resolve_wallet
from node.errors import ConfigError
from node.leases import LeaseEngine
from node.leases.spend import SpendGuard, lease_spent, spend_guard, top_up_check
from node.market import Market
from node.market_feed import MarketFeed
from node.market_metrics import market_registry
from node.market_service import MarketService
from node.metrics import node_registry
from node.p2p.bridge import P2PNode
from node.p2p.keys import load_or_create_node_key
from node.p2p.stable_addrs import remember_listen_addrs
from node.protocol.lease import Role
from node.provider.gpus import GpuDevice
from node.provider.publisher import OfferPublisher, register_provider
from node.storage.db import Database
from node.supervisor import PartFailed, Supervisor

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- the node
class Node:
    # parts, set while the node assembles (``_assemble``) and read by the API facade and by tests
    db: Database
    wallet_key: bytes | None
    chain: ChainClient
    address: str | None
    deployment: Deployment
    domain: eip712.Domain
    escrow: Escrow
    staking: Staking
    token: Token
    settlement_window: int
    stakes: StakeCache
    market: Market
    events: ChainEventRouter
    p2p: P2PNode
    market_feed: MarketFeed  # market figures and provider records (node.market_feed)
    markets: MarketService
    spend: SpendGuard

    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        self.data_dir = Path(cfg.data_dir)
        self.started_at = time.time()
        self.supervisor = Supervisor("node")
        self.devices: tuple[GpuDevice, ...] = ()
        self.engine: LeaseEngine | None = None
        self.executor_choice: Any = None  # node.provider.runtime.ExecutorChoice of a provider
        self._forwards: Any = None  # node.provider.forward_access.ForwardService
        self.publisher: OfferPublisher | None = None
        self.api_url = ""

    # ------------------------------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Return once the API serves and the p2p host listens; on failure raise, having closed what was created."""
        await self.supervisor.start(self._assemble)

    async def stop(self) -> None:
        """Safe after a partial start and when called twice."""
        await self.supervisor.stop()

    def request_stop(self) -> None:
        self.supervisor.request_stop()

    async def wait(self) -> str | None:
        """Until the node stops; returns the essential part that failed, or None after a requested stop."""
        return await self.supervisor.wait()

    async def _assemble(self, sup: Supervisor) -> None:
        """Build the parts in order (``node.assembly`` has one step per part), start them, then serve the API."""
        cfg = self.cfg
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        sup.cleanup("data dir lock", lock_data_dir(self.data_dir))
        self.db = Database(self.data_dir / "node.sqlite")
        sup.cleanup("database", self.db.close)
        self.wallet_key = resolve_wallet(cfg.keystore, cfg.password_file, cfg.dev_account)
        c = await connect_chain(cfg, self.db, self.wallet_key, sup)
        self.chain, self.deployment, self.domain, self.address = c.chain, c.deployment, c.domain, c.chain.address
        self.escrow, self.staking, self.token = c.escrow, c.staking, c.token
        self.settlement_window = c.settlement_window
        m = await follow_market(cfg, self.data_dir, self.db, c, sup)
        self.stakes, self.market, self.events, self.market_feed = m.stakes, m.market, m.events, m.feed

        node_key = signing_key(load_or_create_node_key(self.data_dir / "node.key"))
        self.p2p = make_p2p(cfg, self.data_dir, c, self.market)
        if self.wallet_key is not None:
            side = await build_lease_side(cfg, self.data_dir, self.db, self.wallet_key, node_key, c, m, self.p2p, sup)
            self.devices, self.publisher, self.engine = side.devices, side.publisher, side.engine
            self.executor_choice = side.executor_choice
        elif cfg.provider.enabled:
            raise ConfigError("a provider node needs a wallet (keystore or dev_account)")
        self.spend = spend_guard(self.db, cfg.consumer)
        if self.engine is not None:
            self.engine.runner.spend_check = top_up_check(self.spend)
        self.markets = MarketService(self.market_feed, self.market.book, self.spend,
                                     self.engine.open_lease if self.engine is not None else None)

        await self.p2p.start()
        remember_listen_addrs(tuple(cfg.listen), self.p2p.listen_addrs, self.data_dir)
        sup.cleanup("p2p host", self.p2p.stop)
        sup.spawn("p2p host", self.p2p.wait_ended(), essential=True)
        if self.engine is not None:
            await start_engine(self.engine, sup)
            self.events.leases = self.engine
            served_by = self.executor_choice if cfg.provider.enabled else None
            self._forwards = await start_forwards(self.p2p, self.engine, served_by, sup)
        sup.spawn("gossip intake", gossip_intake(self.p2p, self.market), essential=True)
        sup.spawn("log poller", m.poller.run(), essential=True)
        sup.spawn("housekeeping", market_housekeeping(self.market), essential=False)
        await sync_offers(self.p2p, cfg.bootstrap)
        if cfg.provider.enabled and self.publisher is not None:
            await check_stake(self.staking, self.chain.address or "", cfg.provider)
            await register_provider(cfg.provider, self.chain.address or "", self.staking, self.token,
                                    self.deployment.staking, self.stakes, bytes(node_key.verify_key),
                                    self.p2p.listen_addrs)
            sup.spawn("offer announcer", self.publisher.announce_loop(), essential=False)

        app = make_app(self, self._api_token(), (REGISTRY, self.p2p.metrics.registry, node_registry(self),
                                                      market_registry(self.market_feed)), cfg.api_hosts)
        runner, port = await start_api(app, cfg.api_host, cfg.api_port)
        sup.cleanup("api", runner.cleanup)
        self.api_url = f"http://{cfg.api_host}:{port}"
        write_node_info(self.data_dir, {
            "peer_id": self.p2p.peer_id, "addrs": list(self.p2p.listen_addrs), "api": self.api_url,
            "address": self.address, "pid": os.getpid(), "provider": cfg.provider.enabled})
        log.info("node started", extra={"peer_id": self.p2p.peer_id, "api": self.api_url, "address": self.address})

    def metrics_labels(self) -> dict[str, str]:
        """Labels of ``gpunet_build_info``."""
        return {"chain_id": str(self.domain.chain_id), "escrow": self.deployment.escrow,
                "role": "provider" if self.cfg.provider.enabled else "consumer"}

    def chain_head(self) -> int | None:
        return self.chain.health.head_block

    def _api_token(self) -> str:
        return api_token(self.cfg.api_token, self.data_dir)

    # ------------------------------------------------------------------------------------------ API facade
    def status(self) -> dict[str, Any]:
        return {
            "peer_id": self.p2p.peer_id, "addrs": list(self.p2p.listen_addrs), "address": self.address,
            "chain_id": self.domain.chain_id, "escrow": self.deployment.escrow, "staking": self.deployment.staking,
            "token": self.deployment.token, "offers": len(self.market.book), "provider": self.cfg.provider.enabled,
            "devices": [{"index": d.index, "name": d.name, "memory_mib": d.memory_mib, "simulated": d.simulated}
                        for d in self.devices],
            "validation": self.p2p.metrics.verdict_counts(), "uptime_s": int(time.time() - self.started_at),
            "published": self.publisher.published[-3:] if self.publisher else [],
            "gas": list(self.engine.gas) if self.engine else [],
            "chain": self.chain.status(),  # the endpoint's health: up/down, since when, errors, retries, poller
        }

    def query_offers(self, params: dict[str, str]) -> list[dict[str, Any]]:
        return self.market.query(params)

    async def peers(self) -> list[dict[str, Any]]:
        return [{"peer_id": p.peer_id, "addrs": list(p.addrs), "in_mesh": p.in_mesh} for p in await self.p2p.peers()]

    def leases(self) -> list[dict[str, Any]]:
        return self.engine.views() if self.engine else []

    def lease(self, lease_id: int) -> dict[str, Any] | None:
        detail = self.engine.lease_detail(lease_id) if self.engine else None
        if detail is not None:
            detail["transactions"] = self.events.lease_transactions(lease_id)
        return detail

    def chain_events(self, limit: int) -> list[dict[str, Any]]:
        return self.events.latest(limit)

    # ------------------------------------------------------------------------------------------ dashboard reads
    def lease_usage(self, lease_id: int) -> list[dict[str, Any]]:
        """The heartbeats this node holds for ``lease_id``, in order: when each arrived and the cumulative
        GPU-seconds it reported (the dashboard's usage chart)."""
        from node.protocol.heartbeat import BODY_SIZE, decode

        rows = self.db.query("SELECT seq, body, received_at FROM heartbeats WHERE lease_id = ? ORDER BY seq",
                             (lease_id,))
        return [{"seq": int(r["seq"]), "at": float(r["received_at"]),
                 "gpu_seconds": decode(bytes(r["body"])[:BODY_SIZE]).gpu_seconds} for r in rows]

    def provider_stake(self, provider: str) -> dict[str, Any] | None:
        """A provider's stake as this node follows it from chain events (None: never seen)."""
        try:
            stake = self.stakes.get(bytes.fromhex(provider.removeprefix("0x")))
        except ValueError:
            return None
        if stake is None:
            return None
        return {"registered": stake.registered, "free": str(stake.free), "locked": str(stake.locked)}

    async def money(self) -> dict[str, Any]:
        """This node's wallet as the chain has it now: ETH and token balances, stake (free and locked as
        collateral), earnings and refunds waiting to be withdrawn. Empty when the node has no wallet."""
        from eth_utils import to_checksum_address

        who = self.address
        if not who:
            return {}
        eth = int(await self.chain.w3.eth.get_balance(to_checksum_address(who)))
        return {"address": who, "eth": str(eth), "token": str(await self.token.balance(who)),
                "stake_free": str(await self.staking.free_stake(who)),
                "stake_locked": str(await self.staking.locked_stake(who)),
                "earnings": str(await self.escrow.earnings(who)), "refunds": str(await self.escrow.refunds(who))}

    def forward_service(self) -> Any:
        return self._forwards

    def lease_logs(self, lease_id: int, after: int = -1, limit: int = 256) -> dict[str, Any] | None:
        """A consumer lease's job output kept by this node (see ``LeaseEngine.logs``)."""
        return self.engine.logs(lease_id, after, limit) if self.engine is not None else None

    def _need_engine(self) -> LeaseEngine:
        if self.engine is None:
            raise ConfigError("this node has no wallet: it cannot open or close leases")
        return self.engine

    def _need_publisher(self) -> OfferPublisher:
        if self.publisher is None:
            raise ConfigError("this node has no wallet: it has no offers to publish or cancel")
        return self.publisher

    async def open_lease(self, request: OpenLeaseRequest | Mapping[str, Any]) -> dict[str, Any]:
        """``request`` as parsed by the API, or the same fields as a JSON-like mapping."""
        r = request if isinstance(request, OpenLeaseRequest) else OpenLeaseRequest.parse(request)
        engine = self._need_engine()
        self.spend.require(r.deposit)
        return await engine.open_lease(r.offer_id, r.gpus, r.deposit, r.job)

    async def top_up(self, lease_id: int, amount: int) -> dict[str, Any]:
        if amount <= 0:
            raise ValueError("amount must be positive")
        engine = self._need_engine()
        self.spend.require(amount, lease_spent(engine.dispatcher.get(lease_id, Role.CONSUMER)), "top-up")
        return await engine.top_up(lease_id, amount)

    async def close_lease(self, lease_id: int) -> dict[str, Any]:
        return await self._need_engine().close_lease(lease_id)

    async def publish_offer(self) -> dict[str, Any] | None:
        """Offer the free GPUs as this provider's single live offer (see ``node.provider.publisher``)."""
        return await self._need_publisher().publish()

    async def cancel_offers(self) -> dict[str, Any]:
        """Withdraw every offer of ours: signed withdrawal on gossip now, ``cancelOffersBelow`` on-chain."""
        return await self._need_publisher().cancel_all()


def lock_data_dir(data_dir: Path) -> Callable[[], None]:
    """Hold an exclusive lock on ``<data_dir>/lock`` while the node runs (two nodes on one directory would share a
    key, a database and a wallet nonce); returns its release. Raises ``ConfigError`` if another process holds it."""
    import fcntl

    fd = os.open(data_dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        raise ConfigError(f"data directory {data_dir} is in use by another node (pid {holder or '?'}); "
                          "stop it or give another --data-dir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

    def release() -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    return release


async def run_forever(cfg: NodeConfig) -> None:
    """Run a node until SIGINT/SIGTERM. Raises ``PartFailed`` (the CLI then exits 1) when an essential part failed."""
    node = Node(cfg)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, node.request_stop)
    try:
        await node.start()
        failed = await node.wait()
    finally:
        await node.stop()
    if failed is not None:
        raise PartFailed(f"the node stopped because its {failed} failed (see the log above)")
