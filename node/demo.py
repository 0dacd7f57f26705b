"""End-to-end demo on a local devnet: anvil, contracts, one provider node and one consumer node as separate
processes talking libp2p over loopback, one lease from open to provider withdrawal. Run through ``scripts/demo``.

Devnet only: the wallets are anvil's public development accounts and the token is the devnet faucet token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from eth_account import Account
from rich.console import Console
from rich.table import Table

from node.chain.anvil import REPO_ROOT, Anvil, devnet_key
from node.chain.artifacts import Deployment
from node.chain.client import ChainClient
from node.chain.deploy import DeployParams, deploy_all
from node.chain.proxies import Escrow, Token
from node.storage.db import Database

console = Console()
E18 = 10**18
PRICE = 10**13  # token base units per GPU-second (0.00001 gDEV)
DEPLOYER, PROVIDER, CONSUMER = 0, 1, 2

JOB = [
    sys.executable, "-c",
    "import os, time\n"
    "print('hello from a leased GPU slot; CUDA_VISIBLE_DEVICES =', os.environ.get('CUDA_VISIBLE_DEVICES'))\n"
    "total = 0\n"
    "for step in range(6):\n"
    "    total += sum(i * i for i in range(200_000))\n"
    "    print('step', step, 'checksum', total % 1_000_003, flush=True)\n"
    "    time.sleep(1)\n"
    "print('job done')\n",
]


def http(url: str, body: dict[str, Any] | None = None, token: str | None = None, timeout: float = 30) -> Any:
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                 method="POST" if body is not None else "GET",
                                 headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def wait(cond: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = cond()
            if value:
                return value
        except (OSError, urllib.error.URLError, KeyError, ValueError, json.JSONDecodeError) as exc:
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}" + (f" ({last_exc})" if last_exc else ""))


class Processes:
    """Child processes in their own sessions; all of them are stopped on exit or Ctrl-C."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
        log_file = open(log_path, "wb")  # noqa: SIM115 - lives as long as the process
        p = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
                             cwd=REPO_ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.procs.append((name, p))
        return p

    def check(self) -> bool:
        """Raise if a process has exited; otherwise False (so it can end a wait condition with ``or``)."""
        for name, p in self.procs:
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited with code {p.returncode} (see its log)")
        return False

    def stop_all(self) -> None:
        for _, p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for _, p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)


SERVICE_SCRIPT = "echo serving /www on port 8080; exec busybox httpd -f -p 8080 -h /www"
CONTAINER_SCRIPT = ("echo \"hello from a leased container: $(id -u):$(id -g), GPUs $GPUNET_SIMULATED_GPUS\"; "
                    "for step in 0 1 2 3 4 5; do echo step $step; sleep 1; done; echo job done")


def write_config(path: Path, *, data_dir: Path, rpc: str, deployments: Path, account: int, provider: bool,
                 bootstrap: list[str], executor: list[str] | None = None) -> None:
    lines = [
        f'data_dir = "{data_dir}"', f'rpc_url = "{rpc}"', f'deployments = "{deployments}"',
        f"dev_account = {account}", 'listen = ["/ip4/127.0.0.1/tcp/0"]',
        "bootstrap = [" + ", ".join(f'"{b}"' for b in bootstrap) + "]", "poll_interval = 0.2", "",
        "[provider]", f"enabled = {'true' if provider else 'false'}", 'declared_gpus = "2xSIM-A100:40960"',
        f"price_per_gpu_second = {PRICE}", "min_duration = 10", "max_duration = 3600", "offer_ttl = 600",
        f"stake = {1000 * E18}", 'region = "local"', "heartbeat_interval = 1.0", "checkpoint_interval = 3.0",
        *(executor or ['executor = "process"']), "", "[consumer]", "settle_interval = 1.0", "settle_every = 2.0",
    ]
    path.write_text("\n".join(lines) + "\n")


async def fund(rpc: str, deployment: Deployment, db_path: Path) -> None:
    chain = await ChainClient.connect(rpc, deployment, Database(db_path), devnet_key(DEPLOYER))
    token = Token(chain)
    for idx, amount in ((PROVIDER, 2_000 * E18), (CONSUMER, 100 * E18)):
        addr = Account.from_key(devnet_key(idx)).address
        await token.mint(f"fund:{idx}:{time.time_ns()}", addr, amount)
    await chain.close()


async def balances(rpc: str, deployment: Deployment, db_path: Path) -> dict[str, int]:
    chain = await ChainClient.connect(rpc, deployment, Database(db_path), None)
    token, escrow = Token(chain), Escrow(chain)
    p = Account.from_key(devnet_key(PROVIDER)).address
    c = Account.from_key(devnet_key(CONSUMER)).address
    out = {"provider": await token.balance(p), "consumer": await token.balance(c),
           "escrow": await token.balance(deployment.escrow), "fees": await escrow.accrued_fees(),
           "earnings": await escrow.earnings(p)}
    await chain.close()
    return out


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="gpunet-demo-"))
    procs = Processes()
    anvil = Anvil(block_time=1)
    interrupted = False
    runtime = None

    def on_sigint(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigint)
    signal.signal(signal.SIGINT, on_sigint)  # also when started with SIGINT ignored (e.g. in the background)
    try:
        console.rule("[bold]gpunet demo")
        console.print(f"work dir: {workdir}")
        anvil.start()
        console.print(f"[green]✓[/] anvil on {anvil.url}")
        dep_path = workdir / "deployments.json"
        params = DeployParams(settlement_window=4, dispute_window=10, liveness_window=10, unbonding_period=10)
        deployment = asyncio.run(deploy_all(anvil.url, devnet_key(DEPLOYER), params, out=dep_path))
        console.print(f"[green]✓[/] contracts deployed: escrow {deployment.escrow}")
        asyncio.run(fund(anvil.url, deployment, workdir / "faucet.sqlite"))
        console.print("[green]✓[/] dev wallets funded (provider 2000 gDEV, consumer 100 gDEV)")

        from node.demo_runtime import start_runtime

        service = "--service" in sys.argv[1:]  # a service lease: the container serves HTTP through a forward
        runtime = start_runtime("container" if service else os.environ.get("GPUNET_DEMO_EXECUTOR", "auto"))
        console.print(f"[green]✓[/] jobs run with the {runtime.description}")
        pdir, cdir = workdir / "provider", workdir / "consumer"
        write_config(workdir / "provider.toml", data_dir=pdir, rpc=anvil.url, deployments=dep_path,
                     account=PROVIDER, provider=True, bootstrap=[], executor=runtime.provider_toml())
        py = [sys.executable, "-m", "node.cli", "run", "--log-level", "INFO", "--config"]
        procs.start("provider node", [*py, str(workdir / "provider.toml")], workdir / "provider.log")
        pinfo = wait(lambda: json.loads((pdir / "node.json").read_text()) if (pdir / "node.json").exists()
                     else procs.check(), 60, "the provider node to start")
        console.print(f"[green]✓[/] provider node {pinfo['peer_id'][:16]}… staked, registered, API {pinfo['api']}")
        before = asyncio.run(balances(anvil.url, deployment, workdir / "ro.sqlite"))
        write_config(workdir / "consumer.toml", data_dir=cdir, rpc=anvil.url, deployments=dep_path,
                     account=CONSUMER, provider=False, bootstrap=[pinfo["addrs"][0]])
        procs.start("consumer node", [*py, str(workdir / "consumer.toml")], workdir / "consumer.log")
        cinfo = wait(lambda: json.loads((cdir / "node.json").read_text()) if (cdir / "node.json").exists()
                     else procs.check(), 60, "the consumer node to start")
        console.print(f"[green]✓[/] consumer node {cinfo['peer_id'][:16]}… API {cinfo['api']}")
        t0 = time.monotonic()
        offers = wait(lambda: http(f"{cinfo['api']}/v1/offers?min_gpus=1")["offers"], 30,
                      "the provider's offer to reach the consumer")
        offer = offers[0]
        console.print(f"[green]✓[/] offer reached the consumer in {time.monotonic() - t0:.2f}s: "
                      f"{offer['gpu_count']}x {offer['gpu_model']} (simulated={offer['simulated']}) at "
                      f"{int(offer['price_per_gpu_second']) / E18:g} gDEV/GPU·s")
        token = (cdir / "api-token").read_text().strip()
        deposit = PRICE * 2 * 600  # 2 GPUs for up to 10 minutes
        t_open = time.monotonic()
        lease = http(f"{cinfo['api']}/v1/leases", {"offer_id": offer["offer_id"], "gpus": 2, "deposit": str(deposit),
                                                   "job": ({**runtime.job(SERVICE_SCRIPT, [], 600), "ports": [8080]}
                                                           if service else runtime.job(CONTAINER_SCRIPT, JOB))},
                     token)
        lid = lease["lease_id"]
        console.print(f"[green]✓[/] lease {lid} opened on-chain, deposit {deposit / E18:g} gDEV")
        wait(lambda: any(x["lease_id"] == lid and x.get("job_running") for x in http(f"{pinfo['api']}/v1/leases")
                         ["leases"]) or procs.check(), 30, "the provider to start the job")
        console.print(f"[green]✓[/] provider running the job ({runtime.executor} executor) "
                      f"{time.monotonic() - t_open:.2f}s after the open command")
        if service:
            fwd = http(f"{cinfo['api']}/v1/leases/{lid}/forwards", {"container_port": 8080, "wait": 30}, token)
            console.print(f"[green]✓[/] forward {fwd['local']} -> the container's port 8080 (over libp2p, "
                          "nothing published on the provider)")
            with urllib.request.urlopen(f"http://{fwd['local']}/index.html", timeout=30) as resp:
                console.print(f"[green]✓[/] GET http://{fwd['local']}/index.html -> {resp.status}: "
                              f"{resp.read().decode().strip()!r}")
        seen = (0, 0, 0)

        def progress() -> bool:
            procs.check()
            v = http(f"{cinfo['api']}/v1/leases/{lid}")
            nonlocal seen
            now = (v["heartbeats"], v["accepted_seq"], v["settled_seq"])
            if now != seen:
                seen = now
                console.print(f"  heartbeats {v['heartbeats']:3d} · checkpoints accepted {v['accepted_seq']:2d} "
                              f"({v['accepted_gpu_seconds']} GPU·s) · settled seq {v['settled_seq']:2d} · "
                              f"paid {int(v['paid']) / E18:g} gDEV · rejected {v['rejected_checkpoints']}")
            return (("job_result" in v or service) and v["settled_seq"] >= 1
                    and v["settled_gpu_seconds"] == v["accepted_gpu_seconds"] > 0)

        wait(progress, 90, "the job to finish and its usage to be settled", interval=0.5)
        v = http(f"{cinfo['api']}/v1/leases/{lid}")
        if not service:
            digest = v["job_result"].get("image_digest")
            console.print(f"[green]✓[/] job finished, exit code {v['job_result']['exit_code']}"
                          + (f", image {digest}" if digest else "") + "; output tail:")
            for line in v["job_result"]["log_tail"].strip().splitlines()[-4:]:
                console.print(f"    [dim]{line}[/]")
        http(f"{cinfo['api']}/v1/leases/{lid}/close", {}, token)
        console.print("[green]✓[/] consumer closed the lease; waiting for the final settlement window")
        wait(lambda: progress() is not None and http(f"{cinfo['api']}/v1/leases/{lid}")["status"] == "FINALIZED",
             90, "finalization and refund", interval=0.5)
        v = http(f"{cinfo['api']}/v1/leases/{lid}")
        console.print(f"[green]✓[/] lease finalized, refund {int(v['refund']) / E18:g} gDEV to the consumer")
        wait(lambda: asyncio.run(balances(anvil.url, deployment, workdir / "ro.sqlite"))["earnings"] == 0, 30,
             "the provider to withdraw its earnings")
        after = asyncio.run(balances(anvil.url, deployment, workdir / "ro.sqlite"))
        console.print("[green]✓[/] provider withdrew its earnings")
        summary(before, after, v, http(f"{cinfo['api']}/v1/status")["gas"], http(f"{pinfo['api']}/v1/status")["gas"])
        return 0
    except KeyboardInterrupt:
        interrupted = True
        console.print("\n[yellow]interrupted: stopping every process started by the demo[/]")
        return 130
    except Exception as exc:
        console.print(f"[red]demo failed:[/] {exc}")
        for name in ("provider", "consumer"):
            log_path = workdir / f"{name}.log"
            if log_path.exists():
                console.print(f"[dim]--- last lines of {log_path}[/]")
                for line in log_path.read_text(errors="replace").splitlines()[-15:]:
                    console.print(f"[dim]{line}[/]", highlight=False)
        return 1
    finally:
        procs.stop_all()
        anvil.stop()
        if runtime is not None:
            runtime.stop()
        if not interrupted:
            console.print(f"[dim]logs and node data kept in {workdir}[/]")


def summary(before: dict[str, int], after: dict[str, int], lease: dict[str, Any], cgas: list[dict[str, Any]],
            pgas: list[dict[str, Any]]) -> None:
    paid = int(lease["paid"])
    fees = after["fees"] - before["fees"]
    t = Table(title="Who paid whom (gDEV)")
    t.add_column("")
    t.add_column("amount", justify="right")
    t.add_row("consumer paid for usage", f"{paid / E18:.6f}")
    t.add_row("  of which protocol fee (treasury)", f"{fees / E18:.6f}")
    t.add_row("provider received", f"{(after['provider'] - before['provider']) / E18:.6f}")
    t.add_row("consumer refunded", f"{int(lease['refund']) / E18:.6f}")
    t.add_row("consumer balance change", f"{(after['consumer'] - before['consumer']) / E18:.6f}")
    t.add_row("GPU-seconds settled", str(lease["settled_gpu_seconds"]))
    console.print(t)
    g = Table(title="Gas used (receipts)")
    g.add_column("who")
    g.add_column("transaction")
    g.add_column("gas", justify="right")
    for who, rows in (("consumer", cgas), ("provider", pgas)):
        for r in rows:
            g.add_row(who, r["kind"], str(r["gas"]))
    console.print(g)
    ok = after["consumer"] - before["consumer"] == -paid and after["provider"] - before["provider"] == paid - fees
    console.print("[bold green]balances reconcile to the wei[/]" if ok else "[bold red]balances do not reconcile[/]")


if __name__ == "__main__":
    sys.exit(main())
