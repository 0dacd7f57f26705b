#!/usr/bin/env python3
"""Latency from a consumer's open command to the provider running the job, with two real node processes.

    .venv/bin/python scripts/bench_open_to_job.py [--leases 5] [--block-time 1] [--poll 0.02] [--json PATH]
        [--executor process|simulated|container[,...]]

Uses the demo's setup (node.demo): anvil, the contracts, funded dev wallets, a provider node and a consumer node
(``python -m node.cli run``) talking libp2p over loopback. Then, ``--leases`` times in sequence: POST /v1/leases to
the consumer (1 GPU, a job ``python -c "print(1)"``), poll the provider's GET /v1/leases every ``--poll`` seconds
until the lease shows ``job_running`` or a ``job_result``, then the consumer's GET /v1/leases/{id}/logs until the
job's first output has come back to the consumer (proof that it ran: a container job is "running" for the provider
as soon as the executor took it, before its image is checked and its container started), then close the lease.
Reported per lease and as
min/median/max: the open command's round trip (the consumer returns once openLease is mined) and the time from
sending the open request to the provider's job being seen started. Polling adds up to one poll interval.
``--block-time 0`` runs anvil in automine mode (the demo uses 1 s blocks). The last stdout line is JSON.

``--executor container`` runs the job (``sh -c 'echo 1'``) in a container of a local busybox image, on a private
Podman service started for the run (``node.demo_runtime``); several executors, comma-separated, are measured one
after the other in the same run (each with its own devnet and nodes) and the JSON line then holds ``{"runs": [...]}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from node.chain.anvil import Anvil, devnet_key
from node.chain.deploy import DeployParams, deploy_all
from node.demo import CONSUMER, DEPLOYER, PRICE, PROVIDER, Processes, fund, http, wait, write_config

PROVIDER_GPUS = 12  # the demo's provider declares 2; more, so that sequential one-GPU leases never run out


def stats(xs: list[float]) -> dict[str, float]:
    return {"min": round(min(xs), 3), "median": round(statistics.median(xs), 3), "max": round(max(xs), 3)}


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    procs = Processes()
    anvil = Anvil(block_time=args.block_time or None)
    runtime = None
    try:
        anvil.start()
        dep_path = workdir / "deployments.json"
        params = DeployParams(settlement_window=4, dispute_window=10, liveness_window=10, unbonding_period=10)
        deployment = asyncio.run(deploy_all(anvil.url, devnet_key(DEPLOYER), params, out=dep_path))
        asyncio.run(fund(anvil.url, deployment, workdir / "faucet.sqlite"))

        pdir, cdir = workdir / "provider", workdir / "consumer"
        write_config(workdir / "provider.toml", data_dir=pdir, rpc=anvil.url, deployments=dep_path,
                     account=PROVIDER, provider=True, bootstrap=[])
        cfg = workdir / "provider.toml"
        text = cfg.read_text().replace('declared_gpus = "2xSIM-A100:40960"',
                                       f'declared_gpus = "{PROVIDER_GPUS}xSIM-A100:40960"')
        if args.executor == "container":
            from node.demo_runtime import start_runtime

            runtime = start_runtime("container")
            print(f"jobs run with the {runtime.description}", flush=True)
            executor_lines = "\n".join(runtime.provider_toml())
        else:  # the bench's own job on the operator's machine: the process executor may take it
            executor_lines = f'executor = "{args.executor}"\nallow_unsafe_process_executor = true'
        cfg.write_text(re.sub(r'executor = "[a-z]+"', lambda _: executor_lines, text))
        py = [sys.executable, "-m", "node.cli", "run", "--log-level", "INFO", "--config"]
        procs.start("provider node", [*py, str(cfg)], workdir / "provider.log")
        pinfo = wait(lambda: json.loads((pdir / "node.json").read_text()) if (pdir / "node.json").exists()
                     else procs.check(), 60, "the provider node to start")
        write_config(workdir / "consumer.toml", data_dir=cdir, rpc=anvil.url, deployments=dep_path,
                     account=CONSUMER, provider=False, bootstrap=[pinfo["addrs"][0]])
        procs.start("consumer node", [*py, str(workdir / "consumer.toml")], workdir / "consumer.log")
        cinfo = wait(lambda: json.loads((cdir / "node.json").read_text()) if (cdir / "node.json").exists()
                     else procs.check(), 60, "the consumer node to start")
        offers = wait(lambda: http(f"{cinfo['api']}/v1/offers?min_gpus=1")["offers"], 30,
                      "the provider's offer to reach the consumer")
        token = (cdir / "api-token").read_text().strip()
        job = (runtime.job("echo 1", []) if runtime is not None
               else {"argv": [sys.executable, "-c", "print(1)"], "timeout_s": 60})
        deposit = PRICE * 1 * 600  # one GPU for up to 10 minutes
        rows: list[dict[str, Any]] = []
        for _ in range(args.leases):
            # the provider's live offer (newest nonce); leases share it until it is re-announced
            offers = wait(lambda: http(f"{cinfo['api']}/v1/offers?min_gpus=1")["offers"], 30, "an offer")
            offer = max(offers, key=lambda o: int(o["nonce"]))
            procs.check()
            t0 = time.monotonic()
            lease = http(f"{cinfo['api']}/v1/leases", {"offer_id": offer["offer_id"], "gpus": 1,
                                                       "deposit": str(deposit), "job": job}, token)
            t_opened = time.monotonic()
            lid = lease["lease_id"]
            polls = 0

            def started(lid: int = lid) -> bool:
                nonlocal polls
                polls += 1
                return any(x["lease_id"] == lid and (x.get("job_running") or "job_result" in x)
                           for x in http(f"{pinfo['api']}/v1/leases")["leases"])

            wait(started, 60, f"the provider to start the job of lease {lid}", interval=args.poll)
            t_job = time.monotonic()

            def output(lid: int = lid) -> str:  # the job's first output at the consumer, or its result
                if http(f"{cinfo['api']}/v1/leases/{lid}/logs", token=token)["chunks"]:
                    return "output"
                return "result" if "job_result" in http(f"{cinfo['api']}/v1/leases/{lid}") else ""

            seen = wait(output, 60, f"the job's output of lease {lid} at the consumer", interval=args.poll)
            t_out = time.monotonic()
            row = {"lease_id": lid, "open_rtt_s": round(t_opened - t0, 3), "open_to_job_s": round(t_job - t0, 3),
                   "opened_to_job_s": round(t_job - t_opened, 3), "polls": polls,
                   "open_to_output_s": round(t_out - t0, 3) if seen == "output" else None}
            rows.append(row)
            print(f"lease {lid}: open command returned after {row['open_rtt_s']:.3f}s, provider job started "
                  f"{row['open_to_job_s']:.3f}s after the open request ({polls} polls)", flush=True)
            http(f"{cinfo['api']}/v1/leases/{lid}/close", {}, token)
        procs.check()
        return {
            "block_time_s": args.block_time, "poll_s": args.poll, "executor": args.executor, "leases": rows,
            "open_rtt_s": stats([r["open_rtt_s"] for r in rows]),
            "open_to_job_s": stats([r["open_to_job_s"] for r in rows]),
            "opened_to_job_s": stats([r["opened_to_job_s"] for r in rows]),
            "open_to_output_s": (stats([r["open_to_output_s"] for r in rows])
                                 if all(r["open_to_output_s"] is not None for r in rows) else None),
        }
    except Exception:
        for name in ("provider", "consumer"):
            log_path = workdir / f"{name}.log"
            if log_path.exists():
                print(f"--- last lines of {log_path}", file=sys.stderr)
                for line in log_path.read_text(errors="replace").splitlines()[-15:]:
                    print(line, file=sys.stderr)
        raise
    finally:
        procs.stop_all()
        anvil.stop()
        if runtime is not None:
            runtime.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--leases", type=int, default=5, help=f"leases opened one after another (<= {PROVIDER_GPUS})")
    ap.add_argument("--block-time", type=float, default=1.0, help="anvil block time in seconds (0: automine)")
    ap.add_argument("--poll", type=float, default=0.02, help="interval of polling the provider's API, seconds")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    ap.add_argument("--executor", default="process",
                    help="the provider's executor: process, simulated (no process is started for the job) or "
                         "container; several comma-separated are measured one after the other")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (node logs and data)")
    args = ap.parse_args()
    if not 1 <= args.leases <= PROVIDER_GPUS:
        raise SystemExit(f"--leases must be within 1..{PROVIDER_GPUS}")
    executors = [e.strip() for e in args.executor.split(",") if e.strip()]
    if not executors or any(e not in ("process", "simulated", "container") for e in executors):
        raise SystemExit("--executor: process, simulated or container (comma-separated for several)")
    runs = []
    for executor in executors:
        workdir = Path(tempfile.mkdtemp(prefix="bench-open-to-job-"))
        res = run(argparse.Namespace(**{**vars(args), "executor": executor}), workdir)
        if args.keep:
            print(f"work dir kept: {workdir}")
        else:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
        report(args, res)
        runs.append(res)
    out: dict[str, Any] = runs[0] if len(runs) == 1 else {"runs": runs}
    if len(runs) > 1:
        print("\nexecutor        open -> job median (s)")
        for r in runs:
            print(f"{r['executor']:<16}{r['open_to_job_s']['median']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, separators=(",", ":")))


def report(args: argparse.Namespace, res: dict[str, Any]) -> None:
    mode = "automine" if not args.block_time else f"{args.block_time:g}s blocks"
    print(f"\n{res['executor']} executor, anvil {mode}, provider API polled every {args.poll * 1e3:.0f} ms, "
          f"{len(res['leases'])} leases")
    print(f"{'':34}{'min':>8}{'median':>8}{'max':>8}")
    for key, label in (("open_rtt_s", "open command round trip (mined)"),
                       ("opened_to_job_s", "open returned -> job started"),
                       ("open_to_job_s", "open request -> job started")):
        s = res[key]
        print(f"{label:<34}{s['min']:>8.3f}{s['median']:>8.3f}{s['max']:>8.3f}")
    if res["open_to_output_s"] is not None:
        s = res["open_to_output_s"]
        print(f"{'open request -> output at consumer':<34}{s['min']:>8.3f}{s['median']:>8.3f}{s['max']:>8.3f}")
    verdict = "meets" if res["open_to_job_s"]["median"] <= 3.0 else "misses"
    print(f"median open -> job {res['open_to_job_s']['median']:.2f}s ({verdict} the 3 s target)")


if __name__ == "__main__":
    main()
