"""Schema versions of the node database and the ordered migrations between them.

The version lives in SQLite's ``PRAGMA user_version``. ``Database`` runs, in one transaction each, every migration
from the file's version up to ``CURRENT_VERSION``; a file from a newer build is refused (``SchemaTooNew``) rather
than misread. Each migration is a function of the stored *data* (rows, JSON), never of today's classes, so old
migrations keep working however the code moves on.

Versions:
  1. (implicit, ``user_version`` 0 with tables present) lease blobs are Python pickles.
  2. lease rows, outbox events and checkpoints are JSON (``node.storage.codec``); the lease row holds
     ``{"state", "meter", "peer", "devices", "outq", "result_sent", "final_sent"}``, an outbox event is tagged
     ``{"type", "data"}`` and a checkpoint row holds a ``SignedCheckpoint``.
  3. the lease row is the ``LeaseState`` itself, in named parts: ``ledger`` (money), ``beats`` (the consumer's
     verified heartbeat chain), ``counters``, and ``provider`` (meter, devices, the consumer's peer, the job, the
     outgoing queue and its flags; ``null`` for a consumer lease).
  4. the lease state gains ``faults`` (where the lease stands on the escrow's claim, dispute, liveness and
     equivocation paths) and its ``config`` the fault-path settings (``max_unsettled_s``, ``challenge_after_ms``,
     ``fault_retry_ms``); rows written before get their defaults.
  5. container jobs and live logs: a job request gains ``image``, ``resources`` and ``ports``, a job's end and a
     stored job result ``failure`` and ``image_digest``; table ``lease_logs`` holds the job output a consumer
     received (created by the schema script).
  6. the lease state's ``faults`` gains ``dispute_evidence`` (the checkpoint a consumer's dispute rests on, kept so
     a failed dispute can be sent again); rows written before get ``null``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

from node.errors import UnrecoverableError
from node.storage import legacy_v1

CURRENT_VERSION = 6


class SchemaTooNew(UnrecoverableError, RuntimeError):
    pass


def _dump(data: object) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _v1_to_v2(c: sqlite3.Connection) -> None:
    for lease_id, role, blob in c.execute("SELECT lease_id, role, state FROM leases").fetchall():
        state, meter, peer, devices, outq, flags = legacy_v1.read_pickle(blob)
        result_sent, final_sent = flags
        row = {"state": legacy_v1.to_v2(state), "meter": legacy_v1.to_v2(meter), "peer": peer,
               "devices": list(devices), "outq": legacy_v1.to_v2(list(outq)), "result_sent": result_sent,
               "final_sent": final_sent}
        c.execute("UPDATE leases SET state = ? WHERE lease_id = ? AND role = ?", (_dump(row), lease_id, role))
    for oid, blob in c.execute("SELECT id, event FROM lease_outbox").fetchall():
        ev = legacy_v1.read_pickle(blob)
        c.execute("UPDATE lease_outbox SET event = ? WHERE id = ?",
                  (_dump({"type": legacy_v1.class_name(ev), "data": legacy_v1.to_v2(ev)}), oid))
    for rowid, blob in c.execute("SELECT rowid, body FROM checkpoints").fetchall():
        c.execute("UPDATE checkpoints SET body = ? WHERE rowid = ?",
                  (_dump(legacy_v1.to_v2(legacy_v1.read_pickle(blob))), rowid))


_ZERO_HASH = "0x" + "00" * 32
_LEDGER = ("deposit", "settled_seq", "settled_cumulative", "paid", "fees", "refund", "pending_settlement",
           "last_settle_sent_ms", "last_settle_sent_seq", "settle_blocked_until_ms", "topup_in_flight",
           "topup_notified_for_ends_at")
_COUNTERS = ("consecutive_rejections", "rejected_total", "accepted_total", "heartbeats_accepted",
             "heartbeats_rejected")
_SHARED = ("role", "terms", "consumer", "gpus", "domain", "config", "status", "lease_id", "price_per_gpu_second",
           "started_at", "ends_at", "closed_at", "now_ms", "job_spec_hash", "close_reason")


def lease_row_v2_to_v3(row: dict[str, Any]) -> dict[str, Any]:
    """A v2 lease row (``{"state", "meter", ...}``) as a v3 ``LeaseState`` (pure: JSON in, JSON out)."""
    s = row["state"]
    acc = s["last_accepted"]
    state = {k: s[k] for k in _SHARED}
    state["ledger"] = {k: s[k] for k in _LEDGER}
    state["counters"] = {k: s[k] for k in _COUNTERS}
    state["beats"] = {
        "last_accepted": acc,
        "accepted_digest": s["accepted_digest"],
        "head": {"seq": s["accepted_head_seq"], "hash": acc["checkpoint"]["heartbeat_head"] if acc else _ZERO_HASH,
                 "time_ms": s["accepted_head_time_ms"], "gpu_seconds": s["accepted_head_gpu_seconds"]},
        "tip": {"seq": s["tip_seq"], "hash": s["tip_hash"], "time_ms": s["tip_time_ms"],
                "gpu_seconds": s["tip_gpu_seconds"]},
        "pending": s["pending_beats"],
        "last_beat_at_ms": s["last_beat_at_ms"],
        "silence_notified": s["silence_notified"],
    }
    state["provider"] = None
    if row["meter"] is not None:  # the job itself never survives a restart: it is not running any more
        state["provider"] = {"meter": row["meter"], "devices": row["devices"], "peer": row["peer"], "job": "NONE",
                             "job_error": "", "outcome": None, "result_sent": row["result_sent"],
                             "final_sent": row["final_sent"], "outq": row["outq"]}
    return state


def _v2_to_v3(c: sqlite3.Connection) -> None:
    for lease_id, role, text in c.execute("SELECT lease_id, role, state FROM leases").fetchall():
        c.execute("UPDATE leases SET state = ? WHERE lease_id = ? AND role = ?",
                  (_dump(lease_row_v2_to_v3(json.loads(text))), lease_id, role))


# the v4 defaults, spelled out: a migration never reads today's classes
_FAULTS_V4: dict[str, Any] = {
    "serving_paused": False, "last_signed": None, "claim_sent_seq": 0, "claim_seq": 0, "claim_cumulative": 0,
    "claim_ready_at": 0, "claim_finalize_sent": False, "claims": 0, "disputed_seq": 0, "dispute_sent_seq": 0,
    "challenge_deadline": 0, "challenge_sent": False, "challenges": 0, "cooldown_until": 0, "answered_deadline": 0,
    "resolve_sent": False, "equivocation_a": None, "equivocation_b": None, "equivocation_sent": False,
    "equivocation_reported": False, "slashed": 0, "retry_after_ms": 0, "reason": "",
}
_CONFIG_V4: dict[str, Any] = {"max_unsettled_s": 600, "challenge_after_ms": 60_000, "fault_retry_ms": 5_000}


def lease_row_v3_to_v4(state: dict[str, Any]) -> dict[str, Any]:
    """A v3 ``LeaseState`` row with the v4 fault-path fields at their defaults (pure: JSON in, JSON out)."""
    out = dict(state)
    out["faults"] = dict(_FAULTS_V4)
    out["config"] = {**_CONFIG_V4, **state["config"]}
    return out


def _v3_to_v4(c: sqlite3.Connection) -> None:
    for lease_id, role, text in c.execute("SELECT lease_id, role, state FROM leases").fetchall():
        c.execute("UPDATE leases SET state = ? WHERE lease_id = ? AND role = ?",
                  (_dump(lease_row_v3_to_v4(json.loads(text))), lease_id, role))


_JOB_REQUEST_V5: dict[str, Any] = {"image": "", "resources": [0, 0, 0, 0], "ports": []}
_JOB_END_V5: dict[str, Any] = {"failure": "", "image_digest": ""}


def lease_row_v4_to_v5(state: dict[str, Any]) -> dict[str, Any]:
    """A v4 ``LeaseState`` row whose job end (provider side) gets the v5 fields at their defaults (pure)."""
    out = dict(state)
    side = out.get("provider")
    if side is not None and side.get("outcome") is not None:
        out["provider"] = {**side, "outcome": {**_JOB_END_V5, **side["outcome"]}}
    return out


def outbox_event_v4_to_v5(event: dict[str, Any]) -> dict[str, Any]:
    """A v4 tagged outbox event with the v5 job fields at their defaults (pure)."""
    kind, data = event.get("type"), event.get("data")
    if kind == "StartJob" and isinstance(data, dict):
        return {**event, "data": {**data, "job": {**_JOB_REQUEST_V5, **data["job"]}}}
    if kind == "StoreJobResult" and isinstance(data, dict):
        return {**event, "data": {**_JOB_END_V5, **data}}
    return event


def _v4_to_v5(c: sqlite3.Connection) -> None:
    for lease_id, role, text in c.execute("SELECT lease_id, role, state FROM leases").fetchall():
        c.execute("UPDATE leases SET state = ? WHERE lease_id = ? AND role = ?",
                  (_dump(lease_row_v4_to_v5(json.loads(text))), lease_id, role))
    for oid, text in c.execute("SELECT id, event FROM lease_outbox").fetchall():
        c.execute("UPDATE lease_outbox SET event = ? WHERE id = ?", (_dump(outbox_event_v4_to_v5(json.loads(text))),
                                                                     oid))
    columns = {r[1] for r in c.execute("PRAGMA table_info(job_results)").fetchall()}
    for column in ("failure", "image_digest"):
        if column not in columns:
            c.execute(f"ALTER TABLE job_results ADD COLUMN {column} TEXT NOT NULL DEFAULT ''")


def lease_row_v5_to_v6(state: dict[str, Any]) -> dict[str, Any]:
    """A v5 ``LeaseState`` row whose faults get ``dispute_evidence`` (none yet) (pure)."""
    faults = state.get("faults")
    if not isinstance(faults, dict):
        return state
    return {**state, "faults": {"dispute_evidence": None, **faults}}


def _v5_to_v6(c: sqlite3.Connection) -> None:
    for lease_id, role, text in c.execute("SELECT lease_id, role, state FROM leases").fetchall():
        c.execute("UPDATE leases SET state = ? WHERE lease_id = ? AND role = ?",
                  (_dump(lease_row_v5_to_v6(json.loads(text))), lease_id, role))


# from-version -> the migration to from-version + 1, in order
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: _v1_to_v2,
    2: _v2_to_v3,
    3: _v3_to_v4,
    4: _v4_to_v5,
    5: _v5_to_v6,
}


def migrate(conn: sqlite3.Connection, path: str, schema: str) -> int:
    """Bring the database at ``conn`` to ``CURRENT_VERSION``; returns the version it was at."""
    found = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if found > CURRENT_VERSION:
        raise SchemaTooNew(f"database {path} has schema version {found}, newer than this build's "
                           f"{CURRENT_VERSION}: it was written by a newer gpunet; upgrade, or use another data "
                           "directory")
    has_tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'leases'"
                              ).fetchone()[0] > 0
    if found == 0 and not has_tables:  # a new file
        conn.executescript(schema)
        conn.execute(f"PRAGMA user_version = {CURRENT_VERSION}")
        return CURRENT_VERSION
    version = found or 1
    start = version
    while version < CURRENT_VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            raise UnrecoverableError(f"no migration from schema version {version} of {path}")
        conn.execute("BEGIN IMMEDIATE")
        try:
            step(conn)
            conn.execute(f"PRAGMA user_version = {version + 1}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        version += 1
    conn.executescript(schema)  # tables added since (CREATE ... IF NOT EXISTS)
    return start
