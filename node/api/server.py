"""HTTP API (aiohttp): JSON under ``/v1``, an OpenAPI document, Prometheus metrics and a small dashboard.

Routes live in ``node.api.routes`` (one module per group, each registering its own); ``make_app`` installs them
behind the error middleware. Listens on loopback only. Reads are open; anything that moves funds (opening, topping
up, closing a lease) needs ``Authorization: Bearer <token>``; the token is compared in constant time. No CORS
headers are sent, so browsers on other origins cannot call it.
"""

from __future__ import annotations

import logging

from aiohttp import web
from prometheus_client import REGISTRY, CollectorRegistry

from node.api.facade import NodeFacade
from node.api.registry import Api, Handler, error_response
from node.api.routes import ROUTES
from node.chain.tx import TxFailed
from node.errors import ConfigError, NodeError, RecoverableError

log = logging.getLogger(__name__)

__all__ = ["NodeFacade", "make_app", "start_api"]


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except (ConfigError, ValueError, KeyError) as exc:
        return error_response(400, str(exc))
    except TxFailed as exc:  # the contract refused the action (e.g. capacity taken, deposit too low)
        return error_response(422, str(exc))
    except RecoverableError as exc:
        return error_response(409, str(exc))
    except NodeError as exc:
        log.error("request failed", extra={"path": request.path, "error": str(exc)})
        return error_response(500, str(exc))


def make_app(node: NodeFacade, token: str, registries: tuple[CollectorRegistry, ...] = (REGISTRY,)) -> web.Application:
    api = Api(node, token, registries)
    for register in ROUTES:
        register(api)
    app = web.Application(middlewares=[errors], client_max_size=64 * 1024)
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
