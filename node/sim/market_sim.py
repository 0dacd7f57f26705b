"""A deterministic agent-based simulation of the GPU market over a simulated week.

Providers (each with one GPU model, a region, 1-8 GPUs and its own cost per GPU-hour) price with the node's own
pricing policies (``node.protocol.pricing``: the same ``update`` a provider node runs, with the same re-announce
interval); consumers arrive with jobs of varying size, length, willingness to pay and patience. Nothing here
touches a network, a chain or a clock, and all randomness comes from one ``random.Random(seed)``: the same
configuration gives the same numbers on every run.

The world (providers and the job stream) depends only on the seed and the sizes, not on the policy, so the three
policies are compared on exactly the same demand.

Each tick (5 simulated minutes):

1. leases that reached their end free their GPUs;
2. at every re-announce opportunity (the policy interval) each provider calls ``pricing.update`` with its own GPUs
   (total, leased) and, for ``market``, the prices of the live offers for its model and region (providers with
   a free GPU; a fully leased provider has withdrawn its offer, as the node's publisher does);
3. arriving jobs join their model's queue;
4. each queued job, first come first served, takes the cheapest live offer of its model with enough free GPUs
   whose price is at most the job's maximum price per GPU-hour, at that price for its whole length (running
   leases keep their price). A job that has waited longer than its patience leaves unserved.

Money is in nano-dollars (10**-9 $) per GPU-second, integers like token base units; reports convert to $.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Final

from node.protocol.pricing import (
    FixedPolicy,
    MarketPolicy,
    Policy,
    PricingInputs,
    PricingState,
    UtilisationPolicy,
    update,
)

UNIT: Final = 10**9  # base units per dollar
HOUR: Final = 3600
POLICIES: Final = ("fixed", "market", "utilisation")


@dataclass(frozen=True, slots=True)
class GpuModel:
    name: str
    cost_per_hour: float  # typical provider cost, $ per GPU-hour
    share: float  # share of providers (and of demand)


MODELS: Final = (
    GpuModel("H100-80GB", 2.00, 0.30),
    GpuModel("A100-80GB", 1.20, 0.30),
    GpuModel("L40S", 0.70, 0.20),
    GpuModel("RTX4090", 0.35, 0.20),
)
REGIONS: Final = (("eu-west", 0.4), ("us-east", 0.4), ("ap-south", 0.2))
PROVIDER_GPUS: Final = ((1, 0.25), (2, 0.25), (4, 0.30), (8, 0.20))
JOB_GPUS: Final = ((1, 0.45), (2, 0.30), (4, 0.15), (8, 0.10))


@dataclass(frozen=True, slots=True)
class SimConfig:
    seed: int = 1
    providers: int = 1000
    jobs: int = 50_000
    days: int = 7
    warmup_days: int = 1  # simulated before the measured days (same demand pattern), so no one starts from empty
    tick_s: int = 300
    policy: str = "fixed"
    reprice_interval_s: int = 900  # the re-announce interval of every policy
    markup: float = 1.3  # median markup: a provider's fixed price (and every policy's start) = own cost * its markup
    markup_sigma: float = 0.25  # providers guess: each one's markup is markup * lognormal(0, sigma), at least 1
    ceiling_x: float = 4.0  # market/utilisation ceiling = own cost * ceiling_x; floor = own cost
    target_bps: int = 6000
    max_step_bps: int = 500
    deadband_bps: int = 500
    market_percentile: int = 50
    running_share: float = 0.3  # part of a provider's cost that is paid only while a GPU is leased (power, ...)
    busy_tau_s: int = 2 * HOUR  # time constant of each provider's moving average of its own utilisation
    value_median: float = 1.5  # median willingness to pay, as a multiple of the model's typical cost
    value_sigma: float = 0.35
    duration_median_h: float = 3.0
    duration_sigma: float = 0.9

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}")


@dataclass(frozen=True, slots=True)
class Provider:
    model: int
    region: int
    gpus: int
    cost: int  # base units per GPU-second
    start_price: int  # the price it would configure by hand: cost * its own markup


@dataclass(frozen=True, slots=True)
class Job:
    arrival: int  # tick
    deadline: int  # last tick at which it still waits
    model: int
    gpus: int
    duration_s: int
    max_price: int  # base units per GPU-second
    value: int  # what a GPU-second of it is worth to its owner (= max_price)


@dataclass(frozen=True, slots=True)
class World:
    providers: tuple[Provider, ...]
    jobs: tuple[Job, ...]  # by arrival; those arriving before ``warmup_ticks`` belong to the warm-up
    warmup_ticks: int = 0


def _weighted(rng: random.Random, table: Sequence[tuple[int, float]]) -> int:
    return rng.choices([v for v, _ in table], [w for _, w in table])[0]


def demand_weight(tick: int, tick_s: int) -> float:
    """Relative arrival rate: a daily cycle (peak mid-afternoon, trough at night), quieter weekends, and a busy
    third day."""
    t = tick * tick_s
    day, hour = divmod(t / HOUR, 24)
    daily = 1 + 0.6 * math.sin(2 * math.pi * (hour - 9) / 24)
    weekly = 0.7 if int(day) % 7 in (5, 6) else 1.35 if int(day) % 7 == 2 else 1.0
    return daily * weekly


def make_world(cfg: SimConfig) -> World:
    rng = random.Random(cfg.seed)
    model_table = [(i, m.share) for i, m in enumerate(MODELS)]
    region_table = [(i, w) for i, (_, w) in enumerate(REGIONS)]
    providers = []
    for _ in range(cfg.providers):
        m = _weighted(rng, model_table)
        cost_h = MODELS[m].cost_per_hour * rng.uniform(0.75, 1.25)
        cost = round(cost_h * UNIT / HOUR)
        markup = max(1.0, cfg.markup * rng.lognormvariate(0.0, cfg.markup_sigma)) if cfg.markup_sigma else cfg.markup
        providers.append(
            Provider(m, _weighted(rng, region_table), _weighted(rng, PROVIDER_GPUS), cost, round(cost * markup))
        )
    warm = cfg.warmup_days * 86_400 // cfg.tick_s
    ticks = cfg.days * 86_400 // cfg.tick_s
    weights = [demand_weight(t - warm, cfg.tick_s) for t in range(warm + ticks)]
    week = list(itertools.accumulate(weights[warm:]))
    arrivals = rng.choices(range(warm, warm + ticks), cum_weights=week, k=cfg.jobs)
    if warm:
        warm_jobs = round(cfg.jobs * sum(weights[:warm]) / week[-1])
        arrivals += rng.choices(range(warm), cum_weights=list(itertools.accumulate(weights[:warm])), k=warm_jobs)
    arrivals.sort()
    jobs = []
    for arrival in arrivals:
        m = _weighted(rng, model_table)
        hours = min(24.0, max(0.25, rng.lognormvariate(math.log(cfg.duration_median_h), cfg.duration_sigma)))
        value_h = MODELS[m].cost_per_hour * rng.lognormvariate(math.log(cfg.value_median), cfg.value_sigma)
        value = max(1, round(value_h * UNIT / HOUR))
        urgent = rng.random() < 0.5
        patience_s = rng.uniform(0, HOUR) if urgent else rng.uniform(2 * HOUR, 12 * HOUR)
        jobs.append(
            Job(
                arrival=arrival,
                deadline=arrival + int(patience_s // cfg.tick_s),
                model=m,
                gpus=_weighted(rng, JOB_GPUS),
                duration_s=round(hours * HOUR),
                max_price=value,
                value=value,
            )
        )
    return World(tuple(providers), tuple(jobs), warm)


def make_policy(cfg: SimConfig, p: Provider) -> Policy:
    start = p.start_price
    ceiling = max(start, round(p.cost * cfg.ceiling_x))
    if cfg.policy == "fixed":
        return FixedPolicy(start)
    if cfg.policy == "market":
        return MarketPolicy(cfg.market_percentile, floor=p.cost, ceiling=ceiling)
    return UtilisationPolicy(
        floor=p.cost,
        ceiling=ceiling,
        target_bps=cfg.target_bps,
        max_step_bps=cfg.max_step_bps,
        deadband_bps=cfg.deadband_bps,
    )


@dataclass(frozen=True, slots=True)
class SimResult:
    policy: str
    jobs: int
    jobs_served: int
    gpu_hours_demanded: float
    gpu_hours_served: float
    utilisation: float  # GPU-time leased / GPU-time available over the week
    price_index_mean: float  # price paid / the model's typical cost, weighted by GPU-hours
    price_index_std: float
    price_index_p10: float
    price_index_p90: float
    revenue: float  # $, all providers
    margin: float  # $, revenue less the providers' full cost of the GPU-hours they leased
    profit: float  # $, revenue less running cost of leased GPU-hours and fixed cost of every GPU-hour of the week
    consumer_surplus: float  # $, (value - price) over the GPU-hours served
    announcements: int  # offers re-announced because the price changed (gossip load)
    mean_price_per_model: tuple[tuple[str, float], ...]  # $ per GPU-hour paid
    hourly_utilisation: tuple[float, ...]
    hourly_price_index: tuple[float, ...]  # mean asking price / typical cost, over providers
    hourly_paid_index: tuple[float, ...]  # price / typical cost, leases opened in the hour (0: none)
    hourly_demand: tuple[float, ...]  # GPU-hours of jobs arriving in the hour
    hourly_unmet: tuple[float, ...]  # GPU-hours of jobs that gave up in the hour

    @property
    def jobs_unmet(self) -> int:
        return self.jobs - self.jobs_served

    @property
    def unmet_share(self) -> float:
        """Share of the demanded GPU-hours never served."""
        return 1 - self.gpu_hours_served / self.gpu_hours_demanded if self.gpu_hours_demanded else 0.0


@dataclass(slots=True)
class _Paid:
    weights: list[float] = field(default_factory=list)  # GPU-hours
    index: list[float] = field(default_factory=list)  # price / typical cost


def _weighted_stats(values: list[float], weights: list[float]) -> tuple[float, float, float, float]:
    total = sum(weights)
    if not total:
        return 0.0, 0.0, 0.0, 0.0
    mean = sum(v * w for v, w in zip(values, weights, strict=True)) / total
    var = sum(w * (v - mean) ** 2 for v, w in zip(values, weights, strict=True)) / total
    order = sorted(range(len(values)), key=values.__getitem__)
    cum = list(itertools.accumulate(weights[i] for i in order))

    def q(p: float) -> float:
        return values[order[min(len(order) - 1, bisect.bisect_left(cum, p * total))]]

    return mean, math.sqrt(var), q(0.10), q(0.90)


def simulate(cfg: SimConfig, world: World | None = None) -> SimResult:
    w = world if world is not None else make_world(cfg)
    provs = w.providers
    n = len(provs)
    tick = cfg.tick_s
    ticks = cfg.days * 86_400 // tick
    warm = w.warmup_ticks
    interval = cfg.reprice_interval_s
    reprice_every = max(1, interval // tick)
    ticks_per_hour = max(1, HOUR // tick)
    hours = -(-ticks // ticks_per_hour)
    typical = [round(m.cost_per_hour * UNIT / HOUR) for m in MODELS]

    policies = [make_policy(cfg, p) for p in provs]
    states = [PricingState(p.start_price) for p in provs]
    price = [s.price for s in states]
    free = [p.gpus for p in provs]
    total_gpus = sum(p.gpus for p in provs)
    leased = 0
    by_model: list[list[int]] = [[] for _ in MODELS]
    for i, p in enumerate(provs):
        by_model[p.model].append(i)
    market_keys = [(p.model, p.region) for p in provs]
    is_market = cfg.policy == "market"
    # Each provider's utilisation as a moving average (what a node measures of its own GPUs): the leased
    # GPU-ticks since the last re-announce opportunity, folded into an exponential average.
    busy_int = [0] * n  # leased GPU-ticks up to busy_at[i]
    busy_at = [0] * n
    busy_seen = [0] * n  # busy_int at the last opportunity
    busy_avg = [cfg.target_bps / 10_000] * n  # start neutral: no move before there is evidence
    alpha = 1 - math.exp(-interval / cfg.busy_tau_s) if cfg.busy_tau_s > 0 else 1.0
    last_reprice = 0

    ends: list[tuple[int, int, int]] = []  # (end tick, provider, gpus)
    waiting: list[list[Job]] = [[] for _ in MODELS]
    jobs = w.jobs
    next_job = 0
    announcements = 0
    served = 0
    gpu_h_demanded = 0.0
    gpu_h_served = 0.0
    revenue = 0
    cost_of_served = 0
    surplus = 0
    paid = _Paid()
    paid_by_model = [[0, 0] for _ in MODELS]  # [amount, GPU-seconds]
    leased_ticks = [0] * hours
    price_index = [0.0] * hours
    demand = [0.0] * hours
    paid_hour = [0.0] * hours  # sum of index * GPU-hours of leases opened in the hour
    paid_hour_w = [0.0] * hours
    unmet = [0.0] * hours

    hour = 0
    for t in range(warm + ticks):
        now = t * tick
        measured = t >= warm
        while ends and ends[0][0] <= t:
            _, i, g = heapq.heappop(ends)
            busy_int[i] += (provs[i].gpus - free[i]) * (t - busy_at[i])
            busy_at[i] = t
            free[i] += g
            leased -= g

        if t % reprice_every == 0:
            book: dict[tuple[int, int], list[int]] = {}
            if is_market:
                for i in range(n):
                    if free[i]:
                        book.setdefault(market_keys[i], []).append(price[i])
                for prices in book.values():
                    prices.sort()
            empty: list[int] = []
            span = t - last_reprice
            last_reprice = t
            for i in range(n):
                p = provs[i]
                if span:
                    busy_int[i] += (p.gpus - free[i]) * (t - busy_at[i])
                    busy_at[i] = t
                    recent = (busy_int[i] - busy_seen[i]) / (p.gpus * span)
                    busy_seen[i] = busy_int[i]
                    busy_avg[i] += alpha * (recent - busy_avg[i])
                inputs = PricingInputs(
                    p.gpus, p.gpus - free[i], book.get(market_keys[i], empty), round(busy_avg[i] * 10_000)
                )
                result = update(policies[i], states[i], inputs, now, interval)
                if result.announce:
                    states[i] = result.state
                    price[i] = result.state.price
                    if t > warm:
                        announcements += 1

        if measured:
            hour = (t - warm) // ticks_per_hour
        while next_job < len(jobs) and jobs[next_job].arrival <= t:
            job = jobs[next_job]
            next_job += 1
            if measured:
                gh = job.gpus * job.duration_s / HOUR
                gpu_h_demanded += gh
                demand[hour] += gh
            waiting[job.model].append(job)

        for m, queue in enumerate(waiting):
            if not queue:
                continue
            offers = sorted((price[i], i) for i in by_model[m] if free[i])
            still: list[Job] = []
            for job in queue:
                if job.deadline < t:
                    if job.arrival >= warm:
                        unmet[hour] += job.gpus * job.duration_s / HOUR
                    continue
                chosen = -1
                if offers and offers[0][0] <= job.max_price:
                    for pr, i in offers:
                        if pr > job.max_price:
                            break
                        if free[i] >= job.gpus:
                            chosen = i
                            break
                if chosen < 0:
                    still.append(job)
                    continue
                pr = price[chosen]
                g = job.gpus
                busy_int[chosen] += (provs[chosen].gpus - free[chosen]) * (t - busy_at[chosen])
                busy_at[chosen] = t
                free[chosen] -= g
                leased += g
                heapq.heappush(ends, (t + -(-job.duration_s // tick), chosen, g))
                if job.arrival < warm:
                    continue
                gpu_s = g * job.duration_s
                served += 1
                gpu_h_served += gpu_s / HOUR
                revenue += pr * gpu_s
                cost_of_served += provs[chosen].cost * gpu_s
                surplus += (job.value - pr) * gpu_s
                paid.weights.append(gpu_s / HOUR)
                paid.index.append(pr / typical[m])
                paid_hour[hour] += pr / typical[m] * gpu_s / HOUR
                paid_hour_w[hour] += gpu_s / HOUR
                paid_by_model[m][0] += pr * gpu_s
                paid_by_model[m][1] += gpu_s
            waiting[m] = still

        if not measured:
            continue
        leased_ticks[hour] += leased
        if (t - warm) % ticks_per_hour == 0:
            price_index[hour] = sum(price[i] / typical[provs[i].model] for i in range(n)) / n if n else 0.0

    for queue in waiting:  # still waiting at the end of the week: unmet
        for job in queue:
            if job.arrival >= warm:
                unmet[-1] += job.gpus * job.duration_s / HOUR

    mean, std, p10, p90 = _weighted_stats(paid.index, paid.weights)
    per_model = tuple(
        (MODELS[m].name, amount * HOUR / gpu_s / UNIT if gpu_s else 0.0)
        for m, (amount, gpu_s) in enumerate(paid_by_model)
    )
    capacity = total_gpus * ticks
    fleet_cost = sum(p.cost * p.gpus for p in provs) * ticks * tick
    return SimResult(
        policy=cfg.policy,
        jobs=sum(1 for job in jobs if job.arrival >= warm),
        jobs_served=served,
        gpu_hours_demanded=gpu_h_demanded,
        gpu_hours_served=gpu_h_served,
        utilisation=sum(leased_ticks) / capacity if capacity else 0.0,
        price_index_mean=mean,
        price_index_std=std,
        price_index_p10=p10,
        price_index_p90=p90,
        revenue=revenue / UNIT,
        margin=(revenue - cost_of_served) / UNIT,
        profit=(revenue - cfg.running_share * cost_of_served - (1 - cfg.running_share) * fleet_cost) / UNIT,
        consumer_surplus=surplus / UNIT,
        announcements=announcements,
        mean_price_per_model=per_model,
        hourly_utilisation=tuple(x / (total_gpus * ticks_per_hour) if total_gpus else 0.0 for x in leased_ticks),
        hourly_price_index=tuple(price_index),
        hourly_paid_index=tuple(x / wt if wt else 0.0 for x, wt in zip(paid_hour, paid_hour_w, strict=True)),
        hourly_demand=tuple(demand),
        hourly_unmet=tuple(unmet),
    )


def compare(cfg: SimConfig, policies: Sequence[str] = POLICIES) -> list[SimResult]:
    """Run each policy on the same world (same providers, same job stream)."""
    world = make_world(cfg)
    return [simulate(replace(cfg, policy=p), world) for p in policies]
