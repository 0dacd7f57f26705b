"""A provider restarted while its lease's job runs: an executor whose jobs outlive the node (containers) has the job
taken over and the lease goes on; one whose jobs end with the node reports them ended by the restart."""

from __future__ import annotations

from collections.abc import Sequence

from node.protocol import lease as L
from node.provider.executor import ExecJob, OutputCallback, ReattachingExecutor
from node.provider.gpus import GpuDevice
from node.provider.log_stream import resumed_first_seq
from node.types import LeaseId

from .fakes import GPUS, OFFER_ID, PRICE, FakeExecutor, FakeJob, World, quiesce

DEPOSIT = PRICE * GPUS * 60


class OutlivingExecutor(FakeExecutor):
    """Its jobs outlive the node (as containers do): a restarted node can take them over."""

    def __init__(self) -> None:
        super().__init__()
        self.outputs: dict[int, OutputCallback | None] = {}
        self.reattached: list[tuple[int, ExecJob]] = []
        self.calls: list[str] = []

    async def start(self, lease_id: LeaseId, job: ExecJob, devices: Sequence[GpuDevice], *,
                    on_output: OutputCallback | None = None) -> FakeJob:
        self.outputs[lease_id] = on_output
        return await super().start(lease_id, job, devices, on_output=on_output)

    async def reattach(self, lease_id: LeaseId, job: ExecJob, devices: Sequence[GpuDevice] = (), *,
                       on_output: OutputCallback | None = None) -> FakeJob | None:
        self.calls.append("reattach")
        for lid, handle in self.jobs:
            if lid == lease_id and handle.running:
                self.reattached.append((lid, job))
                self.outputs[lid] = on_output
                return handle
        return None

    async def cleanup_orphans(self) -> list[object]:
        self.calls.append("cleanup_orphans")
        return []


async def run_a_while(world: World, beats: int = 3) -> None:
    for _ in range(beats):
        world.advance(2)
        await world.serve()
    await quiesce()


def usage(world: World, lid: int) -> int:
    side = world.provider.leases[(lid, "provider")].state.provider
    assert side is not None
    return side.meter.gpu_seconds


async def test_a_job_running_when_the_provider_restarts_is_taken_over_and_the_lease_goes_on(tmp_path):
    world = World(tmp_path)
    executor = world.executor = OutlivingExecutor()
    assert isinstance(executor, ReattachingExecutor) and not isinstance(FakeExecutor(), ReattachingExecutor)
    await world.start()
    lid = int((await world.consumer.open_lease(OFFER_ID, GPUS, DEPOSIT, {"argv": ["train"], "timeout_s": 900}))
              ["lease_id"])
    await world.deliver()
    await run_a_while(world)
    before = usage(world, lid)
    assert before > 0

    await world.restart("provider")  # the node died; the job did not
    await quiesce()
    assert [(lid_, job.argv, job.timeout_s) for lid_, job in executor.reattached] == [(lid, ("train",), 900.0)]
    # what else a previous run left is removed, after the take-over (the first start had nothing to take over)
    assert executor.calls == ["cleanup_orphans", "reattach", "cleanup_orphans"]
    rec = world.provider.leases[(lid, "provider")]
    assert rec.job is executor.jobs[0][1] and rec.job_running
    assert rec.state.provider is not None and rec.state.provider.job is L.JobPhase.RUNNING
    assert "job_reattached" in [n["notice"] for n in world.provider.notices if n["lease_id"] == lid]
    assert len(executor.jobs) == 1  # taken over, not started again

    on_output = executor.outputs[lid]
    assert on_output is not None
    await on_output(b"epoch 7\n")  # output from now on reaches the consumer
    await run_a_while(world)
    assert usage(world, lid) > before + 2 * GPUS * 2  # metered as running
    c = world.consumer.lease_detail(lid)
    assert c is not None and c.get("job_result") is None and c["rejected_checkpoints"] == 0
    chunks = world.consumer.store.logs(lid)
    assert chunks[-1].text == "epoch 7\n" and chunks[-1].seq >= resumed_first_seq(world.clock.ms - 60_000)

    executor.jobs[0][1].finish(b"epoch 7\nsaved\n", exit_code=3)  # the job ends by itself
    await quiesce()
    await run_a_while(world, 1)
    result = world.consumer.lease_detail(lid)["job_result"]
    assert result["exit_code"] == 3 and result["failure"] is None and result["log_tail"].endswith("saved\n")
    await world.provider.stop()
    await world.consumer.stop()


async def test_a_job_of_an_executor_whose_jobs_end_with_the_node_is_reported_ended_by_the_restart(tmp_path):
    world = World(tmp_path)
    await world.start()
    view = await world.consumer.open_lease(OFFER_ID, GPUS, DEPOSIT, {"argv": ["train"]})
    lid = int(view["lease_id"])
    await world.deliver()
    await run_a_while(world)
    await world.restart("provider")
    await quiesce()
    await run_a_while(world, 1)
    result = world.consumer.lease_detail(lid)["job_result"]
    assert result["failure"] == "provider_restarted"
    assert not world.provider.leases[(lid, "provider")].job_running
    await world.provider.stop()
    await world.consumer.stop()
