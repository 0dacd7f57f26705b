"""The lease engine (``LeaseEngine``) and its parts; see :mod:`node.leases.engine`."""

from node.leases.consumer import job_spec_bytes
from node.leases.engine import LeaseEngine
from node.leases.records import EVENT_TYPES, LeaseNotFound, LeaseRecord, PersistedLease
from node.protocol.lease_messages import PROTOCOL_ID as LEASE_PROTOCOL

__all__ = ["EVENT_TYPES", "LEASE_PROTOCOL", "LeaseEngine", "LeaseNotFound", "LeaseRecord", "PersistedLease",
           "job_spec_bytes"]
