"""Fault-path rules of the pure lease state machine, one change at a time."""

from __future__ import annotations

from eth_account import Account
from eth_utils import keccak

from node.crypto import eip712
from node.protocol.lease import (
    ActionOpenLease,
    CloseReason,
    ContractReceiveLeaseClosed,
    ContractReceiveLeaseOpened,
    ContractReceiveLivenessChallenged,
    ContractReceiveLivenessResolved,
    ContractSendChallenge,
    ContractSendResolve,
    LeaseConfig,
    LeaseStatus,
    OfferTerms,
    TimerTick,
    transition,
)

PROVIDER = Account.from_key(keccak(b"provider wallet")).address
CONSUMER = "0x" + "cc" * 20
DOMAIN = eip712.Domain(31337, "0x5FbDB2315678afecb367f032d93F642f64180aa3")
START = 1_700_000_000
LEASE = 1
TERMS = OfferTerms(b"\x0f" * 32, PROVIDER, b"\x02" * 32, 10, 86_400)


def test_a_replayed_liveness_resolution_is_not_slashed_twice():
    """The consumer resolves a missed deadline; reading the resolution's log again (a node that stopped while it
    read it) must not count the slash twice (it did: the sent resolve kept the log from being seen as a replay)."""
    state, _ = transition(None, ActionOpenLease(TERMS, CONSUMER, 2, 12_000, DOMAIN, b"\x01" * 32,
                                                LeaseConfig(challenge_after_ms=20_000)))
    state, _ = transition(state, ContractReceiveLeaseOpened(LEASE, TERMS.offer_hash, PROVIDER, CONSUMER, 2, 10,
                                                            12_000, START, START + 600))
    state, events = transition(state, TimerTick((START + 30) * 1000))  # the provider is silent
    assert [e for e in events if isinstance(e, ContractSendChallenge)]
    state, _ = transition(state, ContractReceiveLivenessChallenged(LEASE, START + 45))
    state, events = transition(state, TimerTick((START + 45) * 1000))
    assert [e for e in events if isinstance(e, ContractSendResolve)] == [ContractSendResolve(LEASE, START + 45)]
    state, _ = transition(state, ContractReceiveLeaseClosed(LEASE, START + 46, CONSUMER))
    resolved = ContractReceiveLivenessResolved(LEASE, 1_500)
    state, _ = transition(state, resolved)
    assert state.faults.slashed == 1_500 and state.close_reason is CloseReason.LIVENESS_SLASHED
    assert state.status is LeaseStatus.CLOSED
    again, events = transition(state, resolved)
    assert again == state and events == []
