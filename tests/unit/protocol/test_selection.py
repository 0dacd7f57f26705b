"""Offer selection: filters with their reasons, ranking by price and provider record, quotes and spend caps."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.protocol.offers import Offer, gpu_model_from_name
from node.protocol.provider_record import DAY, ProviderRecord, score
from node.protocol.selection import (
    Candidate,
    Exclusion,
    LeaseRequest,
    SpendCaps,
    check_spend,
    hours_to_seconds,
    quote,
    select,
)

NOW = 1_700_000_000
H = 3600


def prov(i: int) -> bytes:
    return i.to_bytes(20, "big")


def cand(i: int, *, model: str = "H100-80GB", gpus: int = 4, price: int = 100, vram: int = 81_920,
         region: str | None = "eu", min_d: int = 60, max_d: int = 86_400, expires: int = NOW + H) -> Candidate:
    offer = Offer(prov(i), 1, gpu_model_from_name(model), gpus, vram, price, min_d, max_d, expires, b"\x00" * 32)
    return Candidate(i.to_bytes(32, "big"), offer, region)


def proven(i: int, leases: int = 200) -> ProviderRecord:
    return ProviderRecord(prov(i), first_seen=NOW - 90 * DAY, stake=10**22, leases_opened=leases,
                          leases_completed=leases)


REQ = LeaseRequest("H100-80GB", gpus=2, duration_s=3 * H)


def test_hours_to_seconds() -> None:
    assert hours_to_seconds(3) == 3 * H
    assert hours_to_seconds(0.0001) == 1


def test_each_filter_excludes_with_its_reason() -> None:
    req = LeaseRequest("H100-80GB", gpus=2, duration_s=3 * H, min_vram_mib=40_000, region="eu",
                       max_price_per_gpu_hour=200 * H)
    cands = [
        cand(1, expires=NOW),
        cand(2, model="L40S"),
        cand(3, region="us"),
        cand(4, region=None),
        cand(5, gpus=1),
        cand(6, vram=24_000),
        cand(7, max_d=H),
        cand(8, min_d=4 * H),
        cand(9, price=201),
        cand(10, price=150),
    ]
    sel = select(req, cands, {}, NOW)
    reasons = {e.offer_id[-1]: e.reason for e in sel.excluded}
    assert reasons == {
        1: Exclusion.EXPIRED, 2: Exclusion.MODEL, 3: Exclusion.REGION, 4: Exclusion.REGION, 5: Exclusion.GPUS,
        6: Exclusion.VRAM, 7: Exclusion.DURATION, 8: Exclusion.DURATION, 9: Exclusion.PRICE,
    }
    assert sel.chosen is not None and sel.chosen.candidate.offer_id[-1] == 10
    assert all(e.detail for e in sel.excluded)


def test_gpus_already_taken_by_open_leases_count() -> None:
    c = cand(1, gpus=4)
    assert select(REQ, [c], {}, NOW, gpus_taken={c.offer_id: 3}).chosen is None
    assert select(REQ, [c], {}, NOW, gpus_taken={c.offer_id: 2}).chosen is not None


def test_cheapest_wins_among_equal_records_and_the_quote_is_exact() -> None:
    cands = [cand(1, price=300), cand(2, price=100), cand(3, price=200)]
    records = {prov(i): proven(i) for i in (1, 2, 3)}
    sel = select(REQ, cands, records, NOW)
    assert sel.chosen is not None and sel.chosen.candidate.offer_id[-1] == 2
    assert [r.candidate.offer_id[-1] for r in sel.ranked] == [2, 3, 1]
    assert sel.quote == quote(cands[1], 2, 3 * H)
    assert sel.quote is not None and sel.quote.total == 100 * 2 * 3 * H
    assert sel.quote.price_per_gpu_hour == 100 * H
    assert "per GPU-hour" in sel.reason and "next best" in sel.reason


def test_unknown_provider_must_be_clearly_cheaper_than_a_proven_one() -> None:
    records = {prov(1): proven(1)}
    slightly_cheaper = [cand(1, price=100), cand(2, price=95)]
    sel = select(REQ, slightly_cheaper, records, NOW)
    assert sel.chosen is not None and sel.chosen.candidate.offer_id[-1] == 1  # proven wins despite a higher price
    much_cheaper = [cand(1, price=100), cand(2, price=50)]
    sel = select(REQ, much_cheaper, records, NOW)
    assert sel.chosen is not None and sel.chosen.candidate.offer_id[-1] == 2


def test_equivocating_provider_and_min_score_exclude() -> None:
    bad = ProviderRecord(prov(1), first_seen=NOW - 90 * DAY, stake=10**22, leases_completed=500, equivocations=1)
    sel = select(REQ, [cand(1, price=1)], {prov(1): bad}, NOW)
    assert sel.chosen is None and sel.excluded[0].reason is Exclusion.PROVIDER
    strict = LeaseRequest("H100-80GB", 2, 3 * H, min_score=0.5)
    sel = select(strict, [cand(2), cand(3)], {prov(3): proven(3)}, NOW)
    assert sel.chosen is not None and sel.chosen.candidate.offer_id[-1] == 3
    assert [e.reason for e in sel.excluded] == [Exclusion.PROVIDER]


def test_spend_caps() -> None:
    total = 100 * 2 * 3 * H
    sel = select(REQ, [cand(1)], {}, NOW, caps=SpendCaps(per_lease=total - 1))
    assert sel.chosen is None and sel.excluded[0].reason is Exclusion.LEASE_CAP
    assert select(REQ, [cand(1)], {}, NOW, caps=SpendCaps(per_lease=total)).chosen is not None
    sel = select(REQ, [cand(1)], {}, NOW, caps=SpendCaps(per_day=total + 10), spent_today=11)
    assert sel.chosen is None and sel.excluded[0].reason is Exclusion.DAY_CAP
    assert "1 day_cap" in sel.reason
    assert select(REQ, [cand(1)], {}, NOW, caps=SpendCaps(per_day=total + 10), spent_today=10).chosen is not None


def test_check_spend_for_top_ups() -> None:
    caps = SpendCaps(per_lease=1000, per_day=5000)
    assert check_spend(400, caps, spent_today=0, lease_spent=600).allowed
    over = check_spend(401, caps, spent_today=0, lease_spent=600)
    assert not over.allowed and "per-lease cap" in over.reason
    day = check_spend(10, caps, spent_today=4995)
    assert not day.allowed and "per-day cap" in day.reason
    assert check_spend(10**30, SpendCaps(), spent_today=10**30).allowed


def test_nothing_live_and_deterministic_ties() -> None:
    sel = select(REQ, [], {}, NOW)
    assert sel.chosen is None and "no live offers" in sel.reason
    a, b = cand(7, price=100), cand(3, price=100)
    assert select(REQ, [a, b], {}, NOW) == select(REQ, [b, a], {}, NOW)
    sel = select(REQ, [a, b], {}, NOW)
    assert sel.chosen is not None and sel.chosen.candidate.offer_id[-1] == 3


def test_request_validation() -> None:
    with pytest.raises(ValueError):
        LeaseRequest("H100-80GB", gpus=0, duration_s=10)


# -- property: the choice obeys every filter and no eligible offer beats it -----------------------------------------

offers_st = st.lists(
    st.builds(
        lambda i, model, gpus, price, vram, region, min_d, max_d, exp: cand(
            i, model=model, gpus=gpus, price=price, vram=vram, region=region, min_d=min_d, max_d=max_d, expires=exp
        ),
        st.integers(1, 10**6),
        st.sampled_from(("H100-80GB", "L40S")),
        st.integers(1, 8),
        st.integers(1, 500),
        st.sampled_from((24_000, 81_920)),
        st.sampled_from(("eu", "us", None)),
        st.sampled_from((60, 4 * H)),
        st.sampled_from((H, 86_400)),
        st.sampled_from((NOW, NOW + H)),
    ),
    max_size=25,
    unique_by=lambda c: c.offer_id,
)


@settings(max_examples=200, deadline=None)
@given(
    offers_st,
    st.integers(1, 8),
    st.sampled_from((H, 3 * H)),
    st.sampled_from((None, "eu")),
    st.sampled_from((None, 250 * H)),
    st.sampled_from((None, 10**9)),
    st.integers(0, 10**9),
    st.dictionaries(st.integers(1, 10**6).map(prov), st.integers(0, 300), max_size=10),
)
def test_choice_obeys_filters_and_budget(cands: list[Candidate], gpus: int, duration: int, region: str | None,
                                         max_price: int | None, day_cap: int | None, spent: int,
                                         history: dict[bytes, int]) -> None:
    req = LeaseRequest("H100-80GB", gpus, duration, min_vram_mib=40_000, region=region,
                       max_price_per_gpu_hour=max_price)
    records = {p: proven(int.from_bytes(p, "big"), n) for p, n in history.items()}
    caps = SpendCaps(per_lease=2 * 10**8, per_day=day_cap)
    sel = select(req, cands, records, NOW, caps=caps, spent_today=spent)
    assert len(sel.ranked) + len(sel.excluded) == len(cands)
    for r in sel.ranked:
        o = r.candidate.offer
        assert o.expires_at > NOW and o.gpu_model_name == "H100-80GB" and o.gpu_count >= gpus
        assert o.vram_mib >= 40_000 and o.min_duration <= duration <= o.max_duration
        assert region is None or r.candidate.region == region
        assert max_price is None or o.price_per_gpu_second * H <= max_price
        assert check_spend(r.quote.total, caps, spent).allowed
        assert r.score == score(records.get(o.provider), NOW)
    if sel.chosen is not None:
        assert all(sel.chosen.adjusted_price <= r.adjusted_price for r in sel.ranked)
    else:
        assert not sel.ranked
