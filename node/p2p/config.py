"""Configuration of the libp2p layer: one frozen dataclass with typed defaults in one place."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from node.errors import ConfigError
from node.protocol.lease_messages import PROTOCOL_ID as LEASE_PROTOCOL

SYNC_PROTOCOL = "/gpunet/offers-sync/1.0.0"
__all__ = ["DEFAULT_LISTEN", "LEASE_PROTOCOL", "SYNC_PROTOCOL", "GossipParams", "P2PConfig", "offers_topic"]

DEFAULT_LISTEN = ("/ip4/127.0.0.1/tcp/0",)


def offers_topic(chain_id: int, escrow_address: str) -> str:
    """The gossip topic of a deployment (docs/spec.md, "Gossip")."""
    return f"gpunet/{int(chain_id)}/{escrow_address.lower()}/offers/1"


@dataclass(frozen=True, slots=True)
class GossipParams:
    """Gossipsub tuning. Defaults are the standard gossipsub v1.1 values except where noted.

    - ``heartbeat_interval_s``: py-libp2p defaults to 120 s; 1 s is the value of the spec and of go/js-libp2p.
    - ``spam_max_msgs_per_s``: py-libp2p ships a per-forwarder rate limit (10 msgs/topic/s) that silently
      stops forwarding past it, our own publishes included. ``None`` (the default) turns it off: a relay
      forwards on behalf of many providers (the design expects ~35 msgs/s network-wide), so a per-neighbour
      cap would drop honest traffic. Abuse is handled by the validator (per-provider rate limit, IGNORE) and
      by the local REJECT penalty below. Set a number to turn the library limit back on.
    - ``reject_penalty_threshold``: REJECT verdicts from one forwarding peer (decayed by
      ``reject_penalty_decay`` every second) above which the peer is blacklisted in pubsub and disconnected
      for ``ban_s`` seconds, during which its connections are refused and it is not dialled.
    """

    degree: int = 6
    degree_low: int = 4
    degree_high: int = 12
    heartbeat_interval_s: int = 1
    gossip_window: int = 3
    gossip_history: int = 5
    fanout_ttl_s: int = 60
    prune_back_off_s: int = 60
    seen_ttl_s: int = 120
    spam_max_msgs_per_s: float | None = None
    adaptive_gossip: bool = False
    eclipse_protection: bool = True
    max_message_bytes: int = 256 * 1024
    reject_penalty_threshold: float = 50.0
    reject_penalty_decay: float = 0.9
    ban_s: float = 600.0

    def __post_init__(self) -> None:
        if not 0 < self.degree_low <= self.degree <= self.degree_high:
            raise ConfigError("gossip degrees must satisfy 0 < degree_low <= degree <= degree_high")
        if self.heartbeat_interval_s < 1:
            raise ConfigError("heartbeat_interval_s must be >= 1 (py-libp2p takes whole seconds)")
        if not 0 < self.max_message_bytes <= 1024 * 1024 - 4096:
            raise ConfigError("max_message_bytes must be positive and leave room under the 1 MiB RPC cap")
        if not 0.0 <= self.reject_penalty_decay <= 1.0:
            raise ConfigError("reject_penalty_decay must be within [0, 1]")


@dataclass(frozen=True, slots=True)
class P2PConfig:
    """Everything the p2p layer needs; loaded once by the node's config loader."""

    key_path: Path
    topic: str
    listen_addrs: tuple[str, ...] = DEFAULT_LISTEN
    bootstrap: tuple[str, ...] = ()
    mdns: bool = False
    gossip: GossipParams = field(default_factory=GossipParams)
    max_connections: int = 300
    max_connections_per_peer: int = 1
    dial_timeout_s: float = 10.0
    deliver_own_messages: bool = False
    bridge_queue_size: int = 10_000
    sync_page_offers: int = 256
    sync_page_bytes: int = 512 * 1024
    sync_deadline_s: float = 30.0
    stream_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.topic:
            raise ConfigError("topic must not be empty")
        if not self.listen_addrs:
            raise ConfigError("at least one listen address is required")
        for addr in self.bootstrap:
            if "/p2p/" not in addr:
                raise ConfigError(f"bootstrap address needs a /p2p/<peer id> part: {addr}")
        if self.max_connections_per_peer < 1 or self.max_connections < 1:
            raise ConfigError("connection limits must be >= 1")
        if not 1 <= self.sync_page_offers <= 1024:
            raise ConfigError("sync_page_offers must be within [1, 1024]")
        if not 1024 <= self.sync_page_bytes <= 1024 * 1024 - 4096:
            raise ConfigError("sync_page_bytes must be within [1 KiB, 1 MiB - 4 KiB]")
        if self.bridge_queue_size < 1:
            raise ConfigError("bridge_queue_size must be >= 1")
