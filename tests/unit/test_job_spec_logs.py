"""Job spec versions 1 and 2, the LOG message, the provider's output stream and the consumer's kept output."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import pytest

from node.protocol import job_spec as J
from node.protocol import lease_messages as lm
from node.provider.log_stream import LogStream, cut_utf8
from node.storage import migrations
from node.storage.db import SCHEMA, Database
from node.storage.lease_store import LeaseStore


def test_version_1_bytes_are_unchanged() -> None:
    job = {"argv": ["python3", "-c", "print('é')"], "env": {"A": "b"}, "timeout_s": 5}
    assert J.job_spec_bytes(job) == json.dumps(job, sort_keys=True, separators=(",", ":")).encode()
    assert J.job_spec_bytes({"argv": ["x"]}) == b'{"argv":["x"],"env":{},"timeout_s":3600}'


def test_version_2_is_canonical_and_checked() -> None:
    raw = J.job_spec_bytes({"image": "busybox", "command": ["sh"], "args": ["-c", "echo hi"], "ports": [80, 22],
                            "resources": {"memory_bytes": 2**20}})
    spec = J.decode_job_spec(raw)
    assert spec.version == 2 and spec.argv == ("sh", "-c", "echo hi") and spec.ports == (22, 80)
    assert spec.resources == (2**20, 0, 0, 0)
    assert J.decode_job_spec(raw.replace(b'"version":2', b'"version": 2')) == spec  # as received, any form
    with pytest.raises(J.JobSpecError, match="not JSON"):
        J.decode_job_spec(b"\xff")


@pytest.mark.parametrize(("job", "field"), [
    ({"image": "busybox"}, "command"),
    ({"image": "bad image", "command": ["x"]}, "image"),
    ({"image": "busybox", "command": ["x"], "ports": [0]}, "ports"),
    ({"image": "busybox", "command": ["x"], "ports": [80, 80]}, "twice"),
    ({"image": "busybox", "command": ["x"], "resources": {"gpus": 1}}, "resources"),
    ({"image": "busybox", "command": ["x"], "resources": {"memory_bytes": -1}}, "memory_bytes"),
    ({"image": "busybox", "command": ["x"], "volumes": []}, "volumes"),
    ({"version": 3, "image": "busybox", "command": ["x"]}, "version"),
    ({"argv": []}, "argv"),
])
def test_malformed_jobs_name_the_field(job: dict, field: str) -> None:
    with pytest.raises(J.JobSpecError, match=field):
        J.parse_job(job)


def test_log_message_round_trip_and_bounds() -> None:
    m = lm.LogMessage(3, 9, "█" * 10 + "\ufffd", 123)
    assert lm.decode_message(lm.encode_message(m)) == m
    with pytest.raises(lm.LeaseMessageError):
        lm.encode_message(lm.LogMessage(3, 0, ""))
    with pytest.raises(lm.LeaseMessageError):
        lm.encode_message(lm.LogMessage(3, 0, "a" * (lm.MAX_LOG_CHUNK_BYTES + 1)))
    r = lm.JobResultMessage(3, 137, "Killed", False, "oom", "sha256:" + "a" * 64)
    assert lm.decode_message(lm.encode_message(r)) == r


def test_cut_utf8_never_splits_a_character() -> None:
    text = "a" + "█" * 10
    for n in range(0, 32):
        head, rest = cut_utf8(text, n)
        assert head + rest == text and len(head.encode()) <= n


async def test_log_stream_joins_split_characters_bounds_its_buffer_and_counts_drops() -> None:
    got: list[tuple[int, str, int]] = []
    gate = asyncio.Event()

    async def send(seq: int, text: str, dropped: int) -> bool:
        await gate.wait()
        got.append((seq, text, dropped))
        return True

    stream = LogStream(send, max_buffered=64, chunk_bytes=16, rate_bytes_per_s=1e9)
    stream.start()
    bar = "█".encode() * 10  # 30 bytes, fed split mid-character
    await stream.feed(bar[:7])
    await stream.feed(bar[7:])
    await stream.feed(b"\xff\xfe\n")
    await stream.feed(b"x" * 100)  # over the buffer: dropped, counted
    gate.set()
    await stream.close()
    text = "".join(t for _, t, _ in got)
    assert text == "█" * 10 + "\ufffd\ufffd\n"
    assert [s for s, _, _ in got] == list(range(len(got)))
    assert all(len(t.encode()) <= 16 for _, t, _ in got)
    assert sum(d for _, _, d in got) == 100 == stream.dropped_bytes


async def test_undelivered_chunks_are_counted_and_seqs_never_reused() -> None:
    got: list[tuple[int, str, int]] = []
    calls = 0

    async def send(seq: int, text: str, dropped: int) -> bool:
        nonlocal calls
        calls += 1
        if calls <= 3:
            return False
        got.append((seq, text, dropped))
        return True

    stream = LogStream(send, chunk_bytes=4)
    stream.start()
    await stream.feed(b"abcdefgh")
    await stream.close()
    assert got == [(1, "efgh", 4)]


def test_kept_output_is_bounded_per_lease_oldest_first(tmp_path) -> None:
    db = Database(tmp_path / "n.sqlite")
    store: LeaseStore[object] = LeaseStore(db, object, {})
    for seq in range(10):
        assert store.append_log(7, seq, 0, "█" * 10, keep_bytes=100)  # 30 bytes each
    assert not store.append_log(7, 9, 0, "again", keep_bytes=100)
    kept = store.logs(7)
    assert [c.seq for c in kept] == [7, 8, 9] and store.log_seqs(7) == (7, 9)
    assert store.logs(7, after=8)[0].seq == 9 and store.logs(8) == []


def test_migration_5_fills_the_new_job_fields() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    v4_schema = SCHEMA.replace(",\n    failure TEXT NOT NULL DEFAULT '',\n    image_digest TEXT NOT NULL DEFAULT ''",
                               "")
    assert v4_schema != SCHEMA
    conn.executescript(v4_schema)
    conn.execute("PRAGMA user_version = 4")
    state = {"provider": {"outcome": {"exit_code": 0, "log_tail": "", "simulated": True}, "job": "ENDED"}}
    conn.execute("INSERT INTO leases(lease_id, role, state, status, updated_at) VALUES(1,'provider',?,'OPEN',0)",
                 (json.dumps(state),))
    start = {"type": "StartJob", "data": {"lease_id": 1, "job": {"argv": ["x"], "env": [], "timeout_s": 5},
                                          "devices": [], "peer": "p"}}
    conn.execute("INSERT INTO lease_outbox(lease_id, role, event) VALUES(1,'provider',?)", (json.dumps(start),))
    conn.execute("INSERT INTO job_results(lease_id, exit_code, log_tail, simulated, at) VALUES(1,0,'',0,0)")
    assert migrations.migrate(conn, ":memory:", SCHEMA) == 4
    row = json.loads(conn.execute("SELECT state FROM leases").fetchone()[0])
    assert row["provider"]["outcome"]["failure"] == "" and row["provider"]["outcome"]["image_digest"] == ""
    ev = json.loads(conn.execute("SELECT event FROM lease_outbox").fetchone()[0])
    assert ev["data"]["job"] == {"argv": ["x"], "env": [], "timeout_s": 5, "image": "", "resources": [0, 0, 0, 0],
                                 "ports": []}
    assert conn.execute("SELECT failure, image_digest FROM job_results").fetchone() == ("", "")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == migrations.CURRENT_VERSION
