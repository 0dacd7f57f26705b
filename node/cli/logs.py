"""``gpunet lease logs <lease-id> [-f]``: a consumer lease's job output, as kept by the node or followed live."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

import click

from node.cli.app import api, api_option, fail, lease


def _token(token: str | None, token_file: Path | None) -> str:
    if token:
        return token
    if token_file is not None:
        try:
            return token_file.read_text().strip()
        except FileNotFoundError:
            fail(f"token file {token_file} not found")
    fail("job output is private: give --token or --token-file (the node writes <data_dir>/api-token)")


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _dropped(n: int) -> None:
    if n:
        click.echo(f"[{n} bytes of output dropped by the provider]", err=True)


@lease.command("logs")
@api_option
@click.option("--token")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-f", "--follow", is_flag=True, help="keep printing output as it arrives, until the job ends")
@click.option("--after", type=click.IntRange(-1), default=-1, help="only chunks after this seq")
@click.argument("lease_id", type=click.IntRange(1))
def lease_logs(api_url: str, token: str | None, token_file: Path | None, follow: bool, after: int,
               lease_id: int) -> None:
    key = _token(token, token_file)
    path = f"/v1/leases/{lease_id}/logs?after={after}"
    if not follow:
        while True:
            page = api(api_url, path, key)
            for chunk in page["chunks"]:
                _dropped(chunk["dropped"])
                _write(chunk["text"])
                after = chunk["seq"]
            if len(page["chunks"]) < 256:
                return
            path = f"/v1/leases/{lease_id}/logs?after={after}"
    req = urllib.request.Request(api_url.rstrip("/") + path + "&follow=1",
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
        fail(f"node API {api_url} unreachable: {exc.reason}")
