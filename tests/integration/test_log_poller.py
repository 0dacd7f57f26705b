"""Log poller against a real anvil: confirmation depth, resumable cursor, and a reorganisation (anvil snapshot and
revert replace the processed blocks) reported as ``Reorged`` before the new logs."""

from __future__ import annotations

import asyncio

import pytest
from eth_account import Account

from node.chain.anvil import Anvil, devnet_key
from node.chain.artifacts import Deployment
from node.chain.client import ChainClient
from node.chain.events import ChainEvent, EventDecoder, LogPoller, Reorged
from node.chain.proxies import Token
from node.storage.db import Database

pytestmark = pytest.mark.integration


async def _scenario(anvil: Anvil, deployment: Deployment, tmp_path) -> None:
    chain = await ChainClient.connect(anvil.url, deployment, Database(tmp_path / "c.sqlite"), devnet_key(3))
    token = Token(chain)
    seen: list[ChainEvent | Reorged] = []

    async def handler(ev):
        seen.append(ev)

    db = Database(tmp_path / "poller.sqlite")
    decoder = EventDecoder([chain.c.artifacts["DevToken"].abi_list])
    start = int(await chain.w3.eth.block_number) + 1
    poller = LogPoller(chain.w3, db, [deployment.token], decoder, handler, start_block=start, confirmations=0)
    x = Account.create().address
    y = Account.create().address

    snap = (await chain.w3.provider.make_request("evm_snapshot", []))["result"]
    await token.mint("mint-x", x, 5)
    await poller.step()
    assert [(e.name, e.args["to"]) for e in seen if isinstance(e, ChainEvent)] == [("Transfer", x)]

    # replace the processed block by a different history of the same height and beyond
    await chain.w3.provider.make_request("evm_revert", [snap])
    chain.sender.signer.reset_nonce()
    await token.mint("mint-y", y, 7)
    await chain.w3.provider.make_request("evm_mine", [])
    seen.clear()
    await poller.step()
    assert isinstance(seen[0], Reorged)
    transfers = [(e.name, e.args["to"], e.args["value"]) for e in seen[1:] if isinstance(e, ChainEvent)]
    assert transfers == [("Transfer", y, 7)]

    # the cursor is persisted: a new poller on the same database does not replay what was handled
    seen.clear()
    again = LogPoller(chain.w3, db, [deployment.token], decoder, handler, start_block=start)
    await again.step()
    assert [e for e in seen if isinstance(e, ChainEvent)] == []

    # with a confirmation depth, a fresh log is held back until enough blocks follow it
    deep = LogPoller(chain.w3, Database(tmp_path / "deep.sqlite"), [deployment.token], decoder, handler,
                     start_block=int(await chain.w3.eth.block_number) + 1, confirmations=2)
    await token.mint("mint-x2", x, 1)
    seen.clear()
    await deep.step()
    assert [e for e in seen if isinstance(e, ChainEvent)] == []
    await chain.w3.provider.make_request("evm_mine", [])
    await chain.w3.provider.make_request("evm_mine", [])
    await deep.step()
    assert [(e.name, e.args["value"]) for e in seen if isinstance(e, ChainEvent)] == [("Transfer", 1)]
    await chain.close()


def test_poller_handles_reorgs_confirmations_and_restarts(anvil, deployment, tmp_path) -> None:
    asyncio.run(_scenario(anvil, deployment, tmp_path))
