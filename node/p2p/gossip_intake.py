"""Judging gossiped (and synced) messages, and delivering the accepted ones.

The synchronous ``validate(data, sender)`` callback is the pubsub topic validator (a message it does not ACCEPT
is neither delivered nor forwarded). ``judge`` wraps it: it counts every message once
(``gpunet_gossip_messages_total{verdict,reason}``), and a validator that raises gives IGNORE
(``validator_error``) and an error log with the traceback, never a REJECT: a bug on our side must not penalise
the honest peer that forwarded the message. A REJECT counts against the peer that sent it (``PeerGuard``).

py-libp2p 0.8.1 facts handled here: a subscription queue holds 32 messages and drops the rest, so ``drain``
empties it in a task that only does non-blocking work per message; a node receives its own publishes: filtered
unless ``deliver_own_messages``.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from libp2p.peer.id import ID

from node.types import Validation, Verdict

from .config import P2PConfig
from .metrics import P2PMetrics
from .models import GossipMessage
from .peer_guard import PeerGuard

logger = logging.getLogger(__name__)

Validate = Callable[[bytes, str], Validation]
OnMessage = Callable[[GossipMessage], None]

VALIDATOR_ERROR = Validation(Verdict.IGNORE, "validator_error")
OVERSIZE = Validation(Verdict.REJECT, "oversize")
FORWARDER_MEMORY = 8192


class GossipIntake:
    """The verdict on each message (``judge``), the topic validator of pubsub and the delivery of accepted
    gossip (``drain``), which names the peer that forwarded each message to us."""

    def __init__(
        self,
        config: P2PConfig,
        own_peer: str,
        validate: Validate,
        on_message: OnMessage,
        metrics: P2PMetrics,
        guard: PeerGuard,
        should_log: Callable[[], bool],
    ) -> None:
        self._config = config
        self._own_peer = own_peer
        self._validate = validate
        self._on_message = on_message
        self._metrics = metrics
        self._guard = guard
        self._should_log = should_log
        self._forwarders: OrderedDict[bytes, tuple[str, int]] = OrderedDict()

    def judge(self, data: bytes, sender: str) -> Validation:
        """Run the validator with the size cap, timing, counting (once per message) and the REJECT penalty.

        Never raises: an exception in the validator is IGNORE ``validator_error`` plus an error log with the
        traceback (rate-limited by ``should_log``; the counter counts them all)."""
        if len(data) > self._config.gossip.max_message_bytes:
            verdict = OVERSIZE
        else:
            t0 = time.perf_counter()
            try:
                verdict = self._validate(data, sender)
                if not isinstance(verdict, Validation):
                    raise TypeError(f"validator returned {type(verdict).__name__}, not Validation")
            except Exception:
                if self._should_log():
                    logger.exception("gossip validator raised; treating as IGNORE", extra={"sender": sender})
                verdict = VALIDATOR_ERROR
            self._metrics.validation_seconds.observe(time.perf_counter() - t0)
        self._metrics.record_verdict(verdict.verdict.value, verdict.reason or "unspecified")
        if verdict.verdict is Verdict.REJECT and sender != self._own_peer:
            self._guard.penalise(sender)
        return verdict

    def topic_validator(self, forwarder: ID, msg: Any) -> bool:
        """pubsub's synchronous topic validator: True to deliver and forward ``msg``."""
        try:
            sender = forwarder.to_base58()
            if sender == self._own_peer:
                return True  # own publishes were validated in publish()
            verdict = self.judge(bytes(msg.data), sender)
            if verdict.accepted:
                key = bytes(msg.from_id) + bytes(msg.seqno)
                self._forwarders[key] = (sender, time.time_ns())
                if len(self._forwarders) > FORWARDER_MEMORY:
                    self._forwarders.popitem(last=False)
            return verdict.accepted
        except Exception:  # belt and braces: nothing in here may break pubsub's read loop
            logger.exception("topic validator wrapper failed")
            return False

    async def drain(self, subscription: Any) -> None:
        """Empty the 32-slot subscription queue as fast as it fills: per message, only non-blocking work."""
        own = ID.from_base58(self._own_peer).to_bytes()
        topic = self._config.topic
        async for msg in subscription:
            try:
                from_id = bytes(msg.from_id)
                if from_id == own and not self._config.deliver_own_messages:
                    continue
                origin = ID(from_id).to_base58()
                sender, at_ns = self._forwarders.pop(from_id + bytes(msg.seqno), (origin, time.time_ns()))
                self._on_message(GossipMessage(bytes(msg.data), sender, topic, at_ns, origin, "gossip"))
            except Exception:
                logger.exception("delivering a gossip message failed")
