"""The in-memory handle of a lease, what of it is stored, and the registry of stored event types."""

from __future__ import annotations

import asyncio
import functools
import typing
from dataclasses import dataclass, field

from node.crypto.nodekey import peer_id_of_node_key
from node.errors import RecoverableError
from node.protocol import lease as L
from node.provider.executor import JobHandle

#: Event classes the outbox may hold, by name (``LeaseStore`` decodes only these).
EVENT_TYPES: dict[str, type] = {cls.__name__: cls for cls in typing.get_args(L.Event)}

#: What of a lease survives a restart: its state, all of it (``LeaseStore`` stores it as JSON).
PersistedLease = L.LeaseState


class LeaseNotFound(RecoverableError, KeyError):
    pass


@dataclass(eq=False)
class LeaseRecord:
    """One lease of this node (one per role). ``state`` is assigned only by the dispatcher; ``job`` and
    ``serving`` are live objects of this run (a restarted node may take a container job over again)."""

    state: L.LeaseState
    job: JobHandle | None = field(default=None, repr=False)
    serving: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def key(self) -> tuple[int, str]:
        return (self.state.lease_id, self.state.role.value)

    @property
    def lease_id(self) -> int:
        return self.state.lease_id

    @property
    def peer(self) -> str | None:
        """The counterpart's node: the provider's from its registered key; the consumer's once its job spec
        was accepted."""
        side = self.state.provider
        if side is not None:
            return side.peer
        node_key = self.state.terms.provider_node_key
        return _peer_of(node_key) if any(node_key) else None

    @property
    def job_running(self) -> bool:
        return self.job is not None and self.job.running


@functools.lru_cache(maxsize=1024)
def _peer_of(node_key: bytes) -> str:
    return peer_id_of_node_key(node_key)
