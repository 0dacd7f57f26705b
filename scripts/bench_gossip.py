"""Gossip side by side: the Python node's p2p layer and a js-libp2p reference mesh, same topology, same run.

Each scenario starts N nodes in worker processes (one, or several with ``--procs``), connects them as
``bench_propagation.topology`` says (each node dials its predecessor plus ``--links - 1`` random earlier nodes),
waits until every node has a mesh peer and lets heartbeats fill the meshes; then node 0 publishes ``--messages``
messages of ``--size`` bytes at ``--prop-rate`` per second. Each message carries its send time (wall clock, the
same on every process of this machine); every other node records its delivery latency. Figures per scenario:

- p50/p99/max of the publish-to-delivery latency over all (node, message) pairs, and the deliveries missing;
- CPU per message: the CPU time (user + system) of all worker processes from the first publish until every node
  had every message, divided by the messages published (``cpu_ms_per_message``) and by the deliveries
  (``cpu_us_per_delivery``); the idle CPU of the same nodes (heartbeats) is measured before and reported apart;
- at N=10 in one process, the sustained rate: the rate ladder ``--rates`` is climbed (``--rate-seconds`` per
  step) while p99 < 1 s, nothing is missing and the publisher keeps up (>= 90 % of the rate asked).

Python workers are this script (``--worker``) running ``node.p2p.host.P2PHost`` (the node's validator path
included, with an accept-all validator); js workers are ``tests/interop/js/mesh.mjs`` (js-libp2p 2.10,
gossipsub 14). ``--before`` adds Python scenarios with ``GPUNET_P2P_TUNING=0`` (the library's own behaviour, see
``node/p2p/tuning.py``). ``--json PATH`` writes every figure and the goals.

    .venv/bin/python scripts/bench_gossip.py --quick --json /tmp/gossip.json
    .venv/bin/python scripts/bench_gossip.py --before --repeat 3 --json /tmp/gossip.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_propagation import pct, topology  # noqa: E402

JS_DIR = ROOT / "tests" / "interop" / "js"
TOPIC = "gpunet/31337/0x0000000000000000000000000000000000000001/offers/1"
P99_LIMIT_MS = 1000.0


# ---- the Python worker (trio), speaking mesh.mjs's line protocol -------------------------------------------------


def worker_main(first: int, count: int, topic: str, tmp: Path) -> None:
    import trio

    from node.p2p import GossipParams, P2PConfig
    from node.p2p.host import P2PHost
    from node.types import ACCEPTED

    received: dict[int, dict[int, float]] = {i: {} for i in range(first, first + count)}
    state: dict[str, Any] = {"phase": b"0", "publisher": -1, "cpu0": time.process_time(), "count": 0}

    def out(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def on_message(msg: Any, i: int) -> None:
        now = time.time_ns()
        parts = msg.data[:64].split(b" ", 3)
        if len(parts) < 3 or parts[0] != state["phase"]:
            return
        received[i].setdefault(int(parts[1]), (now - int(parts[2])) / 1e6)

    async def publish(host: P2PHost, total: int, rate: float, size: int) -> float:
        interval = 1.0 / rate
        start = trio.current_time()
        t0 = time.perf_counter()
        for seq in range(total):
            delay = start + seq * interval - trio.current_time()
            if delay > 0:
                await trio.sleep(delay)
            head = b"%s %d %d " % (state["phase"], seq, time.time_ns())
            await host.publish(head.ljust(size, b"x"))
        elapsed = time.perf_counter() - t0
        return (total - 1) / elapsed if total > 1 and elapsed > 0 else rate

    async def dial(host: P2PHost, addr: str) -> None:
        for attempt in range(5):
            try:
                await host.connect(addr)
                return
            except Exception:
                if attempt == 4:
                    raise
                await trio.sleep(0.2)

    async def collect(total: int, timeout_s: float) -> None:
        with trio.move_on_after(timeout_s):
            while any(i != state["publisher"] and len(r) < total for i, r in received.items()):
                await trio.sleep(0.01)

    def stats() -> dict[str, Any]:
        lat = [v for i, r in received.items() if i != state["publisher"] for v in r.values()]
        missing = sum(max(0, state["count"] - len(r)) for i, r in received.items() if i != state["publisher"])
        return {"latencies_ms": lat, "missing": missing, "cpu_s": time.process_time() - state["cpu0"],
                "deliveries": len(lat)}

    async def main() -> None:
        hosts: dict[int, P2PHost] = {}
        async with trio.open_nursery() as nursery:
            for i in range(first, first + count):
                cfg = P2PConfig(key_path=tmp / f"n{i}" / "node.key", topic=topic, gossip=GossipParams())
                host = P2PHost(cfg, lambda d, s: ACCEPTED, on_message=lambda m, i=i: on_message(m, i))
                await nursery.start(host.run)
                hosts[i] = host
                out(f"ADDR {i} {host.listen_addrs[0]}/p2p/{host.peer_id}")
            out("READY")
            while True:
                line = await trio.to_thread.run_sync(sys.stdin.readline)
                if not line:
                    break
                cmd, _, rest = line.strip().partition(" ")
                args = rest.split()
                try:
                    if cmd == "DIAL":
                        async with trio.open_nursery() as dials:
                            for src, addr in json.loads(rest):
                                dials.start_soon(dial, hosts[src], addr)
                        out("DIALED")
                    elif cmd == "WAITMESH":
                        with trio.move_on_after(float(args[0])):
                            while not all(h.mesh_size() >= 1 for h in hosts.values()):
                                await trio.sleep(0.05)
                        alone = [i for i, h in hosts.items() if h.mesh_size() < 1]
                        out(f"TIMEOUT nodes without a mesh peer: {alone}" if alone else "MESHED")
                    elif cmd == "RESET":
                        for r in received.values():
                            r.clear()
                        state.update(publisher=int(args[0]), phase=args[1].encode(), cpu0=time.process_time())
                        out("OK")
                    elif cmd == "PUB":
                        state["count"] = int(args[1])
                        rate = await publish(hosts[int(args[0])], int(args[1]), float(args[2]), int(args[3]))
                        out(f"PUBDONE {rate}")
                    elif cmd == "COLLECT":
                        state["count"] = int(args[0])
                        await collect(int(args[0]), float(args[1]))
                        out("DONE")
                    elif cmd == "STATS":
                        out("STATS " + json.dumps(stats()))
                    elif cmd == "QUIT":
                        break
                    elif cmd:
                        out("ERROR unknown command")
                except Exception as exc:
                    out(f"ERROR {exc!r}")
            for h in hosts.values():
                h.stop()

    trio.run(main)


# ---- the coordinator ---------------------------------------------------------------------------------------------


class WorkerError(RuntimeError):
    pass


class Worker:
    """One worker process; lines from its stdout arrive through a reader thread."""

    def __init__(self, argv: list[str], env: dict[str, str], log: IO[str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def expect(self, prefix: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty as exc:
                raise WorkerError(f"no {prefix} within {timeout_s} s") from exc
            if line is None:
                raise WorkerError(f"worker exited (rc={self.proc.wait()}) while waiting for {prefix}")
            if line.startswith(prefix):
                return line[len(prefix):].strip()
            if line.startswith(("ERROR", "TIMEOUT")):
                raise WorkerError(f"waiting for {prefix}: {line}")

    def close(self) -> None:
        try:
            self.send("QUIT")
            self.proc.wait(timeout=15)
        except Exception:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Phase:
    rate: float
    messages: int
    achieved_rate: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    missing: int
    deliveries: int
    cpu_s: float
    cpu_ms_per_message: float
    cpu_us_per_delivery: float
    cpu_ms_per_message_net_idle: float


@dataclass
class Scenario:
    stack: str  # "python", "python-untuned" or "js"
    nodes: int
    procs: int
    links: int
    size: int
    idle_cpu_frac: float = 0.0
    propagation: Phase | None = None
    ladder: list[Phase] = field(default_factory=list)
    sustained_rate: float | None = None
    error: str | None = None


class Mesh:
    """N nodes of one stack over ``procs`` worker processes, connected and meshed."""

    def __init__(self, stack: str, n: int, procs: int, links: int, seed: int, tmp: Path, log: IO[str]) -> None:
        self.workers: list[Worker] = []
        self.owner: dict[int, Worker] = {}
        bounds = [round(p * n / procs) for p in range(procs + 1)]
        try:
            for p in range(procs):
                first, count = bounds[p], bounds[p + 1] - bounds[p]
                env = dict(os.environ)
                if stack == "js":
                    argv = ["node", str(JS_DIR / "mesh.mjs"), str(first), str(count), TOPIC]
                else:
                    env["GPUNET_P2P_TUNING"] = "0" if stack == "python-untuned" else "1"
                    work = tmp / f"{stack}-{n}-{p}"
                    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", str(first), str(count),
                            str(work)]
                w = Worker(argv, env, log, JS_DIR if stack == "js" else ROOT)
                self.workers.append(w)
                for i in range(first, first + count):
                    self.owner[i] = w
            addrs: dict[int, str] = {}
            for w in self.workers:
                while True:
                    line = w.expect("", 180)
                    if line.startswith("READY"):
                        break
                    if line.startswith("ADDR "):
                        _, idx, addr = line.split()
                        addrs[int(idx)] = addr
            dials: dict[int, list[tuple[int, str]]] = {id(w): [] for w in self.workers}
            for i, j in topology(n, links, seed):
                dials[id(self.owner[i])].append((i, addrs[j]))
            self._all("DIAL", lambda w: "DIAL " + json.dumps(dials[id(w)]), "DIALED", 120)
            self._all("WAITMESH", lambda w: "WAITMESH 60", "MESHED", 70)
        except BaseException:
            self.close()
            raise

    def _all(self, name: str, line: Any, prefix: str, timeout_s: float) -> list[str]:
        for w in self.workers:
            w.send(line(w) if callable(line) else line)
        return [w.expect(prefix, timeout_s) for w in self.workers]

    def idle_cpu_frac(self, seconds: float) -> float:
        self._all("RESET", "RESET -1 idle", "OK", 10)
        time.sleep(seconds)
        stats = [json.loads(s) for s in self._all("STATS", "STATS", "STATS", 10)]
        return sum(s["cpu_s"] for s in stats) / seconds

    def phase(self, tag: str, rate: float, messages: int, size: int, idle_frac: float) -> Phase:
        self._all("RESET", f"RESET 0 {tag}", "OK", 10)
        t0 = time.monotonic()
        pub = self.owner[0]
        pub.send(f"PUB 0 {messages} {rate} {size}")
        achieved = float(pub.expect("PUBDONE", messages / rate * 3 + 60))
        self._all("COLLECT", f"COLLECT {messages} {10 + messages / rate}", "DONE", 30 + 2 * messages / rate)
        stats = [json.loads(s) for s in self._all("STATS", "STATS", "STATS", 30)]
        window = time.monotonic() - t0
        lat = [v for s in stats for v in s["latencies_ms"]]
        cpu = sum(s["cpu_s"] for s in stats)
        deliveries = sum(s["deliveries"] for s in stats)
        nan = float("nan")
        return Phase(
            rate=rate, messages=messages, achieved_rate=achieved,
            p50_ms=pct(lat, 0.50) if lat else nan, p99_ms=pct(lat, 0.99) if lat else nan,
            max_ms=max(lat) if lat else nan, missing=sum(s["missing"] for s in stats), deliveries=deliveries,
            cpu_s=cpu, cpu_ms_per_message=1000 * cpu / messages,
            cpu_us_per_delivery=1e6 * cpu / max(1, deliveries),
            cpu_ms_per_message_net_idle=1000 * max(0.0, cpu - idle_frac * window) / messages,
        )

    def close(self) -> None:
        for w in self.workers:
            w.close()


def run_scenario(stack: str, n: int, procs: int, args: argparse.Namespace, tmp: Path, log: IO[str],
                 ladder: bool) -> Scenario:
    sc = Scenario(stack, n, procs, args.links, args.size)
    try:
        mesh = Mesh(stack, n, procs, args.links, args.seed, tmp, log)
    except WorkerError as exc:
        sc.error = f"start: {exc}"
        return sc
    try:
        time.sleep(2.0)  # heartbeats fill the meshes towards D
        sc.idle_cpu_frac = mesh.idle_cpu_frac(2.0)
        mesh.phase("warm", args.prop_rate, 10, args.size, sc.idle_cpu_frac)
        sc.propagation = mesh.phase("prop", args.prop_rate, args.messages, args.size, sc.idle_cpu_frac)
        if ladder:
            for step, rate in enumerate(args.rates):
                count = max(30, int(rate * args.rate_seconds))
                ph = mesh.phase(f"rate{step}", rate, count, args.size, sc.idle_cpu_frac)
                sc.ladder.append(ph)
                if ph.missing or not ph.p99_ms < P99_LIMIT_MS or ph.achieved_rate < 0.9 * rate:
                    break
                sc.sustained_rate = rate
    except WorkerError as exc:
        sc.error = str(exc)
    finally:
        mesh.close()
    return sc


def fmt(x: float | None, spec: str = ".1f") -> str:
    return "-" if x is None or x != x else format(x, spec)


def summarise(runs: list[Scenario]) -> dict[str, Any]:
    """Medians (and min/max) over repeats of each (stack, nodes, procs)."""
    groups: dict[tuple[str, int, int], list[Scenario]] = {}
    for sc in runs:
        groups.setdefault((sc.stack, sc.nodes, sc.procs), []).append(sc)
    out: dict[str, Any] = {}
    for (stack, n, procs), scs in groups.items():
        props = [s.propagation for s in scs if s.propagation is not None]
        entry: dict[str, Any] = {"stack": stack, "nodes": n, "procs": procs, "runs": len(scs),
                                 "errors": [s.error for s in scs if s.error]}
        for key in ("cpu_ms_per_message", "cpu_us_per_delivery", "cpu_ms_per_message_net_idle", "p50_ms", "p99_ms",
                    "max_ms", "missing"):
            vals = [getattr(p, key) for p in props]
            if vals:
                entry[key] = statistics.median(vals)
                entry[key + "_range"] = [min(vals), max(vals)]
        rates = [s.sustained_rate or 0.0 for s in scs if s.ladder]
        if rates:
            entry["sustained_rate"] = statistics.median(rates)
            entry["sustained_rate_range"] = [min(rates), max(rates)]
        out[f"{stack}/{n}/{procs}"] = entry
    return out


def print_summary(summary: dict[str, Any], stacks: list[str], plan: list[tuple[int, int]]) -> None:
    """Medians over the repeats, one line per figure, a column per stack."""
    print("\nmedians [min-max] over repeats")
    print("{:<28}".format("figure") + "".join(f"{s:>24}" for s in stacks))
    rows = [("cpu ms/msg", "cpu_ms_per_message"), ("cpu ms/msg net of idle", "cpu_ms_per_message_net_idle"),
            ("p50 ms", "p50_ms"), ("p99 ms", "p99_ms"), ("missing", "missing")]
    for n, procs in plan:
        for label, key in rows + ([("sustained rate /s", "sustained_rate")] if (n, procs) == (10, 1) else []):
            cells = []
            for stack in stacks:
                e = summary.get(f"{stack}/{n}/{procs}", {})
                if key in e:
                    lo, hi = e[key + "_range"]
                    cells.append(f"{e[key]:.1f} [{lo:.0f}-{hi:.0f}]")
                else:
                    cells.append("-")
            print(f"{f'N={n} x{procs}p ' + label:<28}" + "".join(f"{c:>24}" for c in cells))


def goals(summary: dict[str, Any], nodes: list[int]) -> list[dict[str, Any]]:
    res: list[dict[str, Any]] = []

    def get(stack: str, n: int, procs: int, key: str) -> float | None:
        value = summary.get(f"{stack}/{n}/{procs}", {}).get(key)
        return None if value is None else float(value)

    for n in nodes:
        py, js = get("python", n, 1, "cpu_ms_per_message"), get("js", n, 1, "cpu_ms_per_message")
        if py is not None and js:
            res.append({"goal": f"CPU per message at N={n} within 1.2x of js", "value": py / js, "limit": 1.2,
                        "met": py / js <= 1.2})
    py_rate, js_rate = get("python", 10, 1, "sustained_rate"), get("js", 10, 1, "sustained_rate")
    if py_rate is not None and js_rate:
        res.append({"goal": "sustained rate at N=10 (p99 < 1 s) at least half of js's", "value": py_rate / js_rate,
                    "limit": 0.5, "met": py_rate / js_rate >= 0.5})
    p99 = get("python", 50, 1, "p99_ms")
    if p99 is not None:
        res.append({"goal": "p99 propagation to all of 50 nodes in one process <= 250 ms", "value": p99,
                    "limit": 250.0, "met": p99 <= 250.0})
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, nargs="+", default=[10, 20, 50])
    p.add_argument("--multi", type=int, nargs=2, default=[50, 5], metavar=("N", "PROCS"),
                   help="also run N nodes over PROCS processes (0 0: skip)")
    p.add_argument("--messages", type=int, default=100, help="messages of the propagation phase")
    p.add_argument("--prop-rate", type=float, default=4.0,
                   help="publish rate of the propagation phase (/s): low enough that neither stack queues, so the "
                        "latencies are propagation, not backlog (the rate ladder measures throughput)")
    p.add_argument("--size", type=int, default=500)
    p.add_argument("--links", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rates", type=float, nargs="+", default=[20, 40, 80, 120, 160, 240, 320])
    p.add_argument("--rate-seconds", type=float, default=5.0)
    p.add_argument("--repeat", type=int, default=1, help="runs of each scenario (medians and ranges reported)")
    p.add_argument("--stacks", nargs="+", default=["python", "js"], choices=["python", "python-untuned", "js"])
    p.add_argument("--before", action="store_true", help="add python-untuned (GPUNET_P2P_TUNING=0)")
    p.add_argument("--quick", action="store_true", help="fewer messages and steps: a couple of minutes")
    p.add_argument("--json", type=Path, help="write all figures here")
    p.add_argument("--log", type=Path, help="workers' stderr (default: a temporary file, shown on errors)")
    p.add_argument("--worker", nargs=3, metavar=("FIRST", "COUNT", "DIR"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker_main(int(args.worker[0]), int(args.worker[1]), TOPIC, Path(args.worker[2]))
        return
    if args.quick:
        args.messages, args.rate_seconds, args.rates = 20, 2.0, [20, 40, 80, 160]
    stacks = list(dict.fromkeys(args.stacks + (["python-untuned"] if args.before else [])))
    if "js" in stacks and (shutil.which("node") is None or not (JS_DIR / "node_modules").is_dir()):
        sys.exit("js-libp2p is not installed: needs node and `npm ci` in tests/interop/js")
    plan = [(n, 1) for n in args.nodes]
    if args.multi[0] > 0:
        plan.append((args.multi[0], args.multi[1]))
    runs: list[Scenario] = []
    header = ("stack", "N", "procs", "p50 ms", "p99 ms", "max ms", "miss", "cpu ms/msg", "net idle", "idle %",
              "rate/s")
    print("{:<15} {:>3} {:>5} {:>7} {:>7} {:>7} {:>5} {:>10} {:>9} {:>6} {:>7}".format(*header), flush=True)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        log_path = args.log or tmp / "workers.log"
        with open(log_path, "a") as log:
            for _ in range(args.repeat):
                for n, procs in plan:
                    for stack in stacks:
                        sc = run_scenario(stack, n, procs, args, tmp, log, ladder=(n == 10 and procs == 1))
                        runs.append(sc)
                        pr = sc.propagation
                        if pr is None:
                            print(f"{stack:<15} {n:>3} {procs:>5}  failed: {sc.error}", flush=True)
                            continue
                        print(
                            f"{stack:<15} {n:>3} {procs:>5} {fmt(pr.p50_ms):>7} {fmt(pr.p99_ms):>7} "
                            f"{fmt(pr.max_ms):>7} {pr.missing:>5} {fmt(pr.cpu_ms_per_message, '.2f'):>10} "
                            f"{fmt(pr.cpu_ms_per_message_net_idle, '.2f'):>9} {fmt(100 * sc.idle_cpu_frac):>6} "
                            f"{fmt(sc.sustained_rate, '.0f') if sc.ladder else '':>7}"
                            + (f"  ({sc.error})" if sc.error else ""),
                            flush=True,
                        )
        if any(sc.error for sc in runs):
            print(f"worker log tail ({log_path}):", file=sys.stderr)
            print("".join(log_path.read_text().splitlines(True)[-30:]), file=sys.stderr)
    summary = summarise(runs)
    print_summary(summary, stacks, plan)
    verdicts = goals(summary, args.nodes)
    for g in verdicts:
        print(f"{'MET ' if g['met'] else 'MISS'} {g['goal']}: {g['value']:.2f} (limit {g['limit']})")
    if args.json:
        doc = {
            "benchmark": "gossip propagation, python node vs js-libp2p",
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                        "load_avg_at_end": os.getloadavg()},
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "worker"},
            "summary": summary,
            "goals": verdicts,
            "runs": [asdict(sc) for sc in runs],
        }
        args.json.write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
