"""GPU inventory: NVML discovery (absent and faked), declared simulated devices, and the fallback between them."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pynvml
import pytest

from node.errors import ConfigError
from node.provider.gpus import (
    SIMULATED_UUID_PREFIX,
    GpuDevice,
    declared_gpus,
    discover_gpus,
    format_cuda_version,
    inventory,
)

GIB = 1024**3


class FakeNvml:
    """The subset of pynvml that discovery uses, over a list of (uuid, name, total bytes) devices."""

    def __init__(
        self,
        devices: list[tuple[str, str | bytes, int]],
        *,
        init_error: Exception | None = None,
        broken: frozenset[int] = frozenset(),
    ) -> None:
        self.devices = devices
        self.init_error = init_error
        self.broken = broken
        self.shutdowns = 0

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise self.init_error

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.54.15"

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return 12040

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if index in self.broken:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return index

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return self.devices[handle][0]

    def nvmlDeviceGetName(self, handle: int) -> str | bytes:
        return self.devices[handle][1]

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(total=self.devices[handle][2], used=0, free=self.devices[handle][2])


def test_discover_on_this_host_never_raises() -> None:
    devices = discover_gpus()
    assert isinstance(devices, list)
    assert all(not d.simulated and d.uuid.startswith("GPU-") for d in devices)


def test_discover_returns_empty_when_nvml_library_missing(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeNvml([], init_error=pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND))
    with caplog.at_level("INFO", logger="node.provider.gpus"):
        assert discover_gpus(fake) == []  # type: ignore[arg-type]
    assert any("NVML unavailable" in r.message for r in caplog.records)
    assert fake.shutdowns == 0


def test_discover_returns_empty_when_pynvml_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    assert discover_gpus() == []


def test_discover_reads_devices_and_skips_a_broken_one() -> None:
    fake = FakeNvml(
        [("GPU-aaaa", b"NVIDIA H100 80GB HBM3", 80 * GIB), ("GPU-bbbb", "x", GIB), ("GPU-cccc", "NVIDIA L4", 23 * GIB)],
        broken=frozenset({1}),
    )
    devices = discover_gpus(fake)  # type: ignore[arg-type]
    assert devices == [
        GpuDevice(0, "GPU-aaaa", "NVIDIA H100 80GB HBM3", 81920, False, "550.54.15", "12.4"),
        GpuDevice(2, "GPU-cccc", "NVIDIA L4", 23552, False, "550.54.15", "12.4"),
    ]
    assert fake.shutdowns == 1


def test_format_cuda_version() -> None:
    assert format_cuda_version(12040) == "12.4"
    assert format_cuda_version(11080) == "11.8"


def test_declared_from_string() -> None:
    devices = declared_gpus("2xH100-80GB:81920, A100 40GB:40960")
    assert [(d.index, d.name, d.memory_mib) for d in devices] == [
        (0, "H100-80GB", 81920),
        (1, "H100-80GB", 81920),
        (2, "A100 40GB", 40960),
    ]
    assert all(d.simulated and d.uuid.startswith(SIMULATED_UUID_PREFIX) for d in devices)
    assert devices[2].uuid == "SIM-2-A100-40GB"
    assert len({d.uuid for d in devices}) == 3
    assert devices[0].driver_version is None


def test_declared_from_dicts() -> None:
    devices = declared_gpus([{"name": "RTX4090", "memory_mib": 24564, "count": 2}, {"name": "L4", "memory_mib": 23034}])
    assert [(d.uuid, d.memory_mib) for d in devices] == [
        ("SIM-0-RTX4090", 24564),
        ("SIM-1-RTX4090", 24564),
        ("SIM-2-L4", 23034),
    ]


@pytest.mark.parametrize("spec", [None, "", []])
def test_declared_empty(spec: object) -> None:
    assert declared_gpus(spec) == []  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "spec",
    [
        "H100",
        "2xH100:",
        "0xH100:81920",
        "H100:0",
        "100xH100:81920",
        ":81920",
        [{"name": "H100"}],
        [{"name": "H100", "memory_mib": "80GB"}],
        [{"name": "H100", "memory_mib": 81920, "vram": 1}],
        [{"name": "H100", "memory_mib": True}],
        ["H100:81920"],
    ],
)
def test_declared_rejects_bad_specs(spec: object) -> None:
    with pytest.raises(ConfigError):
        declared_gpus(spec)  # type: ignore[arg-type]


def test_inventory_falls_back_to_declared_when_no_real_gpus() -> None:
    devices = inventory("2xH100-80GB:81920", discover=lambda: [])
    assert len(devices) == 2
    assert all(d.simulated for d in devices)


def test_inventory_without_nvml_on_this_host_uses_declared() -> None:
    if discover_gpus():
        pytest.skip("this host has real GPUs")
    devices = inventory("1xL4:23034")
    assert [(d.uuid, d.simulated) for d in devices] == [("SIM-0-L4", True)]


def test_inventory_prefers_real_gpus() -> None:
    real = [GpuDevice(0, "GPU-aaaa", "NVIDIA H100", 81559, False, "550", "12.4")]
    assert inventory("2xH100-80GB:81920", discover=lambda: real) == real


def test_inventory_validates_declared_even_with_real_gpus() -> None:
    real = [GpuDevice(0, "GPU-aaaa", "NVIDIA H100", 81559, False)]
    with pytest.raises(ConfigError):
        inventory("garbage", discover=lambda: real)
