"""The consumer stops sending a lease's job spec once the lease is closed (it used to retry for about 35 s)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import nacl.signing

from node.crypto import eip712
from node.leases.consumer import JOB_SPEC_ATTEMPTS, ConsumerDriver
from node.protocol import lease as L


@dataclass
class Runner:
    done_calls: list[tuple[int, str | None]] = field(default_factory=list)

    def done(self, outbox_id: int, error: str | None = None) -> None:
        self.done_calls.append((outbox_id, error))


@dataclass
class Transport:
    rec: Any
    close_after: int | None
    calls: int = 0

    async def request(self, peer: str, protocol: str, data: bytes, timeout: float) -> bytes | None:
        self.calls += 1
        if self.close_after is not None and self.calls >= self.close_after:
            self.rec.state.status = L.LeaseStatus.CLOSED  # the consumer closed the lease meanwhile
        return None  # the provider does not take it (e.g. it has not seen the lease yet)


def driver(rec: Any, close_after: int | None) -> tuple[ConsumerDriver, Transport, Runner]:
    d = object.__new__(ConsumerDriver)
    node_key = nacl.signing.SigningKey.generate()
    d.store = SimpleNamespace(job_spec=lambda lid: b'{"argv":["true"]}')  # type: ignore[assignment]
    d.wallet_key = b"\x01" * 32
    d.domain = eip712.Domain(31337, "0x" + "22" * 20)
    d.node_key, d.node_pub = node_key, bytes(node_key.verify_key)
    transport, runner = Transport(rec, close_after), Runner()
    d.transport, d.runner = transport, runner  # type: ignore[assignment]
    return d, transport, runner


def run(close_after: int | None, monkeypatch: Any) -> tuple[Transport, Runner]:
    async def no_wait(_: float) -> None:
        return None

    monkeypatch.setattr("node.leases.consumer.asyncio.sleep", no_wait)
    rec = SimpleNamespace(state=SimpleNamespace(status=L.LeaseStatus.OPEN), peer="12D3Koo-provider")
    d, transport, runner = driver(rec, close_after)
    provider_key = bytes(nacl.signing.SigningKey.generate().verify_key)
    ev = SimpleNamespace(lease_id=7, provider_node_key=provider_key)
    asyncio.run(d._send_job_spec(rec, ev, 42))  # type: ignore[arg-type]
    return transport, runner


def test_stops_once_the_lease_is_closed(monkeypatch: Any) -> None:
    transport, runner = run(close_after=2, monkeypatch=monkeypatch)
    assert transport.calls == 2
    assert runner.done_calls == [(42, "lease no longer open")]


def test_retries_while_the_lease_is_open(monkeypatch: Any) -> None:
    transport, runner = run(close_after=None, monkeypatch=monkeypatch)
    assert transport.calls == JOB_SPEC_ATTEMPTS
    assert runner.done_calls == [(42, "provider did not take the job spec")]
