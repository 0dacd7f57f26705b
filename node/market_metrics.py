"""Prometheus gauges of the market this node sees, per GPU model and region (region ``*``: the model over all
regions), read from ``MarketFeed`` when scraped:

- ``gpunet_market_gpus_offered`` / ``gpunet_market_gpus_free``: GPUs on live offers, and those no lease holds;
- ``gpunet_market_median_price_per_gpu_hour``: median live offer price, token base units per GPU-hour (only for a
  market with live offers);
- ``gpunet_market_utilisation``: GPUs leased / (free + leased), 0..1.

Each node gets its own registry (``market_registry``), which the API's ``/metrics`` exports with the others.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from node.market_feed import MarketFeed
from node.protocol.market_data import ALL_REGIONS, MarketSummary

LABELS = ("model", "region")


class MarketCollector(Collector):
    def __init__(self, feed: MarketFeed, clock: Callable[[], float] = time.time) -> None:
        self.feed = feed
        self.clock = clock

    def summaries(self) -> list[MarketSummary]:
        self.feed.sync()
        data, now = self.feed.data, int(self.clock())
        regions = self.feed.regions | {ALL_REGIONS}
        out: list[MarketSummary] = []
        for region in sorted(regions):
            out.extend(data.query(now=now, region=region, windows=()))
        return out

    def collect(self) -> Iterator[Metric]:
        offered = GaugeMetricFamily("gpunet_market_gpus_offered", "GPUs on live offers.", labels=LABELS)
        free = GaugeMetricFamily("gpunet_market_gpus_free", "GPUs on live offers that no lease holds.",
                                 labels=LABELS)
        median = GaugeMetricFamily("gpunet_market_median_price_per_gpu_hour",
                                   "Median live offer price, token base units per GPU-hour.", labels=LABELS)
        util = GaugeMetricFamily("gpunet_market_utilisation", "GPUs leased / (free + leased).", labels=LABELS)
        for s in self.summaries():
            labels = [s.gpu_model, s.region]
            offered.add_metric(labels, s.gpus_offered)
            free.add_metric(labels, s.gpus_free)
            util.add_metric(labels, s.utilisation)
            if s.prices is not None:
                median.add_metric(labels, s.prices.median)
        yield from (offered, free, median, util)


def market_registry(feed: MarketFeed) -> CollectorRegistry:
    """A registry holding the market gauges of ``feed``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MarketCollector(feed))
    return registry
