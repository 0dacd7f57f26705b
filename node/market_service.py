"""The market as the node serves it: figures per GPU model and region, provider records with their offers, and
leases chosen by need (a quote, or an open of the best live offer).

Reads go through ``MarketFeed`` (synced with the book first); the choice is ``node.protocol.selection.select``
over the book's live offers, with the provider records from the chain and the node's spend caps. Answers are
JSON-ready dicts: amounts as decimal strings (token base units), prices per GPU-hour unless the key says
per GPU-second.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from eth_utils import to_checksum_address

from node.leases.spend import SpendCapReached, SpendGuard
from node.market import offer_view
from node.market_feed import MarketFeed
from node.protocol.market_data import ALL_REGIONS, DEFAULT_WINDOWS, MarketSummary
from node.protocol.offerbook import OfferBook
from node.protocol.offers import gpu_model_from_name
from node.protocol.provider_record import ProviderRecord, score
from node.protocol.selection import Candidate, Exclusion, LeaseRequest, Selection, hours_to_seconds, select

MAX_WINDOW = 30 * 86_400
NEED_FIELDS = ("model", "gpus", "hours", "duration", "min_vram", "region", "max_price", "min_score", "job")

Opener = Callable[[bytes, int, int, dict[str, Any] | None], Awaitable[dict[str, Any]]]


def _num(params: Mapping[str, Any], name: str, default: int | None = None, minimum: int = 0) -> int | None:
    v = params.get(name)
    if v in (None, ""):
        return default
    if isinstance(v, bool) or not isinstance(v, int | str):
        raise ValueError(f"{name} must be an integer")
    try:
        n = int(v)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer") from exc
    if n < minimum:
        raise ValueError(f"{name} must be >= {minimum}")
    return n


def parse_windows(text: str | None) -> tuple[int, ...]:
    """``"3600,86400"`` (seconds; ``1h``, ``1d``, ``7d`` also read) -> windows; the defaults when empty."""
    if not text:
        return DEFAULT_WINDOWS
    out = []
    for part in text.split(","):
        p = part.strip().lower()
        unit = {"h": 3600, "d": 86_400, "m": 60, "s": 1}.get(p[-1:], 0)
        try:
            value = int(p[:-1]) * unit if unit else int(p)
        except ValueError as exc:
            raise ValueError(f"window {part!r}: seconds, or a number with h, d, m or s") from exc
        if not 0 < value <= MAX_WINDOW:
            raise ValueError(f"window {part!r} must be within 1 s .. 30 d")
        out.append(value)
    if len(out) > 8:
        raise ValueError("at most 8 windows")
    return tuple(out)


def summary_view(s: MarketSummary) -> dict[str, Any]:
    p = s.prices
    return {
        "gpu_model": s.gpu_model, "region": s.region, "gpus_offered": s.gpus_offered, "gpus_free": s.gpus_free,
        "gpus_leased": s.gpus_leased, "leases_open": s.leases_open, "utilisation": round(s.utilisation, 4),
        "prices_per_gpu_hour": None if p is None else {
            "offers": p.offers, "min": str(p.min), "p25": str(p.p25), "median": str(p.median), "p75": str(p.p75),
            "max": str(p.max)},
        "windows": [{"window_s": w.window_s, "gpu_hours_settled": round(w.gpu_hours_settled, 4),
                     "amount_settled": str(w.amount_settled), "leases_opened": w.leases_opened,
                     "realised_price_per_gpu_hour": None if w.realised_price_per_gpu_hour is None
                     else str(w.realised_price_per_gpu_hour)} for w in s.windows],
    }


def record_view(rec: ProviderRecord | None, now: int) -> dict[str, Any]:
    if rec is None:
        return {"known": False, "score": 0.0}
    return {
        "known": True, "score": round(score(rec, now), 4), "first_seen": rec.first_seen, "age_s": rec.age(now),
        "stake": str(rec.stake), "leases_opened": rec.leases_opened, "leases_completed": rec.leases_completed,
        "gpu_hours_settled": round(rec.gpu_hours_settled, 4), "amount_settled": str(rec.amount_settled),
        "claims_made": rec.claims_made, "claims_disputed": rec.claims_disputed, "challenges": rec.challenges,
        "challenges_missed": rec.challenges_missed, "equivocations": rec.equivocations, "slashes": rec.slashes,
        "amount_slashed": str(rec.amount_slashed),
    }


def parse_need(body: Mapping[str, Any]) -> LeaseRequest:
    """A need as the API and the CLI give it: ``model``, ``gpus``, ``hours`` (or ``duration`` in seconds), and
    optionally ``min_vram`` (MiB per GPU), ``region``, ``max_price`` (per GPU-hour, base units), ``min_score``."""
    if not isinstance(body, Mapping):
        raise ValueError("need must be an object")
    unknown = set(body) - set(NEED_FIELDS)
    if unknown:
        raise ValueError(f"unknown need field(s): {', '.join(sorted(unknown))}")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ValueError("need.model (GPU model name) is required")
    gpus = _num(body, "gpus", None, 1)
    if gpus is None:
        raise ValueError("need.gpus is required")
    duration = _num(body, "duration", None, 1)
    if duration is None:
        hours = body.get("hours")
        if isinstance(hours, bool) or not isinstance(hours, int | float | str):
            raise ValueError("need.hours (or need.duration in seconds) is required")
        try:
            h = float(hours)
        except ValueError as exc:
            raise ValueError("need.hours must be a number") from exc
        if not 0 < h <= 24 * 365:
            raise ValueError("need.hours must be positive")
        duration = hours_to_seconds(h)
    region = body.get("region")
    if region is not None and not isinstance(region, str):
        raise ValueError("need.region must be a string")
    min_score = body.get("min_score", 0.0)
    if isinstance(min_score, bool) or not isinstance(min_score, int | float) or not 0 <= min_score <= 1:
        raise ValueError("need.min_score must be a number in [0, 1]")
    return LeaseRequest(gpu_model=model, gpus=gpus, duration_s=duration, min_vram_mib=_num(body, "min_vram", 0) or 0,
                        region=region or None, max_price_per_gpu_hour=_num(body, "max_price"),
                        min_score=float(min_score))


def selection_view(sel: Selection, req: LeaseRequest, spent_today: int, limit: int = 10) -> dict[str, Any]:
    def ranked(r: Any) -> dict[str, Any]:
        q = r.quote
        return {"offer_id": "0x" + q.offer_id.hex(), "provider": to_checksum_address(q.provider),
                "price_per_gpu_hour": str(q.price_per_gpu_hour), "score": round(r.score, 4), "total": str(q.total),
                "region": r.candidate.region}

    q = sel.quote
    return {
        "need": {"model": req.gpu_model, "gpus": req.gpus, "duration_s": req.duration_s,
                 "min_vram": req.min_vram_mib, "region": req.region,
                 "max_price": None if req.max_price_per_gpu_hour is None else str(req.max_price_per_gpu_hour)},
        "chosen": None if sel.chosen is None else ranked(sel.chosen),
        "reason": sel.reason,
        "quote": None if q is None else {
            "offer_id": "0x" + q.offer_id.hex(), "gpus": q.gpus, "duration_s": q.duration_s,
            "price_per_gpu_second": str(q.price_per_gpu_second), "price_per_gpu_hour": str(q.price_per_gpu_hour),
            "total": str(q.total)},
        "ranked": [ranked(r) for r in sel.ranked[:limit]],
        "excluded": [{"offer_id": "0x" + e.offer_id.hex(), "reason": e.reason.value, "detail": e.detail}
                     for e in sel.excluded[:limit]],
        "excluded_total": len(sel.excluded),
        "spent_today": str(spent_today),
    }


class MarketService:
    """``open``: the node's lease opener (``LeaseEngine.open_lease``), None on a node without a wallet."""

    def __init__(self, feed: MarketFeed, book: OfferBook, guard: SpendGuard | None = None,
                 open: Opener | None = None, clock: Callable[[], float] = time.time) -> None:
        self.feed = feed
        self.book = book
        self.guard = guard
        self.opener = open
        self.clock = clock

    def market(self, params: Mapping[str, str]) -> dict[str, Any]:
        """``GET /v1/market``: ``model``, ``region`` (without it: every model over all regions), ``window``."""
        self.feed.sync()
        now = int(self.clock())
        windows = parse_windows(params.get("window"))
        rows = self.feed.data.query(now=now, gpu_model=params.get("model") or None,
                                    region=params.get("region") or None, windows=windows)
        return {"at": now, "region": params.get("region") or ALL_REGIONS, "windows": list(windows),
                "markets": [summary_view(s) for s in rows]}

    def provider(self, address: str) -> dict[str, Any]:
        """``GET /v1/providers/{address}``: the chain record, its score, and the provider's live offers."""
        try:
            raw = bytes.fromhex(address.removeprefix("0x"))
        except ValueError:
            raise ValueError("address must be 0x-prefixed hex") from None
        if len(raw) != 20:
            raise ValueError("address must be 20 bytes")
        now = int(self.clock())
        offers = [offer_view(e.offer_id, e.signed) for e in self.book.entries() if e.offer.provider == raw]
        offers.sort(key=lambda o: o["offer_id"])
        return {"provider": to_checksum_address(raw), "record": record_view(self.feed.records.get(raw), now),
                "offers": offers}

    def choose(self, req: LeaseRequest) -> tuple[Selection, int]:
        self.feed.sync()
        now = int(self.clock())
        spent = self.guard.spent_today() if self.guard is not None else 0
        caps = self.guard.caps if self.guard is not None else None
        model = gpu_model_from_name(req.gpu_model)  # offers of other models are not candidates at all
        candidates = [Candidate(e.offer_id, e.offer, e.region) for e in self.book.entries()
                      if e.offer.gpu_model == model]
        taken = {c.offer_id: self.feed.data.gpus_taken(c.offer_id) for c in candidates}
        kw: dict[str, Any] = {"caps": caps} if caps is not None else {}
        sel = select(req, candidates, self.feed.records.all(), now, spent_today=spent, gpus_taken=taken, **kw)
        return sel, spent

    def quote(self, need: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /v1/quote``: what the best offer for ``need`` costs now; nothing is opened."""
        req = parse_need(need)
        sel, spent = self.choose(req)
        return selection_view(sel, req, spent)

    async def open(self, need: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /v1/leases/select``: open a lease on the best offer for ``need`` with a deposit covering its
        duration; the answer says what was chosen and why. Raises ``ValueError`` when nothing matches."""
        if self.opener is None:
            raise ValueError("this node has no wallet: it cannot open leases")
        req = parse_need(need)
        job = need.get("job")
        if job is not None and not isinstance(job, dict):
            raise ValueError("need.job must be an object")
        sel, spent = self.choose(req)
        view = selection_view(sel, req, spent)
        q = sel.quote
        if q is None:
            capped = [e.detail for e in sel.excluded if e.reason in (Exclusion.LEASE_CAP, Exclusion.DAY_CAP)]
            if capped:
                raise SpendCapReached(f"open refused: {sel.reason}; {capped[0]}")
            raise ValueError(sel.reason)
        if self.guard is not None:
            self.guard.require(q.total)
        lease = await self.opener(q.offer_id, q.gpus, q.total, job)
        return {**view, "lease": lease}
