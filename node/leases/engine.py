"""The lease engine: the façade the node and its API use. It assembles the parts and routes inputs to them:

* :class:`~node.leases.dispatcher.Dispatcher` -- runs the pure ``transition`` (``node.protocol.lease``) and stores
  the state with its events (the outbox) before anything happens;
* :class:`~node.leases.effects.EffectRunner` -- carries out the events, one handler per event type;
* :class:`~node.leases.consumer.ConsumerDriver` and :class:`~node.leases.provider.ProviderDriver` -- one per role;
* :class:`~node.leases.settlement.Settlements` -- batches the consumer's due settlements;
* :mod:`node.leases.chain_events` -- what an escrow log means for our leases; :mod:`node.leases.views` -- API dicts.

The outside world comes in through the ports of :mod:`node.leases.ports` (peers, escrow, token, chain clock).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any

import nacl.signing

from node.chain.events import ChainEvent
from node.crypto import eip712
from node.errors import InvalidMessage
from node.leases.chain_events import AdoptConsumerOpen, AdoptProviderLease, lease_updates
from node.leases.consumer import ConsumerDriver, NodeKeyLookup, NodeKeyRefresh, OfferLookup, error_reply
from node.leases.dispatcher import Dispatcher
from node.leases.effects import EffectRunner
from node.leases.fault_effects import FaultEffects
from node.leases.ports import ChainPort, Clock, EscrowPort, PeerTransport, TokenPort, wall_clock_ms
from node.leases.provider import ProviderDriver
from node.leases.reconnect import Reconnector
from node.leases.records import LeaseNotFound, LeaseRecord
from node.leases.settlement import Settlements
from node.leases.tasks import Tasks
from node.leases.views import lease_detail, lease_view
from node.protocol import lease as L
from node.protocol.checkpoint import SignedCheckpoint, Tolerance
from node.protocol.lease_messages import (
    PROTOCOL_ID,
    AckMessage,
    ErrorCode,
    ErrorMessage,
    JobSpecMessage,
    MsgType,
    decode_message,
)
from node.protocol.provider_lease import ProviderKeys
from node.provider.executor import Executor
from node.provider.gpus import GpuDevice
from node.provider.metering import UsageSampler
from node.storage.db import Database

log = logging.getLogger(__name__)


class LeaseEngine:
    def __init__(
        self,
        *,
        db: Database,
        chain: ChainPort,
        escrow: EscrowPort,
        token: TokenPort,
        transport: PeerTransport,
        domain: eip712.Domain,
        wallet_key: bytes,
        node_signing_key: nacl.signing.SigningKey,
        offer_lookup: OfferLookup,
        node_key_lookup: NodeKeyLookup,
        refresh_node_key: NodeKeyRefresh,
        settlement_window: int,
        heartbeat_interval: float = 2.0,
        checkpoint_interval: float = 6.0,
        settle_interval: float = 1.0,
        max_rejections: int = 3,
        settle_every: float = 0.0,
        auto_topup: int = 0,
        devices: tuple[GpuDevice, ...] = (),
        executor: Executor | None = None,
        sampler: UsageSampler | None = None,
        tick_interval: float = 1.0,
        on_capacity_change: Callable[[bytes], None] = lambda offer_hash: None,
        clock: Clock = wall_clock_ms,
        max_unsettled: float | None = None,
        challenge_after: float | None = None,
    ) -> None:
        """``max_unsettled``: seconds of a lease's full usage a provider serves unsettled before it stops and
        claims (default: ten checkpoint intervals, at least a minute); ``challenge_after``: seconds without a
        heartbeat before a consumer challenges the provider's liveness (default: 20 heartbeats, at least 30 s)."""
        tol = replace(Tolerance(), heartbeat_interval_ms=max(5000, int(heartbeat_interval * 2000)))
        unsettled_s = max_unsettled if max_unsettled is not None else max(60.0, 10 * checkpoint_interval)
        silence_s = challenge_after if challenge_after is not None else max(30.0, 20 * heartbeat_interval)
        config = L.LeaseConfig(max_consecutive_rejections=max_rejections, settle_retry_ms=5_000,
                               settle_interval_ms=int(settle_every * 1000), auto_topup_amount=auto_topup,
                               settlement_window_s=settlement_window, tolerance=tol,
                               max_unsettled_s=max(1, int(unsettled_s)), challenge_after_ms=int(silence_s * 1000))
        self.address = chain.address or ""
        self.transport = transport
        self.clock = clock
        self.tick_interval = tick_interval
        self.tasks = Tasks()
        self.dispatcher = Dispatcher(db, ProviderKeys(node_signing_key, wallet_key))
        self.store = self.dispatcher.store
        self.runner = EffectRunner(self.dispatcher, escrow, token, domain, self.tasks, on_capacity_change)
        self.dispatcher.bind(self.runner.run)
        FaultEffects(self.runner)  # registers the fault-path handlers
        self.consumer = ConsumerDriver(
            self.dispatcher, self.runner, chain=chain, transport=transport, wallet_key=wallet_key,
            node_key=node_signing_key, domain=domain, config=config, offer_lookup=offer_lookup,
            node_key_lookup=node_key_lookup, refresh_node_key=refresh_node_key, clock=clock)
        self.provider = ProviderDriver(
            self.dispatcher, self.runner, transport=transport, node_key=node_signing_key, address=self.address,
            domain=domain, config=config, devices=devices, executor=executor, sampler=sampler,
            heartbeat_interval=heartbeat_interval, checkpoint_interval=checkpoint_interval, clock=clock,
            on_capacity_change=on_capacity_change)
        self.settlements = Settlements(self.runner, self.dispatcher, chain, self.tasks, settle_interval)
        self.reconnect = Reconnector(transport)
        self.quiet_ms = max(3_000, int(heartbeat_interval * 3_000))  # no heartbeat for this long: dial again

    @property
    def leases(self) -> dict[tuple[int, str], LeaseRecord]:
        return self.dispatcher.leases

    @property
    def notices(self) -> list[dict[str, Any]]:
        return self.runner.notices

    @property
    def gas(self) -> list[dict[str, Any]]:
        return self.runner.gas

    def busy_devices(self) -> set[int]:
        return self.provider.busy_devices()

    # ------------------------------------------------------------------------------------------ lifecycle
    async def start(self, run_loops: bool = True) -> None:
        """Resume stored leases and serve the lease protocol. The engine's two loops (timer ticks, settlement
        batches) run in its own task set, or, with ``run_loops=False``, wherever the caller runs ``loops()``
        (the node runs them in its task group, where their failure stops the node)."""
        loaded = self.dispatcher.load()
        for rec in loaded:
            if rec.state.role is L.Role.CONSUMER and rec.state.ledger.pending_settlement is not None:
                await self.dispatcher.apply(rec, L.NodeRestarted(self.clock()))
        # Jobs that outlived the node are taken over before their leases are metered again (their first beat
        # counts the job as running), and before the executor removes what else the previous run left behind.
        await self.provider.reattach_jobs()
        for rec in loaded:
            self.provider.resume(rec)
        registered = self.transport.set_handler(PROTOCOL_ID, self.on_lease_message)
        if registered is not None:  # on a running host: wait until libp2p serves the protocol
            await registered
        await self.dispatcher.replay()
        await self.provider.end_lost_jobs()
        await self._resync_from_chain()
        if run_loops:
            for _, loop in self.loops():
                self.tasks.spawn(loop)

    def loops(self) -> list[tuple[str, Coroutine[object, object, None]]]:
        """The engine's long-running loops, by name (each returns when the engine stops)."""
        return [("lease ticks", self._tick_loop()), ("settlement batches", self.settlements.run())]

    async def _resync_from_chain(self) -> None:
        """Bring every lease that is not finalized up to the escrow's state at start: logs mined while the node was
        down (or read before the engine ran) may never reach it. Each change is one a log would have brought, and
        a log that does arrive later is a replay (ignored); a challenge pending here is answered at once."""
        get_claim = getattr(self.runner.escrow, "get_claim", None)
        for rec in self.dispatcher:
            s = rec.state
            if s.status < L.LeaseStatus.OPEN or s.status >= L.LeaseStatus.FINALIZED or not rec.lease_id:
                continue
            lid = rec.lease_id
            try:
                on_chain = await self.runner.escrow.get_lease(lid)
                claim = await get_claim(lid) if get_claim is not None else None
            except Exception as exc:
                log.warning("could not read the lease at start", extra={"lease_id": lid, "error": repr(exc)[:200]})
                continue
            changes: list[L.Change] = []
            money = s.ledger
            if on_chain.deposit > money.deposit:
                changes.append(L.ContractReceiveTopUp(lid, on_chain.deposit - money.deposit, on_chain.deposit,
                                                      on_chain.ends_at))
            if on_chain.last_seq > money.settled_seq:  # the fee of the catch-up is not known here: 0
                changes.append(L.ContractReceiveLeaseSettled(lid, on_chain.last_seq, on_chain.settled_gpu_seconds,
                                                             on_chain.paid - money.paid, 0))
            if claim is not None:
                seq, cumulative, ready_at = claim
                if ready_at and s.faults.claim_ready_at != ready_at:
                    changes.append(self._with_evidence(L.ContractReceiveUsageClaimed(lid, seq, cumulative, ready_at),
                                                       s.role))
                elif not ready_at and s.faults.claim_seq:  # the claim ended while we were away
                    changes.append(L.ContractReceiveClaimFinalized(lid, s.faults.claim_seq, s.faults.claim_cumulative,
                                                                   0))
            if on_chain.closed_at and s.closed_at is None:
                changes.append(L.ContractReceiveLeaseClosed(lid, on_chain.closed_at, ""))
            if on_chain.liveness_deadline and s.faults.challenge_deadline != on_chain.liveness_deadline:
                log.warning("liveness challenge pending at start", extra={"lease_id": lid,
                                                                           "deadline": on_chain.liveness_deadline})
                changes.append(L.ContractReceiveLivenessChallenged(lid, on_chain.liveness_deadline))
            elif not on_chain.liveness_deadline and s.faults.challenge_deadline and on_chain.status == 1:
                changes.append(L.ContractReceiveLivenessAnswered(lid))
            if on_chain.status == 3:
                changes.append(L.ContractReceiveLeaseFinalized(lid, on_chain.deposit - on_chain.paid))
            for change in changes:
                log.info("lease caught up with the chain at start", extra={"lease_id": lid,
                                                                            "change": type(change).__name__})
                await self.dispatcher.apply(rec, change)

    async def stop(self) -> None:
        self.tasks.stopping.set()
        for rec in self.dispatcher:
            if rec.job is not None and rec.job.running:
                with contextlib.suppress(Exception):
                    await rec.job.stop()
        await self.tasks.stop()

    async def _tick_loop(self) -> None:
        while not self.tasks.stopping.is_set():
            await self.tick()
            await self.tasks.pause(self.tick_interval)

    async def tick(self) -> None:
        """One timer tick for every lease that is not finalized."""
        now = self.clock()
        for rec in self.dispatcher:
            if rec.state.status < L.LeaseStatus.FINALIZED and rec.lease_id:
                try:
                    await self.dispatcher.apply(rec, L.TimerTick(now))
                except Exception:
                    log.exception("lease tick failed", extra={"lease_id": rec.lease_id})
        await self._keep_in_touch(now)

    async def _keep_in_touch(self, now: int) -> None:
        """Consumer: remember where our providers are; dial a quiet one again (it may have restarted)."""
        live: set[str] = set()
        quiet: set[str] = set()
        for rec in self.dispatcher:
            s = rec.state
            if s.role is L.Role.CONSUMER and L.LeaseStatus.OPEN <= s.status <= L.LeaseStatus.CLOSED and rec.peer:
                (quiet if now - s.beats.last_beat_at_ms > self.quiet_ms else live).add(rec.peer)
        try:
            await self.reconnect.remember(live - quiet)
            await self.reconnect.redial(quiet)
        except Exception as exc:
            log.warning("reconnecting to lease peers failed", extra={"error": repr(exc)[:200]})

    # ------------------------------------------------------------------------------------------ inputs
    async def on_lease_message(self, peer: str, body: bytes) -> bytes | None:
        try:
            msg = decode_message(body)
        except InvalidMessage as exc:
            return error_reply(0, MsgType.ACK, ErrorCode.MALFORMED, str(exc))
        if isinstance(msg, JobSpecMessage):
            return await self.provider.on_job_spec(peer, msg)
        if isinstance(msg, AckMessage | ErrorMessage):
            return None
        return await self.consumer.on_message(peer, msg)

    async def on_chain_event(self, ev: ChainEvent) -> None:
        for update in lease_updates(ev, self.address):
            if isinstance(update, AdoptProviderLease):
                await self.provider.adopt(update.lease_id)
            elif isinstance(update, AdoptConsumerOpen):
                with contextlib.suppress(LeaseNotFound):
                    await self.consumer.adopt_open(update.event)
            else:
                for role in (L.Role.CONSUMER, L.Role.PROVIDER):
                    rec = self.dispatcher.get(update.lease_id, role)
                    if rec is not None:
                        await self.dispatcher.apply(rec, self._with_evidence(update.change, role))

    def _with_evidence(self, change: L.Change, role: L.Role) -> L.Change:
        """A claim seen by the consumer carries the stored checkpoint that contradicts it, if any."""
        if isinstance(change, L.ContractReceiveUsageClaimed) and role is L.Role.CONSUMER:
            evidence = self.store.signed_checkpoint(change.lease_id, change.seq, change.cumulative_gpu_seconds,
                                                    SignedCheckpoint)
            return replace(change, evidence=evidence)
        return change

    # ------------------------------------------------------------------------------------------ API
    async def open_lease(self, offer_id: bytes, gpus: int, deposit: int, job: dict[str, Any] | None
                         ) -> dict[str, Any]:
        return self.view(await self.consumer.open_lease(offer_id, gpus, deposit, job))

    async def top_up(self, lease_id: int, amount: int) -> dict[str, Any]:
        return self.view(await self.consumer.top_up(lease_id, amount))

    async def close_lease(self, lease_id: int) -> dict[str, Any]:
        rec = self.dispatcher.get(lease_id, L.Role.CONSUMER) or self.dispatcher.need(lease_id, L.Role.PROVIDER)
        return self.view(await self.consumer.close(rec))

    def view(self, rec: LeaseRecord) -> dict[str, Any]:
        return lease_view(rec, self.store)

    def views(self) -> list[dict[str, Any]]:
        return [self.view(r) for r in sorted(self.dispatcher, key=lambda r: r.key)]

    def logs(self, lease_id: int, after: int = -1, limit: int = 256) -> dict[str, Any] | None:
        """A consumer lease's job output kept here, chunks with seq > ``after``; ``done`` once the job result is in
        (no more output will come). ``None``: no such lease."""
        if self.dispatcher.get(lease_id, L.Role.CONSUMER) is None:
            return None
        chunks = self.store.logs(lease_id, after, limit)
        done = self.store.job_result(lease_id) is not None
        return {"lease_id": lease_id, "done": done and len(chunks) < limit,
                "chunks": [{"seq": c.seq, "dropped": c.dropped, "text": c.text} for c in chunks]}

    def lease_detail(self, lease_id: int) -> dict[str, Any] | None:
        return lease_detail([r for r in self.dispatcher if r.lease_id == lease_id], self.store, self.notices)
