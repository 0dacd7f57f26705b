"""The committed wire-format test vectors (docs/vectors/*.json) against the Python codecs, both ways.

For every vector: decoding its bytes gives the expected fields (or the expected error / verdict), and encoding the
fields gives the same bytes. A last test re-runs scripts/gen_vectors.py into a temporary folder and compares the
output with the committed files byte for byte, so the vectors cannot drift from the code silently.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
from coincurve import PrivateKey

from node.crypto import box, eip712
from node.crypto.eip712 import Domain
from node.crypto.nodekey import peer_id_of_node_key
from node.p2p import framing, sync
from node.p2p.config import offers_topic
from node.protocol import heartbeat as hb
from node.protocol import job_spec
from node.protocol import lease_messages as lm
from node.protocol import offer_validation as ov
from node.protocol import offers as O
from node.protocol.checkpoint import (
    Checkpoint,
    LeaseView,
    RejectReason,
    SignedCheckpoint,
    Tolerance,
    verify_checkpoint,
)

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "docs" / "vectors"
FILES = ("keys", "offers", "withdrawals", "heartbeats", "checkpoints", "job_spec", "lease_messages", "sync")


def load(name: str) -> dict[str, Any]:
    return json.loads((VECTORS / f"{name}.json").read_text(encoding="utf-8"))


def raw(hex_str: str) -> bytes:
    assert hex_str.startswith("0x"), hex_str
    return bytes.fromhex(hex_str[2:])


def hx(data: bytes) -> str:
    return "0x" + bytes(data).hex()


def ids(vectors: list[dict[str, Any]]) -> list[str]:
    return [v["name"] for v in vectors]


KEYS = load("keys")
DOMAIN = Domain(int(KEYS["domain"]["chainId"]), KEYS["domain"]["verifyingContract"])


# ---------------------------------------------------------------------------------------------------------------
# Keys and domain


def test_keys_and_domain() -> None:
    d = KEYS["domain"]
    assert (d["name"], d["version"]) == (eip712.DOMAIN_NAME, eip712.DOMAIN_VERSION)
    assert raw(d["separator"]) == DOMAIN.separator
    th = KEYS["typeHashes"]
    assert raw(th["Offer"]) == O.keccak256(eip712.OFFER_TYPE)
    assert raw(th["UsageCheckpoint"]) == O.keccak256(eip712.CHECKPOINT_TYPE)
    assert raw(th["JobSpec"]) == O.keccak256(eip712.JOB_SPEC_TYPE)
    assert raw(th["OfferWithdrawal"]) == O.keccak256(O.OFFER_WITHDRAWAL_TYPE)
    assert raw(th["EIP712Domain"]) == O.keccak256(eip712.EIP712_DOMAIN_TYPE)
    assert raw(KEYS["emptySpecHash"]) == O.keccak256(b"")
    assert KEYS["topic"] == offers_topic(DOMAIN.chain_id, DOMAIN.verifying_contract)
    for w in KEYS["wallets"].values():
        pub = PrivateKey(raw(w["privateKey"])).public_key.format(compressed=False)[1:]
        assert raw(w["address"]) == O.keccak256(pub)[12:]
    for n in KEYS["nodeKeys"].values():
        pub = bytes(nacl.signing.SigningKey(raw(n["seed"])).verify_key)
        assert raw(n["publicKey"]) == pub
        assert n["peerId"] == peer_id_of_node_key(pub)


# ---------------------------------------------------------------------------------------------------------------
# Offers and withdrawals


@dataclass
class Chain:
    providers: dict[str, dict[str, Any]]

    def _p(self, provider: bytes) -> dict[str, Any]:
        return self.providers.get(hx(provider), {})

    def is_registered(self, provider: bytes) -> bool:
        return bool(self._p(provider).get("registered", False))

    def free_stake(self, provider: bytes) -> int:
        return int(self._p(provider).get("freeStake", "0"))

    def min_nonce(self, provider: bytes) -> int:
        return int(self._p(provider).get("minNonce", "0"))


@dataclass
class Book:
    entries: list[dict[str, str]]

    def contains(self, offer_id: bytes) -> bool:
        return any(raw(e["offerId"]) == offer_id for e in self.entries)

    def slot(self, provider: bytes, gpu_model: bytes) -> tuple[int, bytes] | None:
        for e in self.entries:
            if raw(e["provider"]) == provider and raw(e["gpuModel"]) == gpu_model:
                return int(e["nonce"]), raw(e["offerId"])
        return None


def context(file_ctx: dict[str, Any], override: dict[str, Any] | None) -> tuple[ov.ValidationContext, int]:
    ctx = json.loads(json.dumps(file_ctx))
    for key, value in (override or {}).items():
        ctx[key] = {**ctx[key], **value} if isinstance(value, dict) else value
    r = ctx["rules"]
    rules = ov.OfferRules(
        max_ttl=r["maxTtl"], max_message_bytes=r["maxMessageBytes"], rate_burst=r["rateBurst"],
        rate_per_second=r["ratePerSecond"], withdrawal_max_age=r["withdrawalMaxAge"], max_clock_skew=r["maxClockSkew"],
        stake=O.StakeRule(min_free_stake=int(r["minFreeStake"]), collateral_bps=r["collateralBps"]),
    )
    chain = Chain(ctx["providers"])
    domain = Domain(int(ctx["domain"]["chainId"]), ctx["domain"]["verifyingContract"])
    return ov.ValidationContext(domain=domain, stake=chain, nonces=chain, book=Book(ctx["book"]), rules=rules), int(
        ctx["now"]
    )


def envelope_domain(f: dict[str, Any]) -> Domain:
    return Domain(int(f["envelope"]["chainId"]), f["envelope"]["escrow"])


def offer_from_fields(f: dict[str, Any]) -> O.SignedOffer:
    offer = O.Offer(
        provider=raw(f["provider"]), nonce=int(f["nonce"]), gpu_model=raw(f["gpuModel"]),
        gpu_count=int(f["gpuCount"]), vram_mib=int(f["vramMiB"]), price_per_gpu_second=int(f["pricePerGpuSecond"]),
        min_duration=int(f["minDuration"]), max_duration=int(f["maxDuration"]), expires_at=int(f["expiresAt"]),
        spec_hash=raw(f["specHash"]),
    )
    spec = O.decode_spec(f["spec"].encode("ascii")) if f["spec"] else None
    return O.SignedOffer(offer, raw(f["signature"]), spec)


def withdrawal_from_fields(f: dict[str, Any]) -> O.SignedWithdrawal:
    w = O.OfferWithdrawal(raw(f["provider"]), int(f["nonceBelow"]), int(f["timestamp"]))
    return O.SignedWithdrawal(w, raw(f["signature"]))


OFFERS = load("offers")
WITHDRAWALS = load("withdrawals")


def _check_gossip_vector(file: dict[str, Any], v: dict[str, Any]) -> None:
    data = raw(v["hex"])
    vc, now = context(file["context"], v.get("contextOverride"))
    verdict, _ = ov.validate_gossip_message(data, vc, now)
    assert (verdict.verdict.value, verdict.reason) == (v["verdict"], v["reason"])
    if "decodeError" in v:
        with pytest.raises(O.InvalidOfferEncoding) as err:
            O.decode_message(data)
        assert err.value.reason == v["decodeError"]
        return
    env, msg = O.decode_message(data)
    f = v["fields"]
    assert env.kind == f["envelope"]["type"]
    assert env.chain_id == int(f["envelope"]["chainId"])
    assert hx(env.verifying_contract) == f["envelope"]["escrow"]
    domain = envelope_domain(f)
    if env.kind == O.MSG_OFFER:
        assert msg == offer_from_fields(f)
        assert O.decode_offer_record(env.body)[1] == f["spec"].encode("ascii")
        assert hx(msg.offer.struct_hash()) == v["offerId"] == hx(O.offer_id_from_record(env.body))
        if f["gpuModelName"] is not None:
            assert msg.offer.gpu_model_name == f["gpuModelName"]
            assert O.gpu_model_from_name(f["gpuModelName"]) == msg.offer.gpu_model
        else:
            assert not O.is_canonical_gpu_model(msg.offer.gpu_model)
        assert O.encode_offer_message(domain, offer_from_fields(f)) == data
        digest = msg.offer.digest(domain)
    else:
        assert msg == withdrawal_from_fields(f)
        assert hx(msg.withdrawal.struct_hash()) == v["structHash"]
        assert O.encode_withdrawal_message(domain, withdrawal_from_fields(f)) == data
        digest = msg.withdrawal.digest(domain)
    assert hx(digest) == v["digest"]
    if "signer" in v:
        assert hx(eip712.recover_raw(digest, msg.signature)) == v["signer"]
    else:
        with pytest.raises(eip712.SignatureError, match=re.escape(v["signerError"])):
            eip712.recover_raw(digest, msg.signature)


@pytest.mark.parametrize("v", OFFERS["vectors"], ids=ids(OFFERS["vectors"]))
def test_offer_vector(v: dict[str, Any]) -> None:
    _check_gossip_vector(OFFERS, v)


@pytest.mark.parametrize("v", WITHDRAWALS["vectors"], ids=ids(WITHDRAWALS["vectors"]))
def test_withdrawal_vector(v: dict[str, Any]) -> None:
    _check_gossip_vector(WITHDRAWALS, v)


def test_offer_vectors_cover_every_reason() -> None:
    seen = {v["reason"] for v in OFFERS["vectors"]} | {v["reason"] for v in WITHDRAWALS["vectors"]}
    expected = {
        ov.OVERSIZE, ov.MALFORMED, ov.WRONG_DOMAIN, ov.FIELD_OUT_OF_RANGE, ov.SPEC_HASH_MISMATCH, ov.EXPIRED,
        ov.TOO_FAR_FUTURE, ov.DUPLICATE, ov.SUPERSEDED, ov.NONCE_CANCELLED, ov.PROVIDER_NOT_REGISTERED,
        ov.INSUFFICIENT_STAKE, ov.BAD_SIGNATURE, ov.RATE_LIMITED, ov.STALE, ov.NO_EFFECT, "ok",
    }
    assert expected <= seen


# ---------------------------------------------------------------------------------------------------------------
# Heartbeats and checkpoints

HEARTBEATS = load("heartbeats")


def usage_from_fields(u: dict[str, Any]) -> hb.UsageSummary:
    devices = tuple(hb.DeviceUsage(d["utilisationPct"], d["memoryMiB"], d["powerW"]) for d in u["devices"])
    return hb.UsageSummary(u["deviceCount"], devices, u["simulated"])


@pytest.mark.parametrize("v", HEARTBEATS["vectors"], ids=ids(HEARTBEATS["vectors"]))
def test_heartbeat_vector(v: dict[str, Any]) -> None:
    data = raw(v["hex"])
    node_key = raw(HEARTBEATS["nodeKey"])
    if not v["valid"]:
        with pytest.raises(hb.HeartbeatError) as err:
            hb.verify_heartbeat(data, node_key)
        assert str(err.value) == v["error"]
        return
    beat = hb.verify_heartbeat(data, node_key)
    f = v["fields"]
    expected = hb.Heartbeat(int(f["leaseId"]), int(f["seq"]), int(f["timeMs"]), int(f["gpuSeconds"]),
                            raw(f["prevHash"]), raw(f["usage"]))
    assert beat == expected
    assert hb.decode_usage(beat.usage) == usage_from_fields(f["usageDecoded"])
    assert hb.encode_usage(usage_from_fields(f["usageDecoded"])) == raw(f["usage"])
    assert hb.encode(expected) + raw(f["signature"]) == data
    assert hx(hb.heartbeat_hash(data)) == v["hash"]


CHECKPOINTS = load("checkpoints")


def checkpoint_from_fields(f: dict[str, Any], lease_id: str | None = None) -> SignedCheckpoint:
    cp = Checkpoint(int(lease_id if lease_id is not None else f["leaseId"]), int(f["seq"]),
                    int(f["cumulativeGpuSeconds"]), raw(f["heartbeatHead"]), int(f["timestamp"]))
    return SignedCheckpoint(cp, raw(f["signature"]))


@pytest.mark.parametrize("v", CHECKPOINTS["signatures"], ids=ids(CHECKPOINTS["signatures"]))
def test_checkpoint_signature_vector(v: dict[str, Any]) -> None:
    scp = checkpoint_from_fields(v["fields"])
    assert hx(scp.checkpoint.struct_hash()) == v["structHash"]
    digest = eip712.digest(DOMAIN.separator, scp.checkpoint.struct_hash())
    assert hx(digest) == v["digest"]
    if "signer" in v:
        assert hx(eip712.recover_raw(digest, scp.signature)) == v["signer"]
    else:
        with pytest.raises(eip712.SignatureError, match=re.escape(v["signerError"])):
            eip712.recover_raw(digest, scp.signature)


def view_from_json(j: dict[str, Any]) -> LeaseView:
    return LeaseView(
        lease_id=int(j["leaseId"]), provider=raw(j["provider"]), provider_node_key=raw(j["providerNodeKey"]),
        gpus=j["gpus"], started_at=int(j["startedAt"]), ends_at=int(j["endsAt"]), accepting=j["accepting"],
        closed_at=None if j["closedAt"] is None else int(j["closedAt"]), last_seq=int(j["lastSeq"]),
        last_cumulative=int(j["lastCumulative"]), last_timestamp=int(j["lastTimestamp"]),
        last_digest=None if j["lastDigest"] is None else raw(j["lastDigest"]), last_head=raw(j["lastHead"]),
        last_head_seq=int(j["lastHeadSeq"]), last_head_time_ms=int(j["lastHeadTimeMs"]),
        last_head_gpu_seconds=int(j["lastHeadGpuSeconds"]),
    )


@pytest.mark.parametrize("v", CHECKPOINTS["verifications"], ids=ids(CHECKPOINTS["verifications"]))
def test_checkpoint_verification_vector(v: dict[str, Any]) -> None:
    beats = [raw(b) for b in CHECKPOINTS["chains"][v["chain"]]]
    t = CHECKPOINTS["tolerance"]
    tol = Tolerance(per_gpu_s=t["perGpuS"], bps=t["bps"], clock_skew_ms=t["clockSkewMs"],
                    heartbeat_interval_ms=t["heartbeatIntervalMs"], max_gap_intervals=t["maxGapIntervals"])
    verdict = verify_checkpoint(view_from_json(v["view"]), beats, checkpoint_from_fields(v["checkpoint"]), DOMAIN,
                                int(v["nowMs"]), tol)
    assert (verdict.reason.value if verdict.reason else None) == v["reason"]
    assert verdict.beats_covered == v["beatsCovered"]


def test_checkpoint_vectors_cover_every_reason() -> None:
    seen = {v["reason"] for v in CHECKPOINTS["verifications"]}
    assert seen == {r.value for r in RejectReason} | {None}


# ---------------------------------------------------------------------------------------------------------------
# Job spec and lease messages

JOB_SPEC = load("job_spec")


def test_job_spec_signature_and_box() -> None:
    s = JOB_SPEC["signature"]
    spec = JOB_SPEC["jobJson"].encode()
    assert raw(s["specHash"]) == O.keccak256(spec)
    struct = eip712.job_spec_struct_hash(int(s["leaseId"]), raw(s["specHash"]), raw(s["consumerNodeKey"]))
    assert hx(struct) == s["structHash"]
    digest = eip712.digest(DOMAIN.separator, struct)
    assert hx(digest) == s["digest"]
    assert hx(eip712.recover_raw(digest, raw(s["signature"]))) == s["signer"] == s["consumer"]
    assert hx(eip712.recover_raw(digest, raw(s["strangerSignature"]))) == s["strangerSigner"] != s["consumer"]
    b = JOB_SPEC["box"]
    sender = nacl.signing.SigningKey(raw(b["senderSeed"]))
    recipient = nacl.signing.SigningKey(raw(b["recipientSeed"]))
    assert hx(recipient.verify_key) == b["recipientNodeKey"]
    good = b["opens"][0]
    assert good["error"] is None
    plain = raw(good["plaintext"])
    assert plain == int(s["leaseId"]).to_bytes(32, "big") + raw(s["signature"]) + spec
    # encode: sealing the plaintext with the fixed nonce gives the committed bytes
    sealed = lm.seal_job_spec(int(s["leaseId"]), plain[32:], sender, raw(b["recipientNodeKey"]), nonce=raw(b["nonce"]))
    assert hx(sealed.sealed) == good["sealed"]
    assert raw(good["sealed"])[: box.NONCE_SIZE] == raw(b["nonce"])
    assert box.seal(plain, sender, raw(b["recipientNodeKey"]), raw(b["nonce"])) == raw(good["sealed"])


@pytest.mark.parametrize("v", JOB_SPEC["box"]["opens"], ids=ids(JOB_SPEC["box"]["opens"]))
def test_job_spec_box_open_vector(v: dict[str, Any]) -> None:
    recipient = nacl.signing.SigningKey(raw(JOB_SPEC["box"]["recipientSeed"]))
    msg = lm.JobSpecMessage(int(v["leaseId"]), raw(v["sealed"]))
    if v["error"] is None:
        assert lm.open_job_spec(msg, recipient, raw(v["senderNodeKey"])) == raw(v["plaintext"])[32:]
        assert box.open_sealed(raw(v["sealed"]), recipient, raw(v["senderNodeKey"])) == raw(v["plaintext"])
    else:
        with pytest.raises((box.BoxError, lm.LeaseMessageError)) as err:
            lm.open_job_spec(msg, recipient, raw(v["senderNodeKey"]))
        assert str(err.value) == v["error"]


@pytest.mark.parametrize("v", JOB_SPEC["versions"], ids=ids(JOB_SPEC["versions"]))
def test_job_spec_version_vector(v: dict[str, Any]) -> None:
    canonical = v["canonical"].encode()
    assert job_spec.job_spec_bytes(v["given"]) == canonical
    assert job_spec.decode_job_spec(canonical) == job_spec.parse_job(v["given"])
    assert O.keccak256(canonical) == raw(v["specHash"])


LEASE = load("lease_messages")


def lease_from_fields(f: dict[str, Any]) -> lm.LeaseMessage:
    lid, kind = int(f["leaseId"]), f["type"]
    if kind == "JOB_SPEC":
        return lm.JobSpecMessage(lid, raw(f["sealed"]))
    if kind == "JOB_RESULT":
        return lm.JobResultMessage(lid, f["exitCode"], f["logTail"], f["simulated"], f["failure"], f["imageDigest"])
    if kind == "LOG":
        return lm.LogMessage(lid, int(f["seq"]), f["text"], int(f["dropped"]))
    if kind == "HEARTBEAT":
        return lm.HeartbeatMessage(lid, raw(f["heartbeat"]))
    if kind == "CHECKPOINT":
        return lm.CheckpointMessage(checkpoint_from_fields(f))
    if kind == "ACK":
        return lm.AckMessage(lid, lm.MsgType[f["refType"]], int(f["refSeq"]))
    assert kind == "ERROR"
    return lm.ErrorMessage(lid, lm.MsgType[f["refType"]], int(f["refSeq"]), lm.ErrorCode[f["code"]], f["message"])


@pytest.mark.parametrize("v", LEASE["vectors"], ids=ids(LEASE["vectors"]))
def test_lease_message_vector(v: dict[str, Any]) -> None:
    data = raw(v["hex"])
    if not v["valid"]:
        with pytest.raises(lm.LeaseMessageError) as err:
            lm.decode_message(data)
        assert str(err.value) == v["error"]
        return
    expected = lease_from_fields(v["fields"])
    assert lm.decode_message(data) == expected
    assert lm.encode_message(expected) == data


def test_lease_vectors_cover_every_type_and_error_code() -> None:
    valid = [v["fields"] for v in LEASE["vectors"] if v["valid"]]
    assert {f["type"] for f in valid} == {t.name for t in lm.MsgType}
    assert {f["code"] for f in valid if f["type"] == "ERROR"} == {c.name for c in lm.ErrorCode}


# ---------------------------------------------------------------------------------------------------------------
# Offers sync and framing

SYNC = load("sync")


@pytest.mark.parametrize("v", SYNC["uvarints"], ids=[v["hex"] for v in SYNC["uvarints"]])
def test_uvarint_vector(v: dict[str, Any]) -> None:
    data = raw(v["hex"])
    if not v["valid"]:
        with pytest.raises(framing.FrameError) as err:
            framing.decode_uvarint(data)
        assert str(err.value) == v["error"]
        return
    assert framing.decode_uvarint(data) == (int(v["value"]), len(data))
    assert framing.encode_uvarint(int(v["value"])) == data


@pytest.mark.parametrize("v", SYNC["requests"], ids=ids(SYNC["requests"]))
def test_sync_request_vector(v: dict[str, Any]) -> None:
    data = raw(v["hex"])
    if not v["valid"]:
        with pytest.raises(framing.FrameError) as err:
            sync.decode_request(data)
        assert str(err.value) == v["error"]
        return
    req = sync.SyncRequest(raw(v["fields"]["cursor"]), v["fields"]["limit"])
    assert sync.decode_request(data) == req
    assert sync.encode_request(req) == data
    assert framing.encode_frame(data) == raw(v["frame"])


@pytest.mark.parametrize("v", SYNC["pages"], ids=ids(SYNC["pages"]))
def test_sync_page_vector(v: dict[str, Any]) -> None:
    data = raw(v["hex"])
    if not v["valid"]:
        with pytest.raises(framing.FrameError) as err:
            sync.decode_page(data)
        assert str(err.value) == v["error"]
        return
    f = v["fields"]
    page = sync.SyncPage(tuple(raw(b) for b in f["blobs"]), None if f["nextCursor"] is None else raw(f["nextCursor"]))
    assert f["more"] == (page.next_cursor is not None)
    assert sync.decode_page(data) == page
    assert sync.encode_page(page) == data
    assert framing.encode_frame(data) == raw(v["frame"])


def unframe(data: bytes) -> bytes:
    n, pos = framing.decode_uvarint(data)
    assert len(data) == pos + n
    return data[pos:]


@pytest.mark.parametrize("v", SYNC["sessions"], ids=ids(SYNC["sessions"]))
def test_sync_session_vector(v: dict[str, Any]) -> None:
    live = [raw(b) for b in v["live"]]
    pager = sync.OfferPager(lambda: list(live), v["pageOffers"], v["pageBytes"], clock=lambda: 0.0)
    for ex in v["exchanges"]:
        req = sync.decode_request(unframe(raw(ex["request"])))
        assert req.limit == v["requestLimit"]
        assert framing.encode_frame(sync.encode_page(pager.page(req))) == raw(ex["response"])
    assert sync.decode_page(unframe(raw(v["exchanges"][-1]["response"]))).next_cursor is None


# ---------------------------------------------------------------------------------------------------------------
# Reproducibility


def test_generator_reproduces_committed_files(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_vectors.py"), "--out", str(tmp_path)], check=True,
                   capture_output=True, cwd=ROOT, timeout=120)
    produced = sorted(p.name for p in tmp_path.iterdir())
    assert produced == sorted(f"{name}.json" for name in FILES)
    assert sorted(p.name for p in VECTORS.glob("*.json")) == produced
    for name in produced:
        assert (tmp_path / name).read_bytes() == (VECTORS / name).read_bytes(), f"{name} differs: run gen_vectors.py"
