"""Who may reach which container port through ``/gpunet/forward/1.0.0``, and forwards ending with their lease.

Provider: a forward stream is accepted only from the lease's consumer node, for a port the job declared, while
the lease is open and its job runs; the address is the container's on its network. Consumer: a forward is made
for an open lease of ours to its provider's node; forwards of a lease that closed or whose job ended are removed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from node.p2p.forward import ForwardRefused, Forwards, Refusal
from node.protocol import lease as L
from node.types import LeaseId

log = logging.getLogger(__name__)


def provider_authorize(engine: Any, executor: Any) -> Any:
    """``authorize(peer, lease_id, port)`` for :meth:`Forwards.serve`."""
    async def authorize(peer: str, lease_id: int, port: int) -> tuple[str, int]:
        rec = engine.dispatcher.get(lease_id, L.Role.PROVIDER)
        if rec is None:
            raise ForwardRefused(Refusal.UNKNOWN_LEASE, f"no lease {lease_id} here")
        side = rec.state.provider
        if side is None or peer != side.peer:
            raise ForwardRefused(Refusal.NOT_CONSUMER, "only the lease's consumer node may forward")
        job = getattr(rec.job, "job", None)
        if rec.state.status != L.LeaseStatus.OPEN or job is None or not rec.job_running:
            raise ForwardRefused(Refusal.LEASE_NOT_RUNNING, "the lease is not open with a running job")
        if port not in tuple(job.ports):
            raise ForwardRefused(Refusal.PORT_NOT_DECLARED, f"port {port} is not among the job's ports")
        address_of = getattr(executor, "address_of", None)
        host = await address_of(LeaseId(lease_id)) if address_of is not None else None
        if not host:
            raise ForwardRefused(Refusal.UNREACHABLE, "the job's container has no address (yet)")
        return host, port

    return authorize


def consumer_peer(engine: Any, lease_id: int) -> str:
    """The provider node of an open lease of ours (``ValueError`` otherwise)."""
    rec = engine.dispatcher.get(lease_id, L.Role.CONSUMER) if engine is not None else None
    if rec is None:
        raise ValueError(f"no consumer lease {lease_id} on this node")
    if rec.state.status != L.LeaseStatus.OPEN or not rec.peer:
        raise ValueError(f"lease {lease_id} is not open (or its provider has not answered yet)")
    return str(rec.peer)


def forward_view(f: Any) -> dict[str, Any]:
    return {"forward_id": f.forward_id, "lease_id": f.lease_id, "container_port": f.container_port,
            "local": f"127.0.0.1:{f.local_port}", "local_port": f.local_port, "connections": f.connections}


async def end_with_leases(forwards: Forwards, engine: Any, interval: float = 1.0) -> None:
    """Remove the forwards of leases that are no longer open, or whose job has a result."""
    while True:
        for lease_id in {f.lease_id for f in forwards.list()}:
            rec = engine.dispatcher.get(lease_id, L.Role.CONSUMER)
            ended = (rec is None or rec.state.status != L.LeaseStatus.OPEN
                     or engine.store.job_result(lease_id) is not None)
            if ended:
                n = await forwards.remove_lease(lease_id)
                log.info("forwards ended with their lease", extra={"lease_id": lease_id, "forwards": n})
                engine.notices.append({"lease_id": lease_id, "notice": "forwards_closed",
                                       "detail": f"{n} forward(s) closed: the lease or its job ended",
                                       "at": time.time()})
        await asyncio.sleep(interval)


class ForwardService:
    """The consumer's forwards, as the API asks for them."""

    def __init__(self, forwards: Forwards, engine: Any) -> None:
        self.forwards = forwards
        self.engine = engine

    def _declared(self, lease_id: int, port: int) -> None:
        from node.protocol.job_spec import decode_job_spec

        spec = self.engine.store.job_spec(lease_id)
        ports = decode_job_spec(spec).ports if spec else ()
        if port not in ports:
            raise ValueError(f"port {port} is not among the ports the lease's job declared {list(ports)}")

    async def add(self, lease_id: int, port: int, local_port: int = 0) -> dict[str, Any]:
        peer = consumer_peer(self.engine, lease_id)
        self._declared(lease_id, port)
        return forward_view(await self.forwards.add(lease_id, peer, port, local_port))

    def list(self, lease_id: int) -> list[dict[str, Any]]:
        return [forward_view(f) for f in self.forwards.list(lease_id)]

    async def remove(self, lease_id: int, forward_id: int) -> bool:
        if not any(f.forward_id == forward_id for f in self.forwards.list(lease_id)):
            return False
        return await self.forwards.remove(forward_id)

    async def wait_ready(self, lease_id: int, port: int, timeout: float) -> tuple[bool, str]:
        """Until the provider can connect to the container port (or ``timeout``)."""
        peer = consumer_peer(self.engine, lease_id)
        self._declared(lease_id, port)
        deadline = asyncio.get_running_loop().time() + timeout
        reason = ""
        while True:
            try:
                code, reason = await self.forwards.probe(lease_id, peer, port)
                if code is Refusal.OK:
                    return True, ""
                if code not in (Refusal.UNREACHABLE, Refusal.LEASE_NOT_RUNNING):
                    return False, f"{code.name}: {reason}"
            except Exception as exc:
                reason = repr(exc)[:200]
            if asyncio.get_running_loop().time() > deadline:
                return False, reason
            await asyncio.sleep(0.25)
