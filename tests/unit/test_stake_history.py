"""A restarted node's stake cache: brought back from the logs before its cursor (who had stake events, the highest
offer-nonce floor of each), with each provider's stake read fresh from the contract."""

from __future__ import annotations

from typing import Any

from node.chain.events import ChainEvent, Reorged
from node.chain.stake_view import StakeCache, StakeHistory

A = "0x" + "aa" * 20
B = "0x" + "bb" * 20
C = "0x" + "cc" * 20


def ev(name: str, **args: Any) -> ChainEvent:
    return ChainEvent(name=name, address="0x" + "11" * 20, args=args, block_number=1, block_hash="0x00",
                      tx_hash="0x01", log_index=0)


class ContractStaking:
    """What the staking contract answers now; counts the reads."""

    def __init__(self, registered: set[str]) -> None:
        self.registered = registered
        self.reads: list[str] = []

    async def is_registered(self, address: str) -> bool:
        self.reads.append(address)
        return address in self.registered

    async def free_stake(self, address: str) -> int:
        return 500 if address in self.registered else 0

    async def locked_stake(self, address: str) -> int:
        return 0

    async def node_key(self, address: str) -> bytes:
        return b"\x07" * 32


async def test_a_restarted_node_knows_every_provider_and_nonce_floor_the_earlier_logs_named():
    history = StakeHistory()
    for e in (ev("Staked", provider=A, amount=1), ev("Registered", provider=A), Reorged(3),
              ev("OffersCancelled", provider=A, minNonce=5), ev("OffersCancelled", provider=A, minNonce=3),
              ev("Staked", provider=B, amount=1), ev("LeaseOpened", leaseId=1, provider=C)):
        history.see(e)
    cache = StakeCache()
    floors: list[tuple[bytes, int]] = []
    cache.nonce_listeners.append(lambda p, n: floors.append((p, n)))
    staking = ContractStaking(registered={A})
    assert not cache.is_registered(bytes.fromhex(A[2:]))  # what a restart left: nothing
    assert await history.restore(cache, staking) == 2  # type: ignore[arg-type]
    assert cache.is_registered(bytes.fromhex(A[2:])) and cache.free_stake(bytes.fromhex(A[2:])) == 500
    assert not cache.is_registered(bytes.fromhex(B[2:]))  # read from the contract: unregistered since
    assert cache.get(bytes.fromhex(B[2:])) is not None
    assert cache.min_nonce(bytes.fromhex(A[2:])) == 5 and floors == [(bytes.fromhex(A[2:]), 5)]
    assert sorted(staking.reads) == [A, B]  # a lease event's provider is no stake event: not read
