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
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable

from node.errors import UnrecoverableError
from node.storage import legacy_v1

CURRENT_VERSION = 2


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


# from-version -> the migration to from-version + 1, in order
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: _v1_to_v2,
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
