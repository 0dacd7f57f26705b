"""``gpunet lease forward <lease-id> [<local-port>:]<container-port> [--wait S]``: reach a port of the lease's
container through this node (listening on 127.0.0.1 only) and the provider's node, over libp2p."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import click

from node.cli.app import NodeRef, api, fail, lease, node_options


def _spec(value: str) -> tuple[int, int]:
    local, _, port = value.rpartition(":")
    try:
        pair = (int(local) if local else 0, int(port))
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected [<local-port>:]<container-port>") from None
    if not (0 <= pair[0] < 65536 and 0 < pair[1] < 65536):
        raise click.BadParameter(f"{value!r}: ports are 1..65535 (local 0: any free port)")
    return pair


def _delete(url: str, token: str) -> Any:
    req = urllib.request.Request(url, method="DELETE", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        fail(f"{exc.code}: {exc.read().decode(errors='replace')[:200]}")


@lease.command("forward")
@node_options
@click.option("--wait", type=click.FloatRange(0, 600), default=0.0,
              help="first wait up to this many seconds for the container port to accept connections")
@click.option("--list", "list_only", is_flag=True, help="list the lease's forwards instead")
@click.option("--remove", type=click.IntRange(1), help="remove this forward (its id) instead")
@click.argument("lease_id", type=click.IntRange(1))
@click.argument("ports", required=False)
def lease_forward(node: NodeRef, wait: float, list_only: bool, remove: int | None, lease_id: int,
                  ports: str | None) -> None:
    """Reach a port the lease's job declared, on 127.0.0.1 of this machine, through the provider's node.

    Example: gpunet lease forward 3 8000:8000 --wait 60 --data-dir consumer-node
    """
    key, api_url = node.token, node.url
    base = f"/v1/leases/{lease_id}/forwards"
    if list_only:
        click.echo(json.dumps(api(api_url, base, key), indent=2))
        return
    if remove is not None:
        click.echo(json.dumps(_delete(api_url.rstrip("/") + f"{base}?forward_id={remove}", key)))
        return
    if ports is None:
        raise click.UsageError("give [<local-port>:]<container-port>, --list or --remove ID")
    local, port = _spec(ports)
    fwd = api(api_url, base, key, {"container_port": port, "local_port": local, "wait": wait})
    click.echo(f"forward {fwd['forward_id']}: {fwd['local']} -> lease {lease_id} container port {port}")
