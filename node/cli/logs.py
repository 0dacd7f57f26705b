"""``gpunet lease logs <lease-id> [-f]``: a consumer lease's job output, as kept by the node or followed live."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request

import click

from node.cli.app import NodeRef, api, fail, lease, node_options

PAGE = 256


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _dropped(n: int) -> None:
    if n:
        click.echo(f"[{n} bytes of output dropped by the provider]", err=True)


@lease.command("logs")
@node_options
@click.option("-f", "--follow", is_flag=True, help="keep printing output as it arrives, until the job ends")
@click.option("--after", type=click.IntRange(-1), default=-1, help="only chunks after this seq")
@click.argument("lease_id", type=click.IntRange(1))
def lease_logs(node: NodeRef, follow: bool, after: int, lease_id: int) -> None:
    """The job's output (stdout and stderr) as it reached this consumer node.

    Example: gpunet lease logs 1 -f --data-dir consumer-node
    """
    key = node.token
    if not follow:
        while True:
            page = api(node.url, f"/v1/leases/{lease_id}/logs?after={after}", key)
            for chunk in page["chunks"]:
                _dropped(chunk["dropped"])
                _write(chunk["text"])
                after = chunk["seq"]
            if len(page["chunks"]) < PAGE:
                return
    req = urllib.request.Request(f"{node.url.rstrip('/')}/v1/leases/{lease_id}/logs?after={after}&follow=1",
                                 headers={"Authorization": f"Bearer {key}", "Accept": "text/event-stream"})
    try:
        with urllib.request.urlopen(req, timeout=3600) as resp:
            event = ""
            for raw in resp:
                line = raw.decode("utf-8").rstrip("\n")
                if line.startswith("event: "):
                    event = line[len("event: "):]
                elif line.startswith("data: ") and event == "log":
                    chunk = json.loads(line[len("data: "):])
                    _dropped(chunk["dropped"])
                    _write(chunk["text"])
                elif line.startswith("data: ") and event == "end":
                    return
    except urllib.error.HTTPError as exc:
        fail(f"{exc.code}: {exc.read().decode(errors='replace')[:200]}")
    except urllib.error.URLError as exc:
        fail(f"node API {node.url} unreachable: {exc.reason}")
