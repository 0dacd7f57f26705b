"""EIP-712 hashing and recovery: the hand-rolled fast path must agree with eth-account's generic path."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak

from node.crypto import eip712

KEY = keccak(b"gpunet test key")
ACCT = Account.from_key(KEY)
DOMAIN = eip712.Domain(31337, "0x5FbDB2315678afecb367f032d93F642f64180aa3")


def make_offer_message(**overrides):
    msg = {
        "provider": ACCT.address,
        "nonce": 7,
        "gpuModel": b"H100-80GB".ljust(32, b"\0"),
        "gpuCount": 8,
        "vramMiB": 81920,
        "pricePerGpuSecond": 10**12,
        "minDuration": 60,
        "maxDuration": 3600,
        "expiresAt": 2_000_000_000,
        "specHash": b"\x11" * 32,
    }
    msg.update(overrides)
    return msg


def offer_digest(domain, msg):
    return eip712.digest(
        domain.separator,
        eip712.offer_struct_hash(
            msg["provider"], msg["nonce"], msg["gpuModel"], msg["gpuCount"], msg["vramMiB"],
            msg["pricePerGpuSecond"], msg["minDuration"], msg["maxDuration"], msg["expiresAt"], msg["specHash"],
        ),
    )


def test_offer_digest_matches_eth_account():
    msg = make_offer_message()
    expected = encode_typed_data(full_message=eip712.offer_typed_data(DOMAIN, msg))
    # SignableMessage(version, header=domain separator, body=struct hash)
    assert expected.header == DOMAIN.separator
    assert keccak(b"\x19\x01" + expected.header + expected.body) == offer_digest(DOMAIN, msg)


def test_checkpoint_digest_matches_eth_account():
    msg = {"leaseId": 5, "seq": 2, "cumulativeGpuSeconds": 120, "heartbeatHead": b"\x22" * 32, "timestamp": 1_700}
    expected = encode_typed_data(full_message=eip712.checkpoint_typed_data(DOMAIN, msg))
    got = eip712.digest(DOMAIN.separator, eip712.checkpoint_struct_hash(5, 2, 120, b"\x22" * 32, 1_700))
    assert keccak(b"\x19\x01" + expected.header + expected.body) == got


def test_fast_sign_equals_wallet_sign_and_recovers():
    msg = make_offer_message()
    wallet_sig = eip712.sign_typed_data(KEY, eip712.offer_typed_data(DOMAIN, msg))
    fast_sig = eip712.sign_digest(KEY, offer_digest(DOMAIN, msg))
    assert wallet_sig == fast_sig
    assert eip712.recover(offer_digest(DOMAIN, msg), fast_sig) == ACCT.address


@pytest.mark.parametrize(
    "other",
    [
        eip712.Domain(1, "0x5FbDB2315678afecb367f032d93F642f64180aa3"),
        eip712.Domain(31337, "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"),
    ],
)
def test_signature_does_not_carry_across_domains(other):
    msg = make_offer_message()
    sig = eip712.sign_digest(KEY, offer_digest(DOMAIN, msg))
    assert eip712.recover(offer_digest(other, msg), sig) != ACCT.address


def test_high_s_and_malformed_signatures_rejected():
    msg = make_offer_message()
    d = offer_digest(DOMAIN, msg)
    sig = eip712.sign_digest(KEY, d)
    s = int.from_bytes(sig[32:64], "big")
    high_s = sig[:32] + (eip712.SECP256K1_N - s).to_bytes(32, "big") + bytes([sig[64] ^ 1])
    with pytest.raises(eip712.SignatureError):
        eip712.recover(d, high_s)
    with pytest.raises(eip712.SignatureError):
        eip712.recover(d, sig[:64])
    with pytest.raises(eip712.SignatureError):
        eip712.recover(d, sig[:64] + b"\x05")
    with pytest.raises(eip712.SignatureError):
        eip712.recover(d, b"\x00" * 65)


def test_out_of_range_fields_rejected():
    with pytest.raises(ValueError):
        eip712.checkpoint_struct_hash(1, 2**64, 0, b"\0" * 32, 0)
    with pytest.raises(ValueError):
        eip712.checkpoint_struct_hash(1, 1, 0, b"\0" * 31, 0)
