"""The one dispatcher: the only place a lease's state is assigned.

``apply`` runs the pure ``transition``, then writes the new state, the change and its events (the outbox) in one
SQLite transaction (``LeaseStore.save``), and only then hands the events to the effect runner, which marks each
done. A crash anywhere leaves either the old state, or the new state plus the events still to do; ``replay``
carries those out at the next start. Chain writes use idempotency keys (``settle:<lease>:<seq>``...), so a
replayed event never pays twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace

from node.leases.records import EVENT_TYPES, LeaseNotFound, LeaseRecord, PersistedLease
from node.protocol import lease as L
from node.protocol.provider_lease import ProviderKeys
from node.storage.db import Database
from node.storage.lease_store import LeaseStore

#: Carries out one event of a lease; marks its outbox row done (``outbox_id``) once it is.
Execute = Callable[[LeaseRecord, L.Event, int], Awaitable[None]]


class Dispatcher:
    def __init__(self, db: Database, keys: ProviderKeys) -> None:
        self.store: LeaseStore[PersistedLease] = LeaseStore(db, PersistedLease, EVENT_TYPES)
        self.keys = keys
        self.leases: dict[tuple[int, str], LeaseRecord] = {}
        self._lock = asyncio.Lock()
        self._execute: Execute | None = None

    def bind(self, execute: Execute) -> None:
        self._execute = execute

    def load(self) -> list[LeaseRecord]:
        """Read every stored lease (at start)."""
        for state in self.store.load():
            rec = LeaseRecord(state)
            self.leases[rec.key] = rec
        return list(self.leases.values())

    def get(self, lease_id: int, role: L.Role) -> LeaseRecord | None:
        return self.leases.get((lease_id, role.value))

    def need(self, lease_id: int, role: L.Role) -> LeaseRecord:
        rec = self.get(lease_id, role)
        if rec is None:
            raise LeaseNotFound(f"no {role.value} lease {lease_id} on this node")
        return rec

    def __iter__(self) -> Iterator[LeaseRecord]:
        return iter(list(self.leases.values()))

    async def add(self, key: tuple[int, str], make: Callable[[], L.LeaseState], change: L.Change
                  ) -> tuple[LeaseRecord, bool]:
        """Register a new lease: its first stored state is ``make()`` (``change`` made it), built under the lock so
        it may depend on the other leases (free devices). Returns the record and whether it is new (an existing
        lease with the same key wins)."""
        async with self._lock:
            existing = self.leases.get(key)
            if existing is not None:
                return existing, False
            state = make()
            rec = LeaseRecord(state)
            assert rec.key == key, (rec.key, key)
            self.leases[key] = rec
            self.store.save(rec.lease_id, state.role.value, state.status.name, state, change)
            return rec, True

    async def apply(self, rec: LeaseRecord, change: L.Change) -> None:
        async with self._lock:
            before = rec.state
            state, events = L.transition(before, change, self.keys)
            rec.state = state
            if not events and isinstance(change, L.TimerTick) and replace(before, now_ms=state.now_ms) == state:
                return  # a tick that changed nothing but the clock: nothing to write
            ids = self.store.save(rec.lease_id, state.role.value, state.status.name, state, change, events)
        for outbox_id, ev in zip(ids, events, strict=True):
            await self._run(rec, ev, outbox_id)

    async def replay(self) -> None:
        """Carry out the events a crash left in the outbox, oldest first."""
        for pending in self.store.pending():
            rec = self.leases.get((pending.lease_id, pending.role))
            if rec is not None:
                await self._run(rec, pending.event, pending.outbox_id)

    async def _run(self, rec: LeaseRecord, ev: L.Event, outbox_id: int) -> None:
        assert self._execute is not None, "bind() the effect runner first"
        await self._execute(rec, ev, outbox_id)
