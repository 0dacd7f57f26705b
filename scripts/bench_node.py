#!/usr/bin/env python3
"""Node start-up time and idle memory: ``python -m node.cli run`` as a separate process against a local anvil.

    .venv/bin/python scripts/bench_node.py [--starts 5] [--idle 20] [--json PATH]

Starts anvil (1 s blocks), deploys the contracts, funds the dev wallets, then ``--starts`` times: starts a
consumer node (dev account 2) with a fresh data directory and times from the process spawn to its API answering
``GET /v1/status`` (the node writes its node.json just before); the same again with the data directory of the
previous start (a restart: keys and stores exist). After the last start the node idles ``--idle`` seconds (chain
polling, gossip heartbeats) and its resident memory (VmRSS, VmHWM) is read from /proc; the interpreter alone
(``python -c pass`` importing the node package) is measured as the reference. The last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from node.chain.anvil import Anvil, devnet_key
from node.chain.deploy import DeployParams, deploy_all
from node.demo import CONSUMER, DEPLOYER, Processes, fund, http, wait, write_config


def rss_kib(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def spread(xs: list[float]) -> dict[str, float]:
    return {"min": round(min(xs), 3), "median": round(statistics.median(xs), 3), "max": round(max(xs), 3),
            "all": [round(x, 3) for x in xs]}


def start_once(procs: Processes, workdir: Path, cfg: Path, data_dir: Path, name: str) -> tuple[float, int]:
    t0 = time.monotonic()
    p = procs.start(name, [sys.executable, "-m", "node.cli", "run", "--config", str(cfg)], workdir / f"{name}.log")
    info = wait(lambda: json.loads((data_dir / "node.json").read_text())
                if (data_dir / "node.json").exists() and json.loads((data_dir / "node.json").read_text())["pid"]
                == p.pid else procs.check(), 60, "the node to start", interval=0.01)
    wait(lambda: http(f"{info['api']}/v1/status"), 30, "the node's API", interval=0.01)
    return time.monotonic() - t0, p.pid


def stop(procs: Processes) -> None:
    procs.stop_all()
    procs.procs.clear()


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    anvil = Anvil(block_time=1)
    procs = Processes()
    try:
        anvil.start()
        dep = workdir / "deployments.json"
        deployment = asyncio.run(deploy_all(anvil.url, devnet_key(DEPLOYER), DeployParams(), out=dep))
        asyncio.run(fund(anvil.url, deployment, workdir / "faucet.sqlite"))
        cold, warm = [], []
        pid = 0
        for i in range(args.starts):
            data_dir = workdir / f"node{i}"
            cfg = workdir / f"node{i}.toml"
            write_config(cfg, data_dir=data_dir, rpc=anvil.url, deployments=dep, account=CONSUMER, provider=False,
                         bootstrap=[])
            seconds, _ = start_once(procs, workdir, cfg, data_dir, f"cold{i}")
            cold.append(seconds)
            stop(procs)
            (data_dir / "node.json").unlink()
            seconds, pid = start_once(procs, workdir, cfg, data_dir, f"warm{i}")
            warm.append(seconds)
            if i < args.starts - 1:
                stop(procs)
        at_start = rss_kib(pid)
        samples = []
        t_end = time.monotonic() + args.idle
        while time.monotonic() < t_end:  # sample the idle node's memory once a second
            samples.append(rss_kib(pid)["VmRSS"])
            time.sleep(1.0)
        idle = rss_kib(pid)
        stop(procs)
        bare = subprocess.run([sys.executable, "-c", "import node.service, resource; "
                               "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"],
                              capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1])
        result = {
            "starts": args.starts, "idle_s": args.idle,
            "start_to_api_s": {"fresh_data_dir": spread(cold), "restart": spread(warm)},
            "rss_kib": {"after_start": at_start["VmRSS"], "after_idle": idle["VmRSS"], "peak": idle["VmHWM"],
                        "idle_samples_min": min(samples), "idle_samples_max": max(samples)},
            "reference_import_only_rss_kib": int(bare.stdout.strip()),
        }
        return result
    except Exception:
        for log_path in sorted(workdir.glob("*.log"))[-2:]:
            print(f"--- last lines of {log_path.name}", file=sys.stderr)
            for line in log_path.read_text(errors="replace").splitlines()[-15:]:
                print(line, file=sys.stderr)
        raise
    finally:
        procs.stop_all()
        anvil.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--starts", type=int, default=5)
    ap.add_argument("--idle", type=float, default=20.0, help="seconds the last node idles before memory is read")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-node-") as tmp:
        res = run(args, Path(tmp))
    s = res["start_to_api_s"]
    print(f"start -> API answering: fresh data dir median {s['fresh_data_dir']['median']:.2f} s "
          f"[{s['fresh_data_dir']['min']:.2f}, {s['fresh_data_dir']['max']:.2f}]; restart median "
          f"{s['restart']['median']:.2f} s [{s['restart']['min']:.2f}, {s['restart']['max']:.2f}]")
    r = res["rss_kib"]
    print(f"RSS: {r['after_start'] / 1024:.1f} MiB after start, {r['after_idle'] / 1024:.1f} MiB after "
          f"{args.idle:g} s idle (peak {r['peak'] / 1024:.1f} MiB); importing the node alone: "
          f"{res['reference_import_only_rss_kib'] / 1024:.1f} MiB")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, separators=(",", ":")))


if __name__ == "__main__":
    main()
