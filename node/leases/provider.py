"""Provider driver: adopts leases from ``LeaseOpened`` logs (one adoption per lease at a time), authenticates the
job spec (EIP-712 ``JobSpec`` signed by the lease's consumer wallet), starts and stops the job, and serves the
lease: one meter tick per heartbeat interval, then the outgoing queue flushed in order until acked."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

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
from node.protocol.job_spec import JobSpecError, decode_job_spec
from node.protocol.lease_messages import (
    PROTOCOL_ID,
    AckMessage,
    ErrorCode,
    JobSpecMessage,
    LogMessage,
    MsgType,
    decode_message,
    encode_message,
    open_job_spec,
    utf8_tail,
)
from node.protocol.lease_state import JobReattached
from node.provider.executor import (
    ExecJob,
    Executor,
    InvalidJob,
    JobHandle,
    JobOutcome,
    JobResources,
    ReattachingExecutor,
)
from node.provider.gpus import GpuDevice
from node.provider.log_stream import LogStream, resumed_first_seq
from node.provider.metering import UsageSampler
from node.types import LeaseId

log = logging.getLogger(__name__)

EXIT_UNKNOWN = -1  # the job could not be reaped: no exit status
FAILED_PROVIDER_RESTARTED = "provider_restarted"  # the provider restarted while the job ran and could not take it
# over (its executor's jobs end with the node, or its container was gone): the job was ended


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
        """After a restart: serve a lease that is not over (metering resumes, with the job running when
        :meth:`reattach_jobs` took it over)."""
        if rec.state.provider is not None and rec.state.status < L.LeaseStatus.FINALIZED:
            rec.serving = self.tasks.spawn(self._serve(rec))

    async def reattach_jobs(self) -> list[int]:
        """After a restart, before leases are served: take over the jobs that outlived the node. A lease still open
        whose job was running gets its job back from the executor (container executor: a container still
        running is followed again, one that exited meanwhile gives its real outcome); its output streams to the
        consumer again, its end reaches the consumer as usual. Then every other container a previous run left
        behind is removed. Executors whose jobs end with the node (process, simulated) take nothing over: those
        jobs are ended by :meth:`end_lost_jobs`. Returns the leases whose jobs were taken over."""
        executor = self.executor
        if not isinstance(executor, ReattachingExecutor):
            return []
        taken: list[int] = []
        for rec in list(self.dispatcher):
            side = rec.state.provider
            if (side is None or rec.job is not None or side.outcome is not None or side.job is not L.JobPhase.RUNNING
                    or rec.state.status is not L.LeaseStatus.OPEN or side.peer is None):
                continue
            started = self.dispatcher.store.last_event(rec.lease_id, L.Role.PROVIDER.value, L.StartJob.__name__)
            if not isinstance(started, L.StartJob):
                continue
            stream = LogStream(self._log_sender(rec.lease_id, side.peer), first_seq=resumed_first_seq(self.clock()))
            try:
                job = exec_job(started.job, consumer=rec.state.consumer)
                devices = [d for d in self.devices if d.index in side.devices]
                handle = await executor.reattach(LeaseId(rec.lease_id), job, devices, on_output=stream.feed)
            except Exception as exc:  # the runtime failed: the job is treated as lost, as before
                log.warning("cannot take over a job after a restart", extra={"lease_id": rec.lease_id,
                                                                             "error": repr(exc)[:200]})
                continue
            if handle is None:
                continue
            stream.start()
            rec.job = handle
            await self.dispatcher.apply(rec, JobReattached())
            self.tasks.spawn(self._watch(rec, handle, stream))
            log.info("job taken over after a restart", extra={"lease_id": rec.lease_id})
            taken.append(rec.lease_id)
        try:
            await executor.cleanup_orphans()
        except Exception as exc:
            log.error("cannot remove the jobs a previous run left behind", extra={"error": repr(exc)[:200]})
        return taken

    async def end_lost_jobs(self) -> list[int]:
        """After a restart: a job that was starting or running and was not taken over (:meth:`reattach_jobs`) did
        not survive (its container, if any, was removed as an orphan); its consumer is told with a job result whose
        failure says so. Returns the leases."""
        ended = []
        for rec in list(self.dispatcher):
            side = rec.state.provider
            if side is None or rec.job is not None or side.outcome is not None:
                continue
            if side.job in (L.JobPhase.STARTING, L.JobPhase.RUNNING):
                log.warning("job ended by a provider restart", extra={"lease_id": rec.lease_id})
                await self.dispatcher.apply(rec, L.JobEnded(L.JobEnd(
                    EXIT_UNKNOWN, "the provider restarted while the job ran; the job was ended", _simulated(
                        self.devices, side.devices), FAILED_PROVIDER_RESTARTED)))
                ended.append(rec.lease_id)
        return ended

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
        if side.job is L.JobPhase.NONE:  # the executor refused it (beyond a cap, unsafe executor, bad image)
            return error_reply(lid, MsgType.JOB_SPEC, ErrorCode.JOB_SPEC_REJECTED, side.job_error)
        log.info("job started", extra={"lease_id": lid, "devices": list(side.devices)})
        return encode_message(AckMessage(lid, MsgType.JOB_SPEC))

    async def _start_job(self, rec: LeaseRecord, ev: L.StartJob, outbox_id: int) -> None:
        side = rec.state.provider
        if side is None or side.job is not L.JobPhase.STARTING or self.executor is None:
            self.runner.done(outbox_id, "no job to start")  # replayed after a restart: the job did not survive
            return
        devices = [d for d in self.devices if d.index in ev.devices]
        stream = LogStream(self._log_sender(ev.lease_id, ev.peer))
        try:
            job = exec_job(ev.job, consumer=rec.state.consumer)
            handle = await self.executor.start(LeaseId(ev.lease_id), job, devices, on_output=stream.feed)
        except NodeError as exc:
            await self.dispatcher.apply(rec, L.JobStartFailed(str(exc)))
            self.runner.done(outbox_id, str(exc))
            return
        stream.start()
        rec.job = handle
        await self.dispatcher.apply(rec, L.JobStarted(ev.peer))
        self.runner.done(outbox_id)
        self.tasks.spawn(self._watch(rec, handle, stream))

    def _log_sender(self, lid: int, peer: str) -> Callable[[int, str, int], Awaitable[bool]]:
        return lambda seq, text, dropped: self._send_log(lid, peer, seq, text, dropped)

    async def _send_log(self, lid: int, peer: str, seq: int, text: str, dropped: int) -> bool:
        reply = await self.transport.request(peer, PROTOCOL_ID, encode_message(LogMessage(lid, seq, text, dropped)),
                                             10.0)
        return isinstance(decode_message(reply) if reply else None, AckMessage)

    async def _watch(self, rec: LeaseRecord, handle: JobHandle, stream: LogStream | None = None) -> None:
        outcome = await handle.wait()
        if stream is not None:
            await stream.close()
        await self.dispatcher.apply(rec, L.JobEnded(job_end(outcome)))

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
    """The job of a signed spec (version 1 or 2), checked the way the executor will take it."""
    try:
        s = decode_job_spec(spec)
    except JobSpecError as exc:
        raise InvalidJob(str(exc)) from exc
    job = L.JobRequest(argv=s.argv, env=s.env, timeout_s=s.timeout_s, image=s.image, resources=s.resources,
                       ports=s.ports)
    exec_job(job)  # raises InvalidJob
    return job


def exec_job(job: L.JobRequest, consumer: str | None = None) -> ExecJob:
    """What the executor runs for a job request; ``consumer``: the lease's consumer (a remote job)."""
    memory, milli_cpus, shm, scratch = job.resources
    resources = JobResources(memory_bytes=memory or None, cpus=milli_cpus / 1000 if milli_cpus else None,
                             shm_bytes=shm or None, scratch_bytes=scratch or None)
    return ExecJob(argv=job.argv, env=dict(job.env), timeout_s=float(job.timeout_s), image=job.image or None,
                   resources=resources, ports=job.ports, consumer=consumer)


def job_end(outcome: JobOutcome) -> L.JobEnd:
    """How a job ended, as its consumer is told: the failure is the executor's (the job never ran), else why it
    was killed (oom, timeout, stopped), else "error" when the runtime failed under it."""
    exit_code = outcome.exit_code if outcome.exit_code is not None else EXIT_UNKNOWN
    failure = outcome.failure or outcome.killed_reason or ("error" if outcome.error else "")
    tail = outcome.log_tail
    if outcome.error and failure:
        tail = outcome.error.encode("utf-8", "replace") + b"\n" + tail
    return L.JobEnd(exit_code, utf8_tail(tail), outcome.simulated, failure, outcome.image_digest or "")


def _simulated(devices: tuple[GpuDevice, ...], indices: tuple[int, ...]) -> bool:
    chosen = [d for d in devices if d.index in indices]
    return all(d.simulated for d in chosen) if chosen else True
