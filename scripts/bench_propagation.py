"""Gossip propagation benchmark: N libp2p nodes on loopback in one process (one trio thread).

Each node bootstraps to its predecessor plus ``--links - 1`` random earlier nodes (a connected random graph),
waits until every node has a mesh peer, then node 0 publishes K messages spaced by --interval-ms. For each
(node, message) we record the time from publish to delivery at that node and print p50/p99/max per N.

    .venv/bin/python scripts/bench_propagation.py --nodes 10 20 50 --messages 20

``scripts/bench_gossip.py`` runs the same topology side by side with a js-libp2p mesh, over several processes too.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.p2p import GossipParams, P2PConfig
from node.p2p.host import P2PHost
from node.types import ACCEPTED

TOPIC = "gpunet/31337/0x0000000000000000000000000000000000000001/offers/1"


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def topology(n: int, links: int, seed: int) -> list[tuple[int, int]]:
    """Dials (i, j), i > j: each node i >= 1 dials its predecessor plus ``links - 1`` random earlier nodes."""
    rng = random.Random(seed)
    edges = []
    for i in range(1, n):
        for j in sorted({i - 1} | {rng.randrange(i) for _ in range(links - 1)}):
            edges.append((i, j))
    return edges


async def run(n: int, k: int, interval_ms: float, seed: int, tmp: Path, links: int = 2) -> dict:
    received: dict[int, dict[bytes, int]] = {i: {} for i in range(n)}
    hosts: list[P2PHost] = []
    async with trio.open_nursery() as nursery:
        for i in range(n):
            cfg = P2PConfig(key_path=tmp / f"n{n}-{i}" / "node.key", topic=TOPIC, gossip=GossipParams())

            def on_message(msg, i=i) -> None:
                received[i][msg.data] = time.perf_counter_ns()

            host = P2PHost(cfg, lambda d, s: ACCEPTED, on_message=on_message)
            await nursery.start(host.run)
            hosts.append(host)
        t_conn = time.perf_counter()
        for i, j in topology(n, links, seed):
            await hosts[i].connect(hosts[j].listen_addrs[0])
        t_mesh = time.perf_counter()
        with trio.fail_after(60):
            while not all(h.mesh_size() >= 1 for h in hosts):
                await trio.sleep(0.05)
        await trio.sleep(2.0)  # let a couple of heartbeats fill meshes towards D
        mesh_sizes = [h.mesh_size() for h in hosts]
        sent: dict[bytes, int] = {}
        cpu0 = time.process_time()
        for m in range(k):
            data = b"ok bench %d" % m
            sent[data] = time.perf_counter_ns()
            await hosts[0].publish(data)
            await trio.sleep(interval_ms / 1000)
        deadline = trio.current_time() + 10
        while trio.current_time() < deadline:
            if all(len(received[i]) >= k for i in range(1, n)):
                break
            await trio.sleep(0.02)
        cpu_s = time.process_time() - cpu0
        lat = [(received[i][d] - t0) / 1e6 for d, t0 in sent.items() for i in range(1, n) if d in received[i]]
        missing = (n - 1) * k - len(lat)
        for h in hosts:
            h.stop()
    return {
        "n": n,
        "connect_s": t_mesh - t_conn,
        "mesh_min": min(mesh_sizes),
        "mesh_mean": statistics.mean(mesh_sizes),
        "deliveries": len(lat),
        "cpu_ms_per_message": 1000 * cpu_s / max(1, k),
        "missing": missing,
        "p50": pct(lat, 0.50) if lat else float("nan"),
        "p99": pct(lat, 0.99) if lat else float("nan"),
        "max": max(lat) if lat else float("nan"),
    }


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        header = ("N", "K", "p50 ms", "p99 ms", "max ms", "missing", "mesh min/mean", "connect s", "cpu ms/msg")
        print("{:>4} {:>4} {:>8} {:>8} {:>8} {:>8} {:>14} {:>9} {:>10}".format(*header))
        for n in args.nodes:
            r = await run(n, args.messages, args.interval_ms, args.seed, Path(tmp), args.links)
            print(
                f"{r['n']:>4} {args.messages:>4} {r['p50']:>8.1f} {r['p99']:>8.1f} {r['max']:>8.1f} "
                f"{r['missing']:>8} {r['mesh_min']:>6}/{r['mesh_mean']:<7.1f} {r['connect_s']:>9.1f} "
                f"{r['cpu_ms_per_message']:>10.1f}",
                flush=True,
            )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, nargs="+", default=[10, 20, 50])
    p.add_argument("--messages", type=int, default=20)
    p.add_argument("--interval-ms", type=float, default=50.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--links", type=int, default=2,
                   help="dials per joining node: its predecessor plus links-1 random earlier nodes")
    trio.run(main, p.parse_args())
