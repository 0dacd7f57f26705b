"""A real node's start and stop (anvil, libp2p on loopback): a start that fails at its last step closes every part
it had created, in reverse order; a p2p host that stops under a running node stops the node."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import replace

import pytest

from node.errors import ConfigError
from node.service import Node

from .conftest import PROVIDER, node_config

pytestmark = pytest.mark.integration


async def test_api_port_taken_closes_every_part_already_created(devnet, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = node_config(devnet, tmp_path / "p", account=PROVIDER, provider=True)
        node = Node(replace(cfg, api_port=port))
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            await node.start()
    sup = node.supervisor
    assert {"database", "chain client", "offer store", "p2p host", "lease engine"} <= set(sup.created)
    assert "api" not in sup.created
    assert sup.closed == sup.created[::-1]
    assert node.p2p.listen_addrs  # it did listen before the API step failed
    await node.stop()
    await node.stop()
    assert sup.closed == sup.created[::-1]
    again = Node(node_config(devnet, tmp_path / "p", account=PROVIDER, provider=True))  # same data dir: nothing held
    await again.start()
    await again.stop()


async def test_a_p2p_host_that_stops_under_the_node_stops_the_node(nodes):
    node = await nodes("solo")
    await node.p2p.stop()  # the host goes away while the node runs
    assert await asyncio.wait_for(node.wait(), 20) == "p2p host"
    assert node.supervisor.closed == node.supervisor.created[::-1]


async def test_a_failing_lease_engine_loop_stops_the_node(nodes):
    node = await nodes("solo", account=3)
    assert node.engine is not None

    async def broken() -> None:
        raise RuntimeError("tick broke")

    node.engine.tick = broken  # the next timer tick fails: the loop, an essential part, ends with it
    assert await asyncio.wait_for(node.wait(), 20) == "lease ticks"
