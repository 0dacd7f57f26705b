"""The market: figures per GPU model and region, provider records, and leases chosen by need (quote or open).

The node side is ``node.market_service.MarketService`` (``node.markets``); a node without it answers 400.
"""

from __future__ import annotations

from typing import Any, Protocol, cast

from aiohttp import web

from node.api.registry import Api, Reply, failure, json_response
from node.api.routes.leases import ACTION_FAILURES, body_json
from node.api.schemas import ADDRESS, AMOUNT, HASH, INT, LEASE, OPT_STR, Schema
from node.market_service import MarketService

_OPT_AMOUNT: Schema = {"type": ["string", "null"], "pattern": "^[0-9]{1,78}$"}
_WHOLE: Schema = {"oneOf": [{"type": "integer", "minimum": 1}, {"type": "string", "pattern": "^[0-9]{1,78}$"}]}

PRICES: Schema = {"type": ["object", "null"], "required": ["offers", "min", "median", "max"],
                  "properties": {"offers": INT, "min": AMOUNT, "p25": AMOUNT, "median": AMOUNT, "p75": AMOUNT,
                                 "max": AMOUNT}}
WINDOW: Schema = {"type": "object", "required": ["window_s", "gpu_hours_settled", "amount_settled"],
                  "properties": {"window_s": INT, "gpu_hours_settled": {"type": "number"},
                                 "amount_settled": AMOUNT, "leases_opened": INT,
                                 "realised_price_per_gpu_hour": _OPT_AMOUNT}}
MARKET_ROW: Schema = {
    "type": "object", "required": ["gpu_model", "region", "gpus_offered", "gpus_free", "utilisation"],
    "properties": {"gpu_model": {"type": "string"}, "region": {"type": "string"}, "gpus_offered": INT,
                   "gpus_free": INT, "gpus_leased": INT, "leases_open": INT, "utilisation": {"type": "number"},
                   "prices_per_gpu_hour": PRICES, "windows": {"type": "array", "items": WINDOW}},
}
MARKET: Schema = {"type": "object", "required": ["at", "markets"],
                  "properties": {"at": INT, "region": {"type": "string"}, "windows": {"type": "array", "items": INT},
                                 "markets": {"type": "array", "items": MARKET_ROW}}}
RECORD: Schema = {"type": "object", "required": ["known", "score"],
                  "properties": {"known": {"type": "boolean"}, "score": {"type": "number"}, "stake": AMOUNT,
                                 "leases_opened": INT, "leases_completed": INT, "claims_disputed": INT,
                                 "challenges_missed": INT, "equivocations": INT, "slashes": INT}}
PROVIDER: Schema = {"type": "object", "required": ["provider", "record", "offers"],
                    "properties": {"provider": ADDRESS, "record": RECORD,
                                   "offers": {"type": "array", "items": {"type": "object"}}}}
NEED: Schema = {
    "type": "object", "required": ["model", "gpus"],
    "description": "hours, or duration in seconds, is required too",
    "properties": {"model": {"type": "string"}, "gpus": _WHOLE,
                   "hours": {"oneOf": [{"type": "number", "exclusiveMinimum": 0}, {"type": "string"}]},
                   "duration": _WHOLE, "min_vram": _WHOLE, "region": {"type": "string"},
                   "max_price": {**_WHOLE, "description": "per GPU-hour, token base units"},
                   "min_score": {"type": "number", "minimum": 0, "maximum": 1},
                   "job": {"type": "object", "description": "the job to run (as in POST /v1/leases)"}},
}
OFFER_CHOICE: Schema = {"type": "object", "required": ["offer_id", "provider", "price_per_gpu_hour", "score"],
                        "properties": {"offer_id": HASH, "provider": ADDRESS, "price_per_gpu_hour": AMOUNT,
                                       "score": {"type": "number"}, "total": AMOUNT, "region": OPT_STR}}
QUOTE: Schema = {
    "type": "object", "required": ["need", "chosen", "reason", "quote", "ranked", "excluded"],
    "properties": {"need": {"type": "object"}, "chosen": {"oneOf": [{"type": "null"}, OFFER_CHOICE]},
                   "reason": {"type": "string"}, "quote": {"type": ["object", "null"]},
                   "ranked": {"type": "array", "items": OFFER_CHOICE},
                   "excluded": {"type": "array", "items": {"type": "object"}}, "excluded_total": INT,
                   "spent_today": AMOUNT},
}
OPENED: Schema = {**QUOTE, "required": [*QUOTE["required"], "lease"],
                  "properties": {**QUOTE["properties"], "lease": LEASE}}


class MarketNode(Protocol):
    markets: MarketService


def _markets(api: Api) -> MarketService:
    markets = getattr(cast(MarketNode, api.node), "markets", None)
    if markets is None:
        raise ValueError("this node serves no market data")
    return cast(MarketService, markets)


def _need(body: object) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ValueError("request body must be a JSON object (the need)")
    return body


def register(api: Api) -> None:
    async def market(request: web.Request) -> web.Response:
        return json_response(_markets(api).market(dict(request.query)))

    async def provider(request: web.Request) -> web.Response:
        return json_response(_markets(api).provider(request.match_info["address"]))

    async def quote(request: web.Request) -> web.Response:
        return json_response(_markets(api).quote(_need(await body_json(request))))

    async def open_by_need(request: web.Request) -> web.Response:
        return json_response(await _markets(api).open(_need(await body_json(request))), 201)

    api.route("GET", "/v1/market", market, summary="Market figures per GPU model (and region)",
              query=[{"name": "model", "in": "query", "required": False, "schema": {"type": "string"},
                      "description": "one GPU model, e.g. H100-80GB"},
                     {"name": "region", "in": "query", "required": False, "schema": {"type": "string"},
                      "description": "one region (without it: every model over all regions)"},
                     {"name": "window", "in": "query", "required": False, "schema": {"type": "string"},
                      "description": "settlement windows, comma-separated: seconds or 1h, 1d, 7d (default)"}],
              responses={200: Reply("Figures per market key", MARKET)})
    api.route("GET", "/v1/providers/{address}", provider, summary="A provider's record from the chain, and its offers",
              responses={200: Reply("The record (known: false without any chain history) and live offers",
                                    PROVIDER)})
    api.route("POST", "/v1/quote", quote, summary="What the best live offer for a need costs now (opens nothing)",
              body=NEED, responses={200: Reply("The choice, why, the quote, and the offers left out", QUOTE)})
    api.route("POST", "/v1/leases/select", open_by_need, auth=True,
              summary="Open a lease on the best live offer for a need, with a deposit for its duration",
              body=NEED, responses={201: Reply("Opened: what was chosen and why, and the lease", OPENED),
                                    **ACTION_FAILURES,
                                    400: failure("Malformed need, no offer matches, or a spend cap refused it")})
