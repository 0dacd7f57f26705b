"""SQLite persistence of the offer book (node.storage.offer_store), on real files."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import pytest
from coincurve import PrivateKey
from eth_utils import keccak

from node.crypto.eip712 import Domain
from node.protocol import offers as O
from node.protocol.offerbook import OfferBook
from node.protocol.offers import Offer, OfferSpec, SignedOffer
from node.storage.offer_store import OfferStore

NOW = 1_700_000_000
DOMAIN = Domain(31337, "0x" + "ab" * 20)
OTHER = Domain(5, "0x" + "ab" * 20)


def key(i: int) -> bytes:
    return (i + 1).to_bytes(32, "big")


def make(i: int, expires: int = NOW + 600, domain: Domain = DOMAIN) -> tuple[bytes, SignedOffer, bytes]:
    k = key(i)
    addr = keccak(PrivateKey(k).public_key.format(compressed=False)[1:])[12:]
    spec = OfferSpec("eu-west", 64, 512, "550", "12.4", "nvlink", {"score": i})
    offer = Offer(addr, i, O.gpu_model_from_name("H100"), 8, 81920, 100 + i, 60, 3600, expires, spec.spec_hash())
    so = O.sign_offer(offer, spec, k, domain)
    return offer.struct_hash(), so, O.encode_offer_message(domain, so)


def test_wal_mode_and_synchronous(tmp_path: Path) -> None:
    with OfferStore(tmp_path / "offers.db") as store:
        assert store.journal_mode() == "wal"
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_survives_reopen_and_rebuilds_book(tmp_path: Path) -> None:
    path = tmp_path / "offers.db"
    rows = [make(i) for i in range(5)]
    with OfferStore(path) as store:
        store.upsert_many(rows)
        store.upsert(*rows[0])  # idempotent
        assert store.delete([rows[4][0]]) == 1
        assert store.count() == 4
        assert store.ids() == sorted(r[0] for r in rows[:4])
    with OfferStore(path) as store:
        loaded = store.load(DOMAIN, NOW, verify_signatures=True)
    assert [s.offer_id for s in loaded] == sorted(r[0] for r in rows[:4])
    by_id = {r[0]: r for r in rows}
    for s in loaded:
        assert s.signed == by_id[s.offer_id][1] and s.blob == by_id[s.offer_id][2]
    book = OfferBook(DOMAIN)
    for s in loaded:
        book.insert(s.signed, s.blob, s.offer_id)
    assert sorted(book.live_offers()) == sorted(r[2] for r in rows[:4])


def test_load_drops_expired_rows(tmp_path: Path) -> None:
    path = tmp_path / "offers.db"
    live, dead = make(0, expires=NOW + 1), make(1, expires=NOW)
    with OfferStore(path) as store:
        store.upsert_many([live, dead])
        loaded = store.load(DOMAIN, NOW)
        assert [s.offer_id for s in loaded] == [live[0]]
        assert store.load_counters["expired"] == 1
        assert store.count() == 1
    with OfferStore(path) as store:
        assert store.delete_expired(NOW + 1) == 1 and store.count() == 0


def test_load_drops_corrupt_foreign_and_forged_rows(tmp_path: Path) -> None:
    path = tmp_path / "offers.db"
    good = make(0)
    foreign = make(1, domain=OTHER)
    oid2, so2, _blob2 = make(2)
    forged_so = SignedOffer(so2.offer, make(3)[1].signature, so2.spec)
    forged = (oid2, forged_so, O.encode_offer_message(DOMAIN, forged_so))
    oid4, so4, blob4 = make(4)
    with OfferStore(path) as store:
        store.upsert_many([good, foreign, forged, (oid4, so4, blob4)])
    with sqlite3.connect(path) as db:  # corrupt one row and mislabel another behind the store's back
        db.execute("UPDATE offers SET blob = ? WHERE offer_id = ?", (blob4[:-1], oid4))
        db.execute("INSERT INTO offers VALUES (?, ?, ?, ?)", (b"\x00" * 32, b"\x00" * 20, NOW + 600, good[2]))
    with OfferStore(path) as store:
        loaded = store.load(DOMAIN, NOW, verify_signatures=True)
        assert [s.offer_id for s in loaded] == [good[0]]
        assert store.load_counters == {
            "expired": 0,
            "undecodable": 1,
            "wrong_domain": 1,
            "id_mismatch": 1,
            "bad_signature": 1,
            "loaded": 1,
        }
        assert store.count() == 1


def test_failed_transaction_rolls_back(tmp_path: Path) -> None:
    with OfferStore(tmp_path / "offers.db") as store:
        good = make(0)
        store.upsert(*good)
        oid, so, blob = make(2)
        broken = SignedOffer(dataclasses.replace(so.offer, expires_at=None), so.signature, so.spec)
        with pytest.raises(sqlite3.IntegrityError):  # row 2 violates NOT NULL after row 1 was written
            store.upsert_many([make(1), (oid, broken, blob)])
        assert store.count() == 1
