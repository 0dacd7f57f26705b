"""GPU inventory of a provider node.

Real GPUs are discovered through NVML (``pynvml``, from the ``nvidia-ml-py`` package). A machine without the
NVIDIA driver, or where NVML fails to initialise, has no real GPUs: :func:`discover_gpus` then returns ``[]``
and logs the reason at info level; it never raises. For development a node may *declare* GPUs in its config;
those are built by :func:`declared_gpus`, always carry ``simulated=True`` and a ``SIM-`` uuid, so they can never
be mistaken for hardware. :func:`inventory` picks the real GPUs when there are any, else the declared ones.

Declared spec formats (``ConfigError`` on anything else):

* a string of comma-separated groups ``[<count>x]<name>:<memory MiB>``, e.g. ``"2xH100-80GB:81920"`` or
  ``"1xA100-40GB:40960, RTX4090:24564"``;
* a list of dicts ``{"name": str, "memory_mib": int, "count": int = 1}``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeGuard

from node.errors import ConfigError

log = logging.getLogger(__name__)

SIMULATED_UUID_PREFIX = "SIM-"
_MAX_DECLARED = 64  # more than any real chassis; guards against a typo like "1000xH100"
_GROUP_RE = re.compile(r"^(?:(?P<count>\d+)\s*[xX]\s*)?(?P<name>[^:,]+?)\s*:\s*(?P<mem>\d+)$")
_SLUG_RE = re.compile(r"[^A-Za-z0-9.]+")

DeclaredSpec = str | Sequence[Mapping[str, Any]] | None


@dataclass(frozen=True, slots=True)
class GpuDevice:
    """One GPU the node can lease out.

    ``index`` is the NVML index (PCI bus order) for real devices and a 0-based position for simulated ones.
    ``uuid`` is NVML's ``GPU-...`` uuid, or ``SIM-<index>-<name>`` when simulated. Versions are ``None`` when
    unknown (always for simulated devices).
    """

    index: int
    uuid: str
    name: str
    memory_mib: int
    simulated: bool
    driver_version: str | None = None
    cuda_driver_version: str | None = None


def discover_gpus(nvml: ModuleType | None = None) -> list[GpuDevice]:
    """Real GPUs visible through NVML, in NVML index order; ``[]`` when NVML is missing or fails.

    ``nvml`` is the ``pynvml`` module (injectable for tests). A device that fails to answer (e.g. fallen off
    the bus) is skipped with a warning; the others are still returned.
    """
    if nvml is None:
        try:
            import pynvml
        except ImportError as exc:
            log.info("gpu discovery: pynvml not importable, no real GPUs", extra={"reason": str(exc)})
            return []
        nvml = pynvml
    try:
        nvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...: no usable GPUs
        log.info("gpu discovery: NVML unavailable, no real GPUs", extra={"reason": _describe(exc)})
        return []
    try:
        return _read_devices(nvml)
    except Exception as exc:
        log.info("gpu discovery: NVML query failed, no real GPUs", extra={"reason": _describe(exc)})
        return []
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception as exc:
            log.debug("gpu discovery: nvmlShutdown failed", extra={"reason": _describe(exc)})


def _read_devices(nvml: ModuleType) -> list[GpuDevice]:
    driver = _optional(lambda: _text(nvml.nvmlSystemGetDriverVersion()))
    cuda = _optional(lambda: format_cuda_version(int(nvml.nvmlSystemGetCudaDriverVersion())))
    devices: list[GpuDevice] = []
    for index in range(int(nvml.nvmlDeviceGetCount())):
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            devices.append(
                GpuDevice(
                    index=index,
                    uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                    name=_text(nvml.nvmlDeviceGetName(handle)),
                    memory_mib=int(nvml.nvmlDeviceGetMemoryInfo(handle).total) // (1024 * 1024),
                    simulated=False,
                    driver_version=driver,
                    cuda_driver_version=cuda,
                )
            )
        except Exception as exc:
            log.warning("gpu discovery: skipping device", extra={"index": index, "reason": _describe(exc)})
    return devices


def format_cuda_version(version: int) -> str:
    """NVML's integer CUDA driver version (``12040``) as ``"12.4"``."""
    return f"{version // 1000}.{(version % 1000) // 10}"


def declared_gpus(spec: DeclaredSpec) -> list[GpuDevice]:
    """Simulated devices from a config spec (see the module docstring); ``None``/empty means none."""
    if spec is None:
        return []
    groups = _parse_string_spec(spec) if isinstance(spec, str) else _parse_dict_spec(spec)
    devices: list[GpuDevice] = []
    for name, memory_mib, count in groups:
        for _ in range(count):
            index = len(devices)
            slug = _SLUG_RE.sub("-", name).strip("-") or "gpu"
            devices.append(
                GpuDevice(
                    index=index,
                    uuid=f"{SIMULATED_UUID_PREFIX}{index}-{slug}",
                    name=name,
                    memory_mib=memory_mib,
                    simulated=True,
                )
            )
    if len(devices) > _MAX_DECLARED:
        raise ConfigError(f"declared GPUs: {len(devices)} devices, at most {_MAX_DECLARED}")
    return devices


def inventory(
    declared: DeclaredSpec = None, *, discover: Callable[[], list[GpuDevice]] = discover_gpus
) -> list[GpuDevice]:
    """Real GPUs if NVML finds any, else the declared simulated ones.

    The declared spec is validated even when real GPUs win, so a bad config fails the same way on every host.
    """
    simulated = declared_gpus(declared)
    real = discover()
    if real:
        if simulated:
            log.info("gpu inventory: real GPUs found, ignoring declared ones", extra={"real": len(real)})
        else:
            log.info("gpu inventory: real GPUs", extra={"count": len(real)})
        return real
    log.info("gpu inventory: no real GPUs, using declared simulated ones", extra={"count": len(simulated)})
    return simulated


def _parse_string_spec(spec: str) -> list[tuple[str, int, int]]:
    groups = []
    for raw in spec.split(","):
        part = raw.strip()
        if not part:
            continue
        match = _GROUP_RE.match(part)
        if match is None:
            raise ConfigError(f"declared GPUs: {part!r} is not [<count>x]<name>:<memory MiB>")
        count = int(match["count"]) if match["count"] is not None else 1
        groups.append(_checked(match["name"].strip(), int(match["mem"]), count, part))
    return groups


def _parse_dict_spec(spec: Sequence[Mapping[str, Any]]) -> list[tuple[str, int, int]]:
    groups = []
    for entry in spec:
        if not isinstance(entry, Mapping):
            raise ConfigError(f"declared GPUs: entry {entry!r} is not a mapping")
        unknown = set(entry) - {"name", "memory_mib", "count"}
        if unknown:
            raise ConfigError(f"declared GPUs: unknown keys {sorted(unknown)} in {dict(entry)!r}")
        name, memory, count = entry.get("name"), entry.get("memory_mib"), entry.get("count", 1)
        if not isinstance(name, str) or not _is_int(memory) or not _is_int(count):
            raise ConfigError(f"declared GPUs: {dict(entry)!r} needs name: str, memory_mib: int, count: int")
        groups.append(_checked(name.strip(), memory, count, dict(entry)))
    return groups


def _checked(name: str, memory_mib: int, count: int, source: object) -> tuple[str, int, int]:
    if not name:
        raise ConfigError(f"declared GPUs: empty name in {source!r}")
    if memory_mib <= 0:
        raise ConfigError(f"declared GPUs: memory must be positive MiB in {source!r}")
    if not 1 <= count <= _MAX_DECLARED:
        raise ConfigError(f"declared GPUs: count must be 1..{_MAX_DECLARED} in {source!r}")
    return name, memory_mib, count


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _optional(read: Callable[[], str]) -> str | None:
    try:
        return read()
    except Exception:
        return None


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
