"""The lease engine: carries out the pure lease state machine (``node.protocol.lease``) for both roles.

One dispatcher: ``_apply`` runs ``transition``, then writes the new state, the change and its events (as an outbox)
in one SQLite transaction, and only then carries the events out, marking each done. A crash anywhere leaves either
the old state or the new state plus the events still to do; ``start`` replays the outbox. Chain writes use
idempotency keys (``settle:<lease>:<seq>``...), so a replayed event never pays twice.

Consumer: opens leases from offers in the book, seals and sends the job spec, verifies heartbeats and checkpoints,
batches due settlements into ``settleBatch``, closes and finalizes (refund). Provider: adopts leases from
``LeaseOpened`` logs, authenticates the job spec (EIP-712 ``JobSpec`` signed by the lease's consumer wallet), runs
the job, meters it, streams heartbeats/checkpoints, closes at the end, withdraws earnings after finalization.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import nacl.signing
from eth_utils import keccak, to_checksum_address

from node.chain.client import ChainClient
from node.chain.events import ChainEvent
from node.chain.proxies import Escrow, Staking, Token
from node.chain.tx import TxFailed, TxRace
from node.crypto import eip712
from node.crypto.nodekey import node_key_of_peer_id, peer_id_of_node_key
from node.errors import ChainError, InvalidMessage, NodeError, RecoverableError
from node.protocol import lease as L
from node.protocol.checkpoint import Tolerance
from node.protocol.heartbeat import DeviceUsage, UsageSummary
from node.protocol.lease_messages import (
    AckMessage,
    CheckpointMessage,
    ErrorCode,
    ErrorMessage,
    HeartbeatMessage,
    JobResultMessage,
    JobSpecMessage,
    MsgType,
    decode_message,
    encode_message,
    open_job_spec,
    seal_job_spec,
    to_change,
)
from node.protocol.provider_lease import (
    MeteringSample,
    ProviderMeter,
    SendCheckpoint,
    SendHeartbeat,
    cut_checkpoint,
    new_meter,
    provider_tick,
    update_lease_times,
)
from node.provider.executor import ExecJob, Executor, JobHandle, JobOutcome
from node.provider.gpus import GpuDevice
from node.provider.metering import UsageSampler
from node.storage.db import Database
from node.storage.lease_store import LeaseStore

log = logging.getLogger(__name__)

LEASE_PROTOCOL = "/gpunet/lease/1.0.0"
MAX_JOB_ARGV = 64


class LeaseNotFound(RecoverableError, KeyError):
    pass


@dataclass
class LeaseRecord:
    """In-memory handle of one lease of this node (one per role)."""

    state: L.LeaseState
    meter: ProviderMeter | None = None  # provider only
    peer: str | None = None  # the counterpart's peer id
    devices: tuple[int, ...] = ()  # provider: indices of the GPUs given to this lease
    job: JobHandle | None = field(default=None, repr=False)
    job_outcome: JobOutcome | None = None
    result_sent: bool = False
    final_sent: bool = False
    outq: list[bytes] = field(default_factory=list)  # provider: encoded messages not yet acked, in order
    serving: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def key(self) -> tuple[int, str]:
        return (self.state.lease_id, self.state.role.value)


@dataclass(frozen=True, slots=True)
class PersistedLease:
    """What of a ``LeaseRecord`` survives a restart (stored by ``LeaseStore`` as JSON)."""

    state: L.LeaseState
    meter: ProviderMeter | None
    peer: str | None
    devices: tuple[int, ...]
    outq: tuple[bytes, ...]
    result_sent: bool
    final_sent: bool


EVENT_TYPES: dict[str, type] = {cls.__name__: cls for cls in typing.get_args(L.Event)}


def _now_ms() -> int:
    return int(time.time() * 1000)


def job_spec_bytes(job: dict[str, Any]) -> bytes:
    """Canonical JSON of a job request: {"argv": [...], "env": {...}, "timeout_s": n}."""
    argv = job.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv) or len(argv) > MAX_JOB_ARGV:
        raise ValueError("job.argv must be a non-empty list of strings")
    env = job.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise ValueError("job.env must map strings to strings")
    timeout = job.get("timeout_s", 3600)
    if not isinstance(timeout, int) or timeout <= 0:
        raise ValueError("job.timeout_s must be a positive integer")
    return json.dumps({"argv": argv, "env": env, "timeout_s": timeout}, sort_keys=True, separators=(",", ":")).encode()


class LeaseEngine:
    def __init__(
        self,
        *,
        db: Database,
        chain: ChainClient,
        domain: eip712.Domain,
        wallet_key: bytes,
        node_signing_key: nacl.signing.SigningKey,
        p2p: Any,
        offer_lookup: Callable[[bytes], Any],
        node_key_lookup: Callable[[str], bytes | None],
        refresh_node_key: Callable[[str], Any],
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
    ) -> None:
        self.db = db
        self.store: LeaseStore[PersistedLease] = LeaseStore(db, PersistedLease, EVENT_TYPES)
        self.chain = chain
        self.escrow = Escrow(chain)
        self.token = Token(chain)
        self.staking = Staking(chain)
        self.domain = domain
        self.wallet_key = wallet_key
        self.address = chain.address or ""
        self.node_key = node_signing_key
        self.node_pub = bytes(node_signing_key.verify_key)
        self.p2p = p2p
        self.offer_lookup = offer_lookup
        self.node_key_lookup = node_key_lookup
        self.refresh_node_key = refresh_node_key
        self.heartbeat_interval = heartbeat_interval
        self.checkpoint_interval = checkpoint_interval
        self.settle_interval = settle_interval
        self.tick_interval = tick_interval
        self.devices = devices
        self.executor = executor
        self.sampler = sampler
        self.on_capacity_change = on_capacity_change
        tol = replace(Tolerance(), heartbeat_interval_ms=max(5000, int(heartbeat_interval * 2000)))
        self.lease_config = L.LeaseConfig(max_consecutive_rejections=max_rejections, settle_retry_ms=5_000,
                                          settle_interval_ms=int(settle_every * 1000), auto_topup_amount=auto_topup,
                                          settlement_window_s=settlement_window, tolerance=tol)
        self.leases: dict[tuple[int, str], LeaseRecord] = {}
        self._settle_queue: dict[int, L.ContractSendSettle] = {}
        self._busy_devices: set[int] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()
        self.notices: list[dict[str, Any]] = []
        self.gas: list[dict[str, Any]] = []  # (kind, gas_used, leases) of our transactions, for the summary

    # ------------------------------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        for p in self.store.load():
            state = p.state
            rec = LeaseRecord(state=state, meter=p.meter, peer=p.peer, devices=p.devices, outq=list(p.outq),
                              result_sent=p.result_sent, final_sent=p.final_sent)
            self.leases[rec.key] = rec
            if state.role is L.Role.PROVIDER and state.status < L.LeaseStatus.FINALIZED:
                self._busy_devices.update(rec.devices)
                rec.serving = self._spawn(self._serve(rec))  # resumes metering; the job itself did not survive
        for rec in self.leases.values():
            # A settlement sent (or queued) before a restart and not confirmed since: forget the in-flight marker so
            # the next tick settles the latest verified checkpoint. Settlement is cumulative and keyed by
            # (lease, seq), so this can neither pay twice nor skip usage; a mined one arrives as LeaseSettled.
            st = rec.state
            if st.role is L.Role.CONSUMER and st.pending_settlement is not None:
                rec.state = replace(st, pending_settlement=None, settle_blocked_until_ms=0)
        registered = self.p2p.set_handler(LEASE_PROTOCOL, self._on_lease_message)
        if registered is not None:  # on a running host: wait until libp2p serves the protocol
            await registered
        # carry out events a crash left in the outbox
        for pending in self.store.pending():
            rec = self.leases.get((pending.lease_id, pending.role))
            if rec is not None:
                await self._execute(rec, pending.event, pending.outbox_id)
        self._spawn(self._tick_loop())
        self._spawn(self._settle_loop())

    async def stop(self) -> None:
        self._stop.set()
        for rec in self.leases.values():
            if rec.job is not None and rec.job.running:
                with contextlib.suppress(Exception):
                    await rec.job.stop()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(BaseException):
                await t

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("lease task failed", extra={"error": repr(exc)[:300]})

    # ------------------------------------------------------------------------------------------ dispatcher
    def _persist(self, rec: LeaseRecord, change: object | None, events: list[Any]) -> list[int]:
        lid, role = rec.key
        persisted = PersistedLease(rec.state, rec.meter, rec.peer, tuple(rec.devices), tuple(rec.outq),
                                   rec.result_sent, rec.final_sent)
        return self.store.save(lid, role, rec.state.status.name, persisted, change, events)

    async def _apply(self, rec: LeaseRecord, change: Any) -> None:
        async with self._lock:
            before = rec.state
            state, events = L.transition(before, change)
            rec.state = state
            if not events and isinstance(change, L.TimerTick) and replace(before, now_ms=state.now_ms) == state:
                return  # a tick that changed nothing but the clock: nothing to write
            ids = self._persist(rec, change, events)
        for oid, ev in zip(ids, events, strict=True):
            await self._execute(rec, ev, oid)

    def _done(self, outbox_id: int, error: str | None = None) -> None:
        self.store.done(outbox_id, error)

    async def _execute(self, rec: LeaseRecord, ev: Any, outbox_id: int) -> None:
        lid = rec.state.lease_id
        if isinstance(ev, L.StoreHeartbeat):
            self.store.store_heartbeat(ev.lease_id, ev.seq, ev.signed)
            self._done(outbox_id)
        elif isinstance(ev, L.StoreCheckpoint):
            self._store_checkpoint(ev.lease_id, ev.signed_cp, "accepted" if ev.accepted else "rejected",
                                   (ev.reason.value if ev.reason else "") + (f": {ev.detail}" if ev.detail else ""))
            self._done(outbox_id)
        elif isinstance(ev, L.StoreJobResult):
            self.store.store_job_result(ev.lease_id, ev.exit_code, ev.log_tail, ev.simulated)
            self._done(outbox_id)
        elif isinstance(ev, L.ContractSendSettle):
            self._settle_queue[ev.lease_id] = ev
            self._done(outbox_id)  # the settle loop owns it now; a restart re-derives it from the state
        elif isinstance(ev, L.ContractSendClose):
            self._spawn(self._send(outbox_id, rec, "close", lambda: self.escrow.close(f"close:{lid}", lid)))
        elif isinstance(ev, L.ContractSendFinalize):
            self._spawn(self._finalize(outbox_id, rec))
        elif isinstance(ev, L.ContractSendTopUp):
            self._spawn(self._top_up(outbox_id, rec, ev.amount))
        elif isinstance(ev, L.SendJobSpec):
            self._spawn(self._send_job_spec(outbox_id, rec))
        elif isinstance(ev, L.NotifyUser):
            self.notices.append({"lease_id": ev.lease_id, "notice": ev.notice.value, "detail": ev.detail,
                                 "at": time.time()})
            del self.notices[:-500]
            log.info("lease notice", extra={"lease_id": ev.lease_id, "notice": ev.notice.value, "detail": ev.detail})
            self._done(outbox_id)
        else:  # ContractSendOpenLease: the open transaction is sent by open_lease itself
            self._done(outbox_id)

    def _store_checkpoint(self, lease_id: int, scp: Any, status: str, reason: str) -> None:
        self.store.store_checkpoint(lease_id, scp, status, reason)

    async def _finalize(self, outbox_id: int, rec: LeaseRecord) -> None:
        """Finalize once the settlement window has passed on-chain (block time may lag the local clock)."""
        lid = rec.state.lease_id
        for attempt in range(60):
            try:
                result = await self.escrow.finalize(f"finalize:{lid}:{attempt}", lid)
                self.gas.append({"kind": "finalizeLease", "lease_id": lid, "gas": result.gas_used})
                self._done(outbox_id)
                return
            except TxRace as exc:
                if not exc.error.startswith(("LeaseEscrow_SettlementWindowOpen", "LeaseEscrow_ClaimPending")):
                    self._done(outbox_id, f"race: {exc.error}")  # finalized by someone else
                    return
            except TxFailed as exc:
                self._done(outbox_id, exc.error)
                return
            except ChainError as exc:
                log.warning("finalize deferred", extra={"lease_id": lid, "error": str(exc)[:200]})
            await self._pause(2.0)
        self._done(outbox_id, "gave up finalizing")

    async def _send(self, outbox_id: int, rec: LeaseRecord, kind: str, fn: Callable[[], Any]) -> None:
        try:
            result = await fn()
            self.gas.append({"kind": kind, "lease_id": rec.state.lease_id, "gas": result.gas_used})
            self._done(outbox_id)
        except TxRace as exc:
            log.info("lease transaction lost a race", extra={"kind": kind, "error": exc.error})
            self._done(outbox_id, f"race: {exc.error}")
        except TxFailed as exc:
            log.error("lease transaction failed", extra={"kind": kind, "error": exc.error})
            self._done(outbox_id, exc.error)
        except ChainError as exc:  # RPC down: leave it in the outbox, retried at next start
            log.warning("lease transaction deferred", extra={"kind": kind, "error": str(exc)[:200]})

    # ------------------------------------------------------------------------------------------ consumer
    async def open_lease(self, offer_id: bytes, gpus: int, deposit: int, job: dict[str, Any] | None) -> dict[str, Any]:
        entry = self.offer_lookup(offer_id)
        if entry is None:
            raise ValueError("offer not in the book (expired, withdrawn or unknown)")
        so = entry.signed
        offer = so.offer
        if not (0 < gpus <= offer.gpu_count):
            raise ValueError(f"gpus must be within 1..{offer.gpu_count}")
        provider = offer.provider_address
        node_key = self.node_key_lookup(provider) or await self.refresh_node_key(provider)
        if not node_key or node_key == b"\x00" * 32:
            raise ValueError("provider has no registered node key")
        spec = job_spec_bytes(job) if job is not None else None
        key = f"open:{bytes(offer_id).hex()[:16]}:{os.urandom(6).hex()}"
        self.store.record_open(key, bytes(offer_id), gpus, deposit, spec)
        escrow_addr = self.domain.verifying_contract
        if await self.token.supports_permit():  # one transaction, and no standing allowance left behind
            deadline = int(time.time()) + 600
            v, r, s_ = await self.token.sign_permit(self.wallet_key, escrow_addr, deposit, deadline)
            result = await self.escrow.open_lease_with_permit(key, offer, so.signature, gpus, deposit, deadline,
                                                              v, r, s_)
            self.gas.append({"kind": "openLeaseWithPermit", "lease_id": 0, "gas": result.gas_used})
        else:
            approve = await self.token.ensure_allowance(f"approve:{key}", escrow_addr, deposit)
            if approve is not None:
                self.gas.append({"kind": "approve", "lease_id": 0, "gas": approve.gas_used})
            result = await self.escrow.open_lease(key, offer, so.signature, gpus, deposit)
            self.gas.append({"kind": "openLease", "lease_id": 0, "gas": result.gas_used})
        opened = next((e for e in (self.chain.events.decode(r) for r in result.logs)
                       if e is not None and e.name == "LeaseOpened"), None)
        if opened is None:
            raise ChainError("openLease mined without a LeaseOpened log")
        self.gas[-1]["lease_id"] = int(opened.args["leaseId"])
        rec = await self._adopt_consumer_open(opened, key)
        return self.view(rec)

    async def _adopt_consumer_open(self, ev: ChainEvent, key: str | None = None) -> LeaseRecord:
        a = ev.args
        lid = int(a["leaseId"])
        existing = self.leases.get((lid, L.Role.CONSUMER.value))
        if existing is not None:
            return existing
        if key is None:  # found in the logs after a restart: match it to the open we recorded
            key = self.store.unbound_open(bytes(a["offerHash"]), int(a["gpus"]))
            if key is None:
                raise LeaseNotFound(f"lease {lid} opened by us but no matching open request is stored")
        row = self.store.open_request(key)
        if row is None:
            raise LeaseNotFound(f"open request {key} is not stored")
        provider = a["provider"]
        node_key = self.node_key_lookup(provider) or await self.refresh_node_key(provider) or b"\x00" * 32
        lease_on_chain = await self.escrow.get_lease(lid)
        terms = L.OfferTerms(offer_hash=bytes(a["offerHash"]), provider=provider, provider_node_key=node_key,
                             price_per_gpu_second=int(a["pricePerGpuSecond"]),
                             max_duration=lease_on_chain.max_ends_at - lease_on_chain.started_at)
        spec = row.job_spec
        state, _ = L.transition(None, L.ActionOpenLease(
            terms=terms, consumer=self.address, gpus=row.gpus, deposit=row.deposit,
            domain=self.domain, job_spec_hash=keccak(spec) if spec else None, config=self.lease_config))
        rec = LeaseRecord(state=state, peer=peer_id_of_node_key(node_key))
        rec.state = replace(rec.state, lease_id=lid)
        self.leases[rec.key] = rec
        self.store.bind_open(key, lid)
        await self._apply(rec, L.ContractReceiveLeaseOpened(
            lease_id=lid, offer_hash=bytes(a["offerHash"]), provider=provider, consumer=a["consumer"],
            gpus=int(a["gpus"]), price_per_gpu_second=int(a["pricePerGpuSecond"]), deposit=int(a["deposit"]),
            started_at=int(a["startedAt"]), ends_at=int(a["endsAt"])))
        return rec

    async def _send_job_spec(self, outbox_id: int, rec: LeaseRecord) -> None:
        lid = rec.state.lease_id
        spec = self.store.job_spec(lid)
        if not spec:
            self._done(outbox_id, "job spec not found")
            return
        auth = eip712.sign_digest(self.wallet_key, eip712.digest(
            self.domain.separator, eip712.job_spec_struct_hash(lid, keccak(spec), self.node_pub)))
        msg = seal_job_spec(lid, auth + spec, self.node_key, rec.state.terms.provider_node_key)
        data = encode_message(msg)
        delay = 0.2
        for _ in range(20):  # the provider may not have seen LeaseOpened yet
            try:
                reply = await self.p2p.request(rec.peer, LEASE_PROTOCOL, data, timeout=10.0)
                answer = decode_message(reply) if reply else None
                if isinstance(answer, AckMessage):
                    self._done(outbox_id)
                    return
                detail = answer.message if isinstance(answer, ErrorMessage) else "no answer"
                log.info("job spec not taken yet", extra={"lease_id": lid, "detail": detail})
            except Exception as exc:
                log.info("job spec send failed", extra={"lease_id": lid, "error": repr(exc)[:200]})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 3.0)
        self._done(outbox_id, "provider did not take the job spec")

    async def top_up(self, lease_id: int, amount: int) -> dict[str, Any]:
        rec = self._get(lease_id, L.Role.CONSUMER)
        await self._apply(rec, L.ActionTopUp(amount))
        return self.view(rec)

    async def _top_up(self, outbox_id: int, rec: LeaseRecord, amount: int) -> None:
        lid = rec.state.lease_id
        key = f"topup:{lid}:{outbox_id}"
        try:
            await self.token.ensure_allowance(f"approve:{key}", self.domain.verifying_contract, amount)
            await self.escrow.top_up(key, lid, amount)
            self._done(outbox_id)
        except (TxFailed, TxRace) as exc:
            self._done(outbox_id, exc.error)
            await self._apply(rec, L.ContractReceiveTopUpFailed(lid, amount, exc.error))

    async def close_lease(self, lease_id: int) -> dict[str, Any]:
        rec = self.leases.get((lease_id, L.Role.CONSUMER.value)) or self._get(lease_id, L.Role.PROVIDER)
        rec.state = replace(rec.state, now_ms=max(rec.state.now_ms, _now_ms()))
        await self._apply(rec, L.ActionCloseLease())
        return self.view(rec)

    async def _settle_loop(self) -> None:
        while not self._stop.is_set():
            await self._pause(self.settle_interval)
            if not self._settle_queue:
                continue
            try:  # the contract caps usage by block time: send only checkpoints the chain's clock has reached
                chain_now = int((await self.chain.w3.eth.get_block("latest"))["timestamp"])
            except Exception as exc:
                log.warning("settlement deferred: no block", extra={"error": repr(exc)[:200]})
                continue
            due = [ev for ev in self._settle_queue.values() if ev.signed_cp.checkpoint.timestamp <= chain_now]
            batch = due[:256]
            for ev in batch:
                self._settle_queue.pop(ev.lease_id, None)
            if batch:
                await self._settle(batch)

    async def _settle(self, batch: list[L.ContractSendSettle]) -> None:
        items = [(ev.signed_cp.checkpoint, ev.signed_cp.signature) for ev in batch]
        if len(batch) == 1:
            cp = items[0][0]
            key = f"settle:{cp.lease_id}:{cp.seq}"
            call = self.escrow.settle(key, cp, items[0][1])
        else:
            key = "settle-batch:" + keccak(b"".join(
                cp.lease_id.to_bytes(32, "big") + cp.seq.to_bytes(8, "big") for cp, _ in items)).hex()[:24]
            call = self.escrow.settle_batch(key, items)
        try:
            result = await call
            self.gas.append({"kind": "settle" if len(batch) == 1 else f"settleBatch({len(batch)})",
                             "lease_id": batch[0].lease_id, "gas": result.gas_used})
            # LeaseSettled / SettlementSkipped logs reach the leases through the log poller
        except (TxFailed, TxRace) as exc:
            for ev in batch:
                rec = self.leases.get((ev.lease_id, L.Role.CONSUMER.value))
                if rec is not None:
                    await self._apply(rec, L.ContractReceiveSettleFailed(ev.lease_id, ev.signed_cp.checkpoint.seq,
                                                                         exc.error))
        except ChainError as exc:  # RPC down: put them back, retried next round
            log.warning("settlement deferred", extra={"error": str(exc)[:200]})
            for ev in batch:
                self._settle_queue.setdefault(ev.lease_id, ev)

    # ------------------------------------------------------------------------------------------ provider
    async def _adopt_provider_lease(self, lid: int) -> LeaseRecord:
        existing = self.leases.get((lid, L.Role.PROVIDER.value))
        if existing is not None:
            return existing
        on_chain = await self.escrow.get_lease(lid)
        if on_chain.provider.lower() != self.address.lower():
            raise LeaseNotFound(f"lease {lid} is not ours")
        opened = L.ContractReceiveLeaseOpened(
            lease_id=lid, offer_hash=on_chain.offer_hash, provider=on_chain.provider, consumer=on_chain.consumer,
            gpus=on_chain.gpus, price_per_gpu_second=on_chain.price, deposit=on_chain.deposit,
            started_at=on_chain.started_at, ends_at=on_chain.ends_at)
        terms = L.OfferTerms(offer_hash=on_chain.offer_hash, provider=on_chain.provider,
                             provider_node_key=self.node_pub, price_per_gpu_second=on_chain.price,
                             max_duration=on_chain.max_ends_at - on_chain.started_at)
        state = L.new_provider_lease(opened, terms, self.domain, self.lease_config)
        free = [d.index for d in self.devices if d.index not in self._busy_devices]
        if len(free) < on_chain.gpus:  # oversubscribed (an older offer was still valid on-chain)
            log.error("not enough free GPUs for lease", extra={"lease_id": lid, "gpus": on_chain.gpus,
                                                               "free": len(free)})
        devices = tuple(free[: on_chain.gpus])
        self._busy_devices.update(devices)
        rec = LeaseRecord(state=state, meter=new_meter(lid, on_chain.gpus, on_chain.started_at, on_chain.ends_at),
                          devices=devices)
        async with self._lock:
            if rec.key in self.leases:
                return self.leases[rec.key]
            self.leases[rec.key] = rec
            self._persist(rec, opened, [])
        rec.serving = self._spawn(self._serve(rec))
        self.on_capacity_change(on_chain.offer_hash)
        return rec

    def busy_devices(self) -> set[int]:
        return set(self._busy_devices)

    async def _on_job_spec(self, peer: str, msg: JobSpecMessage) -> bytes:
        lid = msg.lease_id
        try:
            rec = await self._adopt_provider_lease(lid)
        except (LeaseNotFound, NodeError) as exc:
            return self._error(lid, MsgType.JOB_SPEC, ErrorCode.UNKNOWN_LEASE, str(exc))
        if rec.state.status >= L.LeaseStatus.CLOSING:
            return self._error(lid, MsgType.JOB_SPEC, ErrorCode.JOB_SPEC_REJECTED, "lease is closing")
        try:
            sender_key = node_key_of_peer_id(peer)
            plain = open_job_spec(msg, self.node_key, sender_key)
        except (InvalidMessage, ValueError) as exc:
            return self._error(lid, MsgType.JOB_SPEC, ErrorCode.MALFORMED, str(exc))
        auth, spec = plain[:65], plain[65:]
        try:
            signer = eip712.recover(eip712.digest(self.domain.separator,
                                                  eip712.job_spec_struct_hash(lid, keccak(spec), sender_key)), auth)
        except eip712.SignatureError:
            signer = ""
        if signer.lower() != rec.state.consumer.lower():
            return self._error(lid, MsgType.JOB_SPEC, ErrorCode.JOB_SPEC_REJECTED, "not signed by the consumer")
        if rec.job is not None or rec.job_outcome is not None:
            return encode_message(AckMessage(lid, MsgType.JOB_SPEC))  # already running: idempotent
        try:
            req = json.loads(spec)
            job = ExecJob(argv=list(req["argv"]), env=dict(req.get("env", {})),
                          timeout_s=float(req.get("timeout_s", 3600)))
        except Exception as exc:
            return self._error(lid, MsgType.JOB_SPEC, ErrorCode.MALFORMED, f"bad job: {exc}")
        if self.executor is None:
            return self._error(lid, MsgType.JOB_SPEC, ErrorCode.MALFORMED, "this node runs no jobs")
        devices = [d for d in self.devices if d.index in rec.devices]
        try:
            rec.job = await self.executor.start(lid, job, devices)
        except NodeError as exc:
            return self._error(lid, MsgType.JOB_SPEC, ErrorCode.MALFORMED, str(exc))
        rec.peer = peer
        async with self._lock:
            self._persist(rec, None, [])
        log.info("job started", extra={"lease_id": lid, "devices": list(rec.devices)})
        return encode_message(AckMessage(lid, MsgType.JOB_SPEC))

    def _error(self, lid: int, ref: MsgType, code: ErrorCode, message: str) -> bytes:
        return encode_message(ErrorMessage(lid, ref, 0, code, message[:200]))

    def _usage(self, rec: LeaseRecord, busy: bool) -> UsageSummary:
        devices = [d for d in self.devices if d.index in rec.devices]
        simulated = all(d.simulated for d in devices) if devices else True
        readings: list[DeviceUsage] = []
        if self.sampler is not None and devices:
            try:
                for s in self.sampler.sample(devices):
                    readings.append(DeviceUsage(int(s.utilization_pct or 0) if busy else 0,
                                                int(s.memory_used_mib or 0), int(s.power_w or 0)))
            except Exception as exc:
                log.warning("usage sampling failed", extra={"error": repr(exc)[:200]})
        return UsageSummary(len(readings), tuple(readings), simulated)

    async def _serve(self, rec: LeaseRecord) -> None:
        """Provider: one heartbeat per interval (a checkpoint when due) until the lease is closed and proven.

        Metering starts when the consumer's job spec is accepted (the consumer's peer is known). Messages go
        through an ordered, persisted queue and are retried until acked: a lost beat would break the chain.
        """
        lid = rec.state.lease_id
        interval_ms = int(self.checkpoint_interval * 1000)
        while not self._stop.is_set():
            if rec.peer is None and rec.meter is not None and rec.meter.closed_at is None:
                await self._pause(0.2)
                continue
            if rec.final_sent and not rec.outq:
                return
            if not rec.final_sent:
                await self._meter_once(rec, lid, interval_ms)
            await self._flush(rec)
            await self._pause(self.heartbeat_interval)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    async def _meter_once(self, rec: LeaseRecord, lid: int, interval_ms: int) -> None:
        job_running = rec.job is not None and rec.job.running
        if rec.job is not None and not job_running and rec.job_outcome is None:
            rec.job_outcome = await rec.job.wait()
        assert rec.meter is not None
        now = _now_ms()
        sample = MeteringSample(now, rec.meter.gpus if job_running else 0, self._usage(rec, job_running))
        meter, events = provider_tick(rec.meter, sample, self.node_key, self.wallet_key, self.domain, interval_ms)
        if meter.closed_at is not None:  # the lease is closed: prove the rest now, then stop metering
            meter, cp = cut_checkpoint(meter, now, self.wallet_key, self.domain)
            if cp is not None:
                events += [L.StoreCheckpoint(lid, cp, True), SendCheckpoint(lid, cp)]
            rec.final_sent = True
        out: list[bytes] = []
        for ev in events:
            if isinstance(ev, SendHeartbeat):
                out.append(encode_message(HeartbeatMessage(lid, ev.signed)))
            elif isinstance(ev, SendCheckpoint):
                out.append(encode_message(CheckpointMessage(ev.signed_cp)))
        if rec.job_outcome is not None and not rec.result_sent:
            o = rec.job_outcome
            tail = o.log_tail.decode("utf-8", errors="replace")[-4000:]
            out.append(encode_message(JobResultMessage(lid, o.exit_code, tail, o.simulated)))
            rec.result_sent = True
        async with self._lock:
            rec.meter = meter
            rec.outq.extend(out)
            for ev in events:
                if isinstance(ev, L.StoreCheckpoint):
                    self._store_checkpoint(lid, ev.signed_cp, "sent", "")
            self._persist(rec, None, [])  # meter and queue first, then send: a used seq is never signed twice

    async def _flush(self, rec: LeaseRecord) -> None:
        sent = 0
        while rec.outq and rec.peer is not None:
            if not await self._send_to_consumer(rec, rec.outq[0]):
                break
            rec.outq.pop(0)
            sent += 1
        if sent:
            async with self._lock:
                self._persist(rec, None, [])

    async def _send_to_consumer(self, rec: LeaseRecord, data: bytes) -> bool:
        try:
            reply = await self.p2p.request(rec.peer, LEASE_PROTOCOL, data, timeout=10.0)
            answer = decode_message(reply) if reply else None
            return isinstance(answer, AckMessage)
        except Exception as exc:
            log.info("send to consumer failed", extra={"lease_id": rec.state.lease_id, "error": repr(exc)[:200]})
            return False

    async def _withdraw(self) -> None:
        try:
            if await self.escrow.earnings(self.address) > 0:
                r = await self.escrow.withdraw_earnings(f"withdraw:{os.urandom(6).hex()}")
                self.gas.append({"kind": "withdrawEarnings", "lease_id": 0, "gas": r.gas_used})
        except (TxFailed, TxRace, ChainError) as exc:
            log.warning("withdraw failed", extra={"error": str(exc)[:200]})

    # ------------------------------------------------------------------------------------------ incoming
    async def _on_lease_message(self, peer: str, body: bytes) -> bytes | None:
        try:
            msg = decode_message(body)
        except InvalidMessage as exc:
            return self._error(0, MsgType.ACK, ErrorCode.MALFORMED, str(exc))
        if isinstance(msg, JobSpecMessage):
            return await self._on_job_spec(peer, msg)
        if isinstance(msg, AckMessage | ErrorMessage):
            return None
        lid = msg.lease_id
        rec = self.leases.get((lid, L.Role.CONSUMER.value))
        kind = MsgType.HEARTBEAT if isinstance(msg, HeartbeatMessage) else (
            MsgType.CHECKPOINT if isinstance(msg, CheckpointMessage) else MsgType.JOB_RESULT)
        if rec is None:
            return self._error(lid, kind, ErrorCode.UNKNOWN_LEASE, "no such lease here")
        if peer != rec.peer:
            return self._error(lid, kind, ErrorCode.UNKNOWN_LEASE, "sender is not the lease's provider node")
        change = to_change(msg, _now_ms())
        if change is None:
            return None
        await self._apply(rec, change)
        return encode_message(AckMessage(lid, kind))

    async def on_chain_event(self, ev: ChainEvent) -> None:
        a = ev.args
        if "leaseId" not in a:
            return
        lid = int(a["leaseId"])
        me = self.address.lower()
        consumer = str(a.get("consumer", "")).lower()
        provider = str(a.get("provider", "")).lower()
        if ev.name == "LeaseOpened":
            if provider == me:
                await self._adopt_provider_lease(lid)
            if consumer == me:
                with contextlib.suppress(LeaseNotFound):
                    await self._adopt_consumer_open(ev)
            return
        change: Any = None
        if ev.name == "LeaseSettled":
            change = L.ContractReceiveLeaseSettled(lid, int(a["seq"]), int(a["cumulativeGpuSeconds"]),
                                                   int(a["amount"]), int(a["fee"]))
        elif ev.name == "SettlementSkipped":
            change = L.ContractReceiveSettleFailed(lid, int(a["seq"]), "skipped: already settled")
        elif ev.name == "LeaseClosed":
            change = L.ContractReceiveLeaseClosed(lid, int(a["closedAt"]), to_checksum_address(a["closedBy"]))
        elif ev.name == "LeaseFinalized":
            change = L.ContractReceiveLeaseFinalized(lid, int(a["refund"]))
        elif ev.name == "LeaseToppedUp":
            change = L.ContractReceiveTopUp(lid, int(a["amount"]), int(a["deposit"]), int(a["endsAt"]))
        if change is None:
            return
        for role in (L.Role.CONSUMER, L.Role.PROVIDER):
            rec = self.leases.get((lid, role.value))
            if rec is None:
                continue
            if role is L.Role.PROVIDER and rec.meter is not None:
                if isinstance(change, L.ContractReceiveLeaseClosed):
                    rec.meter = update_lease_times(rec.meter, closed_at=change.closed_at)
                    if rec.job is not None and rec.job.running:
                        self._spawn(rec.job.stop())
                elif isinstance(change, L.ContractReceiveTopUp):
                    rec.meter = update_lease_times(rec.meter, ends_at=change.ends_at)
            await self._apply(rec, change)
            if role is L.Role.PROVIDER and isinstance(change, L.ContractReceiveLeaseFinalized):
                self._busy_devices.difference_update(rec.devices)
                self.on_capacity_change(rec.state.terms.offer_hash)
                self._spawn(self._withdraw())

    async def _tick_loop(self) -> None:
        while not self._stop.is_set():
            now = _now_ms()
            for rec in list(self.leases.values()):
                if rec.state.status < L.LeaseStatus.FINALIZED and rec.state.lease_id:
                    try:
                        await self._apply(rec, L.TimerTick(now))
                    except Exception as exc:
                        log.error("lease tick failed", extra={"lease_id": rec.state.lease_id,
                                                              "error": repr(exc)[:300]})
            await self._pause(self.tick_interval)

    # ------------------------------------------------------------------------------------------ views
    def _get(self, lease_id: int, role: L.Role) -> LeaseRecord:
        rec = self.leases.get((lease_id, role.value))
        if rec is None:
            raise LeaseNotFound(f"no {role.value} lease {lease_id} on this node")
        return rec

    def view(self, rec: LeaseRecord) -> dict[str, Any]:
        s = rec.state
        out: dict[str, Any] = {
            "lease_id": s.lease_id, "role": s.role.value, "status": s.status.name, "provider": s.terms.provider,
            "consumer": s.consumer, "gpus": s.gpus, "price_per_gpu_second": str(s.price_per_gpu_second),
            "deposit": str(s.deposit), "paid": str(s.paid), "fees": str(s.fees), "started_at": s.started_at,
            "ends_at": s.ends_at, "closed_at": s.closed_at, "settled_seq": s.settled_seq,
            "settled_gpu_seconds": s.settled_cumulative, "accepted_seq": s.accepted_seq,
            "accepted_gpu_seconds": s.accepted_cumulative, "heartbeats": s.heartbeats_accepted,
            "rejected_checkpoints": s.rejected_total, "close_reason": s.close_reason.value if s.close_reason else None,
            "refund": str(s.refund), "peer": rec.peer,
        }
        if rec.meter is not None:
            out.update({"metered_gpu_seconds": rec.meter.gpu_seconds, "heartbeats_sent": rec.meter.hb_seq,
                        "checkpoints_sent": rec.meter.cp_seq, "devices": list(rec.devices),
                        "job_running": bool(rec.job and rec.job.running)})
        res = self.store.job_result(s.lease_id)
        if res is not None:
            out["job_result"] = {"exit_code": res.exit_code, "log_tail": res.log_tail, "simulated": res.simulated}
        elif rec.job_outcome is not None:
            o = rec.job_outcome
            out["job_result"] = {"exit_code": o.exit_code, "log_tail": o.log_tail.decode(errors="replace")[-4000:],
                                 "simulated": o.simulated}
        return out

    def views(self) -> list[dict[str, Any]]:
        return [self.view(r) for r in sorted(self.leases.values(), key=lambda r: r.key)]

    def lease_detail(self, lease_id: int) -> dict[str, Any] | None:
        recs = [r for (lid, _), r in self.leases.items() if lid == lease_id]
        if not recs:
            return None
        out = self.view(recs[0])
        out["checkpoints"] = [{"seq": r.seq, "gpu_seconds": r.gpu_seconds, "status": r.status, "reason": r.reason}
                              for r in self.store.checkpoints(lease_id)]
        out["notices"] = [n for n in self.notices if n["lease_id"] == lease_id][-50:]
        return out
