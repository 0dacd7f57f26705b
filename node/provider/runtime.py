"""Which executor a provider node runs its leases' jobs with, built from its configuration.

``executor = "container"``: the Docker Engine API on ``container_socket`` (or the first socket that answers of
:data:`SOCKET_CANDIDATES`); the node checks the runtime at start and logs what it found (engine, versions, OCI
runtime, cgroups, GPU integration), or refuses to start saying what it tried. Containers a previous run left
behind are dealt with when the lease engine starts, before any lease is served: the jobs of leases the node still
serves are taken over (:meth:`~node.provider.container.ContainerExecutor.reattach`), the rest removed
(:meth:`~node.provider.container.ContainerExecutor.cleanup_orphans`). ``"process"`` runs jobs as host
processes (remote consumers only with ``allow_unsafe_process_executor``); ``"simulated"`` runs nothing (demos,
tests).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.config import ProviderConfig
from node.errors import ConfigError
from node.provider.container import (
    ContainerExecutor,
    ContainerRuntimeUnavailable,
    ContainerSettings,
    MiB,
    ResourceCaps,
    resolve_resources,
)
from node.provider.executor import JobResources, ProcessExecutor, SimulatedExecutor

log = logging.getLogger(__name__)

SOCKET_CANDIDATES = ("/run/podman/podman.sock", "/var/run/docker.sock", "/run/docker.sock")


@dataclass(frozen=True, slots=True)
class ExecutorChoice:
    executor: Any
    kind: str  # process | simulated | container
    description: str  # what was found, for the log and the status page


def container_settings(pc: ProviderConfig, node_id: str) -> ContainerSettings:
    caps = ResourceCaps(memory_bytes=pc.max_memory_mib * MiB, cpus=float(pc.max_cpus),
                        shm_bytes=pc.max_shm_mib * MiB, scratch_bytes=pc.max_scratch_mib * MiB)
    base = ContainerSettings(node_id=node_id)
    defaults = base.defaults
    try:  # the built-in defaults, lowered to fit caps below them
        resolve_resources(defaults, defaults, caps)
    except ValueError:
        defaults = JobResources(memory_bytes=min(defaults.memory_bytes or caps.memory_bytes, caps.memory_bytes),
                                cpus=min(defaults.cpus or caps.cpus, caps.cpus),
                                shm_bytes=min(defaults.shm_bytes or caps.shm_bytes, caps.shm_bytes),
                                scratch_bytes=min(defaults.scratch_bytes or caps.scratch_bytes, caps.scratch_bytes))
    return ContainerSettings(node_id=node_id, gpu_mode="nvidia" if pc.gpu_mode == "nvidia" else "cdi", caps=caps,
                             defaults=defaults, allowed_images=tuple(pc.allowed_images) or None,
                             default_image=pc.default_image or None, allow_egress=pc.allow_egress)


def find_socket(configured: str) -> str | None:
    if configured:
        return configured
    return next((s for s in SOCKET_CANDIDATES if os.path.exists(s)), None)


async def choose_executor(pc: ProviderConfig, data_dir: Path, node_id: str) -> ExecutorChoice:
    """The configured executor, ready; raises ``ConfigError`` when the container runtime is not there."""
    if pc.executor == "simulated":
        return ExecutorChoice(SimulatedExecutor(), "simulated", "simulated executor: jobs are not run")
    if pc.executor == "process":
        work = Path(pc.work_dir) if pc.work_dir else data_dir / "jobs"
        unsafe = pc.allow_unsafe_process_executor
        return ExecutorChoice(ProcessExecutor(work, allow_unsafe_process_executor=unsafe), "process",
                              "process executor: jobs run as host processes"
                              + (" (remote consumers allowed: unsafe)" if unsafe else " (operator's own jobs only)"))
    socket = find_socket(pc.container_socket)
    if socket is None:
        raise ConfigError("provider.executor = 'container' but no container runtime socket was found (tried "
                          f"{', '.join(SOCKET_CANDIDATES)}); set provider.container_socket, start Docker, or run "
                          "'podman system service --time=0 unix:///run/podman/podman.sock'")
    try:
        executor = await ContainerExecutor.connect(socket, container_settings(pc, node_id))
    except ContainerRuntimeUnavailable as exc:
        raise ConfigError(str(exc)) from exc
    missing = executor.runtime.gpu_missing(executor.settings.gpu_mode)
    description = f"container executor on unix://{socket}: {executor.runtime.describe()}"
    if missing:
        description += f"; no GPUs for containers: {missing}"
    return ExecutorChoice(executor, "container", description)


def node_id_of(peer_id: str) -> str:
    """A container-label-safe id of this node (its libp2p peer id is base58: already safe)."""
    return "".join(c for c in peer_id if c.isalnum())[-32:] or "node"
