"""Prometheus metrics of the node outside the p2p layer (I/O edge: the pure core returns values, callers record
them here).

Two kinds:

- pushed: ``gpunet_offer_book_size`` here, ``gpunet_chain_*`` in ``node.chain.rpc``, ``gpunet_p2p_*`` and
  ``gpunet_gossip_messages_total`` in ``node.p2p.metrics`` (one per message and verdict);
- read when scraped (:class:`NodeCollector`): what the node's own records already hold, so nothing can drift from
  them: leases by role and status, settlements and their gas, earnings, transaction intents by kind and status, fee
  bumps, the chain head, and a build-info series.

Label names are the same everywhere: ``role`` (consumer | provider), ``status``, ``kind`` (the contract function of
a transaction), ``reason``. Amounts of the token are in gDEV (base units / 1e18). No ``_created`` series are
exported (``disable_created_metrics``).
"""

from __future__ import annotations

import platform
from collections.abc import Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Gauge, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

disable_created_metrics()

VERSION = "0.1.0"
SETTLE_KINDS = ("settle", "settleBatch")
E18 = 10**18

OFFER_BOOK_SIZE = Gauge("gpunet_offer_book_size", "Live offers in the local offer book.")


def record_book_size(size: int) -> None:
    OFFER_BOOK_SIZE.set(size)


class _Db(Protocol):
    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[Any]: ...


class MetricsSource(Protocol):
    """What the collector reads from a running node (``node.service.Node``)."""

    @property
    def db(self) -> _Db: ...

    def leases(self) -> list[dict[str, Any]]: ...

    def metrics_labels(self) -> dict[str, str]: ...

    def chain_head(self) -> int | None: ...


class NodeCollector(Collector):
    def __init__(self, node: MetricsSource) -> None:
        self.node = node

    def collect(self) -> Iterator[Any]:
        info = InfoMetricFamily("gpunet_build", "The node's version, Python and the chain and escrow it serves.")
        info.add_metric([], {"version": VERSION, "python": platform.python_version(), **self.node.metrics_labels()})
        yield info

        leases = GaugeMetricFamily("gpunet_leases", "Leases this node holds, by role and status.",
                                   labels=["role", "status"])
        paid = GaugeMetricFamily("gpunet_lease_paid_gdev",
                                 "Settled payments of this node's leases (gDEV, fees included), by role.",
                                 labels=["role"])
        earnings = GaugeMetricFamily("gpunet_earnings_gdev",
                                     "What this node earned as a provider: settled payments less fees (gDEV).")
        counts: dict[tuple[str, str], int] = {}
        paid_by_role = {"consumer": 0, "provider": 0}
        earned = 0
        for v in self.node.leases():
            counts[(v["role"], v["status"])] = counts.get((v["role"], v["status"]), 0) + 1
            paid_by_role[v["role"]] = paid_by_role.get(v["role"], 0) + int(v["paid"])
            if v["role"] == "provider":
                earned += int(v["paid"]) - int(v["fees"])
        for (role, status), n in sorted(counts.items()):
            leases.add_metric([role, status], n)
        for role, amount in sorted(paid_by_role.items()):
            paid.add_metric([role], amount / E18)
        earnings.add_metric([], earned / E18)
        yield leases
        yield paid
        yield earnings

        intents = GaugeMetricFamily("gpunet_tx_intents", "Transactions this node's wallet sent or meant to send, "
                                    "by contract function and status.", labels=["kind", "status"])
        bumps = CounterMetricFamily("gpunet_tx_fee_bumps", "Pending transactions re-signed with higher fees.",
                                    labels=["kind"])
        settlements = CounterMetricFamily("gpunet_settlements", "Settlement transactions mined (settle and "
                                          "settleBatch).", labels=["kind"])
        settle_gas = CounterMetricFamily("gpunet_settlement_gas_used", "Gas used by mined settlement transactions.",
                                         labels=["kind"])
        bump_counts: dict[str, int] = {}
        for row in self.node.db.query(
                "SELECT kind, status, COUNT(*) AS n, COALESCE(SUM(gas_used), 0) AS gas, "
                "SUM(LENGTH(replaced) - LENGTH(REPLACE(replaced, ',', '')) + (replaced != '')) AS bumps "
                "FROM tx_intents GROUP BY kind, status ORDER BY kind, status"):
            kind, status = str(row["kind"]), str(row["status"])
            intents.add_metric([kind, status], int(row["n"]))
            bump_counts[kind] = bump_counts.get(kind, 0) + int(row["bumps"] or 0)
            if kind in SETTLE_KINDS and status == "mined":
                settlements.add_metric([kind], int(row["n"]))
                settle_gas.add_metric([kind], int(row["gas"]))
        for kind, n in sorted(bump_counts.items()):
            bumps.add_metric([kind], n)
        yield intents
        yield bumps
        yield settlements
        yield settle_gas

        head = self.node.chain_head()
        if head is not None:
            g = GaugeMetricFamily("gpunet_chain_head_block", "The latest block number the chain endpoint reported.")
            g.add_metric([], head)
            yield g


def node_registry(node: MetricsSource) -> CollectorRegistry:
    """A registry holding the collector of one node (one per node, so tests can run several in one process)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node))
    return registry
