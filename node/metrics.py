"""Prometheus metrics of the node outside the p2p layer (I/O edge: the pure core returns values, callers record
them here).

Metric objects live in the default registry, so the API's ``/metrics`` endpoint exports them with
``prometheus_client.generate_latest()``. Gossip and sync messages are counted by the p2p layer, once per message
and verdict (``gpunet_gossip_messages_total{verdict,reason}``, see ``node.p2p.metrics``).
"""

from __future__ import annotations

from prometheus_client import Gauge

OFFER_BOOK_SIZE = Gauge("gpunet_offer_book_size", "Live offers in the local offer book.")


def record_book_size(size: int) -> None:
    OFFER_BOOK_SIZE.set(size)
