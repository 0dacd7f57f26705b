"""What an escrow log means for this node's leases (a pure mapping)."""

from __future__ import annotations

from eth_utils import to_checksum_address

from node.chain.events import ChainEvent
from node.leases.chain_events import AdoptConsumerOpen, AdoptProviderLease, LeaseChange, lease_updates, opened_change
from node.protocol import lease as L

ME = "0x" + "aa" * 20
OTHER = "0x" + "bb" * 20
CLOSER = "0x" + "cc" * 20


def ev(name: str, **args: object) -> ChainEvent:
    return ChainEvent(name, "0xescrow", dict(args), 1, "0x00", "0x00", 0)


def opened(provider: str, consumer: str) -> ChainEvent:
    return ev("LeaseOpened", leaseId=7, offerHash=b"\x01" * 32, provider=provider, consumer=consumer, gpus=2,
              pricePerGpuSecond=10, deposit=1_000, startedAt=100, endsAt=150)


def test_lease_opened_adopts_in_each_role_we_hold():
    assert lease_updates(opened(to_checksum_address(ME), OTHER), ME) == [AdoptProviderLease(7)]
    both = opened(ME, ME)
    assert lease_updates(both, ME) == [AdoptProviderLease(7), AdoptConsumerOpen(both)]
    assert lease_updates(opened(OTHER, OTHER), ME) == []
    assert opened_change(both) == L.ContractReceiveLeaseOpened(7, b"\x01" * 32, ME, ME, 2, 10, 1_000, 100, 150)


def test_lease_logs_become_changes():
    cases = [
        (ev("LeaseSettled", leaseId=7, seq=2, cumulativeGpuSeconds=30, amount=300, fee=3),
         L.ContractReceiveLeaseSettled(7, 2, 30, 300, 3)),
        (ev("SettlementSkipped", leaseId=7, seq=2), L.ContractReceiveSettleFailed(7, 2, "skipped: already settled")),
        (ev("LeaseClosed", leaseId=7, closedAt=140, closedBy=CLOSER),
         L.ContractReceiveLeaseClosed(7, 140, to_checksum_address(CLOSER))),
        (ev("LeaseFinalized", leaseId=7, refund=500), L.ContractReceiveLeaseFinalized(7, 500)),
        (ev("LeaseToppedUp", leaseId=7, amount=100, deposit=1_100, endsAt=155),
         L.ContractReceiveTopUp(7, 100, 1_100, 155)),
    ]
    for log, change in cases:
        assert lease_updates(log, ME) == [LeaseChange(7, change)]


def test_other_logs_change_nothing():
    assert lease_updates(ev("Staked", provider=ME, amount=5), ME) == []
    assert lease_updates(ev("SomethingNew", leaseId=7), ME) == []
