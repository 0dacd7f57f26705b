"""Reader for schema-1 databases, whose lease blobs were Python pickles (protocol 4).

Schema 1 stored lease state, outbox events and checkpoints as pickles. Loading a pickle can run arbitrary code,
so this module never does: it walks the opcode stream with ``pickletools.genops`` (a parser that constructs
nothing) through a tiny stack machine that understands only the opcodes schema 1 ever wrote, and builds inert
values. Every class reference must be one of the frozen schema-1 shapes below (module, name and field order as
they were); anything else — another class, another opcode — is refused with ``StoredDataError``.

The result is the schema-2 JSON data of the same value (``node.storage.codec`` conventions: bytes as 0x-hex,
enums by member name, dataclasses as objects of their ``init`` fields), so the migration never needs today's
classes to read yesterday's rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pickletools import genops  # an opcode parser only: it builds no objects
from typing import Any

from node.storage.codec import StoredDataError

# Field order of every dataclass schema 1 could store (a slots dataclass pickles its state as a list in this order).
V1_FIELDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("node.crypto.eip712", "Domain"): ("chain_id", "verifying_contract", "separator"),
    ("node.protocol.checkpoint", "Checkpoint"): ("lease_id", "seq", "cumulative_gpu_seconds", "heartbeat_head",
                                                 "timestamp"),
    ("node.protocol.checkpoint", "SignedCheckpoint"): ("checkpoint", "signature"),
    ("node.protocol.checkpoint", "Tolerance"): ("per_gpu_s", "bps", "clock_skew_ms", "heartbeat_interval_ms",
                                                "max_gap_intervals"),
    ("node.protocol.lease", "LeaseConfig"): (
        "max_consecutive_rejections", "settle_interval_ms", "settle_retry_ms", "topup_warning_ms",
        "auto_topup_amount", "close_on_exhaustion", "settlement_window_s", "provider_silence_ms", "max_pending_beats",
        "tolerance"),
    ("node.protocol.lease", "OfferTerms"): ("offer_hash", "provider", "provider_node_key", "price_per_gpu_second",
                                            "max_duration"),
    ("node.protocol.lease", "PendingSettlement"): ("seq", "cumulative", "amount", "sent_at_ms"),
    ("node.protocol.lease", "LeaseState"): (
        "role", "terms", "consumer", "gpus", "deposit", "domain", "config", "status", "lease_id",
        "price_per_gpu_second", "started_at", "ends_at", "closed_at", "now_ms", "job_spec_hash", "last_accepted",
        "accepted_digest", "accepted_head_seq", "accepted_head_time_ms", "accepted_head_gpu_seconds", "pending_beats",
        "tip_hash", "tip_seq", "tip_time_ms", "tip_gpu_seconds", "last_beat_at_ms", "silence_notified", "settled_seq",
        "settled_cumulative", "paid", "fees", "pending_settlement", "last_settle_sent_ms", "last_settle_sent_seq",
        "settle_blocked_until_ms", "topup_in_flight", "topup_notified_for_ends_at", "consecutive_rejections",
        "rejected_total", "accepted_total", "heartbeats_accepted", "heartbeats_rejected", "close_reason", "refund"),
    ("node.protocol.lease", "ContractSendOpenLease"): ("offer_hash", "gpus", "deposit"),
    ("node.protocol.lease", "SendJobSpec"): ("lease_id", "provider_node_key", "job_spec_hash"),
    ("node.protocol.lease", "StoreHeartbeat"): ("lease_id", "seq", "hash", "signed"),
    ("node.protocol.lease", "StoreCheckpoint"): ("lease_id", "signed_cp", "accepted", "reason", "detail"),
    ("node.protocol.lease", "StoreJobResult"): ("lease_id", "exit_code", "log_tail", "simulated"),
    ("node.protocol.lease", "ContractSendSettle"): ("lease_id", "signed_cp", "amount"),
    ("node.protocol.lease", "ContractSendClose"): ("lease_id", "reason"),
    ("node.protocol.lease", "ContractSendFinalize"): ("lease_id",),
    ("node.protocol.lease", "ContractSendTopUp"): ("lease_id", "amount"),
    ("node.protocol.lease", "NotifyUser"): ("lease_id", "notice", "detail", "data"),
    ("node.protocol.provider_lease", "BeatRef"): ("seq", "hash", "time_ms", "gpu_seconds"),
    ("node.protocol.provider_lease", "ProviderMeter"): (
        "lease_id", "gpus", "started_at", "ends_at", "closed_at", "gpu_ms", "metered_until_ms", "hb_seq", "hb_head",
        "hb_time_ms", "recent", "cp_seq", "cp_cumulative", "cp_timestamp", "last_cp_ms"),
}
# Fields that were derived, not constructor arguments (recomputed on load).
V1_DERIVED: dict[tuple[str, str], frozenset[str]] = {("node.crypto.eip712", "Domain"): frozenset({"separator"})}
# Enum members by value, as they were.
V1_ENUMS: dict[tuple[str, str], dict[Any, str]] = {
    ("node.protocol.lease", "Role"): {"consumer": "CONSUMER", "provider": "PROVIDER"},
    ("node.protocol.lease", "LeaseStatus"): {10: "OPENING", 20: "OPEN", 30: "CLOSING", 40: "CLOSED",
                                             45: "FINALIZING", 50: "FINALIZED"},
    ("node.protocol.lease", "CloseReason"): {"user": "USER", "too_many_rejections": "TOO_MANY_REJECTIONS",
                                             "deposit_exhausted": "DEPOSIT_EXHAUSTED", "lease_end": "LEASE_END"},
    ("node.protocol.lease", "Notice"): {v: v.upper() for v in (
        "lease_opened", "heartbeat_rejected", "checkpoint_rejected", "equivocation", "topup_suggested",
        "provider_silent", "closing", "lease_closed", "lease_finalized", "job_result", "settled_elsewhere",
        "settle_failed", "ignored")},
    ("node.protocol.checkpoint", "RejectReason"): {v: v.upper() for v in (
        "wrong_lease", "bad_signature", "lease_not_open", "after_close", "equivocation", "seq_replayed", "seq_gap",
        "timestamp_in_future", "timestamp_regressed", "cumulative_decreased", "over_claim", "malformed_heartbeat",
        "bad_heartbeat_signature", "chain_broken", "heartbeat_out_of_order", "heartbeat_gap", "heartbeat_in_future",
        "heartbeat_over_claim", "head_mismatch", "head_time_mismatch", "unproven_usage")},
}


@dataclass(frozen=True)
class _Class:
    key: tuple[str, str]


@dataclass
class _Obj:
    cls: _Class
    state: list[Any] | None = None


@dataclass(frozen=True)
class _EnumValue:
    cls: _Class
    value: Any


@dataclass
class _Mark:
    pass


@dataclass
class _Machine:
    stack: list[Any] = field(default_factory=list)
    memo: list[Any] = field(default_factory=list)

    def pop_mark(self) -> list[Any]:
        for i in range(len(self.stack) - 1, -1, -1):
            if isinstance(self.stack[i], _Mark):
                items = self.stack[i + 1:]
                del self.stack[i:]
                return items
        raise StoredDataError("schema-1 blob: MARK missing")


_SCALARS = {"SHORT_BINUNICODE", "BINUNICODE", "SHORT_BINBYTES", "BINBYTES", "BININT", "BININT1", "BININT2", "LONG1"}


def read_pickle(blob: bytes) -> Any:
    """The value in a schema-1 blob, as inert Python values (see the module docstring)."""
    m = _Machine()
    try:
        for op, arg, _ in genops(bytes(blob)):
            name = op.name
            if name in ("PROTO", "FRAME"):
                continue
            if name in _SCALARS:
                m.stack.append(arg)
            elif name == "MEMOIZE":
                m.memo.append(m.stack[-1])
            elif name in ("BINGET", "LONG_BINGET"):
                if not isinstance(arg, int):
                    raise StoredDataError("schema-1 blob: memo index is not an integer")
                m.stack.append(m.memo[arg])
            elif name == "MARK":
                m.stack.append(_Mark())
            elif name == "NONE":
                m.stack.append(None)
            elif name in ("NEWTRUE", "NEWFALSE"):
                m.stack.append(name == "NEWTRUE")
            elif name == "EMPTY_TUPLE":
                m.stack.append(())
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                n = int(name[-1])
                items = m.stack[-n:]
                del m.stack[-n:]
                m.stack.append(tuple(items))
            elif name == "TUPLE":
                m.stack.append(tuple(m.pop_mark()))
            elif name == "EMPTY_LIST":
                m.stack.append([])
            elif name == "APPENDS":
                items = m.pop_mark()
                m.stack[-1].extend(items)
            elif name == "APPEND":
                item = m.stack.pop()
                m.stack[-1].append(item)
            elif name == "STACK_GLOBAL":
                qual, mod = m.stack.pop(), m.stack.pop()
                key = (mod, qual)
                if key not in V1_FIELDS and key not in V1_ENUMS:
                    raise StoredDataError(f"schema-1 blob refers to {mod}.{qual}, which schema 1 never stored")
                m.stack.append(_Class(key))
            elif name == "NEWOBJ":
                args, cls = m.stack.pop(), m.stack.pop()
                if not isinstance(cls, _Class) or cls.key not in V1_FIELDS or args != ():
                    raise StoredDataError("schema-1 blob: unexpected object construction")
                m.stack.append(_Obj(cls))
            elif name == "BUILD":
                state = m.stack.pop()
                obj = m.stack[-1]
                if not isinstance(obj, _Obj) or not isinstance(state, list):
                    raise StoredDataError("schema-1 blob: unexpected object state")
                obj.state = state
            elif name == "REDUCE":
                args, cls = m.stack.pop(), m.stack.pop()
                if not isinstance(cls, _Class) or cls.key not in V1_ENUMS or len(args) != 1:
                    raise StoredDataError("schema-1 blob: unexpected call")
                m.stack.append(_EnumValue(cls, args[0]))
            elif name == "STOP":
                if len(m.stack) != 1:
                    raise StoredDataError("schema-1 blob: unbalanced stack")
                return m.stack[0]
            else:
                raise StoredDataError(f"schema-1 blob: opcode {name} is not part of schema 1")
    except (ValueError, IndexError, TypeError, AttributeError) as exc:
        raise StoredDataError(f"schema-1 blob is corrupt: {exc}") from None
    raise StoredDataError("schema-1 blob: no STOP")


def to_v2(value: Any) -> Any:
    """Schema-2 JSON data of an inert schema-1 value."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, tuple | list):
        return [to_v2(v) for v in value]
    if isinstance(value, _EnumValue):
        member = V1_ENUMS[value.cls.key].get(value.value)
        if member is None:
            raise StoredDataError(f"schema-1 blob: {value.value!r} is not a {value.cls.key[1]}")
        return member
    if isinstance(value, _Obj):
        names = V1_FIELDS[value.cls.key]
        if value.state is None or len(value.state) != len(names):
            raise StoredDataError(f"schema-1 blob: {value.cls.key[1]} has {len(value.state or [])} fields, "
                                  f"expected {len(names)}")
        derived = V1_DERIVED.get(value.cls.key, frozenset())
        return {n: to_v2(v) for n, v in zip(names, value.state, strict=True) if n not in derived}
    raise StoredDataError(f"schema-1 blob: cannot convert {type(value).__name__}")


def class_name(value: Any) -> str:
    """The schema-1 class name of an object read by ``read_pickle`` (for tagged values)."""
    if not isinstance(value, _Obj):
        raise StoredDataError("schema-1 blob: expected an object")
    return value.cls.key[1]
