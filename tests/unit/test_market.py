"""The node's offer market (node.market): the validator reads only the book's published snapshot, the owner's
mutations republish it, and a failing validator costs the forwarding peer nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from coincurve import PrivateKey
from eth_utils import keccak

from node.chain.stake_view import ProviderStake, StakeCache
from node.crypto.eip712 import Domain
from node.market import Market
from node.p2p import P2PConfig
from node.p2p.host import P2PHost
from node.protocol import offers as O
from node.protocol.offer_validation import ValidationContext
from node.protocol.offerbook import InsertResult
from node.protocol.offers import Offer, OfferSpec, OfferWithdrawal
from node.types import Verdict

NOW = 1_700_000_000
DOMAIN = Domain(31337, "0x" + "ab" * 20)
KEY = (7).to_bytes(32, "big")
PROVIDER = keccak(PrivateKey(KEY).public_key.format(compressed=False)[1:])[12:]
SPEC = OfferSpec("eu-west", 64, 512, "550", "12.4", "nvlink")


def offer_blob(nonce: int = 1, expires: int = NOW + 600) -> bytes:
    offer = Offer(PROVIDER, nonce, O.gpu_model_from_name("H100-80GB"), 8, 81920, 100, 60, 86_400, expires,
                  O.spec_hash(SPEC))
    return O.encode_offer_message(DOMAIN, O.sign_offer(offer, SPEC, KEY, DOMAIN))


@pytest.fixture
def market(tmp_path: Path):  # type: ignore[no-untyped-def]
    stakes = StakeCache()
    stakes.set_stake(PROVIDER, ProviderStake(registered=True, free=10**24, locked=0, node_key=b"\x00" * 32))
    m = Market(DOMAIN, stakes, tmp_path / "offers.sqlite", collateral_bps=0, clock=lambda: NOW)
    yield m
    m.store.close()


def test_validator_reads_the_published_snapshot_that_each_change_replaces(market: Market) -> None:
    assert market.ctx.book is market.book.published
    first, newer = offer_blob(1), offer_blob(2)
    assert market.validate(first, "peer").verdict is Verdict.ACCEPT
    assert market.on_message(first) is InsertResult.ADDED
    assert market.validate(first, "peer").reason == "duplicate"
    assert market.live_offers() == [first]
    assert market.on_message(newer) is InsertResult.REPLACED
    assert market.validate(first, "peer").reason == "superseded"
    assert market.live_offers() == [newer]
    # a withdrawal clears the snapshot too, and keeps the withdrawn offer out afterwards
    sw = O.sign_withdrawal(OfferWithdrawal(PROVIDER, 3, NOW), KEY, DOMAIN)
    assert market.on_message(O.encode_withdrawal_message(DOMAIN, sw)) is None
    assert market.live_offers() == [] and len(market.book.snapshot()) == 0
    assert market.validate(newer, "peer").reason == "nonce_cancelled"


def test_load_publishes_the_stored_offers(market: Market, tmp_path: Path) -> None:
    blob = offer_blob(1)
    market.on_message(blob)
    again = Market(DOMAIN, market.stakes, tmp_path / "offers.sqlite", collateral_bps=0, clock=lambda: NOW)
    try:
        assert again.load() == 1
        assert again.validate(blob, "peer").reason == "duplicate"
        assert again.live_offers() == [blob]
    finally:
        again.store.close()


def test_a_validator_bug_is_an_ignore_without_penalty(market: Market, tmp_path: Path) -> None:
    class BrokenStakes(StakeCache):
        def is_registered(self, provider: bytes) -> bool:
            raise KeyError(provider)

    market.ctx = ValidationContext(domain=DOMAIN, stake=BrokenStakes(), nonces=market.stakes,
                                   book=market.book.published, rules=market.ctx.rules)
    with pytest.raises(KeyError):
        market.validate(offer_blob(1), "peer")  # the market does not hide the bug ...
    host = P2PHost(P2PConfig(key_path=tmp_path / "node.key", topic="t"), market.validate)
    v = host.judge(offer_blob(1), "12D3KooWHonestPeer")
    assert (v.verdict, v.reason) == (Verdict.IGNORE, "validator_error")  # ... the host turns it into an IGNORE
    assert host.guard.rejects == {}
