"""Metering: pure GPU-time accounting, seeded simulated samples, and the NVML sampler over a fake NVML."""

from __future__ import annotations

from types import SimpleNamespace

import pynvml
import pytest

from node.provider.gpus import GpuDevice, declared_gpus
from node.provider.metering import (
    LeaseUsage,
    Meter,
    MeterError,
    NvmlSampler,
    SimulatedSampler,
    accrue,
    job_ended,
    job_started,
    lease_closed,
    new_usage,
)
from node.types import LeaseId

L1, L2 = LeaseId(1), LeaseId(2)


def make_usage(gpu_count: int = 2, now_ms: int = 1_000) -> LeaseUsage:
    return new_usage(L1, gpu_count, now_ms)


# --- pure transitions ---------------------------------------------------------------------------------------


def test_accrues_gpu_count_times_elapsed_while_running() -> None:
    usage = job_started(make_usage(gpu_count=2, now_ms=1_000), 1_000)
    usage = accrue(usage, 1_750)
    assert usage.gpu_ms == 1_500
    usage = accrue(usage, 3_000)
    assert (usage.gpu_ms, usage.gpu_seconds) == (4_000, 4)


def test_gpu_seconds_floor() -> None:
    usage = accrue(job_started(make_usage(gpu_count=3), 1_000), 1_333)
    assert (usage.gpu_ms, usage.gpu_seconds) == (999, 0)
    assert accrue(usage, 1_334).gpu_seconds == 1


def test_nothing_accrues_before_start_or_after_end() -> None:
    usage = accrue(make_usage(now_ms=0), 5_000)
    assert usage.gpu_ms == 0
    usage = job_started(usage, 6_000)  # idle time before start is not billed
    usage = job_ended(usage, 7_000)
    assert usage.gpu_ms == 2_000
    assert accrue(usage, 60_000).gpu_ms == 2_000


def test_restart_within_a_lease_bills_only_running_time() -> None:
    usage = job_started(make_usage(gpu_count=1, now_ms=0), 0)
    usage = job_ended(usage, 1_000)
    usage = job_started(usage, 5_000)
    usage = accrue(usage, 5_500)
    assert usage.gpu_ms == 1_500


def test_clock_going_backwards_accrues_nothing_and_keeps_reference() -> None:
    usage = accrue(job_started(make_usage(gpu_count=1, now_ms=0), 0), 2_000)
    back = accrue(usage, 1_000)
    assert back == usage
    assert accrue(back, 2_500).gpu_ms == 2_500  # not 1_500 + 1_500


def test_close_is_final() -> None:
    usage = lease_closed(job_started(make_usage(gpu_count=4, now_ms=0), 0), 1_000)
    assert (usage.gpu_ms, usage.running, usage.closed) == (4_000, False, True)
    assert accrue(usage, 9_000) == usage
    with pytest.raises(MeterError):
        job_started(usage, 9_000)


def test_zero_gpu_lease_accrues_nothing_and_negative_is_refused() -> None:
    assert accrue(job_started(make_usage(gpu_count=0, now_ms=0), 0), 10_000).gpu_ms == 0
    with pytest.raises(MeterError):
        new_usage(L1, -1, 0)


# --- Meter registry -----------------------------------------------------------------------------------------


def test_meter_tracks_several_leases() -> None:
    meter = Meter()
    meter.start_job(L1, gpu_count=2, now_ms=0)
    meter.on_tick(500)
    meter.start_job(L2, gpu_count=1, now_ms=500)
    meter.on_tick(1_500)
    assert (meter.gpu_ms(L1), meter.gpu_ms(L2)) == (3_000, 1_000)
    meter.end_job(L1, 2_000)
    meter.on_tick(4_000)
    assert (meter.gpu_ms(L1), meter.gpu_ms(L2)) == (4_000, 3_500)
    assert (meter.gpu_seconds(L1), meter.gpu_seconds(L2)) == (4, 3)
    final = meter.close(L2, 4_999)
    meter.on_tick(100_000)
    assert final.gpu_ms == meter.gpu_ms(L2) == 4_499
    assert {u.lease_id for u in meter.leases()} == {L1, L2}
    meter.forget(L1)
    with pytest.raises(MeterError):
        meter.gpu_seconds(L1)


def test_meter_refuses_a_different_gpu_count_for_the_same_lease() -> None:
    meter = Meter()
    meter.start_job(L1, gpu_count=2, now_ms=0)
    meter.end_job(L1, 10)
    with pytest.raises(MeterError):
        meter.start_job(L1, gpu_count=3, now_ms=20)


def test_meter_unknown_lease() -> None:
    with pytest.raises(MeterError):
        Meter().end_job(L1, 0)


# --- samplers -----------------------------------------------------------------------------------------------


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
