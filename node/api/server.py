"""HTTP API (aiohttp): JSON under ``/v1``, an OpenAPI document, Prometheus metrics and a small dashboard.

Listens on loopback only. Reads are open; anything that moves funds (opening, topping up, closing a lease) needs
``Authorization: Bearer <token>``; the token is compared in constant time. No CORS headers are sent, so browsers
on other origins cannot call it.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from node.api.requests import BadRequest, OpenLeaseRequest, TopUpRequest, parse_lease_id, parse_limit
from node.chain.tx import TxFailed
from node.errors import ConfigError, NodeError, RecoverableError

log = logging.getLogger(__name__)


class NodeFacade(Protocol):
    """What the API needs from the node (implemented by ``node.service.Node``)."""

    def status(self) -> dict[str, Any]: ...
    def query_offers(self, params: dict[str, str]) -> list[dict[str, Any]]: ...
    async def peers(self) -> list[dict[str, Any]]: ...
    def leases(self) -> list[dict[str, Any]]: ...
    def lease(self, lease_id: int) -> dict[str, Any] | None: ...
    async def open_lease(self, request: OpenLeaseRequest) -> dict[str, Any]: ...
    async def top_up(self, lease_id: int, amount: int) -> dict[str, Any]: ...
    async def close_lease(self, lease_id: int) -> dict[str, Any]: ...
    async def cancel_offers(self) -> dict[str, Any]: ...
    def chain_events(self, limit: int) -> list[dict[str, Any]]: ...


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data, default=_default), status=status, content_type="application/json")


def _default(v: Any) -> Any:
    if isinstance(v, bytes):
        return "0x" + v.hex()
    if isinstance(v, set | frozenset | tuple):
        return list(v)
    return str(v)


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


def make_app(node: NodeFacade, token: str, registries: tuple[CollectorRegistry, ...] = (REGISTRY,)) -> web.Application:
    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except (ConfigError, ValueError, KeyError) as exc:
            return _error(400, str(exc))
        except TxFailed as exc:  # the contract refused the action (e.g. capacity taken, deposit too low)
            return _error(422, str(exc))
        except RecoverableError as exc:
            return _error(409, str(exc))
        except NodeError as exc:
            log.error("request failed", extra={"path": request.path, "error": str(exc)})
            return _error(500, str(exc))

    def require_token(handler: Handler) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            auth = request.headers.get("Authorization", "")
            given = auth.removeprefix("Bearer ").strip()
            if not given or not hmac.compare_digest(given.encode(), token.encode()):
                return _error(401, "missing or wrong API token (Authorization: Bearer <token>)")
            return await handler(request)

        return wrapped

    async def body_json(request: web.Request) -> object:
        try:
            return await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadRequest("request body must be a JSON object") from exc

    def lease_id(request: web.Request) -> int:
        return parse_lease_id(request.match_info["lease_id"])

    async def status(_: web.Request) -> web.Response:
        return _json(node.status())

    async def offers(request: web.Request) -> web.Response:
        return _json({"offers": node.query_offers(dict(request.query))})

    async def peers(_: web.Request) -> web.Response:
        return _json({"peers": await node.peers()})

    async def leases(_: web.Request) -> web.Response:
        return _json({"leases": node.leases()})

    async def lease(request: web.Request) -> web.Response:
        data = node.lease(lease_id(request))
        return _json(data) if data is not None else _error(404, "no such lease")

    async def events(request: web.Request) -> web.Response:
        return _json({"events": node.chain_events(parse_limit(request.query.get("limit")))})

    async def open_lease(request: web.Request) -> web.Response:
        return _json(await node.open_lease(OpenLeaseRequest.parse(await body_json(request))), 201)

    async def top_up(request: web.Request) -> web.Response:
        lid = lease_id(request)
        return _json(await node.top_up(lid, TopUpRequest.parse(await body_json(request)).amount))

    async def close(request: web.Request) -> web.Response:
        return _json(await node.close_lease(lease_id(request)))

    async def cancel_offers(_: web.Request) -> web.Response:
        return _json(await node.cancel_offers())

    async def metrics(_: web.Request) -> web.Response:
        resp = web.Response(body=b"".join(generate_latest(r) for r in registries))
        resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return resp

    async def openapi(_: web.Request) -> web.Response:
        return _json(OPENAPI)

    async def dashboard(_: web.Request) -> web.Response:
        return web.Response(text=DASHBOARD, content_type="text/html")

    app = web.Application(middlewares=[errors], client_max_size=64 * 1024)
    app.router.add_get("/v1/status", status)
    app.router.add_get("/v1/offers", offers)
    app.router.add_get("/v1/peers", peers)
    app.router.add_get("/v1/leases", leases)
    app.router.add_get("/v1/leases/{lease_id}", lease)
    app.router.add_get("/v1/events", events)
    app.router.add_post("/v1/leases", require_token(open_lease))
    app.router.add_post("/v1/leases/{lease_id}/topup", require_token(top_up))
    app.router.add_post("/v1/leases/{lease_id}/close", require_token(close))
    app.router.add_post("/v1/offers/cancel", require_token(cancel_offers))
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/", dashboard)
    return app


_OK = {"200": {"description": "OK"}}
_AUTH: list[dict[str, list[str]]] = [{"bearer": []}]
OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "gpunet node API", "version": "1"},
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    "paths": {
        "/v1/status": {"get": {"summary": "Node identity, chain, peers, book size", "responses": _OK}},
        "/v1/offers": {"get": {
            "summary": "Query the offer book (sorted by price)",
            "parameters": [{"name": n, "in": "query", "schema": {"type": "string"}} for n in
                           ("model", "min_gpus", "min_vram", "max_price", "region", "duration", "limit")],
            "responses": _OK}},
        "/v1/offers/cancel": {"post": {"summary": "Provider: withdraw all own offers (gossip + cancelOffersBelow)",
                                       "security": _AUTH, "responses": _OK}},
        "/v1/peers": {"get": {"summary": "Connected peers", "responses": _OK}},
        "/v1/leases": {
            "get": {"summary": "Leases this node is party to", "responses": _OK},
            "post": {"summary": "Open a lease from an offer in the book", "security": _AUTH,
                     "requestBody": {"content": {"application/json": {"schema": {
                         "type": "object", "required": ["offer_id", "gpus", "deposit"],
                         "properties": {"offer_id": {"type": "string"}, "gpus": {"type": "integer"},
                                        "deposit": {"type": "string"}, "job": {"type": "object"}}}}}},
                     "responses": {"201": {"description": "Opened"}, "401": {"description": "No token"}}}},
        "/v1/leases/{lease_id}": {"get": {"summary": "One lease with checkpoints and settlements",
                                          "parameters": [{"name": "lease_id", "in": "path", "required": True,
                                                          "schema": {"type": "integer"}}], "responses": _OK}},
        "/v1/leases/{lease_id}/topup": {"post": {"summary": "Add deposit", "security": _AUTH, "responses": _OK}},
        "/v1/leases/{lease_id}/close": {"post": {"summary": "Close a lease", "security": _AUTH, "responses": _OK}},
        "/v1/events": {"get": {"summary": "Recent contract events (explorer view)", "responses": _OK}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": _OK}},
    },
}

DASHBOARD = """<!doctype html><html><head><meta charset="utf-8"><title>gpunet node</title>
<style>body{font:14px system-ui;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}
</style></head><body><h1>gpunet node</h1><pre id="status"></pre><h2>Offers</h2><table id="offers"></table>
<h2>Leases</h2><table id="leases"></table><h2>Events</h2><table id="events"></table>
<script>
function fill(id, rows){const t=document.getElementById(id);t.textContent='';if(!rows.length)return;
const h=t.insertRow();Object.keys(rows[0]).forEach(k=>{const c=document.createElement('th');
c.textContent=k;h.appendChild(c)});
rows.forEach(r=>{const tr=t.insertRow();Object.values(r).forEach(v=>{tr.insertCell().textContent=
typeof v==='object'?JSON.stringify(v):String(v)})})}
async function load(){const j=u=>fetch(u).then(r=>r.json());
document.getElementById('status').textContent=JSON.stringify(await j('/v1/status'),null,1);
fill('offers',(await j('/v1/offers?limit=50')).offers);fill('leases',(await j('/v1/leases')).leases);
fill('events',(await j('/v1/events?limit=50')).events)}
load();setInterval(load,3000);
</script></body></html>"""


async def start_api(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    if host not in ("127.0.0.1", "::1", "localhost"):
        raise ConfigError("the HTTP API only listens on loopback")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"the HTTP API cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, int(bound)
