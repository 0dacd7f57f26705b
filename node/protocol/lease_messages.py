"""Typed messages of the lease stream ``/gpunet/lease/1.0.0``: strict, versioned, size-capped binary encoding.

One message per frame (the stream framing is the p2p layer's). Every message starts with the same header,
integers big-endian::

    version u8 (= 1) | type u8 | leaseId u256

followed by a body fixed per type:

=============  ====  ==========================================================================================
type           code  body
=============  ====  ==========================================================================================
JOB_SPEC          1  len u32 | sealed (nonce 24 || box); sealed plaintext = leaseId u256 || spec (<= 60,000 B)
JOB_RESULT        2  exitCode i32 | flags u8 (bit 0 simulated, bit 1 outcome) | len u16 | log tail UTF-8 (<= 4,096 B)
                     [flag bit 1 only: failLen u8 | failure ASCII | digestLen u8 | image digest ASCII (<= 128 B each)]
HEARTBEAT         3  the 224-byte signed heartbeat (its leaseId must equal the header's)
CHECKPOINT        4  seq u64 | cumulativeGpuSeconds u64 | heartbeatHead bytes32 | timestamp u64 | sig 65 B
ACK               5  refType u8 | refSeq u64
ERROR             6  refType u8 | refSeq u64 | code u16 | len u16 | message UTF-8 (<= 256 B)
LOG               7  seq u64 | dropped u64 | len u16 | output UTF-8 (1..49,152 B), cut on a character boundary
=============  ====  ==========================================================================================

``LOG`` (provider -> consumer) carries the job's output while it runs, in order (``seq`` from 0); ``dropped`` is
how many bytes of output the provider dropped just before this chunk (its buffer was full).

Decoding rejects unknown versions/types/codes, wrong lengths, trailing bytes, unknown flag bits, invalid UTF-8
and anything over :data:`MAX_MESSAGE_SIZE`, raising :class:`LeaseMessageError` (an ``InvalidMessage``).
The job spec travels sealed (node/crypto/box.py) with the lease id inside the box, so a sealed spec cannot be
replayed into another lease between the same two nodes.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

import nacl.signing

from node.crypto import box
from node.errors import InvalidMessage
from node.protocol import heartbeat as hbmod
from node.protocol.checkpoint import Checkpoint, SignedCheckpoint
from node.protocol.lease_state import ReceiveCheckpoint, ReceiveHeartbeat, ReceiveJobResult

PROTOCOL_ID = "/gpunet/lease/1.0.0"
WIRE_VERSION = 1
MAX_JOB_SPEC_BYTES = 60_000
MAX_LOG_TAIL_BYTES = 4_096
MAX_ERROR_MESSAGE_BYTES = 256
MAX_LOG_CHUNK_BYTES = 49_152
MAX_OUTCOME_FIELD_BYTES = 128
MAX_MESSAGE_SIZE = 64 * 1024
_HEADER = struct.Struct(">BB32s")
_CHECKPOINT = struct.Struct(">QQ32sQ65s")
_JOB_RESULT = struct.Struct(">iBH")
_ACK = struct.Struct(">BQ")
_ERROR = struct.Struct(">BQHH")
_LOG = struct.Struct(">QQH")
_U64_MAX = 2**64 - 1


class LeaseMessageError(InvalidMessage):
    """A lease-stream message failed strict decoding or encoding."""


class MsgType(enum.IntEnum):
    JOB_SPEC = 1
    JOB_RESULT = 2
    HEARTBEAT = 3
    CHECKPOINT = 4
    ACK = 5
    ERROR = 6
    LOG = 7


class ErrorCode(enum.IntEnum):
    MALFORMED = 1
    UNKNOWN_LEASE = 2
    HEARTBEAT_REJECTED = 3
    CHECKPOINT_REJECTED = 4  # message: the RejectReason value and detail
    JOB_SPEC_REJECTED = 5
    INTERNAL = 6


@dataclass(frozen=True, slots=True)
class JobSpecMessage:
    lease_id: int
    sealed: bytes


@dataclass(frozen=True, slots=True)
class JobResultMessage:
    lease_id: int
    exit_code: int
    log_tail: str
    simulated: bool
    failure: str = ""  # with image_digest: sent (flag bit 1) when either is set
    image_digest: str = ""


@dataclass(frozen=True, slots=True)
class LogMessage:
    lease_id: int
    seq: int
    text: str
    dropped: int = 0


@dataclass(frozen=True, slots=True)
class HeartbeatMessage:
    lease_id: int
    signed: bytes


@dataclass(frozen=True, slots=True)
class CheckpointMessage:
    signed_cp: SignedCheckpoint

    @property
    def lease_id(self) -> int:
        return self.signed_cp.checkpoint.lease_id


@dataclass(frozen=True, slots=True)
class AckMessage:
    lease_id: int
    ref_type: MsgType
    ref_seq: int = 0


@dataclass(frozen=True, slots=True)
class ErrorMessage:
    lease_id: int
    ref_type: MsgType
    ref_seq: int
    code: ErrorCode
    message: str = ""


LeaseMessage = (JobSpecMessage | JobResultMessage | HeartbeatMessage | CheckpointMessage | AckMessage | ErrorMessage
                | LogMessage)


def _header(kind: MsgType, lease_id: int) -> bytes:
    if not isinstance(lease_id, int) or not 0 <= lease_id < 2**256:
        raise LeaseMessageError("lease id out of range")
    return _HEADER.pack(WIRE_VERSION, kind, lease_id.to_bytes(32, "big"))


def _utf8(text: str, cap: int, what: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > cap:
        raise LeaseMessageError(f"{what} longer than {cap} bytes")
    return raw


def utf8_head(text: str, max_bytes: int = MAX_ERROR_MESSAGE_BYTES) -> str:
    """The start of ``text`` that fits in ``max_bytes`` of UTF-8, cut on a character boundary (error messages)."""
    raw = text.encode("utf-8")
    if len(raw) <= max_bytes:
        return text
    return raw[:max_bytes].decode("utf-8", errors="ignore")  # drops only the split last character


def utf8_tail(text: str | bytes, max_bytes: int = MAX_LOG_TAIL_BYTES) -> str:
    """The end of ``text`` that fits in ``max_bytes`` of UTF-8, cut on a character boundary.

    Bytes are decoded leniently first (invalid sequences become U+FFFD). Every log tail that goes into a
    ``JOB_RESULT`` (or is shown as one) is cut here: a character count is not a byte count.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    raw = text.encode("utf-8")
    if len(raw) <= max_bytes:
        return text
    cut = raw[len(raw) - max_bytes :]
    start = 0
    while start < len(cut) and cut[start] & 0xC0 == 0x80:  # skip the continuation bytes of a split character
        start += 1
    return cut[start:].decode("utf-8")


def encode_message(msg: LeaseMessage) -> bytes:
    if isinstance(msg, HeartbeatMessage):
        if len(msg.signed) != hbmod.SIGNED_SIZE:
            raise LeaseMessageError("heartbeat must be 224 bytes")
        out = _header(MsgType.HEARTBEAT, msg.lease_id) + msg.signed
    elif isinstance(msg, CheckpointMessage):
        cp = msg.signed_cp.checkpoint
        if not all(0 <= x <= _U64_MAX for x in (cp.seq, cp.cumulative_gpu_seconds, cp.timestamp)):
            raise LeaseMessageError("checkpoint field out of range")
        if len(cp.heartbeat_head) != 32 or len(msg.signed_cp.signature) != 65:
            raise LeaseMessageError("checkpoint head must be 32 bytes and signature 65 bytes")
        body = _CHECKPOINT.pack(
            cp.seq, cp.cumulative_gpu_seconds, cp.heartbeat_head, cp.timestamp, msg.signed_cp.signature
        )
        out = _header(MsgType.CHECKPOINT, cp.lease_id) + body
    elif isinstance(msg, JobSpecMessage):
        if len(msg.sealed) > MAX_JOB_SPEC_BYTES + 32 + box.OVERHEAD:
            raise LeaseMessageError("sealed job spec too large")
        out = _header(MsgType.JOB_SPEC, msg.lease_id) + len(msg.sealed).to_bytes(4, "big") + msg.sealed
    elif isinstance(msg, JobResultMessage):
        if not -(2**31) <= msg.exit_code < 2**31:
            raise LeaseMessageError("exit code out of range")
        log = _utf8(msg.log_tail, MAX_LOG_TAIL_BYTES, "log tail")
        extended = bool(msg.failure or msg.image_digest)
        flags = int(msg.simulated) | (2 if extended else 0)
        out = _header(MsgType.JOB_RESULT, msg.lease_id) + _JOB_RESULT.pack(msg.exit_code, flags, len(log))
        out += log
        if extended:
            for value, what in ((msg.failure, "failure"), (msg.image_digest, "image digest")):
                raw = _ascii(value, what)
                out += bytes([len(raw)]) + raw
    elif isinstance(msg, LogMessage):
        if not 0 <= msg.seq <= _U64_MAX or not 0 <= msg.dropped <= _U64_MAX:
            raise LeaseMessageError("log seq or dropped out of range")
        text = _utf8(msg.text, MAX_LOG_CHUNK_BYTES, "log chunk")
        if not text:
            raise LeaseMessageError("empty log chunk")
        out = _header(MsgType.LOG, msg.lease_id) + _LOG.pack(msg.seq, msg.dropped, len(text)) + text
    elif isinstance(msg, AckMessage):
        if not 0 <= msg.ref_seq <= _U64_MAX:
            raise LeaseMessageError("ref seq out of range")
        out = _header(MsgType.ACK, msg.lease_id) + _ACK.pack(MsgType(msg.ref_type), msg.ref_seq)
    elif isinstance(msg, ErrorMessage):
        if not 0 <= msg.ref_seq <= _U64_MAX:
            raise LeaseMessageError("ref seq out of range")
        text = _utf8(msg.message, MAX_ERROR_MESSAGE_BYTES, "error message")
        out = _header(MsgType.ERROR, msg.lease_id) + _ERROR.pack(
            MsgType(msg.ref_type), msg.ref_seq, ErrorCode(msg.code), len(text)
        )
        out += text
    else:
        raise LeaseMessageError(f"not a lease message: {type(msg).__name__}")
    if len(out) > MAX_MESSAGE_SIZE:
        raise LeaseMessageError("message too large")
    return out


def _ascii(value: str, what: str) -> bytes:
    if not value.isascii() or not value.isprintable() or len(value) > MAX_OUTCOME_FIELD_BYTES:
        raise LeaseMessageError(f"{what} must be printable ASCII of at most {MAX_OUTCOME_FIELD_BYTES} bytes")
    return value.encode("ascii")


def _take_ascii(body: bytes, at: int, what: str) -> tuple[str, int]:
    if at >= len(body):
        raise LeaseMessageError(f"job result {what} missing")
    n = body[at]
    raw = body[at + 1 : at + 1 + n]
    if len(raw) != n or n > MAX_OUTCOME_FIELD_BYTES:
        raise LeaseMessageError(f"job result {what} truncated or too long")
    text = raw.decode("ascii", errors="replace")
    if not text.isascii() or not text.isprintable():
        raise LeaseMessageError(f"job result {what} is not printable ASCII")
    return text, at + 1 + n


def _decode_text(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise LeaseMessageError(f"{what} is not valid UTF-8") from exc


def _exact(body: bytes, size: int, what: str) -> None:
    if len(body) != size:
        raise LeaseMessageError(f"{what} body must be {size} bytes, got {len(body)}")


def decode_message(data: bytes) -> LeaseMessage:
    """Strictly decode one message; raises :class:`LeaseMessageError`."""
    data = bytes(data)
    if len(data) > MAX_MESSAGE_SIZE:
        raise LeaseMessageError("message too large")
    if len(data) < _HEADER.size:
        raise LeaseMessageError("message shorter than its header")
    version, kind, lease_raw = _HEADER.unpack_from(data)
    if version != WIRE_VERSION:
        raise LeaseMessageError(f"unsupported lease message version {version}")
    lease_id = int.from_bytes(lease_raw, "big")
    body = data[_HEADER.size :]
    try:
        kind = MsgType(kind)
    except ValueError:
        raise LeaseMessageError(f"unknown lease message type {kind}") from None

    if kind is MsgType.HEARTBEAT:
        _exact(body, hbmod.SIGNED_SIZE, "heartbeat")
        if body[1:33] != lease_raw:
            raise LeaseMessageError("heartbeat lease id differs from the header")
        return HeartbeatMessage(lease_id, body)
    if kind is MsgType.CHECKPOINT:
        _exact(body, _CHECKPOINT.size, "checkpoint")
        seq, cumulative, head, timestamp, sig = _CHECKPOINT.unpack(body)
        return CheckpointMessage(SignedCheckpoint(Checkpoint(lease_id, seq, cumulative, head, timestamp), sig))
    if kind is MsgType.JOB_SPEC:
        if len(body) < 4:
            raise LeaseMessageError("job spec body too short")
        n = int.from_bytes(body[:4], "big")
        if n > MAX_JOB_SPEC_BYTES + 32 + box.OVERHEAD or n < 32 + box.OVERHEAD:
            raise LeaseMessageError("sealed job spec size out of range")
        _exact(body, 4 + n, "job spec")
        return JobSpecMessage(lease_id, body[4:])
    if kind is MsgType.JOB_RESULT:
        if len(body) < _JOB_RESULT.size:
            raise LeaseMessageError("job result body too short")
        exit_code, flags, n = _JOB_RESULT.unpack_from(body)
        if flags & ~3:
            raise LeaseMessageError("unknown job result flags")
        if n > MAX_LOG_TAIL_BYTES:
            raise LeaseMessageError("log tail too long")
        end = _JOB_RESULT.size + n
        if len(body) < end:
            raise LeaseMessageError("job result log tail truncated")
        tail = _decode_text(body[_JOB_RESULT.size : end], "log tail")
        failure = digest = ""
        if flags & 2:
            failure, at = _take_ascii(body, end, "failure")
            digest, end = _take_ascii(body, at, "image digest")
            if not failure and not digest:
                raise LeaseMessageError("job result outcome flag set with no outcome")
        _exact(body, end, "job result")
        return JobResultMessage(lease_id, exit_code, tail, bool(flags & 1), failure, digest)
    if kind is MsgType.LOG:
        if len(body) < _LOG.size:
            raise LeaseMessageError("log body too short")
        seq, dropped, n = _LOG.unpack_from(body)
        if not 0 < n <= MAX_LOG_CHUNK_BYTES:
            raise LeaseMessageError("log chunk size out of range")
        _exact(body, _LOG.size + n, "log")
        return LogMessage(lease_id, seq, _decode_text(body[_LOG.size :], "log chunk"), dropped)
    if kind is MsgType.ACK:
        _exact(body, _ACK.size, "ack")
        ref, ref_seq = _ACK.unpack(body)
        return AckMessage(lease_id, _msg_type(ref), ref_seq)
    # ERROR
    if len(body) < _ERROR.size:
        raise LeaseMessageError("error body too short")
    ref, ref_seq, code, n = _ERROR.unpack_from(body)
    if n > MAX_ERROR_MESSAGE_BYTES:
        raise LeaseMessageError("error message too long")
    _exact(body, _ERROR.size + n, "error")
    try:
        code = ErrorCode(code)
    except ValueError:
        raise LeaseMessageError(f"unknown error code {code}") from None
    return ErrorMessage(lease_id, _msg_type(ref), ref_seq, code, _decode_text(body[_ERROR.size :], "error message"))


def _msg_type(value: int) -> MsgType:
    try:
        return MsgType(value)
    except ValueError:
        raise LeaseMessageError(f"unknown referenced message type {value}") from None


def seal_job_spec(
    lease_id: int,
    spec: bytes,
    sender_key: nacl.signing.SigningKey,
    recipient_node_key: bytes,
    *,
    nonce: bytes | None = None,
) -> JobSpecMessage:
    """Seal ``spec`` (consumer -> provider) with the lease id bound inside the box. Uses a random nonce unless
    ``nonce`` is given (test vectors only)."""
    if len(spec) > MAX_JOB_SPEC_BYTES:
        raise LeaseMessageError("job spec too large")
    plain = lease_id.to_bytes(32, "big") + spec
    return JobSpecMessage(lease_id, box.seal(plain, sender_key, recipient_node_key, nonce))


def open_job_spec(msg: JobSpecMessage, recipient_key: nacl.signing.SigningKey, sender_node_key: bytes) -> bytes:
    """Open a sealed job spec; raises ``BoxError`` (tampered / wrong keys) or :class:`LeaseMessageError`."""
    plain = box.open_sealed(msg.sealed, recipient_key, sender_node_key)
    if len(plain) < 32 or int.from_bytes(plain[:32], "big") != msg.lease_id:
        raise LeaseMessageError("sealed job spec belongs to another lease")
    return plain[32:]


def to_change(msg: LeaseMessage, received_at_ms: int) -> ReceiveHeartbeat | ReceiveCheckpoint | ReceiveJobResult | None:
    """The state-machine change for a message the consumer received (``None`` for ack/error/job spec)."""
    if isinstance(msg, HeartbeatMessage):
        return ReceiveHeartbeat(msg.signed, received_at_ms)
    if isinstance(msg, CheckpointMessage):
        return ReceiveCheckpoint(msg.signed_cp, received_at_ms)
    if isinstance(msg, JobResultMessage):
        return ReceiveJobResult(msg.exit_code, msg.log_tail, msg.simulated, received_at_ms, msg.failure,
                                msg.image_digest)
    return None
