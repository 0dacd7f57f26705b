"""The README's "Running a node" flow, run literally: every fenced ``bash`` block preceded by
``<!-- readme-test -->`` is executed in order, in one shell, in a fresh directory with a fresh ``$GPUNET_HOME``, so
the document cannot drift from the code. Between the blocks the test only reads (the nodes' ``/metrics``).

Background processes the README starts (the nodes) are in the shell's process group and are stopped with it; the
devnet's anvil, in its own session, is stopped with ``gpunet devnet down``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from node.chain.anvil import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"<!-- readme-test -->\s*\n```bash\n(.*?)\n```", re.S)

# test-only, between blocks: keep what each running node's /metrics says
SNAPSHOT_METRICS = (
    f"{sys.executable} -c 'import json, sys, urllib.request\n"
    "for d in sys.argv[1:]:\n"
    "    api = json.load(open(d + \"/node.json\"))[\"api\"]\n"
    "    open(\"metrics-\" + d + \".txt\", \"wb\").write(urllib.request.urlopen(api + \"/metrics\").read())\n"
    "' provider-node consumer-node"
)


def readme_blocks() -> list[str]:
    return BLOCK.findall((ROOT / "README.md").read_text())


def test_readme_has_the_flow() -> None:
    text = "\n".join(readme_blocks())
    for step in ("gpunet devnet up", "gpunet fund", "gpunet provider stake", "gpunet run", "gpunet peers",
                 "gpunet offers", "gpunet lease open", "gpunet lease watch", "gpunet lease topup", "gpunet lease close",
                 "gpunet withdraw",
                 "gpunet devnet down"):
        assert step in text, step


def test_running_a_node_as_the_readme_says(tmp_path: Path) -> None:
    blocks = readme_blocks()
    assert len(blocks) >= 4
    script = ["set -euo pipefail", "set -x"]
    for i, block in enumerate(blocks):
        script.append(block)
        if i == len(blocks) - 2:  # the nodes still run: read their metrics before the last block stops them
            script.append(SNAPSHOT_METRICS)
    (tmp_path / "readme.sh").write_text("\n".join(script) + "\n")
    env = {
        "PATH": f"{ROOT / '.venv' / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "COLUMNS": "200",
        "GPUNET_HOME": str(tmp_path / "gpunet-home"), "GPUNET_RPC_URL": f"http://127.0.0.1:{free_port()}",
        "PYTHONUNBUFFERED": "1",
    }
    proc = subprocess.Popen(["bash", "readme.sh"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=600)
    finally:
        with contextlib.suppress(ProcessLookupError):  # the nodes started with & are in the script's group
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        subprocess.run([str(ROOT / ".venv" / "bin" / "gpunet"), "devnet", "down"], cwd=tmp_path, env=env,
                       capture_output=True, timeout=60)
    assert proc.returncode == 0, out[-6000:]
    assert "hello from a leased GPU" in out, out[-6000:]
    assert "FINALIZED" in out
    # lease watch names the transaction of each contract event of the lease
    assert re.search(r"lease \d+ LeaseClosed · tx 0x[0-9a-f]{64} \(block \d+\)", out), out[-6000:]
    assert re.search(r"lease \d+ LeaseFinalized · tx 0x[0-9a-f]{64} \(block \d+\)", out), out[-6000:]
    assert "deposit now 0.015 gDEV" in out
    assert re.search(r"staked 100 gDEV", out)
    assert "devnet stopped" in out
    for name in ("provider-node", "consumer-node"):
        metrics = (tmp_path / f"metrics-{name}.txt").read_text()
        assert "gpunet_build_info{" in metrics
        assert "_created" not in metrics
    consumer = (tmp_path / "metrics-consumer-node.txt").read_text()
    assert re.search(r'gpunet_leases\{role="consumer",status="FINALIZED"\} 1\.0', consumer), consumer[-3000:]
    assert re.search(r"gpunet_settlements_total\{[^}]*\} [1-9]", consumer), consumer[-3000:]
    assert re.search(r"gpunet_settlement_gas_used_total\{[^}]*\} [1-9]", consumer)
    assert re.search(r'gpunet_tx_intents\{kind="openLeaseWithPermit",status="mined"\} 1\.0', consumer)
    assert re.search(r"gpunet_chain_head_block [1-9]", consumer)
    assert re.search(r"gpunet_chain_log_poller_lag_blocks \d", consumer)
    provider = (tmp_path / "metrics-provider-node.txt").read_text()
    assert re.search(r"gpunet_p2p_peers [1-9]", provider)
    assert re.search(r"gpunet_offer_book_size [1-9]", provider)
    assert re.search(r'gpunet_leases\{role="provider",status="FINALIZED"\} 1\.0', provider)
    assert re.search(r"gpunet_earnings_gdev [0-9.e-]*[1-9]", provider), provider[-3000:]
