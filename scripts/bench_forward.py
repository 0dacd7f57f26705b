#!/usr/bin/env python3
"""Port-forward throughput and added latency over libp2p (``/gpunet/forward/1.0.0``), next to direct loopback TCP.

    .venv/bin/python scripts/bench_forward.py [--mib 64] [--parallel 8] [--requests 200] [--json PATH]

Two libp2p hosts on loopback (one process, the node's own p2p runtime): the "provider" accepts forward streams to a
local TCP server, the "consumer" listens on 127.0.0.1 and forwards. Measured in the same run, each through the
forward and directly to the server: one connection sending ``--mib`` MiB (the server acknowledges the last byte),
``--parallel`` connections at once (``--mib`` / parallel each; aggregate MB/s), and ``--requests`` sequential 1 KiB
request/1 KiB response round trips on one connection (p50/p90; added latency = forward - direct). The last stdout
line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from node.p2p import P2PConfig
from node.p2p.bridge import P2PNode, P2PRuntime
from node.p2p.forward import Forwards
from node.types import ACCEPTED, Validation

TOPIC = "gpunet/31337/0x0000000000000000000000000000000000000001/offers/1"


def accept_all(data: bytes, sender: str) -> Validation:
    return ACCEPTED


async def server() -> tuple[asyncio.Server, int]:
    """Sink mode (first byte b"S"): read until EOF, answer b"ok". Echo mode (b"E"): 1 KiB in, 1 KiB back."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        mode = await reader.readexactly(1)
        if mode == b"S":
            while await reader.read(1 << 20):
                pass
            writer.write(b"ok")
        else:
            with_eof = False
            while not with_eof:
                try:
                    data = await reader.readexactly(1024)
                except asyncio.IncompleteReadError:
                    with_eof = True
                    continue
                writer.write(data)
                await writer.drain()
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    return srv, srv.sockets[0].getsockname()[1]


async def sink(port: int, total: int) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    block = os.urandom(1 << 20)
    t0 = time.perf_counter()
    writer.write(b"S")
    sent = 0
    while sent < total:
        n = min(len(block), total - sent)
        writer.write(block[:n])
        await writer.drain()
        sent += n
    writer.write_eof()
    assert await reader.read() == b"ok"
    writer.close()
    return time.perf_counter() - t0


async def round_trips(port: int, n: int) -> list[float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"E")
    payload = os.urandom(1024)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        writer.write(payload)
        await writer.drain()
        assert await reader.readexactly(1024) == payload
        out.append(time.perf_counter() - t0)
    writer.close()
    return out


def pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    srv, target = await server()
    tmp = Path(tempfile.mkdtemp(prefix="bench-forward-"))
    async with P2PRuntime() as rt:
        a = P2PNode(P2PConfig(key_path=tmp / "a" / "node.key", topic=TOPIC), accept_all, runtime=rt)
        b = P2PNode(P2PConfig(key_path=tmp / "b" / "node.key", topic=TOPIC), accept_all, runtime=rt)
        await a.start()
        await b.start()
        try:
            async def authorize(peer: str, lease_id: int, port: int) -> tuple[str, int]:
                return "127.0.0.1", target

            await Forwards(a, max_connections=1024).serve(authorize)
            await b.connect(a.listen_addrs[0])
            fwd = await Forwards(b).add(1, a.peer_id, 80)
            total = args.mib * (1 << 20)
            res: dict[str, Any] = {"mib": args.mib, "parallel": args.parallel, "requests": args.requests}
            for name, port in (("direct", target), ("forward", fwd.local_port)):
                one = await sink(port, total)
                t0 = time.perf_counter()
                await asyncio.gather(*(sink(port, total // args.parallel) for _ in range(args.parallel)))
                many = time.perf_counter() - t0
                rtts = await round_trips(port, args.requests)
                res[name] = {"one_mb_s": round(total / one / 1e6, 1), "parallel_mb_s": round(total / many / 1e6, 1),
                             "rtt_p50_ms": round(statistics.median(rtts) * 1e3, 3),
                             "rtt_p90_ms": round(pct(rtts, 0.9) * 1e3, 3)}
            res["added_latency_p50_ms"] = round(res["forward"]["rtt_p50_ms"] - res["direct"]["rtt_p50_ms"], 3)
            return res
        finally:
            await b.stop()
            await a.stop()
            srv.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    res = asyncio.run(run(args))
    print(f"{'':12}{'1 conn MB/s':>13}{f'{args.parallel} conns MB/s':>15}{'1 KiB RTT p50 ms':>18}{'p90 ms':>9}")
    for name in ("direct", "forward"):
        r = res[name]
        print(f"{name:<12}{r['one_mb_s']:>13}{r['parallel_mb_s']:>15}{r['rtt_p50_ms']:>18}{r['rtt_p90_ms']:>9}")
    print(f"added latency p50: {res['added_latency_p50_ms']} ms")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, separators=(",", ":")))


if __name__ == "__main__":
    main()
