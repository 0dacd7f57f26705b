"""Wallet keys: encrypted eth-account keystores (scrypt) and, on devnets only, anvil's mnemonic accounts.

Private keys are held as bytes in memory and never logged or printed (see ``node.logs`` for the redacting filter).
"""

from __future__ import annotations

import getpass
import json
import os
import stat
import sys
from pathlib import Path

from eth_account import Account

from node.crypto.devnet import devnet_key
from node.errors import ConfigError


def create_keystore(path: Path, password: str, private_key: bytes | None = None) -> str:
    """Write an encrypted keystore (0600) and return its checksummed address. Refuses to overwrite."""
    if path.exists():
        raise ConfigError(f"keystore {path} already exists; refusing to overwrite")
    if len(password) < MIN_PASSWORD:
        raise ConfigError(f"keystore password must be at least {MIN_PASSWORD} characters")
    acct = Account.from_key(private_key) if private_key is not None else Account.create()
    blob = Account.encrypt(acct.key, password)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(blob, f)
    return str(acct.address)


def load_keystore(path: Path, password: str) -> bytes:
    try:
        blob = json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"keystore {path} not found") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"keystore {path} is not JSON") from exc
    mode = Path(path).stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"keystore {path} is readable by others (mode {oct(mode & 0o777)}); chmod 600 it")
    try:
        return bytes(Account.decrypt(blob, password))
    except ValueError as exc:
        raise ConfigError(f"keystore {path}: wrong password or corrupt file") from exc


MIN_PASSWORD = 8


def read_password(password_file: Path | None, *, confirm: bool = False, what: str = "keystore password") -> str:
    """The keystore password from a file, ``GPUNET_KEYSTORE_PASSWORD`` or, on a terminal, a prompt (asked once;
    with ``confirm`` (a new keystore) its length is checked before it is asked a second time)."""
    if password_file is not None:
        try:
            return Path(password_file).read_text().rstrip("\n")
        except FileNotFoundError as exc:
            raise ConfigError(f"password file {password_file} not found") from exc
    env = os.environ.get("GPUNET_KEYSTORE_PASSWORD")
    if env is not None:
        return env
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        raise ConfigError("keystore password missing and no terminal to ask for it: give a password file "
                          "(--password-file / password_file) or set GPUNET_KEYSTORE_PASSWORD")
    password = getpass.getpass(f"{what}: ")
    if confirm:
        if len(password) < MIN_PASSWORD:
            raise ConfigError(f"keystore password must be at least {MIN_PASSWORD} characters")
        if getpass.getpass(f"{what} (again): ") != password:
            raise ConfigError("the two passwords differ")
    return password


def resolve_wallet(keystore: Path | None, password_file: Path | None, dev_account: int | None) -> bytes | None:
    """The node's wallet key from config, or None for a plain peer without a wallet."""
    if keystore is not None:
        return load_keystore(keystore, read_password(password_file))
    if dev_account is not None:
        if not (0 <= dev_account < 1000):
            raise ConfigError("dev_account must be an index in 0..999")
        return devnet_key(dev_account)
    return None
