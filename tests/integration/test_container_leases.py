"""Container jobs through the lease, end to end: real anvil, real libp2p nodes, a real Podman service.

The consumer's job spec (version 2) names a busybox image built locally; the provider runs it with the container
executor, streams its output over the lease stream while it runs, and reports the image digest it ran. A job
beyond a cap and an image that is not allowed reach the consumer as distinct outcomes; a provider killed while
its containers run takes them over at its next start: a job still running goes on (its output streams again, its
real end reaches the consumer), one that ended meanwhile reports its real exit status.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from node.config import NodeConfig
from node.protocol.lease_messages import MAX_LOG_CHUNK_BYTES
from node.service import Node

from .conftest import CONSUMER, E18, PRICE, PROVIDER, node_config, until
from .conftest_containers import PodmanService, podman_service  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def provider_config(devnet: Any, data_dir: Path, podman: PodmanService, **provider: Any) -> NodeConfig:
    cfg = node_config(devnet, data_dir, account=PROVIDER, provider=True)
    pc = replace(cfg.provider, executor="container", container_socket=str(podman.socket_path),
                 allowed_images=("localhost/gpunet-test/",), max_memory_mib=256, max_cpus=2.0, max_shm_mib=64,
                 max_scratch_mib=64, allow_unsafe_process_executor=False, **provider)
    return replace(cfg, provider=pc)


def container_job(script: str, **extra: Any) -> dict[str, Any]:
    return {"version": 2, "image": "localhost/gpunet-test/busybox:latest", "command": ["sh", "-c", script],
            "timeout_s": 120, **extra}


async def started(cfg: NodeConfig) -> Node:
    node = Node(cfg)
    await node.start()
    return node


async def offer_of(consumer: Node, provider_address: str) -> dict[str, Any]:
    offers = await until(lambda: [o for o in consumer.query_offers({}) if o["provider"] == provider_address], 30,
                         "the provider's offer in the consumer's book")
    return offers[0]


async def open_lease(consumer: Node, offer: dict[str, Any], job: dict[str, Any], gpus: int = 1) -> int:
    lease = await consumer.open_lease({"offer_id": offer["offer_id"], "gpus": gpus,
                                       "deposit": str(PRICE * gpus * 600), "job": job})
    return int(lease["lease_id"])


def token_of(node: Node) -> str:
    return (Path(node.cfg.data_dir) / "api-token").read_text().strip()


async def follow_logs(node: Node, lid: int, seen: list[tuple[float, dict[str, Any] | None]]) -> None:
    """Read the lease's log event stream until its end event; each chunk with the time it arrived and whether
    the consumer had the job result then."""
    headers = {"Authorization": f"Bearer {token_of(node)}"}
    async with aiohttp.ClientSession() as http, http.get(f"{node.api_url}/v1/leases/{lid}/logs?follow=1",
                                                         headers=headers) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
        event = ""
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "log":
                chunk = json.loads(line[6:])
                chunk["result_known"] = (node.lease(lid) or {}).get("job_result") is not None
                seen.append((time.monotonic(), chunk))
            elif line.startswith("data: ") and event == "end":
                seen.append((time.monotonic(), None))
                return


async def test_container_job_output_arrives_live_intact_and_the_digest_is_reported(nodes, devnet, podman_service):  # noqa: F811
    provider = await started(provider_config(devnet, Path(devnet.tmp) / "cp1", podman_service))
    try:
        consumer = await nodes("consumer", account=CONSUMER, bootstrap=(provider.p2p.listen_addrs[0],))
        offer = await offer_of(consumer, provider.address)
        bar = "\\342\\226\\210"  # U+2588 FULL BLOCK in UTF-8, 3 bytes
        script = ("for i in 1 2 3 4 5 6; do echo line-$i; sleep 0.5; done; printf 'bad:\\377\\376:end\\n'; "
                  f"i=0; while [ $i -lt 8000 ]; do printf '{bar}'; i=$((i+1)); done; echo; echo done")
        lid = await open_lease(consumer, offer, container_job(script))
        seen: list[tuple[float, dict[str, Any] | None]] = []
        await asyncio.wait_for(follow_logs(consumer, lid, seen), 90)

        chunks = [c for _, c in seen if c is not None]
        text = "".join(c["text"] for c in chunks)
        first = next(c for c in chunks if "line-1" in c["text"])
        assert not first["result_known"], "line-1 reached the consumer only after the job had ended"
        assert [c["seq"] for c in chunks] == list(range(len(chunks)))  # in order, none lost
        assert all(c["dropped"] == 0 for c in chunks)
        assert all(len(c["text"].encode()) <= MAX_LOG_CHUNK_BYTES for c in chunks)
        assert text.startswith("line-1\nline-2\n") and "line-6\n" in text
        assert "bad:\ufffd\ufffd:end\n" in text  # bytes that are not UTF-8 arrive as U+FFFD, the rest intact
        assert "\u2588" * 8000 + "\ndone\n" in text  # the multi-byte progress bar, cut across chunks, intact

        result = await until(lambda: (consumer.lease(lid) or {}).get("job_result"), 30, "the job result")
        assert result["exit_code"] == 0 and result["failure"] is None
        digest = provider.lease(lid)["job_result"]["image_digest"]
        ran = podman_service.podman("image", "inspect", "--format", "{{.Digest}}", podman_service.image)
        assert ran.stdout.strip().startswith("sha256:")
        assert result["image_digest"] == digest and digest.endswith("@" + ran.stdout.strip())

        # the same output through the JSON form, as kept by the consumer's node
        headers = {"Authorization": f"Bearer {token_of(consumer)}"}
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{consumer.api_url}/v1/leases/{lid}/logs", headers=headers) as resp:
                page = await resp.json()
            async with http.get(f"{consumer.api_url}/v1/leases/{lid}/logs") as resp:
                assert resp.status == 401  # output may hold secrets: the token is needed
        assert page["done"] and "".join(c["text"] for c in page["chunks"]) == text
        # and through the CLI, kept and followed (the job has ended: follow prints everything, then stops)
        from click.testing import CliRunner

        from node.cli import main as cli

        for extra in ([], ["-f"]):
            out = await asyncio.to_thread(CliRunner().invoke, cli, ["lease", "logs", str(lid), *extra, "--data-dir",
                                                                    str(consumer.cfg.data_dir)])
            assert out.exit_code == 0, out.output
            assert out.stdout == text
        await consumer.close_lease(lid)
    finally:
        await provider.stop()


async def test_twenty_mib_of_output_is_bounded_and_the_lease_unharmed(nodes, devnet, podman_service):  # noqa: F811
    provider = await started(provider_config(devnet, Path(devnet.tmp) / "cp2", podman_service))
    try:
        consumer = await nodes("consumer", account=CONSUMER, bootstrap=(provider.p2p.listen_addrs[0],))
        offer = await offer_of(consumer, provider.address)
        began = time.monotonic()
        lid = await open_lease(consumer, offer, container_job(
            "dd if=/dev/zero bs=1048576 count=20 2>/dev/null | tr '\\0' 'a'; echo; sleep 2; echo tail-end"))
        result = await until(lambda: (consumer.lease(lid) or {}).get("job_result"), 120, "the job result")
        elapsed = time.monotonic() - began
        assert result["exit_code"] == 0 and result["failure"] is None
        assert result["log_tail"].endswith("tail-end\n")
        store = consumer.engine.store
        chunks = store.logs(lid, -1, 100_000)
        kept = sum(len(c.text.encode()) for c in chunks)
        assert 0 < kept <= 8 * 1024 * 1024  # the consumer keeps at most 8 MiB per lease, the newest
        assert chunks[-1].text.endswith("tail-end\n")
        assert set("".join(c.text for c in chunks[:-1]).replace("\n", "")) <= {"a"}
        view = consumer.lease(lid)
        assert view["status"] == "OPEN" and view["rejected_checkpoints"] == 0
        before = view["heartbeats"]
        await until(lambda: consumer.lease(lid)["heartbeats"] > before, 20, "heartbeats to go on")
        print(f"\n20 MiB job: result after {elapsed:.1f}s, the consumer kept {kept / 2**20:.1f} MiB")
        await consumer.close_lease(lid)
    finally:
        await provider.stop()


async def test_a_job_beyond_a_cap_and_an_image_not_allowed_are_distinct_outcomes(nodes, devnet, podman_service):  # noqa: F811
    provider = await started(provider_config(devnet, Path(devnet.tmp) / "cp3", podman_service))
    try:
        consumer = await nodes("consumer", account=CONSUMER, bootstrap=(provider.p2p.listen_addrs[0],))
        offer = await offer_of(consumer, provider.address)
        big = await open_lease(consumer, offer, container_job("echo hi", resources={"memory_bytes": 512 * 2**20}))
        refused = await until(lambda: (consumer.lease(big) or {}).get("job_result"), 60, "the refusal")
        assert refused["failure"] == "job_refused"
        assert "memory_bytes" in refused["log_tail"] and str(256 * 2**20) in refused["log_tail"]

        other = await open_lease(consumer, offer, {**container_job("echo hi"),
                                                   "image": "docker.io/library/alpine:3.19"})
        denied = await until(lambda: (consumer.lease(other) or {}).get("job_result"), 60, "the outcome")
        assert denied["failure"] == "image_not_allowed" and denied["exit_code"] != 0
        assert "alpine" in denied["log_tail"]
        for lid in (big, other):
            await consumer.close_lease(lid)
    finally:
        await provider.stop()


def _write_provider_toml(path: Path, devnet: Any, data_dir: Path, podman: PodmanService) -> None:
    lines = [f'data_dir = "{data_dir}"', f'rpc_url = "{devnet.anvil.url}"',
             f'deployments = "{devnet.deployments_file}"', f"dev_account = {PROVIDER}",
             'listen = ["/ip4/127.0.0.1/tcp/0"]', "poll_interval = 0.2", "", "[provider]", "enabled = true",
             'declared_gpus = "2xSIM-A100:40960"', f"price_per_gpu_second = {PRICE}", "min_duration = 5",
             "max_duration = 3600", "offer_ttl = 600", f"stake = {1000 * E18}", "heartbeat_interval = 0.5",
             "checkpoint_interval = 1.5", 'executor = "container"', f'container_socket = "{podman.socket_path}"',
             'allowed_images = ["localhost/gpunet-test/"]']
    path.write_text("\n".join(lines) + "\n")


def _start_provider(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "node.cli", "run", "--log-level", "INFO", "--config", str(cfg)],
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT, cwd=REPO,
                            start_new_session=True)


def _info(data_dir: Path, since: float) -> dict[str, Any] | None:
    path = data_dir / "node.json"
    if not path.exists() or path.stat().st_mtime < since:
        return None
    return dict(json.loads(path.read_text()))


def _job_containers(podman: PodmanService) -> list[str]:
    out = podman.podman("ps", "-a", "--filter", "label=gpunet.lease", "--format", "{{.ID}}")
    return [line for line in out.stdout.split() if line]


def _state_of_lease_container(podman: PodmanService, lid: int) -> str:
    """``running``, ``exited``, ... of the lease's job container; "" when there is none."""
    cid = podman.podman("ps", "-a", "--filter", f"label=gpunet.lease={lid}", "--format", "{{.ID}}").stdout.strip()
    if not cid:
        return ""
    return podman.podman("inspect", "--format", "{{.State.Status}}", cid).stdout.strip()


def _tell_to_stop(podman: PodmanService, lid: int) -> None:
    cid = podman.podman("ps", "--filter", f"label=gpunet.lease={lid}", "--format", "{{.ID}}").stdout.strip()
    done = podman.podman("exec", cid, "touch", "/tmp/stop")
    assert done.returncode == 0, done.stderr


def _ticks(consumer: Node, lid: int) -> list[int]:
    text = "".join(c.text for c in consumer.engine.store.logs(lid, -1, 10_000))
    return [int(word[5:]) for word in text.split() if word.startswith("tick-")]


async def test_provider_killed_while_jobs_run_takes_them_over_at_restart_and_the_consumer_sees_them_through(
        nodes, devnet, podman_service):  # noqa: F811
    data_dir = Path(devnet.tmp) / "cp4"
    data_dir.mkdir()
    cfg, log = data_dir.parent / "cp4.toml", data_dir.parent / "cp4.log"
    _write_provider_toml(cfg, devnet, data_dir, podman_service)
    t0 = time.time()
    proc = _start_provider(cfg, log)
    try:
        info = await until(lambda: _info(data_dir, t0), 60, "the provider node to start")
        consumer = await nodes("consumer", account=CONSUMER, bootstrap=(info["addrs"][0],))
        offer = await offer_of(consumer, info["address"])
        # runs until told to stop (a file in its scratch), printing a counter
        long = await open_lease(consumer, offer, container_job(
            "i=0; while [ ! -e /tmp/stop ]; do echo tick-$i; i=$((i+1)); sleep 0.3; done; echo bye; exit 3"))
        # ends by itself once the provider is down
        short = await open_lease(consumer, offer, container_job(
            "echo started; while [ ! -e /tmp/stop ]; do sleep 0.2; done; echo b-done; exit 7"))
        await until(lambda: len(_ticks(consumer, long)) > 2, 60, "the long job to run in its container")
        await until(lambda: any("started" in c.text for c in consumer.engine.store.logs(short)), 60,
                    "the short job to run in its container")
        assert sorted(_state_of_lease_container(podman_service, lid) for lid in (long, short)) == ["running"] * 2
        beats = consumer.lease(long)["heartbeats"]

        os.killpg(proc.pid, signal.SIGKILL)  # a crash: the containers outlive the node
        proc.wait(timeout=10)
        last_seen = max(_ticks(consumer, long))
        _tell_to_stop(podman_service, short)
        await until(lambda: _state_of_lease_container(podman_service, short) == "exited", 30,
                    "the short job to end while the provider is down")
        assert _state_of_lease_container(podman_service, long) == "running"

        t1 = time.time()
        proc = _start_provider(cfg, log)
        await until(lambda: _info(data_dir, t1), 60, "the provider node to start again")
        # the job that ended meanwhile: its real exit status, not "provider_restarted"
        ended = await until(lambda: (consumer.lease(short) or {}).get("job_result"), 60, "the short job's result")
        assert ended["failure"] is None and ended["exit_code"] == 7 and ended["log_tail"].endswith("b-done\n")
        # the job still running was taken over: its output after the restart arrives live, the lease goes on
        await until(lambda: max(_ticks(consumer, long), default=-1) > last_seen + 5, 60,
                    "output printed after the restart")
        assert consumer.lease(long).get("job_result") is None
        assert _state_of_lease_container(podman_service, long) == "running"
        await until(lambda: consumer.lease(long)["heartbeats"] > beats + 2, 30, "heartbeats after the restart")
        _tell_to_stop(podman_service, long)
        result = await until(lambda: (consumer.lease(long) or {}).get("job_result"), 60, "the long job's result")
        assert result["exit_code"] == 3 and result["failure"] is None and result["log_tail"].endswith("bye\n")
        assert result["image_digest"].startswith("localhost/gpunet-test/busybox@sha256:")
        view = consumer.lease(long)
        assert view["status"] == "OPEN" and view["rejected_checkpoints"] == 0
        await until(lambda: _job_containers(podman_service) == [], 30, "the ended jobs' containers to be removed")
        for lid in (long, short):
            await consumer.close_lease(lid)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
