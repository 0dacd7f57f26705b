"""A network partition between node processes, and its healing.

Each node runs as its own process in its own network namespace, joined to the others by a bridge (see
``netlab``); the chain is reachable from every namespace through the chain proxy on the bridge address. Two
providers, one on each side, re-announce their offers every few seconds. The bridge then drops every frame between
the two groups: each side keeps seeing its own provider's new offers and not the other's (the books diverge).
After healing, the books converge again (same offers everywhere, including offers announced during the split).
Needs root (network namespaces); elsewhere the test is skipped with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from node.chain.anvil import REPO_ROOT
from tests.integration.conftest import E18, PRICE, Devnet

from .chainproxy import ChainProxy
from .conftest import size
from .netlab import NetLab, netns_unavailable_reason

pytestmark = [pytest.mark.fault, pytest.mark.integration]

OFFER_TTL = 12  # providers re-announce every max(5, ttl / 2) = 6 s
HOLD_S = size(0.0, 40.0)  # partition held this long after the books diverged (the full run outlasts timeouts)
# (name, dev account, provider, group); the first of each group is its provider
NODES = size(
    [("pa", 1, True, "A"), ("a1", 2, False, "A"), ("pb", 3, True, "B"), ("b1", 4, False, "B")],
    [("pa", 1, True, "A"), ("a1", 2, False, "A"), ("a2", 5, False, "A"), ("pb", 3, True, "B"),
     ("b1", 4, False, "B"), ("b2", 6, False, "B"), ("b3", 7, False, "B")],
)


def _config(path: Path, data_dir: Path, rpc: str, deployments: Path, account: int, provider: bool, ip: str,
            bootstrap: list[str]) -> None:
    lines = [
        f'data_dir = "{data_dir}"', f'rpc_url = "{rpc}"', f'deployments = "{deployments}"', f"dev_account = {account}",
        f'listen = ["/ip4/{ip}/tcp/4001"]', "bootstrap = [" + ", ".join(f'"{b}"' for b in bootstrap) + "]",
        "poll_interval = 0.5", "", "[provider]", f"enabled = {'true' if provider else 'false'}",
        'declared_gpus = "1xSIM-A100:40960"', f"price_per_gpu_second = {PRICE}", "min_duration = 5",
        "max_duration = 3600", f"offer_ttl = {OFFER_TTL}", f"stake = {1000 * E18}", 'executor = "process"',
    ]
    path.write_text("\n".join(lines) + "\n")


class Cluster:
    def __init__(self, lab: NetLab, tmp: Path) -> None:
        self.lab, self.tmp = lab, tmp
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.info: dict[str, dict[str, Any]] = {}
        self.host: dict[str, int] = {}

    def start(self, idx: int, name: str, cfg: Path) -> None:
        self.host[name] = idx
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
        self.procs[name] = subprocess.Popen(
            [*self.lab.exec_prefix(idx), sys.executable, "-m", "node.cli", "run", "--config", str(cfg)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO_ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})

    async def started(self, name: str, data_dir: Path, timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not (data_dir / "node.json").exists():
            if self.procs[name].poll() is not None:
                raise AssertionError(f"node {name} exited: {self.log_tail(name)}")
            if time.monotonic() > deadline:
                raise AssertionError(f"node {name} did not start: {self.log_tail(name)}")
            await asyncio.sleep(0.1)
        self.info[name] = json.loads((data_dir / "node.json").read_text())
        return self.info[name]

    def log_tail(self, name: str) -> str:
        return "\n".join((self.tmp / f"{name}.log").read_text(errors="replace").splitlines()[-15:])

    async def get(self, name: str, path: str) -> Any:
        """GET the node's API from inside its namespace (the API listens on that namespace's loopback only)."""
        proc = await asyncio.create_subprocess_exec(
            *self.lab.exec_prefix(self.host[name]), "curl", "-sf", "--max-time", "5",
            f"{self.info[name]['api']}{path}", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise AssertionError(f"GET {path} on {name} failed (curl {proc.returncode})")
        return json.loads(out)

    async def books(self) -> dict[str, dict[str, set[str]]]:
        """Each node's live offer ids, by provider address."""
        out: dict[str, dict[str, set[str]]] = {}
        for name in self.procs:
            by_provider: dict[str, set[str]] = {}
            for o in (await self.get(name, "/v1/offers?limit=1000"))["offers"]:
                by_provider.setdefault(o["provider"], set()).add(o["offer_id"])
            out[name] = by_provider
        return out

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)


async def _until(cond: Any, timeout: float, what: str, interval: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


async def test_books_diverge_in_a_partition_and_converge_after_healing(devnet: Devnet, tmp_path: Path) -> None:
    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(f"partition test needs network namespaces: {reason}")
    lab = NetLab(len(NODES)).open()
    proxy = await ChainProxy(devnet.anvil.url, host=lab.gateway).start()
    cluster = Cluster(lab, tmp_path)
    try:
        addr: dict[str, str] = {}
        group = {name: g for name, _, _, g in NODES}
        for idx, (name, account, provider, _) in enumerate(NODES):
            # each side is a chain behind its provider; the B provider also dials the A provider (the only link
            # across, until the meshes fill in through peer exchange)
            if idx == 0:
                boot: list[str] = []
            elif provider:
                boot = [addr["pa"]]
            else:
                boot = [addr[NODES[idx - 1][0]]]
            data_dir = tmp_path / name
            cfg = tmp_path / f"{name}.toml"
            _config(cfg, data_dir, proxy.url, devnet.deployments_file, account, provider, lab.ip(idx), boot)
            cluster.start(idx, name, cfg)
            info = await cluster.started(name, data_dir)
            addr[name] = info["addrs"][0]
            if provider:
                addr[f"{name}-wallet"] = info["address"]
        pa, pb = addr["pa-wallet"], addr["pb-wallet"]

        def converged(books: dict[str, dict[str, set[str]]]) -> bool:
            first = next(iter(books.values()))
            return all(b == first for b in books.values()) and all(first.get(p) for p in (pa, pb))

        async def all_converged() -> dict[str, dict[str, set[str]]] | None:
            books = await cluster.books()
            return books if converged(books) else None

        await _until(all_converged, 60, "every book to hold both providers' offers")

        side_a = [i for i, n in enumerate(NODES) if n[3] == "A"]
        side_b = [i for i, n in enumerate(NODES) if n[3] == "B"]
        lab.partition(side_a, side_b)
        split_at = time.monotonic()

        async def diverged() -> bool:
            books = await cluster.books()
            a_view = {n: b for n, b in books.items() if group[n] == "A"}
            b_view = {n: b for n, b in books.items() if group[n] == "B"}
            # each side has its own provider's newest offer that the other side lacks
            new_a = set.union(*(b.get(pa, set()) for b in a_view.values())) - set.union(
                *(b.get(pa, set()) for b in b_view.values()))
            new_b = set.union(*(b.get(pb, set()) for b in b_view.values())) - set.union(
                *(b.get(pb, set()) for b in a_view.values()))
            return bool(new_a and new_b)

        await _until(diverged, 4 * OFFER_TTL, "the two sides' books to diverge")
        if HOLD_S:
            await _until(lambda: _passed(split_at, HOLD_S), HOLD_S + 5, "the partition's end")
        # both sides kept answering and kept the chain during the split
        for name in cluster.procs:
            status = await cluster.get(name, "/v1/status")
            assert status["chain"]["rpc"] == "up", (name, status["chain"])
        lab.heal()
        healed_at = time.monotonic()
        books = await _until(all_converged, 3 * OFFER_TTL + 20, "the books to converge after healing")
        converge_s = time.monotonic() - healed_at
        print(f"partition held {healed_at - split_at:.1f}s; books converged {converge_s:.1f}s after healing; "
              f"{sum(len(v) for v in next(iter(books.values())).values())} offers")
        for name, p in cluster.procs.items():
            assert p.poll() is None, f"node {name} died: {cluster.log_tail(name)}"
    finally:
        cluster.stop()
        await proxy.stop()
        lab.close()


async def _passed(since: float, seconds: float) -> bool:
    return time.monotonic() - since >= seconds
