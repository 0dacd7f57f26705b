"""``gpunet status`` and ``gpunet peers``: what a running node says about itself."""

from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click

from node.cli.app import NodeRef, fail, json_option, main, node_options, print_fields, print_json, print_table

EXIT_NOT_RUNNING = 3


def _wait_for(node: NodeRef, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        info = node.info()
        url = node.api_url or info.get("api")
        if url:
            try:
                with urllib.request.urlopen(f"{url}/v1/status", timeout=2):
                    return
            except (urllib.error.URLError, OSError):
                pass
        if time.monotonic() > deadline:
            click.echo(f"error: no node answered within {seconds:g}s (data dir {node.data_dir})", err=True)
            sys.exit(EXIT_NOT_RUNNING)
        time.sleep(0.2)


@main.command()
@node_options
@click.option("--wait", "wait_s", type=click.FloatRange(0), help="wait up to this many seconds for the node to "
              f"answer (exit {EXIT_NOT_RUNNING} if it does not)")
@click.option("--multiaddr", is_flag=True, help="print the node's first dialable address only (for --bootstrap)")
@json_option
def status(node: NodeRef, wait_s: float | None, multiaddr: bool, as_json: bool) -> None:
    """A running node's identity, wallet, chain, offers and health.

    Example: gpunet status --data-dir provider-node --wait 60
    """
    if wait_s is not None:
        _wait_for(node, wait_s)
    s: dict[str, Any] = node.get("/v1/status")
    if multiaddr:
        addrs = [a for a in s["addrs"] if "/p2p/" in a] or [f"{a}/p2p/{s['peer_id']}" for a in s["addrs"]]
        if not addrs:
            fail("the node listens on no address")
        click.echo(addrs[0])
    elif as_json:
        print_json(s)
    else:
        chain = s.get("chain", {})
        print_fields(f"node {s['peer_id']}", [
            ("API", node.url), ("wallet", s.get("address") or "none (relay only)"),
            ("role", "provider" if s.get("provider") else "consumer" if s.get("address") else "relay"),
            ("chain", s.get("chain_id")), ("escrow", s.get("escrow")),
            ("RPC", f"{chain.get('rpc_url', '?')} ({chain.get('rpc', '?')})"),
            ("offers in book", s.get("offers")), ("devices", len(s.get("devices", []))),
            ("listening on", "\n".join(s.get("addrs", []))), ("uptime", f"{s.get('uptime_s', 0)}s"),
        ])


@main.command()
@node_options
@json_option
def peers(node: NodeRef, as_json: bool) -> None:
    """Peers a running node is connected to.

    Example: gpunet peers --data-dir consumer-node
    """
    found: list[dict[str, Any]] = node.get("/v1/peers")["peers"]
    if as_json:
        print_json(found)
    elif not found:
        click.echo("no peers connected (give --bootstrap to `gpunet run`)")
    else:
        print_table(None, ["peer", "addresses", "in offer mesh"],
                    [[p["peer_id"], "\n".join(p["addrs"]), "yes" if p["in_mesh"] else "no"] for p in found])


@main.command()
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), envvar="GPUNET_DATA_DIR",
              default=Path(".gpunet"), show_default=True, help="the node's data directory")
@click.option("--timeout", type=click.FloatRange(1), default=30.0, show_default=True)
def stop(data_dir: Path, timeout: float) -> None:
    """Stop the node running on a data directory (SIGTERM to the process holding its lock) and wait until it has
    let go. Exit status 3 when no node runs there.

    Example: gpunet stop --data-dir provider-node
    """
    import fcntl
    import os
    import signal

    lock = data_dir / "lock"
    if not lock.exists():
        click.echo(f"no node runs on {data_dir}")
        sys.exit(EXIT_NOT_RUNNING)
    fd = os.open(lock, os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            click.echo(f"no node runs on {data_dir}")
            sys.exit(EXIT_NOT_RUNNING)
        except BlockingIOError:
            pass
        pid = int(os.pread(fd, 32, 0).decode().strip() or 0)
        if pid <= 0:
            fail(f"{lock} names no process")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    fail(f"node {pid} still running {timeout:g}s after SIGTERM")
                time.sleep(0.1)
    finally:
        os.close(fd)
    click.echo(f"node {pid} on {data_dir} stopped")
