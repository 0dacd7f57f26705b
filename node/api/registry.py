"""Where routes are declared: each route module's ``register(api)`` adds its routes through ``Api.route``, which
installs the handler (behind the token guard when ``auth``) and keeps its OpenAPI operation, so a route cannot be
served without being documented.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from node.api.facade import NodeFacade
from node.api.schemas import ERROR

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Schema = dict[str, Any]


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data, default=_default), status=status, content_type="application/json")


def _default(v: Any) -> Any:
    if isinstance(v, bytes):
        return "0x" + v.hex()
    if isinstance(v, set | frozenset | tuple):
        return list(v)
    return str(v)


def error_response(status: int, message: str) -> web.Response:
    return json_response({"error": message}, status)


@dataclass(frozen=True, slots=True)
class Reply:
    """One documented response: its description, and the schema of its body (None: no body described);
    ``also`` maps further content types the same status may answer with (e.g. ``text/event-stream``) to theirs."""

    description: str
    schema: Schema | None = None
    content_type: str = "application/json"
    also: Mapping[str, Schema] = field(default_factory=dict)


def failure(description: str) -> Reply:
    """An error response: ``{"error": "<message>"}``."""
    return Reply(description, ERROR)


# Answers the middleware and the token guard can give on any route that has the matching feature.
HOST_REFUSED = failure("The Host header names neither a loopback name nor a configured host (DNS rebinding guard)")
BAD_INPUT = failure("Malformed parameter or body; the message names the field")
NO_TOKEN = failure("Missing or wrong token (Authorization: Bearer <token>)")
TOO_LARGE = failure("Request body over 64 KiB")


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    responses: Mapping[int, Reply]
    body: Schema | None = None
    query: Sequence[Schema] = ()
    auth: bool = False
    tag: str = "node"


@dataclass
class Api:
    """The node behind the API, the token, the metric registries, and the routes declared so far."""

    node: NodeFacade
    token: str
    registries: tuple[CollectorRegistry, ...]
    routes: list[Route] = field(default_factory=list)

    def route(self, method: str, path: str, handler: Handler, *, summary: str, responses: Mapping[int, Reply],
              body: Schema | None = None, query: Sequence[Schema] = (), auth: bool = False,
              tag: str = "node") -> None:
        answers = {421: HOST_REFUSED, **responses}
        if body is not None or query or "{" in path:
            answers.setdefault(400, BAD_INPUT)
        if body is not None:
            answers.setdefault(413, TOO_LARGE)
        if auth:
            answers.setdefault(401, NO_TOKEN)
        self.routes.append(Route(method.upper(), path, handler, summary, answers, body, tuple(query), auth, tag))

    def install(self, router: web.UrlDispatcher) -> None:
        for r in self.routes:
            router.add_route(r.method, r.path, self.require_token(r.handler) if r.auth else r.handler)

    def require_token(self, handler: Handler) -> Handler:
        """Only ``Authorization: Bearer <token>`` is read, compared in constant time."""
        expected = self.token.encode()

        async def guarded(request: web.Request) -> web.StreamResponse:
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            if scheme != "Bearer" or not given or not hmac.compare_digest(given.strip().encode(), expected):
                return error_response(401, "missing or wrong API token (Authorization: Bearer <token>)")
            return await handler(request)

        return guarded
