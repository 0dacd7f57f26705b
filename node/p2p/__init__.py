"""gpunet.p2p: the libp2p layer (trio), reached from asyncio only through ``bridge``."""

from .config import LEASE_PROTOCOL, SYNC_PROTOCOL, GossipParams, P2PConfig, offers_topic
from .models import GossipMessage, PeerInfo

__all__ = [
    "LEASE_PROTOCOL",
    "SYNC_PROTOCOL",
    "GossipMessage",
    "GossipParams",
    "P2PConfig",
    "PeerInfo",
    "offers_topic",
]
