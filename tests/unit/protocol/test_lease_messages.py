"""Lease-stream wire messages (strict decoding) and sealed job specs (NaCl box between node keys)."""

from __future__ import annotations

import pytest
from eth_utils import keccak
from nacl.signing import SigningKey

from node.crypto import box
from node.crypto.box import BoxError
from node.errors import InvalidMessage
from node.protocol.checkpoint import Checkpoint, SignedCheckpoint
from node.protocol.heartbeat import Heartbeat, sign_heartbeat
from node.protocol.lease import ReceiveCheckpoint, ReceiveHeartbeat, ReceiveJobResult
from node.protocol.lease_messages import (
    MAX_MESSAGE_SIZE,
    AckMessage,
    CheckpointMessage,
    ErrorCode,
    ErrorMessage,
    HeartbeatMessage,
    JobResultMessage,
    JobSpecMessage,
    LeaseMessageError,
    MsgType,
    decode_message,
    encode_message,
    open_job_spec,
    seal_job_spec,
    to_change,
)

CONSUMER_NODE = SigningKey(keccak(b"consumer node"))
PROVIDER_NODE = SigningKey(keccak(b"provider node"))
LEASE = 42


def beat() -> bytes:
    return sign_heartbeat(Heartbeat(LEASE, 1, 1_000, 0, bytes(32)), PROVIDER_NODE)


def samples():
    cp = SignedCheckpoint(Checkpoint(LEASE, 3, 99, b"\x11" * 32, 1_700_000_000), b"\x22" * 65)
    return [
        HeartbeatMessage(LEASE, beat()),
        CheckpointMessage(cp),
        JobResultMessage(LEASE, -9, "killed: out of memory ✗\n", True),
        JobResultMessage(LEASE, 0, "", False),
        AckMessage(LEASE, MsgType.CHECKPOINT, 3),
        ErrorMessage(LEASE, MsgType.CHECKPOINT, 3, ErrorCode.CHECKPOINT_REJECTED, "seq_gap: seq 3, expected 2"),
        seal_job_spec(LEASE, b'{"image": "pytorch"}', CONSUMER_NODE, bytes(PROVIDER_NODE.verify_key)),
    ]


@pytest.mark.parametrize("msg", samples(), ids=lambda m: type(m).__name__)
def test_roundtrip(msg):
    data = encode_message(msg)
    assert data[0] == 1 and data[2:34] == LEASE.to_bytes(32, "big")
    assert decode_message(data) == msg


@pytest.mark.parametrize("msg", samples(), ids=lambda m: type(m).__name__)
def test_truncated_and_extended_messages_rejected(msg):
    data = encode_message(msg)
    for bad in (data[:-1], data + b"\0", data[:10]):
        with pytest.raises(LeaseMessageError):
            decode_message(bad)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: b"\x02" + d[1:],  # version
        lambda d: d[:1] + b"\x09" + d[2:],  # type
    ],
)
def test_unknown_version_and_type(mutate):
    with pytest.raises(LeaseMessageError):
        decode_message(mutate(encode_message(AckMessage(LEASE, MsgType.ACK, 0))))


def test_strict_field_checks():
    ack = encode_message(AckMessage(LEASE, MsgType.HEARTBEAT, 1))
    with pytest.raises(LeaseMessageError):
        decode_message(ack[:34] + b"\x63" + ack[35:])  # unknown referenced type
    err = encode_message(ErrorMessage(LEASE, MsgType.HEARTBEAT, 1, ErrorCode.MALFORMED, "x"))
    with pytest.raises(LeaseMessageError):
        decode_message(err[:43] + b"\x00\x63" + err[45:])  # unknown error code
    res = bytearray(encode_message(JobResultMessage(LEASE, 0, "ab", False)))
    res[38] = 2  # unknown flag
    with pytest.raises(LeaseMessageError):
        decode_message(bytes(res))
    res[38] = 0
    res[-1] = 0xFF  # invalid UTF-8
    with pytest.raises(LeaseMessageError):
        decode_message(bytes(res))
    hb = encode_message(HeartbeatMessage(LEASE, beat()))
    with pytest.raises(LeaseMessageError):
        decode_message(hb[:33] + b"\x07" + hb[34:])  # header lease differs from the beat's
    with pytest.raises(LeaseMessageError):
        decode_message(bytes(MAX_MESSAGE_SIZE + 1))


def test_encode_refuses_oversized_fields():
    with pytest.raises(LeaseMessageError):
        encode_message(JobResultMessage(LEASE, 0, "x" * 5000, False))
    with pytest.raises(LeaseMessageError):
        encode_message(ErrorMessage(LEASE, MsgType.ACK, 0, ErrorCode.INTERNAL, "e" * 300))
    with pytest.raises(LeaseMessageError):
        encode_message(HeartbeatMessage(LEASE, b"\0" * 10))
    with pytest.raises(LeaseMessageError):
        seal_job_spec(LEASE, b"x" * 60_001, CONSUMER_NODE, bytes(PROVIDER_NODE.verify_key))
    assert issubclass(LeaseMessageError, InvalidMessage)


def test_to_change():
    hb, cp, res = samples()[:3]
    assert to_change(hb, 5) == ReceiveHeartbeat(hb.signed, 5)
    assert to_change(cp, 6) == ReceiveCheckpoint(cp.signed_cp, 6)
    assert to_change(res, 7) == ReceiveJobResult(-9, res.log_tail, True, 7)
    assert to_change(AckMessage(LEASE, MsgType.ACK), 8) is None


# ------------------------------------------------------------------------------------------ sealed job spec


def test_job_spec_seal_open():
    spec = b'{"image": "pytorch", "token": "secret"}'
    msg = seal_job_spec(LEASE, spec, CONSUMER_NODE, bytes(PROVIDER_NODE.verify_key))
    assert spec not in msg.sealed
    decoded = decode_message(encode_message(msg))
    assert open_job_spec(decoded, PROVIDER_NODE, bytes(CONSUMER_NODE.verify_key)) == spec


def test_job_spec_bound_to_its_lease():
    msg = seal_job_spec(LEASE, b"spec", CONSUMER_NODE, bytes(PROVIDER_NODE.verify_key))
    moved = JobSpecMessage(LEASE + 1, msg.sealed)
    with pytest.raises(LeaseMessageError):
        open_job_spec(moved, PROVIDER_NODE, bytes(CONSUMER_NODE.verify_key))


def test_box_tamper_and_wrong_keys_rejected():
    sealed = box.seal(b"hello", CONSUMER_NODE, bytes(PROVIDER_NODE.verify_key))
    assert box.open_sealed(sealed, PROVIDER_NODE, bytes(CONSUMER_NODE.verify_key)) == b"hello"
    for pos in (0, 23, 24, len(sealed) - 1):
        bad = bytearray(sealed)
        bad[pos] ^= 0x80
        with pytest.raises(BoxError):
            box.open_sealed(bytes(bad), PROVIDER_NODE, bytes(CONSUMER_NODE.verify_key))
    mallory = SigningKey(keccak(b"mallory"))
    with pytest.raises(BoxError):  # not from the expected sender
        box.open_sealed(sealed, PROVIDER_NODE, bytes(mallory.verify_key))
    with pytest.raises(BoxError):  # not for this recipient
        box.open_sealed(sealed, mallory, bytes(CONSUMER_NODE.verify_key))
    with pytest.raises(BoxError):
        box.open_sealed(sealed[:30], PROVIDER_NODE, bytes(CONSUMER_NODE.verify_key))
    with pytest.raises(BoxError):  # a key that is not a valid curve point does not convert
        box.seal(b"x", CONSUMER_NODE, bytes(32))


def test_sealing_uses_fresh_nonces():
    a = box.seal(b"same", CONSUMER_NODE, bytes(PROVIDER_NODE.verify_key))
    b = box.seal(b"same", CONSUMER_NODE, bytes(PROVIDER_NODE.verify_key))
    assert a != b and a[:24] != b[:24]


def test_error_replies_are_cut_by_utf8_bytes_not_characters():
    from node.leases.consumer import error_reply
    from node.protocol.lease_messages import MAX_ERROR_MESSAGE_BYTES, ErrorCode, ErrorMessage, MsgType, utf8_head

    text = "\u2588" * 200  # 600 bytes of UTF-8 in 200 characters
    reply = decode_message(error_reply(7, MsgType.JOB_SPEC, ErrorCode.MALFORMED, text))
    assert isinstance(reply, ErrorMessage) and reply.lease_id == 7
    assert len(reply.message.encode()) <= MAX_ERROR_MESSAGE_BYTES and set(reply.message) == {"\u2588"}
    assert utf8_head("ok") == "ok" and utf8_head("é" * 3, 5) == "éé"
