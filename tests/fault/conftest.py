"""Fixtures of the fault and attack suites: the integration suite's devnet and nodes, plus a factory that points a
node at another chain endpoint (the proxy of ``chainproxy``), and the suite's size.

Every test here is marked ``fault``. By default each runs a bounded version (seconds of faults, a few nodes) so that
the whole suite fits a CI run; ``GPUNET_FAULT_FULL=1`` runs the long version (longer outages, more nodes, more
flooding).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest_asyncio

from node.service import Node
from tests.integration.conftest import Devnet, devnet, node_config, until

FULL = os.environ.get("GPUNET_FAULT_FULL", "") not in ("", "0")


def size(bounded: Any, full: Any) -> Any:
    """The bounded figure by default, the full one under ``GPUNET_FAULT_FULL=1``."""
    return full if FULL else bounded


NodeMaker = Callable[..., Awaitable[Node]]


@pytest_asyncio.fixture
async def make_node(devnet: Devnet, tmp_path: Path) -> AsyncIterator[NodeMaker]:
    """``await make_node(name, rpc_url=..., **node_config kwargs)``: a started in-process node, stopped at the end."""
    started: list[Node] = []

    async def make(name: str, rpc_url: str | None = None, **kw: Any) -> Node:
        cfg = node_config(devnet, tmp_path / name, **kw)
        if rpc_url is not None:
            cfg = replace(cfg, rpc_url=rpc_url)
        n = Node(cfg)
        await n.start()
        started.append(n)
        return n

    yield make
    for n in reversed(started):
        await n.stop()


async def get_json(url: str, token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s, s.get(url, headers=headers) as r:
        r.raise_for_status()
        return await r.json()


async def get_text(url: str) -> str:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s, s.get(url) as r:
        r.raise_for_status()
        return await r.text()


__all__ = ["FULL", "NodeMaker", "devnet", "get_json", "get_text", "size", "until"]
