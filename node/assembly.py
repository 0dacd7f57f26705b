"""The steps that build a node's parts, one named step per part (``node.service.Node`` calls them in order and keeps
what they return).

A step that creates something to close registers its cleanup on the ``Supervisor`` right where it creates it, so a
start that fails half way closes exactly what was made, in reverse order. Steps take what they need as arguments and
return what they built (small frozen dataclasses where there are several parts); only the supervisor, the data
directory and the chain are touched on the way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

from node.chain.artifacts import Deployment, find_deployment, load_deployment
from node.chain.client import ChainClient, make_w3
from node.chain.events import ChainEvent, LogPoller, Reorged
from node.chain.proxies import Escrow, Staking, Token
from node.chain.stake_view import StakeCache, StakeHistory
from node.chain_fanout import ChainEventRouter, follow_stakes
from node.config import NodeConfig, ProviderConfig
from node.crypto import eip712
from node.errors import ChainError, ConfigError
from node.leases import LeaseEngine
from node.leases.ports import ClientChain
from node.market import Market
from node.market_feed import MarketFeed, block_time_reader, chain_handler
from node.p2p.bridge import P2PNode
from node.p2p.config import P2PConfig, offers_topic
from node.p2p.stable_addrs import stable_listen_addrs
from node.provider.gpus import GpuDevice, inventory
from node.provider.publisher import OfferPublisher
from node.storage.db import Database
from node.supervisor import Supervisor

log = logging.getLogger(__name__)

HOUSEKEEPING_INTERVAL = 5.0


# ---------------------------------------------------------------------------------------------- chain
@dataclass(frozen=True, slots=True)
class ChainParts:
    """The chain as this node uses it: the client (with the wallet's sender), the deployment and its contracts."""

    chain: ChainClient
    deployment: Deployment
    domain: eip712.Domain
    escrow: Escrow
    staking: Staking
    token: Token
    collateral_bps: int
    settlement_window: int


async def connect_chain(cfg: NodeConfig, db: Database, wallet_key: bytes | None, sup: Supervisor) -> ChainParts:
    """Connect to the configured endpoint's deployment and resolve the transactions a crash left behind."""
    chain_id = await chain_id_of(cfg.rpc_url)
    deployment = load_deployment(cfg.deployments or find_deployment(chain_id))
    chain = await ChainClient.connect(cfg.rpc_url, deployment, db, wallet_key)
    sup.cleanup("chain client", chain.close)
    if chain.sender is not None:  # resolve transactions a crash left behind before anything else
        unresolved = await chain.sender.reconcile()
        if unresolved:
            log.warning("transactions still pending after restart", extra={"count": len(unresolved)})
    escrow, staking, token = Escrow(chain), Staking(chain), Token(chain)
    collateral_bps = int(await chain.call(chain.c.escrow, "collateralBps"))
    return ChainParts(chain, deployment, eip712.Domain(chain_id, deployment.escrow), escrow, staking, token,
                      collateral_bps, await escrow.settlement_window())


async def chain_id_of(rpc_url: str) -> int:
    w3 = make_w3(rpc_url)
    try:
        return int(await w3.eth.chain_id)
    except Exception as exc:
        raise ChainError(f"RPC endpoint {rpc_url} unreachable: {type(exc).__name__}") from exc
    finally:
        with contextlib.suppress(Exception):
            await w3.provider.disconnect()


# ---------------------------------------------------------------------------------------------- market
@dataclass(frozen=True, slots=True)
class MarketParts:
    """The offer market and what keeps it current: the stake cache, the chain event router and the log poller."""

    stakes: StakeCache
    market: Market
    events: ChainEventRouter
    feed: MarketFeed
    poller: LogPoller


async def follow_market(cfg: NodeConfig, data_dir: Path, db: Database, c: ChainParts,
                        sup: Supervisor) -> MarketParts:
    """Load the stored offers and catch the stake cache and market figures up with the chain (confirmed head)."""
    stakes = StakeCache()
    market = Market(c.domain, stakes, data_dir / "offers.sqlite", c.collateral_bps)
    sup.cleanup("offer store", market.store.close)
    market.load()
    follow_stakes(stakes, market)
    events = ChainEventRouter(stakes, c.staking, c.escrow)
    feed = MarketFeed(market.book, block_time_reader(c.chain.w3.eth.get_block))
    contracts = [c.deployment.staking, c.deployment.escrow]
    poller = LogPoller(c.chain.w3, db, contracts, c.chain.events, chain_handler(events, feed.on_chain_event),
                       start_block=c.deployment.deploy_block, confirmations=cfg.confirmations,
                       interval=cfg.poll_interval)
    history = StakeHistory()

    def seen(ev: ChainEvent | Reorged) -> None:
        events.remember(ev)
        history.see(ev)

    await feed.catch_up(poller, db, c.chain.events, contracts, c.deployment.deploy_block, also=seen)
    await history.restore(stakes, c.staking)  # the stake cache as the logs before the cursor left it
    head = int(await c.chain.w3.eth.block_number) - cfg.confirmations
    while poller.next_block <= head:  # catch up before anything reads the stake cache
        await poller.step()
    return MarketParts(stakes, market, events, feed, poller)


async def gossip_intake(p2p: P2PNode, market: Market) -> None:
    """Apply every offer message gossip delivers to the market."""
    async for msg in p2p.messages():
        try:
            market.on_message(msg.data)
        except Exception as exc:  # one bad message must not stop the intake
            log.error("applying offer failed", extra={"error": repr(exc)[:300]})


async def market_housekeeping(market: Market, interval: float = HOUSEKEEPING_INTERVAL) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            market.evict_expired()
        except Exception:  # try again next round
            log.exception("offer housekeeping failed")


# ---------------------------------------------------------------------------------------------- p2p
def make_p2p(cfg: NodeConfig, data_dir: Path, c: ChainParts, market: Market) -> P2PNode:
    """The libp2p host (not started) on the deployment's offer topic, validating gossip with the market."""
    p2p_cfg = P2PConfig(key_path=data_dir / "node.key", topic=offers_topic(c.domain.chain_id, c.deployment.escrow),
                        listen_addrs=stable_listen_addrs(tuple(cfg.listen), data_dir),
                        bootstrap=tuple(cfg.bootstrap), mdns=cfg.mdns)
    return P2PNode(p2p_cfg, validate=market.validate, live_offers=market.live_offers)


async def sync_offers(p2p: P2PNode, bootstrap: Iterable[str]) -> None:
    """Fetch the live offers of each bootstrap peer once (a peer that fails is logged and skipped)."""
    for addr in bootstrap:
        try:
            n = await p2p.sync_from(addr)
            log.info("synced offers", extra={"peer_addr": addr, "accepted": n})
        except Exception as exc:
            log.warning("offer sync failed", extra={"peer_addr": addr, "error": repr(exc)[:200]})


# ---------------------------------------------------------------------------------------------- leases
@dataclass(frozen=True, slots=True)
class LeaseSide:
    """What a node with a wallet adds: its GPUs, offer publisher, job executor (providers) and lease engine."""

    devices: tuple[GpuDevice, ...]
    publisher: OfferPublisher
    executor_choice: Any  # node.provider.runtime.ExecutorChoice of a provider, else None
    engine: LeaseEngine


async def build_lease_side(cfg: NodeConfig, data_dir: Path, db: Database, wallet_key: bytes, node_key: SigningKey,
                           c: ChainParts, m: MarketParts, p2p: P2PNode, sup: Supervisor) -> LeaseSide:
    """The publisher and the lease engine (not started); a provider's executor is checked first. A previous run's
    containers are the engine's at its start: re-attached to their leases, or removed."""
    devices = tuple(inventory(cfg.provider.declared_gpus)) if cfg.provider.enabled else ()
    publisher = OfferPublisher(
        config=cfg.provider, wallet_key=wallet_key, address=c.chain.address or "", domain=c.domain, devices=devices,
        book=m.market, gossip=p2p, escrow=c.escrow, nonces=m.stakes)
    executor_choice: Any = None
    if cfg.provider.enabled:
        from node.provider.runtime import choose_executor

        executor_choice = await choose_executor(cfg.provider, data_dir, bytes(node_key.verify_key).hex()[:16])
        log.info("executor", extra={"executor": executor_choice.kind, "found": executor_choice.description})
        if hasattr(executor_choice.executor, "close"):
            sup.cleanup("executor", executor_choice.executor.close)
    engine = make_lease_engine(cfg, data_dir, db, wallet_key, node_key, c, m, p2p, devices, executor_choice,
                               publisher.on_capacity_change)
    publisher.busy_devices = engine.busy_devices
    publisher.market_prices = m.feed.market_prices
    return LeaseSide(devices, publisher, executor_choice, engine)


def make_lease_engine(cfg: NodeConfig, data_dir: Path, db: Database, wallet_key: bytes, node_key: SigningKey,
                      c: ChainParts, m: MarketParts, p2p: P2PNode, devices: tuple[GpuDevice, ...],
                      executor_choice: Any, on_capacity_change: Callable[[bytes], None]) -> LeaseEngine:
    """The one place the lease engine is built."""
    from node.provider.executor import ProcessExecutor, SimulatedExecutor
    from node.provider.metering import NvmlSampler, SimulatedSampler

    pc = cfg.provider
    executor: Any
    if executor_choice is not None:
        executor = executor_choice.executor
    elif pc.executor == "simulated":
        executor = SimulatedExecutor()
    else:
        executor = ProcessExecutor(Path(pc.work_dir) if pc.work_dir else data_dir / "jobs")
    sampler: Any
    try:
        sampler = NvmlSampler.open()
    except Exception:
        sampler = SimulatedSampler()
    stakes, staking = m.stakes, c.staking

    async def refresh_node_key(provider: str) -> bytes:
        return (await stakes.refresh(staking, provider)).node_key

    return LeaseEngine(
        db=db, chain=ClientChain(c.chain), escrow=c.escrow, token=c.token, transport=p2p,
        domain=c.domain, wallet_key=wallet_key, node_signing_key=node_key,
        offer_lookup=m.market.book.get,
        node_key_lookup=lambda provider: stakes.node_key(bytes.fromhex(provider[2:])),
        refresh_node_key=refresh_node_key, settlement_window=c.settlement_window,
        heartbeat_interval=pc.heartbeat_interval, checkpoint_interval=pc.checkpoint_interval,
        settle_interval=cfg.consumer.settle_interval, max_rejections=cfg.consumer.max_rejections,
        settle_every=cfg.consumer.settle_every, auto_topup=cfg.consumer.auto_topup,
        devices=devices, executor=executor, sampler=sampler, on_capacity_change=on_capacity_change,
        max_unsettled=pc.max_unsettled or None, challenge_after=cfg.consumer.challenge_after or None,
    )


async def start_engine(engine: LeaseEngine, sup: Supervisor) -> None:
    """Start the lease engine with its loops under the supervisor (each one essential)."""
    await engine.start(run_loops=False)
    sup.cleanup("lease engine", engine.stop)
    for name, loop in engine.loops():
        sup.spawn(name, loop, essential=True)


async def start_forwards(p2p: P2PNode, engine: LeaseEngine, executor_choice: Any, sup: Supervisor) -> Any:
    """Port forwards: a provider accepts them for its leases' declared ports (``executor_choice``: the provider's,
    None for a consumer), a consumer makes them. Returns the ``node.provider.forward_access.ForwardService``."""
    from node.p2p.forward import Forwards
    from node.provider.forward_access import ForwardService, end_with_leases, provider_authorize

    forwards = Forwards(p2p)
    if executor_choice is not None:
        await forwards.serve(provider_authorize(engine, executor_choice.executor))
    sup.spawn("forwards", end_with_leases(forwards, engine), essential=False)
    return ForwardService(forwards, engine)


async def check_stake(staking: Staking, address: str, pc: ProviderConfig) -> None:
    """A provider needs its stake before it starts: say which command puts it there."""
    need = await staking.min_stake()
    have = max(await staking.stake_of(address), pc.stake)
    if have < need:
        whole = -(-(need - have) // 10**18)
        raise ConfigError(f"provider {address} has {have / 10**18:g} gDEV staked, the minimum is "
                          f"{need / 10**18:g} gDEV: run `gpunet provider stake {whole}` with this node's wallet "
                          "first (or set provider.stake in the config)")


# ---------------------------------------------------------------------------------------------- data directory
def api_token(configured: str | None, data_dir: Path) -> str:
    """The configured API token, else the one kept in ``<data_dir>/api-token`` (made on first use, mode 0600)."""
    if configured:
        return configured
    path = data_dir / "api-token"
    if path.exists():
        return path.read_text().strip()
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def write_node_info(data_dir: Path, info: dict[str, Any]) -> None:
    """``<data_dir>/node.json``, replaced atomically (read by the CLI and by tools that find a running node)."""
    tmp = data_dir / "node.json.tmp"
    tmp.write_text(json.dumps(info, indent=2))
    tmp.replace(data_dir / "node.json")
