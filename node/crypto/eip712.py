"""EIP-712 hashing, signing and fast recovery for the two structs the escrow verifies (docs/spec.md).

Hashing is done by hand with precomputed type hashes (the layouts are fixed and tiny), which is several times
faster than eth-account's generic typed-data path; signing goes through eth-account's ``encode_typed_data`` so
the two are cross-checked in the tests. Recovery uses coincurve and rejects high-s signatures as OpenZeppelin's
ECDSA does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import coincurve
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_keys.constants import SECPK1_N
from eth_utils import keccak, to_checksum_address

DOMAIN_NAME = "gpunet LeaseEscrow"
DOMAIN_VERSION = "1"

EIP712_DOMAIN_TYPE = (
    b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
OFFER_TYPE = (
    b"Offer(address provider,uint256 nonce,bytes32 gpuModel,uint32 gpuCount,uint32 vramMiB,"
    b"uint256 pricePerGpuSecond,uint64 minDuration,uint64 maxDuration,uint64 expiresAt,bytes32 specHash)"
)
CHECKPOINT_TYPE = (
    b"UsageCheckpoint(uint256 leaseId,uint64 seq,uint64 cumulativeGpuSeconds,bytes32 heartbeatHead,"
    b"uint64 timestamp)"
)
EIP712_DOMAIN_TYPEHASH = keccak(EIP712_DOMAIN_TYPE)
OFFER_TYPEHASH = keccak(OFFER_TYPE)
CHECKPOINT_TYPEHASH = keccak(CHECKPOINT_TYPE)

# secp256k1 group order; signatures with s > N/2 are malleated copies and are rejected (EIP-2).
SECP256K1_N = SECPK1_N
SECP256K1_HALF_N = SECP256K1_N // 2

_UINT_MAX = {32: 2**32 - 1, 64: 2**64 - 1, 256: 2**256 - 1}


class SignatureError(ValueError):
    """A signature is malformed, malleable, or does not recover."""


def _u(value: int, bits: int = 256) -> bytes:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0 or value > _UINT_MAX[bits]:
        raise ValueError(f"value out of range for uint{bits}: {value!r}")
    return value.to_bytes(32, "big")


def _addr(address: str | bytes) -> bytes:
    raw = bytes.fromhex(address[2:]) if isinstance(address, str) else address
    if len(raw) != 20:
        raise ValueError("address must be 20 bytes")
    return b"\x00" * 12 + raw


def _b32(value: bytes) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != 32:
        raise ValueError("bytes32 field must be exactly 32 bytes")
    return bytes(value)


@dataclass(frozen=True, slots=True)
class Domain:
    """The escrow's EIP-712 domain: binds every signature to one chain and one contract."""

    chain_id: int
    verifying_contract: str  # 0x-hex address of LeaseEscrow
    separator: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "separator",
            keccak(
                EIP712_DOMAIN_TYPEHASH
                + keccak(DOMAIN_NAME.encode())
                + keccak(DOMAIN_VERSION.encode())
                + _u(self.chain_id)
                + _addr(self.verifying_contract)
            ),
        )

    def as_typed_data_domain(self) -> dict[str, Any]:
        return {
            "name": DOMAIN_NAME,
            "version": DOMAIN_VERSION,
            "chainId": self.chain_id,
            "verifyingContract": to_checksum_address(self.verifying_contract),
        }


def offer_struct_hash(
    provider: str | bytes,
    nonce: int,
    gpu_model: bytes,
    gpu_count: int,
    vram_mib: int,
    price_per_gpu_second: int,
    min_duration: int,
    max_duration: int,
    expires_at: int,
    spec_hash: bytes,
) -> bytes:
    """``hashStruct(Offer)``: the offer id used for capacity accounting and dedupe."""
    return keccak(
        OFFER_TYPEHASH
        + _addr(provider)
        + _u(nonce)
        + _b32(gpu_model)
        + _u(gpu_count, 32)
        + _u(vram_mib, 32)
        + _u(price_per_gpu_second)
        + _u(min_duration, 64)
        + _u(max_duration, 64)
        + _u(expires_at, 64)
        + _b32(spec_hash)
    )


def checkpoint_struct_hash(
    lease_id: int, seq: int, cumulative_gpu_seconds: int, heartbeat_head: bytes, timestamp: int
) -> bytes:
    return keccak(
        CHECKPOINT_TYPEHASH
        + _u(lease_id)
        + _u(seq, 64)
        + _u(cumulative_gpu_seconds, 64)
        + _b32(heartbeat_head)
        + _u(timestamp, 64)
    )


def digest(domain_separator: bytes, struct_hash: bytes) -> bytes:
    """The 32-byte EIP-712 digest that is signed: keccak(0x1901 || domainSeparator || structHash)."""
    return keccak(b"\x19\x01" + domain_separator + struct_hash)


def recover(digest32: bytes, signature: bytes) -> str:
    """Recover the checksummed signer of ``digest32`` from a 65-byte r||s||v signature."""
    return to_checksum_address(recover_raw(digest32, signature))


def recover_raw(digest32: bytes, signature: bytes) -> bytes:
    """Recover the 20-byte signer address (hot path: no checksumming).

    Rejects wrong lengths, v not in {27, 28}, r or s out of range, and high-s signatures.
    """
    if len(signature) != 65:
        raise SignatureError("signature must be 65 bytes")
    r = int.from_bytes(signature[0:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    v = signature[64] - 27  # the contract's ecrecover accepts only 27/28, so 0/1 would never open a lease
    if v not in (0, 1):
        raise SignatureError("invalid signature v (must be 27 or 28)")
    if not (0 < r < SECP256K1_N) or not (0 < s <= SECP256K1_HALF_N):
        raise SignatureError("invalid or malleable signature (r/s out of range)")
    try:
        pub = coincurve.PublicKey.from_signature_and_message(
            signature[0:64] + bytes([v]), digest32, hasher=None
        )
    except Exception as exc:  # coincurve raises plain Exception on bad points
        raise SignatureError("signature does not recover") from exc
    return keccak(pub.format(compressed=False)[1:])[12:]


def sign_digest(private_key: bytes, digest32: bytes) -> bytes:
    """Sign a 32-byte digest, returning r||s||v with v in {27, 28} (low-s, as libsecp256k1 always produces)."""
    sig = coincurve.PrivateKey(private_key).sign_recoverable(digest32, hasher=None)
    return sig[:64] + bytes([sig[64] + 27])


EIP712_DOMAIN_FIELDS: list[dict[str, str]] = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]


def offer_typed_data(domain: Domain, message: dict[str, Any]) -> dict[str, Any]:
    """Full EIP-712 typed data (for wallets and eth-account) for an Offer message dict."""
    return {
        "types": {
            "EIP712Domain": EIP712_DOMAIN_FIELDS,
            "Offer": [
                {"name": "provider", "type": "address"},
                {"name": "nonce", "type": "uint256"},
                {"name": "gpuModel", "type": "bytes32"},
                {"name": "gpuCount", "type": "uint32"},
                {"name": "vramMiB", "type": "uint32"},
                {"name": "pricePerGpuSecond", "type": "uint256"},
                {"name": "minDuration", "type": "uint64"},
                {"name": "maxDuration", "type": "uint64"},
                {"name": "expiresAt", "type": "uint64"},
                {"name": "specHash", "type": "bytes32"},
            ],
        },
        "primaryType": "Offer",
        "domain": domain.as_typed_data_domain(),
        "message": message,
    }


def checkpoint_typed_data(domain: Domain, message: dict[str, Any]) -> dict[str, Any]:
    """Full EIP-712 typed data for a UsageCheckpoint message dict."""
    return {
        "types": {
            "EIP712Domain": EIP712_DOMAIN_FIELDS,
            "UsageCheckpoint": [
                {"name": "leaseId", "type": "uint256"},
                {"name": "seq", "type": "uint64"},
                {"name": "cumulativeGpuSeconds", "type": "uint64"},
                {"name": "heartbeatHead", "type": "bytes32"},
                {"name": "timestamp", "type": "uint64"},
            ],
        },
        "primaryType": "UsageCheckpoint",
        "domain": domain.as_typed_data_domain(),
        "message": message,
    }


def sign_typed_data(private_key: bytes, typed_data: dict[str, Any]) -> bytes:
    """Sign full typed data with eth-account (the wallet path); returns 65 bytes r||s||v."""
    signable = encode_typed_data(full_message=typed_data)
    return bytes(Account.sign_message(signable, private_key).signature)


# A consumer's authorisation of the job it sends for a lease: binds the lease (and so the consumer wallet that
# opened it) to the consumer's node key, so a provider runs only jobs sent by the lease's own consumer.
JOB_SPEC_TYPE = b"JobSpec(uint256 leaseId,bytes32 specHash,bytes32 consumerNodeKey)"
JOB_SPEC_TYPEHASH = keccak(JOB_SPEC_TYPE)


def job_spec_struct_hash(lease_id: int, spec_hash: bytes, consumer_node_key: bytes) -> bytes:
    return keccak(JOB_SPEC_TYPEHASH + _u(lease_id) + _b32(spec_hash) + _b32(consumer_node_key))


# ERC-2612 permit (the payment token's own EIP-712 domain), so a consumer opens a lease in one transaction.
PERMIT_TYPEHASH = keccak(b"Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)")


def token_domain_separator(name: str, version: str, chain_id: int, token: str) -> bytes:
    return keccak(EIP712_DOMAIN_TYPEHASH + keccak(name.encode()) + keccak(version.encode()) + _u(chain_id)
                  + _addr(token))


def permit_digest(domain_separator: bytes, owner: str, spender: str, value: int, nonce: int, deadline: int) -> bytes:
    struct = keccak(PERMIT_TYPEHASH + _addr(owner) + _addr(spender) + _u(value) + _u(nonce) + _u(deadline))
    return digest(domain_separator, struct)
