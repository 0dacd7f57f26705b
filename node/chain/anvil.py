"""Start and stop a local ``anvil`` devnet (used by tests, the demo and ``gpunet devnet``).

The binary comes from the npm package ``@foundry-rs/anvil-linux-amd64`` installed by ``scripts/setup``.
Its well-known development keys (``devnet_key``) are defined in ``node.crypto.devnet``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from node.crypto.devnet import devnet_key
from node.errors import ConfigError

__all__ = ["REPO_ROOT", "Anvil", "devnet_key", "find_tool", "free_port"]

REPO_ROOT = Path(__file__).resolve().parents[2]


def find_tool(name: str) -> str:
    """Locate a Foundry binary: the project's node_modules first, then PATH."""
    local = REPO_ROOT / "node_modules" / ".bin" / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise ConfigError(f"{name} not found: run scripts/setup (installs Foundry from npm into node_modules)")
    return found


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Anvil:
    """A running anvil process; use as a context manager or call ``stop()``."""

    port: int = 0
    block_time: float | None = None
    chain_id: int = 31337
    state: Path | None = None  # --state: loaded at start if it exists, written at stop (SIGTERM)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> Anvil:
        if self.port == 0:
            self.port = free_port()
        args = [find_tool("anvil"), "--host", "127.0.0.1", "--port", str(self.port), "--chain-id", str(self.chain_id),
                "--silent"]
        if self.block_time:
            args += ["--block-time", str(self.block_time)]
        if self.state is not None:
            args += ["--state", str(self.state)]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        start_new_session=True, env={**os.environ})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise ConfigError(f"anvil exited at start (code {self.process.returncode}): {err.strip()[:500]}")
            if _rpc_ready(self.url):
                return self
            time.sleep(0.05)
        self.stop()
        raise ConfigError(f"anvil did not answer on {self.url} within {timeout}s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None

    def restart(self, timeout: float = 20.0) -> Anvil:
        """Stop (writing ``state`` if set) and start again on the same port, from that state. Transactions that
        were only in the pool are gone, as after a real node's restart."""
        self.stop()
        return self.start(timeout)

    def __enter__(self) -> Anvil:
        return self if self.process is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _rpc_ready(url: str) -> bool:
    body = b'{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}'
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=0.5) as resp:
            return resp.status == 200
    except OSError:
        return False
