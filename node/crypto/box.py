"""Sealed payloads between two node keys (NaCl ``crypto_box``: X25519 + XSalsa20-Poly1305).

Node keys are ed25519 (the libp2p peer keys); both sides convert them to curve25519 for the box. The sealed form
is ``nonce (24 bytes) || ciphertext``; the nonce is random, so sealing is done by the I/O layer, never inside the
pure lease state machine. Opening authenticates the sender: a box sealed by any other key, or altered in any
byte, raises :class:`BoxError`.
"""

from __future__ import annotations

import nacl.exceptions
import nacl.public
import nacl.signing
from nacl.bindings import crypto_sign_ed25519_pk_to_curve25519

from node.errors import InvalidMessage

NONCE_SIZE = nacl.public.Box.NONCE_SIZE  # 24
OVERHEAD = NONCE_SIZE + 16  # nonce + Poly1305 tag


class BoxError(InvalidMessage):
    """A sealed payload does not open: wrong keys, tampered, truncated, or a key that does not convert."""


def _box(own_key: nacl.signing.SigningKey, peer_node_key: bytes) -> nacl.public.Box:
    try:
        peer = nacl.public.PublicKey(crypto_sign_ed25519_pk_to_curve25519(bytes(peer_node_key)))
        return nacl.public.Box(own_key.to_curve25519_private_key(), peer)
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise BoxError("node key cannot be used for a box") from exc


def seal(
    plaintext: bytes, sender_key: nacl.signing.SigningKey, recipient_node_key: bytes, nonce: bytes | None = None
) -> bytes:
    """Encrypt and authenticate ``plaintext`` from ``sender_key`` to the 32-byte ed25519 ``recipient_node_key``.

    ``nonce`` (24 bytes) is random when omitted; pass one only for reproducible test vectors.
    """
    return bytes(_box(sender_key, recipient_node_key).encrypt(bytes(plaintext), nonce))


def open_sealed(sealed: bytes, recipient_key: nacl.signing.SigningKey, sender_node_key: bytes) -> bytes:
    """Decrypt a payload sealed by ``sender_node_key`` for ``recipient_key``; raises :class:`BoxError`."""
    if len(sealed) < OVERHEAD:
        raise BoxError("sealed payload too short")
    try:
        return _box(recipient_key, sender_node_key).decrypt(bytes(sealed))
    except nacl.exceptions.CryptoError as exc:
        raise BoxError("sealed payload does not open") from exc
