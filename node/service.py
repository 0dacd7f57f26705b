"""One node process, assembled from its parts: storage, chain client, stake cache and log poller, offer market,
libp2p host (trio thread behind ``node.p2p.bridge``), lease engine, the provider's offer publisher and the HTTP API.

``Node`` only wires them. A ``Supervisor`` owns what the wiring creates: each part registers its own cleanup right
where it is created, every background loop runs in one task group, and one stop signal ends them all the same way
(the group is cancelled, then the parts close in reverse order of creation). A loop that fails is logged with its
traceback; if it is essential (p2p host, gossip intake, log poller) the node stops and ``run_forever`` raises
``PartFailed``, so the process exits non-zero instead of running on half dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey
from prometheus_client import REGISTRY

from node.api.requests import OpenLeaseRequest
from node.api.server import make_app, start_api
from node.chain.artifacts import Deployment, find_deployment, load_deployment
from node.chain.client import ChainClient, make_w3
from node.chain.events import LogPoller
from node.chain.proxies import Escrow, Staking, Token
from node.chain.stake_view import StakeCache
from node.chain_fanout import ChainEventRouter, follow_stakes
from node.config import NodeConfig
from node.crypto import eip712
from node.crypto.nodekey import signing_key
from node.crypto.wallet import resolve_wallet
from node.errors import ChainError, ConfigError
from node.leases import LeaseEngine
from node.leases.ports import ClientChain
from node.leases.spend import SpendGuard, lease_spent, spend_guard, top_up_check
from node.market import Market
from node.market_feed import MarketFeed, block_time_reader, chain_handler
from node.market_metrics import market_registry
from node.market_service import MarketService
from node.metrics import node_registry
from node.p2p.bridge import P2PNode
from node.p2p.config import P2PConfig, offers_topic
from node.p2p.keys import load_or_create_node_key
from node.p2p.stable_addrs import remember_listen_addrs, stable_listen_addrs
from node.protocol.lease import Role
from node.provider.gpus import GpuDevice, inventory
from node.provider.publisher import OfferPublisher, register_provider
from node.storage.db import Database
from node.supervisor import PartFailed, Supervisor

log = logging.getLogger(__name__)

HOUSEKEEPING_INTERVAL = 5.0


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
        cfg = self.cfg
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        sup.cleanup("data dir lock", lock_data_dir(self.data_dir))
        self.db = Database(self.data_dir / "node.sqlite")
        sup.cleanup("database", self.db.close)
        self.wallet_key = resolve_wallet(cfg.keystore, cfg.password_file, cfg.dev_account)
        chain_id = await _chain_id(cfg.rpc_url)
        self.deployment = load_deployment(cfg.deployments or find_deployment(chain_id))
        self.chain = await ChainClient.connect(cfg.rpc_url, self.deployment, self.db, self.wallet_key)
        sup.cleanup("chain client", self.chain.close)
        self.address = self.chain.address
        if self.chain.sender is not None:  # resolve transactions a crash left behind before anything else
            unresolved = await self.chain.sender.reconcile()
            if unresolved:
                log.warning("transactions still pending after restart", extra={"count": len(unresolved)})
        self.domain = eip712.Domain(chain_id, self.deployment.escrow)
        self.escrow, self.staking, self.token = Escrow(self.chain), Staking(self.chain), Token(self.chain)
        collateral_bps = int(await self.chain.call(self.chain.c.escrow, "collateralBps"))
        self.settlement_window = await self.escrow.settlement_window()

        self.stakes = StakeCache()
        self.market = Market(self.domain, self.stakes, self.data_dir / "offers.sqlite", collateral_bps)
        sup.cleanup("offer store", self.market.store.close)
        self.market.load()
        follow_stakes(self.stakes, self.market)
        self.events = ChainEventRouter(self.stakes, self.staking, self.escrow)
        self.market_feed = MarketFeed(self.market.book, block_time_reader(self.chain.w3.eth.get_block))
        contracts = [self.deployment.staking, self.deployment.escrow]
        poller = LogPoller(self.chain.w3, self.db, contracts, self.chain.events,
                           chain_handler(self.events, self.market_feed.on_chain_event),
                           start_block=self.deployment.deploy_block, confirmations=cfg.confirmations,
                           interval=cfg.poll_interval)
        await self.market_feed.catch_up(poller, self.db, self.chain.events, contracts, self.deployment.deploy_block,
                                        also=self.events.remember)
        head = int(await self.chain.w3.eth.block_number) - cfg.confirmations
        while poller.next_block <= head:  # catch up before anything reads the stake cache
            await poller.step()

        node_key = signing_key(load_or_create_node_key(self.data_dir / "node.key"))
        p2p_cfg = P2PConfig(key_path=self.data_dir / "node.key", topic=offers_topic(chain_id, self.deployment.escrow),
                            listen_addrs=stable_listen_addrs(tuple(cfg.listen), self.data_dir),
                            bootstrap=tuple(cfg.bootstrap), mdns=cfg.mdns)
        self.p2p = P2PNode(p2p_cfg, validate=self.market.validate, live_offers=self.market.live_offers)
        if self.wallet_key is not None:
            self.devices = tuple(inventory(cfg.provider.declared_gpus)) if cfg.provider.enabled else ()
            self.publisher = OfferPublisher(
                config=cfg.provider, wallet_key=self.wallet_key, address=self.chain.address or "",
                domain=self.domain, devices=self.devices, book=self.market, gossip=self.p2p, escrow=self.escrow,
                nonces=self.stakes)
            if cfg.provider.enabled:  # the runtime is checked, and a previous run's containers removed, first
                from node.provider.runtime import choose_executor

                self.executor_choice = await choose_executor(cfg.provider, self.data_dir,
                                                             bytes(node_key.verify_key).hex()[:16])
                log.info("executor", extra={"executor": self.executor_choice.kind,
                                            "found": self.executor_choice.description})
                if hasattr(self.executor_choice.executor, "close"):
                    sup.cleanup("executor", self.executor_choice.executor.close)
            self.engine = self._make_lease_engine(self.wallet_key, node_key, self.publisher.on_capacity_change)
            self.publisher.busy_devices = self.engine.busy_devices
            self.publisher.market_prices = self.market_feed.market_prices
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
            await self.engine.start(run_loops=False)
            sup.cleanup("lease engine", self.engine.stop)
            for name, loop in self.engine.loops():
                sup.spawn(name, loop, essential=True)
            self.events.leases = self.engine
            await self._start_forwards(sup)
        sup.spawn("gossip intake", self._gossip_loop(), essential=True)
        sup.spawn("log poller", poller.run(), essential=True)
        sup.spawn("housekeeping", self._housekeeping(), essential=False)
        for addr in cfg.bootstrap:
            try:
                n = await self.p2p.sync_from(addr)
                log.info("synced offers", extra={"peer_addr": addr, "accepted": n})
            except Exception as exc:
                log.warning("offer sync failed", extra={"peer_addr": addr, "error": repr(exc)[:200]})
        if cfg.provider.enabled and self.publisher is not None:
            await self._check_stake()
            await register_provider(cfg.provider, self.chain.address or "", self.staking, self.token,
                                    self.deployment.staking, self.stakes, bytes(node_key.verify_key),
                                    self.p2p.listen_addrs)
            sup.spawn("offer announcer", self.publisher.announce_loop(), essential=False)

        app = make_app(self, self._api_token(), (REGISTRY, self.p2p.metrics.registry, node_registry(self),
                                                      market_registry(self.market_feed)), cfg.api_hosts)
        runner, port = await start_api(app, cfg.api_host, cfg.api_port)
        sup.cleanup("api", runner.cleanup)
        self.api_url = f"http://{cfg.api_host}:{port}"
        self._write_info()
        log.info("node started", extra={"peer_id": self.p2p.peer_id, "api": self.api_url, "address": self.address})

    async def _check_stake(self) -> None:
        """A provider needs its stake before it starts: say which command puts it there."""
        address = self.chain.address or ""
        need = await self.staking.min_stake()
        have = max(await self.staking.stake_of(address), self.cfg.provider.stake)
        if have < need:
            whole = -(-(need - have) // 10**18)
            raise ConfigError(f"provider {address} has {have / 10**18:g} gDEV staked, the minimum is "
                              f"{need / 10**18:g} gDEV: run `gpunet provider stake {whole}` with this node's wallet "
                              "first (or set provider.stake in the config)")

    def metrics_labels(self) -> dict[str, str]:
        """Labels of ``gpunet_build_info``."""
        return {"chain_id": str(self.domain.chain_id), "escrow": self.deployment.escrow,
                "role": "provider" if self.cfg.provider.enabled else "consumer"}

    def chain_head(self) -> int | None:
        return self.chain.health.head_block

    def _make_lease_engine(self, wallet_key: bytes, node_key: SigningKey,
                           on_capacity_change: Callable[[bytes], None]) -> LeaseEngine:
        """The one place the lease engine is built."""
        from node.provider.executor import ProcessExecutor, SimulatedExecutor
        from node.provider.metering import NvmlSampler, SimulatedSampler

        cfg, pc = self.cfg, self.cfg.provider
        executor: Any
        if self.executor_choice is not None:
            executor = self.executor_choice.executor
        elif pc.executor == "simulated":
            executor = SimulatedExecutor()
        else:
            executor = ProcessExecutor(Path(pc.work_dir) if pc.work_dir else self.data_dir / "jobs")
        sampler: Any
        try:
            sampler = NvmlSampler.open()
        except Exception:
            sampler = SimulatedSampler()
        stakes, staking = self.stakes, self.staking

        async def refresh_node_key(provider: str) -> bytes:
            return (await stakes.refresh(staking, provider)).node_key

        return LeaseEngine(
            db=self.db, chain=ClientChain(self.chain), escrow=self.escrow, token=self.token, transport=self.p2p,
            domain=self.domain, wallet_key=wallet_key, node_signing_key=node_key,
            offer_lookup=self.market.book.get,
            node_key_lookup=lambda provider: stakes.node_key(bytes.fromhex(provider[2:])),
            refresh_node_key=refresh_node_key, settlement_window=self.settlement_window,
            heartbeat_interval=pc.heartbeat_interval, checkpoint_interval=pc.checkpoint_interval,
            settle_interval=cfg.consumer.settle_interval, max_rejections=cfg.consumer.max_rejections,
            settle_every=cfg.consumer.settle_every, auto_topup=cfg.consumer.auto_topup,
            devices=self.devices, executor=executor, sampler=sampler, on_capacity_change=on_capacity_change,
            max_unsettled=pc.max_unsettled or None, challenge_after=cfg.consumer.challenge_after or None,
        )

    def _api_token(self) -> str:
        if self.cfg.api_token:
            return self.cfg.api_token
        path = self.data_dir / "api-token"
        if path.exists():
            return path.read_text().strip()
        token = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        return token

    def _write_info(self) -> None:
        info = {"peer_id": self.p2p.peer_id, "addrs": list(self.p2p.listen_addrs), "api": self.api_url,
                "address": self.address, "pid": os.getpid(), "provider": self.cfg.provider.enabled}
        tmp = self.data_dir / "node.json.tmp"
        tmp.write_text(json.dumps(info, indent=2))
        tmp.replace(self.data_dir / "node.json")

    async def _gossip_loop(self) -> None:
        async for msg in self.p2p.messages():
            try:
                self.market.on_message(msg.data)
            except Exception as exc:  # one bad message must not stop the intake
                log.error("applying offer failed", extra={"error": repr(exc)[:300]})

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL)
            try:
                self.market.evict_expired()
            except Exception:  # try again next round
                log.exception("offer housekeeping failed")

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

    async def _start_forwards(self, sup: Supervisor) -> None:
        """Port forwards: a provider accepts them for its leases' declared ports, a consumer makes them."""
        from node.p2p.forward import Forwards
        from node.provider.forward_access import ForwardService, end_with_leases, provider_authorize

        assert self.engine is not None
        forwards = Forwards(self.p2p)
        if self.cfg.provider.enabled and self.executor_choice is not None:
            await forwards.serve(provider_authorize(self.engine, self.executor_choice.executor))
        self._forwards = ForwardService(forwards, self.engine)
        sup.spawn("forwards", end_with_leases(forwards, self.engine), essential=False)

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


async def _chain_id(rpc_url: str) -> int:
    w3 = make_w3(rpc_url)
    try:
        return int(await w3.eth.chain_id)
    except Exception as exc:
        raise ChainError(f"RPC endpoint {rpc_url} unreachable: {type(exc).__name__}") from exc
    finally:
        with contextlib.suppress(Exception):
            await w3.provider.disconnect()


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
