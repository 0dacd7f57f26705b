"""What feeds the node's market figures and provider records: the offer book and the confirmed chain logs.

``chain_changes(ev, at)`` is the pure mapping from one decoded contract log to the changes of
``node.protocol.market_data`` and ``node.protocol.provider_record``:

| log | changes |
|---|---|
| ``LeaseOpened`` | ``LeaseOpenedLog`` (the price the lease keeps) |
| ``LeaseSettled`` | ``LeaseSettledLog`` |
| ``ClaimFinalized`` with a non-zero amount | ``LeaseSettledLog`` (the same money movement; a moot claim moves none) |
| ``LeaseClosed`` / ``LeaseFinalized`` | ``LeaseClosedLog`` / ``LeaseFinalizedLog`` |
| ``UsageClaimed`` / ``ClaimDisputed`` | ``UsageClaimedLog`` / ``ClaimDisputedLog`` |
| ``LivenessChallenged`` / ``LivenessResolved`` | ``LivenessChallengedLog`` / ``LivenessResolvedLog`` |
| ``EquivocationReported`` | ``EquivocationReportedLog`` |
| ``Registered``, ``Staked``, ``UnbondRequested``, ``Slashed`` | the provider-record change of the same name |

Every other log maps to nothing. ``at`` is the block's timestamp. A reorg does not roll the figures back: they are
advisory (selection and pricing read them; no money moves on them), and the node's confirmation depth is what
keeps replaced blocks out.

``MarketFeed`` (asyncio side only, like the book) applies them. Chain logs come in chain order from the log poller
(and, at start, from a catch-up read from the deployment block: ``catch_up``); a log at or before the last one
applied is skipped, so the catch-up and the poller may overlap. Offer changes come from the book's published
snapshots (``sync``): only the shards a snapshot replaced are compared, so a sync after a few changes costs a few
shard comparisons, not a scan of the book. ``sync`` runs before every read and before each chain log (a lease is
counted on the market of its offer only if the offer is known when it opens; one that left the book shortly before
the log arrived, superseded by the provider's next announcement, still counts).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from node.chain.events import ChainEvent, EventDecoder, LogPoller, Reorged
from node.protocol.market_data import (
    ALL_REGIONS,
    NO_REGION,
    LeaseClosedLog,
    LeaseOpenedLog,
    LeaseSettledLog,
    MarketChange,
    MarketData,
    OfferGone,
    OfferLive,
)
from node.protocol.offerbook import BookSnapshot, OfferBook
from node.protocol.provider_record import (
    ClaimDisputedLog,
    EquivocationReportedLog,
    LeaseFinalizedLog,
    LivenessChallengedLog,
    LivenessResolvedLog,
    ProviderRecords,
    ProviderRegisteredLog,
    RecordChange,
    SlashedLog,
    StakedLog,
    UnbondRequestedLog,
    UsageClaimedLog,
)
from node.storage.db import Database

log = logging.getLogger(__name__)

CATCH_UP_CURSOR = "market_catch_up"
BLOCK_TIMES_KEPT = 4096
GONE_KEPT = 10_000  # offers that left the book, kept for leases whose LeaseOpened log arrives after that

ChainChange = MarketChange | RecordChange
BlockTime = Callable[[int], Awaitable[int]]


def address_bytes(value: Any) -> bytes:
    """A checksummed (or any 0x-hex) address as its 20 raw bytes."""
    return bytes.fromhex(str(value).removeprefix("0x"))


def chain_changes(ev: ChainEvent, at: int) -> list[ChainChange]:
    """The market and record changes one decoded log brings (see the module docstring)."""
    a, name = ev.args, ev.name
    if name in ("Registered", "Staked", "UnbondRequested", "Slashed"):
        who = address_bytes(a["provider"])
        if name == "Registered":
            return [ProviderRegisteredLog(who, at)]
        if name == "Staked":
            return [StakedLog(who, int(a["amount"]), int(a["totalStake"]), at)]
        if name == "UnbondRequested":
            return [UnbondRequestedLog(who, int(a["amount"]), at)]
        return [SlashedLog(who, int(a["amount"]), at)]
    if "leaseId" not in a or "provider" not in a:
        return []
    lid, who = int(a["leaseId"]), address_bytes(a["provider"])
    if name == "LeaseOpened":
        return [LeaseOpenedLog(lid, who, bytes(a["offerHash"]), int(a["gpus"]), int(a["pricePerGpuSecond"]),
                               int(a["startedAt"]), int(a["endsAt"]), at)]
    if name == "LeaseSettled":
        return [LeaseSettledLog(lid, who, int(a["cumulativeGpuSeconds"]), int(a["amount"]), at)]
    if name == "ClaimFinalized":
        amount = int(a["amount"])
        return [LeaseSettledLog(lid, who, int(a["cumulativeGpuSeconds"]), amount, at)] if amount else []
    simple: dict[str, Callable[[int, bytes, int], ChainChange]] = {
        "LeaseClosed": LeaseClosedLog, "LeaseFinalized": LeaseFinalizedLog, "UsageClaimed": UsageClaimedLog,
        "ClaimDisputed": ClaimDisputedLog, "LivenessChallenged": LivenessChallengedLog,
        "LivenessResolved": LivenessResolvedLog, "EquivocationReported": EquivocationReportedLog,
    }
    make = simple.get(name)
    return [make(lid, who, at)] if make is not None else []


MAPPED_LOGS = frozenset({"Registered", "Staked", "UnbondRequested", "Slashed", "LeaseOpened", "LeaseSettled",
                         "ClaimFinalized", "LeaseClosed", "LeaseFinalized", "UsageClaimed", "ClaimDisputed",
                         "LivenessChallenged", "LivenessResolved", "EquivocationReported"})
_MARKET_TYPES = (LeaseOpenedLog, LeaseSettledLog, LeaseClosedLog)
_RECORD_TYPES = (ProviderRegisteredLog, StakedLog, UnbondRequestedLog, SlashedLog, LeaseOpenedLog, LeaseSettledLog,
                 LeaseClosedLog, LeaseFinalizedLog, UsageClaimedLog, ClaimDisputedLog, LivenessChallengedLog,
                 LivenessResolvedLog, EquivocationReportedLog)


def block_time_reader(get_block: Callable[[int], Awaitable[Any]]) -> BlockTime:
    """A block's timestamp by number, read once per block (``get_block``: ``w3.eth.get_block``)."""
    cache: dict[int, int] = {}

    async def block_time(number: int) -> int:
        t = cache.get(number)
        if t is None:
            t = int((await get_block(number))["timestamp"])
            if len(cache) >= BLOCK_TIMES_KEPT:
                cache.clear()
            cache[number] = t
        return t

    return block_time


class MarketFeed:
    """The node's ``MarketData`` and ``ProviderRecords``, kept up to date from ``book`` and the chain logs."""

    def __init__(self, book: OfferBook, block_time: BlockTime, retention_s: int | None = None) -> None:
        self.book = book
        self.block_time = block_time
        self.data = MarketData() if retention_s is None else MarketData(retention_s)
        self.records = ProviderRecords()
        self._shown: BookSnapshot = BookSnapshot.empty()
        self._last: tuple[int, int] = (-1, -1)  # (block, log index) of the last log applied
        self.logs_applied = 0
        self.regions: set[str] = set()  # every region an offer was seen in (NO_REGION for offers without a spec)
        self._live: dict[bytes, OfferLive] = {}
        self._gone: OrderedDict[bytes, OfferLive] = OrderedDict()  # recently superseded or removed offers

    # -- the offer book ------------------------------------------------------------------------------------------
    def sync(self) -> int:
        """Bring the market data up to the book's published snapshot; returns the number of offer changes."""
        now = self.book.published.current
        before = self._shown
        if now is before:
            return 0
        changes: list[MarketChange] = []
        for old, new in zip(before.shards, now.shards, strict=True):
            if old is new:
                continue
            old_ids = {h.offer_id for h in old.values()}
            new_ids = {h.offer_id for h in new.values()}
            changes.extend(OfferGone(oid) for oid in sorted(old_ids - new_ids))
            for oid in sorted(new_ids - old_ids):
                entry = self.book.get(oid)
                if entry is not None:
                    changes.append(OfferLive(oid, entry.offer, entry.region))
                    self.regions.add(entry.region if entry.region is not None else NO_REGION)
        # gone first, so a provider's replaced offer leaves before its successor counts
        changes.sort(key=lambda c: not isinstance(c, OfferGone))
        for c in changes:
            if isinstance(c, OfferGone):
                live = self._live.pop(c.offer_id, None)
                if live is not None:
                    self._gone[c.offer_id] = live
            elif isinstance(c, OfferLive):
                self._live[c.offer_id] = c
        while len(self._gone) > GONE_KEPT:
            self._gone.popitem(last=False)
        self.data.apply_all(changes)
        self._shown = now
        return len(changes)

    def market_prices(self, gpu_model: str, region: str | None, exclude: int | None = None) -> list[int]:
        """Live prices per GPU-second of one market, ascending, with one offer at ``exclude`` left out (the
        provider's own)."""
        self.sync()
        prices = list(self.data.prices(gpu_model, region if region is not None else NO_REGION))
        if exclude is not None and exclude in prices:
            prices.remove(exclude)
        return prices

    # -- chain logs ------------------------------------------------------------------------------------------------
    async def on_chain_event(self, ev: ChainEvent | Reorged) -> None:
        if isinstance(ev, Reorged):
            # Figures derived from replaced blocks stay, and logs the poller re-reads at positions already applied
            # are skipped (mostly the same logs mined again; counting them twice would double settlements).
            log.warning("market figures keep logs of replaced blocks", extra={"from_block": ev.from_block})
            return
        position = (ev.block_number, ev.log_index)
        if position <= self._last or ev.name not in MAPPED_LOGS:
            return
        try:
            at = await self.block_time(ev.block_number)
            self.sync()
            for change in chain_changes(ev, at):
                if isinstance(change, LeaseOpenedLog) and change.offer_hash in self._gone:
                    # the provider re-announced before this log arrived: count the lease on the market of the
                    # offer it was opened from, which then leaves again
                    self.data.apply_all((self._gone[change.offer_hash], change, OfferGone(change.offer_hash)))
                elif isinstance(change, _MARKET_TYPES):
                    self.data.apply(change)
                if isinstance(change, _RECORD_TYPES):
                    self.records.apply(change)
        except Exception as exc:  # the figures are advisory: a failure here must not hold up the lease engine
            log.error("market figures skipped a log", extra={"event": ev.name, "error": repr(exc)[:300]})
        self._last = position
        self.logs_applied += 1

    async def catch_up(self, poller: LogPoller, db: Database, decoder: EventDecoder, addresses: Sequence[str],
                       start_block: int, also: Callable[[ChainEvent | Reorged], None] | None = None) -> int:
        """Read every log from ``start_block`` up to where ``poller`` (the node's log poller) resumes, before it
        runs: the figures cover the chain's whole history after a restart too (``also`` sees each log as well: the
        explorer list). Returns the logs read."""
        until = poller.next_block
        if until <= start_block:
            return 0
        db.set_kv(CATCH_UP_CURSOR, str(start_block))
        async def handle(ev: ChainEvent | Reorged) -> None:
            if also is not None:
                also(ev)
            await self.on_chain_event(ev)

        reader = LogPoller(poller.w3, db, list(addresses), decoder, handle, start_block=start_block,
                           confirmations=poller.confirmations, max_range=poller.max_range,
                           cursor_key=CATCH_UP_CURSOR)
        total = 0
        while reader.next_block < until:
            total += await reader.step()
        log.info("market figures caught up", extra={"from_block": start_block, "to_block": until, "logs": total})
        return total


def chain_handler(*handlers: Callable[[ChainEvent | Reorged], Awaitable[None]]
                  ) -> Callable[[ChainEvent | Reorged], Awaitable[None]]:
    """One log-poller handler that passes each event to ``handlers`` in order."""

    async def handle(ev: ChainEvent | Reorged) -> None:
        for h in handlers:
            await h(ev)

    return handle


__all__ = ["ALL_REGIONS", "MarketFeed", "chain_changes", "chain_handler"]
