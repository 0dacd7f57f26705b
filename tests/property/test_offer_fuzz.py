"""Property tests: strict decoding never crashes, encodings round-trip, mutations never validate, and the offer
book's indexed queries agree with a brute-force filter."""

from __future__ import annotations

import contextlib
import json

from coincurve import PrivateKey
from eth_utils import keccak
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.crypto import eip712
from node.crypto.eip712 import Domain
from node.protocol import offers as O
from node.protocol.offer_validation import OfferRules, ValidationContext, validate_gossip_message
from node.protocol.offerbook import OfferBook, OfferQuery
from node.protocol.offers import InvalidOfferEncoding, Offer, OfferSpec, SignedOffer, SignedWithdrawal
from node.types import Verdict

NOW = 1_700_000_000
DOMAIN = Domain(31337, "0x" + "ab" * 20)
KEYS = [(i + 1).to_bytes(32, "big") for i in range(4)]
ADDRS = [keccak(PrivateKey(k).public_key.format(compressed=False)[1:])[12:] for k in KEYS]
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Permissive:
    """Every provider registered with plenty of stake, no cancellations, empty book."""

    def is_registered(self, provider: bytes) -> bool:
        return True

    def free_stake(self, provider: bytes) -> int:
        return 2**255

    def min_nonce(self, provider: bytes) -> int:
        return 0

    def contains(self, offer_id: bytes) -> bool:
        return False

    def slot(self, provider: bytes, gpu_model: bytes) -> tuple[int, bytes] | None:
        return None


def permissive_ctx() -> ValidationContext:
    p = Permissive()
    return ValidationContext(DOMAIN, p, p, p, OfferRules(rate_burst=1e12))


# ---------------------------------------------------------------------------------------------------------------
# Strategies

tokens = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,31}", fullmatch=True)
specs = st.builds(
    OfferSpec,
    region=tokens,
    cpu_cores=st.integers(0, 2**32 - 1),
    ram_gib=st.integers(0, 2**32 - 1),
    driver_version=tokens,
    cuda_version=tokens,
    interconnect=tokens,
    benchmarks=st.dictionaries(
        st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", fullmatch=True), st.integers(0, 2**63 - 1), max_size=6
    ),
    simulated=st.booleans(),
)
u32, u64, u256 = st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1), st.integers(0, 2**256 - 1)


@st.composite
def any_signed_offers(draw: st.DrawFn) -> SignedOffer:
    """Well-typed (width-correct) offers, semantically valid or not, with arbitrary 65-byte signatures."""
    spec = draw(st.none() | specs)
    offer = Offer(
        provider=draw(st.binary(min_size=20, max_size=20)),
        nonce=draw(u256),
        gpu_model=draw(st.binary(min_size=32, max_size=32)),
        gpu_count=draw(u32),
        vram_mib=draw(u32),
        price_per_gpu_second=draw(u256),
        min_duration=draw(u64),
        max_duration=draw(u64),
        expires_at=draw(u64),
        spec_hash=draw(st.just(O.spec_hash(spec)) | st.binary(min_size=32, max_size=32)),
    )
    return SignedOffer(offer, draw(st.binary(min_size=65, max_size=65)), spec)


def valid_message(i: int = 0, spec: OfferSpec | None = None) -> bytes:
    spec = spec or OfferSpec("eu-west", 64, 512, "550.54.15", "12.4", "nvlink", {"fp16": 989})
    offer = Offer(
        ADDRS[i], 3, O.gpu_model_from_name("H100-80GB"), 8, 81920, 10**6, 60, 86_400, NOW + 600, spec.spec_hash()
    )
    return O.encode_offer_message(DOMAIN, O.sign_offer(offer, spec, KEYS[i], DOMAIN))


VALID = valid_message()
VALID_WITHDRAWAL = O.encode_withdrawal_message(
    DOMAIN, O.sign_withdrawal(O.OfferWithdrawal(ADDRS[0], 5, NOW), KEYS[0], DOMAIN)
)


# ---------------------------------------------------------------------------------------------------------------
# Decoding never crashes


@FAST
@given(st.binary(max_size=600))
def test_arbitrary_bytes_are_rejected_without_crashing(data: bytes) -> None:
    with contextlib.suppress(InvalidOfferEncoding):
        O.decode_message(data)
    with contextlib.suppress(InvalidOfferEncoding):
        O.decode_signed_offer(data)
    with contextlib.suppress(InvalidOfferEncoding):
        O.decode_spec(data)
    v, got = validate_gossip_message(data, permissive_ctx(), NOW)
    assert v.verdict is Verdict.REJECT and got is None


@FAST
@given(st.sampled_from([VALID[:56], VALID[:306], VALID_WITHDRAWAL[:60]]), st.binary(max_size=600))
def test_valid_prefix_then_garbage_never_accepts_or_crashes(prefix: bytes, tail: bytes) -> None:
    v, got = validate_gossip_message(prefix + tail, permissive_ctx(), NOW)
    assert not v.accepted and got is None


# ---------------------------------------------------------------------------------------------------------------
# Round trips


@FAST
@given(any_signed_offers())
def test_well_typed_offers_round_trip(so: SignedOffer) -> None:
    rec = O.encode_signed_offer(so)
    assert O.decode_signed_offer(rec) == so
    assert O.encode_signed_offer(O.decode_signed_offer(rec)) == rec
    assert O.offer_id_from_record(rec) == so.offer.struct_hash()
    msg = O.encode_offer_message(DOMAIN, so)
    env, back = O.decode_message(msg)
    assert back == so and env.chain_id == DOMAIN.chain_id


@FAST
@given(specs)
def test_specs_round_trip_canonically(spec: OfferSpec) -> None:
    data = spec.canonical_bytes()
    assert data == json.dumps(spec.to_json_obj(), sort_keys=True, separators=(",", ":")).encode("ascii")
    assert O.decode_spec(data) == spec
    assert data.isascii() and b" " not in data.replace(b'" "', b"")


@FAST
@given(st.binary(min_size=20, max_size=20), u256, u64, st.binary(min_size=65, max_size=65))
def test_withdrawals_round_trip(provider: bytes, nonce_below: int, ts: int, sig: bytes) -> None:
    sw = SignedWithdrawal(O.OfferWithdrawal(provider, nonce_below, ts), sig)
    assert O.decode_withdrawal(O.encode_withdrawal(sw)) == sw


# ---------------------------------------------------------------------------------------------------------------
# Mutations of a valid message never validate


@st.composite
def mutations(draw: st.DrawFn, base: bytes) -> bytes:
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete"]))
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[i] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=4))
        elif data:
            del data[i : i + draw(st.integers(1, 4))]
    return bytes(data)


@FAST
@given(st.data())
def test_mutated_offers_are_rejected_or_do_not_verify(data: st.DataObject) -> None:
    mutated = data.draw(mutations(VALID))
    if mutated == VALID:
        return
    ctx = permissive_ctx()
    v, got = validate_gossip_message(mutated, ctx, NOW)
    assert not v.accepted and got is None
    try:
        env, so = O.decode_message(mutated)
    except InvalidOfferEncoding:
        return
    if not isinstance(so, SignedOffer) or (env.chain_id, env.verifying_contract) != (31337, b"\xab" * 20):
        return
    if so.signature[64] not in (27, 28):  # the validator refuses v = 0/1 (the contract does too)
        return
    if so.offer.spec_hash != O.spec_hash(so.spec) or so.offer.field_problem():
        return
    try:
        signer = eip712.recover_raw(so.offer.digest(DOMAIN), so.signature)
    except (eip712.SignatureError, ValueError):
        return
    assert signer != so.offer.provider


@FAST
@given(st.data())
def test_mutated_withdrawals_never_validate(data: st.DataObject) -> None:
    mutated = data.draw(mutations(VALID_WITHDRAWAL))
    if mutated == VALID_WITHDRAWAL:
        return
    v, got = validate_gossip_message(mutated, permissive_ctx(), NOW)
    assert not v.accepted and got is None


# ---------------------------------------------------------------------------------------------------------------
# Offer book queries agree with brute force

MODELS = [O.gpu_model_from_name(n) for n in ("H100", "A100", "L40S")]
REGIONS = [None, "eu-west", "us-east"]


@st.composite
def book_offers(draw: st.DrawFn) -> SignedOffer:
    region = draw(st.sampled_from(REGIONS))
    spec = None if region is None else OfferSpec(region, 8, 64, "550", "12.4", "pcie")
    dmin = draw(st.integers(1, 5))
    offer = Offer(
        provider=draw(st.sampled_from(ADDRS)),
        nonce=draw(st.integers(0, 3)),
        gpu_model=draw(st.sampled_from(MODELS)),
        gpu_count=draw(st.integers(1, 8)),
        vram_mib=draw(st.sampled_from([16384, 40960, 81920])),
        price_per_gpu_second=draw(st.integers(1, 6)),  # many ties
        min_duration=dmin,
        max_duration=dmin + draw(st.integers(0, 5)),
        expires_at=NOW + draw(st.integers(1, 10)),
        spec_hash=O.spec_hash(spec),
    )
    return SignedOffer(offer, b"\x00" * 65, spec)


queries = st.builds(
    OfferQuery,
    gpu_model=st.none() | st.sampled_from([*MODELS, O.gpu_model_from_name("B200")]),
    min_gpu_count=st.integers(0, 9),
    min_vram_mib=st.sampled_from([0, 20000, 81920, 90000]),
    max_price=st.none() | st.integers(0, 7),
    region=st.none() | st.sampled_from(["eu-west", "us-east", "ap-south"]),
    duration=st.none() | st.integers(0, 11),
    limit=st.integers(0, 12),
)


def brute_force(live: list[SignedOffer], q: OfferQuery, now: int | None) -> list[bytes]:
    def ok(so: SignedOffer) -> bool:
        o = so.offer
        return (
            (q.gpu_model is None or o.gpu_model == q.gpu_model)
            and o.gpu_count >= q.min_gpu_count
            and o.vram_mib >= q.min_vram_mib
            and (q.max_price is None or o.price_per_gpu_second <= q.max_price)
            and (q.region is None or (so.spec is not None and so.spec.region == q.region))
            and (q.duration is None or o.min_duration <= q.duration <= o.max_duration)
            and (now is None or o.expires_at > now)
        )

    hits = sorted((so for so in live if ok(so)), key=lambda s: (s.offer.price_per_gpu_second, s.offer.struct_hash()))
    return [s.offer.struct_hash() for s in hits[: max(q.limit, 0)]]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(book_offers(), max_size=40),
    st.lists(queries, min_size=1, max_size=5),
    st.integers(0, 12),
    st.none() | st.tuples(st.integers(0, 3), st.integers(0, 4)),
    st.none() | st.integers(0, 12),
)
def test_book_queries_match_brute_force(
    offers: list[SignedOffer],
    qs: list[OfferQuery],
    evict_at: int,
    cancel: tuple[int, int] | None,
    query_now: int | None,
) -> None:
    book = OfferBook(DOMAIN)
    model: dict[tuple[bytes, bytes], SignedOffer] = {}  # reference: one offer per (provider, model) slot
    for so in offers:
        book.insert(so)
        o, oid = so.offer, so.offer.struct_hash()
        held = model.get((o.provider, o.gpu_model))
        if (
            held is None
            or o.nonce > held.offer.nonce
            or (o.nonce == held.offer.nonce and oid < held.offer.struct_hash())
        ):
            model[(o.provider, o.gpu_model)] = so
    book.evict_expired(NOW + evict_at)
    live = [so for so in model.values() if so.offer.expires_at > NOW + evict_at]
    if cancel is not None:
        who, below = ADDRS[cancel[0]], cancel[1]
        book.cancel_below(who, below)
        live = [so for so in live if not (so.offer.provider == who and so.offer.nonce < below)]
    assert sorted(e.offer_id for e in book.entries()) == sorted(so.offer.struct_hash() for so in live)
    assert len(book) == len(live)
    now = None if query_now is None else NOW + query_now
    for q in qs:
        got = [e.offer_id for e in book.query(q, now=now)]
        assert got == brute_force(live, q, now)
