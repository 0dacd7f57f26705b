"""Validation of gossiped / synced offer and withdrawal messages: every node checks each offer it keeps or forwards.

Pure and deterministic: time is the ``now`` argument (unix seconds), chain state comes through the small
``StakeView`` / ``NonceView`` ports, the book through ``OfferLookup``, and the only state this module changes is
the per-provider token buckets in ``RateLimiter``, which evolve as a function of the inputs alone.

Verdicts follow libp2p semantics (``node.types.Verdict``):

- **REJECT** (the sender is penalised) only for faults that are provable from the message bytes alone, the same for
  every honest node whatever its clock or chain view: ``oversize``, ``malformed``, ``wrong_domain``,
  ``field_out_of_range``, ``spec_hash_mismatch``, ``bad_signature``.
- **IGNORE** (dropped, not forwarded, no penalty) for everything that depends on the local clock, the local chain
  view or the local book, where an honest peer may simply see the world a little differently: ``expired``,
  ``too_far_future``, ``duplicate``, ``superseded``, ``nonce_cancelled``, ``provider_not_registered``,
  ``insufficient_stake``, ``rate_limited`` (and ``stale`` / ``no_effect`` for withdrawals, ``not_an_offer`` when a
  withdrawal is handed to the offer-only entry point).

Checks run cheapest first; the reason reported is the first check that fails. The signature (the expensive step)
is checked only after every cheap check has passed, and a provider's rate-limit tokens are spent only by messages
whose signature verified, so forged traffic cannot drain an honest provider's budget.

Superseding rule: an offer *slot* is ``(provider, gpuModel)``. The book keeps one offer per slot, the one with the
highest nonce; at equal nonces the lower offer id wins, so every node converges on the same choice whatever the
arrival order. Superseding is book policy only: the contract still honours a superseded offer until it expires or
is cancelled with ``cancelOffersBelow``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Protocol

from node.crypto import eip712
from node.crypto.eip712 import Domain
from node.protocol.offers import (
    MAX_MESSAGE_BYTES,
    MSG_OFFER,
    MSG_WITHDRAWAL,
    InvalidOfferEncoding,
    SignedOffer,
    SignedWithdrawal,
    StakeRule,
    decode_envelope,
    decode_offer_record,
    decode_withdrawal,
    encode_signed_offer,
    keccak256,
    offer_id_from_record,
    spec_bytes,
)
from node.types import ACCEPTED, OfferHash, Validation, Verdict

# Reasons (stable strings: they label metrics and logs).
OVERSIZE: Final = "oversize"
MALFORMED: Final = "malformed"
WRONG_DOMAIN: Final = "wrong_domain"
FIELD_OUT_OF_RANGE: Final = "field_out_of_range"
SPEC_HASH_MISMATCH: Final = "spec_hash_mismatch"
EXPIRED: Final = "expired"
TOO_FAR_FUTURE: Final = "too_far_future"
DUPLICATE: Final = "duplicate"
SUPERSEDED: Final = "superseded"
NONCE_CANCELLED: Final = "nonce_cancelled"
PROVIDER_NOT_REGISTERED: Final = "provider_not_registered"
INSUFFICIENT_STAKE: Final = "insufficient_stake"
BAD_SIGNATURE: Final = "bad_signature"
RATE_LIMITED: Final = "rate_limited"
NOT_AN_OFFER: Final = "not_an_offer"
STALE: Final = "stale"
NO_EFFECT: Final = "no_effect"

REJECT_REASONS: Final = frozenset(
    {OVERSIZE, MALFORMED, WRONG_DOMAIN, FIELD_OUT_OF_RANGE, SPEC_HASH_MISMATCH, BAD_SIGNATURE}
)

# Preallocated verdicts (Validation is frozen; sharing them keeps the hot path allocation-free).
_V = {
    r: Validation(Verdict.REJECT if r in REJECT_REASONS else Verdict.IGNORE, r)
    for r in (
        OVERSIZE,
        MALFORMED,
        WRONG_DOMAIN,
        FIELD_OUT_OF_RANGE,
        SPEC_HASH_MISMATCH,
        EXPIRED,
        TOO_FAR_FUTURE,
        DUPLICATE,
        SUPERSEDED,
        NONCE_CANCELLED,
        PROVIDER_NOT_REGISTERED,
        INSUFFICIENT_STAKE,
        BAD_SIGNATURE,
        RATE_LIMITED,
        NOT_AN_OFFER,
        STALE,
        NO_EFFECT,
    )
}


# ``recover_raw`` also takes v in {0, 1}, but the escrow's ECDSA (ecrecover) only takes 27/28: an offer signed with
# v = 0/1 could never open a lease, and would be a second encoding of the same offer. Such signatures are bad here.
_CONTRACT_V: Final = frozenset({27, 28})


# ---------------------------------------------------------------------------------------------------------------
# Ports (addresses are raw 20-byte values throughout)


class StakeView(Protocol):
    """The node's cached view of the staking contract (refreshed from chain events elsewhere)."""

    def is_registered(self, provider: bytes) -> bool: ...

    def free_stake(self, provider: bytes) -> int: ...


class NonceView(Protocol):
    """``minNonce[provider]``: the larger of the on-chain value and any accepted off-chain withdrawal."""

    def min_nonce(self, provider: bytes) -> int: ...


class OfferLookup(Protocol):
    """What the validator needs from the offer book: the holder of a slot.

    ``OfferBook`` implements it for its owner thread; readers on other threads use the book's published
    snapshot (``OfferBook.published``), which implements it too. The book holds exactly one offer per slot, so
    "this offer id is in the book" is "its slot holds this offer id": no second lookup is needed.
    """

    def slot(self, provider: bytes, gpu_model: bytes) -> tuple[int, bytes] | None:
        """(nonce, offer id) of the live offer in the slot, or None."""
        ...


# ---------------------------------------------------------------------------------------------------------------
# Rules and rate limiting


@dataclass(frozen=True, slots=True)
class OfferRules:
    """Tunable policy, typed defaults in one place.

    ``max_ttl``: an offer may expire at most this many seconds after ``now`` (providers re-announce before
    expiry). ``rate_burst`` / ``rate_per_second``: per-provider token bucket over accepted messages (offers and
    withdrawals together). ``withdrawal_max_age`` / ``max_clock_skew``: accepted window for a withdrawal's
    timestamp. ``stake``: the collateral rule an offer must meet.
    """

    max_ttl: int = 3600
    max_message_bytes: int = MAX_MESSAGE_BYTES
    rate_burst: float = 20.0
    rate_per_second: float = 0.2
    withdrawal_max_age: int = 3600
    max_clock_skew: int = 60
    stake: StakeRule = field(default_factory=StakeRule)


class RateLimiter:
    """Per-provider token buckets. Deterministic: the state changes only through ``take(provider, now)``.

    Only providers whose messages carried a valid signature reach ``take`` (and they must be registered), so the
    table is bounded by the number of registered providers. ``forget_before(now)`` drops full buckets.
    """

    __slots__ = ("_buckets", "burst", "rate")

    def __init__(self, burst: float, rate_per_second: float) -> None:
        self.burst = float(burst)
        self.rate = float(rate_per_second)
        self._buckets: dict[bytes, tuple[float, int]] = {}

    def take(self, provider: bytes, now: int) -> bool:
        tokens, last = self._buckets.get(provider, (self.burst, now))
        if now > last:
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            last = now
        if tokens < 1.0:
            self._buckets[provider] = (tokens, last)
            return False
        self._buckets[provider] = (tokens - 1.0, last)
        return True

    def tokens(self, provider: bytes, now: int) -> float:
        tokens, last = self._buckets.get(provider, (self.burst, now))
        return min(self.burst, tokens + max(0, now - last) * self.rate)

    def forget_full(self, now: int) -> int:
        """Drop buckets that have refilled completely (they are equivalent to absent ones)."""
        full = [p for p in self._buckets if self.tokens(p, now) >= self.burst]
        for p in full:
            del self._buckets[p]
        return len(full)

    def __len__(self) -> int:
        return len(self._buckets)


@dataclass(frozen=True, slots=True)
class ValidationContext:
    """Everything validation reads: our domain, policy, chain views, the book, and the rate-limit state."""

    domain: Domain
    stake: StakeView
    nonces: NonceView
    book: OfferLookup
    rules: OfferRules = field(default_factory=OfferRules)
    limiter: RateLimiter | None = None
    chain_id_bytes: bytes = field(init=False, repr=False, compare=False)
    escrow_raw: bytes = field(init=False, repr=False, compare=False)
    digest_prefix: bytes = field(init=False, repr=False, compare=False)  # 0x1901 || domainSeparator

    def __post_init__(self) -> None:
        object.__setattr__(self, "chain_id_bytes", self.domain.chain_id.to_bytes(32, "big"))
        object.__setattr__(self, "escrow_raw", bytes.fromhex(self.domain.verifying_contract[2:]))
        object.__setattr__(self, "digest_prefix", b"\x19\x01" + self.domain.separator)
        if self.limiter is None:
            object.__setattr__(self, "limiter", RateLimiter(self.rules.rate_burst, self.rules.rate_per_second))


# ---------------------------------------------------------------------------------------------------------------
# Validation


def validate_offer_message(data: bytes, ctx: ValidationContext, now: int) -> tuple[Validation, SignedOffer | None]:
    """Validate one gossip/sync message that should carry an offer. Never raises on peer input.

    Returns the verdict and, on ACCEPT only, the decoded offer. ``offer_id`` of an accepted offer is
    ``offer_id_from_record``/``Offer.struct_hash``; ``validate_offer_message_with_id`` returns it too.
    """
    v, so, _ = validate_offer_message_with_id(data, ctx, now)
    return v, so


def validate_offer_message_with_id(
    data: bytes, ctx: ValidationContext, now: int
) -> tuple[Validation, SignedOffer | None, OfferHash | None]:
    """``validate_offer_message`` that also hands back the offer id (saves the book a second hash)."""
    if len(data) > ctx.rules.max_message_bytes:
        return _V[OVERSIZE], None, None
    try:
        env = decode_envelope(data)
        if env.kind != MSG_OFFER:
            return _V[NOT_AN_OFFER], None, None
        so, sb = decode_offer_record(env.body)
    except InvalidOfferEncoding as exc:
        return _V[OVERSIZE if exc.reason == OVERSIZE else MALFORMED], None, None
    return _check_offer(so, sb, env.body, env.chain_id, env.verifying_contract, ctx, now)


def validate_signed_offer(so: SignedOffer, ctx: ValidationContext, now: int) -> tuple[Validation, OfferHash | None]:
    """Validate an already-decoded offer for our own domain (local publishing, reloading from storage)."""
    record = encode_signed_offer(so)
    v, _, oid = _check_offer(so, spec_bytes(so.spec), record, ctx.domain.chain_id, ctx.escrow_raw, ctx, now)
    return v, oid


def _check_offer(
    so: SignedOffer,
    sb: bytes,
    record: bytes,
    chain_id: int,
    escrow: bytes,
    ctx: ValidationContext,
    now: int,
) -> tuple[Validation, SignedOffer | None, OfferHash | None]:
    if chain_id != ctx.domain.chain_id or escrow != ctx.escrow_raw:
        return _V[WRONG_DOMAIN], None, None
    o = so.offer
    if o.field_problem() is not None:
        return _V[FIELD_OUT_OF_RANGE], None, None
    if keccak256(sb) != o.spec_hash:
        return _V[SPEC_HASH_MISMATCH], None, None
    if o.expires_at <= now:  # the contract opens leases only while block.timestamp < expiresAt
        return _V[EXPIRED], None, None
    rules = ctx.rules
    if o.expires_at > now + rules.max_ttl:
        return _V[TOO_FAR_FUTURE], None, None
    oid = offer_id_from_record(record)
    provider = o.provider
    held = ctx.book.slot(provider, o.gpu_model)  # one read: a consistent answer even while the book changes
    if held is not None:
        held_nonce, held_id = held
        if held_id == oid:
            return _V[DUPLICATE], None, None
        if held_nonce > o.nonce or (held_nonce == o.nonce and held_id < oid):
            return _V[SUPERSEDED], None, None
    if o.nonce < ctx.nonces.min_nonce(provider):
        return _V[NONCE_CANCELLED], None, None
    stake = ctx.stake
    if not stake.is_registered(provider):
        return _V[PROVIDER_NOT_REGISTERED], None, None
    if stake.free_stake(provider) < rules.stake.required(o):
        return _V[INSUFFICIENT_STAKE], None, None
    sig = so.signature
    if sig[64] not in _CONTRACT_V:
        return _V[BAD_SIGNATURE], None, None
    try:
        signer = eip712.recover_raw(keccak256(ctx.digest_prefix + oid), sig)
    except eip712.SignatureError:
        return _V[BAD_SIGNATURE], None, None
    if signer != provider:
        return _V[BAD_SIGNATURE], None, None
    assert ctx.limiter is not None
    if not ctx.limiter.take(provider, now):
        return _V[RATE_LIMITED], None, None
    return ACCEPTED, so, oid


def validate_withdrawal_message(
    data: bytes, ctx: ValidationContext, now: int
) -> tuple[Validation, SignedWithdrawal | None]:
    """Validate a withdrawal message. On ACCEPT the caller raises its ``min_nonce`` view for the provider and
    calls ``OfferBook.cancel_below``. ``no_effect``: ``nonceBelow`` does not exceed the known ``min_nonce``."""
    if len(data) > ctx.rules.max_message_bytes:
        return _V[OVERSIZE], None
    try:
        env = decode_envelope(data)
        if env.kind != MSG_WITHDRAWAL:
            return _V[MALFORMED], None
        sw = decode_withdrawal(env.body)
    except InvalidOfferEncoding as exc:
        return _V[OVERSIZE if exc.reason == OVERSIZE else MALFORMED], None
    if env.chain_id != ctx.domain.chain_id or env.verifying_contract != ctx.escrow_raw:
        return _V[WRONG_DOMAIN], None
    w = sw.withdrawal
    rules = ctx.rules
    if w.nonce_below == 0:
        return _V[FIELD_OUT_OF_RANGE], None
    if w.timestamp > now + rules.max_clock_skew:
        return _V[TOO_FAR_FUTURE], None
    if w.timestamp + rules.withdrawal_max_age < now:
        return _V[STALE], None
    if w.nonce_below <= ctx.nonces.min_nonce(w.provider):
        return _V[NO_EFFECT], None
    if not ctx.stake.is_registered(w.provider):
        return _V[PROVIDER_NOT_REGISTERED], None
    if sw.signature[64] not in _CONTRACT_V:
        return _V[BAD_SIGNATURE], None
    try:
        signer = eip712.recover_raw(w.digest(ctx.domain), sw.signature)
    except eip712.SignatureError:
        return _V[BAD_SIGNATURE], None
    if signer != w.provider:
        return _V[BAD_SIGNATURE], None
    assert ctx.limiter is not None
    if not ctx.limiter.take(w.provider, now):
        return _V[RATE_LIMITED], None
    return ACCEPTED, sw


def validate_gossip_message(
    data: bytes, ctx: ValidationContext, now: int
) -> tuple[Validation, SignedOffer | SignedWithdrawal | None]:
    """Entry point for the offers topic, which carries both message types: dispatch on the envelope type."""
    if len(data) > ctx.rules.max_message_bytes:
        return _V[OVERSIZE], None
    if len(data) >= 4 and data[3] == MSG_WITHDRAWAL:
        return validate_withdrawal_message(data, ctx, now)
    return validate_offer_message(data, ctx, now)
