"""Encrypted wallet keystores: created 0600, refused when readable by others or with a wrong password."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner
from eth_account import Account

from node.cli import main
from node.crypto.wallet import create_keystore, load_keystore, resolve_wallet
from node.errors import ConfigError


def test_keystore_round_trip_and_permissions(tmp_path):
    path = tmp_path / "w.json"
    address = create_keystore(path, "correct horse")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    key = load_keystore(path, "correct horse")
    assert Account.from_key(key).address == address
    assert key.hex() not in path.read_text()  # encrypted at rest
    with pytest.raises(ConfigError, match="wrong password"):
        load_keystore(path, "wrong horse")
    with pytest.raises(ConfigError, match="already exists"):
        create_keystore(path, "correct horse")
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        load_keystore(path, "correct horse")


def test_short_password_and_missing_files_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("GPUNET_KEYSTORE_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match="at least 8"):
        create_keystore(tmp_path / "x.json", "short")
    with pytest.raises(ConfigError, match="not found"):
        load_keystore(tmp_path / "missing.json", "whatever1")
    with pytest.raises(ConfigError, match="password missing"):
        resolve_wallet(tmp_path / "missing.json", None, None)
    assert resolve_wallet(None, None, None) is None


def test_cli_keys_new(tmp_path):
    path = tmp_path / "k.json"
    r = CliRunner().invoke(main, ["keys", "new", str(path)], input="pass phrase 1\npass phrase 1\n")
    assert r.exit_code == 0, r.output
    assert r.output.strip().splitlines()[-1].startswith("0x")
    r = CliRunner().invoke(main, ["keys", "new", str(path)], input="pass phrase 1\npass phrase 1\n")
    assert r.exit_code == 1 and "already exists" in r.output
