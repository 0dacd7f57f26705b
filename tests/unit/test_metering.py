"""Usage sampling: seeded simulated samples, and the NVML sampler over a fake NVML."""

from __future__ import annotations

from types import SimpleNamespace

import pynvml
import pytest

from node.provider.gpus import GpuDevice, declared_gpus
from node.provider.metering import NvmlSampler, SimulatedSampler


def test_simulated_sampler_is_seeded_and_reports_busy_devices_busy() -> None:
    devices = declared_gpus("2xH100-80GB:81920")
    busy = {devices[0].uuid}

    def run() -> list:
        sampler = SimulatedSampler(seed=7, is_busy=lambda d: d.uuid in busy)
        return [sampler.sample(devices) for _ in range(20)]

    first, second = run(), run()
    assert first == second
    for busy_sample, idle_sample in first:
        assert busy_sample.simulated and idle_sample.simulated
        assert 90 <= busy_sample.utilization_pct <= 100
        assert 0.6 * 81920 <= busy_sample.memory_used_mib <= 0.9 * 81920
        assert idle_sample.utilization_pct <= 3
        assert idle_sample.power_w < busy_sample.power_w


class FakeSamplingNvml:
    def __init__(self) -> None:
        self.shutdowns = 0

    def nvmlInit(self) -> None:
        pass

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> str:
        if uuid == "GPU-gone":
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return uuid

    def nvmlDeviceGetUtilizationRates(self, handle: str) -> SimpleNamespace:
        return SimpleNamespace(gpu=97, memory=40)

    def nvmlDeviceGetMemoryInfo(self, handle: str) -> SimpleNamespace:
        return SimpleNamespace(total=80 * 1024**3, used=10 * 1024**3)

    def nvmlDeviceGetPowerUsage(self, handle: str) -> int:
        if handle == "GPU-nopower":
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return 312_500  # milliwatts


def test_nvml_sampler_reads_metrics_and_tolerates_missing_ones() -> None:
    fake = FakeSamplingNvml()
    sampler = NvmlSampler.open(fake)  # type: ignore[arg-type]
    devices = [
        GpuDevice(0, "GPU-a", "H100", 81920, False),
        GpuDevice(1, "GPU-nopower", "H100", 81920, False),
        GpuDevice(2, "GPU-gone", "H100", 81920, False),
        GpuDevice(0, "SIM-0-H100", "H100", 81920, True),
    ]
    a, nopower, gone, sim = sampler.sample(devices)
    assert (a.utilization_pct, a.memory_used_mib, a.power_w, a.simulated) == (97.0, 10240, 312.5, False)
    assert (nopower.utilization_pct, nopower.power_w) == (97.0, None)
    assert (gone.utilization_pct, gone.memory_used_mib, gone.power_w) == (None, None, None)
    assert sim.simulated and sim.utilization_pct is None
    sampler.close()
    sampler.close()
    assert fake.shutdowns == 1


def test_nvml_sampler_open_fails_without_nvml() -> None:
    if pynvml_available():
        pytest.skip("this host has NVML")
    with pytest.raises(pynvml.NVMLError):
        NvmlSampler.open()


def pynvml_available() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True
