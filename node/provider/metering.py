"""Usage sampling on the provider: what the GPUs are doing.

A :class:`UsageSampler` reads utilisation, memory and power per device. :class:`NvmlSampler` asks NVML;
:class:`SimulatedSampler` makes up seeded, reproducible numbers for simulated devices. Samples are informative
(heartbeats, dashboard); they do not decide what is billed: billed usage is wall-clock GPU time, accounted by the
provider's side of the lease protocol.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Protocol, TypeVar

from node.provider.gpus import GpuDevice

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
            import pynvml

            nvml = pynvml
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
