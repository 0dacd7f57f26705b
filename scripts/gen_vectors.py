#!/usr/bin/env python3
"""Generate the wire-format test vectors in ``docs/vectors/*.json`` (see docs/spec.md, "Test vectors").

Deterministic: fixed private keys, fixed nonces and fixed timestamps, no randomness (secp256k1 signatures are
RFC 6979, ed25519 signatures are deterministic, the sealed box takes a fixed nonce), JSON with sorted keys.
Running it twice gives byte-identical files. The vectors are produced by the node's own codecs, so they freeze
today's formats: a codec change that alters any byte makes ``tests/unit/test_vectors.py`` fail.

Usage: ``.venv/bin/python scripts/gen_vectors.py [--out DIR]`` (default: docs/vectors next to this script).

JSON conventions: every integer is a decimal string (JSON numbers lose precision above 2^53), except small
counts and codes that are plain numbers where noted; byte strings are lowercase ``0x`` hex; addresses are raw
lowercase hex (20 bytes).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import nacl.signing  # noqa: E402
from coincurve import PrivateKey  # noqa: E402

from node.crypto import box, eip712  # noqa: E402
from node.crypto.eip712 import Domain  # noqa: E402
from node.crypto.nodekey import peer_id_of_node_key  # noqa: E402
from node.p2p import framing, sync  # noqa: E402
from node.p2p.config import LEASE_PROTOCOL, SYNC_PROTOCOL, GossipParams, offers_topic  # noqa: E402
from node.protocol import heartbeat as hb  # noqa: E402
from node.protocol import job_spec  # noqa: E402
from node.protocol import lease_messages as lm  # noqa: E402
from node.protocol import offer_validation as ov  # noqa: E402
from node.protocol import offers as O  # noqa: E402
from node.protocol.checkpoint import (  # noqa: E402
    DEFAULT_TOLERANCE,
    Checkpoint,
    LeaseView,
    SignedCheckpoint,
    checkpoint_digest,
    sign_checkpoint,
    verify_checkpoint,
)

# ---------------------------------------------------------------------------------------------------------------
# Fixed inputs

PROVIDER_WALLET = (0x1001).to_bytes(32, "big")
CONSUMER_WALLET = (0x2002).to_bytes(32, "big")
STRANGER_WALLET = (0x3003).to_bytes(32, "big")
PROVIDER_NODE_SEED = bytes([0xA1]) * 32
CONSUMER_NODE_SEED = bytes([0xB2]) * 32
STRANGER_NODE_SEED = bytes([0xC3]) * 32
CHAIN_ID = 31337
ESCROW = "0x5fbdb2315678afecb367f032d93f642f64180aa3"
OTHER_ESCROW = "0x" + "ee" * 20
NOW = 1_700_000_000  # unix seconds of every validation below
LEASE_ID = 42
TOL = DEFAULT_TOLERANCE
BOX_NONCE = bytes(range(24))
COLLATERAL_BPS = 2_000
MIN_FREE_STAKE = 1

DOMAIN = Domain(CHAIN_ID, ESCROW)
PROVIDER_NODE = nacl.signing.SigningKey(PROVIDER_NODE_SEED)
CONSUMER_NODE = nacl.signing.SigningKey(CONSUMER_NODE_SEED)
STRANGER_NODE = nacl.signing.SigningKey(STRANGER_NODE_SEED)


def address_of(private_key: bytes) -> bytes:
    return O.keccak256(PrivateKey(private_key).public_key.format(compressed=False)[1:])[12:]


PROVIDER = address_of(PROVIDER_WALLET)
CONSUMER = address_of(CONSUMER_WALLET)
STRANGER = address_of(STRANGER_WALLET)
UNREGISTERED_WALLET = (0x4004).to_bytes(32, "big")
UNREGISTERED = address_of(UNREGISTERED_WALLET)
POOR_WALLET = (0x5005).to_bytes(32, "big")
POOR = address_of(POOR_WALLET)


def hx(data: bytes) -> str:
    return "0x" + bytes(data).hex()


def dec(value: int) -> str:
    return str(int(value))


# ---------------------------------------------------------------------------------------------------------------
# Offers and withdrawals


SPEC = O.OfferSpec(
    region="eu-west",
    cpu_cores=64,
    ram_gib=512,
    driver_version="550.54.15",
    cuda_version="12.4",
    interconnect="nvlink",
    benchmarks={"fp16_tflops": 989, "mem_bw_gbs": 3350},
    simulated=False,
)


def base_offer(**overrides: Any) -> O.Offer:
    o = O.Offer(
        provider=PROVIDER,
        nonce=7,
        gpu_model=O.gpu_model_from_name("H100-80GB"),
        gpu_count=8,
        vram_mib=81920,
        price_per_gpu_second=1_000_000,
        min_duration=60,
        max_duration=86_400,
        expires_at=NOW + 1800,
        spec_hash=O.spec_hash(SPEC),
    )
    return dataclasses.replace(o, **overrides)


def signed(offer: O.Offer, spec: O.OfferSpec | None = SPEC, key: bytes = PROVIDER_WALLET,
           domain: Domain = DOMAIN) -> O.SignedOffer:
    """Sign without the spec-hash guard of ``sign_offer`` (some invalid vectors need a mismatching hash)."""
    return O.SignedOffer(offer, eip712.sign_digest(key, offer.digest(domain)), spec)


def offer_message(so: O.SignedOffer, domain: Domain = DOMAIN) -> bytes:
    return O.encode_offer_message(domain, so)


def high_s(sig: bytes) -> bytes:
    """The malleated twin of a signature: s -> n - s, v flipped (recovers to the same signer on plain ecrecover)."""
    s = int.from_bytes(sig[32:64], "big")
    return sig[:32] + (eip712.SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - sig[64]])


def offer_fields(env: O.Envelope, so: O.SignedOffer, spec_raw: bytes) -> dict[str, Any]:
    o = so.offer
    return {
        "envelope": {"type": env.kind, "chainId": dec(env.chain_id), "escrow": hx(env.verifying_contract)},
        "provider": hx(o.provider),
        "nonce": dec(o.nonce),
        "gpuModel": hx(o.gpu_model),
        "gpuModelName": o.gpu_model_name if O.is_canonical_gpu_model(o.gpu_model) else None,
        "gpuCount": dec(o.gpu_count),
        "vramMiB": dec(o.vram_mib),
        "pricePerGpuSecond": dec(o.price_per_gpu_second),
        "minDuration": dec(o.min_duration),
        "maxDuration": dec(o.max_duration),
        "expiresAt": dec(o.expires_at),
        "specHash": hx(o.spec_hash),
        "signature": hx(so.signature),
        "spec": spec_raw.decode("ascii"),
    }


def withdrawal_fields(env: O.Envelope, sw: O.SignedWithdrawal) -> dict[str, Any]:
    w = sw.withdrawal
    return {
        "envelope": {"type": env.kind, "chainId": dec(env.chain_id), "escrow": hx(env.verifying_contract)},
        "provider": hx(w.provider),
        "nonceBelow": dec(w.nonce_below),
        "timestamp": dec(w.timestamp),
        "signature": hx(sw.signature),
    }


@dataclasses.dataclass
class Chain:
    """The stake/nonce view of a validation context, built from its JSON form."""

    providers: dict[bytes, dict[str, Any]]

    def is_registered(self, provider: bytes) -> bool:
        return bool(self.providers.get(provider, {}).get("registered", False))

    def free_stake(self, provider: bytes) -> int:
        return int(self.providers.get(provider, {}).get("freeStake", "0"))

    def min_nonce(self, provider: bytes) -> int:
        return int(self.providers.get(provider, {}).get("minNonce", "0"))


@dataclasses.dataclass
class Book:
    entries: list[dict[str, str]]

    def contains(self, offer_id: bytes) -> bool:
        return any(bytes.fromhex(e["offerId"][2:]) == offer_id for e in self.entries)

    def slot(self, provider: bytes, gpu_model: bytes) -> tuple[int, bytes] | None:
        for e in self.entries:
            if bytes.fromhex(e["provider"][2:]) == provider and bytes.fromhex(e["gpuModel"][2:]) == gpu_model:
                return int(e["nonce"]), bytes.fromhex(e["offerId"][2:])
        return None


def base_context() -> dict[str, Any]:
    rules = ov.OfferRules()
    return {
        "now": dec(NOW),
        "domain": {"chainId": dec(CHAIN_ID), "verifyingContract": ESCROW},
        "rules": {
            "maxTtl": rules.max_ttl,
            "maxMessageBytes": rules.max_message_bytes,
            "rateBurst": rules.rate_burst,
            "ratePerSecond": rules.rate_per_second,
            "withdrawalMaxAge": rules.withdrawal_max_age,
            "maxClockSkew": rules.max_clock_skew,
            "minFreeStake": dec(MIN_FREE_STAKE),
            "collateralBps": COLLATERAL_BPS,
        },
        "providers": {
            hx(PROVIDER): {"registered": True, "freeStake": dec(10**21), "minNonce": "3"},
            hx(STRANGER): {"registered": True, "freeStake": dec(10**21), "minNonce": "0"},
            hx(POOR): {"registered": True, "freeStake": dec(1000), "minNonce": "0"},
            hx(UNREGISTERED): {"registered": False, "freeStake": "0", "minNonce": "0"},
        },
        "book": [],
    }


def context_from_json(ctx: dict[str, Any]) -> tuple[ov.ValidationContext, int]:
    """A fresh ``ValidationContext`` (fresh rate limiter) from a vector file's context; also returns ``now``."""
    r = ctx["rules"]
    rules = ov.OfferRules(
        max_ttl=r["maxTtl"],
        max_message_bytes=r["maxMessageBytes"],
        rate_burst=r["rateBurst"],
        rate_per_second=r["ratePerSecond"],
        withdrawal_max_age=r["withdrawalMaxAge"],
        max_clock_skew=r["maxClockSkew"],
        stake=O.StakeRule(min_free_stake=int(r["minFreeStake"]), collateral_bps=r["collateralBps"]),
    )
    chain = Chain({bytes.fromhex(k[2:]): v for k, v in ctx["providers"].items()})
    domain = Domain(int(ctx["domain"]["chainId"]), ctx["domain"]["verifyingContract"])
    vc = ov.ValidationContext(domain=domain, stake=chain, nonces=chain, book=Book(ctx["book"]), rules=rules)
    return vc, int(ctx["now"])


def merged(base: dict[str, Any], override: dict[str, Any] | None) -> dict[str, Any]:
    if not override:
        return base
    out = json.loads(json.dumps(base))
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def gossip_vector(name: str, data: bytes, ctx: dict[str, Any], override: dict[str, Any] | None = None,
                  note: str = "") -> dict[str, Any]:
    """One offers-topic vector: bytes, strict decoding result, validator verdict under the (merged) context."""
    vc, now = context_from_json(merged(ctx, override))
    verdict, _ = ov.validate_gossip_message(data, vc, now)
    v: dict[str, Any] = {"name": name, "hex": hx(data), "verdict": verdict.verdict.value, "reason": verdict.reason}
    if note:
        v["note"] = note
    if override:
        v["contextOverride"] = override
    try:
        env, msg = O.decode_message(data)
    except O.InvalidOfferEncoding as exc:
        v["decodeError"] = exc.reason
        return v
    if isinstance(msg, O.SignedOffer):
        spec_raw = O.decode_offer_record(env.body)[1]
        v["fields"] = offer_fields(env, msg, spec_raw)
        oid = msg.offer.struct_hash()
        v["offerId"] = hx(oid)
        v["digest"] = hx(O.keccak256(b"\x19\x01" + Domain(env.chain_id, hx(env.verifying_contract)).separator + oid))
    else:
        v["fields"] = withdrawal_fields(env, msg)
        v["structHash"] = hx(msg.withdrawal.struct_hash())
        v["digest"] = hx(msg.withdrawal.digest(Domain(env.chain_id, hx(env.verifying_contract))))
    try:
        v["signer"] = hx(eip712.recover_raw(bytes.fromhex(v["digest"][2:]), msg.signature))
    except eip712.SignatureError as exc:
        v["signerError"] = str(exc)
    return v


def replace_at(data: bytes, offset: int, new: bytes) -> bytes:
    return data[:offset] + new + data[offset + len(new):]


def offer_vectors() -> dict[str, Any]:
    ctx = base_context()
    good = signed(base_offer())
    good_msg = offer_message(good)
    no_spec = signed(base_offer(nonce=8, gpu_model=O.gpu_model_from_name("A100"), spec_hash=O.EMPTY_SPEC_HASH), None)
    utf8 = signed(base_offer(nonce=9, gpu_model=O.gpu_model_from_name("RTX 4090 — 24 GB"), gpu_count=1,
                             vram_mib=24_564, price_per_gpu_second=2**70, min_duration=1, max_duration=1,
                             expires_at=NOW + 3600))
    big_nonce = signed(base_offer(nonce=2**255 + 12345, gpu_model=O.gpu_model_from_name("L4")))
    out: list[dict[str, Any]] = [
        gossip_vector("offer_with_spec", good_msg, ctx),
        gossip_vector("offer_without_spec", offer_message(no_spec), ctx),
        gossip_vector("offer_utf8_model_max_ttl", offer_message(utf8), ctx,
                      note="multi-byte UTF-8 gpuModel; price above 2^64 (valid on the wire, the contract refuses "
                           "it at openLease); expiresAt exactly now + maxTtl"),
        gossip_vector("offer_u256_nonce", offer_message(big_nonce), ctx),
    ]
    oid = good.offer.struct_hash()
    # --- strict decoding failures (REJECT malformed / oversize)
    hdr = O.ENVELOPE_HEADER_BYTES
    bad_spec_ws = good_msg[: hdr + 248] + len(b" " + O.spec_bytes(SPEC)).to_bytes(2, "big") + b" " + O.spec_bytes(SPEC)
    spec_json = json.loads(O.spec_bytes(SPEC))
    del spec_json["simulated"]
    missing_key = json.dumps(spec_json, sort_keys=True, separators=(",", ":")).encode()
    float_spec = O.spec_bytes(SPEC).replace(b'"cpu_cores":64', b'"cpu_cores":64.0')
    unsorted = O.spec_bytes(SPEC).replace(b'{"benchmarks"', b'{"simulated":false,"benchmarks"').replace(
        b',"simulated":false}', b"}")

    def with_spec(raw: bytes) -> bytes:
        return good_msg[: hdr + 248] + len(raw).to_bytes(2, "big") + raw

    cases: list[tuple[str, bytes]] = [
        ("oversize_4097_bytes", good_msg + bytes(4097 - len(good_msg))),
        ("truncated_envelope", good_msg[:55]),
        ("envelope_bad_magic", replace_at(good_msg, 0, b"GX")),
        ("envelope_unknown_version", replace_at(good_msg, 2, b"\x02")),
        ("envelope_unknown_type", replace_at(good_msg, 3, b"\x03")),
        ("record_truncated", good_msg[: hdr + 249]),
        ("record_bad_magic", replace_at(good_msg, hdr, b"GX")),
        ("record_unknown_version", replace_at(good_msg, hdr + 2, b"\x00")),
        ("record_trailing_byte", good_msg + b"\x00"),
        ("record_spec_cut_short", good_msg[:-1]),
        ("record_spec_len_2049", replace_at(good_msg, hdr + 248, (2049).to_bytes(2, "big"))),
        ("spec_with_whitespace", bad_spec_ws),
        ("spec_missing_key", with_spec(missing_key)),
        ("spec_float", with_spec(float_spec)),
        ("spec_keys_unsorted", with_spec(unsorted)),
        ("spec_not_ascii", with_spec(O.spec_bytes(SPEC).replace(b"eu-west", b"eu-w\xc3\xa9st"))),
        ("spec_not_json", with_spec(b"{")),
    ]
    out += [gossip_vector(n, d, ctx) for n, d in cases]
    # --- semantic REJECTs
    other_domain = Domain(CHAIN_ID, OTHER_ESCROW)
    out.append(gossip_vector("wrong_domain_escrow", offer_message(signed(base_offer(), domain=other_domain),
                                                                  other_domain), ctx))
    out.append(gossip_vector("wrong_domain_chain_id", offer_message(good, Domain(1, ESCROW)), ctx))
    field_cases: list[tuple[str, O.Offer]] = [
        ("gpu_count_zero", base_offer(gpu_count=0)),
        ("vram_zero", base_offer(vram_mib=0)),
        ("price_zero", base_offer(price_per_gpu_second=0)),
        ("min_duration_zero", base_offer(min_duration=0)),
        ("min_duration_above_max", base_offer(min_duration=100, max_duration=99)),
        ("gpu_model_empty", base_offer(gpu_model=bytes(32))),
        ("gpu_model_inner_nul", base_offer(gpu_model=b"H100\x00X".ljust(32, b"\x00"))),
        ("gpu_model_bad_utf8", base_offer(gpu_model=b"H100\xff".ljust(32, b"\x00"))),
        ("gpu_model_leading_nul", base_offer(gpu_model=b"\x00H100".ljust(32, b"\x00"))),
        ("price_overflow", base_offer(price_per_gpu_second=2**220, gpu_count=2**20, max_duration=2**8)),
    ]
    out += [gossip_vector(f"field_out_of_range_{n}", offer_message(signed(o)), ctx) for n, o in field_cases]
    out.append(gossip_vector("field_price_just_below_overflow", offer_message(signed(
        base_offer(price_per_gpu_second=(2**248 - 1) // (2**20 * 2**8), gpu_count=2**20, max_duration=2**8))), ctx,
        {"providers": {hx(PROVIDER): {"registered": True, "freeStake": dec(2**256 - 1), "minNonce": "3"}}},
        note="price x gpuCount x maxDuration = 2^248 - 2^28 < 2^248: in range"))
    out.append(gossip_vector("spec_hash_mismatch", offer_message(signed(base_offer(spec_hash=O.EMPTY_SPEC_HASH))),
                             ctx))
    # --- IGNOREs (clock, chain view, book)
    out.append(gossip_vector("expired_at_now", offer_message(signed(base_offer(expires_at=NOW))), ctx))
    out.append(gossip_vector("too_far_future", offer_message(signed(base_offer(expires_at=NOW + 3601))), ctx))
    out.append(gossip_vector("duplicate", good_msg, ctx, {"book": [
        {"offerId": hx(oid), "provider": hx(PROVIDER), "gpuModel": hx(good.offer.gpu_model), "nonce": "7"}]}))
    out.append(gossip_vector("superseded_by_higher_nonce", good_msg, ctx, {"book": [
        {"offerId": hx(b"\x99" * 32), "provider": hx(PROVIDER), "gpuModel": hx(good.offer.gpu_model),
         "nonce": "8"}]}))
    out.append(gossip_vector("superseded_equal_nonce_lower_id", good_msg, ctx, {"book": [
        {"offerId": hx(b"\x00" * 32), "provider": hx(PROVIDER), "gpuModel": hx(good.offer.gpu_model),
         "nonce": "7"}]}))
    out.append(gossip_vector("replaces_equal_nonce_higher_id", good_msg, ctx, {"book": [
        {"offerId": hx(b"\xff" * 32), "provider": hx(PROVIDER), "gpuModel": hx(good.offer.gpu_model),
         "nonce": "7"}]}, note="same slot and nonce, the held offer has a higher id: accepted"))
    out.append(gossip_vector("nonce_cancelled", offer_message(signed(base_offer(nonce=2))), ctx))
    out.append(gossip_vector("provider_not_registered", offer_message(signed(
        base_offer(provider=UNREGISTERED), key=UNREGISTERED_WALLET)), ctx))
    # required = 1 + ceil(1_000_000 * 8 * 60 * 2000 / 10000) = 96_000_001
    out.append(gossip_vector("insufficient_stake", offer_message(signed(base_offer(provider=POOR), key=POOR_WALLET)),
                             ctx, {"providers": {hx(POOR): {"registered": True, "freeStake": "96000000",
                                                            "minNonce": "0"}}}))
    out.append(gossip_vector("stake_exactly_enough", offer_message(signed(base_offer(provider=POOR), key=POOR_WALLET)),
                             ctx, {"providers": {hx(POOR): {"registered": True, "freeStake": "96000001",
                                                            "minNonce": "0"}}}))
    # --- signatures
    out.append(gossip_vector("bad_signature_other_signer", offer_message(signed(base_offer(), key=STRANGER_WALLET)),
                             ctx))
    v01 = good.signature[:64] + bytes([good.signature[64] - 27])
    out.append(gossip_vector("bad_signature_v_0_or_1", offer_message(dataclasses.replace(good, signature=v01)), ctx))
    out.append(gossip_vector("bad_signature_high_s", offer_message(dataclasses.replace(good,
                                                                                      signature=high_s(good.signature))),
                             ctx))
    out.append(gossip_vector("bad_signature_zero_r", offer_message(dataclasses.replace(
        good, signature=bytes(32) + good.signature[32:])), ctx))
    out.append(gossip_vector("rate_limited", good_msg, ctx, {"rules": {"rateBurst": 0.0}},
                             note="a bucket that starts empty: the first correctly signed message is over the limit"))
    return {
        "description": "Offers topic / offers-sync messages carrying an offer record (envelope type 1). For each: "
                       "the bytes, the strict decoding (fields or decodeError), and the validator verdict under "
                       "the file's context merged with the vector's contextOverride (a fresh rate limiter each).",
        "context": ctx,
        "vectors": out,
    }


def withdrawal_vectors() -> dict[str, Any]:
    ctx = base_context()

    def wmsg(nonce_below: int = 10, timestamp: int = NOW - 10, key: bytes = PROVIDER_WALLET,
             provider: bytes = PROVIDER, domain: Domain = DOMAIN, sig: Callable[[bytes], bytes] | None = None) -> bytes:
        w = O.OfferWithdrawal(provider, nonce_below, timestamp)
        sw = O.sign_withdrawal(w, key, domain)
        if sig is not None:
            sw = O.SignedWithdrawal(w, sig(sw.signature))
        return O.encode_withdrawal_message(domain, sw)

    good = wmsg()
    hdr = O.ENVELOPE_HEADER_BYTES
    out = [
        gossip_vector("withdrawal", good, ctx),
        gossip_vector("withdrawal_u256_nonce", wmsg(nonce_below=2**256 - 1), ctx),
        gossip_vector("truncated", good[:-1], ctx),
        gossip_vector("trailing_byte", good + b"\x00", ctx),
        gossip_vector("record_bad_magic", replace_at(good, hdr, b"GO"), ctx),
        gossip_vector("record_unknown_version", replace_at(good, hdr + 2, b"\x02"), ctx),
        gossip_vector("wrong_domain", wmsg(domain=Domain(CHAIN_ID, OTHER_ESCROW)), ctx),
        gossip_vector("nonce_below_zero", wmsg(nonce_below=0), ctx),
        gossip_vector("too_far_future", wmsg(timestamp=NOW + 61), ctx),
        gossip_vector("clock_skew_edge", wmsg(timestamp=NOW + 60), ctx, note="timestamp = now + maxClockSkew"),
        gossip_vector("stale", wmsg(timestamp=NOW - 3601), ctx),
        gossip_vector("max_age_edge", wmsg(timestamp=NOW - 3600), ctx, note="timestamp = now - withdrawalMaxAge"),
        gossip_vector("no_effect", wmsg(nonce_below=3), ctx, note="nonceBelow = the known minNonce"),
        gossip_vector("provider_not_registered", wmsg(provider=UNREGISTERED, key=UNREGISTERED_WALLET), ctx),
        gossip_vector("bad_signature_other_signer", wmsg(key=STRANGER_WALLET), ctx),
        gossip_vector("bad_signature_high_s", wmsg(sig=high_s), ctx),
        gossip_vector("bad_signature_v_0_or_1", wmsg(sig=lambda s: s[:64] + bytes([s[64] - 27])), ctx),
    ]
    return {
        "description": "Offers topic messages carrying a withdrawal record (envelope type 2), with decoding and "
                       "the validator verdict under the file's context (merged with contextOverride).",
        "context": ctx,
        "vectors": out,
    }


# ---------------------------------------------------------------------------------------------------------------
# Heartbeats and checkpoints


def usage_fields(usage: bytes) -> dict[str, Any]:
    s = hb.decode_usage(usage)
    return {
        "simulated": s.simulated,
        "deviceCount": s.device_count,
        "devices": [{"utilisationPct": d.utilisation_pct, "memoryMiB": d.memory_mib, "powerW": d.power_w}
                    for d in s.devices],
    }


def heartbeat_fields(signed: bytes) -> dict[str, Any]:
    h = hb.decode(signed[: hb.BODY_SIZE])
    return {
        "leaseId": dec(h.lease_id),
        "seq": dec(h.seq),
        "timeMs": dec(h.time_ms),
        "gpuSeconds": dec(h.gpu_seconds),
        "prevHash": hx(h.prev_hash),
        "usage": hx(h.usage),
        "usageDecoded": usage_fields(h.usage),
        "signature": hx(signed[hb.BODY_SIZE:]),
    }


START_MS = NOW * 1000


def beat(seq: int, prev: bytes, *, gpus: int = 2, usage: hb.UsageSummary | None = None,
         key: nacl.signing.SigningKey = PROVIDER_NODE, lease: int = LEASE_ID, time_ms: int | None = None,
         gpu_seconds: int | None = None) -> bytes:
    """Beat ``seq`` of a lease started at NOW with ``gpus`` busy GPUs, one beat per 5 s unless overridden."""
    t = START_MS + 5000 * seq if time_ms is None else time_ms
    g = gpus * 5 * seq if gpu_seconds is None else gpu_seconds
    u = usage or hb.UsageSummary(gpus, tuple(hb.DeviceUsage(90 + i, 40_000 + i, 300 + i) for i in range(gpus)))
    return hb.sign_heartbeat(hb.Heartbeat(lease, seq, t, g, prev, hb.encode_usage(u)), key)


def chain_of(first_prev: bytes, beats: list[tuple[int, int, int]]) -> list[bytes]:
    """Signed beats (seq, time ms, gpu seconds), each linked to the previous one."""
    out: list[bytes] = []
    prev = first_prev
    for seq, t, g in beats:
        out.append(beat(seq, prev, time_ms=t, gpu_seconds=g))
        prev = hb.heartbeat_hash(out[-1])
    return out


def resign(body: bytes, key: nacl.signing.SigningKey = PROVIDER_NODE) -> bytes:
    return body + key.sign(body).signature


def heartbeat_vectors() -> dict[str, Any]:
    b1 = beat(1, hb.ZERO_HASH)
    b2 = beat(2, hb.heartbeat_hash(b1))
    many = hb.UsageSummary(16, tuple(hb.DeviceUsage(100, 2**24 - 1, 65535) for _ in range(11)), simulated=True)
    b_many = beat(3, hb.heartbeat_hash(b2), gpus=16, usage=many)
    idle = beat(1, hb.ZERO_HASH, usage=hb.UsageSummary(0, (), True), lease=2**256 - 1)
    node_key = bytes(PROVIDER_NODE.verify_key)
    body1 = b1[: hb.BODY_SIZE]
    valid = [("seq_1", b1), ("seq_2_chained", b2), ("sixteen_gpus_eleven_entries_simulated", b_many),
             ("no_devices_max_lease_id", idle)]
    vectors: list[dict[str, Any]] = []
    for name, raw in valid:
        vectors.append({"name": name, "hex": hx(raw), "valid": True, "fields": heartbeat_fields(raw),
                        "hash": hx(hb.heartbeat_hash(raw))})
    invalid = [
        ("short", b1[:-1]),
        ("long", b1 + b"\x00"),
        ("bad_signature", b1[:-1] + bytes([b1[-1] ^ 1])),
        ("signed_by_other_node_key", resign(body1, STRANGER_NODE)),
        ("version_2", resign(replace_at(body1, 0, b"\x02"))),
        ("seq_0", resign(replace_at(body1, 33, (0).to_bytes(8, "big")))),
        ("seq_1_nonzero_prev_hash", resign(replace_at(body1, 57, b"\x01"))),
        ("seq_2_zero_prev_hash", resign(replace_at(body1, 33, (2).to_bytes(8, "big")))),
        ("unknown_usage_flag", resign(replace_at(body1, 89, b"\x02"))),
        ("nonzero_unused_entry", resign(replace_at(body1, 89 + 2 + 2 * 6, b"\x01"))),
        ("nonzero_reserved", resign(replace_at(body1, 159, b"\x01"))),
        ("utilisation_101", resign(replace_at(body1, 89 + 2, bytes([101])))),
    ]
    for name, raw in invalid:
        try:
            hb.verify_heartbeat(raw, node_key)
        except hb.HeartbeatError as exc:
            vectors.append({"name": name, "hex": hx(raw), "valid": False, "error": str(exc)})
        else:  # pragma: no cover - generator self-check
            raise AssertionError(f"heartbeat vector {name} unexpectedly verifies")
    return {
        "description": "Signed heartbeats (160-byte body || 64-byte ed25519 signature), verified against nodeKey. "
                       "hash = keccak256(all 224 bytes). error: the message the Python decoder raises.",
        "nodeKey": hx(node_key),
        "vectors": vectors,
    }


def checkpoint_fields(scp: SignedCheckpoint) -> dict[str, Any]:
    cp = scp.checkpoint
    return {
        "leaseId": dec(cp.lease_id),
        "seq": dec(cp.seq),
        "cumulativeGpuSeconds": dec(cp.cumulative_gpu_seconds),
        "heartbeatHead": hx(cp.heartbeat_head),
        "timestamp": dec(cp.timestamp),
        "signature": hx(scp.signature),
    }


def checkpoint_vectors() -> dict[str, Any]:
    beats = [beat(1, hb.ZERO_HASH)]
    for seq in range(2, 13):
        beats.append(beat(seq, hb.heartbeat_hash(beats[-1])))
    head = hb.heartbeat_hash(beats[-1])
    t_last = (START_MS + 5000 * 12) // 1000
    cp = Checkpoint(LEASE_ID, 1, 2 * 5 * 12, head, t_last)
    good = sign_checkpoint(cp, PROVIDER_WALLET, DOMAIN)
    signatures = []

    def sig_vector(name: str, scp: SignedCheckpoint) -> dict[str, Any]:
        dig = O.keccak256(b"\x19\x01" + DOMAIN.separator + scp.checkpoint.struct_hash())
        v: dict[str, Any] = {"name": name, "fields": checkpoint_fields(scp),
                             "structHash": hx(scp.checkpoint.struct_hash()), "digest": hx(dig)}
        try:
            v["signer"] = hx(eip712.recover_raw(dig, scp.signature))
        except eip712.SignatureError as exc:
            v["signerError"] = str(exc)
        return v

    signatures.append(sig_vector("provider_signed", good))
    signatures.append(sig_vector("zero_head_u64_max", sign_checkpoint(
        Checkpoint(2**256 - 1, 2**64 - 1, 2**64 - 1, bytes(32), 2**64 - 1), PROVIDER_WALLET, DOMAIN)))
    signatures.append(sig_vector("high_s", SignedCheckpoint(cp, high_s(good.signature))))
    v01 = good.signature[:64] + bytes([good.signature[64] - 27])
    signatures.append(sig_vector("v_0_or_1", SignedCheckpoint(cp, v01)))
    signatures.append(sig_vector("consumer_cosigned", sign_checkpoint(cp, CONSUMER_WALLET, DOMAIN)))

    view = LeaseView(lease_id=LEASE_ID, provider=PROVIDER, provider_node_key=bytes(PROVIDER_NODE.verify_key), gpus=2,
                     started_at=NOW, ends_at=NOW + 3600, accepting=True)
    now_ms = (t_last + 1) * 1000

    def view_json(v: LeaseView) -> dict[str, Any]:
        return {
            "leaseId": dec(v.lease_id), "provider": hx(v.provider), "providerNodeKey": hx(v.provider_node_key),
            "gpus": v.gpus, "startedAt": dec(v.started_at), "endsAt": dec(v.ends_at), "accepting": v.accepting,
            "closedAt": None if v.closed_at is None else dec(v.closed_at), "lastSeq": dec(v.last_seq),
            "lastCumulative": dec(v.last_cumulative), "lastTimestamp": dec(v.last_timestamp),
            "lastDigest": None if v.last_digest is None else hx(v.last_digest), "lastHead": hx(v.last_head),
            "lastHeadSeq": dec(v.last_head_seq), "lastHeadTimeMs": dec(v.last_head_time_ms),
            "lastHeadGpuSeconds": dec(v.last_head_gpu_seconds),
        }

    def verification(name: str, scp: SignedCheckpoint, chain: str, v: LeaseView = view,
                     at_ms: int = now_ms) -> dict[str, Any]:
        verdict = verify_checkpoint(v, chains[chain], scp, DOMAIN, at_ms, TOL)
        return {"name": name, "view": view_json(v), "chain": chain, "checkpoint": checkpoint_fields(scp),
                "nowMs": dec(at_ms), "reason": verdict.reason.value if verdict.reason else None,
                "beatsCovered": verdict.beats_covered}

    def cp_with(**kw: Any) -> SignedCheckpoint:
        return sign_checkpoint(dataclasses.replace(cp, **kw), PROVIDER_WALLET, DOMAIN)

    ms = START_MS
    chains = {
        "honest": beats,
        "broken_at_6": [*beats[:5], beat(6, b"\x01" * 32), *beats[6:]],
        "beat_4_by_stranger": [*beats[:3], resign(beats[3][:160], STRANGER_NODE), *beats[4:]],
        "beat_2_truncated": [beats[0], beats[1][:-1], *beats[2:]],
        "time_goes_back": chain_of(hb.ZERO_HASH, [(1, ms + 5000, 10), (2, ms + 4000, 20)]),
        "gpu_seconds_go_back": chain_of(hb.ZERO_HASH, [(1, ms + 5000, 10), (2, ms + 10_000, 9)]),
        "gap_16s": chain_of(hb.ZERO_HASH, [(1, ms + 5000, 10), (2, ms + 21_000, 42)]),
        "first_beat_late": chain_of(hb.ZERO_HASH, [(1, ms + 40_000, 80), (2, ms + 45_000, 90)]),
        "beat_in_future": chain_of(hb.ZERO_HASH, [*((i, ms + 5000 * i, 10 * i) for i in range(1, 14)),
                                                  (14, ms + 66_001, 140)]),
        "beat_over_claim": chain_of(hb.ZERO_HASH, [(1, ms + 5000, 10), (2, ms + 10_000, 25)]),
        "continued": chain_of(head, [(13, ms + 65_000, 130), (14, ms + 70_000, 140)]),
    }
    after_first = dataclasses.replace(view, last_seq=1, last_cumulative=120, last_timestamp=t_last,
                                      last_digest=checkpoint_digest(DOMAIN, cp), last_head=head, last_head_seq=12,
                                      last_head_time_ms=ms + 60_000, last_head_gpu_seconds=120)
    cp2 = Checkpoint(LEASE_ID, 2, 140, hb.heartbeat_hash(chains["continued"][1]), t_last + 10)
    now2_ms = (t_last + 11) * 1000

    def head_of(chain: str, i: int = -1) -> bytes:
        return hb.heartbeat_hash(chains[chain][i])

    def cp_at(chain: str, cumulative: int, timestamp_ms: int) -> SignedCheckpoint:
        return cp_with(heartbeat_head=head_of(chain), cumulative_gpu_seconds=cumulative,
                       timestamp=timestamp_ms // 1000)
    verifications = [
        verification("accepted", good, "honest"),
        verification("accepted_prefix", cp_with(heartbeat_head=hb.heartbeat_hash(beats[5]), cumulative_gpu_seconds=60,
                                                timestamp=(START_MS + 30_000) // 1000), "honest"),
        verification("wrong_lease", cp_with(lease_id=LEASE_ID + 1), "honest"),
        verification("bad_signature", sign_checkpoint(cp, STRANGER_WALLET, DOMAIN), "honest"),
        verification("seq_gap", cp_with(seq=2), "honest"),
        verification("over_claim", cp_with(cumulative_gpu_seconds=200), "honest"),
        verification("unproven_usage", cp_with(cumulative_gpu_seconds=125), "honest"),
        verification("chain_broken", good, "broken_at_6"),
        verification("bad_heartbeat_signature", good, "beat_4_by_stranger"),
        verification("head_mismatch", cp_with(heartbeat_head=b"\x02" * 32), "honest"),
        verification("lease_not_open", good, "honest", dataclasses.replace(view, accepting=False)),
        verification("after_close", good, "honest", dataclasses.replace(view, closed_at=t_last - 1)),
        verification("closed_at_checkpoint_time", good, "honest", dataclasses.replace(view, closed_at=t_last)),
        verification("equivocation", good, "honest", dataclasses.replace(after_first, last_digest=b"\x07" * 32)),
        verification("seq_replayed", good, "honest", after_first),
        verification("timestamp_in_future", cp_with(timestamp=now_ms // 1000 + 6), "honest"),
        verification("timestamp_skew_edge", cp_with(timestamp=now_ms // 1000 + 5), "honest"),
        verification("timestamp_regressed", good, "honest", dataclasses.replace(view, last_timestamp=t_last + 1)),
        verification("cumulative_decreased", good, "honest", dataclasses.replace(view, last_cumulative=121)),
        verification("malformed_heartbeat", good, "beat_2_truncated"),
        verification("heartbeat_out_of_order_time", cp_at("time_goes_back", 20, ms + 5000), "time_goes_back"),
        verification("heartbeat_out_of_order_gpu", cp_at("gpu_seconds_go_back", 9, ms + 10_000),
                     "gpu_seconds_go_back"),
        verification("heartbeat_gap", cp_at("gap_16s", 42, ms + 21_000), "gap_16s"),
        verification("first_beat_may_come_late", cp_at("first_beat_late", 90, ms + 45_000), "first_beat_late"),
        verification("heartbeat_in_future", cp_at("beat_in_future", 30, ms + 60_000), "beat_in_future"),
        verification("heartbeat_over_claim", cp_at("beat_over_claim", 25, ms + 10_000), "beat_over_claim"),
        verification("head_time_mismatch", cp_with(heartbeat_head=hb.heartbeat_hash(beats[5]),
                                                   cumulative_gpu_seconds=60), "honest"),
        verification("no_new_beats_no_new_usage", cp_with(heartbeat_head=head, seq=2, cumulative_gpu_seconds=120,
                                                          timestamp=t_last + 1), "continued", after_first, now2_ms),
        verification("no_new_beats_new_usage", cp_with(heartbeat_head=head, seq=2, cumulative_gpu_seconds=121,
                                                       timestamp=t_last + 1), "continued", after_first, now2_ms),
        verification("second_checkpoint", sign_checkpoint(cp2, PROVIDER_WALLET, DOMAIN), "continued", after_first,
                     now2_ms),
    ]
    return {
        "description": "UsageCheckpoint EIP-712 structs under keys.json's domain (signatures: struct hash, digest, "
                       "recovered signer or the recovery error), and the consumer's checkpoint verification "
                       "(node/protocol/checkpoint.py) with the given tolerance on fixed heartbeat chains.",
        "signatures": signatures,
        "chains": {k: [hx(b) for b in v] for k, v in chains.items()},
        "tolerance": {"perGpuS": TOL.per_gpu_s, "bps": TOL.bps, "clockSkewMs": TOL.clock_skew_ms,
                      "heartbeatIntervalMs": TOL.heartbeat_interval_ms, "maxGapIntervals": TOL.max_gap_intervals},
        "verifications": verifications,
    }


# ---------------------------------------------------------------------------------------------------------------
# Job spec and lease stream messages

JOB = {"argv": ["python3", "-c", "print('hello')"], "env": {"LANG": "C.UTF-8"}, "timeout_s": 600}


JOB_V2 = {"version": 2, "image": "ghcr.io/acme/infer@sha256:" + "ab" * 32, "command": ["python3", "-m", "serve"],
          "args": ["--port", "8000"], "env": {"MODEL": "tiny"}, "timeout_s": 3600,
          "resources": {"memory_bytes": 8 * 2**30, "milli_cpus": 2500, "shm_bytes": 2**30}, "ports": [8000, 22]}


def job_json(job: dict[str, Any]) -> bytes:
    return json.dumps(job, sort_keys=True, separators=(",", ":")).encode()


def job_version_vectors() -> list[dict[str, Any]]:
    """Each version's job as a consumer gives it, its canonical bytes (what the signature's specHash covers)."""
    out = []
    for name, given in (("v1", JOB), ("v1_defaults", {"argv": ["nvidia-smi"]}), ("v2", JOB_V2),
                        ("v2_minimal", {"image": "busybox", "command": ["sh", "-c", "echo hi"]})):
        canonical = job_spec.job_spec_bytes(given)
        assert job_spec.decode_job_spec(canonical) == job_spec.parse_job(given)
        out.append({"name": name, "given": given, "canonical": canonical.decode(),
                    "specHash": hx(O.keccak256(canonical))})
    return out


def job_spec_vectors() -> dict[str, Any]:
    spec = job_json(JOB)
    consumer_node = bytes(CONSUMER_NODE.verify_key)
    provider_node = bytes(PROVIDER_NODE.verify_key)
    spec_hash = O.keccak256(spec)
    struct = eip712.job_spec_struct_hash(LEASE_ID, spec_hash, consumer_node)
    dig = eip712.digest(DOMAIN.separator, struct)
    auth = eip712.sign_digest(CONSUMER_WALLET, dig)
    msg = lm.seal_job_spec(LEASE_ID, auth + spec, CONSUMER_NODE, provider_node, nonce=BOX_NONCE)
    plain = LEASE_ID.to_bytes(32, "big") + auth + spec
    assert lm.open_job_spec(msg, PROVIDER_NODE, consumer_node) == auth + spec
    other_lease = lm.seal_job_spec(LEASE_ID + 1, auth + spec, CONSUMER_NODE, provider_node, nonce=BOX_NONCE)
    opens: list[dict[str, Any]] = [{"name": "sealed_by_consumer", "leaseId": dec(LEASE_ID), "sealed": hx(msg.sealed),
                                    "senderNodeKey": hx(consumer_node), "plaintext": hx(plain), "error": None}]

    def open_error(name: str, lease_id: int, sealed: bytes, sender: bytes) -> dict[str, Any]:
        try:
            lm.open_job_spec(lm.JobSpecMessage(lease_id, sealed), PROVIDER_NODE, sender)
        except (box.BoxError, lm.LeaseMessageError) as exc:
            return {"name": name, "leaseId": dec(lease_id), "sealed": hx(sealed), "senderNodeKey": hx(sender),
                    "plaintext": None, "error": str(exc)}
        raise AssertionError(f"{name} unexpectedly opens")  # pragma: no cover

    opens.append(open_error("tampered_ciphertext", LEASE_ID, msg.sealed[:-1] + bytes([msg.sealed[-1] ^ 1]),
                            consumer_node))
    opens.append(open_error("tampered_nonce", LEASE_ID, bytes([msg.sealed[0] ^ 1]) + msg.sealed[1:], consumer_node))
    opens.append(open_error("wrong_sender_key", LEASE_ID, msg.sealed, bytes(STRANGER_NODE.verify_key)))
    opens.append(open_error("sealed_for_another_lease", LEASE_ID, other_lease.sealed, consumer_node))
    opens.append(open_error("too_short", LEASE_ID, msg.sealed[:39], consumer_node))
    stranger_auth = eip712.sign_digest(STRANGER_WALLET, dig)
    return {
        "description": "Job spec authorisation: JobSpec(uint256 leaseId,bytes32 specHash,bytes32 consumerNodeKey) "
                       "signed by the consumer wallet under keys.json's domain, and the NaCl box (fixed nonce) "
                       "from the consumer node key to the provider node key of leaseId || signature || job JSON.",
        "jobJson": spec.decode(),
        "versions": job_version_vectors(),
        "signature": {"leaseId": dec(LEASE_ID), "specHash": hx(spec_hash), "consumerNodeKey": hx(consumer_node),
                      "structHash": hx(struct), "digest": hx(dig), "signature": hx(auth),
                      "signer": hx(eip712.recover_raw(dig, auth)), "consumer": hx(CONSUMER),
                      "strangerSignature": hx(stranger_auth),
                      "strangerSigner": hx(eip712.recover_raw(dig, stranger_auth))},
        "box": {"nonce": hx(BOX_NONCE), "senderSeed": hx(CONSUMER_NODE_SEED), "senderNodeKey": hx(consumer_node),
                "recipientSeed": hx(PROVIDER_NODE_SEED), "recipientNodeKey": hx(provider_node),
                "opens": opens},
    }


def lease_fields(msg: lm.LeaseMessage) -> dict[str, Any]:
    if isinstance(msg, lm.JobSpecMessage):
        return {"type": "JOB_SPEC", "leaseId": dec(msg.lease_id), "sealed": hx(msg.sealed)}
    if isinstance(msg, lm.JobResultMessage):
        return {"type": "JOB_RESULT", "leaseId": dec(msg.lease_id), "exitCode": msg.exit_code,
                "simulated": msg.simulated, "logTail": msg.log_tail, "failure": msg.failure,
                "imageDigest": msg.image_digest}
    if isinstance(msg, lm.LogMessage):
        return {"type": "LOG", "leaseId": dec(msg.lease_id), "seq": dec(msg.seq), "dropped": dec(msg.dropped),
                "text": msg.text}
    if isinstance(msg, lm.HeartbeatMessage):
        return {"type": "HEARTBEAT", "leaseId": dec(msg.lease_id), "heartbeat": hx(msg.signed)}
    if isinstance(msg, lm.CheckpointMessage):
        return {"type": "CHECKPOINT", "leaseId": dec(msg.lease_id), **{
            k: v for k, v in checkpoint_fields(msg.signed_cp).items() if k != "leaseId"}}
    if isinstance(msg, lm.AckMessage):
        return {"type": "ACK", "leaseId": dec(msg.lease_id), "refType": msg.ref_type.name, "refSeq": dec(msg.ref_seq)}
    return {"type": "ERROR", "leaseId": dec(msg.lease_id), "refType": msg.ref_type.name, "refSeq": dec(msg.ref_seq),
            "code": msg.code.name, "message": msg.message}


def lease_message_vectors() -> dict[str, Any]:
    b1 = beat(1, hb.ZERO_HASH)
    spec = job_json(JOB)
    auth = eip712.sign_digest(CONSUMER_WALLET, eip712.digest(DOMAIN.separator, eip712.job_spec_struct_hash(
        LEASE_ID, O.keccak256(spec), bytes(CONSUMER_NODE.verify_key))))
    sealed = lm.seal_job_spec(LEASE_ID, auth + spec, CONSUMER_NODE, bytes(PROVIDER_NODE.verify_key), nonce=BOX_NONCE)
    cp = sign_checkpoint(Checkpoint(LEASE_ID, 1, 120, hb.heartbeat_hash(b1), NOW + 60), PROVIDER_WALLET, DOMAIN)
    msgs: list[tuple[str, lm.LeaseMessage]] = [
        ("job_spec", sealed),
        ("job_result_ok", lm.JobResultMessage(LEASE_ID, 0, "done\n", False)),
        ("job_result_killed_simulated_utf8", lm.JobResultMessage(LEASE_ID, -9, "progress █▌ 42%\n", True)),
        ("job_result_max_log", lm.JobResultMessage(LEASE_ID, 1, "█" * 1365 + "x", False)),
        ("job_result_oom_with_digest", lm.JobResultMessage(LEASE_ID, 137, "Killed\n", False, "oom",
                                                           "localhost/infer@sha256:" + "cd" * 32)),
        ("job_result_image_not_allowed", lm.JobResultMessage(LEASE_ID, -1, "", False, "image_not_allowed")),
        ("job_result_digest_only", lm.JobResultMessage(LEASE_ID, 0, "ok\n", True, "", "sha256:" + "ef" * 32)),
        ("log_first_line", lm.LogMessage(LEASE_ID, 0, "line-1\n")),
        ("log_after_drop_multibyte", lm.LogMessage(LEASE_ID, 7, "█" * 100 + "\ufffd", 1_048_576)),
        ("log_max_chunk", lm.LogMessage(LEASE_ID, 2**64 - 1, "█" * (lm.MAX_LOG_CHUNK_BYTES // 3), 2**64 - 1)),
        ("heartbeat", lm.HeartbeatMessage(LEASE_ID, b1)),
        ("checkpoint", lm.CheckpointMessage(cp)),
        ("ack_heartbeat", lm.AckMessage(LEASE_ID, lm.MsgType.HEARTBEAT)),
        ("ack_job_spec_ref_seq", lm.AckMessage(LEASE_ID, lm.MsgType.JOB_SPEC, 2**64 - 1)),
    ]
    for code in lm.ErrorCode:
        msgs.append((f"error_{code.name.lower()}", lm.ErrorMessage(LEASE_ID, lm.MsgType.CHECKPOINT, 0, code,
                                                                   f"{code.name.lower()} détail")))
    msgs.append(("error_malformed_undecodable", lm.ErrorMessage(0, lm.MsgType.ACK, 0, lm.ErrorCode.MALFORMED,
                                                                "message shorter than its header")))
    msgs.append(("error_max_message", lm.ErrorMessage(LEASE_ID, lm.MsgType.JOB_RESULT, 1, lm.ErrorCode.INTERNAL,
                                                      "é" * 128)))
    vectors: list[dict[str, Any]] = []
    for name, m in msgs:
        data = lm.encode_message(m)
        vectors.append({"name": name, "hex": hx(data), "valid": True, "fields": lease_fields(m)})
    hb_msg = lm.encode_message(lm.HeartbeatMessage(LEASE_ID, b1))
    ok = lm.encode_message(lm.JobResultMessage(LEASE_ID, 0, "done\n", False))
    err = lm.encode_message(lm.ErrorMessage(LEASE_ID, lm.MsgType.CHECKPOINT, 0, lm.ErrorCode.MALFORMED, "x"))
    ack = lm.encode_message(lm.AckMessage(LEASE_ID, lm.MsgType.HEARTBEAT))
    js = lm.encode_message(sealed)
    oom = lm.encode_message(lm.JobResultMessage(LEASE_ID, 137, "", False, "oom", ""))
    log1 = lm.encode_message(lm.LogMessage(LEASE_ID, 0, "abc"))
    lease_hdr = (1).to_bytes(1, "big")
    invalid: list[tuple[str, bytes]] = [
        ("shorter_than_header", ack[:33]),
        ("version_2", replace_at(ack, 0, b"\x02")),
        ("type_0", replace_at(ack, 1, b"\x00")),
        ("type_8", replace_at(ack, 1, b"\x08")),
        ("heartbeat_lease_id_differs", replace_at(hb_msg, 33, b"\x00" + (LEASE_ID + 1).to_bytes(32, "big")[1:])),
        ("heartbeat_short", hb_msg[:-1]),
        ("checkpoint_trailing", lm.encode_message(lm.CheckpointMessage(cp)) + b"\x00"),
        ("job_spec_no_length", js[:34 + 3]),
        ("job_spec_sealed_too_small", replace_at(js, 34, (71).to_bytes(4, "big"))[: 34 + 4 + 71]),
        ("job_spec_sealed_too_large", lease_hdr + b"\x01" + js[2:34] + (60_073).to_bytes(4, "big")),
        ("job_spec_length_mismatch", js + b"\x00"),
        ("job_result_unknown_flag", replace_at(ok, 38, b"\x04")),
        ("job_result_outcome_flag_without_outcome", replace_at(ok, 38, b"\x02")),
        ("job_result_outcome_both_empty", ok[:38] + b"\x02" + ok[39:] + b"\x00\x00"),
        ("job_result_failure_not_ascii", oom[:-5] + b"\x04o\xc3\xa9m\x00"),
        ("job_result_failure_truncated", oom[:-2]),
        ("job_result_outcome_trailing", oom + b"\x00"),
        ("log_empty", log1[:34 + 16] + b"\x00\x00"),
        ("log_over_max", log1[:34 + 16] + (lm.MAX_LOG_CHUNK_BYTES + 1).to_bytes(2, "big")
         + b"a" * (lm.MAX_LOG_CHUNK_BYTES + 1)),
        ("log_bad_utf8", log1[:-1] + b"\xff"),
        ("log_length_mismatch", log1 + b"d"),
        ("job_result_log_4097", replace_at(ok, 39, (4097).to_bytes(2, "big"))),
        ("job_result_bad_utf8", ok[:-1] + b"\xff"),
        ("job_result_short", ok[:38]),
        ("ack_unknown_ref_type", replace_at(ack, 34, b"\x09")),
        ("ack_trailing", ack + b"\x00"),
        ("error_unknown_code", replace_at(err, 34 + 9, (7).to_bytes(2, "big"))),
        ("error_code_zero", replace_at(err, 34 + 9, (0).to_bytes(2, "big"))),
        ("error_message_257", replace_at(err, 34 + 11, (257).to_bytes(2, "big"))),
        ("error_length_mismatch", err + b"y"),
        ("over_64_kib", lease_hdr + b"\x02" + bytes(32) + bytes(65_536 - 34 + 1)),
    ]
    for name, data in invalid:
        try:
            lm.decode_message(data)
        except lm.LeaseMessageError as exc:
            vectors.append({"name": name, "hex": hx(data), "valid": False, "error": str(exc)})
        else:  # pragma: no cover - generator self-check
            raise AssertionError(f"lease vector {name} unexpectedly decodes")
    return {
        "description": "Lease stream messages (one per frame on " + LEASE_PROTOCOL + "). Valid ones decode to "
                       "fields and re-encode to the same bytes; invalid ones carry the Python decoder's message. "
                       "The over-64-KiB vector is stored as given (65,537 bytes).",
        "protocol": LEASE_PROTOCOL,
        "vectors": vectors,
    }


# ---------------------------------------------------------------------------------------------------------------
# Offers sync and framing


def frame(body: bytes) -> bytes:
    return framing.encode_frame(body)


def sync_vectors() -> dict[str, Any]:
    uvarints = [0, 1, 127, 128, 255, 300, 16_383, 16_384, 4096, 1024 * 1024, 2**63 - 1, 2**64 - 1]
    bad_uvarints = [b"", b"\x80", b"\x80\x00", b"\xff\x00", b"\x80" * 10 + b"\x01"]
    varints: list[dict[str, Any]] = [{"value": dec(n), "hex": hx(framing.encode_uvarint(n)), "valid": True}
                                     for n in uvarints]
    for raw in bad_uvarints:
        try:
            framing.decode_uvarint(raw)
        except framing.FrameError as exc:
            varints.append({"hex": hx(raw), "valid": False, "error": str(exc)})
        else:  # pragma: no cover
            raise AssertionError(f"uvarint {raw!r} unexpectedly decodes")

    cursor = hashlib.sha256(b"cursor").digest()
    requests: list[dict[str, Any]] = []
    for name, req in [("first_page", sync.SyncRequest(b"", 256)), ("next_page", sync.SyncRequest(cursor, 256)),
                      ("limit_1", sync.SyncRequest(b"", 1)), ("limit_65535", sync.SyncRequest(cursor, 0xFFFF))]:
        body = sync.encode_request(req)
        requests.append({"name": name, "hex": hx(body), "frame": hx(frame(body)), "valid": True,
                         "fields": {"cursor": hx(req.cursor), "limit": req.limit}})
    for name, body in [("version_2", b"\x02\x00\x01\x00"), ("cursor_len_5", b"\x01\x05" + bytes(5) + b"\x01\x00"),
                       ("limit_zero", b"\x01\x00\x00\x00"), ("trailing", b"\x01\x00\x01\x00\x00"),
                       ("short", b"\x01\x00\x01"), ("cursor_cut", b"\x01\x20" + cursor[:31] + b"\x01\x00")]:
        try:
            sync.decode_request(body)
        except framing.FrameError as exc:
            requests.append({"name": name, "hex": hx(body), "valid": False, "error": str(exc)})
        else:  # pragma: no cover
            raise AssertionError(f"sync request {name} unexpectedly decodes")

    # Live offers of a responder: five real offer envelopes (different providers' slots) and the pages they give.
    blobs = []
    for i in range(5):
        o = base_offer(nonce=10 + i, gpu_model=O.gpu_model_from_name(f"GPU-{i}"))
        if i % 2:  # every other offer without a spec
            blobs.append(offer_message(signed(dataclasses.replace(o, spec_hash=O.EMPTY_SPEC_HASH), None)))
        else:
            blobs.append(offer_message(signed(o)))
    pages: list[dict[str, Any]] = []
    samples = [("empty_last", sync.SyncPage((), None)),
               ("two_blobs_more", sync.SyncPage((blobs[0], blobs[1]), hashlib.sha256(blobs[1]).digest())),
               ("one_blob_last", sync.SyncPage((blobs[2],), None)),
               ("blob_with_2_byte_length", sync.SyncPage((bytes(200),), None))]
    for name, page in samples:
        body = sync.encode_page(page)
        pages.append({"name": name, "hex": hx(body), "frame": hx(frame(body)), "valid": True,
                      "fields": {"more": page.next_cursor is not None,
                                 "nextCursor": None if page.next_cursor is None else hx(page.next_cursor),
                                 "blobs": [hx(b) for b in page.blobs]}})
    good_page = sync.encode_page(sync.SyncPage((blobs[2],), None))
    for name, body in [("version_2", b"\x02\x00\x00"), ("flags_2", b"\x01\x02\x00"), ("short", b"\x01\x00"),
                       ("cursor_cut", b"\x01\x01" + cursor[:31]),
                       ("count_1025", b"\x01\x00" + framing.encode_uvarint(1025)),
                       ("blob_cut", good_page[:-1]), ("trailing", good_page + b"\x00"),
                       ("count_non_minimal_varint", b"\x01\x00\x80\x00"),
                       ("more_without_count", b"\x01\x01" + cursor)]:
        try:
            sync.decode_page(body)
        except framing.FrameError as exc:
            pages.append({"name": name, "hex": hx(body), "valid": False, "error": str(exc)})
        else:  # pragma: no cover
            raise AssertionError(f"sync page {name} unexpectedly decodes")

    def session(name: str, live: list[bytes], page_offers: int, page_bytes: int, limit: int) -> dict[str, Any]:
        pager = sync.OfferPager(lambda: list(live), page_offers, page_bytes, clock=lambda: 0.0)
        exchanges = []
        cur = b""
        while True:
            req = sync.SyncRequest(cur, limit)
            page = pager.page(req)
            exchanges.append({"request": hx(frame(sync.encode_request(req))),
                              "response": hx(frame(sync.encode_page(page)))})
            if page.next_cursor is None:
                break
            cur = page.next_cursor
        return {"name": name, "live": [hx(b) for b in live], "pageOffers": page_offers, "pageBytes": page_bytes,
                "requestLimit": limit, "exchanges": exchanges}

    junk_big = b"\x00" * 1000
    sessions = [
        session("five_offers_two_per_page", blobs, 2, 512 * 1024, 256),
        session("request_limit_below_page", blobs, 256, 512 * 1024, 3),
        session("byte_budget", blobs, 256, 1024, 256),
        session("oversize_blob_skipped", [blobs[0], junk_big, blobs[1]], 256, 1024, 256),
        session("nothing_live", [], 256, 512 * 1024, 256),
    ]
    return {
        "description": "Offers sync (" + SYNC_PROTOCOL + "): unsigned LEB128 varints, request and response "
                       "bodies (hex) and their frames (varint length || body), and whole sessions: the responder's "
                       "live set, its page parameters, and every request/response frame until the last page.",
        "protocol": SYNC_PROTOCOL,
        "uvarints": varints,
        "requests": requests,
        "pages": pages,
        "sessions": sessions,
    }


# ---------------------------------------------------------------------------------------------------------------
# Keys, domain and constants


def keys_file() -> dict[str, Any]:
    gp = GossipParams()
    nodes = {}
    for name, key, seed in [("provider", PROVIDER_NODE, PROVIDER_NODE_SEED), ("consumer", CONSUMER_NODE,
                                                                             CONSUMER_NODE_SEED),
                            ("stranger", STRANGER_NODE, STRANGER_NODE_SEED)]:
        pub = bytes(key.verify_key)
        nodes[name] = {"seed": hx(seed), "publicKey": hx(pub), "peerId": peer_id_of_node_key(pub)}
    wallets = {}
    for name, key in [("provider", PROVIDER_WALLET), ("consumer", CONSUMER_WALLET), ("stranger", STRANGER_WALLET),
                      ("unregistered", UNREGISTERED_WALLET), ("poor", POOR_WALLET)]:
        wallets[name] = {"privateKey": hx(key), "address": hx(address_of(key))}
    return {
        "description": "Fixed keys and the EIP-712 domain every vector uses, with derived values.",
        "wallets": wallets,
        "nodeKeys": nodes,
        "domain": {
            "name": eip712.DOMAIN_NAME, "version": eip712.DOMAIN_VERSION, "chainId": dec(CHAIN_ID),
            "verifyingContract": ESCROW, "separator": hx(DOMAIN.separator),
        },
        "typeHashes": {
            "EIP712Domain": hx(eip712.EIP712_DOMAIN_TYPEHASH), "Offer": hx(eip712.OFFER_TYPEHASH),
            "UsageCheckpoint": hx(eip712.CHECKPOINT_TYPEHASH), "JobSpec": hx(eip712.JOB_SPEC_TYPEHASH),
            "OfferWithdrawal": hx(O.OFFER_WITHDRAWAL_TYPEHASH),
        },
        "emptySpecHash": hx(O.EMPTY_SPEC_HASH),
        "topic": offers_topic(CHAIN_ID, ESCROW.upper().replace("0X", "0x")),
        "gossip": {"maxMessageBytes": gp.max_message_bytes, "seenTtlS": gp.seen_ttl_s},
    }


def generate() -> dict[str, str]:
    """File name -> file text (JSON, sorted keys, one trailing newline)."""
    files = {
        "keys.json": keys_file(),
        "offers.json": offer_vectors(),
        "withdrawals.json": withdrawal_vectors(),
        "heartbeats.json": heartbeat_vectors(),
        "checkpoints.json": checkpoint_vectors(),
        "job_spec.json": job_spec_vectors(),
        "lease_messages.json": lease_message_vectors(),
        "sync.json": sync_vectors(),
    }
    return {name: json.dumps(obj, sort_keys=True, indent=1, ensure_ascii=False) + "\n" for name, obj in files.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "vectors")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in sorted(generate().items()):
        (args.out / name).write_text(text, encoding="utf-8")
        print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
