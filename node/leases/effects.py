"""The effect runner: carries out the events of the lease state machine, one handler per event type.

Each handler marks its outbox row done (``LeaseStore.done``) once the effect happened, or with an error when it
never will (a reverted transaction, a lost race); a transaction that could not be sent (RPC down) stays pending:
it is tried again with a growing pause (``retry_first_s`` doubling up to ``retry_max_s``) for as long as the node
runs, and carried out again at the next start if the node stops first. A crash between an effect and its done
mark repeats the effect at the next start, so every effect is idempotent: evidence is written in the same
transaction as the done mark, chain writes carry idempotency keys, a job is started only from the ``STARTING``
phase, peers take repeats.

The consumer and provider drivers register the handlers that need their parts (sending the job spec, starting
and stopping jobs); ``node.leases.fault_effects`` registers the escrow's fault-path transactions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from node.chain.tx import TxFailed, TxRace, TxResult
from node.crypto.eip712 import Domain
from node.errors import ChainError
from node.leases.dispatcher import Dispatcher
from node.leases.ports import EscrowPort, TokenPort
from node.leases.records import LeaseRecord
from node.leases.tasks import Tasks
from node.protocol import lease as L

log = logging.getLogger(__name__)

E = TypeVar("E")
Handler = Callable[[LeaseRecord, Any, int], Awaitable[None]]
MAX_NOTICES = 500


class EffectRunner:
    def __init__(self, dispatcher: Dispatcher, escrow: EscrowPort, token: TokenPort, domain: Domain, tasks: Tasks,
                 on_capacity_change: Callable[[bytes], None], retry_first_s: float = 5.0,
                 retry_max_s: float = 120.0) -> None:
        self.dispatcher = dispatcher
        self.retry_first_s = retry_first_s
        self.retry_max_s = retry_max_s
        self.store = dispatcher.store
        self.escrow = escrow
        self.token = token
        self.domain = domain
        self.tasks = tasks
        self.on_capacity_change = on_capacity_change
        self.deferred_retries = 0  # transactions tried again after the endpoint was unusable
        self.notices: list[dict[str, Any]] = []
        self.gas: list[dict[str, Any]] = []  # kind, lease_id, gas of our transactions, for the summary
        self.settlements: dict[int, L.ContractSendSettle] = {}  # due settlements, batched by the settle loop
        # a top-up refused by a spend cap: (lease, amount) -> the reason, or None to go ahead
        self.spend_check: Callable[[LeaseRecord, int], str | None] = lambda rec, amount: None
        self._handlers: dict[type, Handler] = {}
        self.on(L.StoreHeartbeat, self._store_heartbeat)
        self.on(L.StoreCheckpoint, self._store_checkpoint)
        self.on(L.StoreJobResult, self._store_job_result)
        self.on(L.NotifyUser, self._notify)
        self.on(L.ContractSendOpenLease, self._nothing)  # open_lease sends the open transaction itself
        self.on(L.ContractSendSettle, self._queue_settlement)
        self.on(L.ContractSendClose, self.spawned(self._close))
        self.on(L.ContractSendFinalize, self.spawned(self._finalize))
        self.on(L.ContractSendTopUp, self.spawned(self._top_up))
        self.on(L.ContractSendWithdraw, self.spawned(self._withdraw))
        self.on(L.ReleaseDevices, self._release_devices)

    def on(self, kind: type[E], handler: Callable[[LeaseRecord, E, int], Awaitable[None]]) -> None:
        self._handlers[kind] = handler

    async def run(self, rec: LeaseRecord, ev: L.Event, outbox_id: int) -> None:
        await self._handlers[type(ev)](rec, ev, outbox_id)

    def done(self, outbox_id: int, error: str | None = None) -> None:
        self.store.done(outbox_id, error)

    def record_gas(self, kind: str, lease_id: int, result: TxResult) -> None:
        self.gas.append({"kind": kind, "lease_id": lease_id, "gas": result.gas_used})

    def spawned(self, handler: Callable[[LeaseRecord, E, int], Coroutine[Any, Any, None]]
                 ) -> Callable[[LeaseRecord, E, int], Awaitable[None]]:
        """The handler run as a background task (chain transactions take blocks), again and again while it leaves
        its outbox row pending (the endpoint was unusable), with a growing pause in between."""
        async def start(rec: LeaseRecord, ev: E, outbox_id: int) -> None:
            self.tasks.spawn(self._until_done(handler, rec, ev, outbox_id))
        return start

    async def _until_done(self, handler: Callable[[LeaseRecord, E, int], Coroutine[Any, Any, None]],
                          rec: LeaseRecord, ev: E, outbox_id: int) -> None:
        pause = self.retry_first_s
        while True:
            try:
                await handler(rec, ev, outbox_id)
            except ChainError as exc:  # a handler with no deferral of its own
                log.warning("lease transaction deferred", extra={"kind": type(ev).__name__,
                                                                 "error": str(exc)[:200]})
            if self.tasks.stopping.is_set() or not self.store.is_pending(outbox_id):
                return
            self.deferred_retries += 1
            log.info("lease transaction to be tried again", extra={"lease_id": rec.lease_id,
                                                                   "kind": type(ev).__name__, "in_s": pause})
            await self.tasks.pause(pause)
            if self.tasks.stopping.is_set():
                return
            pause = min(pause * 2, self.retry_max_s)

    # ------------------------------------------------------------------------------------------ local effects
    async def _nothing(self, rec: LeaseRecord, ev: object, outbox_id: int) -> None:
        self.done(outbox_id)

    async def _store_heartbeat(self, rec: LeaseRecord, ev: L.StoreHeartbeat, outbox_id: int) -> None:
        self.store.store_heartbeat(ev.lease_id, ev.seq, ev.signed, done=outbox_id)

    async def _store_checkpoint(self, rec: LeaseRecord, ev: L.StoreCheckpoint, outbox_id: int) -> None:
        if rec.state.role is L.Role.PROVIDER:
            status, reason = "sent", ""
        else:
            status = "accepted" if ev.accepted else "rejected"
            reason = (ev.reason.value if ev.reason else "") + (f": {ev.detail}" if ev.detail else "")
        self.store.store_checkpoint(ev.lease_id, ev.signed_cp, status, reason, done=outbox_id)

    async def _store_job_result(self, rec: LeaseRecord, ev: L.StoreJobResult, outbox_id: int) -> None:
        self.store.store_job_result(ev.lease_id, ev.exit_code, ev.log_tail, ev.simulated, done=outbox_id,
                                    failure=ev.failure, image_digest=ev.image_digest)

    async def _notify(self, rec: LeaseRecord, ev: L.NotifyUser, outbox_id: int) -> None:
        self.notices.append({"lease_id": ev.lease_id, "notice": ev.notice.value, "detail": ev.detail,
                             "at": time.time()})
        del self.notices[:-MAX_NOTICES]
        log.info("lease notice", extra={"lease_id": ev.lease_id, "notice": ev.notice.value, "detail": ev.detail})
        self.done(outbox_id)

    async def _queue_settlement(self, rec: LeaseRecord, ev: L.ContractSendSettle, outbox_id: int) -> None:
        self.settlements[ev.lease_id] = ev
        self.done(outbox_id)  # the settle loop owns it now; a restart re-derives it from the state

    async def _release_devices(self, rec: LeaseRecord, ev: L.ReleaseDevices, outbox_id: int) -> None:
        self.on_capacity_change(ev.offer_hash)
        self.done(outbox_id)

    # ------------------------------------------------------------------------------------------ transactions
    async def _send(self, outbox_id: int, kind: str, lease_id: int, call: Callable[[], Awaitable[TxResult]]) -> None:
        try:
            result = await call()
            self.record_gas(kind, lease_id, result)
            self.done(outbox_id)
        except TxRace as exc:
            log.info("lease transaction lost a race", extra={"kind": kind, "error": exc.error})
            self.done(outbox_id, f"race: {exc.error}")
        except TxFailed as exc:
            log.error("lease transaction failed", extra={"kind": kind, "error": exc.error})
            self.done(outbox_id, exc.error)
        except ChainError as exc:  # RPC down: left pending in the outbox, tried again (``_until_done``)
            log.warning("lease transaction deferred", extra={"kind": kind, "error": str(exc)[:200]})

    async def _close(self, rec: LeaseRecord, ev: L.ContractSendClose, outbox_id: int) -> None:
        lid = ev.lease_id
        for attempt in range(30):  # a provider closes from ends_at: block time may lag the local clock
            key = f"close:{lid}" if attempt == 0 else f"close:{lid}:{attempt}"
            try:
                result = await self.escrow.close(key, lid)
            except TxFailed as exc:
                if exc.error.startswith("LeaseEscrow_LeaseNotEnded"):
                    await self.tasks.pause(1.0)
                    continue
                log.error("lease transaction failed", extra={"kind": "close", "error": exc.error})
                self.done(outbox_id, exc.error)
                return
            except TxRace as exc:
                log.info("lease transaction lost a race", extra={"kind": "close", "error": exc.error})
                self.done(outbox_id, f"race: {exc.error}")
                return
            except ChainError as exc:
                log.warning("lease transaction deferred", extra={"kind": "close", "error": str(exc)[:200]})
                return
            self.record_gas("close", lid, result)
            self.done(outbox_id)
            return
        self.done(outbox_id, "gave up closing: the lease has not ended on-chain")

    async def _withdraw(self, rec: LeaseRecord, ev: L.ContractSendWithdraw, outbox_id: int) -> None:
        try:
            amount = await self.escrow.earnings(rec.state.terms.provider)
        except ChainError as exc:
            log.warning("withdraw deferred", extra={"error": str(exc)[:200]})
            return
        if amount <= 0:
            self.done(outbox_id, "nothing to withdraw")
            return
        # keyed by the amount: a lease may withdraw more than once (after a claim, after finalization), and a
        # withdrawal repeated after a crash finds the same amount (not mined yet) or nothing (mined)
        await self._send(outbox_id, "withdrawEarnings", 0,
                         lambda: self.escrow.withdraw_earnings(f"withdraw:{ev.lease_id}:{amount}"))

    async def _finalize(self, rec: LeaseRecord, ev: L.ContractSendFinalize, outbox_id: int) -> None:
        """Finalize once the settlement window has passed on-chain (block time may lag the local clock)."""
        lid = ev.lease_id
        for attempt in range(60):
            try:
                result = await self.escrow.finalize(f"finalize:{lid}:{attempt}", lid)
                self.record_gas("finalizeLease", lid, result)
                self.done(outbox_id)
                return
            except TxRace as exc:
                if not exc.error.startswith(("LeaseEscrow_SettlementWindowOpen", "LeaseEscrow_ClaimPending")):
                    self.done(outbox_id, f"race: {exc.error}")  # finalized by someone else
                    return
            except TxFailed as exc:
                self.done(outbox_id, exc.error)
                return
            except ChainError as exc:  # left pending: tried again (``_until_done``), not counted as an attempt
                log.warning("finalize deferred", extra={"lease_id": lid, "error": str(exc)[:200]})
                return
            await self.tasks.pause(2.0)
        self.done(outbox_id, "gave up finalizing")

    async def _top_up(self, rec: LeaseRecord, ev: L.ContractSendTopUp, outbox_id: int) -> None:
        lid = ev.lease_id
        key = f"topup:{lid}:{outbox_id}"
        refused = self.spend_check(rec, ev.amount)
        if refused:
            self.done(outbox_id, refused)
            await self.dispatcher.apply(rec, L.ContractReceiveTopUpFailed(lid, ev.amount, refused))
            return
        try:
            await self.token.ensure_allowance(f"approve:{key}", self.domain.verifying_contract, ev.amount)
            await self.escrow.top_up(key, lid, ev.amount)
            self.done(outbox_id)
        except (TxFailed, TxRace) as exc:
            self.done(outbox_id, exc.error)
            await self.dispatcher.apply(rec, L.ContractReceiveTopUpFailed(lid, ev.amount, exc.error))
