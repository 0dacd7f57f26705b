"""Heartbeat wire format: exact layout, strict decoding, signatures and the hash chain."""

from __future__ import annotations

import struct

import pytest
from eth_utils import keccak
from nacl.signing import SigningKey

from node.protocol import heartbeat as hb
from node.protocol.heartbeat import (
    DeviceUsage,
    Heartbeat,
    HeartbeatError,
    UsageSummary,
    decode,
    decode_usage,
    encode,
    encode_usage,
    heartbeat_hash,
    sign_heartbeat,
    verify_heartbeat,
)

NODE = SigningKey(keccak(b"provider node key"))
NODE_PK = bytes(NODE.verify_key)


def make_hb(**overrides) -> Heartbeat:
    fields = {
        "lease_id": 7,
        "seq": 2,
        "time_ms": 1_700_000_005_000,
        "gpu_seconds": 10,
        "prev_hash": b"\xaa" * 32,
        "usage": encode_usage(UsageSummary(2, (DeviceUsage(97, 81_000, 650), DeviceUsage(5, 1, 70)), True)),
    }
    fields.update(overrides)
    return Heartbeat(**fields)


def test_body_layout_is_exact():
    h = make_hb()
    body = encode(h)
    assert len(body) == hb.BODY_SIZE == 160
    assert body[0] == 1
    assert body[1:33] == (7).to_bytes(32, "big")
    assert struct.unpack(">QQQ", body[33:57]) == (2, 1_700_000_005_000, 10)
    assert body[57:89] == b"\xaa" * 32
    usage = body[89:160]
    assert usage[0] == hb.FLAG_SIMULATED and usage[1] == 2
    assert usage[2:8] == bytes([97]) + (81_000).to_bytes(3, "big") + (650).to_bytes(2, "big")
    assert usage[14:] == bytes(71 - 14)


def test_roundtrip_and_usage_summary():
    h = make_hb()
    assert decode(encode(h)) == h
    s = h.usage_summary()
    assert s.simulated and s.device_count == 2
    assert s.devices[0] == DeviceUsage(97, 81_000, 650)


def test_sign_verify_roundtrip_and_hash():
    h = make_hb()
    signed = sign_heartbeat(h, NODE)
    assert len(signed) == 224
    assert verify_heartbeat(signed, NODE_PK) == h
    assert heartbeat_hash(signed) == keccak(signed)  # the fast keccak path agrees with eth_utils


def test_wrong_key_and_tampering_rejected():
    signed = sign_heartbeat(make_hb(), NODE)
    other = bytes(SigningKey(keccak(b"other")).verify_key)
    with pytest.raises(HeartbeatError):
        verify_heartbeat(signed, other)
    for pos in (0, 40, 100, 159, 170, 223):
        tampered = bytearray(signed)
        tampered[pos] ^= 1
        with pytest.raises(HeartbeatError):
            verify_heartbeat(bytes(tampered), NODE_PK)
    with pytest.raises(HeartbeatError):
        verify_heartbeat(signed[:-1], NODE_PK)
    with pytest.raises(HeartbeatError):
        verify_heartbeat(signed + b"\0", NODE_PK)
    with pytest.raises(HeartbeatError):
        verify_heartbeat(signed, b"\x01" * 31)


def _raw_body(**kw) -> bytes:
    f = {"version": 1, "lease": 7, "seq": 2, "t": 1, "g": 1, "prev": b"\xaa" * 32, "usage": bytes(71)}
    f.update(kw)
    return struct.pack(
        ">B32sQQQ32s71s", f["version"], f["lease"].to_bytes(32, "big"), f["seq"], f["t"], f["g"], f["prev"], f["usage"]
    )


@pytest.mark.parametrize(
    "body",
    [
        _raw_body(version=2),
        _raw_body(seq=0, prev=bytes(32)),
        _raw_body(seq=1),  # seq 1 must have a zero prev hash
        _raw_body(seq=3, prev=bytes(32)),  # only seq 1 may
        _raw_body(usage=b"\x02" + bytes(70)),  # unknown flag
        _raw_body(usage=b"\x00\x01" + bytes([101]) + bytes(68)),  # utilisation > 100
        _raw_body(usage=b"\x00\x01" + bytes(6) + b"\x01" + bytes(62)),  # data past the declared devices
        _raw_body(usage=b"\x00\xff" + bytes(66) + b"\x00\x00\x01"),  # reserved bytes
    ],
)
def test_strict_decode(body):
    with pytest.raises(HeartbeatError):
        decode(body)


def test_decode_wrong_size():
    with pytest.raises(HeartbeatError):
        decode(bytes(159))


def test_many_devices_report_eleven_entries():
    devices = tuple(DeviceUsage(i, i * 1000, i * 10) for i in range(11))
    usage = encode_usage(UsageSummary(16, devices))
    s = decode_usage(usage)
    assert s.device_count == 16 and s.devices == devices and not s.simulated
    with pytest.raises(HeartbeatError):
        encode_usage(UsageSummary(16, (*devices, DeviceUsage(0, 0, 0))))
    with pytest.raises(HeartbeatError):
        encode_usage(UsageSummary(1, (DeviceUsage(0, 2**24, 0),)))


def test_encode_rejects_bad_fields():
    with pytest.raises(HeartbeatError):
        encode(make_hb(seq=0))
    with pytest.raises(HeartbeatError):
        encode(make_hb(prev_hash=b"\0" * 31))
    with pytest.raises(HeartbeatError):
        encode(make_hb(seq=1))  # non-zero prev for seq 1
    with pytest.raises(HeartbeatError):
        encode(make_hb(gpu_seconds=2**64))
    with pytest.raises(HeartbeatError):
        encode(make_hb(usage=bytes(70)))


def test_chain_links_by_hash():
    first = sign_heartbeat(make_hb(seq=1, prev_hash=bytes(32)), NODE)
    second = sign_heartbeat(make_hb(seq=2, prev_hash=heartbeat_hash(first)), NODE)
    assert verify_heartbeat(second, NODE_PK).prev_hash == keccak(first)
