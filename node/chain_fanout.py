"""Chain-event fan-out: who gets which confirmed contract event, in one place."""

from __future__ import annotations

import logging
from collections import deque
from typing import Any, Protocol

from node.chain.events import ChainEvent, Reorged
from node.chain.proxies import Escrow, Staking
from node.chain.stake_view import ProviderStake, StakeCache
from node.market import Market

log = logging.getLogger(__name__)

RECENT_EVENTS = 1000


class LeaseEventSink(Protocol):
    async def on_chain_event(self, ev: ChainEvent) -> None: ...


class ChainEventRouter:
    """Who gets which confirmed chain event, in chain order (the log poller's handler):

    1. the explorer list: every event (the last ``RECENT_EVENTS``), for ``GET /v1/events``;
    2. the stake cache: stake and registration events and ``OffersCancelled``; the market follows the cache
       (``follow_stakes``), so stake changes and raised nonce floors reach the offer book from there;
    3. the lease engine, once it runs (``leases``): every event; its failure is logged and the next event still
       goes through.

    A reorg is only logged: the poller then re-reads the logs from the fork point.
    """

    def __init__(self, stakes: StakeCache, staking: Staking, escrow: Escrow) -> None:
        self.stakes = stakes
        self.staking = staking
        self.escrow = escrow
        self.leases: LeaseEventSink | None = None
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_EVENTS)

    async def __call__(self, ev: ChainEvent | Reorged) -> None:
        if isinstance(ev, Reorged):
            log.warning("reorg: re-reading logs", extra={"from_block": ev.from_block})
            return
        self.remember(ev)
        await self.stakes.on_event(ev, self.staking, self.escrow)
        if self.leases is not None:
            try:
                await self.leases.on_chain_event(ev)
            except Exception as exc:
                log.error("lease event handling failed", extra={"event": ev.name, "error": repr(exc)[:300]})

    def remember(self, ev: ChainEvent | Reorged) -> None:
        """Add ``ev`` to the explorer list (also for logs re-read at start, so a restarted node shows its history)."""
        if isinstance(ev, ChainEvent):
            self.recent.append({"block": ev.block_number, "event": ev.name, "tx": ev.tx_hash,
                                **{k: (v.hex() if isinstance(v, bytes) else v) for k, v in ev.args.items()}})

    def lease_transactions(self, lease_id: int) -> list[dict[str, Any]]:
        """The followed events of one lease, oldest first: which transaction (and block) carried each; as far back
        as the recent list reaches."""
        return [{"block": e["block"], "event": e["event"], "tx": e["tx"],
                 **({"seq": e["seq"]} if isinstance(e.get("seq"), int) else {})}
                for e in self.recent if e.get("leaseId") == lease_id]

    def latest(self, limit: int) -> list[dict[str, Any]]:
        return list(self.recent)[-limit:][::-1] if limit > 0 else []


def follow_stakes(stakes: StakeCache, market: Market) -> None:
    """The market drops a provider's offers when it is no longer registered, re-checks them against its free stake
    when that changes, and drops offers below a raised nonce floor."""

    def on_stake(provider: bytes, stake: ProviderStake) -> None:
        if not stake.registered:
            removed = market.book.remove_provider(provider)
            if removed:
                market.store.delete(removed)
        else:
            market.on_stake_change(provider, stake.free)

    stakes.listeners.append(on_stake)
    stakes.nonce_listeners.append(market.apply_withdrawal)
