"""Wire interop with js-libp2p: a js peer joins the offer topic of a Python node and exchanges signed offers; an
independent js codec checks every test vector in docs/vectors.

The js peer (tests/interop/js/subscriber.mjs) uses only standard libp2p: TCP, Noise, Yamux, identify and
gossipsub with StrictSign and the default message ids. The Python node's validator here accepts exactly the
offers of the test (the full validator needs chain state; this test is about the wire).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from coincurve import PrivateKey
from eth_utils import keccak

from node.crypto.eip712 import Domain
from node.p2p.bridge import P2PNode
from node.p2p.config import P2PConfig, offers_topic
from node.protocol import offers as O
from node.types import ACCEPTED, Validation, Verdict

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

JS_DIR = Path(__file__).resolve().parents[1] / "interop" / "js"
SUBSCRIBER = JS_DIR / "subscriber.mjs"
DOMAIN = Domain(31337, "0x" + "ab" * 20)
TOPIC = offers_topic(DOMAIN.chain_id, DOMAIN.verifying_contract)
KEY = (1).to_bytes(32, "big")
STEP_S = 30.0  # deadline of each step (start, mesh, delivery)


def signed_offer_message(nonce: int) -> bytes:
    """A real gossip message: the envelope around an EIP-712 signed offer."""
    spec = O.OfferSpec(
        region="eu-west", cpu_cores=64, ram_gib=512, driver_version="550.54.15", cuda_version="12.4",
        interconnect="nvlink", benchmarks={"fp16_tflops": 989, "mem_bw_gbs": 3350}, simulated=False,
    )
    address = keccak(PrivateKey(KEY).public_key.format(compressed=False)[1:])[12:]
    offer = O.Offer(
        provider=address, nonce=nonce, gpu_model=O.gpu_model_from_name("H100-80GB"), gpu_count=8, vram_mib=81920,
        price_per_gpu_second=1_000_000, min_duration=60, max_duration=86_400, expires_at=int(time.time()) + 3600,
        spec_hash=O.spec_hash(spec),
    )
    return O.encode_offer_message(DOMAIN, O.sign_offer(offer, spec, KEY, DOMAIN))


def accept_only(*blobs: bytes):
    allowed = frozenset(blobs)

    def validate(data: bytes, sender: str) -> Validation:
        return ACCEPTED if data in allowed else Validation(Verdict.REJECT, "unexpected")

    return validate


def rejected(node: P2PNode) -> float:
    value = node.metrics.registry.get_sample_value(
        "gpunet_gossip_messages_total", {"verdict": "reject", "reason": "unexpected"}
    )
    return value or 0.0


class JsPeer:
    """``node subscriber.mjs`` as a subprocess, its stdout parsed line by line (stderr kept for failures)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: asyncio.Queue[str] = asyncio.Queue()
        self.stderr: list[str] = []
        self.peer_id = ""
        self._tasks = [asyncio.create_task(self._read_stdout()), asyncio.create_task(self._read_stderr())]

    @classmethod
    async def start(cls, addr: str, topic: str, count: int, timeout_s: float) -> JsPeer:
        node = shutil.which("node")
        if node is None:
            pytest.fail("node (Node.js) is not on PATH: run scripts/setup")
        if not (JS_DIR / "node_modules" / "libp2p").is_dir():
            pytest.fail(f"{JS_DIR / 'node_modules'} is missing: run scripts/setup")
        proc = await asyncio.create_subprocess_exec(
            node, str(SUBSCRIBER), addr, topic, str(count), str(timeout_s), cwd=JS_DIR,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "NODE_NO_WARNINGS": "1"},
        )
        return cls(proc)

    async def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            await self.lines.put(raw.decode(errors="replace").rstrip("\n"))
        await self.lines.put("")  # EOF

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.stderr.append(raw.decode(errors="replace").rstrip("\n"))

    def explain(self, what: str) -> str:
        tail = "\n".join(self.stderr[-40:])
        return f"js peer: {what} (exit code {self.proc.returncode}); its stderr:\n{tail}"

    async def expect(self, prefix: str, deadline: float) -> str:
        """The first stdout line starting with ``prefix`` (earlier lines of other kinds are skipped)."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(self.explain(f"no {prefix!r} line in time"))
            try:
                line = await asyncio.wait_for(self.lines.get(), left)
            except TimeoutError:
                continue
            if line == "":
                await self.proc.wait()
                raise AssertionError(self.explain(f"exited before printing {prefix!r}"))
            if line == prefix or line.startswith(prefix + " "):
                return line[len(prefix) + 1 :]

    async def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()

    async def close(self) -> None:
        if self.proc.returncode is None and self.proc.stdin is not None:
            with contextlib.suppress(Exception):
                self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def js_peer(addr: str, count: int, timeout_s: float = 60.0):
    peer = await JsPeer.start(addr, TOPIC, count, timeout_s)
    try:
        deadline = time.monotonic() + STEP_S
        peer.peer_id = await peer.expect("PEER", deadline)
        await peer.expect("READY", deadline)
        yield peer
    finally:
        await peer.close()


@pytest.fixture
async def py_node(tmp_path: Path):
    offer, reply = signed_offer_message(7), signed_offer_message(8)
    cfg = P2PConfig(key_path=tmp_path / "node.key", topic=TOPIC, listen_addrs=("/ip4/127.0.0.1/tcp/0",))
    node = P2PNode(cfg, validate=accept_only(offer, reply))
    await node.start()
    try:
        yield node, offer, reply
    finally:
        await node.stop()


async def test_js_peer_receives_offer_from_python(py_node) -> None:
    node, offer, _ = py_node
    addr = next(a for a in node.listen_addrs if "/tcp/" in a)
    async with js_peer(addr, count=1) as peer:
        # The Python side meshes the js peer on one of its 1 s heartbeats: publish until it arrives.
        deadline = time.monotonic() + STEP_S
        got: str | None = None
        while got is None:
            await node.publish(offer)
            try:
                got = await peer.expect("MSG", min(deadline, time.monotonic() + 0.5))
            except AssertionError as exc:
                if peer.proc.returncode is not None:
                    raise
                if time.monotonic() >= deadline:
                    raise AssertionError(f"the js peer did not receive the offer within {STEP_S} s") from exc
        assert bytes.fromhex(got) == offer, "the js peer received different bytes"
        assert await asyncio.wait_for(peer.proc.wait(), 10) == 0, peer.explain("bad exit")


async def test_python_receives_offer_from_js_peer(py_node) -> None:
    node, _, reply = py_node
    addr = next(a for a in node.listen_addrs if "/tcp/" in a)
    junk = b"not an offer"
    async with js_peer(addr, count=0) as peer:
        deadline = time.monotonic() + STEP_S
        # A message the validator rejects first: it must be validated and dropped, not delivered.
        await peer.send(f"PUB {junk.hex()}")
        await peer.expect("PUBLISHED", deadline)
        msg = None
        while msg is None:
            if time.monotonic() >= deadline:
                raise AssertionError(peer.explain("the Python node did not deliver the js peer's offer"))
            await peer.send(f"PUB {reply.hex()}")
            await peer.expect("PUBLISHED", deadline)
            with contextlib.suppress(TimeoutError):
                msg = await asyncio.wait_for(node.queue.get(), 0.5)
        assert msg.data == reply
        assert msg.origin == peer.peer_id, "the message should carry the js peer as its signed origin"
        assert msg.sender == peer.peer_id
        assert msg.topic == TOPIC
        while rejected(node) < 1:
            assert time.monotonic() < deadline, "the Python validator never saw the js peer's junk message"
            await asyncio.sleep(0.02)
        while not node.queue.empty():
            assert node.queue.get_nowait().data == reply, "a rejected message was delivered"


VECTORS_DIR = Path(__file__).resolve().parents[2] / "docs" / "vectors"


def vector_count() -> int:
    """Vectors in docs/vectors/*.json, counted the way tests/interop/js/vectors.mjs checks them."""

    def load(name: str) -> dict:
        return json.loads((VECTORS_DIR / f"{name}.json").read_text(encoding="utf-8"))

    cp, job, sync = load("checkpoints"), load("job_spec"), load("sync")
    return (
        1  # keys.json: domain, type hashes, addresses, topic
        + len(load("offers")["vectors"]) + len(load("withdrawals")["vectors"]) + len(load("heartbeats")["vectors"])
        + len(cp["signatures"]) + len(cp["verifications"])
        + 1 + len(job["box"]["opens"])  # the JobSpec signature and box seal, then each opening
        + len(job["versions"])  # job spec versions 1 and 2, canonical bytes
        + len(load("lease_messages")["vectors"])
        + len(sync["uvarints"]) + len(sync["requests"]) + len(sync["pages"]) + len(sync["sessions"])
    )


def test_js_codec_checks_every_vector() -> None:
    """An independent JavaScript codec (written from docs/spec.md) decodes, re-encodes and verifies every vector."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node (Node.js) is not on PATH: run scripts/setup")
    if not (JS_DIR / "node_modules" / "@noble" / "curves").is_dir():
        pytest.fail(f"{JS_DIR / 'node_modules'} is missing: run scripts/setup")
    proc = subprocess.run([node, str(JS_DIR / "vectors.mjs"), str(VECTORS_DIR)], cwd=JS_DIR, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "NODE_NO_WARNINGS": "1"})
    out = proc.stdout.strip().splitlines()
    assert proc.returncode == 0, "js codec disagrees with the vectors:\n" + "\n".join(out[-40:]) + proc.stderr[-2000:]
    assert out and out[-1].startswith("CHECKED "), proc.stdout[-2000:] + proc.stderr[-2000:]
    _, checked, _, failed = out[-1].split()
    assert int(failed) == 0
    assert int(checked) == vector_count()
