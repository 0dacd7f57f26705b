"""The node key (ed25519, the libp2p identity): loaded from or persisted to a 0600 file.

The file holds the libp2p protobuf encoding of the private key (the same bytes as go-libp2p's
``crypto.MarshalPrivateKey``), so the identity can be moved between implementations.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair, KeyType
from libp2p.crypto.serialization import deserialize_private_key
from libp2p.peer.id import ID

from node.errors import ConfigError

_MAX_KEY_FILE_BYTES = 4096


def load_or_create_node_key(path: Path | str) -> KeyPair:
    """Return the key stored at ``path``, creating (and persisting with mode 0600) a new one if missing.

    Raises ``ConfigError`` when the file is readable or writable by group or others, is not a regular file,
    or does not hold an ed25519 libp2p private key.
    """
    path = Path(path)
    if path.exists() or path.is_symlink():
        return _load(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key_pair = create_new_key_pair()
    data = key_pair.private_key.serialize()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # lost a race with another process creating it: use theirs
        return _load(path)
    try:
        os.fchmod(fd, 0o600)  # umask cannot widen it, but make the intent explicit
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return key_pair


def peer_id_of(key_pair: KeyPair) -> str:
    return ID.from_pubkey(key_pair.public_key).to_base58()


def _load(path: Path) -> KeyPair:
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"node key {path} is not a regular file")
    if st.st_mode & 0o077:
        raise ConfigError(
            f"node key {path} is accessible by group/others (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"run `chmod 600 {path}`"
        )
    if st.st_size > _MAX_KEY_FILE_BYTES:
        raise ConfigError(f"node key {path} is too large to be a key")
    data = path.read_bytes()
    try:
        private_key = deserialize_private_key(data)
    except Exception as exc:
        raise ConfigError(f"node key {path} is not a libp2p private key") from exc
    if private_key.get_type() is not KeyType.Ed25519:
        raise ConfigError(f"node key {path} is not an ed25519 key")
    return KeyPair(private_key, private_key.get_public_key())
