"""Prometheus metrics of the p2p layer.

Each ``P2PMetrics`` owns its collectors; by default they live in a fresh ``CollectorRegistry`` per node so
that many nodes in one process (tests, benchmarks) never collide on registration. The node's HTTP API exports
that registry next to the default one.

``gossip_messages`` is the one count of validated messages: every gossiped, synced or locally published message
is judged once by the host, which increments it once with the verdict and its reason.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class P2PMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.peers = Gauge("gpunet_p2p_peers", "Connected libp2p peers", registry=self.registry)
        self.gossip_messages = Counter(
            "gpunet_gossip_messages_total",
            "Gossiped, synced and locally published messages by validation verdict and reason",
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
        self.banned_connections_refused = Counter(
            "gpunet_p2p_banned_connections_refused_total",
            "Connections from (inbound) or dials to (outbound) a peer while it is banned, refused or closed",
            ["direction"],
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

    def record_verdict(self, verdict: str, reason: str) -> None:
        self.gossip_messages.labels(verdict, reason).inc()

    def verdict_counts(self) -> dict[str, int]:
        """``{"<verdict>:<reason>": count}`` read back from ``gossip_messages`` (for the status API)."""
        out: dict[str, int] = {}
        for metric in self.gossip_messages.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    out[f"{sample.labels['verdict']}:{sample.labels['reason']}"] = int(sample.value)
        return out
