"""What a confirmed escrow log means for this node's leases: a pure mapping from chain events to lease changes."""

from __future__ import annotations

from dataclasses import dataclass

from eth_utils import to_checksum_address

from node.chain.events import ChainEvent
from node.protocol import lease as L


@dataclass(frozen=True, slots=True)
class AdoptProviderLease:
    """A lease of one of our offers opened: start serving it."""

    lease_id: int


@dataclass(frozen=True, slots=True)
class AdoptConsumerOpen:
    """A lease we opened is on-chain (seen in the logs, e.g. after a restart): match it to our open request."""

    event: ChainEvent


@dataclass(frozen=True, slots=True)
class LeaseChange:
    """A change for lease ``lease_id``, in whichever roles this node holds it."""

    lease_id: int
    change: L.Change


LeaseUpdate = AdoptProviderLease | AdoptConsumerOpen | LeaseChange


def lease_updates(ev: ChainEvent, me: str) -> list[LeaseUpdate]:
    """The updates ``ev`` brings to the leases of the wallet ``me`` (0x-hex, any case)."""
    a = ev.args
    if "leaseId" not in a:
        return []
    lid = int(a["leaseId"])
    if ev.name == "LeaseOpened":
        me = me.lower()
        out: list[LeaseUpdate] = []
        if str(a.get("provider", "")).lower() == me:
            out.append(AdoptProviderLease(lid))
        if str(a.get("consumer", "")).lower() == me:
            out.append(AdoptConsumerOpen(ev))
        return out
    change: L.Change | None = None
    if ev.name == "LeaseSettled":
        change = L.ContractReceiveLeaseSettled(lid, int(a["seq"]), int(a["cumulativeGpuSeconds"]), int(a["amount"]),
                                               int(a["fee"]))
    elif ev.name == "SettlementSkipped":
        change = L.ContractReceiveSettleFailed(lid, int(a["seq"]), "skipped: already settled")
    elif ev.name == "LeaseClosed":
        change = L.ContractReceiveLeaseClosed(lid, int(a["closedAt"]), to_checksum_address(a["closedBy"]))
    elif ev.name == "LeaseFinalized":
        change = L.ContractReceiveLeaseFinalized(lid, int(a["refund"]))
    elif ev.name == "LeaseToppedUp":
        change = L.ContractReceiveTopUp(lid, int(a["amount"]), int(a["deposit"]), int(a["endsAt"]))
    elif ev.name == "UsageClaimed":
        change = L.ContractReceiveUsageClaimed(lid, int(a["seq"]), int(a["cumulativeGpuSeconds"]), int(a["readyAt"]))
    elif ev.name == "ClaimDisputed":
        change = L.ContractReceiveClaimDisputed(lid, int(a["claimedSeq"]), int(a["evidenceSeq"]))
    elif ev.name == "ClaimFinalized":
        change = L.ContractReceiveClaimFinalized(lid, int(a["seq"]), int(a["cumulativeGpuSeconds"]),
                                                 int(a["amount"]))
    elif ev.name == "LivenessChallenged":
        change = L.ContractReceiveLivenessChallenged(lid, int(a["deadline"]))
    elif ev.name == "LivenessAnswered":
        change = L.ContractReceiveLivenessAnswered(lid)
    elif ev.name == "LivenessResolved":
        change = L.ContractReceiveLivenessResolved(lid, int(a["slashed"]))
    elif ev.name == "EquivocationReported":
        change = L.ContractReceiveEquivocationReported(lid, to_checksum_address(a["finder"]), int(a["seq"]),
                                                       int(a["slashed"]))
    return [LeaseChange(lid, change)] if change is not None else []


def opened_change(ev: ChainEvent) -> L.ContractReceiveLeaseOpened:
    a = ev.args
    return L.ContractReceiveLeaseOpened(
        lease_id=int(a["leaseId"]), offer_hash=bytes(a["offerHash"]), provider=str(a["provider"]),
        consumer=str(a["consumer"]), gpus=int(a["gpus"]), price_per_gpu_second=int(a["pricePerGpuSecond"]),
        deposit=int(a["deposit"]), started_at=int(a["startedAt"]), ends_at=int(a["endsAt"]))
