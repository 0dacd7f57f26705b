"""Parts of the p2p layer that need no network: frames, the offers-sync codec and paging, node keys, config, and
the host's judging of messages (verdict counting, REJECT penalty, validator errors)."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from pathlib import Path

import pytest

from node.errors import ConfigError
from node.p2p import GossipParams, P2PConfig, offers_topic
from node.p2p.framing import FrameError, decode_uvarint, encode_frame, encode_uvarint
from node.p2p.host import P2PHost
from node.p2p.keys import load_or_create_node_key, peer_id_of
from node.p2p.sync import (
    OfferPager,
    SyncPage,
    SyncRequest,
    decode_page,
    decode_request,
    encode_page,
    encode_request,
)
from node.types import ACCEPTED, Validation, Verdict


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**20, 2**63])
def test_uvarint_roundtrip(value: int) -> None:
    enc = encode_uvarint(value)
    assert decode_uvarint(enc) == (value, len(enc))


def test_uvarint_rejects_overlong_and_truncated() -> None:
    with pytest.raises(FrameError):
        decode_uvarint(b"\xff" * 11)
    with pytest.raises(FrameError):
        decode_uvarint(b"\x80")
    with pytest.raises(FrameError):
        decode_uvarint(b"\x80\x00")  # non-minimal


def test_encode_frame_caps_size() -> None:
    assert encode_frame(b"abc") == b"\x03abc"
    with pytest.raises(FrameError):
        encode_frame(b"x" * 11, max_bytes=10)


def test_sync_request_roundtrip_and_rejects_garbage() -> None:
    req = SyncRequest(cursor=b"\x01" * 32, limit=256)
    assert decode_request(encode_request(req)) == req
    assert decode_request(encode_request(SyncRequest())) == SyncRequest()
    for bad in [b"", b"\x02\x00\x01\x00", b"\x01\x05abcde\x00\x01", b"\x01\x00\x00\x00", b"\x01\x00\x01\x00\x00"]:
        with pytest.raises(FrameError):
            decode_request(bad)


def test_sync_page_roundtrip_and_rejects_garbage() -> None:
    page = SyncPage((b"a", b"", b"x" * 300), b"\x07" * 32)
    assert decode_page(encode_page(page)) == page
    last = SyncPage((b"z",), None)
    assert decode_page(encode_page(last)) == last
    body = encode_page(page)
    for bad in [body[:-1], body + b"\x00", b"\x01\x02\x00", b"\x09\x00\x00"]:
        with pytest.raises(FrameError):
            decode_page(bad)
    with pytest.raises(FrameError):
        decode_page(encode_page(SyncPage((b"a",) * 5, None)), max_offers=4)


def test_pager_walks_every_offer_once_within_limits() -> None:
    offers = [os.urandom(1000) for _ in range(700)]
    pager = OfferPager(lambda: list(offers), page_offers=256, page_bytes=100_000)
    seen: list[bytes] = []
    cursor = b""
    pages = 0
    while True:
        page = pager.page(SyncRequest(cursor, 1000))
        pages += 1
        assert len(page.blobs) <= 256
        assert len(encode_page(page)) <= 100_000
        seen.extend(page.blobs)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert sorted(seen) == sorted(offers)
    assert pages == 8  # 100 kB pages of ~1 kB offers: 99 per page


def test_pager_cursor_survives_removals() -> None:
    offers = [bytes([i]) * 10 for i in range(10)]
    live = list(offers)
    pager = OfferPager(lambda: list(live), page_offers=4, page_bytes=4096, cache_s=-1)
    first = pager.page(SyncRequest(b"", 4))
    live.remove(first.blobs[0])  # removed after it was served
    second = pager.page(SyncRequest(first.next_cursor, 4))
    assert not set(first.blobs) & set(second.blobs)
    by_hash = sorted(offers, key=lambda b: hashlib.sha256(b).digest())
    assert list(second.blobs) == by_hash[4:8]


def test_pager_new_sync_sees_the_offers_live_now() -> None:
    # A sync that starts right after another (within the snapshot's cache time) must not be served the book of
    # the earlier one: a late joiner would get an offer superseded since, or none at all.
    live: list[bytes] = []
    pager = OfferPager(lambda: list(live), page_offers=4, page_bytes=4096, cache_s=60.0, clock=lambda: 0.0)
    assert pager.page(SyncRequest(b"", 4)).blobs == ()
    live.append(b"old offer")
    assert pager.page(SyncRequest(b"", 4)).blobs == (b"old offer",)
    live[:] = [b"fresh offer"]
    assert pager.page(SyncRequest(b"", 4)).blobs == (b"fresh offer",)


def test_pager_reuses_its_snapshot_between_pages() -> None:
    offers = [bytes([i]) * 10 for i in range(10)]
    calls = []

    def live() -> list[bytes]:
        calls.append(1)
        return list(offers)

    def walk() -> list[bytes]:
        seen: list[bytes] = []
        cursor = b""
        while True:
            page = pager.page(SyncRequest(cursor, 4))
            seen.extend(page.blobs)
            if page.next_cursor is None:
                return seen
            cursor = page.next_cursor

    pager = OfferPager(live, page_offers=4, page_bytes=4096, cache_s=60.0, clock=lambda: 0.0)
    first = pager.page(SyncRequest(b"", 4))
    offers.append(b"added between pages")
    pager.page(SyncRequest(first.next_cursor, 4))
    assert len(calls) == 1  # the second page came from the first page's snapshot
    assert b"added between pages" in walk()  # the next sync sees it


def test_key_created_0600_and_reloaded_same_id(tmp_path) -> None:
    path = tmp_path / "deep" / "dir" / "node.key"
    kp = load_or_create_node_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert peer_id_of(load_or_create_node_key(path)) == peer_id_of(kp)
    assert peer_id_of(kp).startswith("12D3KooW")  # ed25519 identity


def test_key_world_readable_refused(tmp_path) -> None:
    path = tmp_path / "node.key"
    load_or_create_node_key(path)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_or_create_node_key(path)


def test_key_garbage_refused(tmp_path) -> None:
    path = tmp_path / "node.key"
    path.write_bytes(b"not a key")
    path.chmod(0o600)
    with pytest.raises(ConfigError):
        load_or_create_node_key(path)


def test_config_validation(tmp_path) -> None:
    topic = offers_topic(31337, "0xABCDEF0000000000000000000000000000000001")
    assert topic == "gpunet/31337/0xabcdef0000000000000000000000000000000001/offers/1"
    P2PConfig(key_path=tmp_path / "k", topic=topic)
    with pytest.raises(ConfigError):
        P2PConfig(key_path=tmp_path / "k", topic=topic, bootstrap=("/ip4/127.0.0.1/tcp/1",))
    with pytest.raises(ConfigError):
        GossipParams(degree=3, degree_low=4)
    with pytest.raises(ConfigError):
        GossipParams(max_message_bytes=2 * 1024 * 1024)


# --- judging messages (the host's validator wrapper) ---------------------------------------------------------------


def make_host(tmp_path: Path, validate) -> P2PHost:  # type: ignore[no-untyped-def]
    """A host that is never run: ``judge`` needs no network."""
    return P2PHost(P2PConfig(key_path=tmp_path / "node.key", topic="t"), validate)


def counted(host: P2PHost, verdict: str, reason: str) -> float:
    value = host.metrics.registry.get_sample_value(
        "gpunet_gossip_messages_total", {"verdict": verdict, "reason": reason}
    )
    return value or 0.0


def test_judge_counts_each_message_once_and_penalises_only_rejects(tmp_path: Path) -> None:
    def validate(data: bytes, sender: str) -> Validation:
        if data == b"ok":
            return ACCEPTED
        if data == b"late":
            return Validation(Verdict.IGNORE, "expired")
        return Validation(Verdict.REJECT, "malformed")

    host = make_host(tmp_path, validate)
    peer = "12D3KooWPeer"
    assert host.judge(b"ok", peer) is ACCEPTED
    assert host.judge(b"late", peer).verdict is Verdict.IGNORE
    assert host.guard.rejects == {}
    assert host.judge(b"junk", peer).verdict is Verdict.REJECT
    assert host.judge(b"x" * (host.config.gossip.max_message_bytes + 1), peer).reason == "oversize"
    assert host.guard.rejects == {peer: 2.0}
    assert (counted(host, "accept", "ok"), counted(host, "ignore", "expired")) == (1, 1)
    assert (counted(host, "reject", "malformed"), counted(host, "reject", "oversize")) == (1, 1)
    assert host.metrics.verdict_counts() == {
        "accept:ok": 1, "ignore:expired": 1, "reject:malformed": 1, "reject:oversize": 1,
    }
    # the validator was timed for the three messages it saw (the oversize one never reached it)
    assert host.metrics.registry.get_sample_value("gpunet_gossip_validation_seconds_count") == 3


@pytest.mark.parametrize("failure", ["raises", "returns_garbage"])
def test_validator_that_fails_gives_ignore_no_penalty_and_an_error_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, failure: str
) -> None:
    def validate(data: bytes, sender: str) -> Validation:
        if failure == "raises":
            raise KeyError("slot vanished")
        return "yes"  # type: ignore[return-value]

    host = make_host(tmp_path, validate)
    peer = "12D3KooWHonestPeer"
    with caplog.at_level(logging.ERROR, logger="node.p2p.gossip_intake"):
        for _ in range(100):  # far above the ban threshold if these counted as REJECTs
            v = host.judge(b"anything", peer)
            assert (v.verdict, v.reason) == (Verdict.IGNORE, "validator_error")
    assert host.guard.rejects == {} and host.guard.banned == {}
    assert counted(host, "ignore", "validator_error") == 100
    assert counted(host, "reject", "validator_error") == 0
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # rate-limited, with the traceback attached
    assert errors[0].exc_info is not None
    assert isinstance(errors[0].exc_info[1], KeyError if failure == "raises" else TypeError)
