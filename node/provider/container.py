"""Container executor: runs a lease's job in an OCI container through the Docker Engine API on a unix socket.

The same code drives Docker (``/var/run/docker.sock``) and Podman's Docker-compatible service
(``podman system service unix://...``), through :mod:`aiodocker`. :meth:`ContainerExecutor.connect` checks the
runtime (``/version``, ``/info``) and logs what it found (:class:`RuntimeInfo`: Docker or Podman, versions, OCI
runtime, cgroup version, NVIDIA integration).

**Isolation** (every job, nothing to switch on):

* user ``65534:65534`` (nobody), every capability dropped, ``no-new-privileges``, no privileged mode;
* read-only root filesystem; the writable places are tmpfs of ``resources.scratch_bytes`` each: the scratch at
  ``/tmp`` (also ``HOME``, ``TMPDIR`` and the working directory; ``/tmp`` because every image has it with mode
  1777, and runc gives a tmpfs the mode of the directory it covers, whatever the mount options say) and every
  ``VOLUME`` the image declares (instead of a volume on the host's disk). tmpfs pages count against the memory
  limit too, so all of them together hold at most the job's memory. Podman also mounts ``/run`` and
  ``/var/tmp`` as tmpfs in a read-only container; they are bounded by the memory limit only;
* memory limit with no swap (``Memory`` = ``MemorySwap``), pids limit, CPU quota (``NanoCpus``), ``/dev/shm``
  size, open-files limit;
* no network (``NetworkMode: none``, only a loopback of its own) unless the provider allows egress; the host's
  loopback services (the node's API, the chain RPC) are never reachable: they are not in the container's network
  namespace either way;
* nothing of the host is mounted, no host namespaces (pid, ipc, network, user are the container's own);
* GPUs: only the leased devices. ``gpu_mode="cdi"`` asks for CDI devices ``nvidia.com/gpu=<uuid>``: on Docker
  (≥ 25, CDI enabled) as a ``DeviceRequest`` of driver ``cdi``; on Podman through Podman's own create endpoint
  (``/libpod/containers/create``, same socket, same container settings, see :func:`libpod_spec`), because its
  Docker-compatible API ignores ``DeviceRequests`` and reads a CDI name in ``HostConfig.Devices`` as a path.
  ``gpu_mode="nvidia"`` asks for a ``DeviceRequest`` of driver ``nvidia`` with the devices' UUIDs (Docker with
  the NVIDIA container toolkit). A job with real GPUs on a runtime without the integration for the mode ends
  as ``start_failed`` with what is missing (:meth:`RuntimeInfo.gpu_missing`).
  ``NVIDIA_VISIBLE_DEVICES`` is always set to the leased UUIDs (``void`` for none), so an image whose own
  environment says ``all`` gets nothing more on a host whose default runtime is ``nvidia``. Simulated GPUs are
  not devices: the job sees them only as ``GPUNET_SIMULATED_GPUS=<uuid,...>``.

**Resources**: a job's :class:`~node.provider.executor.JobResources` (``None`` fields take the provider's
defaults) must fit the provider's :class:`ResourceCaps`; a job beyond a cap is refused with
:class:`ResourceBeyondCap`, whose message names the cap.

**Images**: an allow-list of entries, each a digest (``sha256:<hex>``: the reference pins it, or the local image
carries it) or a reference prefix matched on component boundaries (``ghcr.io/acme/``, ``docker.io/library/
busybox``); references are normalised as Docker does (``busybox`` is ``docker.io/library/busybox:latest``).
``None`` allows every image. A missing image is pulled (progress logged at debug level, every layer's
completion at info) within ``pull_timeout_s``.

**Lifecycle** of a job (:class:`ContainerJob`): check the image against the allow-list → pull if missing →
create (labels ``gpunet.node=<node id>``, ``gpunet.lease=<lease id>``) → attach to its output → start → stream
output → the container exits, or the executor stops it at ``timeout_s`` (from start) or on
:meth:`ContainerJob.stop` (SIGTERM, SIGKILL after ``stop_grace_s``) → read its state → remove it (with its
anonymous volumes). The container is removed on every path, including cancellation. Whatever the job started in
the background dies with it: the container's PID namespace ends with its first process.

**Outcomes** (:class:`~node.provider.executor.JobOutcome`), distinct for the consumer:

* the image is not allowed: ``failure="image_not_allowed"``; nothing is pulled or created;
* the pull fails or takes longer than ``pull_timeout_s``: ``failure="image_pull_failed"``;
* the container cannot be created or started (e.g. the command does not exist in the image):
  ``failure="start_failed"``, ``exit_code`` 127 when the runtime says the executable was not found, else 126;
* the OOM killer ended a process of the job: ``killed_reason="oom"``. Docker and Podman ≥ 5 report it in the
  container's state; Podman 4 does not, so the executor also watches the container's memory cgroup itself when
  it can read it (same host: cgroup v1 OOM eventfd, cgroup v2 ``memory.events``);
* the executor stopped it: ``killed_reason="timeout"`` or ``"stopped"``;
* otherwise ``exit_code`` is the container's exit status (Docker's convention: ``128+N`` when its first process
  died of signal ``N``).
* stopped while its image was still being pulled: ``killed_reason="stopped"``, no container made;
* the runtime failed under the job (socket gone, unexpected answer): ``error`` says so (``failure=
  "start_failed"`` when the container had not started yet).

``image_digest`` is the image actually run (its repository digest when it has one, else its image id).

**Output**: stdout and stderr, merged, are read from an attach stream opened before the container starts (so
nothing is lost), as bytes (never decoded: invalid UTF-8 arrives as it was written). The stream is flow-
controlled (64 KiB buffered at most), so the node's memory stays bounded however much the job prints. Chunks
given to ``on_output`` are at most 64 KiB and cut on UTF-8 boundaries: an incomplete multi-byte sequence at the
end of a read is held back (at most 3 bytes) and sent with the next chunk. The log tail keeps the last
``max_output_bytes`` bytes and drops the leading continuation bytes of a character cut by that bound (at most
3), so the tail of UTF-8 output always decodes; ``output_bytes`` counts everything.

**Restarts**: a job's container does not depend on the node process, so it outlives a node that crashes or is
killed. At start the node first takes over the jobs of the leases it still serves with
:meth:`ContainerExecutor.reattach` (found by the labels ``gpunet.node`` and ``gpunet.lease``): a running container is
followed again (output from then on, through a new attach stream: what it printed while no node was attached is
not sent again; timeout counted from ``State.StartedAt``; OOM watch armed again from ``State.Pid``), one that
exited meanwhile gives its outcome (exit code, OOM, the end of its log) at once; either way it is removed once
the outcome is known. Then :meth:`ContainerExecutor.cleanup_orphans` removes every other container labelled with
this node's id (a crashed node's containers would otherwise outlive their leases). :meth:`ContainerExecutor.close`
(a clean stop) still stops the jobs it runs.

Errors: :meth:`ContainerExecutor.start` raises :class:`~node.provider.executor.InvalidJob` (or its subclass
:class:`ResourceBeyondCap`) for a job it refuses before doing anything; everything after is reported in the
outcome. :meth:`ContainerExecutor.connect` raises :class:`ContainerRuntimeUnavailable` when no runtime answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
import os
import re
import resource
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiodocker
from aiodocker.exceptions import DockerError

from node.errors import RecoverableError
from node.provider.executor import (
    FAILED_IMAGE_NOT_ALLOWED,
    FAILED_IMAGE_PULL,
    FAILED_START,
    KILLED_OOM,
    KILLED_STOPPED,
    KILLED_TIMEOUT,
    Clock,
    ExecJob,
    InvalidJob,
    JobOutcome,
    JobResources,
    OutputCallback,
    check_job_env,
)
from node.provider.gpus import GpuDevice
from node.types import LeaseId

log = logging.getLogger(__name__)

GpuMode = Literal["cdi", "nvidia"]

LABEL_NODE = "gpunet.node"
LABEL_LEASE = "gpunet.lease"
JOB_USER = "65534:65534"
SCRATCH_PATH = "/tmp"  # every image has it, mode 1777: the runtime keeps an existing mount point's mode
SIMULATED_GPUS_ENV = "GPUNET_SIMULATED_GPUS"
MAX_CHUNK_BYTES = 64 * 1024
DEFAULT_CDI_DIRS = ("/etc/cdi", "/var/run/cdi")
GiB = 1024**3
MiB = 1024**2
_NAME_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class ContainerRuntimeUnavailable(RecoverableError, ConnectionError):
    """No container runtime answers on the configured socket (or it is not a Docker Engine API)."""


class ResourceBeyondCap(InvalidJob):
    """The job asks for more of a resource than the provider's cap; the message names the cap."""


@dataclass(frozen=True, slots=True)
class ResourceCaps:
    """The most a provider gives one job."""

    memory_bytes: int = 64 * GiB
    cpus: float = 16.0
    shm_bytes: int = 16 * GiB
    scratch_bytes: int = 100 * GiB


DEFAULT_RESOURCES = JobResources(memory_bytes=2 * GiB, cpus=1.0, shm_bytes=64 * MiB, scratch_bytes=1 * GiB)


@dataclass(frozen=True, slots=True)
class ResolvedResources:
    memory_bytes: int
    cpus: float
    shm_bytes: int
    scratch_bytes: int


def resolve_resources(asked: JobResources, defaults: JobResources, caps: ResourceCaps) -> ResolvedResources:
    """The job's resources with defaults filled in; :class:`ResourceBeyondCap` naming the first cap exceeded."""
    values: dict[str, Any] = {}
    for name in ("memory_bytes", "cpus", "shm_bytes", "scratch_bytes"):
        value = getattr(asked, name)
        if value is None:
            value = getattr(defaults, name)
        cap = getattr(caps, name)
        if value is None or value > cap:
            value = cap if value is None else value
            if value > cap:
                raise ResourceBeyondCap(f"resources.{name}={value} is beyond the provider's cap {name}={cap}")
        values[name] = value
    return ResolvedResources(**values)


# --- image references and the allow-list ---------------------------------------------------------------------


def normalise_reference(ref: str) -> str:
    """``busybox`` → ``docker.io/library/busybox:latest``; a reference with a digest keeps it and gets no tag."""
    name, at, digest = ref.partition("@")
    first, slash, rest = name.partition("/")
    if not slash or ("." not in first and ":" not in first and first != "localhost"):
        domain, path = "docker.io", name
    else:
        domain, path = first, rest
    if domain == "docker.io" and "/" not in path:
        path = f"library/{path}"
    last = path.rsplit("/", 1)[-1]
    if not at and ":" not in last:
        path += ":latest"
    return f"{domain}/{path}{at}{digest}"


def _digest_of(ref: str) -> str | None:
    _, at, digest = ref.partition("@")
    return digest if at else None


def allowed_by_name(ref: str, allowed: Sequence[str] | None) -> bool:
    """Whether the reference itself passes the allow-list (a prefix entry, or a digest entry it pins)."""
    if allowed is None:
        return True
    full = normalise_reference(ref)
    pinned = _digest_of(ref)
    for entry in allowed:
        if entry.startswith("sha256:"):
            if pinned == entry:
                return True
            continue
        if entry.endswith("/"):
            if full.startswith(entry):
                return True
        elif full == entry or (full.startswith(entry) and full[len(entry)] in "/:@"):
            return True
    return False


def allowed_by_digest(image: Mapping[str, Any], allowed: Sequence[str] | None) -> bool:
    """Whether a local image (``/images/{name}/json``) carries a digest of the allow-list."""
    if allowed is None:
        return True
    digests = {str(image.get("Id", ""))}
    digests.update(str(d).partition("@")[2] for d in image.get("RepoDigests") or ())
    return any(entry.startswith("sha256:") and entry in digests for entry in allowed)


# --- output ------------------------------------------------------------------------------------------------------


def utf8_incomplete_suffix(data: bytes | bytearray) -> int:
    """How many bytes at the end of ``data`` start a UTF-8 sequence that is not complete yet (0..3)."""
    n = len(data)
    for back in range(1, min(4, n) + 1):
        byte = data[n - back]
        if byte < 0x80:
            return 0
        if byte >= 0xC0:
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4 if byte < 0xF8 else 1
            return back if need > back else 0
    return 0


def utf8_tail(data: bytes | bytearray, cap: int) -> bytes:
    """The last ``cap`` bytes of ``data``, without leading continuation bytes of a character the cut split."""
    tail = bytes(data[-cap:]) if cap > 0 else b""
    if len(tail) < len(data):
        skip = 0
        while skip < min(3, len(tail)) and 0x80 <= tail[skip] < 0xC0:
            skip += 1
        tail = tail[skip:]
    return tail


class OutputSink:
    """Keeps the job's log tail and forwards bounded chunks, cut on UTF-8 boundaries, to a callback."""

    def __init__(self, cap: int, on_output: OutputCallback | None, callback_timeout_s: float) -> None:
        self._cap = cap
        self._buf = bytearray()
        self._pending = bytearray()
        self.total = 0
        self._on_output = on_output
        self._callback_timeout_s = callback_timeout_s

    async def feed(self, data: bytes) -> None:
        self.total += len(data)
        self._buf += data[-(self._cap + 3) :]
        if len(self._buf) > self._cap + 3:  # 3 more bytes, to see where the character cut by the bound ends
            del self._buf[: len(self._buf) - self._cap - 3]
        self._pending += data
        hold = utf8_incomplete_suffix(self._pending)
        await self._flush(len(self._pending) - hold)

    async def close(self) -> None:
        await self._flush(len(self._pending))

    def finish_tail(self) -> bytes:
        """The log tail: at most ``cap`` bytes, starting on a character boundary when the bound cut one."""
        return bytes(self._buf) if len(self._buf) <= self._cap else utf8_tail(self._buf, self._cap)

    async def _flush(self, upto: int) -> None:
        while upto > 0:
            size = min(upto, MAX_CHUNK_BYTES)
            if size < upto:
                size -= utf8_incomplete_suffix(self._pending[:size])
            chunk = bytes(self._pending[:size])
            del self._pending[:size]
            upto -= size
            await self._send(chunk)

    async def _send(self, chunk: bytes) -> None:
        if self._on_output is None:
            return
        try:
            await asyncio.wait_for(self._on_output(chunk), self._callback_timeout_s)
        except Exception as exc:  # a broken or slow listener must not stall or kill the job
            log.warning("job output callback failed, no more chunks sent to it", extra={"reason": repr(exc)})
            self._on_output = None


# --- runtime ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuntimeInfo:
    """What :meth:`ContainerExecutor.connect` found behind the socket."""

    engine: str  # "docker" | "podman"
    version: str
    api_version: str
    oci_runtimes: tuple[str, ...]
    default_runtime: str
    cgroup: str  # e.g. "v1 (cgroupfs)"
    nvidia_runtime: bool  # an OCI runtime named "nvidia" is configured
    cdi_dirs: tuple[str, ...]
    cdi_nvidia_specs: tuple[str, ...]  # CDI spec files (read on this host) that declare nvidia.com/gpu devices
    libpod_api_version: str | None = None  # Podman's own API (for what its Docker-compatible API cannot do)

    def describe(self) -> str:
        nvidia = []
        nvidia.append("nvidia runtime" if self.nvidia_runtime else "no nvidia runtime")
        if self.cdi_nvidia_specs:
            nvidia.append("CDI nvidia.com/gpu in " + ", ".join(self.cdi_nvidia_specs))
        else:
            nvidia.append("no CDI spec for nvidia.com/gpu in " + ", ".join(self.cdi_dirs))
        return (
            f"{self.engine.capitalize()} {self.version} (Docker API {self.api_version}), OCI runtime "
            f"{self.default_runtime}, cgroup {self.cgroup}; NVIDIA: {'; '.join(nvidia)}"
        )

    def gpu_missing(self, mode: GpuMode) -> str | None:
        """What the runtime lacks to give containers GPUs in ``mode``; ``None`` when nothing is missing."""
        if mode == "nvidia" and not self.nvidia_runtime:
            return (
                f"{self.engine} has no 'nvidia' OCI runtime: install the NVIDIA container toolkit and run "
                f"'nvidia-ctk runtime configure --runtime={self.engine}' (or use gpu_mode='cdi')"
            )
        if mode == "cdi" and not self.cdi_nvidia_specs:
            return (
                "no CDI spec declares nvidia.com/gpu devices in " + ", ".join(self.cdi_dirs) + ": install the "
                "NVIDIA container toolkit and run 'nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml'"
            )
        return None


def _runtime_info(version: Mapping[str, Any], info: Mapping[str, Any]) -> RuntimeInfo:
    components = {str(c.get("Name", "")).lower(): c for c in version.get("Components") or ()}
    podman = next((c for name, c in components.items() if "podman" in name), None)
    engine = "podman" if podman is not None else "docker"
    runtimes = tuple(sorted((info.get("Runtimes") or {}).keys()))
    cdi_dirs = tuple(info.get("CDISpecDirs") or DEFAULT_CDI_DIRS)
    specs = []
    for directory in cdi_dirs:
        with contextlib.suppress(OSError):
            for path in sorted(Path(directory).iterdir()):
                if path.suffix in (".json", ".yaml", ".yml"):
                    with contextlib.suppress(OSError):
                        if "nvidia.com/gpu" in path.read_text(errors="replace"):
                            specs.append(str(path))
    return RuntimeInfo(
        engine=engine,
        version=str(version.get("Version", "?")),
        api_version=str(version.get("ApiVersion", "?")),
        oci_runtimes=runtimes,
        default_runtime=str(info.get("DefaultRuntime", "?")),
        cgroup=f"v{info.get('CgroupVersion', '?')} ({info.get('CgroupDriver', '?')})",
        nvidia_runtime="nvidia" in runtimes,
        cdi_dirs=cdi_dirs,
        cdi_nvidia_specs=tuple(specs),
        libpod_api_version=str((podman.get("Details") or {}).get("APIVersion") or version.get("Version"))
        if podman is not None else None,
    )


def _default_ulimits() -> dict[str, int]:
    """Open files and processes per container: generous (the pids cgroup is the real bound) but never above the
    node's own hard limits, which a runtime on this host can always grant (Podman as root otherwise asks for
    values some hosts refuse)."""
    limits = {}
    for name, res, wanted in (("nofile", resource.RLIMIT_NOFILE, 65536), ("nproc", resource.RLIMIT_NPROC, 32768)):
        hard = resource.getrlimit(res)[1]
        limits[name] = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    return limits


# --- the executor ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContainerSettings:
    """The provider's settings of the container executor (see the module docstring)."""

    node_id: str
    gpu_mode: GpuMode = "cdi"
    caps: ResourceCaps = field(default_factory=ResourceCaps)
    defaults: JobResources = DEFAULT_RESOURCES
    pids_limit: int = 1024
    allowed_images: tuple[str, ...] | None = None
    default_image: str | None = None
    allow_egress: bool = False
    user: str = JOB_USER
    ulimits: Mapping[str, int] = field(default_factory=_default_ulimits)
    pull_timeout_s: float = 600.0
    stop_grace_s: float = 5.0
    callback_timeout_s: float = 5.0
    podman_libpod_create: bool = False  # create every container through Podman's own API (always for GPUs)
    # a job that declares ports (and gets no egress) runs on this internal network: no route out, the provider
    # reaches its ports at its address there (:meth:`ContainerExecutor.address_of`)
    private_network: str = "gpunet-private"

    def __post_init__(self) -> None:
        if not self.node_id or _NAME_SAFE.search(self.node_id):
            raise ValueError(f"node_id must be non-empty and [A-Za-z0-9_.-], got {self.node_id!r}")
        if self.gpu_mode not in ("cdi", "nvidia"):
            raise ValueError(f"gpu_mode must be 'cdi' or 'nvidia', got {self.gpu_mode!r}")
        resolve_resources(self.defaults, self.defaults, self.caps)  # defaults must fit the caps


@dataclass(frozen=True, slots=True)
class Orphan:
    """A container a previous run of the node left behind (removed by :meth:`ContainerExecutor.cleanup_orphans`)."""

    container_id: str
    lease_id: LeaseId | None


class ContainerExecutor:
    """Runs jobs in containers (see the module docstring). Build with :meth:`connect`; :meth:`close` at the end."""

    def __init__(self, docker: aiodocker.Docker, settings: ContainerSettings, runtime: RuntimeInfo,
                 *, clock: Clock = time.monotonic) -> None:
        self._docker = docker
        self.settings = settings
        self.runtime = runtime
        self._clock = clock
        self._jobs: set[ContainerJob] = set()

    @classmethod
    async def connect(cls, socket_path: str | Path, settings: ContainerSettings,
                      *, clock: Clock = time.monotonic) -> ContainerExecutor:
        """Connect to the runtime on ``socket_path``, check it and log what it is."""
        docker = aiodocker.Docker(url=f"unix://{socket_path}")
        try:
            version = await asyncio.wait_for(docker.version(), 30)
            info = await asyncio.wait_for(docker.system.info(), 30)
        except (DockerError, OSError, TimeoutError, ValueError) as exc:
            await docker.close()
            raise ContainerRuntimeUnavailable(
                f"no Docker Engine API answers on unix://{socket_path}: {exc!r}"
                " (start Docker, or 'podman system service --time=0 unix://<path>')"
            ) from exc
        except BaseException:
            await docker.close()
            raise
        runtime = _runtime_info(version, info)
        log.info("container runtime", extra={"socket": str(socket_path), "runtime": runtime.describe()})
        missing = runtime.gpu_missing(settings.gpu_mode)
        if missing:
            log.info("container runtime cannot give containers real GPUs", extra={"reason": missing})
        return cls(docker, settings, runtime, clock=clock)

    async def close(self) -> None:
        for job in list(self._jobs):
            await job.stop()
        await self._docker.close()

    async def __aenter__(self) -> ContainerExecutor:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def docker(self) -> aiodocker.Docker:
        return self._docker

    async def start(
        self,
        lease_id: LeaseId,
        job: ExecJob,
        devices: Sequence[GpuDevice],
        *,
        on_output: OutputCallback | None = None,
    ) -> ContainerJob:
        if not isinstance(lease_id, int) or isinstance(lease_id, bool) or lease_id < 0:
            raise InvalidJob(f"lease id must be a non-negative int, got {lease_id!r}")
        check_job_env(job.env)
        image = job.image or self.settings.default_image
        if image is None:
            raise InvalidJob("the job names no image and the provider has no default image")
        # Fully qualified, so the runtime cannot resolve a short name through its own search list to an image
        # other than the one the allow-list judged.
        image = normalise_reference(image)
        resources = resolve_resources(job.resources, self.settings.defaults, self.settings.caps)
        handle = ContainerJob(self, lease_id, job, image, resources, tuple(devices),
                              OutputSink(job.max_output_bytes, on_output, self.settings.callback_timeout_s))
        self._jobs.add(handle)
        handle._result = asyncio.ensure_future(handle._run())
        handle._result.add_done_callback(lambda _: self._jobs.discard(handle))
        return handle

    async def cleanup_orphans(self, node_id: str | None = None) -> list[Orphan]:
        """Remove the containers labelled with ``node_id`` (default: this node's) that no job of this executor
        owns, and say which leases they ran (their consumers are to be told those jobs ended). Call at node
        start, before leases run."""
        node = node_id or self.settings.node_id
        owned = {j.container_id for j in self._jobs}
        removed = []
        for container_id, labels in await self.job_containers(node):
            if container_id in owned:
                continue
            lease = labels.get(LABEL_LEASE, "")
            with contextlib.suppress(DockerError):
                await self._docker.containers.container(container_id).delete(force=True, v=True)
                removed.append(Orphan(container_id, LeaseId(int(lease)) if lease.isdigit() else None))
                log.warning(
                    "removed an orphan job container",
                    extra={"container": container_id[:12], "lease_id": labels.get(LABEL_LEASE)},
                )
        return removed

    async def reattach(
        self,
        lease_id: LeaseId,
        job: ExecJob,
        devices: Sequence[GpuDevice] = (),
        *,
        on_output: OutputCallback | None = None,
    ) -> ContainerJob | None:
        """Take over the job container of ``lease_id`` that a previous run of this node left behind (after a
        crash or a kill), or ``None`` when there is none. Call at node start, before :meth:`cleanup_orphans`.

        A container still running is followed as if this executor had started it: output from now on goes to
        ``on_output`` (what it printed while no node was attached is not re-sent; it stays in the runtime's log),
        the job's ``timeout_s`` counts from the container's own start (``State.StartedAt``), :meth:`ContainerJob.stop`
        stops it, the OOM watch is armed again on its current pid, and its outcome (exit code, ``oom``,
        ``timeout``, ``stopped``) and image digest come as from :meth:`start`. A container that has already exited
        gives its outcome at once (exit code, ``oom``, the end of its log as the tail). Either way the container
        is removed once its outcome is known."""
        node = self.settings.node_id
        owned = {j.container_id for j in self._jobs}
        found = await self._docker.containers.list(
            all=True, filters={"label": [f"{LABEL_NODE}={node}", f"{LABEL_LEASE}={int(lease_id)}"]})
        candidates = []
        for c in found:
            if c.id in owned:
                continue
            info = await self._docker.containers.container(c.id).show()
            state = info.get("State") or {}
            candidates.append((bool(state.get("Running")), str(state.get("StartedAt") or ""), c.id, info))
        if not candidates:
            return None
        candidates.sort(key=lambda c: (c[0], c[1]))  # the running one, else the one started last
        running, _, container_id, info = candidates[-1]
        config = info.get("Config") or {}
        image = str(config.get("Image") or info.get("ImageName") or job.image or "")
        handle = ReattachedJob(self, lease_id, job, image, None, tuple(devices),
                               OutputSink(job.max_output_bytes, on_output, self.settings.callback_timeout_s))
        handle.container_id = container_id
        self._jobs.add(handle)
        handle._result = asyncio.ensure_future(handle._run())
        handle._result.add_done_callback(lambda _: self._jobs.discard(handle))
        log.info("re-attaching to a job container" if running else "collecting a job container that ended",
                 extra={"lease_id": lease_id, "container": container_id[:12]})
        return handle

    async def ensure_private_network(self) -> str:
        """The internal network of jobs that declare ports, created when missing."""
        name = self.settings.private_network
        found = await self._docker.networks.list(filters={"name": [name]})
        if not any(n.get("Name") == name for n in found):
            with contextlib.suppress(DockerError):  # created meanwhile by another job
                await self._docker.networks.create({"Name": name, "Internal": True, "Driver": "bridge",
                                                    "Labels": {LABEL_NODE: self.settings.node_id}})
        return name

    async def address_of(self, lease_id: LeaseId) -> str | None:
        """Where this node reaches the running container of ``lease_id`` (its IP address on its network)."""
        for job in list(self._jobs):
            if job.lease_id != lease_id or not job.running or job.container_id is None:
                continue
            try:
                info = await self._docker.containers.container(job.container_id).show()
            except DockerError:
                return None
            settings = info.get("NetworkSettings") or {}
            for net in (settings.get("Networks") or {}).values():
                if net.get("IPAddress"):
                    return str(net["IPAddress"])
            return str(settings.get("IPAddress") or "") or None
        return None

    async def job_containers(self, node_id: str | None = None) -> list[tuple[str, dict[str, str]]]:
        """``(id, labels)`` of every container (running or not) labelled with ``node_id`` (default: this node's)."""
        node = node_id or self.settings.node_id
        found = await self._docker.containers.list(all=True, filters={"label": [f"{LABEL_NODE}={node}"]})
        return [(c.id, dict(c["Labels"] or {}) if "Labels" in c else {}) for c in found]

    def container_config(self, lease_id: LeaseId, job: ExecJob, image: str, resources: ResolvedResources,
                         devices: Sequence[GpuDevice], image_volumes: Sequence[str] = ()) -> dict[str, Any]:
        """The ``/containers/create`` body for this job (pure; see the module docstring)."""
        s = self.settings
        real = [d for d in devices if not d.simulated]
        simulated = [d for d in devices if d.simulated]
        env = {"LANG": "C.UTF-8", **job.env}
        env.update(HOME=SCRATCH_PATH, TMPDIR=SCRATCH_PATH, CUDA_DEVICE_ORDER="PCI_BUS_ID",
                   NVIDIA_VISIBLE_DEVICES=",".join(d.uuid for d in real) or "void")
        if simulated:
            env[SIMULATED_GPUS_ENV] = ",".join(d.uuid for d in simulated)
        tmpfs_opts = f"rw,exec,nosuid,nodev,size={resources.scratch_bytes},mode=1777"
        if self.runtime.engine == "podman":
            tmpfs_opts += ",notmpcopyup"  # Podman would copy the image's directory (and its mode) into the tmpfs
        tmpfs = {SCRATCH_PATH: tmpfs_opts}
        for path in image_volumes:
            tmpfs.setdefault(path, tmpfs_opts)
        host: dict[str, Any] = {
            "NetworkMode": "bridge" if s.allow_egress else (s.private_network if job.ports else "none"),
            "Privileged": False,
            "CapDrop": ["ALL"],
            "CapAdd": [],
            "SecurityOpt": ["no-new-privileges"],
            "ReadonlyRootfs": True,
            "Tmpfs": tmpfs,
            "Binds": [],
            "Mounts": [],
            "Memory": resources.memory_bytes,
            "MemorySwap": resources.memory_bytes,
            "NanoCpus": round(resources.cpus * 1e9),
            "PidsLimit": s.pids_limit,
            "ShmSize": resources.shm_bytes,
            "IpcMode": "private",
            "Ulimits": [{"Name": k, "Soft": v, "Hard": v} for k, v in sorted(s.ulimits.items())],
            "AutoRemove": False,
            "RestartPolicy": {"Name": "no"},
        }
        if real:
            if s.gpu_mode == "nvidia":
                host["DeviceRequests"] = [
                    {"Driver": "nvidia", "DeviceIDs": [d.uuid for d in real], "Capabilities": [["gpu"]]}
                ]
            elif self.runtime.engine == "podman":
                # Podman's Docker-compatible API takes a CDI name here for a path (and ignores DeviceRequests):
                # such a container is created through Podman's own API (libpod_spec).
                host["Devices"] = [
                    {"PathOnHost": f"nvidia.com/gpu={d.uuid}", "PathInContainer": "", "CgroupPermissions": ""}
                    for d in real
                ]
            else:
                host["DeviceRequests"] = [
                    {"Driver": "cdi", "DeviceIDs": [f"nvidia.com/gpu={d.uuid}" for d in real]}
                ]
        return {
            "Image": image,
            "Entrypoint": list(job.argv[:1]),
            "Cmd": list(job.argv[1:]),
            "Env": [f"{k}={v}" for k, v in env.items()],
            "User": s.user,
            "WorkingDir": SCRATCH_PATH,
            "Labels": {LABEL_NODE: s.node_id, LABEL_LEASE: str(lease_id)},
            "AttachStdin": False,
            "AttachStdout": True,
            "AttachStderr": True,
            "OpenStdin": False,
            "Tty": False,
            "NetworkDisabled": not s.allow_egress,
            "HostConfig": host,
        }


def libpod_spec(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The same container as a Docker ``/containers/create`` body, as Podman's own create body (``SpecGenerator``),
    which, unlike Podman's Docker-compatible API, takes CDI device names."""
    host = config["HostConfig"]
    env = dict(entry.split("=", 1) for entry in config["Env"])
    period = 100_000
    return {
        "name": name,
        "image": config["Image"],
        "entrypoint": config["Entrypoint"],
        "command": config["Cmd"],
        "env": env,
        "user": config["User"],
        "work_dir": config["WorkingDir"],
        "labels": config["Labels"],
        "privileged": False,
        "cap_drop": ["all"],
        "no_new_privileges": True,
        "read_only_filesystem": True,
        "mounts": [
            {"destination": path, "type": "tmpfs", "source": "tmpfs", "options": opts.split(",")}
            for path, opts in host["Tmpfs"].items()
        ],
        "image_volume_mode": "tmpfs",
        "resource_limits": {
            "memory": {"limit": host["Memory"], "swap": host["MemorySwap"]},
            "cpu": {"quota": host["NanoCpus"] * period // 1_000_000_000, "period": period},
            "pids": {"limit": host["PidsLimit"]},
        },
        "shm_size": host["ShmSize"],
        "netns": {"nsmode": "none" if host["NetworkMode"] == "none" else "bridge"},
        **({"networks": {host["NetworkMode"]: {}}} if host["NetworkMode"] not in ("none", "bridge") else {}),
        "ipcns": {"nsmode": "private"},
        "r_limits": [
            {"type": u["Name"], "soft": u["Soft"], "hard": u["Hard"]} for u in host["Ulimits"]
        ],
        "devices": [{"path": d["PathOnHost"]} for d in host.get("Devices") or ()],
        "stdin": False,
        "terminal": False,
        "remove": False,
    }


class ContainerJob:
    """One job's container. Created by :meth:`ContainerExecutor.start`; ``wait()``/``stop()`` as every job."""

    def __init__(self, executor: ContainerExecutor, lease_id: LeaseId, job: ExecJob, image: str,
                 resources: ResolvedResources | None, devices: tuple[GpuDevice, ...], sink: OutputSink) -> None:
        self._executor = executor
        self._docker = executor.docker
        self._settings = executor.settings
        self._clock = executor._clock
        self.lease_id = lease_id
        self.job = job
        self.image = image
        self.resources = resources
        self.devices = devices
        self.container_id: str | None = None
        self.started = asyncio.Event()  # set once the container runs
        self._sink = sink
        self._stop_requested = asyncio.Event()
        self._result: asyncio.Future[JobOutcome] | None = None

    @property
    def running(self) -> bool:
        return self._result is not None and not self._result.done()

    async def wait(self) -> JobOutcome:
        assert self._result is not None, "wait() before start"
        return await asyncio.shield(self._result)

    async def stop(self) -> JobOutcome:
        self._stop_requested.set()
        return await self.wait()

    def _outcome(self, started: float, *, exit_code: int | None = None, killed: str | None = None,
                 error: str | None = None, failure: str | None = None, digest: str | None = None) -> JobOutcome:
        return JobOutcome(
            exit_code=exit_code,
            log_tail=self._sink.finish_tail(),
            duration_s=self._clock() - started,
            simulated=False,
            killed_reason=killed,
            error=error,
            output_bytes=self._sink.total,
            failure=failure,
            image_digest=digest,
        )

    async def _run(self) -> JobOutcome:
        began = self._clock()
        try:
            return await self._run_job(began)
        except (DockerError, OSError, ValueError, KeyError, TypeError) as exc:
            # The runtime went away or answered something unexpected: still an outcome, never a raise.
            log.error("job container failed", extra={"lease_id": self.lease_id, "reason": repr(exc)})
            return self._outcome(began, failure=None if self.started.is_set() else FAILED_START,
                                 error=f"container runtime error: {exc!r}")

    async def _run_job(self, began: float) -> JobOutcome:
        allowed = self._settings.allowed_images
        if not allowed_by_name(self.image, allowed) and not any(e.startswith("sha256:") for e in allowed or ()):
            return self._refused(began)
        preparing = asyncio.ensure_future(self._ensure_image())
        stop = asyncio.ensure_future(self._stop_requested.wait())
        try:
            await asyncio.wait({preparing, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not preparing.done():
                preparing.cancel()
                with contextlib.suppress(asyncio.CancelledError, _PullFailed):
                    await preparing
        if preparing.cancelled():
            return self._outcome(began, killed=KILLED_STOPPED, error="stopped before the job's image was ready")
        try:
            image = preparing.result()
        except _PullFailed as exc:
            log.info("job image pull failed", extra={"lease_id": self.lease_id, "image": self.image,
                                                     "reason": str(exc)})
            return self._outcome(began, failure=FAILED_IMAGE_PULL, error=f"cannot pull image {self.image}: {exc}")
        if not allowed_by_name(self.image, allowed) and not allowed_by_digest(image, allowed):
            return self._refused(began)
        digest = image_digest(image)
        volumes = sorted((image.get("Config") or {}).get("Volumes") or {})
        assert self.resources is not None, "a job the executor starts has its resources resolved"
        config = self._executor.container_config(self.lease_id, self.job, self.image, self.resources,
                                                 self.devices, volumes)
        name = f"gpunet-{self._settings.node_id}-{self.lease_id}-{secrets.token_hex(4)}"
        container = None
        try:
            missing = self._executor.runtime.gpu_missing(self._settings.gpu_mode)
            if any(not d.simulated for d in self.devices) and missing:
                return self._outcome(began, exit_code=126, failure=FAILED_START, digest=digest,
                                     error=f"cannot give the job its GPUs: {missing}")
            try:
                if config["HostConfig"]["NetworkMode"] == self._settings.private_network:
                    await self._executor.ensure_private_network()
                container = await self._create(config, name)
            except DockerError as exc:
                return self._start_failed(began, exc, digest)
            self.container_id = container.id
            return await self._supervise(container, began, digest)
        finally:
            if container is not None:
                await asyncio.shield(self._remove(container))

    async def _create(self, config: dict[str, Any], name: str) -> Any:
        runtime = self._executor.runtime
        host = config["HostConfig"]
        if runtime.engine == "podman" and (host.get("Devices") or self._settings.podman_libpod_create):
            # aiodocker has no public call for a path of another API; its JSON query helper is used as is.
            created = await self._docker._query_json(
                f"v{runtime.libpod_api_version}/libpod/containers/create", method="POST",
                data=libpod_spec(config, name), versioned_api=False,
            )
            return self._docker.containers.container(created["Id"])
        return await self._docker.containers.create(config, name=name)

    def _refused(self, began: float) -> JobOutcome:
        log.info("job image not allowed", extra={"lease_id": self.lease_id, "image": self.image})
        return self._outcome(began, failure=FAILED_IMAGE_NOT_ALLOWED,
                             error=f"image {self.image} is not allowed by this provider")

    def _start_failed(self, began: float, exc: DockerError, digest: str | None) -> JobOutcome:
        message = str(exc.message)
        missing = "not found" in message or "no such file" in message.lower()
        log.info("job container failed to start", extra={"lease_id": self.lease_id, "reason": message})
        return self._outcome(began, exit_code=127 if missing else 126, failure=FAILED_START, digest=digest,
                             error=f"cannot start the job's container: {message}")

    async def _ensure_image(self) -> dict[str, Any]:
        with contextlib.suppress(DockerError):
            return dict(await self._docker.images.inspect(self.image))
        log.info("pulling job image", extra={"lease_id": self.lease_id, "image": self.image})
        try:
            async with asyncio.timeout(self._settings.pull_timeout_s):
                async for progress in self._docker.images.pull(self.image, stream=True):
                    if progress.get("error"):
                        raise _PullFailed(str(progress["error"]))
                    status = str(progress.get("status", ""))
                    level = logging.INFO if status.startswith(("Pull complete", "Digest", "Status")) else logging.DEBUG
                    log.log(level, "image pull", extra={"image": self.image, "status": status,
                                                        "layer": progress.get("id")})
                return dict(await self._docker.images.inspect(self.image))
        except TimeoutError as exc:
            raise _PullFailed(f"no result within {self._settings.pull_timeout_s:g} s") from exc
        except DockerError as exc:
            raise _PullFailed(str(exc.message)) from exc
        except OSError as exc:
            raise _PullFailed(repr(exc)) from exc

    async def _supervise(self, container: Any, began: float, digest: str | None) -> JobOutcome:
        stream = container.attach(stdout=True, stderr=True, logs=False)
        try:
            try:
                await stream.__aenter__()
                await container.start()
            except DockerError as exc:
                return self._start_failed(began, exc, digest)
            started = self._clock()
            self.started.set()
            state = await container.show()
            oom = OomWatch.for_pid(int((state.get("State") or {}).get("Pid") or 0))
            log.info("job container started", extra={"lease_id": self.lease_id, "container": container.id[:12],
                                                      "image": digest})
            return await self._follow(container, stream, began, started, digest, oom)
        finally:
            with contextlib.suppress(Exception):
                await stream.close()

    async def _follow(self, container: Any, stream: Any, began: float, started: float, digest: str | None,
                      oom: OomWatch | None) -> JobOutcome:
        """Stream the running container's output until it exits or is stopped (timeout counted from
        ``started``), then read how it ended."""
        pump = asyncio.ensure_future(self._pump(stream))
        exited = asyncio.ensure_future(container.wait())
        stop = asyncio.ensure_future(self._stop_requested.wait())
        killed: str | None = None
        try:
            deadline = started + self.job.timeout_s
            await asyncio.wait({exited, stop}, timeout=max(0.0, deadline - self._clock()),
                               return_when=asyncio.FIRST_COMPLETED)
            if not exited.done():
                killed = KILLED_STOPPED if stop.done() else KILLED_TIMEOUT
                await self._terminate(container, exited)
            ended = self._clock()
            await asyncio.wait({pump}, timeout=2.0)
        finally:
            for task in (pump, stop, exited):
                if not task.done():
                    task.cancel()
            oom_seen = oom.close() if oom is not None else False
        await self._sink.close()
        state = (await container.show()).get("State") or {}
        exit_code = state.get("ExitCode")
        if killed is None and (state.get("OOMKilled") or oom_seen):
            killed = KILLED_OOM
        outcome = self._outcome(began, exit_code=exit_code, killed=killed, digest=digest)
        outcome = _replace_duration(outcome, ended - started)
        log.info("job container ended", extra={"lease_id": self.lease_id, "exit_code": exit_code,
                                               "killed_reason": killed, "duration_s": round(ended - started, 3)})
        return outcome

    async def _pump(self, stream: Any) -> None:
        while (message := await stream.read_out()) is not None:
            await self._sink.feed(message.data)

    async def _terminate(self, container: Any, exited: asyncio.Future[Any]) -> None:
        grace = self._settings.stop_grace_s
        with contextlib.suppress(DockerError):
            await container.stop(t=max(0, round(grace)))
        await asyncio.wait({exited}, timeout=grace + 5)
        if not exited.done():
            with contextlib.suppress(DockerError):
                await container.kill(signal="SIGKILL")
            await asyncio.wait({exited}, timeout=10)

    async def _remove(self, container: Any) -> None:
        try:
            await container.delete(force=True, v=True)
        except DockerError as exc:
            if exc.status != 404:
                log.error("cannot remove a job container", extra={"container": container.id[:12],
                                                                   "reason": str(exc.message)})


class ReattachedJob(ContainerJob):
    """A job container a previous run of the node started, taken over by :meth:`ContainerExecutor.reattach`."""

    async def _run(self) -> JobOutcome:
        began = self._clock()
        assert self.container_id is not None
        container = self._docker.containers.container(self.container_id)
        digest: str | None = None
        try:
            info = await container.show()
            digest = await self._image_digest(info)
            state = info.get("State") or {}
            started = self._clock() - _age_s(state.get("StartedAt"))
            if state.get("Running"):
                outcome = await self._resume(container, state, began, started, digest)
                if outcome is not None:
                    return outcome
                state = (await container.show()).get("State") or {}
            return await self._ended_away(container, state, began, started, digest)
        except (DockerError, OSError, ValueError, KeyError, TypeError) as exc:
            log.error("re-attached job container failed", extra={"lease_id": self.lease_id, "reason": repr(exc)})
            return self._outcome(began, digest=digest, error=f"container runtime error: {exc!r}")
        finally:
            await asyncio.shield(self._remove(container))

    async def _image_digest(self, info: Mapping[str, Any]) -> str | None:
        for ref in (info.get("Image"), (info.get("Config") or {}).get("Image")):
            if ref:
                with contextlib.suppress(DockerError):
                    return image_digest(await self._docker.images.inspect(str(ref)))
        return None

    async def _resume(self, container: Any, state: Mapping[str, Any], began: float, started: float,
                      digest: str | None) -> JobOutcome | None:
        """Follow the running container; ``None`` when it exited before it could be attached to."""
        stream = container.attach(stdout=True, stderr=True, logs=False)
        try:
            try:
                await stream.__aenter__()
            except DockerError as exc:
                log.info("cannot attach to the job container again", extra={"lease_id": self.lease_id,
                                                                            "reason": str(exc.message)})
                return None
            self.started.set()
            oom = OomWatch.for_pid(int(state.get("Pid") or 0))
            log.info("job container re-attached", extra={"lease_id": self.lease_id,
                                                         "container": container.id[:12], "image": digest,
                                                         "running_s": round(self._clock() - started, 3)})
            return await self._follow(container, stream, began, started, digest, oom)
        finally:
            with contextlib.suppress(Exception):
                await stream.close()

    async def _ended_away(self, container: Any, state: Mapping[str, Any], began: float, started: float,
                          digest: str | None) -> JobOutcome:
        """The container exited while no node watched it: its exit status, and the end of its log as the tail
        (nothing is sent to ``on_output``: that output was never streamed live)."""
        self.started.set()
        lines = await container.log(stdout=True, stderr=True, tail=max(1, self.job.max_output_bytes // 16))
        text = "".join(lines).encode("utf-8", "replace")
        exit_code = state.get("ExitCode")
        killed = KILLED_OOM if state.get("OOMKilled") else None
        ran = _age_s(state.get("StartedAt")) - _age_s(state.get("FinishedAt"))
        log.info("job container ended while the node was away", extra={"lease_id": self.lease_id,
                                                                      "exit_code": exit_code, "killed_reason": killed})
        return JobOutcome(exit_code=exit_code, log_tail=utf8_tail(text, self.job.max_output_bytes),
                          duration_s=max(0.0, ran), simulated=False, killed_reason=killed,
                          output_bytes=len(text), image_digest=digest)


def image_digest(image: Mapping[str, Any]) -> str | None:
    """The digest a job's image is reported by: its first repository digest, else its image id."""
    return next(iter(image.get("RepoDigests") or ()), None) or image.get("Id")


def _age_s(stamp: object) -> float:
    """Seconds since an RFC 3339 time of the runtime (``2024-05-01T10:00:00.123456789Z``); 0 when unknown."""
    if not isinstance(stamp, str) or not stamp or stamp.startswith("0001-"):
        return 0.0
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)?$", stamp.strip())
    if m is None:
        return 0.0
    zone = m.group(3) or "Z"
    zone = "+00:00" if zone == "Z" else zone
    parsed = datetime.datetime.fromisoformat(f"{m.group(1)}{zone}")
    when = parsed.timestamp() + float(f"0.{m.group(2) or 0}")
    return max(0.0, time.time() - when)


class _PullFailed(Exception):
    pass


def _replace_duration(outcome: JobOutcome, duration_s: float) -> JobOutcome:
    return dataclasses.replace(outcome, duration_s=duration_s)


# --- OOM detection from the container's memory cgroup ----------------------------------------------------------


class OomWatch:
    """Notices an OOM kill in a container's memory cgroup while the container runs (this host only).

    cgroup v1: an eventfd registered on ``memory.oom_control`` fires when the cgroup hits OOM; cgroup v2:
    ``memory.events`` (``oom_kill``) is read when the watch is closed and by a poller. Where the cgroup cannot be
    read (another host, no permission) the watch is not created and only the runtime's report counts.
    """

    def __init__(self, directory: Path, version: int) -> None:
        self._dir = directory
        self._version = version
        self.seen = False
        self._loop = asyncio.get_running_loop()
        self._efd: int | None = None
        self._ofd: int | None = None
        self._poller: asyncio.Task[None] | None = None

    @classmethod
    def for_pid(cls, pid: int) -> OomWatch | None:
        if pid <= 0:
            log.debug("no pid for the job's container: not watching its memory cgroup")
            return None
        try:
            lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        except OSError as exc:
            log.debug("cannot find the job's cgroup", extra={"pid": pid, "reason": repr(exc)})
            return None
        for line in lines:
            _, controllers, path = line.split(":", 2)
            if "memory" in controllers.split(","):
                directory = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
                if (directory / "memory.oom_control").exists():
                    watch = cls(directory, 1)
                    return watch if watch._arm_v1() else None
        for line in lines:
            if line.startswith("0::"):
                directory = Path("/sys/fs/cgroup") / line[3:].lstrip("/")
                if (directory / "memory.events").exists():
                    watch = cls(directory, 2)
                    watch._poller = asyncio.ensure_future(watch._poll_v2())
                    return watch
        log.debug("the job's memory cgroup is not readable here", extra={"pid": pid})
        return None

    def _arm_v1(self) -> bool:
        try:
            self._ofd = os.open(self._dir / "memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
            self._efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            (self._dir / "cgroup.event_control").write_text(f"{self._efd} {self._ofd}")
        except OSError as exc:
            log.debug("cannot watch the job's memory cgroup", extra={"reason": repr(exc)})
            self._close_fds()
            return False
        self._loop.add_reader(self._efd, self._on_event)
        return True

    def _on_event(self) -> None:
        assert self._efd is not None
        with contextlib.suppress(OSError):
            os.eventfd_read(self._efd)
        # The eventfd fires on OOM and when the cgroup is removed; only in the first case can the cgroup still be
        # read (its counters may not have moved yet: the kill is still under way).
        self._check_v1(notified=True)

    def _check_v1(self, *, notified: bool = False) -> None:
        if self._ofd is None:
            return
        try:
            text = os.pread(self._ofd, 4096, 0).decode()
        except OSError:
            return  # the cgroup is gone
        fields = dict(line.split(" ", 1) for line in text.splitlines() if " " in line)
        log.debug("job memory cgroup", extra={"oom_control": fields, "notified": notified})
        if notified or fields.get("under_oom", "0").strip() != "0" or fields.get("oom_kill", "0").strip() != "0":
            self.seen = True

    def _check_v2(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            for line in (self._dir / "memory.events").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and int(value) > 0:
                    self.seen = True

    async def _poll_v2(self) -> None:
        while not self.seen:
            self._check_v2()
            await asyncio.sleep(0.2)

    def close(self) -> bool:
        """Stop watching; whether an OOM kill was seen."""
        if self._version == 1:
            self._check_v1()
        else:
            self._check_v2()
        if self._poller is not None:
            self._poller.cancel()
        self._close_fds()
        return self.seen

    def _close_fds(self) -> None:
        if self._efd is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._efd)
            os.close(self._efd)
            self._efd = None
        if self._ofd is not None:
            os.close(self._ofd)
            self._ofd = None
