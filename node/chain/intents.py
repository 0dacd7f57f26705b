"""The stored intent of each chain write: one row of ``tx_intents`` per idempotency key (see ``node.chain.tx``).

An intent is committed before anything is sent and updated at every step: ``created`` (recorded, not signed),
``sent`` (signed bytes, hash and nonce stored before the broadcast), then ``mined``, ``reverted`` or ``dropped``. A
fee bump or a re-signing replaces ``tx_hash`` and ``raw_tx`` and keeps the earlier hashes in ``replaced``
(comma-separated): any one of them may be the one mined.
"""

from __future__ import annotations

import time
from typing import Any

from node.storage.db import Database

Intent = dict[str, Any]  # a row of tx_intents


class IntentStore:
    """The intents of one wallet (``sender``) in the node's database."""

    def __init__(self, db: Database, sender: str) -> None:
        self.db = db
        self.sender = sender

    def get(self, key: str) -> Intent | None:
        rows = self.db.query("SELECT * FROM tx_intents WHERE key = ?", (key,))
        return dict(rows[0]) if rows else None

    def record(self, key: str, kind: str, to: str, data: bytes, value: int) -> None:
        """A new intent, ``created``; a key already stored is left as it is."""
        now = time.time()
        with self.db.tx() as c:
            c.execute(
                "INSERT OR IGNORE INTO tx_intents(key, kind, sender, to_addr, data, value, status, created_at, "
                "updated_at) VALUES(?,?,?,?,?,?,?,?,?)",
                (key, kind, self.sender, to, data, str(value), "created", now, now),
            )

    def update(self, key: str, **fields: Any) -> None:
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self.db.tx() as c:
            c.execute(f"UPDATE tx_intents SET {cols}, updated_at = ? WHERE key = ?",
                      (*fields.values(), time.time(), key))

    def unfinished(self) -> list[Intent]:
        """This wallet's intents still ``sent`` or ``created`` (what a crash leaves behind), oldest first."""
        rows = self.db.query(
            "SELECT * FROM tx_intents WHERE sender = ? AND status IN ('sent', 'created') ORDER BY id", (self.sender,)
        )
        return [dict(r) for r in rows]


def replaced(intent: Intent) -> list[str]:
    """The hashes an intent was sent under before its current one."""
    return [h for h in (intent.get("replaced") or "").split(",") if h]


def hashes(intent: Intent) -> list[str]:
    """Every hash the intent was sent under, the current one first (any of them may be the one mined)."""
    return [h for h in [intent.get("tx_hash") or "", *replaced(intent)] if h]
