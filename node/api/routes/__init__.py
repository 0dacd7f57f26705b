"""Route modules. Each has ``register(api)`` declaring its routes with ``Api.route``; ``ROUTES`` lists them in the
order they are installed. A new group of routes is a new module here plus one line in ``ROUTES``.
"""

from __future__ import annotations

from collections.abc import Callable

from node.api.registry import Api
from node.api.routes import dashboard, docs, events, forwards, leases, logs, market, metrics, offers, status

ROUTES: tuple[Callable[[Api], None], ...] = (
    status.register,
    offers.register,
    leases.register,
    logs.register,
    forwards.register,
    market.register,
    events.register,
    metrics.register,
    docs.register,
    dashboard.register,
)
