"""Offer gossip between real nodes (libp2p on loopback) against a real anvil: a mesh of nodes converges on the
provider's offer, a late joiner syncs it, a withdrawal removes it everywhere, bad offers are refused."""

from __future__ import annotations

import pytest

from node.chain.anvil import devnet_key
from node.errors import InvalidMessage
from node.protocol.offers import Offer, OfferSpec, gpu_model_from_name, sign_offer, spec_hash

from .conftest import PROVIDER, until

pytestmark = pytest.mark.integration


def provider_offer_ids(node, provider: str) -> set[str]:
    return {o["offer_id"] for o in node.query_offers({"limit": "1000"}) if o["provider"] == provider}


async def test_mesh_converges_late_joiner_syncs_and_withdrawal_clears(nodes):
    provider = await nodes("provider", account=PROVIDER, provider=True)
    boot = provider.p2p.listen_addrs[0]
    peers = [await nodes("peer0", bootstrap=(boot,))]
    for i in range(1, 10):  # a chain plus the provider as a common bootstrap: 11 nodes in all
        peers.append(await nodes(f"peer{i}", bootstrap=(peers[i - 1].p2p.listen_addrs[0],)))
    mine = provider_offer_ids(provider, provider.address)
    assert len(mine) == 1
    await until(lambda: all(provider_offer_ids(p, provider.address) == mine for p in peers), 30,
                "every node's book to hold the provider's offer")

    # a fresh offer published now reaches everyone over gossip (not just through the start-up sync)
    fresh = await provider.publish_offer()
    await until(lambda: all(fresh["offer_id"] in provider_offer_ids(p, provider.address) for p in peers), 30,
                "the re-announced offer to reach every node")
    # it superseded the older one in every book (one live offer per provider and model)
    assert all(provider_offer_ids(p, provider.address) == {fresh["offer_id"]} for p in peers)

    late = await nodes("late", bootstrap=(peers[5].p2p.listen_addrs[0],))
    assert provider_offer_ids(late, provider.address) == {fresh["offer_id"]}

    await provider.cancel_offers()
    everyone = [*peers, late, provider]
    await until(lambda: all(not provider_offer_ids(p, provider.address) for p in everyone), 30,
                "the withdrawn offer to disappear from every book")


async def test_unregistered_or_forged_offers_are_refused(nodes, devnet):
    provider = await nodes("provider", account=PROVIDER, provider=True)
    node = await nodes("solo", bootstrap=(provider.p2p.listen_addrs[0],))
    await until(lambda: node.stakes.is_registered(bytes.fromhex(provider.address[2:])), 10, "stake view")
    spec = OfferSpec(region="x", cpu_cores=1, ram_gib=1, driver_version="none", cuda_version="none",
                     interconnect="pcie", simulated=True)
    key = devnet_key(6)  # funded but never staked or registered
    from eth_account import Account

    addr = bytes.fromhex(Account.from_key(key).address[2:])
    import time

    offer = Offer(provider=addr, nonce=1, gpu_model=gpu_model_from_name("SIM"), gpu_count=1, vram_mib=1,
                  price_per_gpu_second=1, min_duration=1, max_duration=10, expires_at=int(time.time()) + 60,
                  spec_hash=spec_hash(spec))
    blob = node.market.encode_offer(sign_offer(offer, spec, key, node.domain))
    v = node.market.validate(blob, "peer")
    assert (v.verdict.value, v.reason) == ("ignore", "provider_not_registered")
    with pytest.raises(InvalidMessage):
        await node.p2p.publish(blob)
    # the host counted that verdict once; the status API reads the same counter
    assert node.status()["validation"].get("ignore:provider_not_registered") == 1
    # claims to come from the registered provider but is signed by another key
    from dataclasses import replace

    claimed = replace(offer, provider=bytes.fromhex(provider.address[2:]), nonce=2**60)
    forged = node.market.encode_offer(sign_offer(claimed, spec, devnet_key(5), node.domain))
    v = node.market.validate(forged, "peer")
    assert (v.verdict.value, v.reason) == ("reject", "bad_signature")
    v = node.market.validate(b"\x00garbage", "peer")
    assert v.verdict.value == "reject"
    assert all(o["provider"] == provider.address for o in node.query_offers({}))
