#!/usr/bin/env python3
"""Market simulation: compare the fixed, market and utilisation pricing policies on one simulated week.

Prints a table of the results (utilisation, unmet demand, prices paid, provider revenue and profit, consumer
surplus, re-announcements) and the wall time; with ``--plots DIR`` writes the figures used in docs/market.md;
with ``--sweep`` also runs the utilisation policy at several targets.

Usage: .venv/bin/python scripts/simulate_market.py [--providers 1000] [--jobs 50000] [--seed 1]
       [--plots docs] [--sweep]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.sim.market_sim import POLICIES, SimConfig, SimResult, make_world, simulate


def row(label: str, r: SimResult) -> str:
    return (
        f"| {label} | {r.utilisation:.1%} | {r.jobs_unmet:,} ({r.unmet_share:.1%}) | {r.price_index_mean:.3f} | "
        f"{r.price_index_std:.3f} | {r.price_index_p10:.2f}-{r.price_index_p90:.2f} | ${r.revenue:,.0f} | "
        f"${r.profit:,.0f} | ${r.consumer_surplus:,.0f} | {r.announcements:,} |"
    )


HEADER = (
    "| policy | utilisation | jobs unmet (GPU-h share) | price index mean | std | p10-p90 | provider revenue | "
    "provider profit | consumer surplus | re-announcements |\n|---|---|---|---|---|---|---|---|---|---|"
)


def plot(results: list[SimResult], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    colours = {"fixed": "tab:gray", "market": "tab:blue", "utilisation": "tab:orange"}
    hours = range(len(results[0].hourly_utilisation))
    days = [h / 24 for h in hours]

    fig, (ax1, ax2, ax3, ax4) = plt.subplots(4, 1, figsize=(10, 11), sharex=True)
    ax1.fill_between(days, results[0].hourly_demand, color="tab:green", alpha=0.3, label="GPU-hours arriving")
    ax1.set_ylabel("demand (GPU-h / hour)")
    ax1.legend(loc="upper right")
    ax1.set_title("Demand, utilisation and prices over the simulated week")
    for r in results:
        ax2.plot(days, [100 * u for u in r.hourly_utilisation], color=colours.get(r.policy), label=r.policy, lw=1.2)
        ax3.plot(days, r.hourly_price_index, color=colours.get(r.policy), label=r.policy, lw=1.2)
        paid = [x or float("nan") for x in r.hourly_paid_index]  # gaps where no lease opened
        ax4.plot(days, paid, color=colours.get(r.policy), label=r.policy, lw=1.0)
    ax2.set_ylabel("GPUs leased (%)")
    ax2.set_ylim(0, 100)
    ax2.legend(loc="lower right")
    ax3.set_ylabel("mean asking price,\nall providers\n(x typical cost)")
    ax3.legend(loc="upper right")
    ax4.set_ylabel("mean price paid,\nleases opened\n(x typical cost)")
    ax4.set_xlabel("day")
    ax4.legend(loc="upper right")
    for ax in (ax1, ax2, ax3, ax4):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    series = out / "market_sim_week.png"
    fig.savefig(series, dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 4, figsize=(12, 3.4))
    names = [r.policy for r in results]
    bars = [
        ("utilisation (%)", [100 * r.utilisation for r in results]),
        ("demand unmet (% GPU-h)", [100 * r.unmet_share for r in results]),
        ("price paid (x typical cost)\nmean, bar = p10-p90", [r.price_index_mean for r in results]),
        ("provider revenue (k$)", [r.revenue / 1000 for r in results]),
    ]
    for ax, (title, values) in zip(axes, bars, strict=True):
        ax.bar(names, values, color=[colours.get(n) for n in names])
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    axes[2].errorbar(
        names,
        [r.price_index_mean for r in results],
        yerr=[
            [r.price_index_mean - r.price_index_p10 for r in results],
            [r.price_index_p90 - r.price_index_mean for r in results],
        ],
        fmt="none",
        ecolor="black",
        capsize=4,
    )
    fig.tight_layout()
    summary = out / "market_sim_summary.png"
    fig.savefig(summary, dpi=110)
    plt.close(fig)
    return [series, summary]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--providers", type=int, default=1000)
    ap.add_argument("--jobs", type=int, default=50_000)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--plots", type=Path, default=None, help="write PNG figures into this directory")
    ap.add_argument("--sweep", action="store_true", help="also run the utilisation policy at several targets")
    args = ap.parse_args()
    cfg = SimConfig(seed=args.seed, providers=args.providers, jobs=args.jobs, days=args.days)

    t0 = time.perf_counter()
    world = make_world(cfg)
    results = []
    for policy in POLICIES:
        t = time.perf_counter()
        results.append(simulate(replace(cfg, policy=policy), world))
        print(f"{policy}: {time.perf_counter() - t:.1f} s", file=sys.stderr)
    wall = time.perf_counter() - t0
    served = results[0]
    print(f"{args.providers:,} providers, {args.jobs:,} jobs ({served.gpu_hours_demanded:,.0f} GPU-hours asked), "
          f"{args.days} days, seed {args.seed}: three policies in {wall:.1f} s (world included)\n")
    print(HEADER)
    for r in results:
        print(row(r.policy, r))
    print("\nmean price paid per GPU-hour by model ($):")
    for r in results:
        print(f"  {r.policy:12s} " + "  ".join(f"{name} {price:.2f}" for name, price in r.mean_price_per_model))

    if args.sweep:
        print("\nvariants (utilisation: target, averaging time constant; market: percentile):\n")
        print(HEADER)
        for target in (5000, 6000, 7000, 8000):
            r = simulate(replace(cfg, policy="utilisation", target_bps=target), world)
            print(row(f"utilisation, target {target // 100} %", r))
        for tau_h in (1, 4):
            r = simulate(replace(cfg, policy="utilisation", busy_tau_s=tau_h * 3600), world)
            print(row(f"utilisation, averaged over {tau_h} h", r))
        r = simulate(replace(cfg, policy="market", market_percentile=25), world)
        print(row("market, 25th percentile", r))

    if args.plots is not None:
        for path in plot(results, args.plots):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
