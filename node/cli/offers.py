"""``gpunet offers`` and ``gpunet cancel-offers``: the offer book of a running node."""

from __future__ import annotations

import json
from pathlib import Path

import click

from node.cli.app import api, api_option, main, token_value


@main.command()
@api_option
@click.option("--model")
@click.option("--min-gpus", type=click.IntRange(1))
@click.option("--max-price", type=click.IntRange(1))
@click.option("--region")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
def offers(api_url: str, model: str | None, min_gpus: int | None, max_price: int | None, region: str | None,
           limit: int) -> None:
    """List offers from a running node's book, cheapest first."""
    from urllib.parse import urlencode

    q = {k: v for k, v in {"model": model, "min_gpus": min_gpus, "max_price": max_price, "region": region,
                           "limit": limit}.items() if v is not None}
    click.echo(json.dumps(api(api_url, "/v1/offers?" + urlencode(q)), indent=2))


@main.command("cancel-offers")
@api_option
@click.option("--token")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path))
def cancel_offers(api_url: str, token: str | None, token_file: Path | None) -> None:
    """Provider: withdraw all of this node's offers (gossip withdrawal and on-chain cancelOffersBelow)."""
    click.echo(json.dumps(api(api_url, "/v1/offers/cancel", token_value(token, token_file), {}), indent=2))
