"""Provider records from chain logs, and a score under which a provider without history is not taken as good."""

from __future__ import annotations

from node.protocol.market_data import LeaseClosedLog, LeaseOpenedLog, LeaseSettledLog
from node.protocol.provider_record import (
    DAY,
    ClaimDisputedLog,
    EquivocationReportedLog,
    LeaseFinalizedLog,
    LivenessChallengedLog,
    LivenessResolvedLog,
    ProviderRecord,
    ProviderRecords,
    ProviderRegisteredLog,
    SlashedLog,
    StakedLog,
    UnbondRequestedLog,
    UsageClaimedLog,
    history_part,
    score,
)

NOW = 1_700_000_000
P = b"\x01" * 20
STAKE = 10**21


def lease(records: ProviderRecords, lease_id: int, at: int, *, finalize: bool = True) -> None:
    records.apply(LeaseOpenedLog(lease_id, P, b"\x00" * 32, 2, 10, at, at + 3600, at))
    records.apply(LeaseSettledLog(lease_id, P, 3600, 36_000, at + 1800))
    records.apply(LeaseSettledLog(lease_id, P, 7200, 36_000, at + 3600))
    records.apply(LeaseClosedLog(lease_id, P, at + 3600))
    if finalize:
        records.apply(LeaseFinalizedLog(lease_id, P, at + 3700))


def test_counts_from_logs() -> None:
    r = ProviderRecords()
    r.apply(ProviderRegisteredLog(P, NOW - 10 * DAY))
    r.apply(StakedLog(P, STAKE, STAKE, NOW - 10 * DAY))
    lease(r, 1, NOW - 9 * DAY)
    lease(r, 2, NOW - 8 * DAY)
    r.apply(LeaseSettledLog(2, P, 3600, 5, NOW - 8 * DAY + 10))  # stale counter, after finalization
    r.apply(UsageClaimedLog(3, P, NOW - 7 * DAY))
    r.apply(ClaimDisputedLog(3, P, NOW - 7 * DAY))
    lease(r, 4, NOW - 6 * DAY, finalize=False)
    r.apply(LivenessChallengedLog(4, P, NOW - 6 * DAY))
    r.apply(LivenessResolvedLog(4, P, NOW - 6 * DAY))
    r.apply(SlashedLog(P, 10**20, NOW - 6 * DAY))
    r.apply(LeaseFinalizedLog(4, P, NOW - 6 * DAY + 100))  # faulted: not completed
    r.apply(UnbondRequestedLog(P, 10**20, NOW - DAY))
    rec = r.get(P)
    assert rec is not None
    assert rec.first_seen == NOW - 10 * DAY and rec.age(NOW) == 10 * DAY
    assert (rec.leases_opened, rec.leases_completed) == (3, 2)
    assert rec.gpu_seconds_settled == 3 * 7200 and rec.gpu_hours_settled == 6.0
    assert rec.amount_settled == 3 * 72_000
    assert (rec.claims_made, rec.claims_disputed) == (1, 1)
    assert (rec.challenges, rec.challenges_missed) == (1, 1)
    assert (rec.slashes, rec.amount_slashed, rec.equivocations) == (1, 10**20, 0)
    assert rec.stake == STAKE - 2 * 10**20
    r.apply(EquivocationReportedLog(9, P, NOW))
    rec = r.get(P)
    assert rec is not None and rec.equivocations == 1 and score(rec, NOW) == 0.0
    assert len(r) == 1 and r.get(b"\x02" * 20) is None


def test_first_seen_is_the_earliest_log() -> None:
    r = ProviderRecords()
    r.apply(StakedLog(P, 1, 1, NOW))
    r.apply(ProviderRegisteredLog(P, NOW - 5))
    rec = r.get(P)
    assert rec is not None and rec.first_seen == NOW - 5


def test_no_history_is_not_ranked_as_good() -> None:
    fresh = ProviderRecord(P, first_seen=NOW)
    assert score(None, NOW) == 0.0
    assert score(fresh, NOW) == 0.0
    # Full stake and a month of age without a lease: at most stake + age shares (0.4), well below a proven one.
    staked_old = ProviderRecord(P, first_seen=NOW - 60 * DAY, stake=STAKE)
    assert abs(score(staked_old, NOW) - 0.40) < 1e-9
    proven = ProviderRecord(P, first_seen=NOW - 60 * DAY, stake=STAKE, leases_completed=90)
    assert score(proven, NOW) > 0.9
    # Stake and age each count.
    assert score(ProviderRecord(P, NOW, stake=STAKE // 2), NOW) < score(ProviderRecord(P, NOW, stake=STAKE), NOW)
    young = ProviderRecord(P, NOW - DAY, stake=STAKE)
    assert score(young, NOW) < score(staked_old, NOW)


def test_faults_weigh_more_than_leases() -> None:
    clean = ProviderRecord(P, NOW - 60 * DAY, stake=STAKE, leases_completed=20)
    disputed = ProviderRecord(P, NOW - 60 * DAY, stake=STAKE, leases_completed=20, claims_disputed=2)
    missed = ProviderRecord(P, NOW - 60 * DAY, stake=STAKE, leases_completed=20, challenges_missed=2)
    assert score(clean, NOW) > score(disputed, NOW) > score(missed, NOW)
    assert history_part(clean) == 20 / 30
    assert history_part(missed) == 20 / 40
