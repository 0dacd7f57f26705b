"""The shared ``gpunet`` groups and the helpers every command module uses.

Command modules register themselves on :data:`main` (``@main.command()``) or on :data:`lease`
(``@lease.command()``); :mod:`node.cli` imports every module of the package, so a new module needs no other edit.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, NoReturn

import click


def fail(message: str) -> NoReturn:
    """One-line error on stderr and exit status 1."""
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


@click.group()
@click.version_option("0.1.0", prog_name="gpunet")
def main() -> None:
    """gpunet: a decentralized GPU marketplace node."""


@main.group()
def lease() -> None:
    """Open, inspect and close leases through a running node."""


def api(url: str, path: str, token: str | None = None, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url.rstrip("/") + path, data=data, method="POST" if body is not None else "GET")
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            msg = json.loads(exc.read()).get("error", str(exc))
        except Exception:
            msg = str(exc)
        fail(f"{exc.code}: {msg}")
    except urllib.error.URLError as exc:
        fail(f"node API {url} unreachable: {exc.reason}")


def token_value(token: str | None, token_file: Path | None) -> str:
    if token:
        return token
    if token_file is not None:
        try:
            return token_file.read_text().strip()
        except FileNotFoundError:
            fail(f"token file {token_file} not found")
    fail("this action moves funds: give --token or --token-file (the node writes <data_dir>/api-token)")
    return ""


api_option = click.option("--api", "api_url", default="http://127.0.0.1:8080", show_default=True,
                          help="the node's HTTP API")


