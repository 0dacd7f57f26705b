"""The node key (ed25519) seen from the protocol side: the NaCl signing key behind the libp2p identity, and the
libp2p peer id of any registered node key."""

from __future__ import annotations

import nacl.signing
from libp2p.crypto.ed25519 import Ed25519PublicKey
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID


def signing_key(key_pair: KeyPair) -> nacl.signing.SigningKey:
    impl = getattr(key_pair.private_key, "impl", None)
    if not isinstance(impl, nacl.signing.SigningKey):
        raise TypeError("node key is not an ed25519 key")
    return impl


def peer_id_of_node_key(node_key: bytes) -> str:
    """The base58 libp2p peer id of a 32-byte ed25519 public key (as registered in ProviderStaking)."""
    if len(node_key) != 32:
        raise ValueError("node key must be 32 bytes")
    return ID.from_pubkey(Ed25519PublicKey.from_bytes(node_key)).to_base58()


def node_key_of_peer_id(peer_id: str) -> bytes:
    """The ed25519 public key inlined in an identity-multihash peer id (ed25519 peer ids always inline it)."""
    pid = ID.from_base58(peer_id)
    pub = pid.extract_public_key()
    if pub is None:
        raise ValueError("peer id does not inline its public key")
    return bytes(pub.to_bytes())
