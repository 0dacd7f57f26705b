"""The gpunet CLI without a chain: every command documents an example, human units, wallets and their
passwords (prompted once, confirmed only on creation, length checked before the second prompt, a clear message
without a terminal), usage errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from node.cli import main
from node.cli.app import gdev, parse_gdev, per_gpu_hour, when
from node.crypto import wallet as wallet_mod


def commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    out = []
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            out += commands(cmd, (*prefix, name))
        else:
            out.append(((*prefix, name), cmd))
    return out


def test_every_command_has_help_with_an_example() -> None:
    found = commands(main)
    assert len(found) >= 25
    older = {("keys", "new"), ("lease", "logs")}  # kept as they were: `wallet new` supersedes `keys new`
    missing = [" ".join(path) for path, cmd in found
               if path not in older and "Example: gpunet " not in (cmd.help or "")]
    assert missing == []
    for path, _ in found:
        r = CliRunner().invoke(main, [*path, "--help"])
        assert r.exit_code == 0 and "Usage:" in r.output, path


def test_json_option_on_every_command_that_reports() -> None:
    # deploy prints JSON anyway; run, lease logs and lease forward stream until stopped
    without = {("run",), ("deploy",), ("keys", "new"), ("stop",), ("lease", "logs"), ("lease", "forward")}
    for path, cmd in commands(main):
        if path not in without:
            assert any(p.name == "as_json" for p in cmd.params), " ".join(path)


def test_human_units() -> None:
    assert gdev(10**18) == "1" and gdev(1234567 * 10**15) == "1,234.567" and gdev(0) == "0"
    assert gdev(10**12) == "0.000001" and gdev(10**11) == "0"
    assert parse_gdev("1.5") == 15 * 10**17 and parse_gdev("0.000000000000000001") == 1
    for bad in ("0", "-1", "abc", "1e-19", "nan"):
        with pytest.raises(click.BadParameter):
            parse_gdev(bad)
    assert per_gpu_hour(10**13) == "0.036 gDEV/GPU·h"
    assert when(1000, now=1000 - 90) == "in 1m 30s" and when(1000, now=1000 + 7200) == "2h 0m ago"
    assert when(None) == "-"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GPUNET_HOME", str(tmp_path))
    monkeypatch.delenv("GPUNET_KEYSTORE_PASSWORD", raising=False)
    monkeypatch.delenv("GPUNET_PASSWORD_FILE", raising=False)
    return tmp_path


def test_wallet_new_show_list_import(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUNET_KEYSTORE_PASSWORD", "long enough")
    r = CliRunner().invoke(main, ["wallet", "new", "alice", "--json"])
    assert r.exit_code == 0, r.output
    alice = json.loads(r.output)
    assert Path(alice["path"]) == home / "wallets" / "alice.json"
    assert oct(Path(alice["path"]).stat().st_mode & 0o777) == "0o600"
    r = CliRunner().invoke(main, ["wallet", "show", "alice"])
    assert r.output.strip() == alice["address"]
    r = CliRunner().invoke(main, ["wallet", "new", "alice"])
    assert r.exit_code == 1 and "already exists" in r.output
    key = home / "key.txt"
    key.write_text("0x" + "11" * 32 + "\n")
    r = CliRunner().invoke(main, ["wallet", "import", "bob", "--key-file", str(key), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["address"] == "0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A"
    r = CliRunner().invoke(main, ["wallet", "list", "--json"])
    assert [w["name"] for w in json.loads(r.output)] == ["alice", "bob"]
    r = CliRunner().invoke(main, ["wallet", "show", "carol"])
    assert r.exit_code == 1 and "gpunet wallet new carol" in r.output


def test_wallet_password_from_file(home: Path) -> None:
    pw = home / "pw"
    pw.write_text("from a file\n")
    r = CliRunner().invoke(main, ["wallet", "new", "w", "--password-file", str(pw)])
    assert r.exit_code == 0, r.output
    assert wallet_mod.load_keystore(home / "wallets" / "w.json", "from a file")


def test_no_terminal_is_a_clear_message(home: Path) -> None:
    r = CliRunner().invoke(main, ["wallet", "new", "w"])
    assert r.exit_code == 1
    assert r.output.count("\n") == 1 and "no terminal" in r.output and "GPUNET_KEYSTORE_PASSWORD" in r.output


class Terminal:
    """A terminal for getpass: answers in order and records the prompts."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, answers: list[str]) -> None:
        self.answers, self.prompts = list(answers), []
        monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
        monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
        monkeypatch.setattr(wallet_mod.getpass, "getpass", self)

    def __call__(self, prompt: str = "") -> str:
        self.prompts.append(prompt)
        return self.answers.pop(0)


def test_prompt_once_confirm_on_creation_and_length_first(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    t = Terminal(monkeypatch, ["short"])
    with pytest.raises(Exception, match="at least 8"):
        wallet_mod.read_password(None, confirm=True)
    assert len(t.prompts) == 1  # refused before asking again
    t = Terminal(monkeypatch, ["long enough", "long enougH"])
    with pytest.raises(Exception, match="differ"):
        wallet_mod.read_password(None, confirm=True)
    t = Terminal(monkeypatch, ["long enough", "long enough"])
    assert wallet_mod.read_password(None, confirm=True) == "long enough" and len(t.prompts) == 2
    t = Terminal(monkeypatch, ["whatever!"])
    assert wallet_mod.read_password(None) == "whatever!" and len(t.prompts) == 1  # unlocking: asked once


@pytest.mark.parametrize("args", [
    ["lease", "open", "--offer-id", "0x01", "--gpus", "1", "--deposit", "lots"],
    ["lease", "topup", "1", "-3"],
    ["provider", "stake", "zero"],
    ["fund", "--gdev", "x"],
    ["offers", "--max-price", "cheap"],
    ["lease", "watch", "1", "--until", "forever"],
])
def test_bad_arguments_exit_2(args: list[str]) -> None:
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, r.output


def test_node_commands_without_a_node(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["status", "--data-dir", str(tmp_path)])
    assert r.exit_code == 1 and "no node found" in r.output and r.output.count("\n") == 1
    r = CliRunner().invoke(main, ["status", "--data-dir", str(tmp_path), "--wait", "0.3"])
    assert r.exit_code == 3
    r = CliRunner().invoke(main, ["stop", "--data-dir", str(tmp_path)])
    assert r.exit_code == 3


def test_devnet_status_when_down(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["devnet", "status", "--dir", str(tmp_path), "--json"])
    assert r.exit_code == 3 and json.loads(r.output)["running"] is False
