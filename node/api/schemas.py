"""JSON Schemas (2020-12, as OpenAPI 3.1 uses them) of the API's request and response bodies.

Token amounts are decimal strings (they exceed what JSON numbers hold exactly in most clients); requests take them
as decimal strings or JSON integers. Objects allow fields beyond those listed, so a view can grow without breaking
clients.
"""

from __future__ import annotations

from typing import Any

from node.api.requests import MAX_LEASE_ID, UINT32_MAX, UINT256_MAX

Schema = dict[str, Any]

AMOUNT: Schema = {"type": "string", "pattern": "^[0-9]{1,78}$", "description": "token base units, decimal"}
AMOUNT_IN: Schema = {"oneOf": [{"type": "string", "pattern": "^0*[1-9][0-9]*$", "maxLength": 78},
                               {"type": "integer", "minimum": 1, "maximum": UINT256_MAX}],
                     "description": "token base units: a decimal string or a JSON integer, at least 1"}
ADDRESS: Schema = {"type": "string", "pattern": "^0x[0-9a-fA-F]{40}$"}
HASH: Schema = {"type": "string", "pattern": "^0x[0-9a-fA-F]{64}$"}
INT: Schema = {"type": "integer"}
OPT_INT: Schema = {"type": ["integer", "null"]}
OPT_STR: Schema = {"type": ["string", "null"]}
TIME: Schema = {"type": ["integer", "number", "null"], "description": "unix time, seconds"}

LEASE_ID: Schema = {"type": "integer", "minimum": 0, "maximum": MAX_LEASE_ID}
ERROR: Schema = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}

STATUS: Schema = {
    "type": "object",
    "required": ["peer_id", "addrs", "chain_id", "escrow", "staking", "token", "offers", "provider"],
    "properties": {
        "peer_id": {"type": "string"}, "addrs": {"type": "array", "items": {"type": "string"}},
        "address": {"type": ["string", "null"]}, "chain_id": INT, "escrow": ADDRESS, "staking": ADDRESS,
        "token": ADDRESS, "offers": INT, "provider": {"type": "boolean"},
        "devices": {"type": "array", "items": {"type": "object"}}, "validation": {"type": "object"},
        "uptime_s": INT, "published": {"type": "array"}, "gas": {"type": "array"}, "chain": {"type": "object"},
    },
}

OFFER: Schema = {
    "type": "object",
    "required": ["offer_id", "provider", "gpu_model", "gpu_count", "price_per_gpu_second", "expires_at"],
    "properties": {
        "offer_id": HASH, "provider": ADDRESS, "nonce": INT, "gpu_model": {"type": "string"}, "gpu_count": INT,
        "vram_mib": INT, "price_per_gpu_second": AMOUNT, "min_duration": INT, "max_duration": INT,
        "expires_at": INT, "region": OPT_STR, "simulated": {"type": ["boolean", "null"]},
    },
}
OFFERS: Schema = {"type": "object", "required": ["offers"], "properties": {"offers": {"type": "array", "items": OFFER}}}

PEER: Schema = {"type": "object", "required": ["peer_id"],
                "properties": {"peer_id": {"type": "string"}, "addrs": {"type": "array", "items": {"type": "string"}},
                               "in_mesh": {"type": "boolean"}}}
PEERS: Schema = {"type": "object", "required": ["peers"], "properties": {"peers": {"type": "array", "items": PEER}}}

LEASE: Schema = {
    "type": "object",
    "required": ["lease_id", "role", "status", "provider", "gpus", "deposit", "paid"],
    "properties": {
        "lease_id": INT, "role": {"type": "string", "enum": ["consumer", "provider"]}, "status": {"type": "string"},
        "provider": ADDRESS, "consumer": {"type": ["string", "null"]}, "gpus": INT,
        "price_per_gpu_second": AMOUNT, "deposit": AMOUNT, "paid": AMOUNT, "fees": AMOUNT, "refund": AMOUNT,
        "started_at": OPT_INT, "ends_at": OPT_INT, "closed_at": OPT_INT, "settled_seq": INT,
        "settled_gpu_seconds": INT, "accepted_seq": INT, "accepted_gpu_seconds": INT, "heartbeats": INT,
        "rejected_checkpoints": INT, "close_reason": OPT_STR, "peer": OPT_STR, "faults": {"type": "object"},
        "job_result": {"type": "object", "properties": {"exit_code": INT, "log_tail": {"type": "string"},
                                                         "simulated": {"type": "boolean"}}},
    },
}
LEASE_DETAIL: Schema = {
    **LEASE,
    "properties": {
        **LEASE["properties"],
        "checkpoints": {"type": "array", "items": {
            "type": "object", "required": ["seq", "gpu_seconds", "status"],
            "properties": {"seq": INT, "gpu_seconds": INT, "status": {"type": "string"},
                           "reason": {"type": "string"}}}},
        "notices": {"type": "array", "items": {"type": "object"}},
        "transactions": {"type": "array", "description": "the lease's contract events, oldest first, with the "
                         "transaction and block that carried each", "items": {
                             "type": "object", "required": ["block", "event", "tx"],
                             "properties": {"block": INT, "event": {"type": "string"}, "tx": {"type": "string"},
                                            "seq": INT}}},
    },
}
LEASES: Schema = {"type": "object", "required": ["leases"], "properties": {"leases": {"type": "array", "items": LEASE}}}

EVENT: Schema = {"type": "object", "required": ["block", "event", "tx"],
                 "properties": {"block": INT, "event": {"type": "string"}, "tx": {"type": "string"}},
                 "description": "the log's decoded arguments are fields of the event too"}
EVENTS: Schema = {"type": "object", "required": ["events"], "properties": {"events": {"type": "array", "items": EVENT}}}

OPEN_LEASE: Schema = {
    "type": "object", "required": ["offer_id", "gpus", "deposit"],
    "properties": {
        "offer_id": {**HASH, "description": "the offer's id as listed by GET /v1/offers"},
        "gpus": {"type": "integer", "minimum": 1, "maximum": UINT32_MAX},
        "deposit": AMOUNT_IN,
        "job": {"type": ["object", "null"], "description": "job spec sent to the provider, encrypted"},
    },
}
TOP_UP: Schema = {"type": "object", "required": ["amount"], "properties": {"amount": AMOUNT_IN}}
CANCELLED: Schema = {"type": "object", "required": ["nonce_below"],
                     "properties": {"nonce_below": INT, "tx": OPT_STR}}
