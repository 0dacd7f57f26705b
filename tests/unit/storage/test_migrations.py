"""Schema versions: new files start current, newer files are refused, schema-1 files (pickled blobs, written by
an earlier node) migrate to JSON without executing anything and their leases resume."""

from __future__ import annotations

import asyncio
import pickle
import shutil
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import nacl.signing
import pytest

from node.crypto import eip712
from node.leases import EVENT_TYPES, LeaseEngine, LeaseRecord, PersistedLease
from node.protocol import lease as L
from node.protocol.checkpoint import SignedCheckpoint
from node.storage import codec
from node.storage.codec import StoredDataError
from node.storage.db import Database
from node.storage.lease_store import LeaseStore
from node.storage.migrations import CURRENT_VERSION, SchemaTooNew

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "schema_v1"
CONSUMER = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
PROVIDER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def copy_fixture(tmp_path: Path, role: str) -> Path:
    dst = tmp_path / f"{role}.sqlite"
    shutil.copy(FIXTURES / f"{role}.sqlite", dst)
    return dst


def user_version(path: Path) -> int:
    with sqlite3.connect(path) as c:
        return int(c.execute("PRAGMA user_version").fetchone()[0])


def test_new_file_starts_at_the_current_version(tmp_path):
    Database(tmp_path / "n.sqlite").close()
    assert user_version(tmp_path / "n.sqlite") == CURRENT_VERSION


def test_file_from_a_newer_build_is_refused(tmp_path):
    path = tmp_path / "n.sqlite"
    Database(path).close()
    with sqlite3.connect(path) as c:
        c.execute(f"PRAGMA user_version = {CURRENT_VERSION + 1}")
    with pytest.raises(SchemaTooNew, match=f"schema version {CURRENT_VERSION + 1}, newer than this build"):
        Database(path)


def test_schema_1_consumer_migrates_to_exact_typed_state(tmp_path):
    path = copy_fixture(tmp_path, "consumer")
    assert user_version(path) == 0
    db = Database(path)
    assert user_version(path) == CURRENT_VERSION
    store = LeaseStore(db, PersistedLease, EVENT_TYPES)
    [lease] = store.load()
    s = lease
    assert (s.role, s.status, s.lease_id, s.gpus, s.consumer) == (L.Role.CONSUMER, L.LeaseStatus.OPEN, 1, 2, CONSUMER)
    assert s.terms.provider == PROVIDER and len(s.terms.offer_hash) == 32
    assert s.domain == eip712.Domain(31337, s.domain.verifying_contract)
    acc = s.beats.last_accepted
    assert s.counters.accepted_total == 2 and acc is not None and acc.checkpoint.seq == 2
    assert s.beats.head.hash == acc.checkpoint.heartbeat_head and s.beats.tip.seq >= s.beats.head.seq > 0
    assert s.ledger.settled_seq >= 1 and s.ledger.paid == s.price_per_gpu_second * s.ledger.settled_cumulative
    assert lease.provider is None and LeaseRecord(lease).peer.startswith("12D3KooW")
    pending = store.pending()
    assert [type(p.event).__name__ for p in pending] == ["StoreCheckpoint", "ContractSendSettle"]
    assert pending[1].event.signed_cp == acc
    # every outbox row and checkpoint row is JSON now, and decodes
    rows = db.query("SELECT event FROM lease_outbox")
    assert len(rows) == 13 and all(codec.loads_tagged(r["event"], EVENT_TYPES) for r in rows)
    [cp_row] = db.query("SELECT body FROM checkpoints")
    assert codec.loads(SignedCheckpoint, cp_row["body"]).checkpoint.seq == 1
    db.close()
    Database(path).close()  # opening again is a no-op
    assert user_version(path) == CURRENT_VERSION


def test_schema_1_provider_migrates_with_its_meter(tmp_path):
    db = Database(copy_fixture(tmp_path, "provider"))
    [lease] = LeaseStore(db, PersistedLease, EVENT_TYPES).load()
    assert lease.role is L.Role.PROVIDER and lease.status is L.LeaseStatus.OPEN
    side = lease.provider
    assert side is not None and side.job is L.JobPhase.NONE  # a job never survives a restart
    m = side.meter
    assert (m.lease_id, m.gpus, m.hb_seq, m.cp_seq) == (1, 2, 7, 2)
    assert len(m.hb_head) == 32 and side.devices == (0, 1) and side.outq == ()


class _Refusing:
    """A peer transport that is down: every request fails."""

    def set_handler(self, protocol, fn):
        return None

    async def request(self, *args, **kwargs):
        raise ConnectionError("no peers in this test")


def _engine(db: Database, address: str) -> LeaseEngine:
    chain = SimpleNamespace(address=address)
    return LeaseEngine(db=db, chain=chain, escrow=None, token=None, transport=_Refusing(),
                       domain=eip712.Domain(31337, "0x" + "00" * 20), wallet_key=b"\x01" * 32,
                       node_signing_key=nacl.signing.SigningKey(b"\x02" * 32),
                       offer_lookup=lambda _: None, node_key_lookup=lambda _: None,
                       refresh_node_key=lambda _: None, settlement_window=3, heartbeat_interval=0.05,
                       checkpoint_interval=10, settle_interval=10, tick_interval=10)


async def test_schema_1_consumer_resumes_and_carries_out_what_the_crash_left(tmp_path):
    db = Database(copy_fixture(tmp_path, "consumer"))
    engine = _engine(db, CONSUMER)
    await engine.start()
    try:
        rec = engine.leases[(1, "consumer")]
        assert rec.state.status is L.LeaseStatus.OPEN
        # the two events left pending were carried out once: checkpoint 2 stored, its settlement queued
        assert [(r["seq"], r["status"]) for r in db.query("SELECT seq, status FROM checkpoints ORDER BY seq")] == [
            (1, "accepted"), (2, "accepted")]
        assert engine.runner.settlements[1].signed_cp.checkpoint.seq == 2
        assert db.query("SELECT count(*) AS n FROM lease_outbox WHERE done = 0")[0]["n"] == 0
    finally:
        await engine.stop()


async def test_schema_1_provider_resumes_metering(tmp_path):
    db = Database(copy_fixture(tmp_path, "provider"))
    engine = _engine(db, PROVIDER)
    await engine.start()
    try:
        rec = engine.leases[(1, "provider")]
        assert engine.busy_devices() == {0, 1}
        for _ in range(200):  # the resumed serving loop signs the next beat on top of the stored chain
            if rec.state.provider is not None and rec.state.provider.meter.hb_seq > 7:
                break
            await asyncio.sleep(0.02)
        assert rec.state.provider is not None and rec.state.provider.meter.hb_seq > 7 and rec.state.provider.outq
    finally:
        await engine.stop()


def test_a_schema_1_blob_naming_other_code_is_refused_and_nothing_changes(tmp_path):
    path = copy_fixture(tmp_path, "consumer")
    evil = pickle.dumps(SimpleNamespace)  # any class outside the schema-1 shapes
    with sqlite3.connect(path) as c:
        c.execute("UPDATE lease_outbox SET event = ? WHERE id = 1", (evil,))
    with pytest.raises(StoredDataError, match=r"types\.SimpleNamespace, which schema 1 never stored"):
        Database(path)
    assert user_version(path) == 0  # rolled back: the file is as it was
    with sqlite3.connect(path) as c:
        assert c.execute("SELECT event FROM lease_outbox WHERE id = 1").fetchone()[0] == evil
