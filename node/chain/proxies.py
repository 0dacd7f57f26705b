"""Typed proxies over the three contracts: one method per protocol action, each with its race errors named.

Reads go through ``ChainClient.call``; writes through ``ChainClient.transact`` (intent stored first, gas estimated,
failures classified). Every write takes an idempotency key so a restarted node cannot send the same action twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_utils import to_checksum_address

from node.chain.client import ChainClient
from node.chain.tx import TxResult

# Errors that mean "someone else already did it / the state moved on": recoverable, not bugs.
SETTLE_RACES = frozenset({"LeaseEscrow_StaleSeq", "LeaseEscrow_LeaseFinalized", "LeaseEscrow_SettlementWindowClosed"})
CLOSE_RACES = frozenset({"LeaseEscrow_LeaseNotOpen", "LeaseEscrow_LeaseFinalized"})
FINALIZE_RACES = frozenset({"LeaseEscrow_LeaseFinalized", "LeaseEscrow_SettlementWindowOpen",
                            "LeaseEscrow_ClaimPending"})
WITHDRAW_RACES = frozenset({"LeaseEscrow_NothingToWithdraw"})
# fault paths: a settlement, a dispute, an answer or a close may have got there first
CLAIM_RACES = frozenset({"LeaseEscrow_StaleSeq", "LeaseEscrow_ClaimPending", "LeaseEscrow_NothingToClaim",
                         "LeaseEscrow_SettlementWindowClosed", "LeaseEscrow_LeaseFinalized", "LeaseEscrow_SeqDisputed",
                         "LeaseEscrow_UsageDecreased"})
DISPUTE_RACES = frozenset({"LeaseEscrow_NoClaim", "LeaseEscrow_DisputeWindowClosed"})
FINALIZE_CLAIM_RACES = frozenset({"LeaseEscrow_NoClaim", "LeaseEscrow_DisputeWindowOpen"})
CHALLENGE_RACES = frozenset({"LeaseEscrow_LeaseNotOpen", "LeaseEscrow_ChallengePending",
                             "LeaseEscrow_ChallengeCooldown", "LeaseEscrow_LeaseEnded"})
ANSWER_RACES = frozenset({"LeaseEscrow_NoChallenge", "LeaseEscrow_LeaseNotOpen", "LeaseEscrow_LivenessWindowClosed"})
RESOLVE_RACES = frozenset({"LeaseEscrow_NoChallenge", "LeaseEscrow_LeaseNotOpen", "LeaseEscrow_LivenessWindowOpen"})
EQUIVOCATION_RACES = frozenset({"LeaseEscrow_NothingToSlash", "LeaseEscrow_LeaseFinalized"})


@dataclass(frozen=True, slots=True)
class OnChainLease:
    lease_id: int
    consumer: str
    provider: str
    offer_hash: bytes
    gpus: int
    status: int  # 0 None, 1 Open, 2 Closed, 3 Finalized
    price: int
    deposit: int
    paid: int
    settled_gpu_seconds: int
    last_seq: int
    started_at: int
    ends_at: int
    max_ends_at: int
    closed_at: int
    liveness_deadline: int
    collateral: int


def offer_tuple(offer: Any) -> tuple[Any, ...]:
    """ABI tuple for an ``Offer`` struct from any object with the protocol's offer field names."""
    provider = offer.provider
    if isinstance(provider, bytes | bytearray):
        provider = "0x" + bytes(provider).hex()
    return (
        to_checksum_address(provider), offer.nonce, offer.gpu_model, offer.gpu_count, offer.vram_mib,
        offer.price_per_gpu_second, offer.min_duration, offer.max_duration, offer.expires_at, offer.spec_hash,
    )


def checkpoint_tuple(cp: Any) -> tuple[Any, ...]:
    return (cp.lease_id, cp.seq, cp.cumulative_gpu_seconds, cp.heartbeat_head, cp.timestamp)


class Token:
    def __init__(self, chain: ChainClient) -> None:
        self.chain = chain
        self.c = chain.c.token

    async def balance(self, who: str) -> int:
        return int(await self.chain.call(self.c, "balanceOf", to_checksum_address(who)))

    async def allowance(self, owner: str, spender: str) -> int:
        return int(await self.chain.call(self.c, "allowance", to_checksum_address(owner), to_checksum_address(spender)))

    async def mint(self, key: str, to: str, amount: int) -> TxResult:
        return await self.chain.transact(key, self.c, "mint", to_checksum_address(to), amount)

    async def approve(self, key: str, spender: str, amount: int) -> TxResult:
        return await self.chain.transact(key, self.c, "approve", to_checksum_address(spender), amount)

    async def supports_permit(self) -> bool:
        return any(i.get("name") == "nonces" for i in self.c.abi)

    async def sign_permit(self, owner_key: bytes, spender: str, value: int, deadline: int) -> tuple[int, bytes, bytes]:
        """ERC-2612 permit signature (v, r, s) for ``spender`` to pull ``value`` from the wallet of ``owner_key``."""
        from eth_account import Account

        from node.crypto import eip712

        owner = Account.from_key(owner_key).address
        name = str(await self.chain.call(self.c, "name"))
        nonce = int(await self.chain.call(self.c, "nonces", owner))
        sep = eip712.token_domain_separator(name, "1", self.chain.deployment.chain_id, self.c.address)
        onchain_sep = bytes(await self.chain.call(self.c, "DOMAIN_SEPARATOR"))
        if sep != onchain_sep:
            raise ValueError("token's EIP-712 domain is not the expected ERC-2612 one")
        sig = eip712.sign_digest(owner_key, eip712.permit_digest(sep, owner, spender, value, nonce, deadline))
        return sig[64], sig[:32], sig[32:64]

    async def ensure_allowance(self, key: str, spender: str, amount: int) -> TxResult | None:
        me = self.chain.address
        assert me is not None
        if await self.allowance(me, spender) >= amount:
            return None
        return await self.approve(key, spender, amount)  # exact: no standing unlimited allowance


class Staking:
    def __init__(self, chain: ChainClient) -> None:
        self.chain = chain
        self.c = chain.c.staking

    async def stake(self, key: str, amount: int) -> TxResult:
        return await self.chain.transact(key, self.c, "stake", amount)

    async def register(self, key: str, node_key: bytes, metadata_uri: str = "") -> TxResult:
        return await self.chain.transact(key, self.c, "register", node_key, metadata_uri)

    async def free_stake(self, who: str) -> int:
        return int(await self.chain.call(self.c, "freeStake", to_checksum_address(who)))

    async def locked_stake(self, who: str) -> int:
        return int(await self.chain.call(self.c, "lockedStake", to_checksum_address(who)))

    async def stake_of(self, who: str) -> int:
        return int(await self.chain.call(self.c, "stakeOf", to_checksum_address(who)))

    async def is_registered(self, who: str) -> bool:
        return bool(await self.chain.call(self.c, "isRegistered", to_checksum_address(who)))

    async def node_key(self, who: str) -> bytes:
        return bytes(await self.chain.call(self.c, "nodeKey", to_checksum_address(who)))

    async def min_stake(self) -> int:
        return int(await self.chain.call(self.c, "minStake"))


class Escrow:
    def __init__(self, chain: ChainClient) -> None:
        self.chain = chain
        self.c = chain.c.escrow

    async def open_lease(self, key: str, offer: Any, signature: bytes, gpus: int, deposit: int) -> TxResult:
        return await self.chain.transact(key, self.c, "openLease", offer_tuple(offer), signature, gpus, deposit)

    async def open_lease_with_permit(self, key: str, offer: Any, signature: bytes, gpus: int, deposit: int,
                                     deadline: int, v: int, r: bytes, s: bytes) -> TxResult:
        return await self.chain.transact(key, self.c, "openLeaseWithPermit", offer_tuple(offer), signature, gpus,
                                         deposit, deadline, v, r, s)

    async def top_up(self, key: str, lease_id: int, amount: int) -> TxResult:
        return await self.chain.transact(key, self.c, "topUp", lease_id, amount)

    async def settle(self, key: str, cp: Any, signature: bytes) -> TxResult:
        return await self.chain.transact(key, self.c, "settle", cp.lease_id, checkpoint_tuple(cp), signature,
                                         race_errors=SETTLE_RACES)

    async def settle_batch(self, key: str, items: list[tuple[Any, bytes]]) -> TxResult:
        payload = [(checkpoint_tuple(cp), sig) for cp, sig in items]
        return await self.chain.transact(key, self.c, "settleBatch", payload, race_errors=SETTLE_RACES)

    async def close(self, key: str, lease_id: int) -> TxResult:
        return await self.chain.transact(key, self.c, "closeLease", lease_id, race_errors=CLOSE_RACES)

    async def finalize(self, key: str, lease_id: int) -> TxResult:
        return await self.chain.transact(key, self.c, "finalizeLease", lease_id, race_errors=FINALIZE_RACES)

    async def withdraw_earnings(self, key: str) -> TxResult:
        return await self.chain.transact(key, self.c, "withdrawEarnings", race_errors=WITHDRAW_RACES)

    async def claim(self, key: str, cp: Any, signature: bytes) -> TxResult:
        return await self.chain.transact(key, self.c, "claim", cp.lease_id, checkpoint_tuple(cp), signature,
                                         race_errors=CLAIM_RACES)

    async def dispute(self, key: str, cp: Any, signature: bytes) -> TxResult:
        return await self.chain.transact(key, self.c, "dispute", cp.lease_id, checkpoint_tuple(cp), signature,
                                         race_errors=DISPUTE_RACES)

    async def finalize_claim(self, key: str, lease_id: int) -> TxResult:
        return await self.chain.transact(key, self.c, "finalizeClaim", lease_id, race_errors=FINALIZE_CLAIM_RACES)

    async def challenge_liveness(self, key: str, lease_id: int) -> TxResult:
        return await self.chain.transact(key, self.c, "challengeLiveness", lease_id, race_errors=CHALLENGE_RACES)

    async def answer_liveness(self, key: str, lease_id: int) -> TxResult:
        return await self.chain.transact(key, self.c, "answerLiveness", lease_id, race_errors=ANSWER_RACES)

    async def resolve_liveness(self, key: str, lease_id: int) -> TxResult:
        return await self.chain.transact(key, self.c, "resolveLiveness", lease_id, race_errors=RESOLVE_RACES)

    async def report_equivocation(self, key: str, a: Any, sig_a: bytes, b: Any, sig_b: bytes) -> TxResult:
        return await self.chain.transact(key, self.c, "reportEquivocation", a.lease_id, checkpoint_tuple(a), sig_a,
                                         checkpoint_tuple(b), sig_b, race_errors=EQUIVOCATION_RACES)

    async def revert_reason(self, fn: str, *args: Any) -> str | None:
        """What ``fn(*args)`` sent by our wallet would revert with at the latest block, decoded (``None``: it would
        not revert). Explains a transaction that reverted on-chain after passing its gas estimate (a race: another
        transaction of the same block changed the state first)."""
        from web3.exceptions import ContractLogicError

        try:
            await getattr(self.c.functions, fn)(*args).call({"from": self.chain.address}, block_identifier="latest")
        except ContractLogicError as exc:
            return self.chain.errors.decode(exc.data)
        except Exception:
            return None
        return None

    async def open_revert_reason(self, offer: Any, signature: bytes, gpus: int, deposit: int,
                                 permit: tuple[int, int, bytes, bytes] | None = None) -> str | None:
        """Why an open (with ``permit`` = (deadline, v, r, s), or without) would revert now."""
        if permit is None:
            return await self.revert_reason("openLease", offer_tuple(offer), signature, gpus, deposit)
        return await self.revert_reason("openLeaseWithPermit", offer_tuple(offer), signature, gpus, deposit, *permit)

    async def get_claim(self, lease_id: int) -> tuple[int, int, int]:
        """The pending claim of ``lease_id``: (seq, cumulative GPU-seconds, readyAt); readyAt 0 when none."""
        raw = await self.chain.call(self.c, "getClaim", lease_id)
        return int(raw[0]), int(raw[1]), int(raw[2])

    async def disputed_seq(self, lease_id: int) -> int:
        return int(await self.chain.call(self.c, "disputedSeq", lease_id))

    async def refunds(self, who: str) -> int:
        return int(await self.chain.call(self.c, "refunds", to_checksum_address(who)))

    async def withdraw_refund(self, key: str) -> TxResult:
        return await self.chain.transact(key, self.c, "withdrawRefund", race_errors=WITHDRAW_RACES)

    async def cancel_offers_below(self, key: str, nonce: int) -> TxResult:
        return await self.chain.transact(key, self.c, "cancelOffersBelow", nonce)

    async def get_lease(self, lease_id: int) -> OnChainLease:
        raw = await self.chain.call(self.c, "getLease", lease_id)
        return OnChainLease(lease_id, to_checksum_address(raw[0]), to_checksum_address(raw[1]), bytes(raw[2]),
                            *[int(x) for x in raw[3:]])

    async def earnings(self, who: str) -> int:
        return int(await self.chain.call(self.c, "earnings", to_checksum_address(who)))

    async def min_nonce(self, who: str) -> int:
        return int(await self.chain.call(self.c, "minNonce", to_checksum_address(who)))

    async def accrued_fees(self) -> int:
        return int(await self.chain.call(self.c, "accruedFees"))

    async def fee_bps(self) -> int:
        return int(await self.chain.call(self.c, "feeBps"))

    async def settlement_window(self) -> int:
        return int(await self.chain.call(self.c, "settlementWindow"))

    async def domain_separator(self) -> bytes:
        return bytes(await self.chain.call(self.c, "domainSeparator"))
