"""SQLite persistence of the offer book (WAL mode, ``synchronous=NORMAL``).

Rows hold the envelope bytes exactly as validated, plus the columns needed to drop rows without decoding them.
On load, rows are decoded strictly; rows that expired, that do not decode, or that belong to another domain are
deleted and counted (a node must start even if one row is bad). Re-checking signatures on load is optional.

Errors: ``sqlite3`` errors propagate (the caller treats storage failure as unrecoverable).
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from node.crypto import eip712
from node.crypto.eip712 import Domain
from node.protocol.offers import (
    MSG_OFFER,
    InvalidOfferEncoding,
    SignedOffer,
    decode_envelope,
    decode_signed_offer,
    offer_id_from_record,
)
from node.types import OfferHash

_SCHEMA = """
CREATE TABLE IF NOT EXISTS offers (
    offer_id   BLOB PRIMARY KEY,
    provider   BLOB NOT NULL,
    expires_at INTEGER NOT NULL,
    blob       BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS offers_expires_at ON offers (expires_at);
CREATE INDEX IF NOT EXISTS offers_provider ON offers (provider);
"""


@dataclass(frozen=True, slots=True)
class StoredOffer:
    offer_id: OfferHash
    signed: SignedOffer
    blob: bytes


class OfferStore:
    """One SQLite file of live offers. Use as a context manager or call ``close()``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = sqlite3.connect(str(self.path), isolation_level=None)  # explicit transactions below
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self.load_counters: Counter[str] = Counter()

    def __enter__(self) -> OfferStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def journal_mode(self) -> str:
        return str(self._db.execute("PRAGMA journal_mode").fetchone()[0])

    def upsert(self, offer_id: bytes, signed: SignedOffer, blob: bytes) -> None:
        self.upsert_many([(offer_id, signed, blob)])

    def upsert_many(self, rows: Iterable[tuple[bytes, SignedOffer, bytes]]) -> None:
        with self._tx():
            self._db.executemany(
                "INSERT INTO offers (offer_id, provider, expires_at, blob) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (offer_id) DO UPDATE SET provider=excluded.provider, "
                "expires_at=excluded.expires_at, blob=excluded.blob",
                [(bytes(i), s.offer.provider, s.offer.expires_at, bytes(b)) for i, s, b in rows],
            )

    def delete(self, offer_ids: Iterable[bytes]) -> int:
        with self._tx():
            cur = self._db.executemany("DELETE FROM offers WHERE offer_id = ?", [(bytes(i),) for i in offer_ids])
            return cur.rowcount

    def delete_expired(self, now: int) -> int:
        with self._tx():
            return self._db.execute("DELETE FROM offers WHERE expires_at <= ?", (now,)).rowcount

    def ids(self) -> list[OfferHash]:
        """Every stored offer id (no decoding), in id order."""
        return [OfferHash(row[0]) for row in self._db.execute("SELECT offer_id FROM offers ORDER BY offer_id")]

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM offers").fetchone()[0])

    def load(self, domain: Domain, now: int, verify_signatures: bool = False) -> list[StoredOffer]:
        """Live offers for ``domain``, in offer-id order. Drops (and deletes) expired, undecodable,
        foreign-domain, id-mismatched and, with ``verify_signatures``, badly signed rows."""
        self.load_counters = Counter()
        self.load_counters["expired"] = self.delete_expired(now)
        escrow = bytes.fromhex(domain.verifying_contract[2:])
        keep: list[StoredOffer] = []
        bad: list[bytes] = []
        for oid, blob in self._db.execute("SELECT offer_id, blob FROM offers ORDER BY offer_id"):
            try:
                env = decode_envelope(blob)
                if env.kind != MSG_OFFER:
                    raise InvalidOfferEncoding("not_an_offer")
                so = decode_signed_offer(env.body)
            except InvalidOfferEncoding:
                self.load_counters["undecodable"] += 1
                bad.append(oid)
                continue
            if env.chain_id != domain.chain_id or env.verifying_contract != escrow:
                self.load_counters["wrong_domain"] += 1
                bad.append(oid)
                continue
            real_id = offer_id_from_record(env.body)
            if real_id != oid:
                self.load_counters["id_mismatch"] += 1
                bad.append(oid)
                continue
            if verify_signatures:
                try:
                    signer = eip712.recover_raw(eip712.digest(domain.separator, real_id), so.signature)
                    ok_sig = signer == so.offer.provider
                except eip712.SignatureError:
                    ok_sig = False
                if not ok_sig:
                    self.load_counters["bad_signature"] += 1
                    bad.append(oid)
                    continue
            keep.append(StoredOffer(OfferHash(oid), so, bytes(blob)))
        if bad:
            self.delete(bad)
        self.load_counters["loaded"] = len(keep)
        return keep

    def _tx(self) -> _Tx:
        return _Tx(self._db)


class _Tx:
    __slots__ = ("db",)

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
