"""The provider's offer: one live offer, sized to the GPUs no lease holds, re-announced before it expires.

Rules, in the order ``publish`` applies them:

1. With no free GPU, every offer is withdrawn (signed withdrawal on gossip, ``cancelOffersBelow`` on-chain) and
   nothing is offered until a lease frees GPUs.
2. Otherwise a new offer is signed with a nonce above every earlier one (``max(previous + 1, now in ms)``), so it
   supersedes the previous offer in every book (same slot), and is gossiped (validated locally first) before it
   enters our own book.
3. The previous offer is then cancelled on-chain (``cancelOffersBelow(new nonce)``) so that two offers can never
   book the same GPUs twice. Leases opened from it stay valid; their GPUs are not offered again until freed. If the
   cancel fails the new offer still stands and the old one expires on its own.

``announce_loop`` publishes at half the offer's lifetime, and at once when ``on_capacity_change`` says GPUs were
taken or freed by a lease of an *older* offer (the live offer's own leases are counted on-chain, and a later lease of
the same offer is ~80k gas cheaper to open than the first lease of a new one), or when nothing is free any more.

Price: the pricing policy of ``ProviderConfig.pricing`` (``node.protocol.pricing``: ``fixed``, the configured price
and the default; ``market``; ``utilisation``) is asked once per ``reannounce_interval``; ``pricing.update`` announces
a new price only when it changed and the interval since the last price announcement has passed, so price moves
reach gossip at most once per interval. Re-announcements for capacity or expiry in between carry the current
price. A running lease keeps the price it was opened at: the escrow stores it at open and settles at it.
Utilisation is this provider's own: GPUs that leases hold over all its GPUs. ``market`` reads the live prices of
the same GPU model and region (``market_prices``), without this provider's own offer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any, Protocol

from node.chain.proxies import Staking, Token
from node.chain.stake_view import StakeCache
from node.chain.tx import TxResult
from node.config import ProviderConfig
from node.crypto.eip712 import Domain
from node.errors import ConfigError, NodeError
from node.market import offer_view
from node.protocol.offers import (
    Offer,
    OfferSpec,
    SignedOffer,
    gpu_model_from_name,
    gpu_model_name,
    sign_offer,
    spec_hash,
)
from node.protocol.pricing import (
    BPS,
    FixedPolicy,
    MarketPolicy,
    Policy,
    PricingInputs,
    PricingState,
    UtilisationPolicy,
    update,
)
from node.provider.gpus import GpuDevice

log = logging.getLogger(__name__)

KEEP_PUBLISHED = 20


class OfferBookPort(Protocol):
    def encode_offer(self, so: SignedOffer) -> bytes: ...
    def add(self, so: SignedOffer, blob: bytes) -> object: ...
    def withdrawal_message(self, private_key: bytes, provider: bytes, nonce_below: int) -> bytes: ...


class GossipPort(Protocol):
    async def publish(self, data: bytes) -> None: ...


class OfferCancelPort(Protocol):
    async def cancel_offers_below(self, key: str, nonce: int) -> TxResult: ...


class NonceFloorPort(Protocol):
    def raise_nonce(self, provider: bytes, nonce: int) -> None: ...


MarketPrices = Callable[[str, str | None, int | None], list[int]]


def pricing_policy(pc: ProviderConfig) -> Policy:
    """The policy ``pc`` configures (see ``ProviderConfig``); raises ``ConfigError`` for values it cannot use."""
    from node.protocol.pricing import PricingError

    base = pc.price_per_gpu_second
    floor = pc.price_floor or max(1, base // 2)
    ceiling = pc.price_ceiling or max(floor, base * 4)
    try:
        if pc.pricing == "fixed":
            return FixedPolicy(base)
        if pc.pricing == "market":
            return MarketPolicy(pc.price_percentile, floor, ceiling)
        if pc.pricing == "utilisation":
            return UtilisationPolicy(floor, ceiling, target_bps=round(pc.price_target * BPS),
                                     max_step_bps=max(1, round(pc.price_step * BPS)),
                                     deadband_bps=round(pc.price_deadband * BPS))
    except PricingError as exc:
        raise ConfigError(f"provider pricing: {exc}") from exc
    raise ConfigError(f"provider.pricing {pc.pricing!r}: fixed, market or utilisation")


class OfferPublisher:
    def __init__(self, *, config: ProviderConfig, wallet_key: bytes, address: str, domain: Domain,
                 devices: tuple[GpuDevice, ...], book: OfferBookPort, gossip: GossipPort, escrow: OfferCancelPort,
                 nonces: NonceFloorPort, busy_devices: Callable[[], set[int]] = set,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.wallet_key = wallet_key
        self.provider = bytes.fromhex(address.removeprefix("0x"))
        self.domain = domain
        self.devices = devices
        self.book = book
        self.gossip = gossip
        self.escrow = escrow
        self.nonces = nonces
        self.busy_devices = busy_devices
        self.clock = clock
        self.nonce = 0  # of the last offer or withdrawal we signed
        self.live_offer_id: bytes | None = None
        self.published: list[dict[str, Any]] = []  # views of the last offers, newest last
        self.capacity_changed = asyncio.Event()
        self.policy = pricing_policy(config)
        start = min(max(config.price_per_gpu_second, getattr(self.policy, "floor", 1)),
                    getattr(self.policy, "ceiling", config.price_per_gpu_second))
        self.pricing = PricingState(start)
        self.price_changes: list[tuple[float, int]] = []  # (when, new price) of every price announcement
        self.market_prices: MarketPrices = lambda model, region, exclude: []
        self._next_reprice = 0.0

    @property
    def price(self) -> int:
        """The price per GPU-second the next offer carries."""
        return self.pricing.price

    def reprice(self, now: float) -> bool:
        """Ask the policy once per ``reannounce_interval``; True when a new price is to be announced now."""
        if isinstance(self.policy, FixedPolicy) or now < self._next_reprice:
            return False
        interval = self.config.reannounce_interval
        self._next_reprice = now + interval
        if not self.devices:
            return False
        total, busy = len(self.devices), len(self.busy_devices())
        prices: list[int] = []
        if isinstance(self.policy, MarketPolicy):
            model = gpu_model_name(gpu_model_from_name(self.devices[0].name[:32]))
            prices = self.market_prices(model, self.config.region, self.price if self.live_offer_id else None)
        decision = update(self.policy, self.pricing, PricingInputs(gpus_total=total, gpus_leased=busy,
                                                                   market_prices=prices),
                          int(now), max(1, int(interval)))  # the float schedule above is the stricter rule
        if not decision.announce:
            return False
        changed = decision.state.price != self.pricing.price or self.pricing.announced_at is None
        self.pricing = decision.state
        if changed:
            self.price_changes.append((now, decision.state.price))
            del self.price_changes[:-KEEP_PUBLISHED]
            log.info("offer price set", extra={"price_per_gpu_second": decision.state.price, "gpus_leased": busy,
                                               "gpus": total, "policy": self.config.pricing})
        return True

    def next_reprice_in(self, now: float) -> float:
        if isinstance(self.policy, FixedPolicy):
            return float("inf")
        return max(0.0, self._next_reprice - now)

    def free_devices(self) -> list[GpuDevice]:
        busy = self.busy_devices()
        return [d for d in self.devices if d.index not in busy]

    def spec(self) -> OfferSpec:
        d = self.devices[0]
        ram = (os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) // 2**30 if hasattr(os, "sysconf") else 0
        return OfferSpec(region=self.config.region, cpu_cores=os.cpu_count() or 1, ram_gib=int(ram),
                         driver_version=d.driver_version or "none", cuda_version=d.cuda_driver_version or "none",
                         interconnect="pcie", simulated=any(x.simulated for x in self.devices))

    def on_capacity_change(self, offer_hash: bytes) -> None:
        """A lease took or freed GPUs (called by the lease engine)."""
        if self.live_offer_id is None or bytes(offer_hash) != self.live_offer_id or not self.free_devices():
            self.capacity_changed.set()

    def _next_nonce(self) -> int:
        self.nonce = max(self.nonce + 1, int(self.clock() * 1000))
        return self.nonce

    async def publish(self) -> dict[str, Any] | None:
        """Offer the free GPUs as the single live offer; returns its view, or None when nothing is free."""
        if not self.devices:
            raise ConfigError("no GPUs to offer")
        free = self.free_devices()
        if not free:
            if self.nonce:
                await self.cancel_all()
            self.live_offer_id = None
            return None
        pc = self.config
        signed_at = self.clock()
        spec = self.spec()
        previous = self.nonce
        offer = Offer(provider=self.provider, nonce=self._next_nonce(),
                      gpu_model=gpu_model_from_name(free[0].name[:32]), gpu_count=len(free),
                      vram_mib=min(d.memory_mib for d in free), price_per_gpu_second=self.price,
                      min_duration=pc.min_duration, max_duration=pc.max_duration,
                      expires_at=int(signed_at) + pc.offer_ttl, spec_hash=spec_hash(spec))
        so = sign_offer(offer, spec, self.wallet_key, self.domain)
        blob = self.book.encode_offer(so)
        await self.gossip.publish(blob)  # validated locally first, so before it is in our own book
        self.book.add(so, blob)
        if previous:
            try:
                await self.escrow.cancel_offers_below(f"cancel:{offer.nonce}", offer.nonce)
            except NodeError as exc:  # the new offer is out; the old one expires on its own
                log.warning("could not cancel the previous offer on-chain", extra={"error": str(exc)[:200]})
        self.live_offer_id = bytes(offer.struct_hash())
        if self.published and int(self.published[-1]["price_per_gpu_second"]) != offer.price_per_gpu_second:
            # a new price went out now (maybe later than it was decided: a failed publish defers it): the next
            # change is at least one interval after this announcement, not after the decision
            self._next_reprice = max(self._next_reprice, signed_at + self.config.reannounce_interval)
        view = {**offer_view(offer.struct_hash(), so), "published_at": signed_at}
        self.published.append(view)
        del self.published[:-KEEP_PUBLISHED]
        log.info("offer published", extra={"offer_id": view["offer_id"], "gpus": offer.gpu_count})
        return view

    async def cancel_all(self) -> dict[str, Any]:
        """Withdraw every offer of ours: signed withdrawal on gossip now, ``cancelOffersBelow`` on-chain."""
        below = self._next_nonce()
        msg = self.book.withdrawal_message(self.wallet_key, self.provider, below)
        try:
            await self.gossip.publish(msg)
        except NodeError as exc:
            log.warning("withdrawal not gossiped", extra={"error": str(exc)[:200]})
        self.nonces.raise_nonce(self.provider, below)
        r = await self.escrow.cancel_offers_below(f"cancel:{below}", below)
        return {"nonce_below": below, "tx": r.tx_hash}

    async def announce_loop(self) -> None:
        """Publish now, then at the offer's half-life, when capacity changes, or when the pricing policy announces
        a new price (asked once per ``reannounce_interval``); runs until cancelled."""
        refresh_at = 0.0
        capacity = True
        while True:
            self.capacity_changed.clear()
            now = self.clock()
            repriced = self.reprice(now)
            if capacity or repriced or now >= refresh_at:
                try:
                    await self.publish()
                except Exception as exc:  # RPC or gossip trouble: try again at the next occasion
                    log.warning("offer publish failed", extra={"error": repr(exc)[:300]})
                refresh_at = self.clock() + max(5.0, self.config.offer_ttl / 2)
            now = self.clock()
            wait = max(0.05, min(refresh_at - now, self.next_reprice_in(now)))
            capacity = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.capacity_changed.wait(), timeout=wait)
                capacity = True


async def register_provider(config: ProviderConfig, address: str, staking: Staking, token: Token, staking_address: str,
                            stakes: StakeCache, node_pub: bytes, listen_addrs: tuple[str, ...]) -> None:
    """Top the stake up to ``config.stake`` and register the node key, as needed; fail unless then registered."""
    if config.stake > 0:
        have = await staking.stake_of(address)
        if have < config.stake:
            need = config.stake - have
            if await token.balance(address) < need:
                raise ConfigError(f"wallet {address} holds less than the {need} tokens needed to stake")
            await token.ensure_allowance(f"approve-stake:{address}:{config.stake}:{have}", staking_address, need)
            await staking.stake(f"stake:{address}:{config.stake}:{have}", need)
    if await staking.node_key(address) != node_pub:
        await staking.register(f"register:{address}:{node_pub.hex()[:16]}", node_pub, ",".join(listen_addrs)[:512])
    stake = await stakes.refresh(staking, address)
    if not stake.registered:
        raise ConfigError("provider is not registered with enough stake (see provider.stake / minStake)")
