"""The demo, run as a user would: separate OS processes (anvil, a provider node and a consumer node started
through the node's own entry point), one lease from open to withdrawal, balances reconciled on-chain."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_a_lease_between_two_node_processes() -> None:
    proc = subprocess.run([sys.executable, "-m", "node.demo"], cwd=ROOT, capture_output=True, text=True,
                          timeout=240, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "offer reached the consumer" in out
    assert "job finished, exit code 0" in out
    assert "lease finalized" in out
    assert "provider withdrew its earnings" in out
    assert "balances reconcile to the wei" in out
