"""Wallet-signed transactions with a stored intent, one nonce manager per wallet, and classified failures.

Discipline for every chain write (``TxSender.send``):
1. the intent (idempotency key, target, calldata) is committed to SQLite before anything is sent
   (``node.chain.intents``);
2. gas is estimated at ``latest`` (this is the precondition check: a revert here costs nothing);
3. the signed raw transaction and its hash are committed before ``eth_sendRawTransaction`` (nonce and fees:
   ``node.chain.signer``);
4. the receipt is awaited (``node.chain.receipts``); a revert is decoded to the contract's custom error.
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
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import aiohttp
from eth_abi import decode as abi_decode
from eth_account.signers.local import LocalAccount
from web3 import AsyncWeb3
from web3.exceptions import ContractLogicError, TransactionNotFound, Web3RPCError

from node.chain.artifacts import abi_type
from node.chain.intents import IntentStore, hashes
from node.chain.receipts import Patience, ReceiptWatch, pool_answer
from node.chain.rpc import transient_reason
from node.chain.signer import RpcCount, TxSigner, tx_fields
from node.errors import ChainError, RecoverableError, UnrecoverableError
from node.storage.db import Database

log = logging.getLogger(__name__)

T = TypeVar("T")


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


class TxSender:
    """Sends transactions for one wallet. Safe to share between tasks of one event loop.

    Its parts: ``intents`` (the stored intents, ``node.chain.intents``), ``signer`` (account, nonces and fees,
    ``node.chain.signer``) and ``receipts`` (the receipt wait with rebroadcast, re-signing and fee bumps,
    ``node.chain.receipts``, paced by this sender's settings as they are when a wait starts)."""

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
        self.db = db
        self.chain_id = chain_id
        self.decoder = decoder
        self.receipt_timeout = receipt_timeout
        self.poll_interval = poll_interval
        self.bump_after = bump_after  # re-sign with higher fees when a transaction is still pending after this
        self.rebroadcast_every = rebroadcast_every  # resend the signed bytes while no receipt (the pool may be gone)
        self.max_patience = max_patience  # wall-clock bound of one wait, outages included
        self._calls = RpcCount()
        self.signer = TxSigner(w3, private_key, chain_id, self._calls)
        self.account: LocalAccount = self.signer.account
        self.address = self.signer.address
        self.intents = IntentStore(db, self.address)
        self.receipts = ReceiptWatch(w3, self.intents, self.signer, self._calls)

    @property
    def rpc_calls(self) -> int:
        """RPC calls made for this wallet's transactions (counted for the benchmark)."""
        return self._calls.n

    def patience(self) -> Patience:
        return Patience(self.receipt_timeout, self.poll_interval, self.bump_after, self.rebroadcast_every,
                        self.max_patience)

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
        existing = self.intents.get(key)
        if existing is not None:
            if existing["status"] == "mined":
                return TxResult(key, existing["tx_hash"], existing["gas_used"] or 0, existing["block_number"] or 0,
                                "mined")
            if existing["status"] == "sent":
                return await self._await_receipt(key, kind, existing["tx_hash"], race_errors)
            if existing["status"] in ("reverted", "failed"):
                raise TxFailed(kind, existing["error"] or existing["status"], existing["tx_hash"])
        else:
            self.intents.record(key, kind, to, data, value)
        tx = tx_fields(self.address, self.chain_id, to, data, value)
        deadline = time.monotonic() + self.receipt_timeout
        if gas is None:
            try:
                estimate = await self._patiently(lambda: self._estimate(tx), kind, "estimating gas", deadline)
            except ContractLogicError as exc:
                self._fail(key, kind, self.decoder.decode(exc.data), race_errors)
            gas = estimate + estimate // 5 + 10_000
        max_fee, tip = await self._patiently(self.signer.fees, kind, "reading fees", deadline)
        async with self.signer.lock:
            nonce = await self._patiently(self.signer.next_nonce, kind, "reading the nonce", deadline)
            tx_hash, raw = self.signer.sign(tx, nonce, gas, max_fee, tip)
            self.intents.update(key, status="sent", nonce=nonce, tx_hash=tx_hash, raw_tx=raw, gas=gas,
                                max_fee=max_fee, tip=tip)
            await self._broadcast(kind, nonce, raw)
        return await self._await_receipt(key, kind, tx_hash, race_errors)

    async def _estimate(self, tx: dict[str, Any]) -> int:
        self._calls.n += 1
        return int(await self.w3.eth.estimate_gas(tx))  # type: ignore[arg-type]

    async def _broadcast(self, kind: str, nonce: int, raw: bytes) -> None:
        """The first send of a signed transaction (its intent already stored as 'sent')."""
        try:
            self._calls.n += 1
            await self.w3.eth.send_raw_transaction(raw)
        except Web3RPCError as exc:
            if pool_answer(exc) is None:
                # Refused outright (e.g. funds, fee cap): the nonce was not used; re-read it next time. The
                # intent stays 'sent': a later call with this key resends it, reconcile() resolves it at start.
                self.signer.reset_nonce()
                raise ChainError(f"{kind}: transaction refused by the endpoint: {exc}") from exc
        except Exception as exc:
            if transient_reason(exc) is None:
                raise
            # Unknown whether it arrived: keep the nonce (ours either way); the receipt wait rebroadcasts.
            log.info("transaction send unconfirmed, will rebroadcast", extra={"kind": kind, "nonce": nonce,
                                                                               "error": str(exc)[:200]})

    async def _patiently(self, read: Callable[[], Awaitable[T]], kind: str, what: str, deadline: float) -> T:
        """``read()``, again after each transient failure until ``deadline`` (see ``_transient_pause``)."""
        while True:
            try:
                return await read()
            except Exception as exc:
                await self._transient_pause(exc, kind, what, deadline)

    async def _transient_pause(self, exc: Exception, kind: str, what: str, deadline: float) -> None:
        """Back off after a transient failure; raise ``ChainError`` for any other RPC failure or past ``deadline``."""
        if transient_reason(exc) is None and not isinstance(exc, Web3RPCError | aiohttp.ClientError):
            raise exc
        if transient_reason(exc) is None or time.monotonic() > deadline:
            raise ChainError(f"{kind}: RPC failure while {what}: {exc}") from exc
        await asyncio.sleep(0.25)

    def _fail(self, key: str, kind: str, decoded: str, race_errors: frozenset[str]) -> NoReturn:
        # Nothing was sent: the intent is 'dropped' so a later call with the same key re-checks the chain.
        self.intents.update(key, status="dropped", error=decoded)
        if error_name(decoded) in race_errors:
            raise TxRace(kind, decoded)
        raise TxFailed(kind, decoded)

    # --- outcome ---------------------------------------------------------------------------------------------
    async def _await_receipt(self, key: str, kind: str, tx_hash: str, race_errors: frozenset[str]) -> TxResult:
        """The outcome of a sent intent, once any transaction sent for it has a receipt."""
        receipt, tx_hash = await self.receipts.wait(key, kind, tx_hash, self.patience())
        gas_used = int(receipt["gasUsed"])
        block = int(receipt["blockNumber"])
        if int(receipt["status"]) != 1:
            decoded = await self._revert_reason(key, block)
            self.intents.update(key, status="reverted", gas_used=gas_used, block_number=block, error=decoded)
            if error_name(decoded) in race_errors:
                raise TxRace(kind, decoded)
            raise TxFailed(kind, decoded, tx_hash)
        self.intents.update(key, status="mined", gas_used=gas_used, block_number=block)
        return TxResult(key, tx_hash, gas_used, block, "mined", tuple(dict(x) for x in receipt["logs"]))

    async def _revert_reason(self, key: str, block: int) -> str:
        intent = self.intents.get(key)
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
        rows = self.intents.unfinished()
        chain_nonce = int(await self.w3.eth.get_transaction_count(self.address, "latest"))
        for row in rows:
            key = row["key"]
            if row["status"] == "created":
                # Never signed: nothing reached the chain. The owner re-drives it (e.g. the settlement loop).
                self.intents.update(key, status="dropped", error="not sent before restart")
                continue
            receipt = None
            for h in hashes(row):
                try:
                    receipt = await self.w3.eth.get_transaction_receipt(h)  # type: ignore[arg-type]
                    break
                except TransactionNotFound:
                    continue
            if receipt is not None:
                with contextlib.suppress(TxFailed, TxRace):
                    await self._await_receipt(key, row["kind"], row["tx_hash"], frozenset())
                continue
            if row["nonce"] is not None and int(row["nonce"]) < chain_nonce:
                self.intents.update(key, status="dropped", error="nonce used by another transaction")
                continue
            try:
                await self.w3.eth.send_raw_transaction(bytes(row["raw_tx"]))
            except Web3RPCError as exc:
                if "already" not in str(exc).lower():  # "already known/imported": still pending in the pool
                    self.intents.update(key, status="dropped", error=f"rebroadcast refused: {exc}")
                    continue
            unresolved.append(key)
        self.signer.reset_nonce()
        return unresolved
