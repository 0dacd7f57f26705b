"""Offer wire encoding, signing, and validation reasons (node.protocol.offers / offer_validation)."""

from __future__ import annotations

import dataclasses
import json
import struct
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from coincurve import PrivateKey
from eth_account.messages import encode_typed_data
from eth_utils import keccak, to_checksum_address
from prometheus_client import REGISTRY

from node.crypto import eip712
from node.crypto.eip712 import Domain
from node.protocol import offers as O
from node.protocol.offer_validation import (
    REJECT_REASONS,
    OfferRules,
    RateLimiter,
    ValidationContext,
    validate_gossip_message,
    validate_offer_message,
    validate_offer_message_with_id,
    validate_signed_offer,
    validate_withdrawal_message,
)
from node.protocol.offerbook import OfferBook
from node.protocol.offers import (
    InvalidOfferEncoding,
    Offer,
    OfferError,
    OfferSpec,
    OfferWithdrawal,
    SignedOffer,
    StakeRule,
)
from node.types import Verdict

NOW = 1_700_000_000
DOMAIN = Domain(31337, "0x" + "ab" * 20)
OTHER_CHAIN = Domain(1, "0x" + "ab" * 20)
OTHER_ESCROW = Domain(31337, "0x" + "cd" * 20)
KEY = (1).to_bytes(32, "big")


def address_of(key: bytes) -> bytes:
    return keccak(PrivateKey(key).public_key.format(compressed=False)[1:])[12:]


PROVIDER = address_of(KEY)


def make_spec(**kw: object) -> OfferSpec:
    base: dict[str, object] = dict(
        region="eu-west",
        cpu_cores=64,
        ram_gib=512,
        driver_version="550.54.15",
        cuda_version="12.4",
        interconnect="nvlink",
        benchmarks={"fp16_tflops": 989, "mem_bw_gbs": 3350},
        simulated=False,
    )
    base.update(kw)
    return OfferSpec(**base)  # type: ignore[arg-type]


def make_offer(spec: OfferSpec | None = None, **kw: object) -> Offer:
    base: dict[str, object] = dict(
        provider=PROVIDER,
        nonce=7,
        gpu_model=O.gpu_model_from_name("H100-80GB"),
        gpu_count=8,
        vram_mib=81920,
        price_per_gpu_second=1_000_000,
        min_duration=60,
        max_duration=86_400,
        expires_at=NOW + 600,
        spec_hash=O.spec_hash(spec),
    )
    base.update(kw)
    return Offer(**base)  # type: ignore[arg-type]


def make_signed(spec: OfferSpec | None = None, key: bytes = KEY, domain: Domain = DOMAIN, **kw: object):
    spec = make_spec() if spec is None else spec
    kw.setdefault("provider", address_of(key))
    offer = make_offer(spec, **kw)
    if "spec_hash" in kw:  # deliberately inconsistent offers are signed directly
        return SignedOffer(offer, eip712.sign_digest(key, offer.digest(domain)), spec)
    return O.sign_offer(offer, spec, key, domain)


class FakeChain:
    """StakeView + NonceView over dicts."""

    def __init__(self) -> None:
        self.registered: set[bytes] = {PROVIDER}
        self.stake: dict[bytes, int] = {PROVIDER: 10**24}
        self.nonces: dict[bytes, int] = {}

    def is_registered(self, provider: bytes) -> bool:
        return provider in self.registered

    def free_stake(self, provider: bytes) -> int:
        return self.stake.get(provider, 0)

    def min_nonce(self, provider: bytes) -> int:
        return self.nonces.get(provider, 0)


def make_ctx(chain: FakeChain | None = None, book: OfferBook | None = None, **rules: object):
    chain = chain or FakeChain()
    book = book or OfferBook(DOMAIN)
    return ValidationContext(DOMAIN, chain, chain, book, OfferRules(**rules)), chain, book  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------------
# GPU model names and specs


def test_gpu_model_round_trip() -> None:
    raw = O.gpu_model_from_name("H100-80GB")
    assert raw == b"H100-80GB" + b"\x00" * 23
    assert O.gpu_model_name(raw) == "H100-80GB"
    assert O.gpu_model_name(O.gpu_model_from_name("x" * 32)) == "x" * 32


@pytest.mark.parametrize("name", ["", "x" * 33, "a\x00b", "é" * 17])
def test_gpu_model_from_name_rejects(name: str) -> None:
    with pytest.raises(OfferError):
        O.gpu_model_from_name(name)


@pytest.mark.parametrize("raw", [b"\x00" * 32, b"A\x00B" + b"\x00" * 29, b"\xff" + b"\x00" * 31, b"A" * 31])
def test_gpu_model_name_rejects_non_canonical(raw: bytes) -> None:
    assert not O.is_canonical_gpu_model(raw)
    with pytest.raises(OfferError):
        O.gpu_model_name(raw)


def test_spec_canonical_bytes_are_sorted_compact_json() -> None:
    spec = make_spec(benchmarks={"b": 2, "a": 1})
    assert spec.canonical_bytes() == (
        b'{"benchmarks":{"a":1,"b":2},"cpu_cores":64,"cuda_version":"12.4","driver_version":"550.54.15",'
        b'"interconnect":"nvlink","ram_gib":512,"region":"eu-west","simulated":false}'
    )
    assert spec.spec_hash() == keccak(spec.canonical_bytes())
    assert spec.benchmarks == (("a", 1), ("b", 2))
    assert spec == make_spec(benchmarks={"a": 1, "b": 2})
    assert O.decode_spec(spec.canonical_bytes()) == spec
    assert O.spec_hash(None) == keccak(b"") == O.EMPTY_SPEC_HASH


@pytest.mark.parametrize(
    "kw",
    [
        {"region": ""},
        {"region": "eu west"},
        {"region": "é"},
        {"region": "x" * 33},
        {"cpu_cores": -1},
        {"cpu_cores": True},
        {"ram_gib": 2**32},
        {"ram_gib": 1.0},
        {"simulated": 1},
        {"benchmarks": {"": 1}},
        {"benchmarks": {"a": -1}},
        {"benchmarks": {"a": 2**63}},
        {"benchmarks": {"a": True}},
        {"benchmarks": {f"k{i}": i for i in range(33)}},
        {"benchmarks": (("a", 1), ("a", 2))},
        {"benchmarks": (("a", 1, 2),)},
    ],
)
def test_spec_rejects_bad_fields(kw: dict[str, object]) -> None:
    with pytest.raises(OfferError):
        make_spec(**kw)


def _canon(obj: dict[str, object]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _spec_obj(**kw: object) -> dict[str, object]:
    obj = make_spec().to_json_obj()
    obj.update(kw)
    return obj


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not json", "spec_not_json"),
        (b'{"a":1', "spec_not_json"),
        (b"\xff", "spec_not_json"),
        (_canon(_spec_obj(cpu_cores=1.5)), "spec_bad_field"),
        (_canon(_spec_obj()).replace(b'"cpu_cores":64', b'"cpu_cores":64.0'), "spec_bad_field"),
        (_canon(_spec_obj()).replace(b'"cpu_cores":64', b'"cpu_cores":1e400'), "spec_bad_field"),
        (_canon(_spec_obj()).replace(b'"cpu_cores":64', b'"cpu_cores":NaN'), "spec_bad_field"),
        (_canon(_spec_obj(cpu_cores=10**100)), "spec_bad_field"),
        (_canon(_spec_obj(benchmarks={"a": "1"})), "spec_bad_field"),
        (_canon(_spec_obj()).replace(b'"ram_gib":512', b'"ram_gib":512,"ram_gib":512'), "spec_not_canonical"),
        (_canon(_spec_obj()).replace(b'"ram_gib":512', b'"ram_gib":1,"ram_gib":512'), "spec_not_canonical"),
        (b"[" * 1020 + b"]" * 1020, "spec_bad_keys"),
        (b"[]", "spec_bad_keys"),
        (_canon({k: v for k, v in _spec_obj().items() if k != "region"}), "spec_bad_keys"),
        (_canon(_spec_obj(extra=1)), "spec_bad_keys"),
        (_canon(_spec_obj(benchmarks=[])), "spec_bad_field"),
        (_canon(_spec_obj(cpu_cores="64")), "spec_bad_field"),
        (_canon(_spec_obj(cpu_cores=True)), "spec_bad_field"),
        (_canon(_spec_obj(simulated=0)), "spec_bad_field"),
        (json.dumps(_spec_obj()).encode(), "spec_not_canonical"),  # whitespace
        (
            json.dumps({"simulated": False, **_spec_obj()}, separators=(",", ":")).encode(),
            "spec_not_canonical",
        ),  # key order
        (_canon(_spec_obj()).replace(b"eu-west", b"\\u0065u-west"), "spec_not_canonical"),
        (_canon(_spec_obj()).replace(b'"cpu_cores":64', b'"cpu_cores":064'), "spec_not_json"),
        (b" " * (O.MAX_SPEC_BYTES + 1), "spec_too_long"),
    ],
)
def test_decode_spec_strict(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidOfferEncoding) as exc:
        O.decode_spec(data)
    assert exc.value.reason == reason
    assert isinstance(exc.value, ValueError)


# ---------------------------------------------------------------------------------------------------------------
# Encoding


def test_signed_offer_round_trip_with_and_without_spec() -> None:
    for spec in (make_spec(), None):
        so = O.sign_offer(make_offer(spec), spec, KEY, DOMAIN)
        rec = O.encode_signed_offer(so)
        assert len(rec) == O.OFFER_RECORD_FIXED_BYTES + len(O.spec_bytes(spec))
        assert O.decode_signed_offer(rec) == so
        msg = O.encode_offer_message(DOMAIN, so)
        env, decoded = O.decode_message(msg)
        assert (env.kind, env.chain_id, env.verifying_contract) == (O.MSG_OFFER, 31337, b"\xab" * 20)
        assert decoded == so


def test_offer_convenience_views() -> None:
    so = make_signed()
    assert so.offer.gpu_model_name == "H100-80GB"
    assert so.offer.provider_address == to_checksum_address(PROVIDER)
    assert so.offer.to_message()["gpuModel"] == so.offer.gpu_model


def test_record_layout_is_fixed_width_big_endian() -> None:
    so = make_signed(nonce=0x0102, price_per_gpu_second=5, gpu_count=3)
    rec = O.encode_signed_offer(so)
    assert rec[:3] == b"GO\x01"
    assert rec[3:23] == PROVIDER
    assert rec[23:55] == (0x0102).to_bytes(32, "big")
    assert rec[87:91] == b"\x00\x00\x00\x03"
    assert rec[95:127] == (5).to_bytes(32, "big")
    assert rec[183:248] == so.signature
    assert rec[248:250] == len(O.spec_bytes(so.spec)).to_bytes(2, "big")


def _good_record() -> bytes:
    return O.encode_signed_offer(make_signed())


def _with_spec(rec: bytes, spec: bytes) -> bytes:
    return rec[:248] + struct.pack(">H", len(spec)) + spec


def _with_spec_len(rec: bytes, n: int) -> bytes:
    return rec[:248] + struct.pack(">H", n) + rec[250:]


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda r: r[:100], "truncated"),
        (lambda r: b"", "truncated"),
        (lambda r: r[:-1], "truncated"),
        (lambda r: r + b"\x00", "trailing"),
        (lambda r: b"XX" + r[2:], "bad_magic"),
        (lambda r: r[:2] + b"\x02" + r[3:], "unknown_version"),
        (lambda r: _with_spec_len(r, O.MAX_SPEC_BYTES + 1), "spec_too_long"),
        (lambda r: _with_spec(r, json.dumps(make_spec().to_json_obj()).encode()), "spec_not_canonical"),
        (lambda r: _with_spec(r, b"{}"), "spec_bad_keys"),
        (lambda r: _with_spec_len(r[:250], 0) + b"", None),  # spec-less record: valid encoding
    ],
)
def test_decode_signed_offer_strict(mutate, reason: str | None) -> None:
    data = mutate(_good_record())
    if reason is None:
        assert O.decode_signed_offer(data).spec is None
        return
    with pytest.raises(InvalidOfferEncoding) as exc:
        O.decode_signed_offer(data)
    assert exc.value.reason == reason


def _good_message() -> bytes:
    return O.encode_offer_message(DOMAIN, make_signed())


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda m: m[:10], "truncated"),
        (lambda m: m + b"\x00" * O.MAX_MESSAGE_BYTES, "oversize"),
        (lambda m: b"GX" + m[2:], "bad_magic"),
        (lambda m: m[:2] + b"\x09" + m[3:], "unknown_version"),
        (lambda m: m[:3] + b"\x07" + m[4:], "unknown_type"),
        (lambda m: m[:3] + b"\x00" + m[4:], "unknown_type"),
        (lambda m: m[:3] + b"\x02" + m[4:], "trailing"),  # an offer body under the withdrawal type
    ],
)
def test_decode_message_strict(mutate, reason: str) -> None:
    with pytest.raises(InvalidOfferEncoding) as exc:
        O.decode_message(mutate(_good_message()))
    assert exc.value.reason == reason


@pytest.mark.parametrize(
    "kw",
    [
        {"nonce": -1},
        {"nonce": 2**256},
        {"gpu_count": 2**32},
        {"vram_mib": -1},
        {"min_duration": 2**64},
        {"expires_at": True},
        {"provider": b"\x01" * 19},
        {"gpu_model": b"short"},
        {"spec_hash": b"\x00" * 31},
    ],
)
def test_encode_rejects_values_that_do_not_fit(kw: dict[str, object]) -> None:
    so = SignedOffer(make_offer(None, **kw), b"\x01" * 65, None)
    with pytest.raises(OfferError):
        O.encode_signed_offer(so)


def test_encode_rejects_bad_signature_length_and_sign_rejects_wrong_spec() -> None:
    with pytest.raises(OfferError):
        O.encode_signed_offer(SignedOffer(make_offer(None), b"\x01" * 64, None))
    with pytest.raises(OfferError):
        O.sign_offer(make_offer(None), make_spec(), KEY, DOMAIN)


# ---------------------------------------------------------------------------------------------------------------
# Hashing and signatures against eth-account


def test_keccak256_matches_eth_utils() -> None:
    for data in (b"", b"a", b"x" * 135, b"x" * 136, b"y" * 1000):
        assert O.keccak256(data) == keccak(data) == O._keccak256_portable(data)


def test_keccak256_is_thread_safe() -> None:
    inputs = [bytes([i]) * (i * 7) for i in range(64)]
    expected = [keccak(d) for d in inputs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(5):
            assert list(pool.map(O.keccak256, inputs * 20)) == expected * 20


def test_offer_hash_and_signature_match_eth_account_typed_data() -> None:
    so = make_signed()
    typed = eip712.offer_typed_data(DOMAIN, so.offer.to_message())
    signable = encode_typed_data(full_message=typed)
    assert signable.header == DOMAIN.separator
    assert signable.body == so.offer.struct_hash()
    assert O.offer_id_from_record(O.encode_signed_offer(so)) == so.offer.struct_hash()
    wallet_sig = eip712.sign_typed_data(KEY, typed)
    assert eip712.recover_raw(so.offer.digest(DOMAIN), wallet_sig) == PROVIDER
    assert eip712.recover_raw(so.offer.digest(DOMAIN), so.signature) == PROVIDER
    assert wallet_sig == so.signature  # both RFC 6979, low-s


def withdrawal_typed_data(w: OfferWithdrawal) -> dict[str, Any]:
    """The EIP-712 typed data of a withdrawal, written out independently of the module's hashing."""
    return {
        "types": {
            "EIP712Domain": eip712.EIP712_DOMAIN_FIELDS,
            "OfferWithdrawal": [
                {"name": "provider", "type": "address"},
                {"name": "nonceBelow", "type": "uint256"},
                {"name": "timestamp", "type": "uint64"},
            ],
        },
        "primaryType": "OfferWithdrawal",
        "domain": DOMAIN.as_typed_data_domain(),
        "message": w.to_message(),
    }


def test_withdrawal_hash_matches_eth_account_and_round_trips() -> None:
    w = OfferWithdrawal(PROVIDER, 9, NOW)
    typed = withdrawal_typed_data(w)
    signable = encode_typed_data(full_message=typed)
    assert signable.body == w.struct_hash()
    assert (
        keccak(b"OfferWithdrawal(address provider,uint256 nonceBelow,uint64 timestamp)") == O.OFFER_WITHDRAWAL_TYPEHASH
    )
    sw = O.sign_withdrawal(w, KEY, DOMAIN)
    assert eip712.sign_typed_data(KEY, typed) == sw.signature
    rec = O.encode_withdrawal(sw)
    assert len(rec) == O.WITHDRAWAL_RECORD_BYTES
    assert O.decode_withdrawal(rec) == sw
    env, decoded = O.decode_message(O.encode_withdrawal_message(DOMAIN, sw))
    assert env.kind == O.MSG_WITHDRAWAL and decoded == sw


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"GW\x01" + b"\x00" * 124, "truncated"),
        (b"GW\x01" + b"\x00" * 126, "trailing"),
        (b"GX\x01" + b"\x00" * 125, "bad_magic"),
        (b"GW\x02" + b"\x00" * 125, "unknown_version"),
    ],
)
def test_decode_withdrawal_strict(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidOfferEncoding) as exc:
        O.decode_withdrawal(data)
    assert exc.value.reason == reason


def test_encode_withdrawal_rejects_bad_values() -> None:
    with pytest.raises(OfferError):
        O.encode_withdrawal(O.SignedWithdrawal(OfferWithdrawal(PROVIDER, 1, NOW), b"\x00" * 64))
    with pytest.raises(OfferError):
        O.encode_withdrawal(O.SignedWithdrawal(OfferWithdrawal(PROVIDER, -1, NOW), b"\x00" * 65))


# ---------------------------------------------------------------------------------------------------------------
# Validation: one test per reason


def _msg(so: SignedOffer, domain: Domain = DOMAIN) -> bytes:
    return O.encode_offer_message(domain, so)


def test_valid_offer_is_accepted_with_its_id() -> None:
    ctx, _, _ = make_ctx()
    so = make_signed()
    v, got, oid = validate_offer_message_with_id(_msg(so), ctx, NOW)
    assert v.verdict is Verdict.ACCEPT and v.reason == "ok"
    assert got == so and oid == so.offer.struct_hash()
    assert validate_signed_offer(so, make_ctx()[0], NOW) == (v, oid)


def _high_s(sig: bytes) -> bytes:
    s = int.from_bytes(sig[32:64], "big")
    v = sig[64] ^ 1  # 27 <-> 28
    return sig[:32] + (eip712.SECP256K1_N - s).to_bytes(32, "big") + bytes([v])


def _case(name: str):
    """Return (message bytes, ctx) that must fail with reason ``name`` and no earlier reason."""
    ctx, chain, book = make_ctx()
    so = make_signed()
    msg = _msg(so)
    if name == "oversize":
        msg = msg + b"\x00" * (O.MAX_MESSAGE_BYTES - len(msg) + 1)
    elif name == "malformed":
        msg = msg[:-1]
    elif name == "wrong_domain":
        msg = _msg(so, OTHER_CHAIN)
    elif name == "wrong_domain_escrow":
        msg = _msg(so, OTHER_ESCROW)
    elif name == "field_out_of_range":
        msg = _msg(make_signed(gpu_count=0))
    elif name == "field_out_of_range_price":
        msg = _msg(make_signed(price_per_gpu_second=0))
    elif name == "field_out_of_range_durations":
        msg = _msg(make_signed(min_duration=100, max_duration=99))
    elif name == "field_out_of_range_model":
        msg = _msg(make_signed(gpu_model=b"\x00" * 32))
    elif name == "spec_hash_mismatch":
        msg = _msg(make_signed(spec_hash=b"\x11" * 32))
    elif name == "expired":
        msg = _msg(make_signed(expires_at=NOW))
    elif name == "too_far_future":
        msg = _msg(make_signed(expires_at=NOW + ctx.rules.max_ttl + 1))
    elif name == "duplicate":
        book.insert(so)
    elif name == "superseded":
        book.insert(make_signed(nonce=8))
    elif name == "superseded_same_nonce":
        other = make_signed(price_per_gpu_second=2_000_000)
        book.insert(other)
        first, _second = sorted([so, other], key=lambda s: s.offer.struct_hash())
        if first is other:
            msg = _msg(so)
        else:  # make sure the book holds the lower id and we send the higher one
            book.remove(other.offer.struct_hash())
            book.insert(so)
            msg = _msg(other)
    elif name == "nonce_cancelled":
        chain.nonces[PROVIDER] = 8
    elif name == "provider_not_registered":
        chain.registered.clear()
    elif name == "insufficient_stake":
        chain.stake[PROVIDER] = 0
    elif name == "insufficient_stake_collateral":
        # 8 GPUs * 1e6/s * 60 s = 4.8e8 minimal deposit; 10% collateral = 4.8e7, plus the 1-unit minimum
        ctx = dataclasses.replace(ctx, rules=OfferRules(stake=StakeRule(1, 1000)), limiter=None)
        chain.stake[PROVIDER] = 48_000_000
    elif name == "bad_signature":
        msg = _msg(dataclasses.replace(so, signature=eip712.sign_digest(b"\x02" * 32, so.offer.digest(DOMAIN))))
    elif name == "bad_signature_other_domain":
        other = make_signed(domain=OTHER_ESCROW)
        msg = _msg(other)  # right envelope, signature made for another escrow
    elif name == "bad_signature_high_s":
        msg = _msg(dataclasses.replace(so, signature=_high_s(so.signature)))
    elif name == "bad_signature_garbage":
        msg = _msg(dataclasses.replace(so, signature=b"\x00" * 65))
    elif name == "bad_signature_v_0_or_1":  # recovers to the provider, but the contract's ecrecover refuses it
        msg = _msg(dataclasses.replace(so, signature=so.signature[:64] + bytes([so.signature[64] - 27])))
    elif name == "rate_limited":
        ctx = dataclasses.replace(ctx, limiter=RateLimiter(burst=1, rate_per_second=0.001))
        assert ctx.limiter is not None and ctx.limiter.take(PROVIDER, NOW)
    elif name == "not_an_offer":
        msg = O.encode_withdrawal_message(DOMAIN, O.sign_withdrawal(OfferWithdrawal(PROVIDER, 1, NOW), KEY, DOMAIN))
    else:  # pragma: no cover
        raise AssertionError(name)
    return msg, ctx


@pytest.mark.parametrize(
    ("case", "reason", "verdict"),
    [
        ("oversize", "oversize", Verdict.REJECT),
        ("malformed", "malformed", Verdict.REJECT),
        ("wrong_domain", "wrong_domain", Verdict.REJECT),
        ("wrong_domain_escrow", "wrong_domain", Verdict.REJECT),
        ("field_out_of_range", "field_out_of_range", Verdict.REJECT),
        ("field_out_of_range_price", "field_out_of_range", Verdict.REJECT),
        ("field_out_of_range_durations", "field_out_of_range", Verdict.REJECT),
        ("field_out_of_range_model", "field_out_of_range", Verdict.REJECT),
        ("spec_hash_mismatch", "spec_hash_mismatch", Verdict.REJECT),
        ("expired", "expired", Verdict.IGNORE),
        ("too_far_future", "too_far_future", Verdict.IGNORE),
        ("duplicate", "duplicate", Verdict.IGNORE),
        ("superseded", "superseded", Verdict.IGNORE),
        ("superseded_same_nonce", "superseded", Verdict.IGNORE),
        ("nonce_cancelled", "nonce_cancelled", Verdict.IGNORE),
        ("provider_not_registered", "provider_not_registered", Verdict.IGNORE),
        ("insufficient_stake", "insufficient_stake", Verdict.IGNORE),
        ("insufficient_stake_collateral", "insufficient_stake", Verdict.IGNORE),
        ("bad_signature", "bad_signature", Verdict.REJECT),
        ("bad_signature_other_domain", "bad_signature", Verdict.REJECT),
        ("bad_signature_high_s", "bad_signature", Verdict.REJECT),
        ("bad_signature_garbage", "bad_signature", Verdict.REJECT),
        ("bad_signature_v_0_or_1", "bad_signature", Verdict.REJECT),
        ("rate_limited", "rate_limited", Verdict.IGNORE),
        ("not_an_offer", "not_an_offer", Verdict.IGNORE),
    ],
)
def test_validation_reason(case: str, reason: str, verdict: Verdict) -> None:
    msg, ctx = _case(case)
    v, so = validate_offer_message(msg, ctx, NOW)
    assert (v.verdict, v.reason) == (verdict, reason)
    assert so is None
    assert (reason in REJECT_REASONS) == (verdict is Verdict.REJECT)


def test_stake_rule_boundary_is_inclusive() -> None:
    ctx, chain, _ = make_ctx()
    ctx = dataclasses.replace(ctx, rules=OfferRules(stake=StakeRule(1, 1000)), limiter=None)
    chain.stake[PROVIDER] = 48_000_001
    assert validate_offer_message(_msg(make_signed()), ctx, NOW)[0].accepted


def test_newer_nonce_replaces_and_expiry_boundary() -> None:
    ctx, _, book = make_ctx()
    book.insert(make_signed(nonce=6))
    assert validate_offer_message(_msg(make_signed(nonce=7)), ctx, NOW)[0].accepted
    assert validate_offer_message(_msg(make_signed(expires_at=NOW + 1)), ctx, NOW)[0].accepted
    assert validate_offer_message(_msg(make_signed(expires_at=NOW + 3600)), ctx, NOW)[0].accepted


def test_rate_limiter_refills_deterministically() -> None:
    lim = RateLimiter(burst=2, rate_per_second=0.5)
    assert [lim.take(PROVIDER, NOW) for _ in range(3)] == [True, True, False]
    assert not lim.take(PROVIDER, NOW + 1)  # 0.5 tokens
    assert lim.take(PROVIDER, NOW + 2)  # 1.0 token
    assert lim.tokens(PROVIDER, NOW + 100) == 2
    assert lim.forget_full(NOW + 100) == 1 and len(lim) == 0


def test_forged_messages_do_not_spend_rate_limit_tokens() -> None:
    ctx, _, _ = make_ctx()
    ctx = dataclasses.replace(ctx, limiter=RateLimiter(burst=1, rate_per_second=0))
    so = make_signed()
    forged = _msg(dataclasses.replace(so, signature=eip712.sign_digest(b"\x02" * 32, so.offer.digest(DOMAIN))))
    for _ in range(5):
        assert validate_offer_message(forged, ctx, NOW)[0].reason == "bad_signature"
    assert validate_offer_message(_msg(so), ctx, NOW)[0].accepted


# Withdrawals


def _wmsg(nonce_below: int = 9, ts: int = NOW, key: bytes = KEY, domain: Domain = DOMAIN) -> bytes:
    w = OfferWithdrawal(address_of(key), nonce_below, ts)
    return O.encode_withdrawal_message(domain, O.sign_withdrawal(w, key, domain))


def test_withdrawal_accepted() -> None:
    ctx, _, _ = make_ctx()
    v, sw = validate_withdrawal_message(_wmsg(), ctx, NOW)
    assert v.accepted and sw is not None and sw.withdrawal.nonce_below == 9
    v2, sw2 = validate_gossip_message(_wmsg(10), ctx, NOW)
    assert v2.accepted and sw2 is not None
    v3, so = validate_gossip_message(_msg(make_signed()), ctx, NOW)
    assert v3.accepted and isinstance(so, SignedOffer)


def _wcase(name: str):
    ctx, chain, _ = make_ctx()
    msg = _wmsg()
    if name == "oversize":
        msg += b"\x00" * O.MAX_MESSAGE_BYTES
    elif name == "malformed":
        msg = msg[:-1]
    elif name == "malformed_type":
        msg = _msg(make_signed())
    elif name == "wrong_domain":
        msg = _wmsg(domain=OTHER_CHAIN)
    elif name == "field_out_of_range":
        msg = _wmsg(nonce_below=0)
    elif name == "too_far_future":
        msg = _wmsg(ts=NOW + ctx.rules.max_clock_skew + 1)
    elif name == "stale":
        msg = _wmsg(ts=NOW - ctx.rules.withdrawal_max_age - 1)
    elif name == "no_effect":
        chain.nonces[PROVIDER] = 9
    elif name == "provider_not_registered":
        chain.registered.clear()
    elif name == "bad_signature":
        w = OfferWithdrawal(PROVIDER, 9, NOW)
        msg = O.encode_withdrawal_message(
            DOMAIN, O.SignedWithdrawal(w, O.sign_withdrawal(w, b"\x02" * 32, DOMAIN).signature)
        )
    elif name == "bad_signature_garbage":
        w = OfferWithdrawal(PROVIDER, 9, NOW)
        msg = O.encode_withdrawal_message(DOMAIN, O.SignedWithdrawal(w, b"\x00" * 65))
    elif name == "bad_signature_v_0_or_1":
        w = OfferWithdrawal(PROVIDER, 9, NOW)
        sig = O.sign_withdrawal(w, KEY, DOMAIN).signature
        msg = O.encode_withdrawal_message(DOMAIN, O.SignedWithdrawal(w, sig[:64] + bytes([sig[64] - 27])))
    elif name == "rate_limited":
        ctx = dataclasses.replace(ctx, limiter=RateLimiter(burst=0, rate_per_second=0))
    return msg, ctx


@pytest.mark.parametrize(
    ("case", "reason", "verdict"),
    [
        ("oversize", "oversize", Verdict.REJECT),
        ("malformed", "malformed", Verdict.REJECT),
        ("malformed_type", "malformed", Verdict.REJECT),
        ("wrong_domain", "wrong_domain", Verdict.REJECT),
        ("field_out_of_range", "field_out_of_range", Verdict.REJECT),
        ("too_far_future", "too_far_future", Verdict.IGNORE),
        ("stale", "stale", Verdict.IGNORE),
        ("no_effect", "no_effect", Verdict.IGNORE),
        ("provider_not_registered", "provider_not_registered", Verdict.IGNORE),
        ("bad_signature", "bad_signature", Verdict.REJECT),
        ("bad_signature_garbage", "bad_signature", Verdict.REJECT),
        ("bad_signature_v_0_or_1", "bad_signature", Verdict.REJECT),
        ("rate_limited", "rate_limited", Verdict.IGNORE),
    ],
)
def test_withdrawal_validation_reason(case: str, reason: str, verdict: Verdict) -> None:
    msg, ctx = _wcase(case)
    v, sw = validate_withdrawal_message(msg, ctx, NOW)
    assert (v.verdict, v.reason) == (verdict, reason)
    assert sw is None


def test_gossip_dispatch_oversize() -> None:
    ctx, _, _ = make_ctx()
    v, _ = validate_gossip_message(b"\x00" * (O.MAX_MESSAGE_BYTES + 1), ctx, NOW)
    assert v.reason == "oversize"


def test_book_size_gauge() -> None:
    from node import metrics

    metrics.record_book_size(42)
    assert REGISTRY.get_sample_value("gpunet_offer_book_size") == 42
