"""Port forwards over real libp2p hosts on loopback (``/gpunet/forward/1.0.0``), to a TCP server the accepting
node reaches itself: bytes intact both ways with half-close, 50 connections at once, refusals with their
reasons, a listener on 127.0.0.1 only, and heartbeats that keep coming while a forward is saturated."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from node.p2p import P2PConfig
from node.p2p.bridge import P2PNode, P2PRuntime
from node.p2p.forward import ForwardRefused, Forwards, Refusal, decode_request, encode_reply, encode_request
from node.types import ACCEPTED, Validation

from .conftest_containers import podman_service  # noqa: F401 - fixture

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

TOPIC = "gpunet/31337/0x0000000000000000000000000000000000000001/offers/1"
LEASE, PORT = 7, 8080


def accept_all(data: bytes, sender: str) -> Validation:
    return ACCEPTED


async def echo_server() -> tuple[asyncio.Server, int]:
    """Answers every connection with the sha256 of everything it read, once the client half-closed."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        h = hashlib.sha256()
        while chunk := await reader.read(65536):
            h.update(chunk)
        writer.write(h.hexdigest().encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def exchange(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    writer.write_eof()  # half-close: the answer comes after it
    answer = await asyncio.wait_for(reader.read(), 60)
    writer.close()
    return answer


async def refused(port: int) -> bool:
    """The connection is closed (or reset: the node drops it unread) without a byte of answer."""
    try:
        return await exchange(port, b"hello") == b""
    except ConnectionResetError:
        return True


@pytest.fixture
async def three(tmp_path: Path):
    async with P2PRuntime() as rt:
        nodes = []
        for name in ("provider", "consumer", "stranger"):
            node = P2PNode(P2PConfig(key_path=tmp_path / name / "node.key", topic=TOPIC), accept_all, runtime=rt)
            await node.start()
            nodes.append(node)
        try:
            yield nodes
        finally:
            await asyncio.gather(*(n.stop() for n in nodes), return_exceptions=True)


def test_header_and_reply_layout() -> None:
    assert encode_request(LEASE, PORT) == b"\x01" + LEASE.to_bytes(32, "big") + PORT.to_bytes(2, "big")
    assert decode_request(encode_request(LEASE, PORT)) == (LEASE, PORT)
    with pytest.raises(ForwardRefused, match="MALFORMED"):
        decode_request(b"\x02" + encode_request(LEASE, PORT)[1:])
    assert encode_reply(Refusal.PORT_NOT_DECLARED, "é" * 200)[:2] == bytes([4, 254])


async def test_forwards_carry_bytes_both_ways_and_refuse_what_is_not_allowed(three):
    provider, consumer, stranger = three
    server, target = await echo_server()
    asked: list[tuple[str, int, int]] = []

    async def authorize(peer: str, lease_id: int, port: int) -> tuple[str, int]:
        asked.append((peer, lease_id, port))
        if peer != consumer.peer_id:
            raise ForwardRefused(Refusal.NOT_CONSUMER, "not the lease's consumer node")
        if lease_id != LEASE:
            raise ForwardRefused(Refusal.UNKNOWN_LEASE, "no such lease")
        if port != PORT:
            raise ForwardRefused(Refusal.PORT_NOT_DECLARED, f"port {port} is not declared")
        return "127.0.0.1", target

    served = Forwards(provider, max_connections=64, idle_s=30)
    await served.serve(authorize)
    await consumer.connect(provider.listen_addrs[0])
    await stranger.connect(provider.listen_addrs[0])
    mine = Forwards(consumer)
    fwd = await mine.add(LEASE, provider.peer_id, PORT)

    payload = os.urandom(100 * 1024 * 1024 + 17)  # 100 MB: the server's hash of what arrived must match
    assert await exchange(fwd.local_port, payload) == hashlib.sha256(payload).hexdigest().encode()
    del payload

    many = [os.urandom(64 * 1024 + i) for i in range(50)]
    answers = await asyncio.gather(*(exchange(fwd.local_port, p) for p in many))
    assert answers == [hashlib.sha256(p).hexdigest().encode() for p in many]

    for forwards, lease_id, port, who in ((mine, LEASE + 1, PORT, consumer), (mine, LEASE, 22, consumer),
                                          (Forwards(stranger), LEASE, PORT, stranger)):
        other = await forwards.add(lease_id, provider.peer_id, port)
        assert await refused(other.local_port)
        assert asked[-1] == (who.peer_id, lease_id, port)

    # the listener is on loopback only
    listening = {line.split()[1] for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
                 if line.split()[3] == "0A"}
    assert f"0100007F:{fwd.local_port:04X}" in listening
    assert not any(addr.endswith(f":{fwd.local_port:04X}") and not addr.startswith("0100007F") for addr in listening)

    assert await mine.remove_lease(LEASE) == 2
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", fwd.local_port)
    server.close()


# --- a service lease end to end: anvil, two nodes, a container serving HTTP -----------------------------------

async def test_a_service_lease_serves_http_through_the_forward_until_it_closes(nodes, devnet, podman_service):  # noqa: F811
    import urllib.request

    import aiohttp

    from .conftest import CONSUMER, until
    from .test_container_leases import container_job, offer_of, open_lease, provider_config, started, token_of

    provider = await started(provider_config(devnet, Path(devnet.tmp) / "fw1", podman_service))
    try:
        consumer = await nodes("consumer", account=CONSUMER, bootstrap=(provider.p2p.listen_addrs[0],))
        offer = await offer_of(consumer, provider.address)
        job = container_job("mkdir /tmp/www && seq 1 200000 > /tmp/www/data.txt && "
                            "exec busybox httpd -f -p 8080 -h /tmp/www", ports=[8080])
        lid = await open_lease(consumer, offer, job)
        auth = {"Authorization": f"Bearer {token_of(consumer)}"}
        base = f"{consumer.api_url}/v1/leases/{lid}/forwards"
        async with aiohttp.ClientSession() as http:
            await until(lambda: (consumer.lease(lid) or {}).get("heartbeats", 0) > 0, 60, "the lease to run")
            async with http.post(base, json={"container_port": 22}, headers=auth) as resp:
                assert resp.status == 400 and "not among the ports" in (await resp.json())["error"]
            async with http.post(base, json={"container_port": 8080, "wait": 60}, headers=auth) as resp:
                assert resp.status == 201, await resp.text()
                fwd = await resp.json()
            assert fwd["local"].startswith("127.0.0.1:")
            expected = "".join(f"{i}\n" for i in range(1, 200001)).encode()
            body = await asyncio.to_thread(
                lambda: urllib.request.urlopen(f"http://{fwd['local']}/data.txt", timeout=30).read())
            assert hashlib.sha256(body).hexdigest() == hashlib.sha256(expected).hexdigest()

            # the forward saturated by 4 downloads at a time for 3 s: the provider keeps its heartbeats coming
            def download() -> bytes:
                return urllib.request.urlopen(f"http://{fwd['local']}/data.txt", timeout=30).read()

            beats_before = consumer.lease(lid)["heartbeats"]
            loop = asyncio.get_running_loop()
            started_at, moved = loop.time(), 0
            while loop.time() - started_at < 3.0:
                bodies = await asyncio.gather(*(asyncio.to_thread(download) for _ in range(4)))
                assert all(b == expected for b in bodies)
                moved += sum(len(b) for b in bodies)
            beats_during = consumer.lease(lid)["heartbeats"] - beats_before
            assert moved > 10 * len(expected) and beats_during >= 2, (moved, beats_during)
            listening = [line.split()[1] for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
                         if line.split()[3] == "0A" and line.split()[1].endswith(f":{fwd['local_port']:04X}")]
            assert listening == [f"0100007F:{fwd['local_port']:04X}"]
            async with http.get(base, headers=auth) as resp:
                assert [f["forward_id"] for f in (await resp.json())["forwards"]] == [fwd["forward_id"]]
            from click.testing import CliRunner

            from node.cli import main as cli

            made = await asyncio.to_thread(CliRunner().invoke, cli, ["lease", "forward", str(lid), "0:8080", "--wait",
                                                                     "30", "--data-dir", str(consumer.cfg.data_dir)])
            assert made.exit_code == 0 and "127.0.0.1:" in made.output, made.output
            local = made.output.split()[2]
            again = await asyncio.to_thread(
                lambda: urllib.request.urlopen(f"http://{local}/data.txt", timeout=30).read())
            assert again == expected
            fid = made.output.split()[1].rstrip(":")
            gone = await asyncio.to_thread(CliRunner().invoke, cli, ["lease", "forward", str(lid), "--remove", fid,
                                                                     "--data-dir", str(consumer.cfg.data_dir)])
            assert gone.exit_code == 0, gone.output

            # the provider's own checks, asked directly over the forward protocol
            ours = consumer.forward_service().forwards
            peer = provider.p2p.peer_id
            assert (await ours.probe(lid, peer, 8080))[0] is Refusal.OK
            assert (await ours.probe(lid, peer, 22))[0] is Refusal.PORT_NOT_DECLARED
            assert (await ours.probe(lid + 1000, peer, 8080))[0] is Refusal.UNKNOWN_LEASE
            async with P2PRuntime() as rt:
                stranger = P2PNode(P2PConfig(key_path=Path(devnet.tmp) / "fw-stranger" / "node.key", topic=TOPIC),
                                   accept_all, runtime=rt)
                await stranger.start()
                try:
                    await stranger.connect(provider.p2p.listen_addrs[0])
                    assert (await Forwards(stranger).probe(lid, peer, 8080))[0] is Refusal.NOT_CONSUMER
                finally:
                    await stranger.stop()

            await consumer.close_lease(lid)
            await until(lambda: not consumer.forward_service().list(lid), 30, "the forward to end with the lease")
            with pytest.raises(OSError):
                await asyncio.open_connection("127.0.0.1", fwd["local_port"])
            notices = [n["notice"] for n in consumer.lease(lid)["notices"]]
            assert "forwards_closed" in notices
            await until(lambda: provider.lease(lid)["status"] != "OPEN", 30, "the provider to see the close")
            assert (await ours.probe(lid, peer, 8080))[0] is Refusal.LEASE_NOT_RUNNING  # a closed lease
    finally:
        await provider.stop()


async def test_connections_per_lease_and_idle_time_are_bounded(three):
    provider, consumer, _ = three
    server, target = await echo_server()

    async def authorize(peer: str, lease_id: int, port: int) -> tuple[str, int]:
        return "127.0.0.1", target

    served = Forwards(provider, max_connections=1, idle_s=1.0)
    await served.serve(authorize)
    await consumer.connect(provider.listen_addrs[0])
    fwd = await Forwards(consumer).add(LEASE, provider.peer_id, PORT)
    reader, writer = await asyncio.open_connection("127.0.0.1", fwd.local_port)
    writer.write(b"held open")
    await writer.drain()
    await asyncio.sleep(0.3)
    assert served.connections(LEASE) == 1
    assert (await Forwards(consumer).probe(LEASE, provider.peer_id, PORT))[0] is Refusal.TOO_MANY
    # idle for longer than the bound: the provider ends the connection, the slot is free again
    assert await asyncio.wait_for(reader.read(), 10) == b""
    assert served.connections(LEASE) == 0
    assert (await Forwards(consumer).probe(LEASE, provider.peer_id, PORT))[0] is Refusal.OK
    writer.close()
    server.close()
