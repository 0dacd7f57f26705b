"""``gpunet lease list|open|show|topup|close|watch``: leases through a running node."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from node.cli.app import (
    NodeRef,
    console,
    gdev,
    json_option,
    lease,
    node_options,
    parse_gdev,
    per_gpu_hour,
    print_fields,
    print_json,
    print_table,
    when,
)
from node.cli.market import need_body, open_by_need

EXIT_TIMEOUT = 4


def _left(v: dict[str, Any]) -> int:
    """Deposit not yet used by accepted usage (what the lease can still run on)."""
    return int(v["deposit"]) - int(v["accepted_gpu_seconds"]) * int(v["price_per_gpu_second"])


def _counterparty(v: dict[str, Any]) -> str:
    return str(v["provider"] if v["role"] == "consumer" else v["consumer"])


@lease.command("list")
@node_options
@json_option
def lease_list(node: NodeRef, as_json: bool) -> None:
    """This node's leases, as consumer and as provider.

    Example: gpunet lease list --data-dir consumer-node
    """
    leases: list[dict[str, Any]] = node.get("/v1/leases")["leases"]
    if as_json:
        print_json(leases)
    elif not leases:
        click.echo("no leases")
    else:
        print_table(None, ["lease", "role", "status", "with", "GPUs", "price", "deposit left", "paid", "started",
                           "ends"],
                    [[v["lease_id"], v["role"], v["status"], _counterparty(v), v["gpus"],
                      per_gpu_hour(v["price_per_gpu_second"]), f"{gdev(_left(v))} gDEV", f"{gdev(v['paid'])} gDEV",
                      when(v["started_at"]), when(v["ends_at"])] for v in leases])


@lease.command("open")
@node_options
@click.option("--offer-id", help="0x offer id from `gpunet offers` (or choose by need with --model)")
@click.option("--gpus", type=click.IntRange(1), required=True)
@click.option("--deposit", help="gDEV put in escrow, e.g. 2.5 (with --offer-id)")
@click.option("--model", help="choose the best live offer of this GPU model instead (with --hours)")
@click.option("--hours", type=click.FloatRange(0, min_open=True), help="with --model: how long the lease runs")
@click.option("--min-vram", type=click.IntRange(1), help="with --model: at least this much memory per GPU (MiB)")
@click.option("--region", help="with --model: only offers in this region")
@click.option("--max-price", help="with --model: at most this price, gDEV per GPU-hour")
@click.option("--quote", "quote_only", is_flag=True, help="with --model: show the choice and its cost, open nothing")
@click.option("--command", "command", help="job command (argv as a JSON list or a plain string)")
@click.option("--job-timeout", type=click.IntRange(1), help="seconds the job may run")
@click.option("-q", "--quiet", is_flag=True, help="print the lease id only")
@json_option
def lease_open(node: NodeRef, offer_id: str | None, gpus: int, deposit: str | None, model: str | None,
               hours: float | None, min_vram: int | None, region: str | None, max_price: str | None,
               quote_only: bool, command: str | None, job_timeout: int | None, quiet: bool, as_json: bool) -> None:
    """Open a lease on an offer: the deposit goes into escrow and, with --command, the job starts on the provider.
    With --model instead of --offer-id, the node picks the best live offer by price and provider record, pays for
    --hours, and says what it chose and why (--quote: only say what it would cost now).

    Example: gpunet lease open --offer-id 0x… --gpus 1 --deposit 2 --command "python3 -c 'print(42)'"
    Example: gpunet lease open --model H100-80GB --gpus 2 --hours 3 --region eu-west --max-price 2.5
    """
    if model is not None:
        if hours is None or offer_id or deposit:
            raise click.UsageError("--model needs --hours, and takes no --offer-id or --deposit")
        need = need_body(model, gpus, hours, min_vram, region, max_price)
    elif offer_id is None or deposit is None:
        raise click.UsageError("give --offer-id and --deposit, or choose by need with --model and --hours")
    body: dict[str, Any] = need if model is not None else {
        "offer_id": offer_id, "gpus": gpus, "deposit": str(parse_gdev(deposit or "", "--deposit"))}
    if command:
        import shlex

        try:
            argv = json.loads(command) if command.strip().startswith("[") else shlex.split(command)
        except (json.JSONDecodeError, ValueError) as exc:
            raise click.BadParameter(f"{exc}", param_hint="--command") from exc
        body["job"] = {"argv": argv, **({"timeout_s": job_timeout} if job_timeout else {})}
    if model is not None:
        open_by_need(node.post, body, quote_only, as_json)
        return
    v = node.post("/v1/leases", body)
    if quiet:
        click.echo(v["lease_id"])
    elif as_json:
        print_json(v)
    else:
        click.echo(f"lease {v['lease_id']} open: {v['gpus']} GPU(s) from {v['provider']} at "
                   f"{per_gpu_hour(v['price_per_gpu_second'])}, deposit {gdev(v['deposit'])} gDEV, "
                   f"runs out {when(v['ends_at'])}")


@lease.command("show")
@node_options
@click.argument("lease_id", type=click.IntRange(1))
@json_option
def lease_show(node: NodeRef, lease_id: int, as_json: bool) -> None:
    """One lease: money, usage, checkpoints, job result.

    Example: gpunet lease show 1 --data-dir consumer-node
    """
    v = node.get(f"/v1/leases/{lease_id}")
    if as_json:
        print_json(v)
        return
    fields: list[tuple[str, Any]] = [
        ("status", v["status"] + (f" ({v['close_reason']})" if v.get("close_reason") else "")),
        ("role", v["role"]), ("provider", v["provider"]), ("consumer", v["consumer"]), ("GPUs", v["gpus"]),
        ("price", per_gpu_hour(v["price_per_gpu_second"])), ("deposit", f"{gdev(v['deposit'])} gDEV"),
        ("deposit left", f"{gdev(_left(v))} gDEV"), ("paid", f"{gdev(v['paid'])} gDEV"),
        ("refund", f"{gdev(v['refund'])} gDEV"), ("started", when(v["started_at"])), ("ends", when(v["ends_at"])),
        ("heartbeats", v["heartbeats"]),
        ("checkpoints", f"{v['accepted_seq']} accepted ({v['accepted_gpu_seconds']} GPU·s), "
                        f"{v['rejected_checkpoints']} rejected"),
        ("settled", f"seq {v['settled_seq']} ({v['settled_gpu_seconds']} GPU·s)"),
    ]
    if v.get("job_result"):
        fields.append(("job exit code", v["job_result"]["exit_code"]))
    print_fields(f"lease {lease_id}", fields)
    if v.get("job_result", {}).get("log_tail"):
        click.echo("job output (tail):")
        click.echo(v["job_result"]["log_tail"].rstrip())


@lease.command("topup")
@node_options
@click.argument("lease_id", type=click.IntRange(1))
@click.argument("amount")
@json_option
def lease_topup(node: NodeRef, lease_id: int, amount: str, as_json: bool) -> None:
    """Add AMOUNT gDEV to a lease's deposit (it then runs longer).

    Example: gpunet lease topup 1 0.5 --data-dir consumer-node
    """
    base = parse_gdev(amount, "AMOUNT")
    before = int(node.get(f"/v1/leases/{lease_id}")["deposit"])
    v = node.post(f"/v1/leases/{lease_id}/topup", {"amount": str(base)})
    deadline = time.monotonic() + 60
    while int(v["deposit"]) < before + base and time.monotonic() < deadline:  # until the chain has it
        time.sleep(0.5)
        v = node.get(f"/v1/leases/{lease_id}")
    if as_json:
        print_json(v)
    else:
        click.echo(f"lease {lease_id}: deposit now {gdev(v['deposit'])} gDEV, runs out {when(v['ends_at'])}")


@lease.command("close")
@node_options
@click.argument("lease_id", type=click.IntRange(1))
@json_option
def lease_close(node: NodeRef, lease_id: int, as_json: bool) -> None:
    """Close a lease: the job stops, the last usage is settled and the rest of the deposit is refunded.

    Example: gpunet lease close 1 --data-dir consumer-node
    """
    v = node.post(f"/v1/leases/{lease_id}/close", {})
    if as_json:
        print_json(v)
    else:
        click.echo(f"lease {lease_id}: {v['status']}; the refund follows once the settlement window has passed "
                   f"(`gpunet lease watch {lease_id} --until finalized`)")


UNTIL = {
    "finalized": lambda v: v["status"] == "FINALIZED",
    "closed": lambda v: v["status"] in ("CLOSED", "FINALIZING", "FINALIZED"),
    "job-done": lambda v: "job_result" in v,
    "settled": lambda v: v["settled_seq"] >= 1 and v["settled_gpu_seconds"] == v["accepted_gpu_seconds"],
}


@lease.command("watch")
@node_options
@click.argument("lease_id", type=click.IntRange(1))
@click.option("--until", type=click.Choice(sorted(UNTIL)), default="finalized", show_default=True,
              help="stop when the lease reaches this point")
@click.option("--timeout", type=click.FloatRange(1), help=f"give up after this many seconds (exit {EXIT_TIMEOUT})")
@click.option("--interval", type=click.FloatRange(0.2), default=1.0, show_default=True)
@json_option
def lease_watch(node: NodeRef, lease_id: int, until: str, timeout: float | None, interval: float,
                as_json: bool) -> None:
    """Live progress of a lease: heartbeats, checkpoints, settlements, deposit left; one line per change, and one
    per contract event of the lease with the transaction that carried it.

    Example: gpunet lease watch 1 --data-dir consumer-node --until job-done
    """
    out = console()
    deadline = time.monotonic() + timeout if timeout else None
    seen: tuple[Any, ...] = ()
    seen_txs: set[tuple[str, str]] = set()
    while True:
        v = node.get(f"/v1/leases/{lease_id}")
        for t in v.get("transactions", []):
            if (t["tx"], t["event"]) in seen_txs:
                continue
            seen_txs.add((t["tx"], t["event"]))
            if as_json:
                click.echo(json.dumps({"lease_id": lease_id} | t))
            else:
                seq = f" seq {t['seq']}" if "seq" in t else ""
                out(f"{time.strftime('%H:%M:%S')} lease {lease_id} {t['event']}{seq} · tx {t['tx']} "
                    f"(block {t['block']})")
        now = (v["status"], v["heartbeats"], v["accepted_seq"], v["settled_seq"], v["paid"], "job_result" in v,
               v["deposit"])
        if now != seen:
            seen = now
            if as_json:
                click.echo(json.dumps({k: v.get(k) for k in (
                    "lease_id", "status", "heartbeats", "accepted_seq", "accepted_gpu_seconds", "settled_seq",
                    "settled_gpu_seconds", "paid", "deposit", "refund")} | {"deposit_left": str(_left(v))}))
            else:
                job = (f" · job exited {v['job_result']['exit_code']}" if "job_result" in v else "")
                out(f"{time.strftime('%H:%M:%S')} lease {lease_id} {v['status']:<10} heartbeats {v['heartbeats']:>4} · "
                    f"checkpoints {v['accepted_seq']:>3} ({v['accepted_gpu_seconds']} GPU·s) · settled seq "
                    f"{v['settled_seq']:>3} · paid {gdev(v['paid'])} gDEV · left {gdev(_left(v))} gDEV{job}")
        if UNTIL[until](v):
            return
        if deadline is not None and time.monotonic() > deadline:
            click.echo(f"error: lease {lease_id} did not reach '{until}' within {timeout:g}s", err=True)
            sys.exit(EXIT_TIMEOUT)
        time.sleep(interval)
