"""``gpunet lease open|show|close``: leases through a running node."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from node.cli.app import api, api_option, lease, token_value


@lease.command("open")
@api_option
@click.option("--token")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--offer-id", required=True, help="0x offer id from `gpunet offers`")
@click.option("--gpus", type=click.IntRange(1), required=True)
@click.option("--deposit", type=click.IntRange(1), required=True, help="token base units")
@click.option("--command", "command", help="job command (argv as a JSON list or a plain string)")
def lease_open(api_url: str, token: str | None, token_file: Path | None, offer_id: str, gpus: int, deposit: int,
               command: str | None) -> None:
    body: dict[str, Any] = {"offer_id": offer_id, "gpus": gpus, "deposit": str(deposit)}
    if command:
        try:
            argv = json.loads(command) if command.strip().startswith("[") else command.split()
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"--command: {exc}") from exc
        body["job"] = {"argv": argv}
    click.echo(json.dumps(api(api_url, "/v1/leases", token_value(token, token_file), body), indent=2))


@lease.command("show")
@api_option
@click.argument("lease_id", type=click.IntRange(1))
def lease_show(api_url: str, lease_id: int) -> None:
    click.echo(json.dumps(api(api_url, f"/v1/leases/{lease_id}"), indent=2))


@lease.command("close")
@api_option
@click.option("--token")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("lease_id", type=click.IntRange(1))
def lease_close(api_url: str, token: str | None, token_file: Path | None, lease_id: int) -> None:
    click.echo(json.dumps(api(api_url, f"/v1/leases/{lease_id}/close", token_value(token, token_file), {}), indent=2))
