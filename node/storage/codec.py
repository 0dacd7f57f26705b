"""Stored state as data: a strict, type-directed JSON encoding of the node's frozen dataclasses.

What is stored must survive code changes and must never be able to run code when it is read back, so state is
written as plain JSON and decoded against the *declared* field types of a dataclass, nothing else:

==========================  ===========================================================
Python type                 JSON
==========================  ===========================================================
``int``                     number (arbitrary precision; ``bool`` is refused where an int is declared)
``bool``                    ``true`` / ``false``
``str``                     string
``bytes``                   string ``"0x"`` + lowercase hex
``enum.Enum`` subclass      string: the member **name** (values may change, names are the contract)
``X | None``                ``null`` or the encoding of ``X``
``int | str`` (scalars)     the scalar; which one is told by its JSON type
``tuple[X, ...]``           array of ``X``
``list[X]``                 array of ``X``
``tuple[X, Y]``             array of exactly two items
dataclass                   object with exactly the ``init`` fields, by name
==========================  ===========================================================

Decoding is strict: a missing field, an unknown field or a value of the wrong JSON type raises
``StoredDataError`` naming the path (``state.terms.offer_hash``). A change to the shape of a stored dataclass
therefore needs a migration (``node.storage.migrations``) — it can never silently misread old data.

A value whose class is chosen at run time (the outbox holds many event types) is stored *tagged*:
``{"type": <registered name>, "data": {...}}``; only names in the caller's registry decode.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from node.errors import NodeError

T = TypeVar("T")

_HINTS: dict[type, dict[str, Any]] = {}


class StoredDataError(NodeError, ValueError):
    """Stored data does not match the shape this build expects (needs a migration, or it is corrupt)."""


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = typing.get_type_hints(cls)
        _HINTS[cls] = hints
    return hints


def _init_fields(cls: type) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if f.init]


def to_data(value: Any) -> Any:
    """Encode ``value`` (a dataclass, enum, bytes, scalar or sequence of those) as JSON-ready data."""
    if isinstance(value, enum.Enum):  # before int/str: IntEnum and StrEnum members are stored by name too
        return value.name
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return "0x" + bytes(value).hex()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_data(getattr(value, f.name)) for f in _init_fields(type(value))}
    if isinstance(value, tuple | list):
        return [to_data(v) for v in value]
    raise StoredDataError(f"cannot store a value of type {type(value).__name__}")


def from_data(tp: Any, data: Any, path: str = "$") -> Any:
    """Decode ``data`` as the declared type ``tp`` (see the module table); raises ``StoredDataError``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if data is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return from_data(rest[0], data, path)
        if not set(rest) <= {int, str, bool}:
            raise StoredDataError(f"{path}: unions other than X | None or of int/str/bool are not storable")
        for scalar in (bool, int, str):  # told apart by their JSON type
            if scalar in rest and isinstance(data, scalar) and (scalar is bool or not isinstance(data, bool)):
                return data
        raise _wrong(path, " or ".join(sorted(t.__name__ for t in rest)), data)
    if origin in (tuple, list):
        if not isinstance(data, list):
            raise _wrong(path, "an array", data)
        args = typing.get_args(tp)
        if origin is list or (len(args) == 2 and args[1] is Ellipsis):
            return origin(from_data(args[0], v, f"{path}[{i}]") for i, v in enumerate(data))
        if len(args) != len(data):
            raise StoredDataError(f"{path}: expected {len(args)} items, found {len(data)}")
        return tuple(from_data(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, data, strict=True)))
    if tp is type(None):
        if data is not None:
            raise _wrong(path, "null", data)
        return None
    if tp is bool:
        if not isinstance(data, bool):
            raise _wrong(path, "a boolean", data)
        return data
    if tp is int:
        if not isinstance(data, int) or isinstance(data, bool):
            raise _wrong(path, "an integer", data)
        return data
    if tp is str:
        if not isinstance(data, str):
            raise _wrong(path, "a string", data)
        return data
    if tp is bytes:
        if not isinstance(data, str) or not data.startswith("0x"):
            raise _wrong(path, "a 0x-hex string", data)
        try:
            return bytes.fromhex(data[2:])
        except ValueError:
            raise StoredDataError(f"{path}: not hex") from None
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if not isinstance(data, str) or data not in tp.__members__:
            raise StoredDataError(f"{path}: {data!r} is not a member of {tp.__name__}")
        return tp[data]
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _from_object(tp, data, path)
    raise StoredDataError(f"{path}: type {tp!r} is not storable")


def _from_object(cls: type[T], data: Any, path: str) -> T:
    if not isinstance(data, dict):
        raise _wrong(path, f"an object ({cls.__name__})", data)
    fields = _init_fields(cls)
    names = {f.name for f in fields}
    unknown = sorted(set(data) - names)
    if unknown:
        raise StoredDataError(f"{path}: unknown field(s) {', '.join(unknown)} for {cls.__name__}")
    missing = sorted(names - set(data))
    if missing:
        raise StoredDataError(f"{path}: missing field(s) {', '.join(missing)} for {cls.__name__}")
    hints = _hints(cls)
    kwargs = {f.name: from_data(hints[f.name], data[f.name], f"{path}.{f.name}") for f in fields}
    return cls(**kwargs)


def _wrong(path: str, expected: str, data: Any) -> StoredDataError:
    return StoredDataError(f"{path}: expected {expected}, found {type(data).__name__}")


def dumps(value: Any) -> str:
    """Canonical JSON text of ``value`` (sorted keys, no spaces)."""
    return json.dumps(to_data(value), sort_keys=True, separators=(",", ":"))


def loads(tp: type[T], text: str | bytes) -> T:
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StoredDataError(f"stored value is not JSON: {exc}") from None
    return typing.cast(T, from_data(tp, data))


def dumps_tagged(value: Any, registry: Mapping[str, type]) -> str:
    """``{"type": name, "data": ...}`` for a value whose class is registered under ``name``."""
    name = type(value).__name__
    if registry.get(name) is not type(value):
        raise StoredDataError(f"{name} is not a registered stored type")
    return json.dumps({"type": name, "data": to_data(value)}, sort_keys=True, separators=(",", ":"))


def loads_tagged(text: str | bytes, registry: Mapping[str, type]) -> Any:
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StoredDataError(f"stored value is not JSON: {exc}") from None
    if not isinstance(data, dict) or set(data) != {"type", "data"}:
        raise StoredDataError("a tagged value must be {\"type\": ..., \"data\": ...}")
    cls = registry.get(data["type"]) if isinstance(data["type"], str) else None
    if cls is None:
        raise StoredDataError(f"unknown stored type {data['type']!r}")
    return from_data(cls, data["data"], data["type"])
