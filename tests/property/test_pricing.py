"""Property tests of the provider pricing policies: bounds, bounded steps, convergence without oscillation,
determinism, and the re-announce interval."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from node.protocol.pricing import (
    FixedPolicy,
    MarketPolicy,
    PricingInputs,
    PricingState,
    UtilisationPolicy,
    next_price,
    update,
)

FAST = settings(max_examples=300, deadline=None)


@st.composite
def bounds(draw: st.DrawFn) -> tuple[int, int]:
    floor = draw(st.integers(1, 10**9))
    ceiling = draw(st.integers(floor, floor * 50))
    return floor, ceiling


@st.composite
def utilisation_policies(draw: st.DrawFn) -> UtilisationPolicy:
    floor, ceiling = draw(bounds())
    return UtilisationPolicy(
        floor=floor,
        ceiling=ceiling,
        target_bps=draw(st.integers(1, 9999)),
        max_step_bps=draw(st.integers(1, 10_000)),
        deadband_bps=draw(st.integers(0, 3000)),
    )


@st.composite
def market_policies(draw: st.DrawFn) -> MarketPolicy:
    floor, ceiling = draw(bounds())
    return MarketPolicy(percentile=draw(st.integers(0, 100)), floor=floor, ceiling=ceiling)


@st.composite
def inputs(draw: st.DrawFn) -> PricingInputs:
    total = draw(st.integers(0, 64))
    leased = draw(st.integers(0, total)) if total else 0
    market = sorted(draw(st.lists(st.integers(1, 10**11), max_size=30)))
    busy = draw(st.none() | st.integers(-100, 11_000))
    return PricingInputs(gpus_total=total, gpus_leased=leased, market_prices=tuple(market), busy_bps=busy)


policies = st.one_of(utilisation_policies(), market_policies())
prices = st.integers(1, 10**11)


@FAST
@given(policies, prices, inputs())
def test_price_stays_within_floor_and_ceiling(policy: UtilisationPolicy | MarketPolicy, price: int,
                                              inp: PricingInputs) -> None:
    p = next_price(policy, price, inp)
    assert policy.floor <= p <= policy.ceiling


@FAST
@given(utilisation_policies(), st.data(), inputs())
def test_utilisation_step_never_exceeds_its_bound(policy: UtilisationPolicy, data: st.DataObject,
                                                  inp: PricingInputs) -> None:
    price = data.draw(st.integers(policy.floor, policy.ceiling))
    p = next_price(policy, price, inp)
    assert abs(p - price) <= policy.step_bound(price)


def _path(policy: UtilisationPolicy | MarketPolicy, price: int, inp: PricingInputs, steps: int) -> list[int]:
    path = [price]
    for _ in range(steps):
        path.append(next_price(policy, path[-1], inp))
    return path


def _monotone(path: list[int]) -> bool:
    steps = [b - a for a, b in itertools.pairwise(path)]
    return all(s >= 0 for s in steps) or all(s <= 0 for s in steps)


@FAST
@given(policies, prices, inputs())
def test_constant_inputs_never_oscillate(policy: UtilisationPolicy | MarketPolicy, price: int,
                                         inp: PricingInputs) -> None:
    # Monotone and bounded integers: the sequence reaches a fixed point and stays there.
    path = _path(policy, price, inp, 300)[1:]  # the first step may bring an out-of-bounds price inside
    assert _monotone(path)
    fixed = [i for i in range(1, len(path)) if path[i] == path[i - 1]]
    if fixed:
        assert len(set(path[fixed[0]:])) == 1


@FAST
@given(
    bounds(),
    st.integers(1, 9999),
    st.integers(100, 10_000),
    st.integers(0, 64),
    st.data(),
)
def test_constant_inputs_converge(bnds: tuple[int, int], target: int, max_step: int, total: int,
                                  data: st.DataObject) -> None:
    floor, ceiling = bnds
    policy = UtilisationPolicy(floor=floor, ceiling=ceiling, target_bps=target, max_step_bps=max_step,
                               deadband_bps=data.draw(st.integers(0, 3000)))
    busy = data.draw(st.sampled_from((0, 10_000)))  # fully idle or fully busy: full steps
    inp = PricingInputs(gpus_total=total, gpus_leased=0, busy_bps=busy)
    path = _path(policy, data.draw(st.integers(floor, ceiling)), inp, 3000)
    # Fully busy or idle, each step is at least 1 % (or one unit): the fixed point comes within a few thousand steps,
    # the floor, the ceiling, or the price it started at (inside the dead band, or utilisation unknown).
    assert path[-1] == path[-2]
    assert path[-1] in (floor, ceiling, path[0])
    assert _monotone(path)


@FAST
@given(policies, prices, inputs())
def test_identical_inputs_give_identical_prices(policy: UtilisationPolicy | MarketPolicy, price: int,
                                                inp: PricingInputs) -> None:
    again = PricingInputs(inp.gpus_total, inp.gpus_leased, list(inp.market_prices), inp.busy_bps)
    assert next_price(policy, price, inp) == next_price(policy, price, again)


@FAST
@given(utilisation_policies(), st.data())
def test_busy_raises_idle_lowers(policy: UtilisationPolicy, data: st.DataObject) -> None:
    price = data.draw(st.integers(policy.floor, policy.ceiling))
    busy = next_price(policy, price, PricingInputs(gpus_total=8, gpus_leased=7, busy_bps=10_000))
    idle = next_price(policy, price, PricingInputs(gpus_total=8, gpus_leased=0))
    # Every GPU leased: no offer is out, the price holds instead of winding up.
    assert next_price(policy, price, PricingInputs(gpus_total=8, gpus_leased=8)) == price
    if 10_000 - policy.target_bps > policy.deadband_bps:
        assert busy > price or price == policy.ceiling
    if policy.target_bps > policy.deadband_bps:
        assert idle < price or price == policy.floor


@FAST
@given(
    st.one_of(policies, st.builds(FixedPolicy, st.integers(1, 10**9))),
    st.integers(0, 7200),
    st.lists(st.tuples(st.integers(0, 4000), inputs()), min_size=1, max_size=60),
)
def test_reannounce_interval_is_respected(policy: UtilisationPolicy | MarketPolicy | FixedPolicy, interval: int,
                                          calls: list[tuple[int, PricingInputs]]) -> None:
    state = PricingState(price=1_000_000)
    now = 1_700_000_000
    announced: list[int] = []
    for gap, inp in calls:
        now += gap
        before = state
        result = update(policy, state, inp, now, interval)
        state = result.state
        if result.announce:
            announced.append(now)
            assert state.announced_at == now
        else:
            assert state == before  # nothing moves between announcements
    assert announced, "the first decision always announces"
    assert all(b - a >= interval for a, b in itertools.pairwise(announced))


def test_fixed_policy_is_todays_behaviour() -> None:
    state = PricingState(price=7)
    first = update(FixedPolicy(5), state, PricingInputs(), now=100, min_interval_s=60)
    assert first.announce and first.state == PricingState(5, 100)
    later = update(FixedPolicy(5), first.state, PricingInputs(gpus_total=4, gpus_leased=4), now=1000,
                   min_interval_s=60)
    assert not later.announce and later.state == first.state


def test_market_policy_follows_percentile_with_floor() -> None:
    policy = MarketPolicy(percentile=50, floor=100, ceiling=10_000)
    assert next_price(policy, 500, PricingInputs(market_prices=(150, 200, 300, 400))) == 200
    assert next_price(policy, 500, PricingInputs(market_prices=(10, 20, 30))) == 100
    assert next_price(policy, 500, PricingInputs()) == 500
