"""Spend caps of a consumer node: what it has spent today, from its lease store, and whether an open or a top-up may
go ahead (the rule itself is ``node.protocol.selection.check_spend``).

Spent means deposited: a lease's opening deposit and its top-ups, counted when the transaction was recorded (an
open whose transaction failed is not counted; one still pending is). The day is the current UTC day. A lease's
spend is its deposit so far (including confirmed top-ups) plus a top-up in flight.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from node.config import ConsumerConfig
from node.errors import NodeError
from node.leases.records import LeaseRecord
from node.protocol.selection import SpendCaps, SpendCheck, check_spend
from node.storage.db import Database

DAY = 86_400
_COUNTED = ("created", "sent", "mined")


class SpendCapReached(NodeError, ValueError):
    """An open or a top-up would exceed a configured spend cap; the message says which and by how much."""


def day_start(now: float) -> int:
    return int(now) // DAY * DAY


def spent_since(db: Database, since: float) -> int:
    """Deposits of opens and top-ups recorded since ``since`` (unix seconds) whose transaction did not fail."""
    marks = ",".join("?" * len(_COUNTED))
    opens = db.query(
        "SELECT o.deposit FROM opens o LEFT JOIN tx_intents t ON t.key = o.key "
        f"WHERE o.created_at >= ? AND (o.lease_id IS NOT NULL OR t.status IN ({marks}))", (since, *_COUNTED))
    total = sum(int(r["deposit"]) for r in opens)
    topups = db.query(f"SELECT data FROM tx_intents WHERE key LIKE 'topup:%' AND created_at >= ? "
                      f"AND status IN ({marks})", (since, *_COUNTED))
    for r in topups:
        data = bytes(r["data"])  # topUp(uint256 leaseId, uint256 amount)
        if len(data) >= 68:
            total += int.from_bytes(data[36:68], "big")
    return total


class SpendGuard:
    """The caps of one node and its lease store."""

    def __init__(self, db: Database, caps: SpendCaps, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.caps = caps
        self.clock = clock

    @property
    def active(self) -> bool:
        return self.caps.per_lease is not None or self.caps.per_day is not None

    def spent_today(self) -> int:
        return spent_since(self.db, day_start(self.clock())) if self.active else 0

    def check(self, amount: int, lease_spent: int = 0) -> SpendCheck:
        if not self.active:
            return SpendCheck(True, "")
        return check_spend(amount, self.caps, self.spent_today(), lease_spent)

    def require(self, amount: int, lease_spent: int = 0, what: str = "open") -> None:
        """Raise ``SpendCapReached`` when ``amount`` more may not be spent."""
        verdict = self.check(amount, lease_spent)
        if not verdict.allowed:
            raise SpendCapReached(f"{what} refused: {verdict.reason}")


def top_up_check(guard: SpendGuard) -> Callable[[LeaseRecord, int], str | None]:
    """The lease engine's check before a top-up (also an automatic one): None to go ahead, else the reason."""

    def check(rec: LeaseRecord, amount: int) -> str | None:
        ledger = rec.state.ledger
        # the transition has already counted ``amount`` as in flight
        verdict = guard.check(amount, ledger.deposit + max(0, ledger.topup_in_flight - amount))
        return None if verdict.allowed else f"top-up refused: {verdict.reason}"

    return check


def spend_guard(db: Database, consumer: ConsumerConfig, clock: Callable[[], float] = time.time) -> SpendGuard:
    """The guard of ``consumer``'s ``max_spend_per_lease`` and ``max_spend_per_day`` (0: no cap)."""
    return SpendGuard(db, SpendCaps(consumer.max_spend_per_lease or None, consumer.max_spend_per_day or None), clock)


def lease_spent(rec: LeaseRecord | None) -> int:
    """What a consumer lease has cost so far: its deposit with confirmed top-ups and any top-up in flight."""
    if rec is None:
        return 0
    return rec.state.ledger.deposit + rec.state.ledger.topup_in_flight
