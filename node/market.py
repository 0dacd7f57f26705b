"""The offer market of one node: validation context, offer book, its SQLite store, and offer publishing.

Threads: the asyncio side owns the book and the store; every mutation goes through this class on that side.
``validate`` and ``live_offers`` are what the libp2p thread calls (for every gossiped or synced message, and for
sync pages): they read only the book's published snapshot (``OfferBook.published``, replaced after each mutation
batch) and the cached stake view, never the book itself, and never do an RPC. Accepted messages come back on the
asyncio side through ``on_message`` and update the book and the store.

Verdicts are counted once, by the p2p host that asks for them (``gpunet_gossip_messages_total``); an exception in
the validator is turned into an IGNORE there, never a REJECT.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from node.crypto.eip712 import Domain
from node.metrics import record_book_size
from node.protocol.offer_validation import (
    NonceView,
    OfferRules,
    StakeView,
    ValidationContext,
    validate_gossip_message,
)
from node.protocol.offerbook import InsertResult, OfferBook, OfferQuery
from node.protocol.offers import (
    MSG_OFFER,
    OfferWithdrawal,
    SignedOffer,
    SignedWithdrawal,
    StakeRule,
    decode_message,
    encode_offer_message,
    encode_withdrawal_message,
    gpu_model_from_name,
    gpu_model_name,
    sign_withdrawal,
)
from node.storage.offer_store import OfferStore
from node.types import Validation

log = logging.getLogger(__name__)


class MarketStakes(StakeView, NonceView, Protocol):
    """The cached chain view the market reads (``node.chain.stake_view.StakeCache``), safe to read from any thread."""

    def raise_nonce(self, provider: bytes, nonce: int) -> None:
        """Record an accepted withdrawal (asyncio side only)."""
        ...


class Market:
    def __init__(self, domain: Domain, stake_view: MarketStakes, store_path: Path, collateral_bps: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.domain = domain
        self.clock = clock
        self.stakes = stake_view
        rule = StakeRule(min_free_stake=1, collateral_bps=collateral_bps)
        self.book = OfferBook(domain, rule)
        # The validator sees the book only through its published snapshot (see the module docstring).
        self.ctx = ValidationContext(domain=domain, stake=stake_view, nonces=stake_view, book=self.book.published,
                                     rules=OfferRules(stake=rule))
        self.store = OfferStore(store_path)

    def load(self) -> int:
        now = int(self.clock())
        loaded = 0
        with self.book.batch():
            for row in self.store.load(self.domain, now):
                if self.book.insert(row.signed, row.blob, row.offer_id) in (InsertResult.ADDED,
                                                                            InsertResult.REPLACED):
                    loaded += 1
        record_book_size(len(self.book))
        return loaded

    # --- libp2p thread: reads the published snapshot only -----------------------------------------------------
    def validate(self, data: bytes, sender: str) -> Validation:
        """The gossip/sync validator. May raise on a bug: the p2p host turns that into IGNORE and logs it."""
        return validate_gossip_message(data, self.ctx, int(self.clock()))[0]

    def live_offers(self) -> list[bytes]:
        return self.book.published.live_offers(int(self.clock()))

    # --- asyncio side: the book's owner ------------------------------------------------------------------------
    def on_message(self, data: bytes) -> InsertResult | None:
        """An accepted gossip/sync message: apply it to the book and the store."""
        try:
            env, msg = decode_message(data)
        except Exception:
            return None
        if env.kind == MSG_OFFER and isinstance(msg, SignedOffer):
            return self.add(msg, data)
        if isinstance(msg, SignedWithdrawal):
            # remember it, so sync or gossip cannot bring withdrawn offers back
            self.stakes.raise_nonce(msg.withdrawal.provider, msg.withdrawal.nonce_below)
            self.apply_withdrawal(msg.withdrawal.provider, msg.withdrawal.nonce_below)
        return None

    def add(self, so: SignedOffer, blob: bytes) -> InsertResult:
        oid = so.offer.struct_hash()
        result = self.book.insert(so, blob, oid)
        if result in (InsertResult.ADDED, InsertResult.REPLACED):
            self.store.upsert(oid, so, blob)
        record_book_size(len(self.book))
        return result

    def apply_withdrawal(self, provider: bytes, nonce_below: int) -> None:
        removed = self.book.cancel_below(provider, nonce_below)
        if removed:
            self.store.delete(removed)
        record_book_size(len(self.book))

    def on_stake_change(self, provider: bytes, free_stake: int) -> None:
        removed = self.book.on_stake_change(provider, free_stake)
        if removed:
            self.store.delete(removed)
            record_book_size(len(self.book))

    def evict_expired(self) -> int:
        now = int(self.clock())
        removed = self.book.evict_expired(now)
        if removed:
            self.store.delete(removed)
        self._sync_store()
        record_book_size(len(self.book))
        return len(removed)

    def _sync_store(self) -> None:
        """Drop store rows the book has superseded (the book is the authority)."""
        if self.store.count() > len(self.book) + 64:
            self.store.delete([oid for oid in self.store.ids() if not self.book.contains(oid)])

    def encode_offer(self, so: SignedOffer) -> bytes:
        return encode_offer_message(self.domain, so)

    def withdrawal_message(self, private_key: bytes, provider: bytes, nonce_below: int) -> bytes:
        w = OfferWithdrawal(provider=provider, nonce_below=nonce_below, timestamp=int(self.clock()))
        return encode_withdrawal_message(self.domain, sign_withdrawal(w, private_key, self.domain))

    def query(self, params: dict[str, str]) -> list[dict[str, Any]]:
        def num(name: str) -> int | None:
            v = params.get(name)
            if v in (None, ""):
                return None
            try:
                n = int(v)
            except ValueError as exc:
                raise ValueError(f"query parameter {name} must be an integer") from exc
            if n < 0:
                raise ValueError(f"query parameter {name} must be >= 0")
            return n

        model = params.get("model")
        q = OfferQuery(
            gpu_model=gpu_model_from_name(model) if model else None,
            min_gpu_count=num("min_gpus") or 0,
            min_vram_mib=num("min_vram") or 0,
            max_price=num("max_price"),
            region=params.get("region") or None,
            duration=num("duration"),
            limit=min(num("limit") or 50, 1000),
        )
        return [offer_view(e.offer_id, e.signed) for e in self.book.query(q, int(self.clock()))]


def offer_view(offer_id: bytes, so: SignedOffer) -> dict[str, Any]:
    o = so.offer
    spec = so.spec
    return {
        "offer_id": "0x" + bytes(offer_id).hex(),
        "provider": o.provider_address,
        "nonce": o.nonce,
        "gpu_model": gpu_model_name(o.gpu_model),
        "gpu_count": o.gpu_count,
        "vram_mib": o.vram_mib,
        "price_per_gpu_second": str(o.price_per_gpu_second),
        "min_duration": o.min_duration,
        "max_duration": o.max_duration,
        "expires_at": o.expires_at,
        "region": spec.region if spec else None,
        "simulated": bool(spec.simulated) if spec else None,
    }
