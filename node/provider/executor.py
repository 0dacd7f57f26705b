"""Job executors: run a lease's job on the provider and report how it ended.

The lease layer maps its job spec onto :class:`ExecJob` and calls :meth:`Executor.start` with the leased
devices; the returned :class:`JobHandle` says when the job ends (:class:`JobOutcome`) and can stop it.

* :class:`ProcessExecutor` runs ``argv`` (never through a shell) as a child process:

  - **working directory**: a fresh directory ``<base_dir>/lease-<id>-<random>`` (mode 0700) per job, also
    ``HOME``; ``TMPDIR`` is its ``tmp/`` subdirectory. It is left in place for the caller to collect and remove.
  - **environment**: built from scratch, nothing of the node's own environment leaks (keys, RPC tokens).
    The job gets ``PATH`` (configured, not inherited), ``HOME``, ``TMPDIR``, ``LANG=C.UTF-8`` (the job may
    override ``LANG``/``LC_*``), ``CUDA_VISIBLE_DEVICES`` (UUIDs of the leased real GPUs, indices of simulated
    ones), ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, plus the job's own entries. The job may not set: the variables the
    executor sets, other GPU-selection variables (``NVIDIA_VISIBLE_DEVICES``, ``HIP_/ROCR_VISIBLE_DEVICES``, ...),
    dynamic-loader variables (``LD_*``, ``DYLD_*``; ``LD_LIBRARY_PATH`` is allowed because CUDA software needs
    it) and the node's own ``GPUNET_*`` namespace; such a job is refused with :class:`InvalidJob`.
    ``PYTHONPATH`` and the like are allowed: they only change how the job's own code loads, which the job
    controls anyway.
  - **limits** (``resource.setrlimit`` in the child before exec, see :class:`ResourceLimits`): CPU seconds,
    address space, open files, file size; core dumps are always off. Limits are clamped to the node's own
    hard limits (an unprivileged process cannot raise them).
  - **process group**: the job runs in its own session, so stopping it (timeout, :meth:`JobHandle.stop`) sends
    SIGTERM to the whole group, then SIGKILL after a grace period. When the main process exits, whatever it
    left running in its group is killed.
  - **output**: stdout and stderr merged into one pipe; the last ``max_output_bytes`` are kept as the log
    tail, and every chunk can be streamed to an async callback.
  - **bounded**: ``wait()`` returns within ``timeout_s + term_grace_s + kill_wait_s + drain_s`` (+ one
    callback timeout) of start, whatever the job does.

  Not enforced here (they need cgroups, containers or a separate user): total memory of all the job's
  processes (``RLIMIT_AS`` is per process and must stay unset for CUDA jobs, whose runtime reserves a large
  virtual address space), disk quota (``RLIMIT_FSIZE`` is per file), number of processes (``RLIMIT_NPROC`` counts
  every process of the node's user, not of the job), network access, GPU isolation (``CUDA_VISIBLE_DEVICES`` is
  a convention, not a boundary: the job can still open ``/dev/nvidia*`` directly), and processes that leave the
  job's session with ``setsid`` (they survive a stop; their share of the output pipe is abandoned after
  ``drain_s``).

  ``preexec_fn`` is documented as unsafe when the parent has threads (the child could deadlock on a lock held
  at fork time). The function used here only calls ``resource.setrlimit`` with values prepared beforehand:
  it takes no lock and imports nothing.

  Remote consumers: a job whose ``consumer`` is set (a lease opened by someone other than the operator) is
  refused unless the executor was built with ``allow_unsafe_process_executor=True``: nothing above stops such a
  job from reading the node's files. Remote consumers' jobs belong in the container executor
  (:mod:`node.provider.container`).

* :class:`SimulatedExecutor` runs nothing: it reports a synthetic outcome (``simulated=True``) after a
  configured duration, with an injectable sleep and clock for tests.

Only the container executor can take over a job a previous run of the node started
(:class:`ReattachingExecutor`); the jobs of the other two end with the node.

Errors: :meth:`Executor.start` raises :class:`InvalidJob` (recoverable, a ``ValueError``) for a job it refuses
before doing anything. Everything that happens once the job is accepted, including a command that does not
exist, is reported in the :class:`JobOutcome`, never raised.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import os
import re
import resource
import shlex
import signal
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Protocol, runtime_checkable

from node.errors import RecoverableError
from node.provider.gpus import GpuDevice
from node.types import LeaseId

log = logging.getLogger(__name__)

OutputCallback = Callable[[bytes], Awaitable[None]]
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

KILLED_TIMEOUT = "timeout"
KILLED_STOPPED = "stopped"
KILLED_OOM = "oom"  # the kernel's OOM killer ended a process of the job (container executor)
FAILED_IMAGE_NOT_ALLOWED = "image_not_allowed"  # JobOutcome.failure values: the job never ran
FAILED_IMAGE_PULL = "image_pull_failed"
FAILED_START = "start_failed"
EXIT_NOT_FOUND = 127  # shell conventions for "command not found" / "found but cannot run"
EXIT_CANNOT_RUN = 126

MAX_OUTPUT_BYTES = 16 * 1024 * 1024
MAX_ENV_BYTES = 128 * 1024
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
_READ_CHUNK = 64 * 1024
_ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SET_BY_EXECUTOR = frozenset({"PATH", "HOME", "TMPDIR", "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER"})
_GPU_SELECTION = frozenset(
    {
        "NVIDIA_VISIBLE_DEVICES",
        "NVIDIA_DRIVER_CAPABILITIES",
        "HIP_VISIBLE_DEVICES",
        "ROCR_VISIBLE_DEVICES",
        "GPU_DEVICE_ORDINAL",
        "ZE_AFFINITY_MASK",
    }
)
_DENIED_PREFIXES = ("LD_", "DYLD_", "GPUNET_")
_ALLOWED_DESPITE_PREFIX = frozenset({"LD_LIBRARY_PATH"})


class InvalidJob(RecoverableError, ValueError):
    """The executor refuses this job (malformed spec, forbidden environment entry, bad lease id)."""


class UnsafeExecutorRefused(InvalidJob):
    """A remote consumer's job on the process executor, which the operator has not opted into."""


@dataclass(frozen=True, slots=True)
class JobResources:
    """What a job asks for; ``None`` takes the provider's default. Checked against the provider's caps by the
    container executor (the process executor ignores them)."""

    memory_bytes: int | None = None
    cpus: float | None = None
    shm_bytes: int | None = None
    scratch_bytes: int | None = None

    def __post_init__(self) -> None:
        for name in ("memory_bytes", "shm_bytes", "scratch_bytes"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise InvalidJob(f"resources.{name} must be a positive integer, got {value!r}")
        cpus = self.cpus
        if cpus is not None and (
            isinstance(cpus, bool) or not isinstance(cpus, int | float) or not math.isfinite(cpus) or cpus <= 0
        ):
            raise InvalidJob(f"resources.cpus must be a positive number, got {cpus!r}")


_IMAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,511}$")


@dataclass(frozen=True, slots=True)
class ExecJob:
    """What to run. ``argv`` is stored as a tuple and ``env`` as a read-only mapping; validated on creation.

    ``image`` (an OCI reference), ``resources`` and ``ports`` are for the container executor; ``ports`` are
    accepted and not yet published. ``consumer`` is the lease's consumer when it is not the operator (``None``:
    the operator's own job, demos, tests).
    """

    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = 3600.0
    max_output_bytes: int = 64 * 1024
    image: str | None = None
    resources: JobResources = field(default_factory=JobResources)
    ports: Sequence[int] = ()
    consumer: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.argv, str | bytes):
            raise InvalidJob("argv must be a list of strings, not one string")
        argv = tuple(self.argv)
        if not argv or not all(isinstance(a, str) and "\0" not in a for a in argv) or not argv[0]:
            raise InvalidJob("argv must be a non-empty list of strings without NUL bytes")
        env = dict(self.env)
        for key, value in env.items():
            if not isinstance(key, str) or not _ENV_KEY_RE.match(key):
                raise InvalidJob(f"env key {key!r} is not a valid variable name")
            if not isinstance(value, str) or "\0" in value:
                raise InvalidJob(f"env value of {key} must be a string without NUL bytes")
        if sum(len(k) + len(v) + 2 for k, v in env.items()) > MAX_ENV_BYTES:
            raise InvalidJob(f"env is larger than {MAX_ENV_BYTES} bytes")
        timeout = self.timeout_s
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not math.isfinite(timeout)
            or timeout <= 0
        ):
            raise InvalidJob(f"timeout_s must be a positive number of seconds, got {self.timeout_s!r}")
        if not isinstance(self.max_output_bytes, int) or not 0 < self.max_output_bytes <= MAX_OUTPUT_BYTES:
            raise InvalidJob(f"max_output_bytes must be in 1..{MAX_OUTPUT_BYTES}, got {self.max_output_bytes!r}")
        if self.image is not None and (not isinstance(self.image, str) or not _IMAGE_RE.match(self.image)):
            raise InvalidJob(f"image must be an OCI reference, got {self.image!r}")
        if not isinstance(self.resources, JobResources):
            raise InvalidJob("resources must be a JobResources")
        ports = tuple(self.ports)
        if not all(isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536 for p in ports):
            raise InvalidJob(f"ports must be TCP port numbers, got {self.ports!r}")
        object.__setattr__(self, "argv", argv)
        object.__setattr__(self, "env", MappingProxyType(env))
        object.__setattr__(self, "ports", ports)


@dataclass(frozen=True, slots=True)
class JobOutcome:
    """How a job ended.

    ``exit_code``: the process's exit status; negative ``-N`` when it died of signal ``N``; 127/126 when it
    could not be started (with ``error`` set); ``None`` if it could not even be reaped after SIGKILL.
    ``killed_reason``: ``"timeout"`` or ``"stopped"`` when the executor ended it, ``"oom"`` when the kernel's
    OOM killer did, else ``None``.
    ``output_bytes``: everything the job wrote; more than ``len(log_tail)`` means the tail was truncated.
    ``failure``: why the job never ran (``"image_not_allowed"``, ``"image_pull_failed"``, ``"start_failed"``;
    ``error`` says more). ``image_digest``: the image the container executor actually ran.
    """

    exit_code: int | None
    log_tail: bytes
    duration_s: float
    simulated: bool
    killed_reason: str | None = None
    error: str | None = None
    output_bytes: int = 0
    failure: str | None = None
    image_digest: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and self.killed_reason is None and self.error is None


class JobHandle(Protocol):
    @property
    def running(self) -> bool:
        """True until the outcome is known."""
        ...

    async def wait(self) -> JobOutcome:
        """The outcome; bounded by the job's timeout plus the executor's grace periods. Safe to cancel."""
        ...

    async def stop(self) -> JobOutcome:
        """Stop the job (no-op once it has ended) and return its outcome."""
        ...


class Executor(Protocol):
    async def start(
        self,
        lease_id: LeaseId,
        job: ExecJob,
        devices: Sequence[GpuDevice],
        *,
        on_output: OutputCallback | None = None,
    ) -> JobHandle: ...


@runtime_checkable
class ReattachingExecutor(Executor, Protocol):
    """An executor whose jobs can outlive the node (the container executor): at start the node takes over the
    jobs of the leases it still serves (:meth:`reattach`), then removes what else a previous run left behind
    (:meth:`cleanup_orphans`). The process and simulated executors are not: their jobs end with the node, and a
    restarted node reports those jobs as ended by the restart."""

    async def reattach(
        self,
        lease_id: LeaseId,
        job: ExecJob,
        devices: Sequence[GpuDevice] = (),
        *,
        on_output: OutputCallback | None = None,
    ) -> JobHandle | None:
        """The job of ``lease_id`` a previous run started, followed from now on; ``None`` when there is none."""
        ...

    async def cleanup_orphans(self) -> Sequence[object]:
        """Remove the jobs a previous run left behind that were not re-attached."""
        ...


@dataclass(frozen=True, slots=True)
class ResourceLimits:
    """Per-process limits applied to the job's main process (and inherited by its children).

    ``None`` leaves a limit as the node has it. ``cpu_seconds``: SIGXCPU at the limit, SIGKILL a few seconds
    later. ``address_space_bytes``: allocations beyond it fail (Python raises ``MemoryError``); leave unset for
    CUDA jobs. ``file_size_bytes``: writing a larger file kills the job with SIGXFSZ. Core dumps are always off.
    """

    cpu_seconds: int | None = None
    address_space_bytes: int | None = None
    open_files: int | None = 4096
    file_size_bytes: int | None = 64 * 1024**3

    def plan(self) -> tuple[tuple[int, int, int], ...]:
        """``(resource, soft, hard)`` triples, clamped to the calling process's hard limits."""
        wanted: list[tuple[int, int, int]] = [(resource.RLIMIT_CORE, 0, 0)]
        if self.cpu_seconds is not None:
            wanted.append((resource.RLIMIT_CPU, self.cpu_seconds, self.cpu_seconds + 5))
        if self.address_space_bytes is not None:
            wanted.append((resource.RLIMIT_AS, self.address_space_bytes, self.address_space_bytes))
        if self.open_files is not None:
            wanted.append((resource.RLIMIT_NOFILE, self.open_files, self.open_files))
        if self.file_size_bytes is not None:
            wanted.append((resource.RLIMIT_FSIZE, self.file_size_bytes, self.file_size_bytes))
        plan = []
        for res, soft, hard in wanted:
            if soft < 0 or hard < 0:
                raise ValueError(f"resource limits must be >= 0, got {self}")
            _, current_hard = resource.getrlimit(res)
            if current_hard != resource.RLIM_INFINITY:
                hard = min(hard, current_hard)
            plan.append((res, min(soft, hard), hard))
        return tuple(plan)


def check_job_env(env: Mapping[str, str]) -> None:
    """Raise :class:`InvalidJob` naming every entry the job may not set."""
    denied = sorted(
        key
        for key in env
        if key in _SET_BY_EXECUTOR
        or key in _GPU_SELECTION
        or (key.startswith(_DENIED_PREFIXES) and key not in _ALLOWED_DESPITE_PREFIX)
    )
    if denied:
        raise InvalidJob(f"job env may not set {', '.join(denied)}")


def visible_devices(devices: Sequence[GpuDevice]) -> str:
    """``CUDA_VISIBLE_DEVICES`` value: UUIDs for real GPUs (stable across reorderings), indices if simulated."""
    return ",".join(str(d.index) if d.simulated else d.uuid for d in devices)


def job_environment(
    job: ExecJob, devices: Sequence[GpuDevice], workdir: Path, *, path: str = DEFAULT_PATH
) -> dict[str, str]:
    """The complete environment of the job's process (see the module docstring)."""
    check_job_env(job.env)
    env = {"LANG": "C.UTF-8", **job.env}
    env.update(
        PATH=path,
        HOME=str(workdir),
        TMPDIR=str(workdir / "tmp"),
        CUDA_VISIBLE_DEVICES=visible_devices(devices),
        CUDA_DEVICE_ORDER="PCI_BUS_ID",
    )
    return env


def _check_lease_id(lease_id: LeaseId) -> None:
    if not isinstance(lease_id, int) or isinstance(lease_id, bool) or lease_id < 0:
        raise InvalidJob(f"lease id must be a non-negative int, got {lease_id!r}")


class _OutputTail:
    """Keeps the last ``cap`` bytes of a stream and forwards chunks to an optional callback."""

    def __init__(self, cap: int, on_output: OutputCallback | None, callback_timeout_s: float) -> None:
        self._cap = cap
        self._buf = bytearray()
        self.total = 0
        self._on_output = on_output
        self._callback_timeout_s = callback_timeout_s

    def tail(self) -> bytes:
        return bytes(self._buf)

    async def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        self._buf += chunk[-self._cap :]
        if len(self._buf) > self._cap:
            del self._buf[: len(self._buf) - self._cap]
        if self._on_output is not None:
            try:
                await asyncio.wait_for(self._on_output(chunk), self._callback_timeout_s)
            except Exception as exc:  # a broken or slow listener must not stall or kill the job
                log.warning("job output callback failed, no more chunks sent to it", extra={"reason": repr(exc)})
                self._on_output = None


@dataclass(frozen=True, slots=True)
class _Timing:
    term_grace_s: float
    kill_wait_s: float
    drain_s: float
    callback_timeout_s: float


class ProcessExecutor:
    """Runs jobs as local processes (see the module docstring for what is and is not confined)."""

    def __init__(
        self,
        base_dir: Path | str,
        *,
        limits: ResourceLimits | None = None,
        path: str = DEFAULT_PATH,
        term_grace_s: float = 5.0,
        kill_wait_s: float = 5.0,
        drain_s: float = 2.0,
        callback_timeout_s: float = 5.0,
        clock: Clock = time.monotonic,
        allow_unsafe_process_executor: bool = False,
    ) -> None:
        self._allow_remote = allow_unsafe_process_executor
        self._base_dir = Path(base_dir)
        self._limits = limits if limits is not None else ResourceLimits()
        self._rlimits = self._limits.plan()
        self._path = path
        self._timing = _Timing(term_grace_s, kill_wait_s, drain_s, callback_timeout_s)
        self._clock = clock

    async def start(
        self,
        lease_id: LeaseId,
        job: ExecJob,
        devices: Sequence[GpuDevice],
        *,
        on_output: OutputCallback | None = None,
    ) -> ProcessJob:
        _check_lease_id(lease_id)
        if job.consumer is not None and not self._allow_remote:
            raise UnsafeExecutorRefused(
                "the process executor runs jobs as the node's own user and does not take remote consumers' jobs"
                " (provider.allow_unsafe_process_executor is off; use the container executor)"
            )
        check_job_env(job.env)
        self._base_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix=f"lease-{lease_id}-", dir=self._base_dir))
        (workdir / "tmp").mkdir(mode=0o700)
        env = job_environment(job, devices, workdir, path=self._path)
        handle = ProcessJob(
            lease_id,
            job,
            workdir,
            tail=_OutputTail(job.max_output_bytes, on_output, self._timing.callback_timeout_s),
            timing=self._timing,
            clock=self._clock,
        )
        await handle._spawn(env, self._rlimits)
        log.info(
            "job started",
            extra={"lease_id": lease_id, "pid": handle.pid, "gpus": env["CUDA_VISIBLE_DEVICES"]},
        )
        return handle


def _rlimit_preexec(plan: tuple[tuple[int, int, int], ...]) -> Callable[[], None]:
    setrlimit = resource.setrlimit

    def apply_limits() -> None:  # runs in the forked child: no locks, no imports, no allocation-heavy work
        for res, soft, hard in plan:
            setrlimit(res, (soft, hard))

    return apply_limits


class _JobBase:
    """What both job handles share: a result future, a stop request, and the JobHandle methods over them."""

    _stop_requested: asyncio.Event
    _result: asyncio.Future[JobOutcome] | None

    @property
    def running(self) -> bool:
        return self._result is not None and not self._result.done()

    async def wait(self) -> JobOutcome:
        assert self._result is not None, "wait() before start"
        return await asyncio.shield(self._result)

    async def stop(self) -> JobOutcome:
        self._stop_requested.set()
        return await self.wait()


class ProcessJob(_JobBase):
    """A running (or finished) job process. Created by :meth:`ProcessExecutor.start`."""

    def __init__(
        self,
        lease_id: LeaseId,
        job: ExecJob,
        workdir: Path,
        *,
        tail: _OutputTail,
        timing: _Timing,
        clock: Clock,
    ) -> None:
        self.lease_id = lease_id
        self.job = job
        self.workdir = workdir
        self.pid: int | None = None
        self._tail = tail
        self._timing = timing
        self._clock = clock
        self._stop_requested = asyncio.Event()
        self._result: asyncio.Future[JobOutcome] | None = None


    async def _spawn(self, env: dict[str, str], rlimits: tuple[tuple[int, int, int], ...]) -> None:
        loop = asyncio.get_running_loop()
        started = self._clock()
        read_fd, write_fd = os.pipe()
        try:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *self.job.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=write_fd,
                    stderr=write_fd,
                    cwd=self.workdir,
                    env=env,
                    preexec_fn=_rlimit_preexec(rlimits),
                    start_new_session=True,
                    umask=0o077,
                )
            finally:
                os.close(write_fd)
        except (OSError, subprocess.SubprocessError) as exc:
            os.close(read_fd)
            self._result = loop.create_future()
            self._result.set_result(self._spawn_failed(exc, started))
            return
        self.pid = proc.pid
        reader = asyncio.StreamReader(limit=_READ_CHUNK)
        try:
            transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", buffering=0)
            )
        except BaseException:
            _signal_group(proc.pid, signal.SIGKILL)
            raise
        self._result = asyncio.ensure_future(self._supervise(proc, reader, transport, started))

    def _spawn_failed(self, exc: BaseException, started: float) -> JobOutcome:
        missing = isinstance(exc, FileNotFoundError) or getattr(exc, "errno", None) == errno.ENOENT
        what = "command not found" if missing else "cannot run command"
        message = f"{what}: {shlex.join(self.job.argv[:1])}: {exc}"
        log.info("job failed to start", extra={"lease_id": self.lease_id, "reason": message})
        return JobOutcome(
            exit_code=EXIT_NOT_FOUND if missing else EXIT_CANNOT_RUN,
            log_tail=b"",
            duration_s=self._clock() - started,
            simulated=False,
            error=message,
        )

    async def _pump(self, reader: asyncio.StreamReader) -> None:
        while chunk := await reader.read(_READ_CHUNK):
            await self._tail.feed(chunk)

    async def _supervise(
        self,
        proc: asyncio.subprocess.Process,
        reader: asyncio.StreamReader,
        transport: asyncio.BaseTransport,
        started: float,
    ) -> JobOutcome:
        timing = self._timing
        pump = asyncio.ensure_future(self._pump(reader))
        exited = asyncio.ensure_future(proc.wait())
        stop = asyncio.ensure_future(self._stop_requested.wait())
        killed: str | None = None
        try:
            deadline = started + self.job.timeout_s
            await asyncio.wait(
                {exited, stop}, timeout=max(0.0, deadline - self._clock()), return_when=asyncio.FIRST_COMPLETED
            )
            if not exited.done():
                killed = KILLED_STOPPED if stop.done() else KILLED_TIMEOUT
                await self._terminate(proc.pid, exited)
            ended = self._clock()
            # The main process is gone: whatever it left in its process group belongs to the finished job.
            _signal_group(proc.pid, signal.SIGKILL)
            await asyncio.wait({pump}, timeout=timing.drain_s)
            if not pump.done():
                log.warning(
                    "job output still open after exit, abandoning it (a process left the job's session?)",
                    extra={"lease_id": self.lease_id, "pid": proc.pid},
                )
        except BaseException:
            _signal_group(proc.pid, signal.SIGKILL)
            raise
        finally:
            for task in (pump, stop, exited):
                if not task.done():
                    task.cancel()
            transport.close()
        outcome = JobOutcome(
            exit_code=proc.returncode,
            log_tail=self._tail.tail(),
            duration_s=ended - started,
            simulated=False,
            killed_reason=killed,
            output_bytes=self._tail.total,
        )
        log.info(
            "job ended",
            extra={
                "lease_id": self.lease_id,
                "pid": proc.pid,
                "exit_code": outcome.exit_code,
                "killed_reason": killed,
                "duration_s": round(outcome.duration_s, 3),
            },
        )
        return outcome

    async def _terminate(self, pgid: int, exited: asyncio.Future[int]) -> None:
        _signal_group(pgid, signal.SIGTERM)
        await asyncio.wait({exited}, timeout=self._timing.term_grace_s)
        if exited.done():
            return
        _signal_group(pgid, signal.SIGKILL)
        await asyncio.wait({exited}, timeout=self._timing.kill_wait_s)
        if not exited.done():
            log.error("job survived SIGKILL, giving up on it", extra={"lease_id": self.lease_id, "pid": pgid})


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass  # the group is empty: nothing left to stop
    except PermissionError as exc:
        log.warning("cannot signal job process group", extra={"pgid": pgid, "reason": str(exc)})


class SimulatedExecutor:
    """Runs nothing: each job "runs" for ``duration_s`` (capped by its timeout) and exits with ``exit_code``.

    A job whose ``timeout_s`` is shorter than ``duration_s`` ends as killed by timeout. ``sleep`` and ``clock``
    are injectable so tests need not wait.
    """

    def __init__(
        self,
        *,
        duration_s: float = 1.0,
        exit_code: int = 0,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
    ) -> None:
        self._duration_s = duration_s
        self._exit_code = exit_code
        self._sleep = sleep
        self._clock = clock

    async def start(
        self,
        lease_id: LeaseId,
        job: ExecJob,
        devices: Sequence[GpuDevice],
        *,
        on_output: OutputCallback | None = None,
    ) -> SimulatedJob:
        _check_lease_id(lease_id)
        check_job_env(job.env)
        handle = SimulatedJob(lease_id, job, devices, self._duration_s, self._exit_code, self._sleep, self._clock)
        handle._result = asyncio.ensure_future(handle._run(on_output))
        return handle


class SimulatedJob(_JobBase):
    """A job of the :class:`SimulatedExecutor`."""

    def __init__(
        self,
        lease_id: LeaseId,
        job: ExecJob,
        devices: Sequence[GpuDevice],
        duration_s: float,
        exit_code: int,
        sleep: Sleep,
        clock: Clock,
    ) -> None:
        self.lease_id = lease_id
        self.job = job
        self._devices = tuple(devices)
        self._duration_s = duration_s
        self._exit_code = exit_code
        self._sleep = sleep
        self._clock = clock
        self._stop_requested = asyncio.Event()
        self._result: asyncio.Future[JobOutcome] | None = None


    async def _run(self, on_output: OutputCallback | None) -> JobOutcome:
        started = self._clock()
        tail = _OutputTail(self.job.max_output_bytes, on_output, callback_timeout_s=5.0)
        gpus = visible_devices(self._devices) or "none"
        await tail.feed(f"[simulated] lease {self.lease_id}: {shlex.join(self.job.argv)} on GPUs {gpus}\n".encode())
        timed_out = self._duration_s > self.job.timeout_s
        sleeper = asyncio.ensure_future(self._sleep(min(self._duration_s, self.job.timeout_s)))
        stop = asyncio.ensure_future(self._stop_requested.wait())
        try:
            await asyncio.wait({sleeper, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, stop):
                if not task.done():
                    task.cancel()
        if sleeper.done() and not sleeper.cancelled() and not timed_out:
            exit_code, killed = self._exit_code, None
        elif sleeper.done() and not sleeper.cancelled():
            exit_code, killed = -signal.SIGKILL, KILLED_TIMEOUT
        else:
            exit_code, killed = -signal.SIGTERM, KILLED_STOPPED
        await tail.feed(f"[simulated] exit {exit_code}\n".encode())
        return JobOutcome(
            exit_code=exit_code,
            log_tail=tail.tail(),
            duration_s=self._clock() - started,
            simulated=True,
            killed_reason=killed,
            output_bytes=tail.total,
        )
