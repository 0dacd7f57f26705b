"""Stable listen ports across restarts, and the consumer dialling a quiet provider again."""

from __future__ import annotations

from dataclasses import dataclass

from node.leases.reconnect import Reconnector
from node.p2p.stable_addrs import remember_listen_addrs, stable_listen_addrs

CONFIGURED = ("/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/tcp/4001")


def test_a_port_0_listen_address_gets_the_port_of_the_previous_run(tmp_path):
    assert stable_listen_addrs(CONFIGURED, tmp_path) == CONFIGURED  # first run: a random port
    remember_listen_addrs(CONFIGURED, ("/ip4/127.0.0.1/tcp/40123", "/ip4/127.0.0.1/tcp/4001"), tmp_path)
    assert stable_listen_addrs(CONFIGURED, tmp_path) == ("/ip4/127.0.0.1/tcp/40123", "/ip4/127.0.0.1/tcp/4001")
    (tmp_path / "listen-ports.json").write_text("not json")
    assert stable_listen_addrs(CONFIGURED, tmp_path) == CONFIGURED  # a damaged file: a new port, no crash


@dataclass
class Info:
    peer_id: str
    addrs: tuple[str, ...]


class Transport:
    def __init__(self) -> None:
        self.connected = [Info("P", ("/ip4/127.0.0.1/tcp/40123",))]
        self.dials: list[str] = []

    async def peers(self) -> list[Info]:
        return self.connected

    async def connect(self, addr: str) -> str:
        self.dials.append(addr)
        return "P"


async def test_a_quiet_provider_is_dialled_again_at_its_remembered_address():
    t = Transport()
    r = Reconnector(t)
    await r.remember({"P"})
    t.connected = []  # it restarted: the connection is gone
    assert await r.redial(["P"]) == ["P"]
    assert t.dials == ["/ip4/127.0.0.1/tcp/40123/p2p/P"]
    assert await r.redial(["P"]) == []  # not again right away


async def test_a_transport_that_cannot_dial_is_left_alone():
    r = Reconnector(object())
    await r.remember({"P"})
    assert await r.redial(["P"]) == []
