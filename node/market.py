"""The offer market of one node: validation context, offer book, its SQLite store, and offer publishing.

``validate`` is what the libp2p thread calls for every gossiped or synced message (pure checks plus the cached
stake view; never an RPC). Accepted messages come back on the asyncio side through ``on_message`` and update the
book and the store. Providers publish through ``publish_offer`` / ``withdraw``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from node.crypto.eip712 import Domain
from node.metrics import record_book_size, record_validation
from node.protocol.offer_validation import OfferRules, ValidationContext, validate_gossip_message
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
from node.types import Validation, Verdict

log = logging.getLogger(__name__)


class Market:
    def __init__(self, domain: Domain, stake_view: Any, store_path: Path, collateral_bps: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.domain = domain
        self.clock = clock
        rule = StakeRule(min_free_stake=1, collateral_bps=collateral_bps)
        self.book = OfferBook(domain, rule)
        self.ctx = ValidationContext(domain=domain, stake=stake_view, nonces=stake_view, book=self.book,
                                     rules=OfferRules(stake=rule))
        self.store = OfferStore(store_path)
        self.counts: dict[str, int] = {}

    def load(self) -> int:
        now = int(self.clock())
        loaded = 0
        for row in self.store.load(self.domain, now):
            if self.book.insert(row.signed, row.blob, row.offer_id) in (InsertResult.ADDED, InsertResult.REPLACED):
                loaded += 1
        record_book_size(len(self.book))
        return loaded

    # --- libp2p thread ---------------------------------------------------------------------------------------
    def validate(self, data: bytes, sender: str) -> Validation:
        started = time.perf_counter()
        try:
            verdict, _ = validate_gossip_message(data, self.ctx, int(self.clock()))
        except Exception as exc:  # never let a validator bug crash the host
            log.error("offer validator raised", extra={"error": repr(exc)[:200]})
            verdict = Validation(Verdict.REJECT, "validator_error")
        record_validation(verdict, time.perf_counter() - started)
        key = f"{verdict.verdict.value}:{verdict.reason}"
        self.counts[key] = self.counts.get(key, 0) + 1
        return verdict

    def live_offers(self) -> list[bytes]:
        return self.book.live_offers(int(self.clock()))

    # --- asyncio side ----------------------------------------------------------------------------------------
    def on_message(self, data: bytes) -> InsertResult | None:
        """An accepted gossip/sync message: apply it to the book and the store."""
        try:
            env, msg = decode_message(data)
        except Exception:
            return None
        if env.kind == MSG_OFFER and isinstance(msg, SignedOffer):
            return self.add(msg, data)
        if isinstance(msg, SignedWithdrawal):
            raise_nonce = getattr(self.ctx.nonces, "raise_nonce", None)
            if raise_nonce is not None:  # remember it, so sync or gossip cannot bring withdrawn offers back
                raise_nonce(msg.withdrawal.provider, msg.withdrawal.nonce_below)
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
