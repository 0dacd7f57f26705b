"""The lease repository: the only owner of the lease tables' SQL and of how lease data is encoded.

Tables (``node.storage.db``): ``leases`` (one row per lease and role: the persisted lease as JSON),
``lease_outbox`` (events to carry out, tagged JSON, ``done`` once carried out), ``lease_log`` (what changed, by
name), ``heartbeats`` (signed beats as received), ``checkpoints`` (each signed checkpoint with its verdict),
``job_results``, ``lease_logs`` (job output a consumer received, bounded per lease), and ``opens`` (the
consumer's open requests with the plaintext job spec, matched to the lease
once ``LeaseOpened`` is seen).

A lease's new state, its change-log line and its outbox events are written in ONE SQLite transaction
(``save``), so after a crash the node finds either the old state, or the new state plus every event still to do.
All values go through ``node.storage.codec`` (strict JSON, never pickle).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from node.storage import codec
from node.storage.db import Database

R = TypeVar("R")
S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class PendingEvent:
    outbox_id: int
    lease_id: int
    role: str
    event: Any


@dataclass(frozen=True, slots=True)
class OpenRequest:
    key: str
    offer_id: bytes
    gpus: int
    deposit: int
    job_spec: bytes | None
    lease_id: int | None


@dataclass(frozen=True, slots=True)
class JobResultRow:
    exit_code: int
    log_tail: str
    simulated: bool
    failure: str = ""
    image_digest: str = ""


@dataclass(frozen=True, slots=True)
class LogChunk:
    seq: int
    dropped: int
    text: str


@dataclass(frozen=True, slots=True)
class CheckpointRow:
    seq: int
    gpu_seconds: int
    status: str
    reason: str


class LeaseStore(Generic[R]):
    """Leases of type ``R`` (a frozen dataclass) and their outbox events (classes named in ``event_types``)."""

    def __init__(self, db: Database, record_type: type[R], event_types: Mapping[str, type]) -> None:
        self.db = db
        self.record_type = record_type
        self.event_types = dict(event_types)

    # ------------------------------------------------------------------------------------------ leases + outbox
    def load(self) -> list[R]:
        return [codec.loads(self.record_type, row["state"]) for row in self.db.query("SELECT state FROM leases")]

    def save(self, lease_id: int, role: str, status: str, record: R, change: object | None = None,
             events: Iterable[object] = ()) -> list[int]:
        """Write the lease, one change-log line (when ``change`` is given) and its events; returns outbox ids."""
        blob = codec.dumps(record)
        events = list(events)
        encoded = [codec.dumps_tagged(ev, self.event_types) for ev in events]
        now = time.time()
        ids: list[int] = []
        with self.db.tx() as c:
            c.execute(
                "INSERT INTO leases(lease_id, role, state, status, updated_at) VALUES(?,?,?,?,?) "
                "ON CONFLICT(lease_id, role) DO UPDATE SET state=excluded.state, status=excluded.status, "
                "updated_at=excluded.updated_at",
                (lease_id, role, blob, status, now),
            )
            if change is not None:
                c.execute("INSERT INTO lease_log(lease_id, role, change, events, at) VALUES(?,?,?,?,?)",
                          (lease_id, role, type(change).__name__, ",".join(type(e).__name__ for e in events), now))
            for body in encoded:
                cur = c.execute("INSERT INTO lease_outbox(lease_id, role, event) VALUES(?,?,?)",
                                (lease_id, role, body))
                ids.append(int(cur.lastrowid or 0))
        return ids

    def pending(self) -> list[PendingEvent]:
        """Outbox events not yet carried out, oldest first."""
        return [PendingEvent(int(r["id"]), int(r["lease_id"]), str(r["role"]),
                             codec.loads_tagged(r["event"], self.event_types))
                for r in self.db.query("SELECT id, lease_id, role, event FROM lease_outbox WHERE done = 0 "
                                       "ORDER BY id")]

    def last_event(self, lease_id: int, role: str, event_type: str) -> Any | None:
        """The newest outbox event of class ``event_type`` of a lease, carried out or not (``None``: none)."""
        rows = self.db.query("SELECT event FROM lease_outbox WHERE lease_id = ? AND role = ? "
                             "AND json_extract(event, '$.type') = ? ORDER BY id DESC LIMIT 1",
                             (lease_id, role, event_type))
        return codec.loads_tagged(rows[0]["event"], self.event_types) if rows else None

    def is_pending(self, outbox_id: int) -> bool:
        """Whether the outbox event is still to be carried out."""
        rows = self.db.query("SELECT done FROM lease_outbox WHERE id = ?", (outbox_id,))
        return bool(rows) and not rows[0]["done"]

    def done(self, outbox_id: int, error: str | None = None) -> None:
        with self.db.tx() as c:
            c.execute("UPDATE lease_outbox SET done = 1, error = ? WHERE id = ?", (error, outbox_id))

    # ------------------------------------------------------------------------------------------ evidence
    # An evidence write may mark its outbox event done in the same transaction (``done=<outbox id>``), so a
    # crash can neither lose the write nor repeat it.
    def store_heartbeat(self, lease_id: int, seq: int, signed: bytes, done: int | None = None) -> None:
        with self.db.tx() as c:
            c.execute("INSERT OR IGNORE INTO heartbeats(lease_id, seq, body, received_at) VALUES(?,?,?,?)",
                      (lease_id, seq, signed, time.time()))
            _mark_done(c, done)

    def store_checkpoint(self, lease_id: int, signed_cp: Any, status: str, reason: str,
                         done: int | None = None) -> None:
        cp = signed_cp.checkpoint
        with self.db.tx() as c:
            c.execute("INSERT INTO checkpoints(lease_id, seq, cumulative, body, status, reason, received_at) "
                      "VALUES(?,?,?,?,?,?,?)", (lease_id, cp.seq, cp.cumulative_gpu_seconds, codec.dumps(signed_cp),
                                                status, reason, time.time()))
            _mark_done(c, done)

    def checkpoints(self, lease_id: int) -> list[CheckpointRow]:
        return [CheckpointRow(int(r["seq"]), int(r["cumulative"]), str(r["status"]), str(r["reason"]))
                for r in self.db.query("SELECT seq, cumulative, status, reason FROM checkpoints WHERE lease_id = ? "
                                       "ORDER BY rowid", (lease_id,))]

    def signed_checkpoint(self, lease_id: int, min_seq: int, below_cumulative: int, signed_type: type[S]
                          ) -> S | None:
        """The provider-signed checkpoint of ``lease_id`` with seq >= ``min_seq`` and cumulative usage below
        ``below_cumulative`` (the lowest seq first): accepted ones, or rejected as equivocation (also signed by the
        provider); ``None`` if there is none. Evidence against a claim."""
        rows = self.db.query("SELECT body FROM checkpoints WHERE lease_id = ? AND seq >= ? AND cumulative < ? "
                             "AND (status = 'accepted' OR reason LIKE 'equivocation%') ORDER BY seq, cumulative "
                             "LIMIT 1", (lease_id, min_seq, below_cumulative))
        return codec.loads(signed_type, rows[0]["body"]) if rows else None

    def store_job_result(self, lease_id: int, exit_code: int, log_tail: str, simulated: bool,
                         done: int | None = None, failure: str = "", image_digest: str = "") -> None:
        with self.db.tx() as c:
            c.execute("INSERT OR REPLACE INTO job_results(lease_id, exit_code, log_tail, simulated, at, failure, "
                      "image_digest) VALUES(?,?,?,?,?,?,?)",
                      (lease_id, exit_code, log_tail, int(simulated), time.time(), failure, image_digest))
            _mark_done(c, done)

    def job_result(self, lease_id: int) -> JobResultRow | None:
        rows = self.db.query("SELECT exit_code, log_tail, simulated, failure, image_digest FROM job_results "
                             "WHERE lease_id = ?", (lease_id,))
        if not rows:
            return None
        r = rows[0]
        return JobResultRow(int(r["exit_code"]), str(r["log_tail"]), bool(r["simulated"]), str(r["failure"]),
                            str(r["image_digest"]))

    # ------------------------------------------------------------------------------------------ job output
    def append_log(self, lease_id: int, seq: int, dropped: int, text: str, keep_bytes: int) -> bool:
        """Keep one chunk of a lease's output (``False``: that seq is already stored); the oldest chunks go once
        the lease holds more than ``keep_bytes`` of text (counted in UTF-8 bytes)."""
        with self.db.tx() as c:
            cur = c.execute("INSERT OR IGNORE INTO lease_logs(lease_id, seq, dropped, text, at) VALUES(?,?,?,?,?)",
                            (lease_id, seq, dropped, text, time.time()))
            if not cur.rowcount:
                return False
            total = int(c.execute("SELECT COALESCE(SUM(LENGTH(CAST(text AS BLOB))), 0) FROM lease_logs "
                                  "WHERE lease_id = ?", (lease_id,)).fetchone()[0])
            while total > keep_bytes:
                row = c.execute("SELECT seq, LENGTH(CAST(text AS BLOB)) FROM lease_logs WHERE lease_id = ? "
                                "ORDER BY seq LIMIT 1", (lease_id,)).fetchone()
                if row is None or int(row[0]) == seq:
                    break
                c.execute("DELETE FROM lease_logs WHERE lease_id = ? AND seq = ?", (lease_id, row[0]))
                total -= int(row[1])
        return True

    def logs(self, lease_id: int, after: int = -1, limit: int = 256) -> list[LogChunk]:
        """Kept chunks of a lease's output with seq > ``after``, oldest first."""
        return [LogChunk(int(r["seq"]), int(r["dropped"]), str(r["text"]))
                for r in self.db.query("SELECT seq, dropped, text FROM lease_logs WHERE lease_id = ? AND seq > ? "
                                       "ORDER BY seq LIMIT ?", (lease_id, after, limit))]

    def log_seqs(self, lease_id: int) -> tuple[int, int] | None:
        """The lowest and highest kept seq of a lease's output."""
        rows = self.db.query("SELECT MIN(seq) AS lo, MAX(seq) AS hi FROM lease_logs WHERE lease_id = ?",
                             (lease_id,))
        return (int(rows[0]["lo"]), int(rows[0]["hi"])) if rows and rows[0]["hi"] is not None else None

    # ------------------------------------------------------------------------------------------ consumer opens
    def record_open(self, key: str, offer_id: bytes, gpus: int, deposit: int, job_spec: bytes | None) -> None:
        with self.db.tx() as c:
            c.execute("INSERT INTO opens(key, offer_id, gpus, deposit, job_spec, created_at) VALUES(?,?,?,?,?,?)",
                      (key, bytes(offer_id), gpus, str(deposit), job_spec, time.time()))

    def unbound_open(self, offer_id: bytes, gpus: int) -> str | None:
        """The oldest open request for (offer, gpus) not yet matched to a lease (after a restart)."""
        rows = self.db.query("SELECT key FROM opens WHERE lease_id IS NULL AND offer_id = ? AND gpus = ? "
                             "ORDER BY created_at", (bytes(offer_id), gpus))
        return str(rows[0]["key"]) if rows else None

    def open_request(self, key: str) -> OpenRequest | None:
        rows = self.db.query("SELECT * FROM opens WHERE key = ?", (key,))
        return _open_row(rows[0]) if rows else None

    def bind_open(self, key: str, lease_id: int) -> None:
        with self.db.tx() as c:
            c.execute("UPDATE opens SET lease_id = ? WHERE key = ?", (lease_id, key))

    def job_spec(self, lease_id: int) -> bytes | None:
        rows = self.db.query("SELECT job_spec FROM opens WHERE lease_id = ?", (lease_id,))
        return bytes(rows[0]["job_spec"]) if rows and rows[0]["job_spec"] else None


def _mark_done(c: sqlite3.Connection, outbox_id: int | None) -> None:
    if outbox_id is not None:
        c.execute("UPDATE lease_outbox SET done = 1, error = NULL WHERE id = ?", (outbox_id,))


def _open_row(r: Any) -> OpenRequest:
    return OpenRequest(key=str(r["key"]), offer_id=bytes(r["offer_id"]), gpus=int(r["gpus"]),
                       deposit=int(r["deposit"]), job_spec=bytes(r["job_spec"]) if r["job_spec"] else None,
                       lease_id=int(r["lease_id"]) if r["lease_id"] is not None else None)
