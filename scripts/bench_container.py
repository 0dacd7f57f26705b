#!/usr/bin/env python3
"""Benchmark of the container executor (figures for the notes, not a timed test).

* start → running: from ``ContainerExecutor.start`` to the container running, p50/p90 over ``--jobs`` jobs with a
  local image, next to the simulated executor's start in the same run;
* node RSS per running container: this process's resident memory with ``--jobs`` containers running, less
  before, per container (the runtime's own processes, e.g. conmon, are not counted);
* log streaming: a job prints ``--log-mib`` MiB; bytes per second through ``on_output`` and this process's peak
  RSS growth while it streams (the goal: >= 1 MiB/s with memory bounded).

Runs against ``--socket`` (Docker or Podman) with ``--image``, or, by default, against a private Podman service
with a busybox image it builds (needs root, podman, runc, busybox-static: ``scripts/setup`` installs them).

    .venv/bin/python scripts/bench_container.py [--jobs 10] [--log-mib 64] [--socket PATH --image REF]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.provider.container import ContainerExecutor, ContainerSettings
from node.provider.executor import ExecJob, JobResources, SimulatedExecutor
from node.types import LeaseId

MiB = 1024**2


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def bench(socket_path: Path, image: str, jobs: int, log_mib: int) -> None:
    settings = ContainerSettings(node_id="bench", default_image=image, allowed_images=None,
                                 defaults=JobResources(memory_bytes=256 * MiB, cpus=1.0, shm_bytes=16 * MiB,
                                                       scratch_bytes=16 * MiB),
                                 stop_grace_s=1)
    executor = await ContainerExecutor.connect(socket_path, settings)
    try:
        await executor.cleanup_orphans()
        print(f"runtime: {executor.runtime.describe()}")

        # start -> running, one job at a time (each stopped before the next), then the simulated executor.
        latencies = []
        for i in range(jobs):
            t0 = time.perf_counter()
            handle = await executor.start(LeaseId(i), ExecJob(["sleep", "60"], timeout_s=120), [])
            await asyncio.wait_for(handle.started.wait(), 60)
            latencies.append(time.perf_counter() - t0)
            await handle.stop()
        simulated = SimulatedExecutor(duration_s=0.01)
        sim_latencies = []
        for i in range(jobs):
            t0 = time.perf_counter()
            sim = await simulated.start(LeaseId(i), ExecJob(["sleep", "60"]), [])
            sim_latencies.append(time.perf_counter() - t0)
            await sim.wait()
        print(f"start->running over {jobs} jobs: container p50 {statistics.median(latencies) * 1000:.0f} ms, "
              f"p90 {pct(latencies, 0.9) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms; "
              f"simulated p50 {statistics.median(sim_latencies) * 1e6:.0f} us")

        # RSS with `jobs` containers running at once.
        before = rss_bytes()
        handles = [await executor.start(LeaseId(100 + i), ExecJob(["sleep", "120"], timeout_s=300), [])
                   for i in range(jobs)]
        await asyncio.wait_for(asyncio.gather(*(h.started.wait() for h in handles)), 120)
        during = rss_bytes()
        print(f"node RSS: {before / MiB:.1f} MiB before, {during / MiB:.1f} MiB with {jobs} running containers: "
              f"{(during - before) / jobs / 1024:.0f} KiB per container")
        await asyncio.gather(*(h.stop() for h in handles))

        # Log streaming throughput with the node's memory watched.
        received = 0

        async def on_output(chunk: bytes) -> None:
            nonlocal received
            received += len(chunk)

        base = rss_bytes()
        peak = base
        total = log_mib * MiB
        t0 = time.perf_counter()
        handle = await executor.start(LeaseId(200), ExecJob(["sh", "-c", f"yes 0123456789abcdef | head -c {total}"],
                                                            timeout_s=600), [], on_output=on_output)
        while handle.running:
            peak = max(peak, rss_bytes())
            await asyncio.sleep(0.05)
        outcome = await handle.wait()
        elapsed = time.perf_counter() - t0
        assert outcome.output_bytes == total == received, (outcome, received)
        print(f"log streaming: {total / MiB:.0f} MiB in {elapsed:.2f} s = {total / MiB / elapsed:.1f} MiB/s "
              f"(including container start and stop); node RSS peak growth while streaming "
              f"{(peak - base) / MiB:.1f} MiB")
        leftover = await executor.job_containers()
        print(f"containers left: {len(leftover)}")
    finally:
        await executor.close()


@contextlib.contextmanager
def runtime(args: argparse.Namespace) -> Iterator[tuple[Path, str]]:
    if args.socket:
        yield Path(args.socket), args.image
        return
    from tests.integration.conftest_containers import podman_unavailable_reason, private_podman

    reason = podman_unavailable_reason()
    if reason is not None:
        sys.exit(f"bench_container: no private Podman service: {reason} (or pass --socket and --image)")
    with private_podman() as service:
        yield service.socket_path, service.image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--log-mib", type=int, default=64)
    parser.add_argument("--socket", help="Docker Engine API socket (default: start a private Podman service)")
    parser.add_argument("--image", default="busybox:latest", help="a local image with sh, sleep, yes, head")
    args = parser.parse_args()
    with runtime(args) as (socket_path, image):
        asyncio.run(bench(socket_path, image, args.jobs, args.log_mib))


if __name__ == "__main__":
    main()
