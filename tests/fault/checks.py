"""Checks shared by the fault suites: what the chain and the nodes' stores say about transactions and leases."""

from __future__ import annotations

from typing import Any

from node.service import Node
from tests.integration.conftest import Devnet


async def wallet_nonce(devnet: Devnet, address: str) -> int:
    c = await devnet.client()
    try:
        return int(await c.w3.eth.get_transaction_count(address, "latest"))
    finally:
        await c.close()


def intents(node: Node) -> dict[str, int]:
    """The node's transaction intents by status."""
    rows = node.db.query("SELECT status, count(*) AS n FROM tx_intents WHERE sender = ? GROUP BY status",
                         (node.address,))
    return {r["status"]: r["n"] for r in rows}


def unresolved(node: Node) -> bool:
    return bool({"sent", "created"} & set(intents(node)))


def mined_intents(node: Node) -> int:
    """Intents that reached a block (a reverted transaction uses its nonce too)."""
    counts = intents(node)
    return counts.get("mined", 0) + counts.get("reverted", 0)


async def escrow_events(devnet: Devnet, name: str, lease_id: int) -> list[dict[str, Any]]:
    c = await devnet.client()
    try:
        logs = await c.w3.eth.get_logs({"fromBlock": devnet.deployment.deploy_block, "toBlock": "latest",
                                        "address": devnet.deployment.escrow})
        events = [c.events.decode(dict(r)) for r in logs]
        return [e.args for e in events if e is not None and e.name == name and e.args.get("leaseId") == lease_id]
    finally:
        await c.close()
