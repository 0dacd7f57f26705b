#!/usr/bin/env python3
"""The benchmark report: runs every benchmark script of the repository with its JSON output, and writes
``docs/benchmarks.md`` and the figures ``docs/bench_*.png`` from what they measured in this run.

    scripts/bench [--quick] [--only gas,crypto,...] [--out docs] [--keep DIR]

Each section is one script run as a child process (its own ``--json``), with a time limit; a script that is missing
or fails makes its section say "not run" with the reason, and the rest of the report is still written. Every
figure sits next to the reference measured in the same run on the same machine (an ERC-20 transfer, bare
coincurve / libsodium, a js-libp2p mesh, the simulated executor, the interpreter alone). ``--quick`` shrinks each
run to finish in a few minutes; the default sizes take longer and give tighter figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
PY = sys.executable


@dataclass
class Section:
    name: str
    script: str
    quick: list[str]
    full: list[str]
    timeout_quick: int
    timeout_full: int
    json_flag: bool = True  # the script writes --json PATH
    result: Any = None
    error: str = ""
    wall_s: float = 0.0
    stdout: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


SECTIONS = [
    Section("gas", "bench_settlement.py", ["--leases", "80", "--tput-settlements", "100", "--pipeline", "1"],
            [], 600, 1800),
    Section("crypto", "bench_offers.py",
            ["--offers", "2000", "--rounds", "5", "--books", "1000,10000,100000", "--queries", "1000"],
            ["--offers", "5000", "--rounds", "7", "--books", "1000,10000,100000", "--queries", "5000"], 600, 1800),
    Section("heartbeat", "bench_lease.py", ["--beats", "5000", "--checkpoints", "500", "--repeat", "5"],
            ["--repeat", "7"], 300, 900),
    Section("gossip", "bench_gossip.py", ["--quick"], ["--repeat", "3"], 900, 3600),
    Section("open_to_job", "bench_open_to_job.py", ["--leases", "3", "--executor", "simulated"],
            ["--leases", "8", "--executor", "simulated"], 300, 900),
    Section("open_to_job_container", "bench_open_to_job.py", ["--leases", "3", "--executor", "container"],
            ["--leases", "8", "--executor", "container"], 300, 900),
    Section("container", "bench_container.py", ["--jobs", "3", "--log-mib", "8"], [], 300, 900, json_flag=False),
    Section("forward", "bench_forward.py", ["--mib", "16", "--parallel", "4", "--requests", "100"], [], 300, 900),
    Section("node", "bench_node.py", ["--starts", "3", "--idle", "10"], ["--starts", "5", "--idle", "60"], 300, 900),
    Section("market", "bench_market.py", ["--queries", "2000"], [], 300, 900),
]


# ---------------------------------------------------------------------------------------------- the machine
def _cmd(args: list[str]) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines() if Path("/proc/meminfo").exists() else []:
        if line.startswith("MemTotal"):
            mem_kib = int(line.split()[1])
    js_pkg = json.loads((ROOT / "tests/interop/js/package.json").read_text())["dependencies"]
    anvil = shutil.which("anvil", path=f"{ROOT / 'node_modules/.bin'}:{os.environ.get('PATH', '')}")
    return {
        "cpu": cpu, "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
        "ram_gib": round(mem_kib / 1024**2, 1), "os": platform.platform(), "python": platform.python_version(),
        "node_js": _cmd(["node", "--version"]), "anvil": _cmd([anvil, "--version"]) if anvil else "missing",
        "py_libp2p": importlib.metadata.version("libp2p"), "web3": importlib.metadata.version("web3"),
        "js_libp2p": js_pkg.get("libp2p", "?"), "gossipsub_js": js_pkg.get("@chainsafe/libp2p-gossipsub", "?"),
        "commit": _cmd(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
        "dirty": bool(_cmd(["git", "-C", str(ROOT), "status", "--porcelain"]) not in ("", "unknown")),
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
    }


# ---------------------------------------------------------------------------------------------- running
def run_section(sec: Section, quick: bool, work: Path) -> None:
    script = SCRIPTS / sec.script
    if not script.exists():
        sec.error = f"not run: scripts/{sec.script} is not in this tree yet"
        return
    out = work / f"{sec.name}.json"
    args = [PY, str(script), *(sec.quick if quick else sec.full)]
    if sec.json_flag:
        args += ["--json", str(out)]
    env = {**os.environ, "PATH": f"{ROOT / 'node_modules/.bin'}:{os.environ.get('PATH', '')}", "PYTHONUNBUFFERED": "1"}
    timeout = sec.timeout_quick if quick else sec.timeout_full
    print(f"== {sec.name}: {' '.join(args[1:])}", flush=True)
    load0 = os.getloadavg()[0]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    except subprocess.TimeoutExpired:
        sec.error = f"not run to the end: scripts/{sec.script} ran past {timeout} s"
        sec.wall_s = time.monotonic() - t0
        return
    sec.wall_s = time.monotonic() - t0
    sec.extra["load"] = [round(load0, 1), round(os.getloadavg()[0], 1)]
    (work / f"{sec.name}.meta.json").write_text(json.dumps({"wall_s": sec.wall_s, "load": sec.extra["load"]}))
    sec.stdout = proc.stdout
    (work / f"{sec.name}.log").write_text(proc.stdout + "\n--- stderr\n" + proc.stderr)
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["no output"]
        sec.error = f"not run: scripts/{sec.script} exited with {proc.returncode}: {tail[0][:300]}"
        return
    if sec.json_flag:
        if not out.exists():
            sec.error = f"not run: scripts/{sec.script} wrote no JSON"
            return
        sec.result = json.loads(out.read_text())
    else:
        sec.result = proc.stdout
    print(f"   done in {sec.wall_s:.0f} s", flush=True)


def reuse_section(sec: Section, directory: Path) -> bool:
    """Take a section's output from an earlier kept run; False if that run has none."""
    path = directory / (f"{sec.name}.json" if sec.json_flag else f"{sec.name}.log")
    if not path.exists():
        return False
    text = path.read_text()
    sec.result = json.loads(text) if sec.json_flag else text.split("\n--- stderr\n", 1)[0]
    meta = directory / f"{sec.name}.meta.json"
    if meta.exists():
        m = json.loads(meta.read_text())
        sec.wall_s, sec.extra["load"] = m["wall_s"], m["load"]
    when = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
    sec.extra["reused"] = f"{when:%Y-%m-%d %H:%M} UTC"
    print(f"== {sec.name}: reused from {path} ({sec.extra['reused']})", flush=True)
    return True


# ---------------------------------------------------------------------------------------------- formatting
def fmt(v: float | None, spec: str = ",.0f") -> str:
    return "—" if v is None else format(v, spec)


def med_range(xs: list[float], spec: str = ",.0f") -> str:
    if not xs:
        return "—"
    return f"{format(statistics.median(xs), spec)} [{format(min(xs), spec)}-{format(max(xs), spec)}]"


def not_run(sec: Section) -> str:
    return f"**{sec.error}.**\n" if sec.error else ""


class Report:
    def __init__(self, sections: dict[str, Section], mach: dict[str, Any], quick: bool, out: Path) -> None:
        self.s = sections
        self.m = mach
        self.quick = quick
        self.out = out
        self.lines: list[str] = []
        self.goals: list[tuple[str, str, str, str]] = []  # figure, reference, value, verdict
        self.plots: list[str] = []

    def w(self, text: str = "") -> None:
        self.lines.append(text)

    def goal(self, figure: str, reference: str, value: str, verdict: str) -> None:
        self.goals.append((figure, reference, value, verdict))

    # ------------------------------------------------------------------------------------------ sections
    def gas(self) -> None:
        sec = self.s["gas"]
        self.w("## Gas per operation (receipts)")
        self.w()
        self.w("**Method.** `scripts/bench_settlement.py`: anvil (automine), the contracts from `out/`, one provider "
               "and one consumer; every figure is the `gasUsed` of a receipt, sent through the node's own chain "
               "modules. "
               "Settlement: the first (seq 1) and a later (seq 2) settlement of a lease, single and in batches of "
               "1/10/50 (per lease = gas / batch size). The other paths on leases of the same run. Gas is "
               "deterministic for a given state: one figure each (settle: median of 3 identical calls). "
               "**Reference:** a DevToken `transfer` (ERC-20) on the same chain, same run.")
        self.w()
        if sec.result is None:
            self.w(not_run(sec))
            return
        g, life = sec.result["gas"], sec.result.get("lifecycle_gas", {})
        erc20 = life.get("erc20_transfer")
        self.w("| operation | gas (seq 1) | gas (seq 2) | per lease (seq 2) | x ERC-20 transfer |")
        self.w("|---|---:|---:|---:|---:|")
        for name, row in g["seq2"].items():
            if not isinstance(row, dict):
                continue
            a = g["seq1"][name]
            ratio = f"{row['gas_per_lease'] / erc20:.2f}" if erc20 else "—"
            self.w(f"| {name} | {a['gas_tx']:,.0f} | {row['gas_tx']:,.0f} | {row['gas_per_lease']:,.1f} | {ratio} |")
        for name, gas in life.items():
            ratio = f"{gas / erc20:.2f}" if erc20 else "—"
            self.w(f"| {name} | {gas:,.0f} | | | {ratio} |")
        self.w()
        self.w(f"First settlement on a fresh escrow (zero → non-zero storage): "
               f"{g['first_settlement_on_fresh_escrow']:,} gas. Marginal gas per extra lease in a batch of 50: "
               f"{g['seq2'].get('marginal_gas_per_extra_lease_at_50', '—')}.")
        self.w()
        per50 = g["seq2"].get("settleBatch(50)", {}).get("gas_per_lease")
        if per50 and erc20:
            self.goal("settleBatch(50) gas per lease (seq 2)", f"ERC-20 transfer {erc20:,.0f}", f"{per50:,.0f}",
                      f"{per50 / erc20:.2f}x a transfer (no goal set)")
        self.plot_gas(g, erc20)
        self.settlement_rate(sec)

    def plot_gas(self, g: dict[str, Any], erc20: float | None) -> None:
        import matplotlib.pyplot as plt

        sizes = sorted(int(k[len("settleBatch("):-1]) for k in g["seq2"] if k.startswith("settleBatch("))
        fig, ax = plt.subplots(figsize=(6, 4))
        for seq, style in (("seq1", "o-"), ("seq2", "s-")):
            ax.plot(sizes, [g[seq][f"settleBatch({b})"]["gas_per_lease"] for b in sizes], style,
                    label=f"settleBatch, {'first' if seq == 'seq1' else 'later'} settlement of a lease")
        ax.axhline(g["seq2"]["settle"]["gas_per_lease"], color="grey", ls="--", label="single settle (later)")
        if erc20:
            ax.axhline(erc20, color="red", ls=":", label="ERC-20 transfer (reference)")
        ax.set_xscale("log")
        ax.set_xticks(sizes, [str(b) for b in sizes])
        ax.set_xlabel("batch size (leases per transaction)")
        ax.set_ylabel("gas per settled lease")
        ax.set_title("Gas per lease vs batch size")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        self.save(fig, "bench_gas_per_lease.png", "Gas per settled lease vs batch size")

    def settlement_rate(self, sec: Section) -> None:
        self.w("## Settlements per second: single vs batched")
        self.w()
        self.w("**Method.** Same run as above: pre-signed checkpoints settled back to back (one transaction in "
               "flight, as the consumer's settlement loop does; pipelined runs in the full mode), wall clock from the "
               "first send to the last receipt, anvil automine. One run per mode. **Reference:** single `settle` "
               "calls in the same run.")
        self.w()
        self.w("| call | in flight | settlements | settlements/s | ms per tx | gas per settlement "
               "| RPC calls per settlement |")
        self.w("|---|---:|---:|---:|---:|---:|---:|")
        for t in sec.result["throughput"]:
            name = f"settleBatch({t['batch']})" if t["mode"] == "batch" else "settle"
            self.w(f"| {name} | {t['in_flight']} | {t['settlements']} | {t['settlements_per_s']:.1f} | "
                   f"{t['ms_per_tx']:.1f} | {t['gas_per_settlement']:,.0f} | "
                   f"{t['txsender_rpc_calls_per_settlement']:.2f} |")
        self.w()
        rows = {(t["mode"], t["in_flight"]): t for t in sec.result["throughput"]}
        b, s = rows.get(("batch", 1)), rows.get(("single", 1))
        if b and s:
            rate = b["settlements_per_s"]
            self.goal("settlements/s, settleBatch back to back", f"single settle {s['settlements_per_s']:.0f}/s",
                      f"{rate:.0f}/s", _verdict(rate, 100, higher=True, unit="/s", what="goal ≥ 100/s"))

    def crypto(self) -> None:
        sec, hb = self.s["crypto"], self.s["heartbeat"]
        self.w("## Offer validation and heartbeat verification")
        self.w()
        self.w("**Method.** `scripts/bench_offers.py` pinned to one core: signed offers from distinct signers "
               "validated against an empty book (EIP-712 digest, secp256k1 recovery, every rule), rate per CPU-second "
               "of the thread, median [min-max] over the rounds. `scripts/bench_lease.py` on one core: heartbeats "
               "(ed25519, strict decode) and checkpoints; rate per CPU-second of the thread, median [min-max] over "
               "the runs. "
               "**Reference:** coincurve's bare public-key recovery on as many signatures, and libsodium's bare "
               "`crypto_sign_open` on the same heartbeats, same run.")
        self.w()
        self.w("| figure | ours | reference | ours / reference |")
        self.w("|---|---:|---:|---:|")
        if sec.result is not None:
            v, raw = sec.result["validation"], sec.result["raw_coincurve"]
            self.w(f"| offer validation (per CPU-s) | {med_range(v['validate_per_cpu_s_all'])} | coincurve recover "
                   f"{med_range(raw['recover_per_cpu_s_all'])} | "
                   f"{v['validate_per_cpu_s'] / raw['recover_per_cpu_s']:.2f} |")
            self.w(f"| offer validate + insert (wall) | {v['validate_insert_per_s']:,.0f} | | |")
        if hb.result is not None:
            r = hb.result
            runs, items = r["runs_s"], r["items"]

            def rates(loop: str) -> list[float]:
                return [items[loop] / t for t in runs[loop]]

            raw = rates("raw_loop")
            for loop, label in (("hb_loop", "verify_heartbeat"), ("hb_hash_loop", "verify_heartbeat + chain hash"),
                                ("sm_loop", "transition(ReceiveHeartbeat)")):
                ours = rates(loop)
                self.w(f"| {label} (/s) | {med_range(ours)} | libsodium verify {med_range(raw)} | "
                       f"{statistics.median(ours) / statistics.median(raw):.2f} |")
            for loop, label in (("cp_fast_loop", "verify_checkpoint, beats pre-verified"),
                                ("cp_full_loop", "verify_checkpoint, re-verifying 12 beats")):
                self.w(f"| {label} (/s) | {med_range(rates(loop))} | | |")
        self.w()
        self.w(not_run(sec) + not_run(hb))

    def books(self) -> None:
        sec = self.s["crypto"]
        self.w("## Offer book query latency vs book size")
        self.w()
        self.w("**Method.** `scripts/bench_offers.py`: a book of 1k / 10k / 100k live offers over 8 models, 6 regions "
               "and varied specs; mixed queries (model, count, VRAM, price, region, duration filters, limit 10-100) "
               "and selective ones that defeat the early stop; latency per query (wall; CPU time also recorded), "
               "p50/p90/p99 over all queries. **Reference:** a full scan of the book with no match (the worst case), "
               "same run.")
        self.w()
        if sec.result is None:
            self.w(not_run(sec))
            return
        self.w("| book | mixed p50 ms | p90 | p99 | selective p50 ms | p99 | full scan ms |")
        self.w("|---:|---:|---:|---:|---:|---:|---:|")
        for b in sec.result["books"]:
            m, h = b["mixed"], b["hard"]
            self.w(f"| {b['book']:,} | {m['p50_ms']:.3f} | {m['p90_ms']:.3f} | {m['p99_ms']:.3f} | {h['p50_ms']:.3f} | "
                   f"{h['p99_ms']:.3f} | {b['full_scan_ms']:.1f} |")
        self.w()
        import matplotlib.pyplot as plt

        bs = sec.result["books"]
        sizes = [b["book"] for b in bs]
        fig, ax = plt.subplots(figsize=(6, 4))
        for key, label, style in (("mixed", "mixed", "o-"), ("hard", "selective", "s-")):
            ax.plot(sizes, [b[key]["p50_ms"] for b in bs], style, label=f"{label} p50")
            ax.plot(sizes, [b[key]["p99_ms"] for b in bs], style[0] + "--", alpha=0.5, label=f"{label} p99")
        ax.plot(sizes, [b["full_scan_ms"] for b in bs], "k:", label="full scan (reference)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("live offers in the book")
        ax.set_ylabel("query latency (ms)")
        ax.set_title("Offer book query latency vs book size")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
        self.save(fig, "bench_query_latency.png", "Query latency vs book size")
        big = bs[-1]
        self.goal(f"book query p99 at {big['book']:,} offers (mixed)", f"full scan {big['full_scan_ms']:.1f} ms",
                  f"{big['mixed']['p99_ms']:.2f} ms", "no goal set")

    def gossip(self) -> None:
        sec = self.s["gossip"]
        self.w("## Gossip propagation and throughput, next to js-libp2p")
        self.w()
        self.w("**Method.** `scripts/bench_gossip.py` (its docstring has the details): the same topology of N nodes "
               "run through the Python node's p2p layer and through a js-libp2p gossipsub mesh, one publisher, "
               "~500 B messages; publish-to-delivery latency over every (node, message) pair, CPU per message, and the "
               "sustained rate at N=10 with p99 < 1 s. Medians [min-max] over repeats. **Reference:** the js-libp2p "
               f"mesh ({self.m['js_libp2p']}, gossipsub {self.m['gossipsub_js']}), same run.")
        self.w()
        if sec.result is None:
            self.w(not_run(sec))
            self.w("The report keeps this section: it fills in once the script exists and runs.")
            self.w()
            return
        summ = sec.result.get("summary", {})
        self.w("| stack | N | processes | p50 ms | p99 ms | CPU ms / message | sustained /s | missing |")
        self.w("|---|---:|---:|---:|---:|---:|---:|---:|")
        for e in sorted(summ.values(), key=lambda e: (e["nodes"], e["procs"], e["stack"])):
            def mr(k: str, spec: str = ".1f", e: dict[str, Any] = e) -> str:
                if k not in e:
                    return "—"
                lo, hi = e.get(k + "_range", [e[k], e[k]])
                return f"{format(e[k], spec)}" + (f" [{format(lo, spec)}-{format(hi, spec)}]" if lo != hi else "")
            self.w(f"| {e['stack']} | {e['nodes']} | {e['procs']} | {mr('p50_ms')} | {mr('p99_ms')} | "
                   f"{mr('cpu_ms_per_message', '.2f')} | {mr('sustained_rate', '.0f')} | {mr('missing', '.0f')} |")
        self.w()
        js50 = summ.get("js/50/1", {}).get("p99_ms")
        for g in sec.result.get("goals", []):
            if "js" in g["goal"]:
                ref = "js-libp2p, same run (value = python / js)"
            else:
                ref = f"js-libp2p p99 at N=50: {js50:.0f} ms" if js50 is not None else "—"
            miss = "" if g["met"] else f", by {abs(g['value'] - g['limit']):.2f}"
            self.goal(g["goal"], ref, f"{g['value']:.2f}",
                      ("met" if g["met"] else "missed") + f" (limit {g['limit']}{miss})")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for stack, color in (("python", "tab:blue"), ("js", "tab:orange"), ("python-untuned", "tab:grey")):
            es = sorted((e for e in summ.values() if e["stack"] == stack and e["procs"] == 1 and "p99_ms" in e),
                        key=lambda e: e["nodes"])
            if not es:
                continue
            ns = [e["nodes"] for e in es]
            for key, style in (("p50_ms", "o-"), ("p99_ms", "s--")):
                ys = [e[key] for e in es]
                err = [[y - e.get(key + "_range", [y, y])[0] for y, e in zip(ys, es, strict=True)],
                       [e.get(key + "_range", [y, y])[1] - y for y, e in zip(ys, es, strict=True)]]
                ax.errorbar(ns, ys, yerr=err, fmt=style, color=color, capsize=3,
                            label=f"{stack} {key.split('_')[0]}")
        for stack, color in (("python", "tab:blue"), ("js", "tab:orange")):
            for e in summ.values():
                if e["stack"] == stack and e["procs"] > 1 and "p99_ms" in e:
                    ax.plot([e["nodes"]], [e["p99_ms"]], "D", mfc="none", color=color, ms=9,
                            label=f"{stack} p99, {e['procs']} processes")
        ax.set_xlabel("nodes (one process unless marked)")
        ax.set_ylabel("publish → delivery (ms)")
        ax.set_title("Gossip propagation vs N: Python node and js-libp2p")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        self.save(fig, "bench_propagation.png", "Propagation vs N, both stacks")

    def open_to_job(self) -> None:
        secs = [self.s["open_to_job"], self.s["open_to_job_container"]]
        cont = self.s["container"]
        self.w("## Open → job running")
        self.w()
        self.w("**Method.** `scripts/bench_open_to_job.py`: anvil with 1 s blocks, a provider and a consumer node as "
               "separate processes over libp2p on loopback; the consumer's `POST /v1/leases` until the provider's "
               "API shows the job running (polled every 20 ms), and until the job's first output is back at the "
               "consumer; leases one after another; the simulated executor, then the container executor (a busybox "
               "image on a private Podman service). min / median / max. **Reference:** the open transaction's own "
               "round trip (mined), same run.")
        self.w()
        self.w("| executor | figure | min s | median s | max s |")
        self.w("|---|---|---:|---:|---:|")
        for sec in secs:
            r = sec.result
            if r is None:
                continue
            for key, label in (("open_rtt_s", "open command round trip (mined): reference"),
                               ("opened_to_job_s", "open returned → job running"),
                               ("open_to_job_s", "open request → job running"),
                               ("open_to_output_s", "open request → first output at the consumer")):
                st = r.get(key)
                if st:
                    self.w(f"| {r.get('executor', '?')} | {label} | {st['min']:.3f} | {st['median']:.3f} | "
                           f"{st['max']:.3f} |")
            med = r["open_to_job_s"]["median"]
            self.goal(f"open → job running, median ({r.get('executor', '?')} executor)",
                      f"open tx round trip {r['open_rtt_s']['median']:.2f} s",
                      f"{med:.2f} s", _verdict(med, 3.0, higher=False, unit=" s", what="target ≤ 3 s"))
        self.w()
        for sec in secs:
            if sec.result is None:
                self.w(not_run(sec))
        self.w("**Container executor.** `scripts/bench_container.py` (start → running of an OCI container through "
               "the Docker Engine API, next to the simulated executor's start in the same run; RSS per running "
               "container; log streaming):")
        self.w()
        if cont.error:
            self.w(not_run(cont))
        else:
            self.w("```")
            self.w(str(cont.result).strip())
            self.w("```")
        self.w()

    def forward(self) -> None:
        sec = self.s["forward"]
        self.w("## Forwarded-port throughput (service leases)")
        self.w()
        self.w("**Method.** `scripts/bench_forward.py`: two libp2p hosts on loopback in one process; the consumer side "
               "forwards a local port over `/gpunet/forward/1.0.0` to a TCP server at the provider side. One "
               "connection carrying the whole payload, parallel connections sharing it, and sequential 1 KiB round "
               "trips (p50/p90). One run. **Reference:** the same transfers straight to the server over loopback "
               "TCP, same run.")
        self.w()
        if sec.result is None:
            self.w(not_run(sec))
            return
        r = sec.result
        self.w(f"| path | 1 connection MB/s | {r['parallel']} connections MB/s | 1 KiB RTT p50 ms | p90 ms |")
        self.w("|---|---:|---:|---:|---:|")
        for name, label in (("direct", "direct loopback TCP (reference)"), ("forward", "through the forward")):
            x = r[name]
            self.w(f"| {label} | {x['one_mb_s']:.1f} | {x['parallel_mb_s']:.1f} | {x['rtt_p50_ms']:.3f} | "
                   f"{x['rtt_p90_ms']:.3f} |")
        self.w()
        self.w(f"Payload {r['mib']} MiB; added round-trip latency p50 {r['added_latency_p50_ms']:.3f} ms.")
        self.w()
        self.goal("forwarded port, one connection", f"direct TCP {r['direct']['one_mb_s']:.0f} MB/s",
                  f"{r['forward']['one_mb_s']:.0f} MB/s", "no goal set")

    def node(self) -> None:
        sec = self.s["node"]
        self.w("## Node start-up time and idle memory")
        self.w()
        self.w("**Method.** `scripts/bench_node.py`: `python -m node.cli run` (consumer, dev wallet) as a separate "
               "process against anvil (1 s blocks); from spawn to `GET /v1/status` answering, with a fresh data "
               "directory and again with the same one (restart); min / median / max. Then VmRSS after the node "
               "idled. **Reference:** the resident memory of an interpreter that only imports the node package.")
        self.w()
        if sec.result is None:
            self.w(not_run(sec))
            return
        r = sec.result
        s = r["start_to_api_s"]
        self.w("| figure | value |")
        self.w("|---|---:|")
        self.w(f"| start → API, fresh data dir (s) | {s['fresh_data_dir']['median']:.2f} "
               f"[{s['fresh_data_dir']['min']:.2f}-{s['fresh_data_dir']['max']:.2f}] |")
        self.w(f"| start → API, restart (s) | {s['restart']['median']:.2f} "
               f"[{s['restart']['min']:.2f}-{s['restart']['max']:.2f}] |")
        m = r["rss_kib"]
        self.w(f"| RSS after {r['idle_s']:g} s idle (MiB) | {m['after_idle'] / 1024:.1f} "
               f"[{m['idle_samples_min'] / 1024:.1f}-{m['idle_samples_max'] / 1024:.1f}] |")
        self.w(f"| peak RSS (MiB) | {m['peak'] / 1024:.1f} |")
        self.w(f"| reference: interpreter importing the node only (MiB) | "
               f"{r['reference_import_only_rss_kib'] / 1024:.1f} |")
        self.w()
        self.goal("node start → API (fresh)", "—", f"{s['fresh_data_dir']['median']:.2f} s", "no goal set")
        self.goal("idle RSS", f"import only {r['reference_import_only_rss_kib'] / 1024:.0f} MiB",
                  f"{m['after_idle'] / 1024:.0f} MiB", "no goal set")

    def market(self) -> None:
        sec = self.s["market"]
        self.w("## Market data query latency")
        self.w()
        self.w("**Method.** `scripts/bench_market.py`: 100,000 live offers and a week of lease logs loaded into the "
               "market data view; mixed queries (all models, one model, model + region, one key's summary) with the "
               "1 h / 24 h / 7 d windows; p50/p99 per kind. **Reference:** the cost of one offer change at that size.")
        self.w()
        if sec.result is None:
            self.w(not_run(sec))
            return
        r = sec.result
        self.w("| query | p50 ms | p99 ms | n |")
        self.w("|---|---:|---:|---:|")
        for kind, q in r["query"].items():
            self.w(f"| {kind} | {q['p50_ms']:.3f} | {q['p99_ms']:.3f} | {q['n']} |")
        change = r["offer_change"]
        self.w(f"| offer change (reference) | {change['p50_ms']:.3f} | {change['p99_ms']:.3f} | |")
        self.w()

    # ------------------------------------------------------------------------------------------ assembly
    def save(self, fig: Any, name: str, title: str) -> None:
        fig.tight_layout()
        fig.savefig(self.out / name, dpi=110)
        import matplotlib.pyplot as plt

        plt.close(fig)
        self.w(f"![{title}]({name})")
        self.w()

    def render(self) -> str:
        m = self.m
        body = self.lines
        self.lines = []
        self.w("# Benchmarks")
        self.w()
        self.w(f"Written by `scripts/bench{' --quick' if self.quick else ''}` on "
               f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC at commit {m['commit']}"
               f"{' (with uncommitted changes)' if m['dirty'] else ''}. Every figure sits next to its reference, "
               "measured in the same run of the same script on the same machine. Rerun it to reproduce; "
               "`--quick` takes a few minutes, the default sizes longer.")
        self.w()
        self.w(f"**Machine.** {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), {m['ram_gib']} GiB RAM, "
               f"{m['os']}; Python {m['python']}, Node.js {m['node_js']}, {m['anvil']}; py-libp2p {m['py_libp2p']}, "
               f"web3 {m['web3']}, js-libp2p {m['js_libp2p']}. Load average (1, 5, 15 min) when the report "
               f"was written {m.get('load_avg_end')}; per section below: other work on the machine shows in the "
               "spread.")
        self.w()
        self.w("## Summary")
        self.w()
        self.w("| figure | reference (same run) | value | goal |")
        self.w("|---|---|---:|---|")
        for fig_, ref, val, verdict in self.goals:
            self.w(f"| {fig_} | {ref} | {val} | {verdict} |")
        self.w()
        self.w("Section run times (1-minute load average at start and end): " + ", ".join(
            f"{s.name} {s.wall_s:.0f} s" + (f" ({s.extra['load'][0]} / {s.extra['load'][1]})" if "load" in s.extra
                                             else "") for s in self.s.values() if s.wall_s) + ".")
        reused = [f"{s.name} ({s.extra['reused']})" for s in self.s.values() if "reused" in s.extra]
        if reused:
            self.w()
            self.w("Sections taken from an earlier run of the same command on this machine (each still next to "
                   "its own reference of that run): " + ", ".join(reused) + ".")
        self.w()
        return "\n".join(self.lines + body) + "\n"


def _verdict(value: float, limit: float, higher: bool, unit: str, what: str) -> str:
    met = value >= limit if higher else value <= limit
    gap = abs(value - limit)
    return f"{'met' if met else 'missed'} ({what}; {'by' if met else 'short by'} {gap:.2f}{unit})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small runs: a few minutes in all")
    ap.add_argument("--only", type=lambda v: set(v.split(",")), help="sections to run: " +
                    ",".join(s.name for s in SECTIONS))
    ap.add_argument("--out", type=Path, default=ROOT / "docs", help="where benchmarks.md and the figures go")
    ap.add_argument("--keep", type=Path, help="keep each script's JSON and log in this directory")
    ap.add_argument("--reuse", type=Path, help="with --only: take the other sections from this earlier --keep "
                    "directory (the report says which, and when they ran)")
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    mach = machine()
    sections = {s.name: s for s in SECTIONS}
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-report-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    for sec in SECTIONS:
        if args.only and sec.name not in args.only:
            if args.reuse is not None and reuse_section(sec, args.reuse):
                continue
            sec.error = "not run: left out with --only"
            continue
        run_section(sec, args.quick, work)
        if sec.error:
            print(f"   {sec.error}", flush=True)
    mach["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.mkdir(parents=True, exist_ok=True)
    rep = Report(sections, mach, args.quick, args.out)
    steps: list[Callable[[], None]] = [rep.gas, rep.crypto, rep.books, rep.gossip, rep.open_to_job, rep.forward,
                                       rep.node, rep.market]
    for step in steps:
        step()
    (args.out / "benchmarks.md").write_text(rep.render())
    (work / "benchmarks.json").write_text(json.dumps(
        {"machine": mach, "quick": args.quick, "sections": {s.name: {"error": s.error, "wall_s": round(s.wall_s, 1),
                                                                    "result": s.result} for s in SECTIONS}},
        indent=1, default=str) + "\n")
    print(f"report: {args.out / 'benchmarks.md'} ({time.monotonic() - t0:.0f} s); work files in {work}")
    for fig_, ref, val, verdict in rep.goals:
        print(f"  {fig_}: {val} (reference {ref}) — {verdict}")


if __name__ == "__main__":
    main()
