"""Immutable values that cross the trio/asyncio line. Only bytes, ints and strs: no libp2p objects."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GossipMessage:
    """An accepted offer blob, from gossip or from a sync page.

    ``sender`` is the peer that handed it to us (the gossip forwarder or the sync responder); ``origin`` is
    the peer that signed the pubsub envelope (for sync: the responder, as the original envelope is gone).
    ``via`` is ``"gossip"`` or ``"sync"``.
    """

    data: bytes
    sender: str
    topic: str
    received_at_ns: int
    origin: str = ""
    via: str = "gossip"


@dataclass(frozen=True, slots=True)
class PeerInfo:
    peer_id: str
    addrs: tuple[str, ...]
    in_mesh: bool = False
