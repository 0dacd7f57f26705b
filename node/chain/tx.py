"""Wallet-signed transactions with a stored intent, one nonce manager per wallet, and classified failures.

Discipline for every chain write (``TxSender.send``):
1. the intent (idempotency key, target, calldata) is committed to SQLite before anything is sent;
2. gas is estimated at ``latest`` (this is the precondition check: a revert here costs nothing);
3. the signed raw transaction and its hash are committed before ``eth_sendRawTransaction``;
4. the receipt is awaited; a revert is decoded to the contract's custom error.
A failure is a ``TxRace`` (recoverable: someone else got there first, e.g. already settled) when the decoded error
is in the caller's ``race_errors``, otherwise a ``TxFailed`` (a bug or bad input: loud). ``reconcile()`` run at start
resolves every intent a crash left behind: it finds the receipt, rebroadcasts the stored raw transaction, or marks
it dropped when the nonce was used by something else.

An endpoint that fails for a while (throttled, connections dropped, down, restarted without its pool) delays a
transaction; it neither loses nor duplicates one. Transient failures (``node.chain.rpc.transient_reason``) of the
estimate, the fee read or the send are retried with backoff. A send whose outcome is unknown keeps its nonce, and
the receipt wait rebroadcasts the stored signed bytes every ``rebroadcast_every`` seconds ("already known" and
"nonce too low" are normal answers to that). If the nonce turns out used by another transaction and none of this
intent's hashes has a receipt, the intent is signed again with a fresh nonce (the old hash is kept in ``replaced``:
it can never be mined). The receipt wait counts only time during which the endpoint answered, so an outage shorter
than ``max_patience`` never surfaces as an error; ``ChainError`` means the endpoint stayed unusable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
from eth_abi import decode as abi_decode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from web3 import AsyncWeb3
from web3.exceptions import ContractLogicError, TransactionNotFound, Web3RPCError

from node.chain.artifacts import abi_type
from node.chain.rpc import transient_reason
from node.errors import ChainError, RecoverableError, UnrecoverableError
from node.storage.db import Database

log = logging.getLogger(__name__)


class TxFailed(UnrecoverableError):
    """A transaction reverted (or would revert) for a reason that is not a known race."""

    def __init__(self, kind: str, error: str, tx_hash: str | None = None) -> None:
        super().__init__(f"{kind} failed: {error}" + (f" (tx {tx_hash})" if tx_hash else ""))
        self.kind = kind
        self.error = error
        self.tx_hash = tx_hash


class TxRace(RecoverableError):
    """A transaction lost a race the protocol expects (e.g. the checkpoint was already settled)."""

    def __init__(self, kind: str, error: str) -> None:
        super().__init__(f"{kind} lost a race: {error}")
        self.kind = kind
        self.error = error


@dataclass(frozen=True, slots=True)
class TxResult:
    key: str
    tx_hash: str
    gas_used: int
    block_number: int
    status: str  # mined
    logs: tuple[dict[str, Any], ...] = ()


class ErrorDecoder:
    """Turns revert data into ``Name(arg, ...)`` using the custom errors of the given ABIs."""

    def __init__(self, abis: Iterable[list[dict[str, Any]]]) -> None:
        from eth_utils import keccak

        self._errors: dict[bytes, tuple[str, list[str]]] = {}
        for abi in abis:
            for item in abi:
                if item.get("type") == "error":
                    types = [abi_type(i) for i in item["inputs"]]
                    sig = f"{item['name']}({','.join(types)})"
                    self._errors[keccak(sig.encode())[:4]] = (item["name"], types)

    def decode(self, data: str | bytes | dict[str, str] | None) -> str:
        """A revert's data (hex string or bytes) as ``Name(args)``. web3 hands a dict for revert reasons it has
        interpreted itself (e.g. offchain lookups); those carry no custom error of ours."""
        if data is None or isinstance(data, dict):
            return "reverted without data"
        raw = bytes.fromhex(data.removeprefix("0x")) if isinstance(data, str) else data
        if len(raw) < 4:
            return "reverted without data"
        sel, body = raw[:4], raw[4:]
        if sel == bytes.fromhex("08c379a0"):
            try:
                return f"Error({abi_decode(['string'], body)[0]!r})"
            except Exception:
                return "Error(<undecodable>)"
        if sel == bytes.fromhex("4e487b71"):
            try:
                return f"Panic({abi_decode(['uint256'], body)[0]:#x})"
            except Exception:
                return "Panic(<undecodable>)"
        known = self._errors.get(sel)
        if known is None:
            return f"unknown error 0x{raw[:4].hex()}"
        name, types = known
        try:
            args = abi_decode(types, body)
        except Exception:
            return f"{name}(<undecodable>)"
        return f"{name}({', '.join(_fmt(a) for a in args)})"


def _fmt(v: Any) -> str:
    if isinstance(v, bytes):
        return "0x" + v.hex()
    return str(v)


def error_name(decoded: str) -> str:
    return decoded.split("(", 1)[0]


def _pool_answer(exc: Web3RPCError) -> str | None:
    """What an endpoint's refusal of a raw transaction says about it: 'known' (already in the pool or mined),
    'nonce too low' (its nonce is used: mined, or taken by another transaction), or None (refused for cause)."""
    message = str(exc).lower()
    if "already known" in message or "already imported" in message or "known transaction" in message:
        return "known"
    if "nonce too low" in message or "nonce has already been used" in message or "old nonce" in message:
        return "nonce too low"
    return None


class TxSender:
    """Sends transactions for one wallet. Safe to share between tasks of one event loop."""

    def __init__(
        self,
        w3: AsyncWeb3,
        private_key: bytes,
        db: Database,
        chain_id: int,
        decoder: ErrorDecoder,
        receipt_timeout: float = 60.0,
        poll_interval: float = 0.02,
        bump_after: float = 30.0,
        rebroadcast_every: float = 3.0,
        max_patience: float = 600.0,
    ) -> None:
        self.w3 = w3
        self.account: LocalAccount = Account.from_key(private_key)
        self.address = self.account.address
        self.db = db
        self.chain_id = chain_id
        self.decoder = decoder
        self.receipt_timeout = receipt_timeout
        self.poll_interval = poll_interval
        self.bump_after = bump_after  # re-sign with higher fees when a transaction is still pending after this
        self.rebroadcast_every = rebroadcast_every  # resend the signed bytes while no receipt (the pool may be gone)
        self.max_patience = max_patience  # wall-clock bound of one wait, outages included
        self._nonce: int | None = None
        self._nonce_lock = asyncio.Lock()
        self._fee_cache: tuple[float, int, int] | None = None
        self.rpc_calls = 0  # counted for the benchmark

    # --- fees and nonces -------------------------------------------------------------------------------------
    async def _fees(self) -> tuple[int, int]:
        now = time.monotonic()
        if self._fee_cache is None or now - self._fee_cache[0] > 10:
            self.rpc_calls += 1
            block = await self.w3.eth.get_block("latest")
            base = int(block.get("baseFeePerGas", 0) or 0)
            tip = 1_000_000_000 if base else 0
            self._fee_cache = (now, base * 2 + tip, tip)
        return self._fee_cache[1], self._fee_cache[2]

    async def _next_nonce(self) -> int:
        if self._nonce is None:
            self.rpc_calls += 1
            self._nonce = int(await self.w3.eth.get_transaction_count(self.address, "pending"))
        n = self._nonce
        self._nonce += 1
        return n

    def _reset_nonce(self) -> None:
        self._nonce = None

    # --- intents ---------------------------------------------------------------------------------------------
    def _intent(self, key: str) -> dict[str, Any] | None:
        rows = self.db.query("SELECT * FROM tx_intents WHERE key = ?", (key,))
        return dict(rows[0]) if rows else None

    def _record(self, key: str, kind: str, to: str, data: bytes, value: int) -> None:
        now = time.time()
        with self.db.tx() as c:
            c.execute(
                "INSERT OR IGNORE INTO tx_intents(key, kind, sender, to_addr, data, value, status, created_at, "
                "updated_at) VALUES(?,?,?,?,?,?,?,?,?)",
                (key, kind, self.address, to, data, str(value), "created", now, now),
            )

    def _update(self, key: str, **fields: Any) -> None:
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self.db.tx() as c:
            c.execute(f"UPDATE tx_intents SET {cols}, updated_at = ? WHERE key = ?",
                      (*fields.values(), time.time(), key))

    # --- sending ---------------------------------------------------------------------------------------------
    async def send(
        self,
        key: str,
        kind: str,
        to: str,
        data: bytes,
        value: int = 0,
        race_errors: frozenset[str] = frozenset(),
        gas: int | None = None,
    ) -> TxResult:
        """Send once per ``key``: a second call with the same key returns the first outcome (or resumes it)."""
        existing = self._intent(key)
        if existing is not None:
            if existing["status"] == "mined":
                return TxResult(key, existing["tx_hash"], existing["gas_used"] or 0, existing["block_number"] or 0,
                                "mined")
            if existing["status"] == "sent":
                return await self._await_receipt(key, kind, existing["tx_hash"], race_errors)
            if existing["status"] in ("reverted", "failed"):
                raise TxFailed(kind, existing["error"] or existing["status"], existing["tx_hash"])
        else:
            self._record(key, kind, to, data, value)
        tx: dict[str, Any] = {"from": self.address, "data": "0x" + data.hex(), "value": value,
                              "chainId": self.chain_id}
        if to:  # empty target: contract creation
            tx["to"] = to_checksum_address(to)
        deadline = time.monotonic() + self.receipt_timeout
        if gas is None:
            while True:
                try:
                    self.rpc_calls += 1
                    estimate = int(await self.w3.eth.estimate_gas(tx))  # type: ignore[arg-type]
                    break
                except ContractLogicError as exc:
                    self._fail(key, kind, self.decoder.decode(exc.data), race_errors)
                except Exception as exc:
                    await self._transient_pause(exc, kind, "estimating gas", deadline)
            gas = estimate + estimate // 5 + 10_000
        while True:
            try:
                max_fee, tip = await self._fees()
                break
            except Exception as exc:
                await self._transient_pause(exc, kind, "reading fees", deadline)
        async with self._nonce_lock:
            while True:
                try:
                    nonce = await self._next_nonce()
                    break
                except Exception as exc:
                    await self._transient_pause(exc, kind, "reading the nonce", deadline)
            signed = self.account.sign_transaction({
                **tx, "nonce": nonce, "gas": gas, "maxFeePerGas": max_fee, "maxPriorityFeePerGas": tip, "type": 2,
            })
            tx_hash = "0x" + bytes(signed.hash).hex()
            self._update(key, status="sent", nonce=nonce, tx_hash=tx_hash, raw_tx=bytes(signed.raw_transaction),
                         gas=gas, max_fee=max_fee, tip=tip)
            try:
                self.rpc_calls += 1
                await self.w3.eth.send_raw_transaction(signed.raw_transaction)
            except Web3RPCError as exc:
                if _pool_answer(exc) is None:
                    # Refused outright (e.g. funds, fee cap): the nonce was not used; re-read it next time. The
                    # intent stays 'sent': a later call with this key resends it, reconcile() resolves it at start.
                    self._reset_nonce()
                    raise ChainError(f"{kind}: transaction refused by the endpoint: {exc}") from exc
            except Exception as exc:
                if transient_reason(exc) is None:
                    raise
                # Unknown whether it arrived: keep the nonce (ours either way); the receipt wait rebroadcasts.
                log.info("transaction send unconfirmed, will rebroadcast", extra={"kind": kind, "nonce": nonce,
                                                                                   "error": str(exc)[:200]})
        return await self._await_receipt(key, kind, tx_hash, race_errors)

    async def _transient_pause(self, exc: Exception, kind: str, what: str, deadline: float) -> None:
        """Back off after a transient failure; raise ``ChainError`` for any other RPC failure or past ``deadline``."""
        if transient_reason(exc) is None and not isinstance(exc, Web3RPCError | aiohttp.ClientError):
            raise exc
        if transient_reason(exc) is None or time.monotonic() > deadline:
            raise ChainError(f"{kind}: RPC failure while {what}: {exc}") from exc
        await asyncio.sleep(0.25)

    def _fail(self, key: str, kind: str, decoded: str, race_errors: frozenset[str]) -> None:
        # Nothing was sent: the intent is 'dropped' so a later call with the same key re-checks the chain.
        self._update(key, status="dropped", error=decoded)
        if error_name(decoded) in race_errors:
            raise TxRace(kind, decoded)
        raise TxFailed(kind, decoded)

    async def _await_receipt(self, key: str, kind: str, tx_hash: str, race_errors: frozenset[str]) -> TxResult:
        """Wait for the receipt of any transaction sent for this intent; rebroadcast it while none shows, sign it
        again if its nonce went to another transaction, bump the fees of a stuck one."""
        budget = self.receipt_timeout  # seconds of answered polling left
        hard_deadline = time.monotonic() + self.max_patience
        last_send = last_broadcast = time.monotonic()
        receipt = None
        while receipt is None:
            t_round = time.monotonic()
            intent = self._intent(key) or {}
            hashes = [intent.get("tx_hash") or tx_hash] + [h for h in (intent.get("replaced") or "").split(",") if h]
            answered = True
            try:
                receipt, found = await self._find_receipt(hashes)
                if receipt is not None:
                    tx_hash = found
                    break
                if time.monotonic() - last_broadcast > self.rebroadcast_every and intent.get("raw_tx"):
                    last_broadcast = time.monotonic()
                    if await self._rebroadcast(key, kind, intent) == "nonce used":
                        receipt, found = await self._find_receipt(hashes)  # mined just now?
                        if receipt is not None:
                            tx_hash = found
                            break
                        tx_hash = await self._resign(key, intent)
                        last_send = time.monotonic()
                        continue
            except Exception as exc:
                if transient_reason(exc) is None:
                    if isinstance(exc, Web3RPCError | aiohttp.ClientError):
                        raise ChainError(f"{kind}: RPC failure while waiting for {tx_hash}: {exc}") from exc
                    raise
                answered = False
            now = time.monotonic()
            if answered:
                budget -= now - t_round + self.poll_interval
            if budget <= 0 or now > hard_deadline:
                raise ChainError(f"{kind}: no receipt for {tx_hash} after {self.receipt_timeout}s of answered "
                                 "polling (intent kept)")
            if answered and now - last_send > self.bump_after and intent.get("sender") == self.address:
                with contextlib.suppress(TimeoutError, OSError, aiohttp.ClientError):
                    await self._bump(key, intent)
                last_send = time.monotonic()
            await asyncio.sleep(self.poll_interval if answered else min(1.0, self.rebroadcast_every))
        if receipt is not None and tx_hash != (self._intent(key) or {}).get("tx_hash"):
            self._update(key, tx_hash=tx_hash)  # an earlier fee level (or nonce) was the one mined
        gas_used = int(receipt["gasUsed"])
        block = int(receipt["blockNumber"])
        if int(receipt["status"]) != 1:
            decoded = await self._revert_reason(key, block)
            self._update(key, status="reverted", gas_used=gas_used, block_number=block, error=decoded)
            if error_name(decoded) in race_errors:
                raise TxRace(kind, decoded)
            raise TxFailed(kind, decoded, tx_hash)
        self._update(key, status="mined", gas_used=gas_used, block_number=block)
        return TxResult(key, tx_hash, gas_used, block, "mined", tuple(dict(x) for x in receipt["logs"]))

    async def _find_receipt(self, hashes: list[str]) -> tuple[Any, str]:
        for h in hashes:
            try:
                self.rpc_calls += 1
                return await self.w3.eth.get_transaction_receipt(h), h  # type: ignore[arg-type]
            except TransactionNotFound:
                continue
        return None, ""

    async def _rebroadcast(self, key: str, kind: str, intent: dict[str, Any]) -> str:
        """Send the stored signed bytes again: 'sent', 'known' (in the pool or mined) or 'nonce used'."""
        try:
            self.rpc_calls += 1
            await self.w3.eth.send_raw_transaction(bytes(intent["raw_tx"]))
            log.info("transaction rebroadcast", extra={"kind": kind, "nonce": intent.get("nonce")})
            return "sent"
        except Web3RPCError as exc:
            answer = _pool_answer(exc)
            if answer == "nonce too low":
                return "nonce used"
            if answer is None:
                log.warning("rebroadcast refused", extra={"kind": kind, "error": str(exc)[:200]})
            return "known"

    async def _resign(self, key: str, intent: dict[str, Any]) -> str:
        """The intent's nonce went to another transaction and none of its hashes was mined: sign it again with a
        fresh nonce. The old hashes stay in ``replaced`` (they can never be mined now)."""
        async with self._nonce_lock:
            self._reset_nonce()
            nonce = await self._next_nonce()
            tx: dict[str, Any] = {"from": self.address, "data": "0x" + bytes(intent["data"]).hex(),
                                  "value": int(intent["value"]), "chainId": self.chain_id, "nonce": nonce,
                                  "gas": int(intent["gas"]), "maxFeePerGas": int(intent["max_fee"]),
                                  "maxPriorityFeePerGas": int(intent["tip"] or 0), "type": 2}
            if intent["to_addr"]:
                tx["to"] = to_checksum_address(intent["to_addr"])
            signed = self.account.sign_transaction(tx)
            new_hash = "0x" + bytes(signed.hash).hex()
            replaced = ",".join(h for h in [intent["tx_hash"], *(intent.get("replaced") or "").split(",")] if h)
            self._update(key, tx_hash=new_hash, raw_tx=bytes(signed.raw_transaction), nonce=nonce, replaced=replaced)
            log.warning("transaction signed again with a fresh nonce",
                        extra={"kind": intent["kind"], "old_nonce": intent.get("nonce"), "nonce": nonce})
            with contextlib.suppress(Web3RPCError):
                self.rpc_calls += 1
                await self.w3.eth.send_raw_transaction(signed.raw_transaction)
        return new_hash

    async def _bump(self, key: str, intent: dict[str, Any]) -> None:
        """Replace a pending transaction (same nonce) with one paying 25% more, so payments never stall on fees."""
        if intent.get("nonce") is None or intent.get("gas") is None or intent.get("max_fee") is None:
            return
        self._fee_cache = None
        max_fee, tip = await self._fees()
        tip = max(tip, int(intent["tip"] or 0) * 5 // 4 + 1)
        max_fee = max(max_fee, int(intent["max_fee"]) * 5 // 4 + 1, tip)
        tx: dict[str, Any] = {"from": self.address, "data": "0x" + bytes(intent["data"]).hex(),
                              "value": int(intent["value"]), "chainId": self.chain_id, "nonce": int(intent["nonce"]),
                              "gas": int(intent["gas"]), "maxFeePerGas": max_fee, "maxPriorityFeePerGas": tip,
                              "type": 2}
        if intent["to_addr"]:
            tx["to"] = to_checksum_address(intent["to_addr"])
        signed = self.account.sign_transaction(tx)
        new_hash = "0x" + bytes(signed.hash).hex()
        replaced = ",".join(h for h in [intent["tx_hash"], *(intent.get("replaced") or "").split(",")] if h)
        self._update(key, tx_hash=new_hash, raw_tx=bytes(signed.raw_transaction), max_fee=max_fee, tip=tip,
                     replaced=replaced)
        try:
            self.rpc_calls += 1
            await self.w3.eth.send_raw_transaction(signed.raw_transaction)
            log.info("transaction fee bumped", extra={"kind": intent["kind"], "nonce": intent["nonce"],
                                                      "max_fee": max_fee})
        except (Web3RPCError, OSError, TimeoutError) as exc:  # e.g. the original was just mined
            log.info("fee bump not accepted", extra={"kind": intent["kind"], "error": str(exc)[:200]})

    async def _revert_reason(self, key: str, block: int) -> str:
        intent = self._intent(key)
        if intent is None:
            return "reverted"
        try:
            call: dict[str, Any] = {"from": self.address, "data": "0x" + bytes(intent["data"]).hex(),
                                    "value": int(intent["value"])}
            if intent["to_addr"]:
                call["to"] = intent["to_addr"]
            await self.w3.eth.call(
                call,  # type: ignore[arg-type]
                block - 1 if block > 0 else "latest",
            )
        except ContractLogicError as exc:
            return self.decoder.decode(exc.data)
        except Exception as exc:  # the reason is informative only
            return f"reverted ({type(exc).__name__})"
        return "reverted (out of gas or state changed)"

    # --- restart ---------------------------------------------------------------------------------------------
    async def reconcile(self) -> list[str]:
        """Resolve intents left 'sent' or 'created' by a crash. Returns the keys still unresolved."""
        unresolved: list[str] = []
        rows = self.db.query(
            "SELECT * FROM tx_intents WHERE sender = ? AND status IN ('sent', 'created') ORDER BY id", (self.address,)
        )
        chain_nonce = int(await self.w3.eth.get_transaction_count(self.address, "latest"))
        for row in rows:
            key = row["key"]
            if row["status"] == "created":
                # Never signed: nothing reached the chain. The owner re-drives it (e.g. the settlement loop).
                self._update(key, status="dropped", error="not sent before restart")
                continue
            receipt = None
            for h in [row["tx_hash"], *(row["replaced"] or "").split(",")]:
                if not h:
                    continue
                try:
                    receipt = await self.w3.eth.get_transaction_receipt(h)
                    break
                except TransactionNotFound:
                    continue
            if receipt is not None:
                with contextlib.suppress(TxFailed, TxRace):
                    await self._await_receipt(key, row["kind"], row["tx_hash"], frozenset())
                continue
            if row["nonce"] is not None and int(row["nonce"]) < chain_nonce:
                self._update(key, status="dropped", error="nonce used by another transaction")
                continue
            try:
                await self.w3.eth.send_raw_transaction(bytes(row["raw_tx"]))
            except Web3RPCError as exc:
                if "already" not in str(exc).lower():  # "already known/imported": still pending in the pool
                    self._update(key, status="dropped", error=f"rebroadcast refused: {exc}")
                    continue
            unresolved.append(key)
        self._reset_nonce()
        return unresolved
