"""Prometheus metrics of the p2p layer.

Each ``P2PMetrics`` owns its collectors; by default they live in a fresh ``CollectorRegistry`` per node so
that many nodes in one process (tests, benchmarks) never collide on registration. The node's HTTP API passes
its own registry (one node per process) to expose them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class P2PMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.peers = Gauge("gpunet_p2p_peers", "Connected libp2p peers", registry=self.registry)
        self.gossip_messages = Counter(
            "gpunet_gossip_messages_total",
            "Gossip and sync messages by validation verdict and reason",
            ["verdict", "reason"],
            registry=self.registry,
        )
        self.validation_seconds = Histogram(
            "gpunet_gossip_validation_seconds",
            "Time spent in the gossip validator",
            buckets=(1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1),
            registry=self.registry,
        )
        self.bridge_dropped = Counter(
            "gpunet_p2p_bridge_dropped_total",
            "Items dropped at the trio->asyncio bridge because the asyncio queue was full",
            ["kind"],
            registry=self.registry,
        )
        self.peer_bans = Counter(
            "gpunet_p2p_peer_bans_total",
            "Peers blacklisted and disconnected for too many rejected messages",
            registry=self.registry,
        )
        self.stream_errors = Counter(
            "gpunet_p2p_stream_errors_total",
            "Request/response streams closed because of a protocol error",
            ["protocol", "reason"],
            registry=self.registry,
        )
        self.sync_offers = Counter(
            "gpunet_p2p_sync_offers_total",
            "Offer blobs served to / received from late joiners",
            ["direction"],
            registry=self.registry,
        )
