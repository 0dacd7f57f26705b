"""The dashboard and explorer pages (server-rendered, see ``node.api.ui``), and their script and style sheet."""

from __future__ import annotations

import logging
import re
from typing import Any

from aiohttp import web

from node.api.registry import Api, Reply
from node.api.requests import BadRequest, parse_lease_id
from node.api.schemas import ADDRESS, HASH, LEASE_ID
from node.api.ui import pages
from node.api.ui.explorer import Market, rebuild
from node.api.ui.fmt import from_plain
from node.api.ui.static import CSS, JS

log = logging.getLogger(__name__)

EVENTS_READ = 1000
# The pages load only what the node serves: no inline script, no other origin, no framing.
HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                                      "script-src 'self'; frame-ancestors 'none'; form-action 'self'",
           "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}
HTML: dict[str, Any] = {"type": "string"}
PAGE = Reply("HTML page", HTML, "text/html")
EXPLORER_QUERY = [
    {"name": "lease", "in": "query", "required": False, "schema": LEASE_ID, "description": "one lease"},
    {"name": "provider", "in": "query", "required": False, "schema": ADDRESS,
     "description": "one address (provider, consumer or recipient)"},
    {"name": "offer", "in": "query", "required": False, "schema": HASH, "description": "leases of one offer"},
    {"name": "tx", "in": "query", "required": False, "schema": HASH, "description": "one transaction"},
]
_PATTERNS = {"provider": re.compile(r"0x[0-9a-fA-F]{40}"), "offer": re.compile(r"0x[0-9a-fA-F]{64}"),
             "tx": re.compile(r"0x[0-9a-fA-F]{64}")}


def html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", headers=HEADERS)


def register(api: Api) -> None:
    node = api.node

    def market() -> Market:
        return rebuild(node.chain_events(EVENTS_READ))

    async def money() -> dict[str, Any]:
        try:
            return await node.money()
        except Exception as exc:  # an RPC outage shows as "unavailable", the page still loads
            log.warning("wallet read failed", extra={"error": repr(exc)[:200]})
            return {}

    async def overview(_: web.Request) -> web.Response:
        return html(pages.overview(node.status(), node.leases(), await money(), market()))

    async def market_page(request: web.Request) -> web.Response:
        filters = {k: v for k, v in request.query.items() if k in MARKET_FILTERS and v != ""}
        try:
            query = {k: v for k, v in filters.items() if k != "max_price_hour"}
            if "max_price_hour" in filters:  # gDEV per GPU-hour -> base units per GPU-second
                query["max_price"] = str(from_plain(filters["max_price_hour"]) // 3600)
            offers = node.query_offers(query)
        except ValueError as exc:
            return html(pages.market_page([], filters, {}, market(), str(exc)), 400)
        stakes = {o["provider"]: node.provider_stake(o["provider"]) for o in offers}
        return html(pages.market_page(offers, filters, stakes, market()))

    async def leases(_: web.Request) -> web.Response:
        return html(pages.leases_page(node.leases()))

    async def lease(request: web.Request) -> web.Response:
        lid = parse_lease_id(request.match_info["lease_id"])
        view = node.lease(lid)
        if view is None:
            return html(pages.page("No such lease", f"<p>This node is no party to lease #{lid}.</p>",
                                   active="/leases"), 404)
        return html(pages.lease_page(view, node.lease_usage(lid), market()))

    async def money_page(_: web.Request) -> web.Response:
        return html(pages.money_page(await money(), market()))

    async def peers(_: web.Request) -> web.Response:
        return html(pages.peers_page(await node.peers(), node.status()))

    async def explorer(request: web.Request) -> web.Response:
        focus: dict[str, str] = {}
        for key in ("lease", "provider", "offer", "tx"):  # every one given is checked; the first is the focus
            value = request.query.get(key)
            if value is None:
                continue
            if key == "lease":
                parse_lease_id(value)
            elif not _PATTERNS[key].fullmatch(value):
                raise BadRequest(f"{key} must be 0x-prefixed hex")
            if not focus:
                focus[key] = value
        return html(pages.explorer_page(market(), focus))

    async def css(_: web.Request) -> web.Response:
        return web.Response(text=CSS, content_type="text/css", headers={"Cache-Control": "max-age=300"})

    async def js(_: web.Request) -> web.Response:
        return web.Response(text=JS, content_type="text/javascript", headers={"Cache-Control": "max-age=300"})

    tag = "dashboard"
    api.route("GET", "/", overview, summary="Dashboard: the node at a glance", tag=tag, responses={200: PAGE})
    api.route("GET", "/market", market_page, summary="Dashboard: offers with filters", tag=tag,
              query=[q for q in _offer_filters()],
              responses={200: PAGE, 400: Reply("A filter was refused: the page says which", HTML, "text/html")})
    api.route("GET", "/leases", leases, summary="Dashboard: my leases", tag=tag, responses={200: PAGE})
    api.route("GET", "/leases/{lease_id}", lease, summary="Dashboard: one lease (usage, checkpoints, settlements)",
              tag=tag, responses={200: PAGE, 404: Reply("This node is no party to that lease", HTML, "text/html")})
    api.route("GET", "/money", money_page, summary="Dashboard: balances, stake, earnings, withdrawals", tag=tag,
              responses={200: PAGE})
    api.route("GET", "/peers", peers, summary="Dashboard: connected peers", tag=tag, responses={200: PAGE})
    api.route("GET", "/explorer", explorer, summary="Explorer: the market rebuilt from contract events", tag=tag,
              query=EXPLORER_QUERY, responses={200: PAGE})
    api.route("GET", "/static/dashboard.css", css, summary="Dashboard style sheet", tag=tag,
              responses={200: Reply("CSS", HTML, "text/css")})
    api.route("GET", "/static/dashboard.js", js, summary="Dashboard script", tag=tag,
              responses={200: Reply("JavaScript", HTML, "text/javascript")})


def _offer_filters() -> list[dict[str, Any]]:
    from node.api.routes.offers import QUERY

    # An HTML form sends its empty fields too: empty means no filter.
    price = {"name": "max_price_hour", "in": "query", "required": False,
             "description": "at most this price, gDEV per GPU-hour (empty: any)",
             "schema": {"type": "string", "pattern": "^([0-9]{1,60}(\\.[0-9]{1,18})?)?$"}}
    out = []
    for q in QUERY:
        if q["name"] in ("limit", "max_price"):
            continue
        if q["schema"].get("type") == "integer":
            q = {**q, "description": q["description"] + " (empty: any)",
                 "schema": {"type": "string", "pattern": "^[0-9]*$"}}
        out.append(q)
    return [*out, price]


MARKET_FILTERS = frozenset(q["name"] for q in _offer_filters())
