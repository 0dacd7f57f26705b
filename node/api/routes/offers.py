"""The offer book: queries, and a provider withdrawing its own offers."""

from __future__ import annotations

from aiohttp import web

from node.api.registry import Api, Reply, json_response

FILTERS = ("model", "min_gpus", "min_vram", "max_price", "region", "duration", "limit")


def register(api: Api) -> None:
    node = api.node

    async def offers(request: web.Request) -> web.Response:
        return json_response({"offers": node.query_offers(dict(request.query))})

    async def cancel_offers(_: web.Request) -> web.Response:
        return json_response(await node.cancel_offers())

    api.route("GET", "/v1/offers", offers, summary="Query the offer book (sorted by price)",
              query=[{"name": n, "in": "query", "schema": {"type": "string"}} for n in FILTERS],
              responses={200: Reply("Matching offers")})
    api.route("POST", "/v1/offers/cancel", cancel_offers, auth=True,
              summary="Provider: withdraw all own offers (gossip + cancelOffersBelow)",
              responses={200: Reply("Offers withdrawn")})
