"""The market rebuilt from contract events alone: providers (stake, registration, collateral, slashes), leases
(opened from which offer, topped up, settled, claimed, challenged, closed, finalized) and the transactions that
carried them. Input: the node's followed events (``GET /v1/events``' dicts: ``block``, ``event``, ``tx`` and the
decoded arguments), any order; output: plain dataclasses the pages render and link."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

Event = dict[str, Any]

# Arguments shown as columns of their own in event lists; the rest are shown as name=value details.
LINKED = ("leaseId", "provider", "consumer", "offerHash")


def hex0x(v: Any) -> str:
    s = str(v)
    return s if s.startswith("0x") else "0x" + s


@dataclass
class ProviderView:
    address: str
    staked: int = 0
    unbonding: int = 0
    locked: int = 0
    registered: bool = False
    slashed: int = 0
    leases: list[int] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


@dataclass
class LeaseView:
    lease_id: int
    provider: str = ""
    consumer: str = ""
    offer: str = ""
    gpus: int = 0
    price_per_gpu_second: int = 0
    deposit: int = 0
    paid: int = 0
    fees: int = 0
    gpu_seconds: int = 0
    settlements: int = 0
    claims: int = 0
    challenges: int = 0
    slashed: int = 0
    refund: int | None = None
    started_at: int = 0
    ends_at: int = 0
    status: str = "open"
    opened_tx: str = ""
    events: list[Event] = field(default_factory=list)


@dataclass
class Market:
    providers: dict[str, ProviderView] = field(default_factory=dict)
    leases: dict[int, LeaseView] = field(default_factory=dict)
    txs: dict[str, list[Event]] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)  # chronological

    def provider(self, address: str) -> ProviderView:
        return self.providers.setdefault(address, ProviderView(address))

    def gpus_leased(self, offer: str) -> int:
        """GPUs of ``offer`` in leases not yet closed."""
        return sum(v.gpus for v in self.leases.values() if v.offer.lower() == offer.lower() and v.status == "open")


def rebuild(events: Iterable[Event]) -> Market:
    m = Market()
    for ev in sorted(events, key=lambda e: (int(e.get("block", 0)), int(e.get("log_index", 0)))):
        m.events.append(ev)
        m.txs.setdefault(str(ev.get("tx", "")), []).append(ev)
        _apply(m, ev)
    return m


def _apply(m: Market, ev: Event) -> None:
    name = ev.get("event", "")
    lid = ev.get("leaseId")
    lease = m.leases.setdefault(int(lid), LeaseView(int(lid))) if lid is not None else None
    if lease is not None:
        lease.events.append(ev)
    if "provider" in ev:
        p = m.provider(str(ev["provider"]))
        p.events.append(ev)
    if name == "Staked":
        m.provider(ev["provider"]).staked = int(ev["totalStake"])
    elif name == "UnbondRequested":
        p = m.provider(ev["provider"])
        p.unbonding = int(ev["totalUnbonding"])
        p.staked -= int(ev["amount"])
    elif name == "Unbonded":
        p = m.provider(ev["provider"])
        p.unbonding = max(0, p.unbonding - int(ev["amount"]))
    elif name == "Registered":
        m.provider(ev["provider"]).registered = True
    elif name in ("CollateralLocked", "CollateralUnlocked"):
        m.provider(ev["provider"]).locked = int(ev["totalLocked"])
    elif name == "Slashed":
        p = m.provider(ev["provider"])
        p.slashed += int(ev["amount"])
        p.staked -= int(ev["amount"])
    elif lease is not None:
        _apply_lease(m, lease, name, ev)


def _apply_lease(m: Market, lease: LeaseView, name: str, ev: Event) -> None:
    if name == "LeaseOpened":
        lease.provider, lease.consumer = str(ev["provider"]), str(ev["consumer"])
        lease.offer = hex0x(ev["offerHash"])
        lease.gpus, lease.price_per_gpu_second = int(ev["gpus"]), int(ev["pricePerGpuSecond"])
        lease.deposit, lease.started_at, lease.ends_at = int(ev["deposit"]), int(ev["startedAt"]), int(ev["endsAt"])
        lease.opened_tx = str(ev.get("tx", ""))
        m.provider(lease.provider).leases.append(lease.lease_id)
    elif name == "LeaseToppedUp":
        lease.deposit, lease.ends_at = int(ev["deposit"]), int(ev["endsAt"])
    elif name in ("LeaseSettled", "ClaimFinalized"):
        lease.paid += int(ev["amount"])
        lease.fees += int(ev["fee"])
        lease.gpu_seconds = max(lease.gpu_seconds, int(ev["cumulativeGpuSeconds"]))
        lease.settlements += 1
    elif name == "UsageClaimed":
        lease.claims += 1
    elif name == "LivenessChallenged":
        lease.challenges += 1
    elif name in ("LivenessResolved", "EquivocationReported"):
        lease.slashed += int(ev["slashed"])
    elif name == "LeaseClosed":
        lease.status = "closed"
    elif name == "LeaseFinalized":
        lease.status = "finalized"
        lease.refund = int(ev["refund"])


def details(ev: Event) -> list[tuple[str, Any]]:
    """The event's arguments other than block, tx, name and the linked ids, in their order."""
    skip = {"block", "event", "tx", "log_index", *LINKED}
    return [(k, v) for k, v in ev.items() if k not in skip]
