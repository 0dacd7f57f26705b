"""Usage metering on the provider: what the GPUs are doing, and how many GPU-seconds each lease has used.

Two separate concerns:

* **Sampling** (I/O): a :class:`UsageSampler` reads utilisation, memory and power per device.
  :class:`NvmlSampler` asks NVML; :class:`SimulatedSampler` makes up seeded, reproducible numbers for
  simulated devices. Samples are informative (heartbeats, dashboard); they do not decide what is billed.
* **Accounting** (pure): billed usage is wall-clock GPU time, ``gpu_count x elapsed`` while the lease's job runs,
  which is exactly what the consumer can bound on its side (``cumulative <= gpus x elapsed``). :class:`LeaseUsage`
  is an immutable record with pure transitions; :class:`Meter` is a small registry of them. Time is passed in
  as integer milliseconds from a monotonic clock; nothing here reads a clock.

Accounting invariants: cumulative usage never decreases; a clock that goes backwards accrues nothing and does
not move the reference point back; nothing accrues while the job is stopped or after the lease is closed.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Protocol, TypeVar

from node.provider.gpus import GpuDevice
from node.types import LeaseId

log = logging.getLogger(__name__)
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class DeviceSample:
    """One reading of one device; a field NVML could not read is ``None``."""

    index: int
    uuid: str
    utilization_pct: float | None
    memory_used_mib: int | None
    power_w: float | None
    simulated: bool


class UsageSampler(Protocol):
    def sample(self, devices: Sequence[GpuDevice]) -> list[DeviceSample]:
        """One sample per device, in the order given. Must not raise for a device that fails to answer."""
        ...


class NvmlSampler:
    """Reads real devices through NVML. Create with :meth:`open`; call :meth:`close` when done.

    Devices are looked up by uuid, so an index reordering between discovery and sampling cannot mix them up.
    Simulated devices passed in are answered with an all-``None`` sample flagged ``simulated``.
    """

    def __init__(self, nvml: ModuleType) -> None:
        self._nvml = nvml
        self._closed = False

    @classmethod
    def open(cls, nvml: ModuleType | None = None) -> NvmlSampler:
        """Initialise NVML; raises whatever ``nvmlInit`` raises (callers check ``discover_gpus`` first)."""
        if nvml is None:
            import pynvml as nvml
        nvml.nvmlInit()
        return cls(nvml)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self._nvml.nvmlShutdown()
            except Exception as exc:
                log.debug("nvml sampler: shutdown failed", extra={"reason": str(exc)})

    def sample(self, devices: Sequence[GpuDevice]) -> list[DeviceSample]:
        return [self._sample_one(device) for device in devices]

    def _sample_one(self, device: GpuDevice) -> DeviceSample:
        if device.simulated or self._closed:
            return DeviceSample(device.index, device.uuid, None, None, None, simulated=device.simulated)
        nvml = self._nvml
        try:
            handle = nvml.nvmlDeviceGetHandleByUUID(device.uuid)
        except Exception as exc:
            log.warning("nvml sampler: device not found", extra={"uuid": device.uuid, "reason": str(exc)})
            return DeviceSample(device.index, device.uuid, None, None, None, simulated=False)
        util = _read(lambda: float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu))
        mem = _read(lambda: int(nvml.nvmlDeviceGetMemoryInfo(handle).used) // (1024 * 1024))
        power = _read(lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0)  # NVML reports milliwatts
        return DeviceSample(device.index, device.uuid, util, mem, power, simulated=False)


def _read(read: Callable[[], _T]) -> _T | None:
    try:
        return read()
    except Exception:  # NVML_ERROR_NOT_SUPPORTED and friends: that metric is unknown on this device
        return None


class SimulatedSampler:
    """Reproducible readings for simulated devices.

    ``is_busy(device)`` says whether a job is using the device (e.g. ``lambda d: handle.running``). A busy device
    reports 90-100 % utilisation, 60-90 % of its memory and 250-350 W; an idle one 0-3 %, under 2 % of memory
    and 40-70 W. The same seed and the same sequence of calls give the same readings.
    """

    def __init__(self, *, seed: int = 0, is_busy: Callable[[GpuDevice], bool] = lambda _device: False) -> None:
        self._rng = random.Random(seed)
        self._is_busy = is_busy

    def sample(self, devices: Sequence[GpuDevice]) -> list[DeviceSample]:
        samples = []
        for device in devices:
            rng = self._rng
            if self._is_busy(device):
                util, mem_frac, power = rng.uniform(90, 100), rng.uniform(0.6, 0.9), rng.uniform(250, 350)
            else:
                util, mem_frac, power = rng.uniform(0, 3), rng.uniform(0, 0.02), rng.uniform(40, 70)
            samples.append(
                DeviceSample(
                    index=device.index,
                    uuid=device.uuid,
                    utilization_pct=round(util, 1),
                    memory_used_mib=int(device.memory_mib * mem_frac),
                    power_w=round(power, 1),
                    simulated=True,
                )
            )
        return samples


# --- accounting (pure) -------------------------------------------------------------------------------------


class MeterError(ValueError):
    """A metering call that makes no sense for the lease's state (unknown lease, restart after close)."""


@dataclass(frozen=True, slots=True)
class LeaseUsage:
    """Accumulated usage of one lease.

    ``last_ms`` is the time up to which usage has been accounted; ``running`` says whether the lease's job is
    running (and so accruing); ``closed`` is final.
    """

    lease_id: LeaseId
    gpu_count: int
    gpu_ms: int = 0
    last_ms: int = 0
    running: bool = False
    closed: bool = False

    @property
    def gpu_seconds(self) -> int:
        """Whole GPU-seconds used (floor): the figure a usage checkpoint carries."""
        return self.gpu_ms // 1000


def new_usage(lease_id: LeaseId, gpu_count: int, now_ms: int) -> LeaseUsage:
    if gpu_count < 0:
        raise MeterError(f"lease {lease_id}: gpu_count must be >= 0, got {gpu_count}")
    return LeaseUsage(lease_id=lease_id, gpu_count=gpu_count, last_ms=now_ms)


def accrue(usage: LeaseUsage, now_ms: int) -> LeaseUsage:
    """Account usage up to ``now_ms``: ``gpu_count x elapsed`` if running. Time going backwards is ignored."""
    if now_ms <= usage.last_ms or usage.closed:
        return usage
    added = usage.gpu_count * (now_ms - usage.last_ms) if usage.running else 0
    return dataclasses.replace(usage, gpu_ms=usage.gpu_ms + added, last_ms=now_ms)


def job_started(usage: LeaseUsage, now_ms: int) -> LeaseUsage:
    if usage.closed:
        raise MeterError(f"lease {usage.lease_id}: closed, cannot start a job")
    return dataclasses.replace(accrue(usage, now_ms), running=True)


def job_ended(usage: LeaseUsage, now_ms: int) -> LeaseUsage:
    return dataclasses.replace(accrue(usage, now_ms), running=False)


def lease_closed(usage: LeaseUsage, now_ms: int) -> LeaseUsage:
    return dataclasses.replace(job_ended(usage, now_ms), closed=True)


class Meter:
    """Usage of every lease this node serves. Not thread-safe: drive it from the asyncio core.

    Typical use: ``start_job`` when the executor starts the job, ``on_tick`` every heartbeat, ``end_job`` when
    the job's outcome arrives, ``close`` when the lease closes; read ``gpu_seconds`` for a checkpoint.
    """

    def __init__(self) -> None:
        self._leases: dict[LeaseId, LeaseUsage] = {}

    def start_job(self, lease_id: LeaseId, gpu_count: int, now_ms: int) -> LeaseUsage:
        """Begin accruing for the lease (registering it on first use)."""
        usage = self._leases.get(lease_id) or new_usage(lease_id, gpu_count, now_ms)
        if usage.gpu_count != gpu_count:
            raise MeterError(f"lease {lease_id}: has {usage.gpu_count} GPUs, not {gpu_count}")
        return self._put(job_started(usage, now_ms))

    def on_tick(self, now_ms: int) -> None:
        """Account every lease up to ``now_ms``."""
        for lease_id, usage in self._leases.items():
            self._leases[lease_id] = accrue(usage, now_ms)

    def end_job(self, lease_id: LeaseId, now_ms: int) -> LeaseUsage:
        return self._put(job_ended(self.usage(lease_id), now_ms))

    def close(self, lease_id: LeaseId, now_ms: int) -> LeaseUsage:
        return self._put(lease_closed(self.usage(lease_id), now_ms))

    def forget(self, lease_id: LeaseId) -> None:
        """Drop a lease once its final usage has been settled and stored."""
        self._leases.pop(lease_id, None)

    def usage(self, lease_id: LeaseId) -> LeaseUsage:
        try:
            return self._leases[lease_id]
        except KeyError:
            raise MeterError(f"lease {lease_id}: not metered") from None

    def gpu_ms(self, lease_id: LeaseId) -> int:
        return self.usage(lease_id).gpu_ms

    def gpu_seconds(self, lease_id: LeaseId) -> int:
        return self.usage(lease_id).gpu_seconds

    def leases(self) -> Iterable[LeaseUsage]:
        return tuple(self._leases.values())

    def _put(self, usage: LeaseUsage) -> LeaseUsage:
        self._leases[usage.lease_id] = usage
        return usage
