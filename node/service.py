"""One node process: chain client, stake cache and log poller, offer market, libp2p host (trio thread behind
``node.p2p.bridge``), lease engine, provider offer publishing, and the HTTP API. ``Node`` wires them; each part
lives in its own module.
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
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY

from node.api.server import make_app, start_api
from node.chain.artifacts import deployment_path, load_deployment
from node.chain.client import ChainClient, make_w3
from node.chain.events import ChainEvent, LogPoller, Reorged
from node.chain.proxies import Escrow, Staking, Token
from node.chain.stake_view import ProviderStake, StakeCache
from node.config import NodeConfig
from node.crypto import eip712
from node.crypto.nodekey import signing_key
from node.crypto.wallet import resolve_wallet
from node.errors import ChainError, ConfigError, NodeError
from node.leases import LeaseEngine
from node.market import Market, offer_view
from node.p2p.bridge import P2PNode
from node.p2p.config import P2PConfig, offers_topic
from node.p2p.keys import load_or_create_node_key
from node.protocol.offers import Offer, OfferSpec, gpu_model_from_name, sign_offer, spec_hash
from node.provider.gpus import GpuDevice, inventory
from node.storage.db import Database

log = logging.getLogger(__name__)


def _raw(address: str) -> bytes:
    return bytes.fromhex(address[2:])


class Node:
    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        self.data_dir = Path(cfg.data_dir)
        self.started_at = time.time()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.recent_events: list[dict[str, Any]] = []
        self.devices: tuple[GpuDevice, ...] = ()
        self.published: list[dict[str, Any]] = []
        self.engine: LeaseEngine | None = None
        self.api_url = ""
        self._offer_nonce = 0
        self._capacity_changed = asyncio.Event()
        self._live_offer_id: bytes | None = None

    # ------------------------------------------------------------------------------------------ start / stop
    async def start(self) -> None:
        cfg = self.cfg
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        self.db = Database(self.data_dir / "node.sqlite")
        self.wallet_key = resolve_wallet(cfg.keystore, cfg.password_file, cfg.dev_account)
        chain_id = await self._chain_id()
        deployment = load_deployment(cfg.deployments or deployment_path(chain_id))
        self.chain = await ChainClient.connect(cfg.rpc_url, deployment, self.db, self.wallet_key)
        self.address = self.chain.address
        if self.chain.sender is not None:  # resolve transactions a crash left behind before anything else
            unresolved = await self.chain.sender.reconcile()
            if unresolved:
                log.warning("transactions still pending after restart", extra={"count": len(unresolved)})
        self.deployment = deployment
        self.domain = eip712.Domain(chain_id, deployment.escrow)
        self.escrow, self.staking, self.token = Escrow(self.chain), Staking(self.chain), Token(self.chain)
        collateral_bps = int(await self.chain.call(self.chain.c.escrow, "collateralBps"))
        self.settlement_window = await self.escrow.settlement_window()

        self.stakes = StakeCache()
        self.market = Market(self.domain, self.stakes, self.data_dir / "offers.sqlite", collateral_bps)
        self.market.load()
        self.stakes.listeners.append(self._on_stake)
        self.stakes.nonce_listeners.append(self.market.apply_withdrawal)
        self.poller = LogPoller(self.chain.w3, self.db, [deployment.staking, deployment.escrow], self.chain.events,
                                self._on_chain_event, start_block=deployment.deploy_block,
                                confirmations=cfg.confirmations, interval=cfg.poll_interval)
        await self._catch_up()

        self.key_pair = load_or_create_node_key(self.data_dir / "node.key")
        p2p_cfg = P2PConfig(key_path=self.data_dir / "node.key", topic=offers_topic(chain_id, deployment.escrow),
                            listen_addrs=tuple(cfg.listen), bootstrap=tuple(cfg.bootstrap), mdns=cfg.mdns)
        self.p2p = P2PNode(p2p_cfg, validate=self.market.validate, live_offers=self.market.live_offers)
        if self.wallet_key is not None:
            executor, sampler = self._executor()
            self.devices = tuple(inventory(cfg.provider.declared_gpus)) if cfg.provider.enabled else ()
            self.engine = LeaseEngine(
                db=self.db, chain=self.chain, domain=self.domain, wallet_key=self.wallet_key,
                node_signing_key=signing_key(self.key_pair), p2p=self.p2p,
                offer_lookup=self.market.book.get, node_key_lookup=self._node_key,
                refresh_node_key=self._refresh_node_key, settlement_window=self.settlement_window,
                heartbeat_interval=cfg.provider.heartbeat_interval,
                checkpoint_interval=cfg.provider.checkpoint_interval,
                settle_interval=cfg.consumer.settle_interval, max_rejections=cfg.consumer.max_rejections,
                settle_every=cfg.consumer.settle_every, auto_topup=cfg.consumer.auto_topup,
                devices=self.devices, executor=executor, sampler=sampler,
                on_capacity_change=self._on_capacity_change,
            )
        await self.p2p.start()
        if self.engine is not None:
            await self.engine.start()
        self._spawn(self._gossip_loop())
        self._spawn(self.poller.run())
        self._spawn(self._housekeeping())
        for addr in cfg.bootstrap:
            with contextlib.suppress(Exception):
                n = await self.p2p.sync_from(addr)
                log.info("synced offers", extra={"peer_addr": addr, "accepted": n})
        if cfg.provider.enabled:
            if self.wallet_key is None:
                raise ConfigError("a provider node needs a wallet (keystore or dev_account)")
            await self._provider_setup()
            self._spawn(self._announce_loop())
        self.api_token = self._api_token()
        app = make_app(self, self.api_token, (REGISTRY, self.p2p.metrics.registry))
        self.api_runner, port = await start_api(app, cfg.api_host, cfg.api_port)
        self.api_url = f"http://{cfg.api_host}:{port}"
        self._write_info()
        log.info("node started", extra={"peer_id": self.p2p.peer_id, "api": self.api_url, "address": self.address})

    async def stop(self) -> None:
        """Best effort; safe after a partial start and when called twice."""
        if getattr(self, "_stopped", False):
            return
        self._stopped = True
        if self.engine is not None:
            await self.engine.stop()
        if hasattr(self, "poller"):
            self.poller.stop()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(BaseException):
                await t
        if hasattr(self, "api_runner"):
            with contextlib.suppress(Exception):
                await self.api_runner.cleanup()
        if hasattr(self, "p2p"):
            with contextlib.suppress(Exception):
                await self.p2p.stop()
        if hasattr(self, "chain"):
            with contextlib.suppress(Exception):
                await self.chain.w3.provider.disconnect()
        if hasattr(self, "market"):
            self.market.store.close()
        if hasattr(self, "db"):
            self.db.close()

    async def _chain_id(self) -> int:
        w3 = make_w3(self.cfg.rpc_url)
        try:
            return int(await w3.eth.chain_id)
        except Exception as exc:
            raise ChainError(f"RPC endpoint {self.cfg.rpc_url} unreachable: {type(exc).__name__}") from exc
        finally:
            with contextlib.suppress(Exception):
                await w3.provider.disconnect()

    async def _catch_up(self) -> None:
        head = int(await self.chain.w3.eth.block_number) - self.cfg.confirmations
        while self.poller.next_block <= head:
            await self.poller.step()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _executor(self) -> tuple[Any, Any]:
        from node.provider.executor import ProcessExecutor, SimulatedExecutor
        from node.provider.metering import NvmlSampler, SimulatedSampler

        pc = self.cfg.provider
        if pc.executor == "simulated":
            executor: Any = SimulatedExecutor()
        else:
            executor = ProcessExecutor(Path(pc.work_dir) if pc.work_dir else self.data_dir / "jobs")
        try:
            sampler: Any = NvmlSampler.open()
        except Exception:
            sampler = SimulatedSampler()
        return executor, sampler

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

    # ------------------------------------------------------------------------------------------ loops
    async def _gossip_loop(self) -> None:
        async for msg in self.p2p.messages():
            try:
                self.market.on_message(msg.data)
            except Exception as exc:  # a bug here must not stop the loop
                log.error("applying offer failed", extra={"error": repr(exc)[:300]})

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(5)
            self.market.evict_expired()

    def _on_stake(self, provider: bytes, stake: ProviderStake) -> None:
        if not stake.registered:
            removed = self.market.book.remove_provider(provider)
            if removed:
                self.market.store.delete(removed)
        else:
            self.market.on_stake_change(provider, stake.free)

    async def _on_chain_event(self, ev: ChainEvent | Reorged) -> None:
        if isinstance(ev, Reorged):
            log.warning("reorg: re-reading logs", extra={"from_block": ev.from_block})
            return
        self.recent_events.append({"block": ev.block_number, "event": ev.name, "tx": ev.tx_hash,
                                   **{k: (v.hex() if isinstance(v, bytes) else v) for k, v in ev.args.items()}})
        del self.recent_events[:-1000]
        await self.stakes.on_event(ev, self.staking, self.escrow)
        if self.engine is not None:
            try:
                await self.engine.on_chain_event(ev)
            except Exception as exc:
                log.error("lease event handling failed", extra={"event": ev.name, "error": repr(exc)[:300]})

    def _node_key(self, provider: str) -> bytes | None:
        return self.stakes.node_key(_raw(provider))

    async def _refresh_node_key(self, provider: str) -> bytes:
        return (await self.stakes.refresh(self.staking, provider)).node_key

    # ------------------------------------------------------------------------------------------ provider
    async def _provider_setup(self) -> None:
        pc = self.cfg.provider
        me = self.address
        assert me is not None
        if pc.stake > 0:
            have = await self.staking.stake_of(me)
            if have < pc.stake:
                need = pc.stake - have
                if await self.token.balance(me) < need:
                    raise ConfigError(f"wallet {me} holds less than the {need} tokens needed to stake")
                await self.token.ensure_allowance(f"approve-stake:{me}:{pc.stake}", self.deployment.staking, need)
                await self.staking.stake(f"stake:{me}:{pc.stake}:{have}", need)
        node_pub = bytes(signing_key(self.key_pair).verify_key)
        if await self.staking.node_key(me) != node_pub:
            await self.staking.register(f"register:{me}:{node_pub.hex()[:16]}", node_pub,
                                        ",".join(self.p2p.listen_addrs)[:512])
        stake = await self.stakes.refresh(self.staking, me)
        if not stake.registered:
            raise ConfigError("provider is not registered with enough stake (see provider.stake / minStake)")

    def _spec(self) -> OfferSpec:
        d = self.devices[0]
        simulated = any(x.simulated for x in self.devices)
        ram = (os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) // 2**30 if hasattr(os, "sysconf") else 0
        return OfferSpec(region=self.cfg.provider.region, cpu_cores=os.cpu_count() or 1, ram_gib=int(ram),
                         driver_version=d.driver_version or "none", cuda_version=d.cuda_driver_version or "none",
                         interconnect="pcie", simulated=simulated)

    def _on_capacity_change(self, offer_hash: bytes) -> None:
        """A lease took or freed GPUs. The live offer's own capacity is counted on-chain, so only a lease of an
        older offer changes what the live offer may promise: then re-announce (a later lease of the same offer is
        also ~80k gas cheaper to open than the first lease of a new one)."""
        if self._live_offer_id is None or bytes(offer_hash) != self._live_offer_id or not self._free_devices():
            self._capacity_changed.set()  # (with nothing free the live offer is withdrawn)

    def _free_devices(self) -> list[GpuDevice]:
        busy = self.engine.busy_devices() if self.engine is not None else set()
        return [d for d in self.devices if d.index not in busy]

    async def publish_offer(self) -> dict[str, Any] | None:
        """Offer the GPUs not taken by a lease, as the single live offer of this provider.

        The new offer supersedes the previous one in every book (higher nonce, same slot), and the previous one is
        cancelled on-chain (``cancelOffersBelow``) so that two offers can never book the same GPUs twice.
        Leases opened from the old offer stay valid, and their GPUs are not offered again until they are freed.
        With no free GPU, all offers are withdrawn.
        """
        pc = self.cfg.provider
        if self.wallet_key is None or self.address is None:
            raise ConfigError("a provider node needs a wallet")
        if not self.devices:
            raise ConfigError("no GPUs to offer")
        free = self._free_devices()
        if not free:
            if self._offer_nonce:
                await self.cancel_offers()
            self._live_offer_id = None
            return None
        spec = self._spec()
        previous = self._offer_nonce
        self._offer_nonce = max(self._offer_nonce + 1, int(time.time() * 1000))
        offer = Offer(provider=_raw(self.address), nonce=self._offer_nonce,
                      gpu_model=gpu_model_from_name(free[0].name[:32]), gpu_count=len(free),
                      vram_mib=min(d.memory_mib for d in free), price_per_gpu_second=pc.price_per_gpu_second,
                      min_duration=pc.min_duration, max_duration=pc.max_duration,
                      expires_at=int(time.time()) + pc.offer_ttl, spec_hash=spec_hash(spec))
        so = sign_offer(offer, spec, self.wallet_key, self.domain)
        blob = self.market.encode_offer(so)
        await self.p2p.publish(blob)  # validated locally first, so before it is in our own book
        self.market.add(so, blob)
        if previous:
            try:
                await self.escrow.cancel_offers_below(f"cancel:{offer.nonce}", offer.nonce)
            except NodeError as exc:  # the new offer is out; the old one expires on its own
                log.warning("could not cancel the previous offer on-chain", extra={"error": str(exc)[:200]})
        self._live_offer_id = bytes(offer.struct_hash())
        view = offer_view(offer.struct_hash(), so)
        self.published.append(view)
        del self.published[:-20]
        log.info("offer published", extra={"offer_id": view["offer_id"], "gpus": offer.gpu_count})
        return view

    async def _announce_loop(self) -> None:
        pc = self.cfg.provider
        while True:
            self._capacity_changed.clear()
            try:
                await self.publish_offer()
            except Exception as exc:
                log.warning("offer publish failed", extra={"error": repr(exc)[:300]})
            with contextlib.suppress(TimeoutError):  # re-announce at half-life, or when GPUs are taken or freed
                await asyncio.wait_for(self._capacity_changed.wait(), timeout=max(5.0, pc.offer_ttl / 2))

    async def cancel_offers(self) -> dict[str, Any]:
        """Withdraw every offer of ours: signed withdrawal on gossip now, ``cancelOffersBelow`` on-chain."""
        if self.wallet_key is None or self.address is None:
            raise ConfigError("this node has no wallet: it has no offers to cancel")
        below = max(self._offer_nonce + 1, int(time.time() * 1000))
        self._offer_nonce = below
        msg = self.market.withdrawal_message(self.wallet_key, _raw(self.address), below)
        try:
            await self.p2p.publish(msg)
        except NodeError as exc:
            log.warning("withdrawal not gossiped", extra={"error": str(exc)[:200]})
        self.stakes.raise_nonce(_raw(self.address), below)
        r = await self.escrow.cancel_offers_below(f"cancel:{below}", below)
        return {"nonce_below": below, "tx": r.tx_hash}

    # ------------------------------------------------------------------------------------------ API facade
    def status(self) -> dict[str, Any]:
        return {
            "peer_id": self.p2p.peer_id, "addrs": list(self.p2p.listen_addrs), "address": self.address,
            "chain_id": self.domain.chain_id, "escrow": self.deployment.escrow, "staking": self.deployment.staking,
            "token": self.deployment.token, "offers": len(self.market.book), "provider": self.cfg.provider.enabled,
            "devices": [{"index": d.index, "name": d.name, "memory_mib": d.memory_mib, "simulated": d.simulated}
                        for d in self.devices],
            "validation": dict(self.market.counts), "uptime_s": int(time.time() - self.started_at),
            "published": self.published[-3:],
            "gas": list(self.engine.gas) if self.engine else [],
        }

    def query_offers(self, params: dict[str, str]) -> list[dict[str, Any]]:
        return self.market.query(params)

    async def peers(self) -> list[dict[str, Any]]:
        return [{"peer_id": p.peer_id, "addrs": list(p.addrs), "in_mesh": p.in_mesh} for p in await self.p2p.peers()]

    def leases(self) -> list[dict[str, Any]]:
        return self.engine.views() if self.engine else []

    def lease(self, lease_id: int) -> dict[str, Any] | None:
        return self.engine.lease_detail(lease_id) if self.engine else None

    def _need_engine(self) -> LeaseEngine:
        if self.engine is None:
            raise ConfigError("this node has no wallet: it cannot open or close leases")
        return self.engine

    async def open_lease(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            offer_id = bytes.fromhex(str(body["offer_id"]).removeprefix("0x"))
            gpus, deposit = int(body["gpus"]), int(body["deposit"])
        except (KeyError, ValueError) as exc:
            raise ValueError("body needs offer_id (0x hex), gpus (int) and deposit (int)") from exc
        if len(offer_id) != 32 or gpus <= 0 or deposit <= 0:
            raise ValueError("offer_id must be 32 bytes; gpus and deposit must be positive")
        job = body.get("job")
        if job is not None and not isinstance(job, dict):
            raise ValueError("job must be an object")
        return await self._need_engine().open_lease(offer_id, gpus, deposit, job)

    async def top_up(self, lease_id: int, amount: int) -> dict[str, Any]:
        if amount <= 0:
            raise ValueError("amount must be positive")
        return await self._need_engine().top_up(lease_id, amount)

    async def close_lease(self, lease_id: int) -> dict[str, Any]:
        return await self._need_engine().close_lease(lease_id)

    def chain_events(self, limit: int) -> list[dict[str, Any]]:
        return self.recent_events[-limit:][::-1]


async def run_forever(cfg: NodeConfig) -> None:
    node = Node(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await node.start()
    except BaseException:
        await node.stop()
        raise
    try:
        await stop.wait()
    finally:
        await node.stop()
