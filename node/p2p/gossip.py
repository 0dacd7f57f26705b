"""The gossipsub wiring of a host: the router with our parameters, and a pubsub that contains malformed input.

gossipsub /meshsub/1.2.0, 1.1.0, 1.0.0 with StrictSign and the default (from + seqno) message ids. Facts about
py-libp2p 0.8.1 worked around here and in the host (measured):
- gossipsub's heartbeat defaults to 120 s: ``GossipParams.heartbeat_interval_s`` (1 s) is passed explicitly;
- a per-forwarder spam limit (10 msgs/topic/s) silently stops forwarding: configured, off by default (see
  ``GossipParams``);
- pubsub RPCs over 1 MiB are dropped: publishes are capped at ``GossipParams.max_message_bytes`` (``judge``);
- one crafted message can stop the pubsub service: ``GuardedPubsub``;
- per-message CPU (IDONTWANT below 512 B, a yamux window update per read, signed peer records re-verified and
  rebuilt per RPC): ``tuning``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
from libp2p.pubsub.pubsub import Pubsub

from . import tuning
from .config import GossipParams
from .streams import reset_quietly

GOSSIP_PROTOCOLS = (PROTOCOL_ID_V12, PROTOCOL_ID_V11, PROTOCOL_ID)
# (peer, reason, error, weight): malformed input from ``peer`` weighs as ``weight`` rejected messages.
OnMalformed = Callable[[ID, str, Exception, int], None]


def new_gossipsub(gp: GossipParams) -> GossipSub:
    """The gossipsub router (``tuning``'s subclass) with our parameters."""
    return tuning.gossipsub_class()(
        protocols=list(GOSSIP_PROTOCOLS),
        degree=gp.degree,
        degree_low=gp.degree_low,
        degree_high=gp.degree_high,
        time_to_live=gp.fanout_ttl_s,
        gossip_window=gp.gossip_window,
        gossip_history=gp.gossip_history,
        heartbeat_interval=gp.heartbeat_interval_s,
        prune_back_off=gp.prune_back_off_s,
        adaptive_gossip_enabled=gp.adaptive_gossip,
        spam_protection_enabled=gp.spam_max_msgs_per_s is not None,
        max_messages_per_topic_per_second=gp.spam_max_msgs_per_s or 10.0,
        eclipse_protection_enabled=gp.eclipse_protection,
    )


def new_pubsub(host: IHost, gossipsub: GossipSub, gp: GossipParams, on_malformed: OnMalformed) -> Pubsub:
    return GuardedPubsub(on_malformed, host, gossipsub, strict_signing=True, seen_ttl=gp.seen_ttl_s)


class GuardedPubsub(Pubsub):
    """Pubsub that contains errors caused by malformed input to the peer that sent it.

    In py-libp2p 0.8.1 one crafted message (e.g. a garbage public key in ``Message.key``) raises out of
    ``push_msg`` or the stream reader, which stops the pubsub service and the host with it. Here such an
    error drops that message or that stream and is reported to ``on_malformed`` (which counts it and penalises
    the sending peer: a malformed RPC weighs as ten rejected messages).
    """

    def __init__(self, on_malformed: OnMalformed, *args: Any, **kwargs: Any) -> None:
        self._on_malformed = on_malformed
        super().__init__(*args, **kwargs)

    async def push_msg(self, msg_forwarder: ID, msg: Any) -> None:
        try:
            await super().push_msg(msg_forwarder, msg)
        except Exception as exc:
            self._on_malformed(msg_forwarder, "malformed_message", exc, 1)

    async def _teardown_if_connected(self, peer_id: ID) -> None:
        """py-libp2p 0.8.1 ``del``s the peer after awaiting the stream reset; if the peer's disconnect removed it
        meanwhile (as when we blacklist and disconnect a peer), the KeyError stops the whole pubsub service."""
        stream = self.peers.get(peer_id)
        if stream is not None:
            await reset_quietly(stream)
            self.peers.pop(peer_id, None)
        self._forget_all_subscriptions(peer_id)

    async def stream_handler(self, stream: Any) -> None:
        try:
            await super().stream_handler(stream)
        except Exception as exc:
            await reset_quietly(stream)
            self._on_malformed(stream.muxed_conn.peer_id, "malformed_rpc", exc, 10)
