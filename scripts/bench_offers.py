#!/usr/bin/env python3
"""Offer pipeline benchmark.

(a) validation throughput on one core, signature recovery included: pre-generated signed offers from distinct
    signers, each with its own spec, validated against a real (empty) OfferBook's published snapshot (what the
    node's validator reads); "validate + insert" also republishes the snapshot after every insert;
(b) offer book query latency with 100,000 live offers: p50/p99 over a few thousand mixed queries, and the cost of
    one mutation (insert + republishing the snapshot) at that size.

(c) the reference, in the same run: coincurve's public-key recovery alone, on as many signatures.

Usage: .venv/bin/python scripts/bench_offers.py [--offers 5000] [--rounds 5] [--book 100000 | --books 1000,10000]
       [--queries 5000] [--json PATH]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coincurve import PrivateKey

from node.crypto.eip712 import Domain
from node.protocol import offers as O
from node.protocol.offer_validation import (
    OfferRules,
    ValidationContext,
    validate_offer_message_with_id,
)
from node.protocol.offerbook import OfferBook, OfferQuery
from node.protocol.offers import Offer, OfferSpec, SignedOffer

NOW = 1_700_000_000
DOMAIN = Domain(31337, "0x" + "ab" * 20)
MODELS = ["H100-80GB", "H200-141GB", "A100-80GB", "A100-40GB", "L40S", "RTX4090", "B200", "MI300X"]
VRAM = {
    "H100-80GB": 81920,
    "H200-141GB": 144384,
    "A100-80GB": 81920,
    "A100-40GB": 40960,
    "L40S": 46068,
    "RTX4090": 24564,
    "B200": 184320,
    "MI300X": 196608,
}
BASE_PRICE = {m: 10_000 * (i + 1) for i, m in enumerate(MODELS)}
REGIONS = ["eu-west", "eu-central", "us-east", "us-west", "ap-south", "ap-northeast"]


class Chain:
    def is_registered(self, provider: bytes) -> bool:
        return True

    def free_stake(self, provider: bytes) -> int:
        return 10**30

    def min_nonce(self, provider: bytes) -> int:
        return 0


def pin_one_core() -> str:
    try:
        cpu = max(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    except (AttributeError, OSError):
        return "not pinned"


def gen_messages(n: int, rng: random.Random) -> list[bytes]:
    out = []
    for i in range(n):
        key = rng.randbytes(32)
        pub = PrivateKey(key).public_key.format(compressed=False)[1:]
        addr = O.keccak256(pub)[12:]
        model = rng.choice(MODELS)
        spec = OfferSpec(
            rng.choice(REGIONS),
            64,
            512,
            "550.54.15",
            "12.4",
            "nvlink",
            {"fp16_tflops": rng.randrange(100, 2000), "provider_seq": i},
            False,
        )
        offer = Offer(
            addr,
            rng.randrange(1, 2**64),
            O.gpu_model_from_name(model),
            rng.choice([1, 2, 4, 8]),
            VRAM[model],
            BASE_PRICE[model] + rng.randrange(5000),
            60,
            86_400,
            NOW + rng.randrange(60, 3600),
            spec.spec_hash(),
        )
        out.append(O.encode_offer_message(DOMAIN, O.sign_offer(offer, spec, key, DOMAIN)))
    return out


def bench_raw_recover(n: int, rounds: int, rng: random.Random) -> dict[str, float]:
    """The reference: coincurve's secp256k1 public-key recovery alone (and with the keccak of the key that gives
    the signer's address), over ``n`` distinct signatures of 32-byte digests."""
    from coincurve import PublicKey

    sigs = []
    for _ in range(n):
        digest = rng.randbytes(32)
        sigs.append((PrivateKey(rng.randbytes(32)).sign_recoverable(digest, hasher=None), digest))
    recover, with_addr = [], []
    for _ in range(rounds):
        c0 = time.thread_time()
        for sig, digest in sigs:
            PublicKey.from_signature_and_message(sig, digest, hasher=None)
        recover.append(n / (time.thread_time() - c0))
        c0 = time.thread_time()
        for sig, digest in sigs:
            O.keccak256(PublicKey.from_signature_and_message(sig, digest, hasher=None).format(False)[1:])
        with_addr.append(n / (time.thread_time() - c0))
    print(f"    raw coincurve recover: median {statistics.median(recover):8.0f} /s; with keccak address "
          f"{statistics.median(with_addr):8.0f} /s (CPU)")
    return {"recover_per_cpu_s": statistics.median(recover), "recover_per_cpu_s_all": recover,
            "recover_address_per_cpu_s": statistics.median(with_addr)}


def bench_validation(msgs: list[bytes], rounds: int) -> dict[str, object]:
    chain = Chain()
    rates, cpu_rates = [], []
    for _ in range(rounds):
        book = OfferBook(DOMAIN)
        ctx = ValidationContext(DOMAIN, chain, chain, book.published, OfferRules(rate_burst=1e12))
        t0, c0 = time.perf_counter(), time.thread_time()
        for m in msgs:
            v, _, _ = validate_offer_message_with_id(m, ctx, NOW)
            if not v.accepted:
                raise SystemExit(f"unexpected verdict {v}")
        cpu_rates.append(len(msgs) / (time.thread_time() - c0))
        rates.append(len(msgs) / (time.perf_counter() - t0))
    # validate + insert into the book (what the node does per accepted message; each insert republishes)
    book = OfferBook(DOMAIN)
    ctx = ValidationContext(DOMAIN, chain, chain, book.published, OfferRules(rate_burst=1e12))
    t0 = time.perf_counter()
    for m in msgs:
        v, so, oid = validate_offer_message_with_id(m, ctx, NOW)
        assert so is not None
        book.insert(so, m, oid)
    with_insert = len(msgs) / (time.perf_counter() - t0)
    # re-gossip of known offers (duplicate path)
    t0 = time.perf_counter()
    for m in msgs:
        validate_offer_message_with_id(m, ctx, NOW)
    dup_rate = len(msgs) / (time.perf_counter() - t0)
    print(f"(a) validation, {len(msgs)} offers from distinct signers, {rounds} rounds, one core")
    print(
        f"    validate only      : best {max(rates):8.0f} /s   median {statistics.median(rates):8.0f} /s"
        f"   ({1e6 / max(rates):.1f} us/offer at best)"
    )
    print(
        f"    validate only (CPU): best {max(cpu_rates):8.0f} /s   median {statistics.median(cpu_rates):8.0f} /s"
        "   (per CPU-second of this thread: insensitive to other processes on the core)"
    )
    print(f"    validate + insert  : {with_insert:8.0f} /s")
    print(f"    duplicate re-gossip: {dup_rate:8.0f} /s")
    return {"offers": len(msgs), "rounds": rounds, "validate_per_s": statistics.median(rates),
            "validate_per_s_all": rates, "validate_per_cpu_s": statistics.median(cpu_rates),
            "validate_per_cpu_s_all": cpu_rates, "validate_insert_per_s": with_insert, "duplicate_per_s": dup_rate}


def build_book(n: int, rng: random.Random) -> OfferBook:
    specs = [
        OfferSpec(r, c, c * 8, "550.54.15", "12.4", ic)
        for r in REGIONS
        for c in (16, 32, 64, 128)
        for ic in ("nvlink", "pcie")
    ]
    book = OfferBook(DOMAIN)
    blob = b"\x00" * 480  # stand-in for the envelope bytes (sizes as on the wire)
    providers = [rng.randbytes(20) for _ in range(n // len(MODELS) + 1)]

    def random_offer(p: bytes, model: str, nonce: int) -> SignedOffer:
        spec = rng.choice(specs)
        dmin = rng.choice([60, 600, 3600])
        offer = Offer(
            p,
            nonce,
            O.gpu_model_from_name(model),
            rng.choice([1, 1, 2, 4, 8]),
            VRAM[model],
            BASE_PRICE[model] + rng.randrange(50_000),
            dmin,
            dmin * rng.choice([1, 10, 100, 1000]),
            NOW + rng.randrange(60, 3600),
            spec.spec_hash(),
        )
        return SignedOffer(offer, b"\x00" * 65, spec)

    t0 = time.perf_counter()
    i = 0
    with book.batch():  # one snapshot at the end, as when a node loads its store
        for p in providers:
            for model in MODELS:
                if i >= n:
                    break
                book.insert(random_offer(p, model, 1), blob, rng.randbytes(32))
                i += 1
    dt = time.perf_counter() - t0
    print(
        f"(b) built book: {len(book)} live offers, {book.providers()} providers, "
        f"{book.stats()['buckets']} buckets in {dt:.1f} s ({len(book) / dt:.0f} inserts/s)"
    )
    # re-announcements into the full book, one at a time: each replaces an offer and republishes the snapshot
    fresh = [random_offer(rng.choice(providers), rng.choice(MODELS), 2) for _ in range(1000)]
    ids = [rng.randbytes(32) for _ in fresh]
    t0 = time.perf_counter()
    for so, oid in zip(fresh, ids, strict=True):
        book.insert(so, blob, oid)
    per = (time.perf_counter() - t0) / len(fresh)
    print(f"    insert + republish into the full book: {per * 1e6:.1f} us per mutation")
    return book


def random_query(rng: random.Random) -> OfferQuery:
    model = rng.choice(MODELS)
    return OfferQuery(
        gpu_model=O.gpu_model_from_name(model) if rng.random() < 0.8 else None,
        min_gpu_count=rng.choice([0, 1, 2, 4, 8]),
        min_vram_mib=rng.choice([0, 0, 40000, 80000]),
        max_price=BASE_PRICE[model] + rng.randrange(60_000) if rng.random() < 0.5 else None,
        region=rng.choice(REGIONS) if rng.random() < 0.5 else None,
        duration=rng.choice([60, 3600, 86_400, 10**6]) if rng.random() < 0.5 else None,
        limit=rng.choice([10, 50, 100]),
    )


def hard_query(rng: random.Random) -> OfferQuery:
    """Selective filters that defeat the early stop (few or no results)."""
    return OfferQuery(
        gpu_model=None,
        min_gpu_count=8,
        min_vram_mib=rng.choice([0, 150_000]),
        max_price=None,
        region=rng.choice(REGIONS),
        duration=rng.choice([36_000_000, 3_600_000]),
        limit=100,
    )


def percentile(sorted_vals: list[float], p: float) -> float:
    return sorted_vals[min(len(sorted_vals) - 1, int(p / 100 * len(sorted_vals)))]


def bench_queries(book: OfferBook, n: int, rng: random.Random) -> dict[str, object]:
    # Worst case: a query no bucket bound can prune and nothing matches, so every live row is scanned
    # (here: all offers expired by the query's ``now`` but not evicted yet).
    worst = []
    for _ in range(5):
        t0 = time.perf_counter()
        assert book.query(OfferQuery(limit=100), now=NOW + 10**6) == []
        worst.append(time.perf_counter() - t0)
    print(f"    full scan of {len(book)} rows (no-match worst case): {min(worst) * 1e3:.1f} ms")
    out: dict[str, object] = {"book": len(book), "full_scan_ms": min(worst) * 1e3}
    for label, make in (("mixed", random_query), ("hard (few/no matches)", hard_query)):
        lat, cpu, hits = [], [], 0
        count = n if label == "mixed" else max(200, n // 10)
        for _ in range(count):
            q = make(rng)
            c0 = time.thread_time_ns()
            t0 = time.perf_counter()
            res = book.query(q, now=NOW)
            lat.append(time.perf_counter() - t0)
            cpu.append((time.thread_time_ns() - c0) / 1e9)
            hits += len(res)
        lat.sort()
        cpu.sort()
        print(
            f"    {label:22s} {count} queries: p50 {percentile(lat, 50) * 1e3:.3f} ms  "
            f"p99 {percentile(lat, 99) * 1e3:.3f} ms  max {lat[-1] * 1e3:.3f} ms  "
            f"mean results {hits / count:.1f}"
        )
        print(
            f"    {'':22s} CPU time: p50 {percentile(cpu, 50) * 1e3:.3f} ms  "
            f"p99 {percentile(cpu, 99) * 1e3:.3f} ms  max {cpu[-1] * 1e3:.3f} ms"
        )
        out[label.split()[0]] = {"queries": count, "p50_ms": percentile(lat, 50) * 1e3,
                                 "p90_ms": percentile(lat, 90) * 1e3, "p99_ms": percentile(lat, 99) * 1e3,
                                 "max_ms": lat[-1] * 1e3, "cpu_p50_ms": percentile(cpu, 50) * 1e3,
                                 "cpu_p99_ms": percentile(cpu, 99) * 1e3, "mean_results": hits / count}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--offers", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--book", type=int, default=100_000)
    ap.add_argument("--books", type=lambda v: [int(x) for x in v.split(",")],
                    help="query latency at each of these book sizes (comma-separated; overrides --book)")
    ap.add_argument("--queries", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    args = ap.parse_args()
    pinned = pin_one_core()
    print(f"python {sys.version.split()[0]}, {pinned}, keccak: {O.keccak256.__name__}")
    rng = random.Random(args.seed)
    msgs = gen_messages(args.offers, rng)
    res: dict[str, object] = {"pinned": pinned, "validation": bench_validation(msgs, args.rounds),
                              "raw_coincurve": bench_raw_recover(args.offers, args.rounds, rng), "books": []}
    for size in args.books or [args.book]:
        book = build_book(size, rng)
        gc.collect()  # start from steady state: the build leaves a full collection pending
        res["books"].append(bench_queries(book, args.queries, rng))  # type: ignore[attr-defined]
        del book
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
