"""Cached view of provider stake and offer nonces, refreshed from contract events (no RPC per gossip message).

The gossip validator reads it synchronously from the libp2p thread; only the asyncio side writes it, replacing whole
entries (dict assignment is atomic), so readers never see a half-updated provider.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from node.chain.events import ChainEvent
from node.chain.proxies import Escrow, Staking

STAKE_EVENTS = frozenset({"Staked", "UnbondRequested", "Unbonded", "Registered", "CollateralLocked",
                          "CollateralUnlocked", "Slashed"})


@dataclass(frozen=True, slots=True)
class ProviderStake:
    registered: bool
    free: int
    locked: int
    node_key: bytes


def _raw(address: str) -> bytes:
    return bytes.fromhex(address[2:])


class StakeCache:
    """Implements the validator's ``StakeView`` and ``NonceView`` ports (raw 20-byte addresses)."""

    def __init__(self) -> None:
        self._stakes: dict[bytes, ProviderStake] = {}
        self._nonces: dict[bytes, int] = {}
        self.listeners: list[Callable[[bytes, ProviderStake], None]] = []
        self.nonce_listeners: list[Callable[[bytes, int], None]] = []

    # ports
    def is_registered(self, provider: bytes) -> bool:
        s = self._stakes.get(provider)
        return s is not None and s.registered

    def free_stake(self, provider: bytes) -> int:
        s = self._stakes.get(provider)
        return s.free if s is not None else 0

    def min_nonce(self, provider: bytes) -> int:
        return self._nonces.get(provider, 0)

    def node_key(self, provider: bytes) -> bytes | None:
        s = self._stakes.get(provider)
        return s.node_key if s is not None else None

    def get(self, provider: bytes) -> ProviderStake | None:
        return self._stakes.get(provider)

    # writers (asyncio side)
    def set_stake(self, provider: bytes, stake: ProviderStake) -> None:
        self._stakes[provider] = stake
        for cb in self.listeners:
            cb(provider, stake)

    def raise_nonce(self, provider: bytes, nonce: int) -> None:
        if nonce > self._nonces.get(provider, 0):
            self._nonces[provider] = nonce
            for cb in self.nonce_listeners:
                cb(provider, nonce)

    async def refresh(self, staking: Staking, address: str) -> ProviderStake:
        stake = ProviderStake(
            registered=await staking.is_registered(address),
            free=await staking.free_stake(address),
            locked=await staking.locked_stake(address),
            node_key=await staking.node_key(address),
        )
        self.set_stake(_raw(address), stake)
        return stake

    async def on_event(self, event: ChainEvent, staking: Staking, escrow: Escrow) -> None:
        if event.name in STAKE_EVENTS and "provider" in event.args:
            await self.refresh(staking, event.args["provider"])
        elif event.name == "OffersCancelled":
            self.raise_nonce(_raw(event.args["provider"]), int(event.args["minNonce"]))


class StakeHistory:
    """What the logs before a restarted node's cursor said about providers: who had stake events, and each one's
    highest offer-nonce floor. The cache is kept in memory only, so at start ``restore`` brings it back from these
    (stake read fresh from the contract); the log poller then carries on from its cursor. Without it a restarted
    node takes every provider it has not seen change since for unregistered, and cancelled offers for live."""

    def __init__(self) -> None:
        self.providers: set[str] = set()
        self.floors: dict[str, int] = {}

    def see(self, event: object) -> None:
        if not isinstance(event, ChainEvent) or "provider" not in event.args:
            return
        provider = str(event.args["provider"])
        if event.name in STAKE_EVENTS:
            self.providers.add(provider)
        elif event.name == "OffersCancelled":
            self.floors[provider] = max(self.floors.get(provider, 0), int(event.args["minNonce"]))

    async def restore(self, cache: StakeCache, staking: Staking) -> int:
        """Set the floors and read each provider's stake; returns the providers read."""
        for provider, floor in self.floors.items():
            cache.raise_nonce(_raw(provider), floor)
        for provider in sorted(self.providers):
            await cache.refresh(staking, provider)
        return len(self.providers)
