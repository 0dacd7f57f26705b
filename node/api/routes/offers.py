"""The offer book: queries, and a provider withdrawing its own offers."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from node.api.registry import Api, Reply, failure, json_response
from node.api.requests import BadRequest
from node.api.schemas import CANCELLED, OFFERS, Schema

COUNT: Schema = {"type": "integer", "minimum": 0}
FILTERS: dict[str, tuple[Schema, str]] = {
    "model": ({"type": "string", "maxLength": 32}, "GPU model name, e.g. SIM-A100 (empty: any)"),
    "min_gpus": (COUNT, "at least this many GPUs free"),
    "min_vram": (COUNT, "at least this much memory per GPU (MiB)"),
    "max_price": (COUNT, "at most this price per GPU-second (token base units)"),
    "region": ({"type": "string"}, "provider's region"),
    "duration": (COUNT, "offers that allow a lease of this many seconds"),
    "limit": (COUNT, "at most this many offers (default 50, at most 1000)"),
}
QUERY: list[dict[str, Any]] = [{"name": n, "in": "query", "required": False, "description": d, "schema": s}
                               for n, (s, d) in FILTERS.items()]


def register(api: Api) -> None:
    node = api.node

    async def offers(request: web.Request) -> web.Response:
        params = dict(request.query)
        for name, (schema, _) in FILTERS.items():
            if schema is COUNT and params.get(name) == "":
                raise BadRequest(f"query parameter {name} must be an integer")
        return json_response({"offers": node.query_offers(params)})

    async def cancel_offers(_: web.Request) -> web.Response:
        return json_response(await node.cancel_offers())

    api.route("GET", "/v1/offers", offers, summary="Query the offer book (sorted by price)", query=QUERY,
              responses={200: Reply("Matching offers, cheapest first", OFFERS)})
    api.route("POST", "/v1/offers/cancel", cancel_offers, auth=True,
              summary="Provider: withdraw all own offers (gossip + cancelOffersBelow)",
              responses={200: Reply("Offers withdrawn: the new nonce floor and its transaction", CANCELLED),
                         400: failure("This node has no wallet, so no offers"),
                         409: failure("A race the node can retry"),
                         422: failure("The contract refused the transaction"),
                         500: failure("The node could not carry it out (see its log)")})
