"""Provider driver: adopts leases from ``LeaseOpened`` logs (one adoption per lease at a time), authenticates the
job spec (EIP-712 ``JobSpec`` signed by the lease's consumer wallet), starts and stops the job, and serves the
lease: one meter tick per heartbeat interval, then the outgoing queue flushed in order until acked."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import nacl.signing
from eth_utils import keccak

from node.crypto import eip712
from node.crypto.nodekey import node_key_of_peer_id
from node.errors import InvalidMessage, NodeError
from node.leases.consumer import error_reply
from node.leases.dispatcher import Dispatcher
from node.leases.effects import EffectRunner
from node.leases.ports import Clock, PeerTransport
from node.leases.records import LeaseNotFound, LeaseRecord
from node.leases.tasks import SingleFlight
from node.protocol import lease as L
from node.protocol.heartbeat import DeviceUsage, UsageSummary
from node.protocol.lease_messages import (
    PROTOCOL_ID,
    AckMessage,
    ErrorCode,
    JobSpecMessage,
    MsgType,
    decode_message,
    encode_message,
    open_job_spec,
    utf8_tail,
)
from node.provider.executor import ExecJob, Executor, JobHandle
from node.provider.gpus import GpuDevice
from node.provider.metering import UsageSampler
from node.types import LeaseId

log = logging.getLogger(__name__)

EXIT_UNKNOWN = -1  # the job could not be reaped: no exit status


class ProviderDriver:
    def __init__(self, dispatcher: Dispatcher, runner: EffectRunner, *, transport: PeerTransport,
                 node_key: nacl.signing.SigningKey, address: str, domain: eip712.Domain, config: L.LeaseConfig,
                 devices: tuple[GpuDevice, ...], executor: Executor | None, sampler: UsageSampler | None,
                 heartbeat_interval: float, checkpoint_interval: float, clock: Clock,
                 on_capacity_change: Callable[[bytes], None]) -> None:
        self.dispatcher = dispatcher
        self.runner = runner
        self.tasks = runner.tasks
        self.transport = transport
        self.node_key = node_key
        self.node_pub = bytes(node_key.verify_key)
        self.address = address
        self.domain = domain
        self.config = config
        self.devices = devices
        self.executor = executor
        self.sampler = sampler
        self.heartbeat_interval = heartbeat_interval
        self.checkpoint_interval_ms = int(checkpoint_interval * 1000)
        self.clock = clock
        self.on_capacity_change = on_capacity_change
        self._adopting: SingleFlight[int, LeaseRecord] = SingleFlight()
        runner.on(L.StartJob, self._start_job)
        runner.on(L.StopJob, self._stop_job)

    def busy_devices(self) -> set[int]:
        """GPUs held by a lease that is not finalized yet."""
        return {d for rec in self.dispatcher if (side := rec.state.provider) is not None
                and rec.state.status < L.LeaseStatus.FINALIZED for d in side.devices}

    def resume(self, rec: LeaseRecord) -> None:
        """After a restart: serve a lease that is not over (metering resumes; the job itself did not survive)."""
        if rec.state.provider is not None and rec.state.status < L.LeaseStatus.FINALIZED:
            rec.serving = self.tasks.spawn(self._serve(rec))

    # ------------------------------------------------------------------------------------------ adoption
    async def adopt(self, lease_id: int) -> LeaseRecord:
        """Serve a lease of ours. The chain event and the consumer's job spec may both ask at once: one adoption
        per lease runs, the other caller waits for it."""
        existing = self.dispatcher.get(lease_id, L.Role.PROVIDER)
        if existing is not None:
            return existing
        return await self._adopting.run(lease_id, lambda: self._adopt(lease_id))

    async def _adopt(self, lid: int) -> LeaseRecord:
        existing = self.dispatcher.get(lid, L.Role.PROVIDER)
        if existing is not None:
            return existing
        on_chain = await self.runner.escrow.get_lease(lid)
        if on_chain.provider.lower() != self.address.lower():
            raise LeaseNotFound(f"lease {lid} is not ours")
        opened = L.ContractReceiveLeaseOpened(
            lease_id=lid, offer_hash=on_chain.offer_hash, provider=on_chain.provider, consumer=on_chain.consumer,
            gpus=on_chain.gpus, price_per_gpu_second=on_chain.price, deposit=on_chain.deposit,
            started_at=on_chain.started_at, ends_at=on_chain.ends_at)
        terms = L.OfferTerms(offer_hash=on_chain.offer_hash, provider=on_chain.provider,
                             provider_node_key=self.node_pub, price_per_gpu_second=on_chain.price,
                             max_duration=on_chain.max_ends_at - on_chain.started_at)

        def make() -> L.LeaseState:  # runs under the dispatcher's lock: no other adoption takes the same GPUs
            busy = self.busy_devices()
            free = [d.index for d in self.devices if d.index not in busy]
            if len(free) < on_chain.gpus:  # oversubscribed (an older offer was still valid on-chain)
                log.error("not enough free GPUs for lease", extra={"lease_id": lid, "gpus": on_chain.gpus,
                                                                   "free": len(free)})
            return L.new_provider_lease(opened, terms, self.domain, self.config, tuple(free[: on_chain.gpus]))

        rec, created = await self.dispatcher.add((lid, L.Role.PROVIDER.value), make, opened)
        if created:
            rec.serving = self.tasks.spawn(self._serve(rec))
            self.on_capacity_change(on_chain.offer_hash)
        return rec

    # ------------------------------------------------------------------------------------------ job
    async def on_job_spec(self, peer: str, msg: JobSpecMessage) -> bytes:
        lid = msg.lease_id
        try:
            rec = await self.adopt(lid)
        except (LeaseNotFound, NodeError) as exc:
            return error_reply(lid, MsgType.JOB_SPEC, ErrorCode.UNKNOWN_LEASE, str(exc))
        if rec.state.status >= L.LeaseStatus.CLOSING:
            return error_reply(lid, MsgType.JOB_SPEC, ErrorCode.JOB_SPEC_REJECTED, "lease is closing")
        try:
            sender_key = node_key_of_peer_id(peer)
            plain = open_job_spec(msg, self.node_key, sender_key)
        except (InvalidMessage, ValueError) as exc:
            return error_reply(lid, MsgType.JOB_SPEC, ErrorCode.MALFORMED, str(exc))
        auth, spec = plain[:65], plain[65:]
        try:
            signer = eip712.recover(eip712.digest(self.domain.separator,
                                                  eip712.job_spec_struct_hash(lid, keccak(spec), sender_key)), auth)
        except eip712.SignatureError:
            signer = ""
        if signer.lower() != rec.state.consumer.lower():
            return error_reply(lid, MsgType.JOB_SPEC, ErrorCode.JOB_SPEC_REJECTED, "not signed by the consumer")
        side = rec.state.provider
        assert side is not None
        if side.job is not L.JobPhase.NONE:
            return encode_message(AckMessage(lid, MsgType.JOB_SPEC))  # already started: idempotent
        try:
            job = _job_request(spec)
        except Exception as exc:
            return error_reply(lid, MsgType.JOB_SPEC, ErrorCode.MALFORMED, f"bad job: {exc}")
        if self.executor is None:
            return error_reply(lid, MsgType.JOB_SPEC, ErrorCode.MALFORMED, "this node runs no jobs")
        await self.dispatcher.apply(rec, L.ReceiveJobSpec(peer, job))  # StartJob runs before this returns
        side = rec.state.provider
        assert side is not None
        if side.job is L.JobPhase.NONE:
            return error_reply(lid, MsgType.JOB_SPEC, ErrorCode.MALFORMED, side.job_error)
        log.info("job started", extra={"lease_id": lid, "devices": list(side.devices)})
        return encode_message(AckMessage(lid, MsgType.JOB_SPEC))

    async def _start_job(self, rec: LeaseRecord, ev: L.StartJob, outbox_id: int) -> None:
        side = rec.state.provider
        if side is None or side.job is not L.JobPhase.STARTING or self.executor is None:
            self.runner.done(outbox_id, "no job to start")  # replayed after a restart: the job did not survive
            return
        devices = [d for d in self.devices if d.index in ev.devices]
        try:
            job = ExecJob(argv=ev.job.argv, env=dict(ev.job.env), timeout_s=float(ev.job.timeout_s))
            handle = await self.executor.start(LeaseId(ev.lease_id), job, devices)
        except NodeError as exc:
            await self.dispatcher.apply(rec, L.JobStartFailed(str(exc)))
            self.runner.done(outbox_id, str(exc))
            return
        rec.job = handle
        await self.dispatcher.apply(rec, L.JobStarted(ev.peer))
        self.runner.done(outbox_id)
        self.tasks.spawn(self._watch(rec, handle))

    async def _watch(self, rec: LeaseRecord, handle: JobHandle) -> None:
        outcome = await handle.wait()
        exit_code = outcome.exit_code if outcome.exit_code is not None else EXIT_UNKNOWN
        await self.dispatcher.apply(rec, L.JobEnded(L.JobEnd(exit_code, utf8_tail(outcome.log_tail),
                                                             outcome.simulated)))

    async def _stop_job(self, rec: LeaseRecord, ev: L.StopJob, outbox_id: int) -> None:
        if rec.job is not None and rec.job.running:
            self.tasks.spawn(rec.job.stop())
        self.runner.done(outbox_id)

    # ------------------------------------------------------------------------------------------ serving
    async def _serve(self, rec: LeaseRecord) -> None:
        """One heartbeat per interval (a checkpoint when due) until the lease is closed and proven.

        Metering starts when the consumer's job spec is accepted (the consumer's peer is known). Messages go
        through the lease's ordered, persisted queue and are retried until acked: a lost beat would break the chain.
        """
        while not self.tasks.stopping.is_set():
            side = rec.state.provider
            assert side is not None
            if side.peer is None and side.meter.closed_at is None:
                await self.tasks.pause(0.2)
                continue
            if not await self.step(rec):
                return
            await self.tasks.pause(self.heartbeat_interval)

    async def step(self, rec: LeaseRecord) -> bool:
        """One heartbeat interval of a served lease: a meter tick (until the final checkpoint is cut), then the
        queue flushed. ``False`` once there is nothing left to do (closed, proven and every message acked)."""
        side = rec.state.provider
        assert side is not None
        if side.final_sent and not side.outq:
            return False
        if not side.final_sent:
            running = rec.job_running
            await self.dispatcher.apply(rec, L.ProviderTick(self.clock(), running, self._usage(rec, running),
                                                            self.checkpoint_interval_ms))
        await self._flush(rec)
        return True

    async def _flush(self, rec: LeaseRecord) -> None:
        while (side := rec.state.provider) is not None and side.outq and side.peer is not None:
            if not await self._deliver(rec.lease_id, side.peer, side.outq[0]):
                return
            await self.dispatcher.apply(rec, L.ReceiveAck(1))

    async def _deliver(self, lid: int, peer: str, data: bytes) -> bool:
        try:
            reply = await self.transport.request(peer, PROTOCOL_ID, data, 10.0)
            return isinstance(decode_message(reply) if reply else None, AckMessage)
        except Exception as exc:
            log.info("send to consumer failed", extra={"lease_id": lid, "error": repr(exc)[:200]})
            return False

    def _usage(self, rec: LeaseRecord, busy: bool) -> UsageSummary:
        side = rec.state.provider
        devices = [d for d in self.devices if side is not None and d.index in side.devices]
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


def _job_request(spec: bytes) -> L.JobRequest:
    """The job of a signed spec, checked the way the executor will take it."""
    req = json.loads(spec)
    job = L.JobRequest(argv=tuple(req["argv"]), env=tuple(sorted(dict(req.get("env", {})).items())),
                       timeout_s=int(req.get("timeout_s", 3600)))
    ExecJob(argv=job.argv, env=dict(job.env), timeout_s=float(job.timeout_s))  # raises InvalidJob
    return job
