#!/usr/bin/env python3
"""Market data benchmark: query latency with 100,000 live offers and a week of lease logs.

Loads ``--offers`` live offers over 8 GPU models and 6 regions, ``--leases`` leases (opened, settled a few times,
most closed) spread over a week, then times ``--queries`` mixed queries (all models; one model; one model in one
region; one key's summary) with the 1 h / 24 h / 7 d windows, and the cost of one offer change at that size.

Usage: .venv/bin/python scripts/bench_market.py [--offers 100000] [--leases 20000] [--queries 5000] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.protocol.market_data import (
    LeaseClosedLog,
    LeaseOpenedLog,
    LeaseSettledLog,
    MarketData,
    OfferGone,
    OfferLive,
)
from node.protocol.offers import Offer, gpu_model_from_name

NOW = 1_700_000_000
WEEK = 7 * 86_400
MODELS = ["H100-80GB", "H200-141GB", "A100-80GB", "A100-40GB", "L40S", "RTX4090", "B200", "MI300X"]
REGIONS = ["eu-west", "eu-central", "us-east", "us-west", "ap-south", "ap-east"]


def make_offer(rng: random.Random, i: int) -> tuple[bytes, Offer, str]:
    model = MODELS[i % len(MODELS)]
    offer = Offer(
        provider=i.to_bytes(20, "big"),
        nonce=1,
        gpu_model=gpu_model_from_name(model),
        gpu_count=rng.choice((1, 2, 4, 8)),
        vram_mib=81_920,
        price_per_gpu_second=rng.randint(200_000, 1_200_000),
        min_duration=60,
        max_duration=86_400,
        expires_at=NOW + 3600,
        spec_hash=b"\x00" * 32,
    )
    return i.to_bytes(32, "big"), offer, REGIONS[rng.randrange(len(REGIONS))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--offers", type=int, default=100_000)
    ap.add_argument("--leases", type=int, default=20_000)
    ap.add_argument("--queries", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    args = ap.parse_args()
    rng = random.Random(args.seed)

    md = MarketData()
    offers = [make_offer(rng, i) for i in range(args.offers)]
    t0 = time.perf_counter()
    for oid, offer, region in offers:
        md.apply(OfferLive(oid, offer, region))
    load_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    logs = []
    for lease_id in range(args.leases):
        oid, offer, _ = offers[rng.randrange(len(offers))]
        start = NOW - WEEK + lease_id * WEEK // args.leases
        price = offer.price_per_gpu_second
        logs.append(LeaseOpenedLog(lease_id, offer.provider, oid, 1, price, start, start + 7200, start))
        for k in range(1, 4):
            logs.append(LeaseSettledLog(lease_id, offer.provider, 600 * k, 600 * price, start + 600 * k))
        if rng.random() < 0.9:
            logs.append(LeaseClosedLog(lease_id, offer.provider, start + 1800))
    logs.sort(key=lambda c: c.at)
    md.apply_all(logs)
    logs_s = time.perf_counter() - t0

    kinds = ("all models", "one model", "model+region", "summary")
    lat: dict[str, list[float]] = {k: [] for k in kinds}
    for q in range(args.queries):
        kind = kinds[q % len(kinds)]
        model = MODELS[rng.randrange(len(MODELS))]
        region = REGIONS[rng.randrange(len(REGIONS))]
        t = time.perf_counter()
        if kind == "all models":
            out = md.query(now=NOW)
        elif kind == "one model":
            out = md.query(now=NOW, gpu_model=model)
        elif kind == "model+region":
            out = md.query(now=NOW, gpu_model=model, region=region)
        else:
            s = md.summary(model, now=NOW)
            out = [] if s is None else [s]
        lat[kind].append(time.perf_counter() - t)
        assert out
    every = sorted(x for v in lat.values() for x in v)

    churn = []
    for i in range(2000):
        oid, offer, region = offers[i]
        t = time.perf_counter()
        md.apply(OfferGone(oid))
        md.apply(OfferLive(oid, offer, region))
        churn.append(time.perf_counter() - t)
    churn.sort()

    def pct(xs: list[float], p: float) -> float:
        return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] * 1e3

    print(f"live offers: {md.offers():,}; leases kept: {md.leases_known():,}")
    print(f"load {args.offers:,} offers: {load_s:.2f} s; apply {len(logs):,} lease logs: {logs_s:.2f} s")
    for kind, xs in lat.items():
        xs.sort()
        print(f"query {kind:13s} p50 {pct(xs, 50):.3f} ms  p99 {pct(xs, 99):.3f} ms  (n={len(xs)})")
    print(f"query (all kinds)   p50 {pct(every, 50):.3f} ms  p99 {pct(every, 99):.3f} ms  max {every[-1] * 1e3:.3f} ms")
    print(f"offer change (gone + live) p50 {pct(churn, 50):.3f} ms  p99 {pct(churn, 99):.3f} ms "
          f"mean {statistics.fmean(churn) * 1e3:.3f} ms")
    if args.json:
        res = {"offers": args.offers, "leases": args.leases, "queries": args.queries, "load_s": load_s,
               "logs_s": logs_s,
               "query": {k: {"p50_ms": pct(xs, 50), "p99_ms": pct(xs, 99), "n": len(xs)} for k, xs in lat.items()},
               "query_all": {"p50_ms": pct(every, 50), "p99_ms": pct(every, 99), "max_ms": every[-1] * 1e3},
               "offer_change": {"p50_ms": pct(churn, 50), "p99_ms": pct(churn, 99)}}
        args.json.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
