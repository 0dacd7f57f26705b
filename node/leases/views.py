"""What the API shows of a lease: plain dicts built from the state and the stored evidence."""

from __future__ import annotations

from typing import Any

from node.leases.records import LeaseRecord, PersistedLease
from node.storage.lease_store import LeaseStore

MAX_NOTICES_SHOWN = 50


def lease_view(rec: LeaseRecord, store: LeaseStore[PersistedLease]) -> dict[str, Any]:
    s = rec.state
    money, counters = s.ledger, s.counters
    out: dict[str, Any] = {
        "lease_id": s.lease_id, "role": s.role.value, "status": s.status.name, "provider": s.terms.provider,
        "consumer": s.consumer, "gpus": s.gpus, "price_per_gpu_second": str(s.price_per_gpu_second),
        "deposit": str(money.deposit), "paid": str(money.paid), "fees": str(money.fees), "started_at": s.started_at,
        "ends_at": s.ends_at, "closed_at": s.closed_at, "settled_seq": money.settled_seq,
        "settled_gpu_seconds": money.settled_cumulative, "accepted_seq": s.accepted_seq,
        "accepted_gpu_seconds": s.accepted_cumulative, "heartbeats": counters.heartbeats_accepted,
        "rejected_checkpoints": counters.rejected_total,
        "close_reason": s.close_reason.value if s.close_reason else None, "refund": str(money.refund),
        "peer": rec.peer,
    }
    f = s.faults
    out["faults"] = {
        "reason": f.reason, "serving_paused": f.serving_paused, "slashed": str(f.slashed),
        "claim": ({"seq": f.claim_seq, "gpu_seconds": f.claim_cumulative, "ready_at": f.claim_ready_at}
                  if f.claim_seq else None),
        "claims": f.claims, "disputed_seq": f.disputed_seq,
        "challenge_deadline": f.challenge_deadline or None, "challenges": f.challenges,
        "equivocation_reported": f.equivocation_reported,
        "equivocation_seq": f.equivocation_a.checkpoint.seq if f.equivocation_a is not None else None,
    }
    side = s.provider
    if side is not None:
        out.update({"metered_gpu_seconds": side.meter.gpu_seconds, "heartbeats_sent": side.meter.hb_seq,
                    "checkpoints_sent": side.meter.cp_seq, "devices": list(side.devices),
                    "job_running": rec.job_running})
    res = store.job_result(s.lease_id)
    if res is not None:
        out["job_result"] = {"exit_code": res.exit_code, "log_tail": res.log_tail, "simulated": res.simulated,
                             "failure": res.failure or None, "image_digest": res.image_digest or None}
    elif side is not None and side.outcome is not None:
        o = side.outcome  # its tail was cut to the message limit when the job ended
        out["job_result"] = {"exit_code": o.exit_code, "log_tail": o.log_tail, "simulated": o.simulated,
                             "failure": o.failure or None, "image_digest": o.image_digest or None}
    return out


def lease_detail(recs: list[LeaseRecord], store: LeaseStore[PersistedLease],
                 notices: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not recs:
        return None
    out = lease_view(recs[0], store)
    lease_id = recs[0].lease_id
    out["checkpoints"] = [{"seq": r.seq, "gpu_seconds": r.gpu_seconds, "status": r.status, "reason": r.reason}
                          for r in store.checkpoints(lease_id)]
    out["notices"] = [n for n in notices if n["lease_id"] == lease_id][-MAX_NOTICES_SHOWN:]
    return out
