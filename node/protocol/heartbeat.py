"""Provider heartbeats: fixed-size, ed25519-signed, hash-chained usage beats (docs/spec.md, "Heartbeats").

Wire form (224 bytes) = 160-byte body || 64-byte ed25519 signature of the body by the provider's node key.
Body, all integers big-endian::

    off  size  field
      0     1  version      u8   = 1
      1    32  leaseId      u256
     33     8  seq          u64  (starts at 1, +1 per beat)
     41     8  time         u64  unix milliseconds (provider clock)
     49     8  gpuSeconds   u64  cumulative GPU-seconds of the lease at this beat (floor of GPU-ms / 1000)
     57    32  prevHash     bytes32 hash of the previous beat; zero exactly when seq == 1
     89    71  usage        see below

Usage block (71 bytes)::

      0     1  flags        u8   bit 0 = SIMULATED (numbers made up by a simulated device); other bits zero
      1     1  deviceCount  u8   GPUs in the lease (capped at 255); min(deviceCount, 11) entries follow
      2  11*6  entries      util % u8 (0..100) | memory MiB u24 | power W u16; unused entries all zero
     68     3  reserved     zero

``hash(beat) = keccak256(body || signature)``: the ``prevHash`` of the next beat and the ``heartbeatHead`` of a
checkpoint. Usage numbers are informative (dashboard, evidence); billing is decided by ``gpuSeconds``.

Decoding is strict (exact size, known version, zero padding, ranges) and raises :class:`HeartbeatError`.
:func:`verify_heartbeat` is the hot path: one libsodium call, one ``struct.unpack`` and one dataclass.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import nacl.signing
from nacl.bindings import crypto_sign_open

from node.errors import InvalidMessage

try:  # pycryptodome's keccak directly: about twice as fast as going through eth_utils
    from Crypto.Hash import keccak as _keccak_mod

    def keccak256(data: bytes) -> bytes:
        return _keccak_mod.new(digest_bits=256, data=data).digest()

except ImportError:  # pragma: no cover - eth-hash picks another backend
    from eth_utils import keccak as _eth_keccak

    def keccak256(data: bytes) -> bytes:
        return _eth_keccak(data)


VERSION = 1
BODY_SIZE = 160
SIGNATURE_SIZE = 64
SIGNED_SIZE = BODY_SIZE + SIGNATURE_SIZE
USAGE_SIZE = 71
MAX_DEVICE_ENTRIES = 11
_ENTRY_SIZE = 6
_ENTRIES_END = 2 + MAX_DEVICE_ENTRIES * _ENTRY_SIZE  # 68
FLAG_SIMULATED = 0x01
_KNOWN_FLAGS = FLAG_SIMULATED
ZERO_HASH = bytes(32)
_U64_MAX = 2**64 - 1

_BODY = struct.Struct(">B32sQQQ32s71s")
assert _BODY.size == BODY_SIZE


class HeartbeatError(InvalidMessage):
    """A heartbeat is malformed or its signature does not verify."""


@dataclass(frozen=True, slots=True)
class DeviceUsage:
    utilisation_pct: int  # 0..100
    memory_mib: int  # 0..2**24-1
    power_w: int  # 0..65535


@dataclass(frozen=True, slots=True)
class UsageSummary:
    """Per-device readings carried by a heartbeat. ``simulated`` marks made-up numbers (no real GPU)."""

    device_count: int
    devices: tuple[DeviceUsage, ...] = ()
    simulated: bool = False


@dataclass(frozen=True, slots=True)
class Heartbeat:
    lease_id: int
    seq: int
    time_ms: int
    gpu_seconds: int
    prev_hash: bytes
    usage: bytes = bytes(USAGE_SIZE)  # the encoded 71-byte usage block; see usage_summary()

    def usage_summary(self) -> UsageSummary:
        return decode_usage(self.usage)


def encode_usage(summary: UsageSummary) -> bytes:
    if not 0 <= summary.device_count <= 255:
        raise HeartbeatError("device_count out of range")
    if len(summary.devices) > min(summary.device_count, MAX_DEVICE_ENTRIES):
        raise HeartbeatError("more device entries than devices (or than 11)")
    out = bytearray(USAGE_SIZE)
    out[0] = FLAG_SIMULATED if summary.simulated else 0
    out[1] = summary.device_count
    pos = 2
    for d in summary.devices:
        if not (0 <= d.utilisation_pct <= 100 and 0 <= d.memory_mib < 2**24 and 0 <= d.power_w < 2**16):
            raise HeartbeatError("device usage out of range")
        out[pos] = d.utilisation_pct
        out[pos + 1 : pos + 4] = d.memory_mib.to_bytes(3, "big")
        out[pos + 4 : pos + 6] = d.power_w.to_bytes(2, "big")
        pos += _ENTRY_SIZE
    return bytes(out)


def _check_usage(usage: bytes) -> None:
    """Strict checks of the usage block (hot path: slices and counts only)."""
    if usage[0] & ~_KNOWN_FLAGS & 0xFF:
        raise HeartbeatError("unknown usage flags")
    used_end = 2 + min(usage[1], MAX_DEVICE_ENTRIES) * _ENTRY_SIZE
    if usage.count(0, used_end) != USAGE_SIZE - used_end:
        raise HeartbeatError("non-zero padding in usage block")
    if used_end > 2 and max(usage[2:used_end:_ENTRY_SIZE]) > 100:
        raise HeartbeatError("utilisation above 100%")


def decode_usage(usage: bytes) -> UsageSummary:
    if len(usage) != USAGE_SIZE:
        raise HeartbeatError("usage block must be 71 bytes")
    _check_usage(usage)
    n = min(usage[1], MAX_DEVICE_ENTRIES)
    devices = tuple(
        DeviceUsage(
            usage[p],
            int.from_bytes(usage[p + 1 : p + 4], "big"),
            int.from_bytes(usage[p + 4 : p + 6], "big"),
        )
        for p in range(2, 2 + n * _ENTRY_SIZE, _ENTRY_SIZE)
    )
    return UsageSummary(device_count=usage[1], devices=devices, simulated=bool(usage[0] & FLAG_SIMULATED))


def encode(hb: Heartbeat) -> bytes:
    """The 160-byte body. Raises :class:`HeartbeatError` on out-of-range fields."""
    if not (0 <= hb.lease_id < 2**256):
        raise HeartbeatError("lease_id out of range")
    if not (1 <= hb.seq <= _U64_MAX and 0 <= hb.time_ms <= _U64_MAX and 0 <= hb.gpu_seconds <= _U64_MAX):
        raise HeartbeatError("seq/time/gpu_seconds out of range")
    if not isinstance(hb.prev_hash, bytes) or len(hb.prev_hash) != 32:
        raise HeartbeatError("prev_hash must be 32 bytes")
    if (hb.seq == 1) != (hb.prev_hash == ZERO_HASH):
        raise HeartbeatError("prev_hash must be zero exactly for seq 1")
    if not isinstance(hb.usage, bytes) or len(hb.usage) != USAGE_SIZE:
        raise HeartbeatError("usage must be 71 bytes")
    _check_usage(hb.usage)
    return _BODY.pack(
        VERSION, hb.lease_id.to_bytes(32, "big"), hb.seq, hb.time_ms, hb.gpu_seconds, hb.prev_hash, hb.usage
    )


def decode(body: bytes) -> Heartbeat:
    """Strictly decode a 160-byte body (no signature check)."""
    if len(body) != BODY_SIZE:
        raise HeartbeatError(f"heartbeat body must be {BODY_SIZE} bytes, got {len(body)}")
    version, lease, seq, time_ms, gpu_seconds, prev_hash, usage = _BODY.unpack(body)
    if version != VERSION:
        raise HeartbeatError(f"unknown heartbeat version {version}")
    if seq == 0:
        raise HeartbeatError("heartbeat seq starts at 1")
    if (seq == 1) != (prev_hash == ZERO_HASH):
        raise HeartbeatError("prev_hash must be zero exactly for seq 1")
    _check_usage(usage)
    return Heartbeat(int.from_bytes(lease, "big"), seq, time_ms, gpu_seconds, prev_hash, usage)


def sign_heartbeat(hb: Heartbeat, signing_key: nacl.signing.SigningKey) -> bytes:
    """Encode and sign: returns the 224-byte wire form body || signature."""
    body = encode(hb)
    return body + signing_key.sign(body).signature


def verify_heartbeat(signed: bytes, verify_key: bytes) -> Heartbeat:
    """Check the signature by ``verify_key`` (32-byte ed25519 node key) and decode. Raises :class:`HeartbeatError`."""
    if len(signed) != SIGNED_SIZE:
        raise HeartbeatError(f"signed heartbeat must be {SIGNED_SIZE} bytes, got {len(signed)}")
    try:
        crypto_sign_open(signed[BODY_SIZE:] + signed[:BODY_SIZE], verify_key)
    except Exception as exc:  # BadSignatureError, or a malformed key
        raise HeartbeatError("heartbeat signature does not verify") from exc
    return decode(signed[:BODY_SIZE])


def heartbeat_hash(signed: bytes) -> bytes:
    """keccak256(body || signature): the chain link and the checkpoint ``heartbeatHead``."""
    if len(signed) != SIGNED_SIZE:
        raise HeartbeatError(f"signed heartbeat must be {SIGNED_SIZE} bytes")
    return keccak256(signed)
