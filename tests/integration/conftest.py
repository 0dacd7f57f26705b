"""Fixtures for whole-node integration tests: a devnet (anvil with a 1 s block time, contracts deployed with
short windows, dev wallets funded) and a factory of real in-process nodes (libp2p on loopback, SQLite files)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from eth_account import Account

from node.chain.anvil import Anvil, devnet_key
from node.chain.artifacts import Deployment
from node.chain.client import ChainClient
from node.chain.deploy import DeployParams, deploy_all
from node.chain.proxies import Escrow, Staking, Token
from node.config import ConsumerConfig, NodeConfig, ProviderConfig
from node.service import Node
from node.storage.db import Database

E18 = 10**18
PRICE = 10**12
PROVIDER, CONSUMER = 1, 2


@dataclass
class Devnet:
    anvil: Anvil
    deployment: Deployment
    deployments_file: Path
    tmp: Path

    async def client(self, account: int | None = None) -> ChainClient:
        key = devnet_key(account) if account is not None else None
        return await ChainClient.connect(self.anvil.url, self.deployment,
                                         Database(self.tmp / f"client-{account}-{time.time_ns()}.sqlite"), key)

    async def balance(self, who: str) -> int:
        c = await self.client()
        try:
            return await Token(c).balance(who)
        finally:
            await c.close()

    async def escrow_view(self) -> tuple[ChainClient, Escrow, Staking]:
        c = await self.client()
        return c, Escrow(c), Staking(c)


def address(account: int) -> str:
    return Account.from_key(devnet_key(account)).address


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("devnet")
    anvil = Anvil().start()  # automine while setting up, then one block per second like a real chain
    try:
        params = DeployParams(settlement_window=3, dispute_window=5, liveness_window=5, unbonding_period=5)
        dep_file = tmp / "deployments.json"
        deployment = asyncio.run(deploy_all(anvil.url, devnet_key(0), params, out=dep_file))

        async def fund() -> None:
            c = await ChainClient.connect(anvil.url, deployment, Database(tmp / "faucet.sqlite"), devnet_key(0))
            for idx in range(1, 8):
                await Token(c).mint(f"fund:{idx}", address(idx), 100_000 * E18)
            await c.close()

        asyncio.run(fund())
        _rpc(anvil.url, "evm_setIntervalMining", [1])
        yield Devnet(anvil, deployment, dep_file, tmp)
    finally:
        anvil.stop()


def _rpc(url: str, method: str, params: list[Any]) -> Any:
    import json
    import urllib.request

    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def node_config(devnet: Devnet, data_dir: Path, *, account: int | None = None, provider: bool = False,
                bootstrap: tuple[str, ...] = (), **consumer: Any) -> NodeConfig:
    return NodeConfig(
        data_dir=data_dir, rpc_url=devnet.anvil.url, deployments=devnet.deployments_file, dev_account=account,
        listen=("/ip4/127.0.0.1/tcp/0",), bootstrap=bootstrap, api_port=0, poll_interval=0.2,
        provider=ProviderConfig(enabled=provider, declared_gpus="2xSIM-A100:40960", price_per_gpu_second=PRICE,
                                min_duration=5, max_duration=3600, offer_ttl=600, stake=1_000 * E18,
                                heartbeat_interval=0.5, checkpoint_interval=1.5, executor="process",
                                allow_unsafe_process_executor=True),
        consumer=replace(ConsumerConfig(settle_interval=0.5, settle_every=0.0), **consumer),
    )


NodeFactory = Callable[..., Awaitable[Node]]


@pytest_asyncio.fixture
async def nodes(devnet: Devnet, tmp_path: Path) -> AsyncIterator[NodeFactory]:
    started: list[Node] = []

    async def make(name: str, **kw: Any) -> Node:
        n = Node(node_config(devnet, tmp_path / name, **kw))
        await n.start()
        started.append(n)
        return n

    yield make
    for n in reversed(started):
        await n.stop()


async def until(cond: Callable[[], Any], timeout: float = 20.0, what: str = "condition",
                interval: float = 0.05) -> Any:
    """Wait for ``cond`` (sync or async) to be truthy, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)
