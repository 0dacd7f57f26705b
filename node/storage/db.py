"""The node's SQLite database (WAL): transaction intents, leases, heartbeats, checkpoints and the lease change log.

Every write that precedes a side effect commits before the side effect runs (``Database.tx()`` is one SQLite
transaction), so a crash at any line leaves either the old state or the new state plus a record of what was about
to happen, which the node reconciles on restart. The schema is versioned (``node.storage.migrations``).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from node.storage.migrations import migrate

SCHEMA = """
CREATE TABLE IF NOT EXISTS tx_intents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,          -- idempotency key, e.g. settle:31337:5:3
    kind TEXT NOT NULL,
    sender TEXT NOT NULL,
    to_addr TEXT NOT NULL,
    data BLOB NOT NULL,
    value TEXT NOT NULL DEFAULT '0',
    status TEXT NOT NULL,              -- created | sent | mined | reverted | failed | dropped
    nonce INTEGER,
    tx_hash TEXT,
    raw_tx BLOB,
    gas INTEGER,
    max_fee INTEGER,
    tip INTEGER,
    replaced TEXT NOT NULL DEFAULT '',  -- earlier hashes of the same nonce (fee bumps), comma-separated
    gas_used INTEGER,
    block_number INTEGER,
    error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tx_intents_status ON tx_intents(status);

CREATE TABLE IF NOT EXISTS leases (
    lease_id INTEGER NOT NULL,
    role TEXT NOT NULL,                -- consumer | provider
    state BLOB NOT NULL,               -- JSON of the persisted lease (node.storage.lease_store)
    status TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (lease_id, role)
);

CREATE TABLE IF NOT EXISTS lease_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    lease_id INTEGER NOT NULL,
    role TEXT NOT NULL,
    change TEXT NOT NULL,
    events TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS lease_log_lease ON lease_log(lease_id, role);

CREATE TABLE IF NOT EXISTS heartbeats (
    lease_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    body BLOB NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (lease_id, seq)
);

CREATE TABLE IF NOT EXISTS checkpoints (
    lease_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    cumulative INTEGER NOT NULL,
    body BLOB NOT NULL,                -- JSON of the SignedCheckpoint
    status TEXT NOT NULL,              -- accepted | rejected | settled
    reason TEXT NOT NULL DEFAULT '',
    received_at REAL NOT NULL,
    settle_tx TEXT
);
CREATE INDEX IF NOT EXISTS checkpoints_lease ON checkpoints(lease_id, seq);

CREATE TABLE IF NOT EXISTS lease_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    lease_id INTEGER NOT NULL,
    role TEXT NOT NULL,
    event BLOB NOT NULL,               -- tagged JSON of a lease event, to be carried out
    done INTEGER NOT NULL DEFAULT 0,
    error TEXT
);
CREATE INDEX IF NOT EXISTS lease_outbox_pending ON lease_outbox(done);

CREATE TABLE IF NOT EXISTS opens (
    key TEXT PRIMARY KEY,              -- the open transaction's intent key
    offer_id BLOB NOT NULL,
    gpus INTEGER NOT NULL,
    deposit TEXT NOT NULL,
    job_spec BLOB,                     -- plaintext job spec (JSON), kept on this node only
    lease_id INTEGER,
    created_at REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS job_results (
    lease_id INTEGER PRIMARY KEY,
    exit_code INTEGER NOT NULL,
    log_tail TEXT NOT NULL,
    simulated INTEGER NOT NULL,
    at REAL NOT NULL,
    failure TEXT NOT NULL DEFAULT '',
    image_digest TEXT NOT NULL DEFAULT ''
);

CREATE TABLE IF NOT EXISTS lease_logs (
    lease_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,              -- the provider's LOG seq
    dropped INTEGER NOT NULL,          -- bytes of output dropped just before this chunk
    text TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (lease_id, seq)
);

CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


class Database:
    """A thread-safe handle on one SQLite file in WAL mode."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self.conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        try:
            migrate(self.conn, str(path), SCHEMA)
        except BaseException:
            self.conn.close()
            raise

    @contextlib.contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One atomic SQLite transaction."""
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            else:
                self.conn.execute("COMMIT")

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self.conn.execute(sql, params).fetchall())

    def get_kv(self, key: str) -> str | None:
        rows = self.query("SELECT value FROM kv WHERE key = ?", (key,))
        return rows[0]["value"] if rows else None

    def set_kv(self, key: str, value: str) -> None:
        with self.tx() as c:
            c.execute("INSERT INTO kv(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                      (key, value))

    def journal_mode(self) -> str:
        return str(self.query("PRAGMA journal_mode")[0][0])

    def close(self) -> None:
        with self._lock:
            self.conn.close()
