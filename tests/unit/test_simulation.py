"""The market simulation is deterministic for a seed, keeps its books straight, and uses the pricing policies."""

from __future__ import annotations

from dataclasses import replace

import pytest

from node.sim.market_sim import SimConfig, compare, make_world, simulate

SMALL = SimConfig(seed=7, providers=40, jobs=1500, days=2)


def test_same_seed_same_numbers() -> None:
    a = compare(SMALL)
    b = compare(SMALL)
    assert a == b
    assert [r.policy for r in a] == ["fixed", "market", "utilisation"]


def test_different_seed_different_world() -> None:
    assert make_world(SMALL) != make_world(replace(SMALL, seed=8))
    assert simulate(SMALL) != simulate(replace(SMALL, seed=8))


def test_world_does_not_depend_on_the_policy() -> None:
    assert make_world(SMALL) == make_world(replace(SMALL, policy="utilisation"))


@pytest.mark.parametrize("policy", ["fixed", "market", "utilisation"])
def test_accounting_is_consistent(policy: str) -> None:
    r = simulate(replace(SMALL, policy=policy))
    assert r.jobs == SMALL.jobs
    assert 0 < r.jobs_served <= r.jobs
    assert 0 < r.utilisation <= 1
    assert all(0 <= u <= 1 for u in r.hourly_utilisation)
    assert r.gpu_hours_served <= r.gpu_hours_demanded
    assert sum(r.hourly_demand) == pytest.approx(r.gpu_hours_demanded)
    assert sum(r.hourly_unmet) == pytest.approx(r.gpu_hours_demanded - r.gpu_hours_served)
    assert r.revenue > 0 and r.consumer_surplus >= 0  # nobody pays above their maximum price
    assert r.price_index_p10 <= r.price_index_mean <= r.price_index_p90
    if policy == "fixed":
        assert r.announcements == 0 and r.price_index_std >= 0


def test_utilisation_policy_moves_prices_and_fixed_does_not() -> None:
    fixed = simulate(replace(SMALL, policy="fixed"))
    util = simulate(replace(SMALL, policy="utilisation"))
    assert len(set(fixed.hourly_price_index)) == 1
    assert len(set(util.hourly_price_index)) > 10
    assert util.announcements > 0
