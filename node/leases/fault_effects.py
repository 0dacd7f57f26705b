"""The escrow's fault paths carried out for the lease state machine: claims, disputes, claim finalization,
liveness challenges, answers and resolutions, and equivocation reports. Each is one transaction keyed by its outbox
id; the outcome shows in its log (``ContractReceive*``), a revert or a lost race comes back to the lease as
``ContractReceiveFaultTxFailed`` with the decoded error."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from node.chain.tx import TxFailed, TxRace, TxResult
from node.errors import ChainError
from node.leases.effects import EffectRunner
from node.leases.records import LeaseRecord
from node.protocol import lease as L

log = logging.getLogger(__name__)


class FaultEffects:
    def __init__(self, runner: EffectRunner) -> None:
        self.runner = runner
        self.dispatcher = runner.dispatcher
        self.tasks = runner.tasks
        runner.on(L.ContractSendClaim, runner.spawned(self._claim))
        runner.on(L.ContractSendDispute, runner.spawned(self._dispute))
        runner.on(L.ContractSendFinalizeClaim, runner.spawned(self._finalize_claim))
        runner.on(L.ContractSendChallenge, runner.spawned(self._challenge))
        runner.on(L.ContractSendAnswer, runner.spawned(self._answer))
        runner.on(L.ContractSendResolve, runner.spawned(self._resolve))
        runner.on(L.ContractSendReportEquivocation, runner.spawned(self._report_equivocation))

    async def _fault(self, rec: LeaseRecord, outbox_id: int, kind: str, lease_id: int,
                     call: Callable[[str], Awaitable[TxResult]], key: str, *, wait_for: str = "",
                     attempts: int = 1) -> None:
        """Send one fault-path transaction. The outcome shows in its log (``ContractReceive*``); a revert or a lost
        race comes back as ``ContractReceiveFaultTxFailed`` with the decoded error. ``wait_for``: an error that
        means "not yet" (block time lags the local clock): tried again every 1 s, ``attempts`` times. Keys carry
        the outbox id: one transaction per event, also when the event is carried out again after a restart."""
        for attempt in range(attempts):
            try:
                result = await call(f"{key}:{attempt}" if attempt else key)
                self.runner.record_gas(kind, lease_id, result)
                log.info("lease fault transaction mined", extra={"kind": kind, "lease_id": lease_id,
                                                                  "tx": result.tx_hash})
                self.runner.done(outbox_id)
                return
            except (TxRace, TxFailed) as exc:
                if wait_for and exc.error.startswith(wait_for) and attempt + 1 < attempts:
                    await self.tasks.pause(1.0)
                    continue
                level = logging.INFO if isinstance(exc, TxRace) else logging.ERROR
                log.log(level, "lease fault transaction failed", extra={"kind": kind, "lease_id": lease_id,
                                                                         "error": exc.error})
                self.runner.done(outbox_id, exc.error)
                await self.dispatcher.apply(rec, L.ContractReceiveFaultTxFailed(lease_id, kind, exc.error))
                return
            except ChainError as exc:  # RPC down: left pending in the outbox, tried again (``_until_done``)
                log.warning("lease fault transaction deferred", extra={"kind": kind, "error": str(exc)[:200]})
                return

    async def _claim(self, rec: LeaseRecord, ev: L.ContractSendClaim, outbox_id: int) -> None:
        cp, sig = ev.signed_cp.checkpoint, ev.signed_cp.signature
        log.warning("claiming unsettled usage", extra={"lease_id": ev.lease_id, "seq": cp.seq,
                                                        "gpu_seconds": cp.cumulative_gpu_seconds,
                                                        "reason": rec.state.faults.reason})
        await self._fault(rec, outbox_id, "claim", ev.lease_id, lambda k: self.runner.escrow.claim(k, cp, sig),
                          f"claim:{ev.lease_id}:{cp.seq}:{outbox_id}")

    async def _dispute(self, rec: LeaseRecord, ev: L.ContractSendDispute, outbox_id: int) -> None:
        cp, sig = ev.evidence.checkpoint, ev.evidence.signature
        log.warning("disputing a claim", extra={"lease_id": ev.lease_id, "claimed_seq": ev.claimed_seq,
                                                 "evidence_seq": cp.seq, "reason": rec.state.faults.reason})
        await self._fault(rec, outbox_id, "dispute", ev.lease_id, lambda k: self.runner.escrow.dispute(k, cp, sig),
                          f"dispute:{ev.lease_id}:{ev.claimed_seq}:{outbox_id}")

    async def _finalize_claim(self, rec: LeaseRecord, ev: L.ContractSendFinalizeClaim, outbox_id: int) -> None:
        lid = ev.lease_id
        log.info("finalizing a claim", extra={"lease_id": lid, "seq": ev.seq})
        await self._fault(rec, outbox_id, "finalizeClaim", lid, lambda k: self.runner.escrow.finalize_claim(k, lid),
                          f"finalize-claim:{lid}:{ev.seq}:{outbox_id}", wait_for="LeaseEscrow_DisputeWindowOpen",
                          attempts=30)

    async def _challenge(self, rec: LeaseRecord, ev: L.ContractSendChallenge, outbox_id: int) -> None:
        lid = ev.lease_id
        log.warning("challenging the provider's liveness", extra={"lease_id": lid, "reason": ev.reason})
        await self._fault(rec, outbox_id, "challenge", lid, lambda k: self.runner.escrow.challenge_liveness(k, lid),
                          f"challenge:{lid}:{outbox_id}")

    async def _answer(self, rec: LeaseRecord, ev: L.ContractSendAnswer, outbox_id: int) -> None:
        lid = ev.lease_id
        log.warning("answering a liveness challenge", extra={"lease_id": lid, "deadline": ev.deadline})
        await self._fault(rec, outbox_id, "answer", lid, lambda k: self.runner.escrow.answer_liveness(k, lid),
                          f"answer:{lid}:{ev.deadline}:{outbox_id}")

    async def _resolve(self, rec: LeaseRecord, ev: L.ContractSendResolve, outbox_id: int) -> None:
        lid = ev.lease_id
        log.warning("resolving a missed liveness deadline", extra={"lease_id": lid, "deadline": ev.deadline})
        await self._fault(rec, outbox_id, "resolve", lid, lambda k: self.runner.escrow.resolve_liveness(k, lid),
                          f"resolve:{lid}:{ev.deadline}:{outbox_id}", wait_for="LeaseEscrow_LivenessWindowOpen",
                          attempts=30)

    async def _report_equivocation(self, rec: LeaseRecord, ev: L.ContractSendReportEquivocation,
                                   outbox_id: int) -> None:
        a, b = ev.a, ev.b
        log.warning("reporting provider equivocation", extra={"lease_id": ev.lease_id, "seq": a.checkpoint.seq})
        await self._fault(rec, outbox_id, "reportEquivocation", ev.lease_id,
                          lambda k: self.runner.escrow.report_equivocation(k, a.checkpoint, a.signature, b.checkpoint,
                                                                    b.signature),
                          f"equivocation:{ev.lease_id}:{a.checkpoint.seq}:{outbox_id}")
