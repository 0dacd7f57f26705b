"""Prometheus metrics of the node (I/O edge: the pure core returns values, callers record them here).

Metric objects live in the default registry, so the API's ``/metrics`` endpoint exports them with
``prometheus_client.generate_latest()``.
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram

from node.protocol.offer_validation import ValidationContext, validate_gossip_message
from node.protocol.offers import SignedOffer, SignedWithdrawal
from node.types import Validation

OFFERS_TOTAL = Counter(
    "gpunet_offers_total",
    "Offer and withdrawal messages validated, by verdict and reason.",
    ["result", "reason"],
)
OFFER_BOOK_SIZE = Gauge("gpunet_offer_book_size", "Live offers in the local offer book.")
OFFER_VALIDATION_SECONDS = Histogram(
    "gpunet_offer_validation_seconds",
    "Time to validate one offer message (including signature recovery).",
    buckets=(5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2.5e-3, 1e-2, 0.1),
)


def record_validation(validation: Validation, seconds: float | None = None) -> None:
    OFFERS_TOTAL.labels(result=validation.verdict.value, reason=validation.reason).inc()
    if seconds is not None:
        OFFER_VALIDATION_SECONDS.observe(seconds)


def record_book_size(size: int) -> None:
    OFFER_BOOK_SIZE.set(size)


def validate_and_record(
    data: bytes, ctx: ValidationContext, now: int
) -> tuple[Validation, SignedOffer | SignedWithdrawal | None]:
    """``validate_gossip_message`` timed and counted: the thin impure wrapper the gossip validator calls."""
    start = time.perf_counter()
    result = validate_gossip_message(data, ctx, now)
    record_validation(result[0], time.perf_counter() - start)
    return result
