"""The job a consumer sends: its canonical JSON (what the consumer's ``JobSpec`` EIP-712 signature covers, by
keccak) in two versions, and the checks a provider makes before handing it to an executor.

Version 1 (a host process, for the process and simulated executors)::

    {"argv": [str, ...], "env": {str: str}, "timeout_s": int}

Version 2 (an OCI container)::

    {"version": 2, "image": str, "command": [str, ...], "args": [str, ...], "env": {str: str},
     "timeout_s": int, "resources": {"memory_bytes": int, "milli_cpus": int, "shm_bytes": int,
     "scratch_bytes": int}, "ports": [int, ...]}

Canonical form: keys sorted, no whitespace, non-ASCII as ``\\uXXXX`` escapes (Python's ``json.dumps(sort_keys=True,
separators=(",", ":"))``);
every key is written, ``0`` in ``resources`` takes the provider's default. The container runs ``command + args``
(``command`` replaces the image's entrypoint). ``ports`` are container TCP ports the consumer may reach through
its node (service leases). Pure: no I/O.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

MAX_ARGV = 64
MAX_PORTS = 16
MAX_ENV_ENTRIES = 256
DEFAULT_TIMEOUT_S = 3600
_IMAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,511}$")
_RESOURCE_KEYS = ("memory_bytes", "milli_cpus", "shm_bytes", "scratch_bytes")
_V1_KEYS = frozenset({"argv", "env", "timeout_s"})
_V2_KEYS = frozenset({"version", "image", "command", "args", "env", "timeout_s", "resources", "ports"})


class JobSpecError(ValueError):
    """A job spec that is not well-formed; the message names the field."""


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A checked job spec of either version (``image == ""`` for version 1)."""

    version: int
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    timeout_s: int = DEFAULT_TIMEOUT_S
    image: str = ""
    resources: tuple[int, int, int, int] = (0, 0, 0, 0)  # memory_bytes, milli_cpus, shm_bytes, scratch_bytes
    ports: tuple[int, ...] = ()
    command_len: int = 0  # version 2: how many leading items of argv are the command


def _strings(value: Any, what: str, *, non_empty: bool) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(a, str) and "\0" not in a for a in value):
        raise JobSpecError(f"job.{what} must be a list of strings")
    if non_empty and (not value or not value[0]):
        raise JobSpecError(f"job.{what} must be a non-empty list of strings")
    return value


def _env(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise JobSpecError("job.env must map strings to strings")
    if len(value) > MAX_ENV_ENTRIES:
        raise JobSpecError(f"job.env has more than {MAX_ENV_ENTRIES} entries")
    return value


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise JobSpecError(f"job.{what} must be a positive integer")
    return value


def _resources(value: Any) -> tuple[int, int, int, int]:
    if not isinstance(value, dict) or set(value) - set(_RESOURCE_KEYS):
        raise JobSpecError(f"job.resources must be an object with keys among {', '.join(_RESOURCE_KEYS)}")
    out = []
    for key in _RESOURCE_KEYS:
        v = value.get(key, 0)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v >= 2**63:
            raise JobSpecError(f"job.resources.{key} must be a non-negative integer (0: the provider's default)")
        out.append(v)
    return out[0], out[1], out[2], out[3]


def _ports(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) > MAX_PORTS or not all(
            isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536 for p in value):
        raise JobSpecError(f"job.ports must be a list of at most {MAX_PORTS} TCP port numbers")
    if len(set(value)) != len(value):
        raise JobSpecError("job.ports lists a port twice")
    return tuple(sorted(value))


def parse_job(job: Any) -> JobSpec:
    """Check a job as a consumer gives it (either version); raises :class:`JobSpecError`."""
    if not isinstance(job, dict):
        raise JobSpecError("job must be an object")
    version = job.get("version", 2 if "image" in job else 1)
    if version == 1 and "version" not in job:
        unknown = set(job) - _V1_KEYS
        if unknown:
            raise JobSpecError(f"unknown job field(s) {', '.join(sorted(unknown))}")
        argv = _strings(job.get("argv"), "argv", non_empty=True)
        if len(argv) > MAX_ARGV:
            raise JobSpecError(f"job.argv has more than {MAX_ARGV} items")
        env = _env(job.get("env", {}))
        timeout = _positive_int(job.get("timeout_s", DEFAULT_TIMEOUT_S), "timeout_s")
        return JobSpec(1, tuple(argv), tuple(sorted(env.items())), timeout)
    if version != 2 or isinstance(version, bool):
        raise JobSpecError(f"unsupported job version {version!r}")
    unknown = set(job) - _V2_KEYS
    if unknown:
        raise JobSpecError(f"unknown job field(s) {', '.join(sorted(unknown))}")
    image = job.get("image")
    if not isinstance(image, str) or not _IMAGE_RE.match(image):
        raise JobSpecError("job.image must be an OCI image reference")
    command = _strings(job.get("command"), "command", non_empty=True)
    args = _strings(job.get("args", []), "args", non_empty=False)
    if len(command) + len(args) > MAX_ARGV:
        raise JobSpecError(f"job.command and job.args have more than {MAX_ARGV} items together")
    env = _env(job.get("env", {}))
    timeout = _positive_int(job.get("timeout_s", DEFAULT_TIMEOUT_S), "timeout_s")
    resources = _resources(job.get("resources", {}))
    ports = _ports(job.get("ports", []))
    return JobSpec(2, tuple(command + args), tuple(sorted(env.items())), timeout, image, resources, ports,
                   len(command))


def to_json(spec: JobSpec) -> dict[str, Any]:
    """The JSON object of a checked spec, every key written."""
    if spec.version == 1:
        return {"argv": list(spec.argv), "env": dict(spec.env), "timeout_s": spec.timeout_s}
    return {"version": 2, "image": spec.image, "command": list(spec.argv[: spec.command_len]),
            "args": list(spec.argv[spec.command_len :]), "env": dict(spec.env), "timeout_s": spec.timeout_s,
            "resources": dict(zip(_RESOURCE_KEYS, spec.resources, strict=True)), "ports": list(spec.ports)}


def canonical_bytes(spec: JobSpec) -> bytes:
    return json.dumps(to_json(spec), sort_keys=True, separators=(",", ":")).encode("ascii")


def job_spec_bytes(job: Any) -> bytes:
    """The canonical bytes of a job as a consumer gives it (checked; either version)."""
    return canonical_bytes(parse_job(job))


def decode_job_spec(raw: bytes) -> JobSpec:
    """A received spec: valid UTF-8 JSON of either version. The canonical form is not required (the signature
    covers the bytes as received); missing optional keys take their defaults."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise JobSpecError(f"job spec is not JSON: {exc}") from exc
    return parse_job(data)
