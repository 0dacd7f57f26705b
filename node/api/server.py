"""HTTP API (aiohttp): JSON under ``/v1``, an OpenAPI document, Prometheus metrics and a small dashboard.

Routes live in ``node.api.routes`` (one module per group, each registering its own); ``make_app`` installs them
behind two middlewares. Listens on loopback only. Reads are open; anything that moves funds (opening, topping up,
closing a lease) needs ``Authorization: Bearer <token>``; the token is compared in constant time. No CORS headers
are sent, so browsers on other origins cannot call it.

DNS rebinding: a page on ``evil.example`` whose name its owner re-points to 127.0.0.1 is same-origin with itself,
so no CORS rule stops it reading the API; only the ``Host`` header it sends (``evil.example:<port>``) tells. A
request whose ``Host`` is not a loopback name (``localhost``, ``127.0.0.1``, ``[::1]``, any port) or one of the
configured ``allowed_hosts`` gets 421 before any route runs.

Every answer is JSON with ``{"error": ...}`` when it is not a success, including aiohttp's own (404 for an unknown
path, 405, 413): what the node raises maps to a status in ``errors``; anything else is a 500 logged with its trace.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import REGISTRY, CollectorRegistry

from node.api.facade import NodeFacade
from node.api.registry import Api, Handler, error_response
from node.api.routes import ROUTES
from node.chain.tx import TxFailed
from node.errors import ConfigError, NodeError, RecoverableError

log = logging.getLogger(__name__)

__all__ = ["NodeFacade", "make_app", "start_api"]


LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})
_HOST = re.compile(r"(?P<name>\[[0-9a-f:.]+\]|[^:\[\]/@\s]+)(?::[0-9]{1,5})?")


def host_name(header: str) -> str | None:
    """The name part of a ``Host`` header (lower case, brackets kept for IPv6), or None when malformed."""
    m = _HOST.fullmatch(header.strip().lower())
    return m.group("name") if m else None


def host_guard(allowed_hosts: Iterable[str] = ()) -> Middleware:
    allowed = LOOPBACK_NAMES | {h.strip().lower() for h in allowed_hosts if h.strip()}

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        name = host_name(request.headers.get("Host", ""))
        if name not in allowed:
            return error_response(421, "this node's API answers only to a loopback Host "
                                       "(localhost, 127.0.0.1, [::1]) or a configured one")
        return await handler(request)

    return guard


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:  # aiohttp's own answers (unknown path, wrong method, body too large)
        if exc.status < 400:
            raise
        resp = error_response(exc.status, exc.reason)
        if "Allow" in exc.headers:  # 405 names the methods the path has
            resp.headers["Allow"] = exc.headers["Allow"]
        return resp
    except (ConfigError, ValueError, KeyError) as exc:
        return error_response(400, str(exc))
    except TxFailed as exc:  # the contract refused the action (e.g. capacity taken, deposit too low)
        return error_response(422, str(exc))
    except RecoverableError as exc:
        return error_response(409, str(exc))
    except NodeError as exc:
        log.error("request failed", extra={"path": request.path, "error": str(exc)})
        return error_response(500, str(exc))
    except Exception:
        log.exception("request failed unexpectedly", extra={"path": request.path})
        return error_response(500, "internal error (see the node's log)")


def make_app(node: NodeFacade, token: str, registries: tuple[CollectorRegistry, ...] = (REGISTRY,),
             allowed_hosts: Iterable[str] = ()) -> web.Application:
    """``allowed_hosts``: names besides the loopback ones that the ``Host`` header may carry."""
    api = Api(node, token, registries)
    for register in ROUTES:
        register(api)
    app = web.Application(middlewares=[host_guard(allowed_hosts), errors], client_max_size=64 * 1024)
    api.install(app.router)
    return app


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
