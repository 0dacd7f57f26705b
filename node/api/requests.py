"""Typed requests of the HTTP API: each parser takes decoded JSON (or a path/query string) and returns a frozen
dataclass, or raises ``BadRequest`` with a message that names the field. The server answers ``BadRequest`` with a
400; no input can reach the node as a wrong type.

Integers may be given as JSON integers or as decimal strings (token amounts exceed what JavaScript numbers hold
exactly); booleans, floats and other strings are refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from node.errors import NodeError

MAX_EVENTS = 1000
UINT256_MAX = 2**256 - 1
UINT32_MAX = 2**32 - 1
MAX_LEASE_ID = 2**63 - 1  # what the node's SQLite store holds; the escrow numbers leases from 1 upward


class BadRequest(NodeError, ValueError):
    """The request is malformed; the message says which field and why."""


def _decimal(text: str) -> bool:
    return 0 < len(text) <= 78 and text.isascii() and text.isdecimal()  # 78 digits hold any uint256


def _int(body: Mapping[str, Any], name: str) -> int:
    if name not in body:
        raise BadRequest(f"body needs {name} (integer)")
    value = body[name]
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _decimal(value):
        return int(value)
    raise BadRequest(f"{name} must be an integer (JSON number or decimal string)")


def _positive(body: Mapping[str, Any], name: str, maximum: int = UINT256_MAX) -> int:
    value = _int(body, name)
    if value <= 0:
        raise BadRequest(f"{name} must be positive")
    if value > maximum:
        raise BadRequest(f"{name} must be at most {maximum}")
    return value


def _bytes32(body: Mapping[str, Any], name: str) -> bytes:
    value = body.get(name)
    if not isinstance(value, str):
        raise BadRequest(f"body needs {name} (0x-prefixed hex of 32 bytes)")
    try:
        raw = bytes.fromhex(value.removeprefix("0x"))
    except ValueError:
        raise BadRequest(f"{name} must be hex") from None
    if len(raw) != 32:
        raise BadRequest(f"{name} must be 32 bytes, got {len(raw)}")
    return raw


def _body(body: object) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise BadRequest("request body must be a JSON object")
    return body


@dataclass(frozen=True, slots=True)
class OpenLeaseRequest:
    offer_id: bytes
    gpus: int
    deposit: int
    job: dict[str, Any] | None = None

    @classmethod
    def parse(cls, body: object) -> OpenLeaseRequest:
        b = _body(body)
        job = b.get("job")
        if job is not None and not isinstance(job, dict):
            raise BadRequest("job must be an object")
        return cls(_bytes32(b, "offer_id"), _positive(b, "gpus", UINT32_MAX), _positive(b, "deposit"), job)


@dataclass(frozen=True, slots=True)
class TopUpRequest:
    amount: int

    @classmethod
    def parse(cls, body: object) -> TopUpRequest:
        return cls(_positive(_body(body), "amount"))


def parse_lease_id(text: str) -> int:
    if not _decimal(text) or int(text) > MAX_LEASE_ID:
        raise BadRequest(f"lease id must be an integer in 0..{MAX_LEASE_ID}")
    return int(text)


def parse_limit(text: str | None, default: int = 100, maximum: int = MAX_EVENTS) -> int:
    if text is None:
        return default
    if not _decimal(text) or int(text) == 0:
        raise BadRequest("query parameter limit must be a positive integer")
    return min(int(text), maximum)
