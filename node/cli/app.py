"""The shared ``gpunet`` groups and the helpers every command module uses.

Command modules register themselves on :data:`main` (``@main.command()``) or on :data:`lease`
(``@lease.command()``); :mod:`node.cli` imports every module of the package, so a new module needs no other edit.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
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




# ---------------------------------------------------------------------------------------------- shared options
json_option = click.option("--json", "as_json", is_flag=True, help="print raw values as JSON instead of a table")


def gpunet_home() -> Path:
    """Where wallets and the devnet live: ``$GPUNET_HOME`` or ``~/.gpunet``."""
    import os

    return Path(os.environ.get("GPUNET_HOME") or Path.home() / ".gpunet")


class NodeRef:
    """A running node, found by its API URL or by its data directory (``node.json`` and ``api-token`` in it)."""

    def __init__(self, api_url: str | None, data_dir: Path, token: str | None, token_file: Path | None) -> None:
        self.api_url, self.data_dir, self.token_given, self.token_file = api_url, data_dir, token, token_file

    @property
    def url(self) -> str:
        if self.api_url:
            return self.api_url
        info = self.data_dir / "node.json"
        try:
            return str(json.loads(info.read_text())["api"])
        except (FileNotFoundError, KeyError, json.JSONDecodeError):
            fail(f"no node found in {self.data_dir}: start one with `gpunet run --data-dir {self.data_dir}`, "
                 "or give --api URL")

    def info(self) -> dict[str, Any]:
        try:
            return dict(json.loads((self.data_dir / "node.json").read_text()))
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    @property
    def token(self) -> str:
        if self.token_given:
            return self.token_given
        if self.token_file is not None:
            return token_value(None, self.token_file)
        path = self.data_dir / "api-token"
        if path.exists():
            return path.read_text().strip()
        return token_value(None, None)

    def get(self, path: str) -> Any:
        return api(self.url, path)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return api(self.url, path, self.token, body)


def node_options(f: Any) -> Any:
    """``--api`` / ``--data-dir`` / ``--token`` / ``--token-file``, passed on as ``node: NodeRef``."""
    import functools

    @click.option("--api", "api_url", envvar="GPUNET_API", help="the node's HTTP API URL (default: read from "
                  "<data-dir>/node.json)")
    @click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), envvar="GPUNET_DATA_DIR",
                  default=Path(".gpunet"), show_default=True, help="the node's data directory")
    @click.option("--token", help="API token (default: <data-dir>/api-token)")
    @click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path))
    @functools.wraps(f)
    def wrapper(api_url: str | None, data_dir: Path, token: str | None, token_file: Path | None,
                **kwargs: Any) -> Any:
        return f(node=NodeRef(api_url, data_dir, token, token_file), **kwargs)

    return wrapper


# ---------------------------------------------------------------------------------------------- human units
E18 = 10**18


def gdev(base: int | str | None, places: int = 6) -> str:
    """Token base units as gDEV with decimals (trailing zeros dropped)."""
    from decimal import Decimal

    if base is None:
        return "-"
    d = Decimal(int(base)) / Decimal(E18)
    text = f"{d:,.{places}f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


def eth(wei: int) -> str:
    return gdev(wei, 6)


def parse_gdev(text: str, what: str = "amount") -> int:
    """``"1.5"`` gDEV → base units; a positive amount with at most 18 decimals."""
    from decimal import Decimal, InvalidOperation

    try:
        d = Decimal(text.replace(",", "").replace("_", ""))
    except InvalidOperation as exc:
        raise click.BadParameter(f"{what} {text!r} is not a number (gDEV, e.g. 1.5)") from exc
    base = d * E18
    if not d.is_finite() or base != base.to_integral_value() or base <= 0:
        raise click.BadParameter(f"{what} {text!r} must be positive with at most 18 decimals")
    return int(base)


def per_gpu_hour(price_per_gpu_second: int | str) -> str:
    return f"{gdev(int(price_per_gpu_second) * 3600)} gDEV/GPU·h"


def when(ts: int | float | None, now: float | None = None) -> str:
    """A unix time as a relative one: ``3m ago``, ``in 2h 5m``."""
    import time

    if not ts:
        return "-"
    delta = int(ts - (time.time() if now is None else now))
    span = abs(delta)
    if span < 60:
        text = f"{span}s"
    elif span < 3600:
        text = f"{span // 60}m {span % 60}s" if span < 600 else f"{span // 60}m"
    elif span < 86400:
        text = f"{span // 3600}h {span % 3600 // 60}m"
    else:
        text = f"{span // 86400}d {span % 86400 // 3600}h"
    return f"in {text}" if delta > 0 else f"{text} ago"


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def report(out: dict[str, Any], as_json: bool, text: Callable[[dict[str, Any]], str]) -> None:
    """A command's result: the JSON object with ``--json``, else the line ``text`` makes of it."""
    if as_json:
        print_json(out)
    else:
        click.echo(text(out))


def print_table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*[str(x) for x in r])
    console()(t)


def console() -> Any:
    """rich's print, as wide as the terminal, or 200 columns when the output is not a terminal."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 200, highlight=False).print


def print_fields(title: str | None, fields: list[tuple[str, Any]]) -> None:
    print_table(title, ["", "value"], [[k, v] for k, v in fields])
