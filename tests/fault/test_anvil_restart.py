"""The chain node restarts from its saved state (anvil ``--state``: written at stop, loaded at start) while a
lease runs. Transactions that were only in its pool are gone; the nodes ride it out, rebroadcast what they had in
flight, and the lease settles, closes and finalizes with no transaction lost or sent twice."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from eth_account import Account

from node.chain.anvil import Anvil, devnet_key
from node.chain.client import ChainClient
from node.chain.deploy import DeployParams, deploy_all
from node.chain.proxies import Token
from node.storage.db import Database
from tests.integration.conftest import CONSUMER, E18, PRICE, PROVIDER, Devnet, _rpc, address

from .checks import escrow_events, mined_intents, unresolved, wallet_nonce
from .conftest import NodeMaker, size, until

pytestmark = [pytest.mark.fault, pytest.mark.integration]

DOWN_S = size(0.0, 15.0)  # how long the chain stays down between stop and start


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    """Like the integration devnet (1 s blocks, short windows, funded wallets), with its state kept on disk."""
    tmp = tmp_path_factory.mktemp("restartable-devnet")
    anvil = Anvil(state=tmp / "anvil-state.json").start()
    try:
        params = DeployParams(settlement_window=3, dispute_window=5, liveness_window=5, unbonding_period=5)
        dep_file = tmp / "deployments.json"
        deployment = asyncio.run(deploy_all(anvil.url, devnet_key(0), params, out=dep_file))

        async def fund() -> None:
            c = await ChainClient.connect(anvil.url, deployment, Database(tmp / "faucet.sqlite"), devnet_key(0))
            for idx in (PROVIDER, CONSUMER):
                await Token(c).mint(f"fund:{idx}", address(idx), 100_000 * E18)
            await c.close()

        asyncio.run(fund())
        _rpc(anvil.url, "evm_setIntervalMining", [1])
        anvil.block_time = 1  # a restart comes back mining one block per second
        yield Devnet(anvil, deployment, dep_file, tmp)
    finally:
        anvil.stop()


def _head(url: str) -> int:
    return int(_rpc(url, "eth_blockNumber", [])["result"], 16)


async def test_lease_survives_a_chain_restart_from_saved_state(devnet: Devnet, make_node: NodeMaker) -> None:
    wallets = {who: Account.from_key(devnet_key(who)).address for who in (PROVIDER, CONSUMER)}
    nonces_before = {who: await wallet_nonce(devnet, a) for who, a in wallets.items()}
    provider = await make_node("provider", account=PROVIDER, provider=True)
    consumer = await make_node("consumer", account=CONSUMER, bootstrap=(provider.p2p.listen_addrs[0],))
    offer = (await until(lambda: [o for o in consumer.query_offers({}) if o["provider"] == provider.address],
                         30, "the provider's offer at the consumer"))[0]
    job_s = 10 + DOWN_S
    lease = await consumer.open_lease({
        "offer_id": offer["offer_id"], "gpus": 1, "deposit": str(PRICE * 120),
        "job": {"argv": [sys.executable, "-c", f"import time; time.sleep({job_s})"], "timeout_s": 120}})
    lid = lease["lease_id"]
    await until(lambda: consumer.lease(lid)["settled_gpu_seconds"] > 0, 40, "a first settlement")
    head_before = _head(devnet.anvil.url)

    await asyncio.to_thread(devnet.anvil.stop)  # SIGTERM: anvil writes its state
    stopped_at = time.monotonic()
    await until(lambda: consumer.status()["chain"]["rpc"] == "down", 30, "the consumer to see the chain gone")
    if DOWN_S:
        await until(lambda: time.monotonic() - stopped_at >= DOWN_S, DOWN_S + 1, "the downtime's end")
    await asyncio.to_thread(devnet.anvil.start)
    # the history is still there (the same chain, not a fresh one)
    assert _head(devnet.anvil.url) >= head_before
    assert await escrow_events(devnet, "LeaseOpened", lid)

    await until(lambda: all(n.status()["chain"]["rpc"] == "up" for n in (provider, consumer)), 30,
                "both nodes to see the chain back")
    await until(lambda: (v := consumer.lease(lid)).get("job_result") is not None
                and v["settled_gpu_seconds"] == v["accepted_gpu_seconds"] > 0, 90,
                "every accepted checkpoint to be settled after the restart")
    await consumer.close_lease(lid)
    await until(lambda: consumer.lease(lid)["status"] == "FINALIZED", 90, "finalization")
    await until(lambda: provider.lease(lid)["status"] == "FINALIZED", 60, "the provider to see finalization")

    seqs = [e["seq"] for e in await escrow_events(devnet, "LeaseSettled", lid)]
    assert seqs and len(seqs) == len(set(seqs)), f"a checkpoint settled twice: {seqs}"
    v: dict[str, Any] = consumer.lease(lid)
    assert v["rejected_checkpoints"] == 0
    for who, node in ((PROVIDER, provider), (CONSUMER, consumer)):
        await until(lambda node=node: not unresolved(node), 60, f"node {who}'s transactions to resolve")
        on_chain = await wallet_nonce(devnet, wallets[who]) - nonces_before[who]
        assert on_chain == mined_intents(node), (who, on_chain, mined_intents(node))
