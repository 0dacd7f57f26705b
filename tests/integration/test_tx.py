"""Transaction intents against a real anvil: a stuck transaction gets its fees bumped (same nonce, mined once), and a
node that crashed after broadcasting resumes the intent instead of sending it twice."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from eth_account import Account

from node.chain.anvil import Anvil, devnet_key
from node.chain.artifacts import Deployment
from node.chain.client import ChainClient
from node.chain.proxies import Token
from node.storage.db import Database

pytestmark = pytest.mark.integration


async def _automine(chain: ChainClient, on: bool) -> None:
    await chain.w3.provider.make_request("evm_setAutomine", [on])


async def _bump_scenario(anvil: Anvil, deployment: Deployment, tmp_path) -> None:
    chain = await ChainClient.connect(anvil.url, deployment, Database(tmp_path / "bump.sqlite"), devnet_key(4))
    assert chain.sender is not None
    chain.sender.bump_after = 0.3
    to = Account.create().address
    await _automine(chain, False)
    try:
        task = asyncio.ensure_future(Token(chain).mint("stuck-mint", to, 123))

        def intent():
            return chain.db.query("SELECT * FROM tx_intents WHERE key = 'stuck-mint'")

        for _ in range(200):
            rows = intent()
            if rows and rows[0]["replaced"]:
                break
            await asyncio.sleep(0.05)
        row = intent()[0]
        assert row["status"] == "sent" and row["replaced"], "the pending transaction was not re-priced"
        await chain.w3.provider.make_request("evm_mine", [])
        result = await asyncio.wait_for(task, 20)
        assert result.status == "mined"
        assert await Token(chain).balance(to) == 123  # one nonce, one mint, whichever fee level was mined
    finally:
        await _automine(chain, True)
        await chain.close()


async def _crash_scenario(anvil: Anvil, deployment: Deployment, tmp_path) -> None:
    db_path = tmp_path / "crash.sqlite"
    chain = await ChainClient.connect(anvil.url, deployment, Database(db_path), devnet_key(5))
    to = Account.create().address
    await _automine(chain, False)
    try:
        task = asyncio.ensure_future(Token(chain).mint("crash-mint", to, 77))
        for _ in range(200):
            rows = chain.db.query("SELECT status FROM tx_intents WHERE key = 'crash-mint'")
            if rows and rows[0]["status"] == "sent":
                break
            await asyncio.sleep(0.02)
        task.cancel()  # the node dies while waiting for the receipt
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await chain.close()
        # restart: a fresh client on the same database reconciles, then the same action resolves to that tx
        again = await ChainClient.connect(anvil.url, deployment, Database(db_path), devnet_key(5))
        assert again.sender is not None
        unresolved = await again.sender.reconcile()
        assert unresolved == ["crash-mint"]
        await again.w3.provider.make_request("evm_mine", [])
        result = await Token(again).mint("crash-mint", to, 77)
        assert result.status == "mined"
        assert await Token(again).balance(to) == 77  # sent once
        await again.close()
    finally:
        c = await ChainClient.connect(anvil.url, deployment, Database(":memory:"), None)
        await _automine(c, True)
        await c.close()


def test_stuck_transaction_is_repriced_and_mined_once(anvil, deployment, tmp_path) -> None:
    asyncio.run(_bump_scenario(anvil, deployment, tmp_path))


def test_crash_after_broadcast_resumes_without_resending(anvil, deployment, tmp_path) -> None:
    asyncio.run(_crash_scenario(anvil, deployment, tmp_path))
