"""One rate limit shared by the noisy log lines of a host (bad frames, malformed pubsub input, validator errors).

The counters count every event; the log shows at most one line per ``LOG_EVERY_S`` for all of them together.
"""

from __future__ import annotations

import time

LOG_EVERY_S = 5.0


class LogThrottle:
    """``allow()`` is True at most once per ``every_s`` (monotonic clock)."""

    def __init__(self, every_s: float = LOG_EVERY_S) -> None:
        self._every_s = every_s
        self._last = 0.0

    def allow(self) -> bool:
        now = time.monotonic()
        if now - self._last >= self._every_s:
            self._last = now
            return True
        return False
