"""Offers and withdrawals: typed values, canonical spec bytes, signing, and the strict wire encoding.

Pure module: no I/O, no clock, no randomness. The byte layouts are specified in ``docs/spec.md`` ("Offer wire
encoding"); this module is their reference implementation.

Errors:

- ``InvalidOfferEncoding`` (an ``InvalidMessage``, recoverable): bytes from a peer or from storage do not decode
  under the strict rules. It carries a short machine-readable ``reason``.
- ``OfferError`` (a ``ValueError``): a local caller built an invalid value (a spec field out of range, a model name
  longer than 32 bytes, a spec that does not match ``specHash`` when signing, an integer that does not fit its
  wire width). These are bugs or bad user input, never peer behaviour.
"""

from __future__ import annotations

import json
import re
import struct
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from Crypto.Hash import keccak as _keccak_mod
from eth_utils import to_checksum_address

from node.crypto import eip712
from node.crypto.eip712 import Domain
from node.errors import InvalidMessage, NodeError
from node.types import OfferHash


def _keccak256_portable(data: bytes) -> bytes:
    return _keccak_mod.new(data=data, digest_bits=256).digest()


def _make_fast_keccak256() -> Callable[[bytes], bytes] | None:
    """keccak-256 on pycryptodome's C core without its per-call object overhead (~3x faster).

    Keeps one reusable hash state per thread (the C calls release the GIL). Returns None when pycryptodome does
    not run on its cffi backend; the portable path is then used. The tests cross-check both against eth-utils.
    """
    try:
        from Crypto.Hash.keccak import _raw_keccak_lib as lib  # type: ignore[attr-defined]
        from Crypto.Util import _raw_api

        if _raw_api.backend != "cffi":  # pragma: no cover - depends on the install
            return None
        ffi = _raw_api.ffi
    except Exception:  # pragma: no cover - private API moved
        return None
    local = threading.local()

    def new_state() -> tuple[Any, Any, Any]:
        pp = ffi.new("void **")
        if lib.keccak_init(pp, 64, 24):  # capacity 2 * 32 bytes, 24 rounds
            raise RuntimeError("keccak_init failed")
        out = ffi.new("uint8_t[32]")
        state = (ffi.gc(pp[0], lib.keccak_destroy), out, ffi.buffer(out))
        local.state = state
        return state

    def keccak256_fast(data: bytes) -> bytes:
        try:
            state, out, buf = local.state
        except AttributeError:
            state, out, buf = new_state()
        lib.keccak_reset(state)
        lib.keccak_absorb(state, data, len(data))
        lib.keccak_digest(state, out, 32, 0x01)
        digest: bytes = buf[:]
        return digest

    if keccak256_fast(b"") != _keccak256_portable(b""):  # pragma: no cover - self-check
        return None
    return keccak256_fast


keccak256: Callable[[bytes], bytes] = _make_fast_keccak256() or _keccak256_portable
"""keccak-256 (the Ethereum hash) of ``data``."""


# ---------------------------------------------------------------------------------------------------------------
# Errors


class OfferError(NodeError, ValueError):
    """A locally built offer, spec or withdrawal is invalid (caller error, not peer behaviour)."""


class InvalidOfferEncoding(InvalidMessage):
    """Bytes do not decode as a gossip message / signed offer / withdrawal under the strict v1 rules."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ---------------------------------------------------------------------------------------------------------------
# Constants of the v1 wire format

MAX_MESSAGE_BYTES: Final = 4096
MAX_SPEC_BYTES: Final = 2048

ENVELOPE_MAGIC: Final = b"GN"
OFFER_MAGIC: Final = b"GO"
WITHDRAWAL_MAGIC: Final = b"GW"
WIRE_VERSION: Final = 1

MSG_OFFER: Final = 0x01
MSG_WITHDRAWAL: Final = 0x02

# magic, version, provider, nonce, gpuModel, gpuCount, vramMiB, price, minDuration, maxDuration, expiresAt,
# specHash, signature, specLen
_OFFER_RECORD = struct.Struct(">2sB20s32s32sII32sQQQ32s65sH")
OFFER_RECORD_FIXED_BYTES: Final = _OFFER_RECORD.size  # 250
# magic, version, provider, nonceBelow, timestamp, signature
_WITHDRAWAL_RECORD = struct.Struct(">2sB20s32sQ65s")
WITHDRAWAL_RECORD_BYTES: Final = _WITHDRAWAL_RECORD.size  # 128
# magic, version, type, chainId, verifyingContract
_ENVELOPE = struct.Struct(">2sBB32s20s")
ENVELOPE_HEADER_BYTES: Final = _ENVELOPE.size  # 56

UINT32_MAX: Final = 2**32 - 1
UINT64_MAX: Final = 2**64 - 1
UINT256_MAX: Final = 2**256 - 1

# ---------------------------------------------------------------------------------------------------------------
# GPU model names


def gpu_model_from_name(name: str) -> bytes:
    """``"H100-80GB"`` -> 32 bytes: UTF-8, right-padded with zeros. Empty, NUL-containing or > 32 bytes: error."""
    raw = name.encode("utf-8")
    if not raw or len(raw) > 32 or b"\x00" in raw:
        raise OfferError(f"gpu model name must be 1..32 UTF-8 bytes without NUL: {name!r}")
    return raw.ljust(32, b"\x00")


def gpu_model_name(gpu_model: bytes) -> str:
    """Inverse of ``gpu_model_from_name``; raises ``OfferError`` unless ``gpu_model`` is canonical."""
    if not is_canonical_gpu_model(gpu_model):
        raise OfferError("gpu model is not a canonical zero-padded UTF-8 name")
    return gpu_model.rstrip(b"\x00").decode("utf-8")


def is_canonical_gpu_model(gpu_model: bytes) -> bool:
    """32 bytes, a non-empty UTF-8 prefix without NUL, then only zero bytes."""
    if len(gpu_model) != 32:
        return False
    name = gpu_model.rstrip(b"\x00")
    if not name or b"\x00" in name:
        return False
    try:
        name.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# ---------------------------------------------------------------------------------------------------------------
# Off-chain spec

_TOKEN_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,31}\Z")
_BENCH_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
MAX_BENCHMARKS: Final = 32
_SPEC_KEYS: Final = frozenset(
    {
        "benchmarks",
        "cpu_cores",
        "cuda_version",
        "driver_version",
        "interconnect",
        "ram_gib",
        "region",
        "simulated",
    }
)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class OfferSpec:
    """Off-chain description of the hardware behind an offer; committed to by ``Offer.spec_hash``.

    ``region``, ``driver_version``, ``cuda_version`` and ``interconnect`` are short ASCII tokens
    (``[A-Za-z0-9][A-Za-z0-9._+-]{0,31}``), e.g. ``"eu-west"``, ``"550.54.15"``, ``"12.4"``, ``"nvlink"``.
    ``benchmarks`` maps score names to non-negative integers (given as any mapping, stored as a sorted tuple of
    pairs so the value stays immutable and hashable). ``simulated`` marks declared/simulated devices.
    """

    region: str
    cpu_cores: int
    ram_gib: int
    driver_version: str
    cuda_version: str
    interconnect: str
    benchmarks: tuple[tuple[str, int], ...] = ()
    simulated: bool = False

    def __post_init__(self) -> None:
        tok = _TOKEN_RE.match
        for value in (self.region, self.driver_version, self.cuda_version, self.interconnect):
            if type(value) is not str or not tok(value):
                raise OfferError(f"spec tokens must be short ASCII tokens: {value!r}")
        for number in (self.cpu_cores, self.ram_gib):
            if type(number) is not int or not 0 <= number <= UINT32_MAX:
                raise OfferError(f"spec.cpu_cores/ram_gib must be integers in [0, 2**32): {number!r}")
        if type(self.simulated) is not bool:
            raise OfferError("spec.simulated must be a bool")
        bench = self.benchmarks
        items = list(bench.items()) if isinstance(bench, Mapping) else list(bench)
        if len(items) > MAX_BENCHMARKS:
            raise OfferError(f"at most {MAX_BENCHMARKS} benchmark scores")
        key_ok = _BENCH_KEY_RE.match
        for item in items:
            if type(item) is not tuple or len(item) != 2:
                raise OfferError("benchmarks must be a mapping of str to int")
            key, score = item
            if type(key) is not str or not key_ok(key):
                raise OfferError(f"bad benchmark name: {key!r}")
            if type(score) is not int or not 0 <= score < 2**63:
                raise OfferError(f"benchmark score must be an integer in [0, 2**63): {score!r}")
        items.sort()
        if len({k for k, _ in items}) != len(items):
            raise OfferError("duplicate benchmark name")
        object.__setattr__(self, "benchmarks", tuple(items))

    def to_json_obj(self) -> dict[str, Any]:
        return {
            "benchmarks": dict(self.benchmarks),
            "cpu_cores": self.cpu_cores,
            "cuda_version": self.cuda_version,
            "driver_version": self.driver_version,
            "interconnect": self.interconnect,
            "ram_gib": self.ram_gib,
            "region": self.region,
            "simulated": self.simulated,
        }

    def canonical_bytes(self) -> bytes:
        """Deterministic bytes: JSON, keys sorted, no whitespace, ASCII only. See docs/spec.md.

        Built by formatting rather than ``json.dumps``: every string is a token from a charset that JSON never
        escapes, so the output is byte-identical to ``json.dumps(to_json_obj(), sort_keys=True,
        separators=(",", ":"))`` (the tests check this) and several times cheaper.
        """
        bench = ",".join(f'"{k}":{v}' for k, v in self.benchmarks)
        return (
            f'{{"benchmarks":{{{bench}}},"cpu_cores":{self.cpu_cores},"cuda_version":"{self.cuda_version}",'
            f'"driver_version":"{self.driver_version}","interconnect":"{self.interconnect}",'
            f'"ram_gib":{self.ram_gib},"region":"{self.region}","simulated":{"true" if self.simulated else "false"}}}'
        ).encode("ascii")

    def spec_hash(self) -> bytes:
        return keccak256(self.canonical_bytes())


def spec_bytes(spec: OfferSpec | None) -> bytes:
    """Canonical spec bytes; an offer without a spec commits to the empty byte string."""
    return b"" if spec is None else spec.canonical_bytes()


def spec_hash(spec: OfferSpec | None) -> bytes:
    """``keccak256(spec_bytes(spec))``: the value ``Offer.spec_hash`` must carry."""
    return keccak256(spec_bytes(spec))


EMPTY_SPEC_HASH: Final = keccak256(b"")


def decode_spec(data: bytes) -> OfferSpec:
    """Strictly decode canonical spec bytes; anything that does not re-encode byte-for-byte is rejected."""
    if len(data) > MAX_SPEC_BYTES:
        raise InvalidOfferEncoding("spec_too_long")
    # Plain json.loads is enough: duplicate keys, floats, NaN, escapes and whitespace all fail either the strict
    # field types below or the byte-for-byte re-encoding check at the end.
    try:
        obj = json.loads(data.decode("ascii"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidOfferEncoding("spec_not_json") from exc
    if not isinstance(obj, dict) or obj.keys() != _SPEC_KEYS:
        raise InvalidOfferEncoding("spec_bad_keys")
    bench = obj["benchmarks"]
    if not isinstance(bench, dict):
        raise InvalidOfferEncoding("spec_bad_field")
    try:
        spec = OfferSpec(
            region=obj["region"],
            cpu_cores=obj["cpu_cores"],
            ram_gib=obj["ram_gib"],
            driver_version=obj["driver_version"],
            cuda_version=obj["cuda_version"],
            interconnect=obj["interconnect"],
            benchmarks=bench,  # type: ignore[arg-type]  # normalised by __post_init__
            simulated=obj["simulated"],
        )
    except OfferError as exc:
        raise InvalidOfferEncoding("spec_bad_field") from exc
    if spec.canonical_bytes() != data:
        raise InvalidOfferEncoding("spec_not_canonical")
    return spec


# ---------------------------------------------------------------------------------------------------------------
# Offer


@dataclass(frozen=True, slots=True)
class Offer:
    """The EIP-712 ``Offer`` struct of docs/spec.md, field for field and in the same order.

    ``provider`` is the raw 20-byte address (use ``provider_address`` for the checksummed string); ``gpu_model``
    and ``spec_hash`` are raw 32 bytes. The dataclass does not range-check (decoding does widths, the validator
    does semantics); ``field_problem()`` names the first semantic problem, if any.
    """

    provider: bytes
    nonce: int
    gpu_model: bytes
    gpu_count: int
    vram_mib: int
    price_per_gpu_second: int
    min_duration: int
    max_duration: int
    expires_at: int
    spec_hash: bytes

    @property
    def provider_address(self) -> str:
        return to_checksum_address(self.provider)

    @property
    def gpu_model_name(self) -> str:
        return gpu_model_name(self.gpu_model)

    def struct_hash(self) -> OfferHash:
        """The offer id: EIP-712 ``hashStruct(offer)`` (reference implementation in node.crypto.eip712)."""
        return OfferHash(
            eip712.offer_struct_hash(
                self.provider,
                self.nonce,
                self.gpu_model,
                self.gpu_count,
                self.vram_mib,
                self.price_per_gpu_second,
                self.min_duration,
                self.max_duration,
                self.expires_at,
                self.spec_hash,
            )
        )

    def digest(self, domain: Domain) -> bytes:
        """The 32-byte EIP-712 digest the provider signs."""
        return eip712.digest(domain.separator, self.struct_hash())

    def to_message(self) -> dict[str, Any]:
        """The typed-data ``message`` dict (wallet / eth-account path)."""
        return {
            "provider": to_checksum_address(self.provider),
            "nonce": self.nonce,
            "gpuModel": self.gpu_model,
            "gpuCount": self.gpu_count,
            "vramMiB": self.vram_mib,
            "pricePerGpuSecond": self.price_per_gpu_second,
            "minDuration": self.min_duration,
            "maxDuration": self.max_duration,
            "expiresAt": self.expires_at,
            "specHash": self.spec_hash,
        }

    def field_problem(self) -> str | None:
        """First semantic range problem (see docs/spec.md), or None. Widths are checked by the encoding."""
        if self.gpu_count == 0:
            return "gpu_count_zero"
        if self.vram_mib == 0:
            return "vram_zero"
        if self.price_per_gpu_second == 0:
            return "price_zero"
        if self.min_duration == 0:
            return "min_duration_zero"
        if self.min_duration > self.max_duration:
            return "min_duration_above_max"
        if not is_canonical_gpu_model(self.gpu_model):
            return "gpu_model_not_canonical"
        # The contract computes price * gpus * duration in uint256; keep the worst case far from overflow.
        if self.price_per_gpu_second * self.gpu_count * self.max_duration > UINT256_MAX >> 8:
            return "price_overflow"
        return None


@dataclass(frozen=True, slots=True)
class SignedOffer:
    """An offer, the provider's 65-byte r||s||v signature over its EIP-712 digest, and the off-chain spec."""

    offer: Offer
    signature: bytes
    spec: OfferSpec | None = None


def sign_offer(offer: Offer, spec: OfferSpec | None, private_key: bytes, domain: Domain) -> SignedOffer:
    """Sign ``offer`` under ``domain``. ``offer.spec_hash`` must be ``spec_hash(spec)``."""
    if offer.spec_hash != spec_hash(spec):
        raise OfferError("offer.spec_hash does not commit to the given spec")
    return SignedOffer(offer, eip712.sign_digest(private_key, offer.digest(domain)), spec)


@dataclass(frozen=True, slots=True)
class StakeRule:
    """Free stake a provider must have for an offer to be listed.

    ``required = min_free_stake + ceil(price * gpuCount * minDuration * collateral_bps / 10_000)``: enough to back
    the smallest lease that takes the whole offer, with ``collateral_bps`` the escrow's collateral parameter
    (``collateral = deposit * collateralBps / 10_000``, ``deposit >= price * gpus * minDuration``).
    """

    min_free_stake: int = 1
    collateral_bps: int = 0

    def required(self, offer: Offer) -> int:
        if not self.collateral_bps:
            return self.min_free_stake
        minimal_deposit = offer.price_per_gpu_second * offer.gpu_count * offer.min_duration
        return self.min_free_stake + -(-minimal_deposit * self.collateral_bps // 10_000)


# ---------------------------------------------------------------------------------------------------------------
# Offer record encoding


def encode_signed_offer(so: SignedOffer) -> bytes:
    """Offer record v1: magic "GO", version, the ten fields fixed-width big-endian, signature, u16 spec length,
    canonical spec bytes. Raises ``OfferError`` for values that do not fit."""
    o = so.offer
    sb = spec_bytes(so.spec)
    if len(sb) > MAX_SPEC_BYTES:
        raise OfferError("spec too long")
    if len(so.signature) != 65:
        raise OfferError("signature must be 65 bytes")
    try:
        head = _OFFER_RECORD.pack(
            OFFER_MAGIC,
            WIRE_VERSION,
            _bytes_n(o.provider, 20, "provider"),
            _u256(o.nonce),
            _bytes_n(o.gpu_model, 32, "gpu_model"),
            _uint(o.gpu_count, UINT32_MAX),
            _uint(o.vram_mib, UINT32_MAX),
            _u256(o.price_per_gpu_second),
            _uint(o.min_duration, UINT64_MAX),
            _uint(o.max_duration, UINT64_MAX),
            _uint(o.expires_at, UINT64_MAX),
            _bytes_n(o.spec_hash, 32, "spec_hash"),
            bytes(so.signature),
            len(sb),
        )
    except struct.error as exc:  # pragma: no cover - guarded by the helpers above
        raise OfferError(str(exc)) from exc
    return head + sb


def _uint(value: int, maximum: int) -> int:
    if not _is_int(value) or not 0 <= value <= maximum:
        raise OfferError(f"integer out of range: {value!r}")
    return value


def _u256(value: int) -> bytes:
    return _uint(value, UINT256_MAX).to_bytes(32, "big")


def _bytes_n(value: bytes, n: int, name: str) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != n:
        raise OfferError(f"{name} must be {n} bytes")
    return bytes(value)


def decode_signed_offer(data: bytes) -> SignedOffer:
    """Strict inverse of ``encode_signed_offer``: exact length, known magic/version, canonical spec."""
    return decode_offer_record(bytes(data))[0]


def decode_offer_record(data: bytes) -> tuple[SignedOffer, bytes]:
    """``decode_signed_offer`` that also returns the raw spec bytes (the validator hashes them)."""
    if len(data) < OFFER_RECORD_FIXED_BYTES:
        raise InvalidOfferEncoding("truncated")
    (
        magic,
        version,
        provider,
        nonce,
        gpu_model,
        gpu_count,
        vram_mib,
        price,
        min_duration,
        max_duration,
        expires_at,
        spec_h,
        signature,
        spec_len,
    ) = _OFFER_RECORD.unpack_from(data)
    if magic != OFFER_MAGIC:
        raise InvalidOfferEncoding("bad_magic")
    if version != WIRE_VERSION:
        raise InvalidOfferEncoding("unknown_version")
    if spec_len > MAX_SPEC_BYTES:
        raise InvalidOfferEncoding("spec_too_long")
    if len(data) != OFFER_RECORD_FIXED_BYTES + spec_len:
        raise InvalidOfferEncoding("truncated" if len(data) < OFFER_RECORD_FIXED_BYTES + spec_len else "trailing")
    sb = data[OFFER_RECORD_FIXED_BYTES:]
    spec = decode_spec(sb) if spec_len else None
    offer = Offer(
        provider,
        int.from_bytes(nonce, "big"),
        gpu_model,
        gpu_count,
        vram_mib,
        int.from_bytes(price, "big"),
        min_duration,
        max_duration,
        expires_at,
        spec_h,
    )
    return SignedOffer(offer, signature, spec), sb


_PAD12 = b"\x00" * 12
_PAD24 = b"\x00" * 24
_PAD28 = b"\x00" * 28


def offer_id_from_record(record: bytes) -> OfferHash:
    """The offer id computed straight from a well-formed offer record's bytes (hot path).

    Equal to ``decode_signed_offer(record).offer.struct_hash()``; the tests cross-check the two.
    """
    r = record
    return OfferHash(
        keccak256(
            eip712.OFFER_TYPEHASH
            + _PAD12
            + r[3:23]  # provider
            + r[23:55]  # nonce
            + r[55:87]  # gpuModel
            + _PAD28
            + r[87:91]  # gpuCount
            + _PAD28
            + r[91:95]  # vramMiB
            + r[95:127]  # pricePerGpuSecond
            + _PAD24
            + r[127:135]  # minDuration
            + _PAD24
            + r[135:143]  # maxDuration
            + _PAD24
            + r[143:151]  # expiresAt
            + r[151:183]  # specHash
        )
    )


# ---------------------------------------------------------------------------------------------------------------
# Withdrawal (off-chain cancellation of offers below a nonce)

OFFER_WITHDRAWAL_TYPE: Final = b"OfferWithdrawal(address provider,uint256 nonceBelow,uint64 timestamp)"
OFFER_WITHDRAWAL_TYPEHASH: Final = keccak256(OFFER_WITHDRAWAL_TYPE)


@dataclass(frozen=True, slots=True)
class OfferWithdrawal:
    """``OfferWithdrawal(address provider,uint256 nonceBelow,uint64 timestamp)``, signed under the escrow domain.

    Tells peers that the provider's offers with ``nonce < nonce_below`` are withdrawn. Advisory off-chain (only
    ``cancelOffersBelow`` binds the contract); nodes drop such offers from their books and refuse them.
    """

    provider: bytes
    nonce_below: int
    timestamp: int

    def struct_hash(self) -> bytes:
        return keccak256(
            OFFER_WITHDRAWAL_TYPEHASH
            + _PAD12
            + _bytes_n(self.provider, 20, "provider")
            + _u256(self.nonce_below)
            + _uint(self.timestamp, UINT64_MAX).to_bytes(32, "big")
        )

    def digest(self, domain: Domain) -> bytes:
        return eip712.digest(domain.separator, self.struct_hash())

    def to_message(self) -> dict[str, Any]:
        return {
            "provider": to_checksum_address(self.provider),
            "nonceBelow": self.nonce_below,
            "timestamp": self.timestamp,
        }


@dataclass(frozen=True, slots=True)
class SignedWithdrawal:
    withdrawal: OfferWithdrawal
    signature: bytes


def sign_withdrawal(w: OfferWithdrawal, private_key: bytes, domain: Domain) -> SignedWithdrawal:
    return SignedWithdrawal(w, eip712.sign_digest(private_key, w.digest(domain)))


def encode_withdrawal(sw: SignedWithdrawal) -> bytes:
    """Withdrawal record v1: magic "GW", version, provider(20), nonceBelow(32), timestamp(u64), signature(65)."""
    w = sw.withdrawal
    if len(sw.signature) != 65:
        raise OfferError("signature must be 65 bytes")
    return _WITHDRAWAL_RECORD.pack(
        WITHDRAWAL_MAGIC,
        WIRE_VERSION,
        _bytes_n(w.provider, 20, "provider"),
        _u256(w.nonce_below),
        _uint(w.timestamp, UINT64_MAX),
        bytes(sw.signature),
    )


def decode_withdrawal(data: bytes) -> SignedWithdrawal:
    data = bytes(data)
    if len(data) != WITHDRAWAL_RECORD_BYTES:
        raise InvalidOfferEncoding("truncated" if len(data) < WITHDRAWAL_RECORD_BYTES else "trailing")
    magic, version, provider, nonce_below, timestamp, signature = _WITHDRAWAL_RECORD.unpack(data)
    if magic != WITHDRAWAL_MAGIC:
        raise InvalidOfferEncoding("bad_magic")
    if version != WIRE_VERSION:
        raise InvalidOfferEncoding("unknown_version")
    return SignedWithdrawal(OfferWithdrawal(provider, int.from_bytes(nonce_below, "big"), timestamp), signature)


# ---------------------------------------------------------------------------------------------------------------
# Gossip / sync envelope


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded envelope header; ``body`` is the still-encoded record of type ``kind``."""

    kind: int
    chain_id: int
    verifying_contract: bytes  # raw 20 bytes
    body: bytes = field(repr=False)


def _domain_header(domain: Domain, kind: int) -> bytes:
    return _ENVELOPE.pack(
        ENVELOPE_MAGIC,
        WIRE_VERSION,
        kind,
        _u256(domain.chain_id),
        bytes.fromhex(domain.verifying_contract[2:]),
    )


def encode_offer_message(domain: Domain, so: SignedOffer) -> bytes:
    """Envelope(type=offer) around ``encode_signed_offer(so)``: what is gossiped, synced and stored."""
    return _domain_header(domain, MSG_OFFER) + encode_signed_offer(so)


def encode_withdrawal_message(domain: Domain, sw: SignedWithdrawal) -> bytes:
    return _domain_header(domain, MSG_WITHDRAWAL) + encode_withdrawal(sw)


def decode_envelope(data: bytes) -> Envelope:
    """Decode the envelope header only (size cap, magic, version, known type)."""
    data = bytes(data)
    if len(data) > MAX_MESSAGE_BYTES:
        raise InvalidOfferEncoding("oversize")
    if len(data) < ENVELOPE_HEADER_BYTES:
        raise InvalidOfferEncoding("truncated")
    magic, version, kind, chain_id, contract = _ENVELOPE.unpack_from(data)
    if magic != ENVELOPE_MAGIC:
        raise InvalidOfferEncoding("bad_magic")
    if version != WIRE_VERSION:
        raise InvalidOfferEncoding("unknown_version")
    if kind not in (MSG_OFFER, MSG_WITHDRAWAL):
        raise InvalidOfferEncoding("unknown_type")
    return Envelope(kind, int.from_bytes(chain_id, "big"), contract, data[ENVELOPE_HEADER_BYTES:])


def decode_message(data: bytes) -> tuple[Envelope, SignedOffer | SignedWithdrawal]:
    """Decode a full envelope and its record. Raises ``InvalidOfferEncoding``."""
    env = decode_envelope(data)
    if env.kind == MSG_OFFER:
        return env, decode_offer_record(env.body)[0]
    return env, decode_withdrawal(env.body)
