"""The rules the chain layer applies to a public endpoint's failures, without a chain: what is retried, what splits
a log range, what counts as an outage, and how a lost send is told apart from a refused one."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from web3.exceptions import Web3RPCError

from node.chain.events import log_range_too_large
from node.chain.receipts import pool_answer
from node.chain.rpc import ChainHealth, rate_limited, transient_reason

pytestmark = pytest.mark.fault


def _http_error(status: int) -> aiohttp.ClientResponseError:
    return aiohttp.ClientResponseError(request_info=None, history=(), status=status)  # type: ignore[arg-type]


@pytest.mark.parametrize(("exc", "reason"), [
    (_http_error(429), "http_429"),
    (_http_error(503), "http_5xx"),
    (_http_error(400), None),
    (TimeoutError(), "timeout"),
    (aiohttp.ServerDisconnectedError(), "connection"),
    (ConnectionRefusedError(), "connection"),
    (ValueError("bad"), None),
    (Web3RPCError("execution reverted"), None),
])
def test_only_transient_failures_are_retried(exc: BaseException, reason: str | None) -> None:
    assert transient_reason(exc) == reason


@pytest.mark.parametrize(("response", "throttled"), [
    ({"jsonrpc": "2.0", "id": 1, "error": {"code": -32005, "message": "daily request count exceeded, request rate "
                                                                      "limited"}}, True),
    ({"jsonrpc": "2.0", "id": 1, "error": {"code": 429, "message": "Too Many Requests"}}, True),
    ({"jsonrpc": "2.0", "id": 1, "error": {"code": -32005, "message": "query returned more than 10000 results"}},
     False),
    ({"jsonrpc": "2.0", "id": 1, "error": {"code": 3, "message": "execution reverted"}}, False),
    ({"jsonrpc": "2.0", "id": 1, "result": "0x1"}, False),
])
def test_throttling_answers_are_told_from_refusals(response: dict[str, Any], throttled: bool) -> None:
    assert rate_limited(response) is throttled  # type: ignore[arg-type]


@pytest.mark.parametrize(("message", "too_large"), [
    ("query returned more than 10000 results. Try with this block range [0x1, 0x2].", True),  # Infura
    ("Log response size exceeded. You can make eth_getLogs requests with up to a 2K block range", True),  # Alchemy
    ("exceed maximum block range: 5000", True),  # geth-style providers
    ("eth_getLogs is limited to a 10,000 range", True),  # QuickNode
    ("block range is too wide", True),
    ("invalid argument 0: hex string without 0x prefix", False),
    ("execution reverted", False),
])
def test_range_cap_errors_split_the_range_and_nothing_else_does(message: str, too_large: bool) -> None:
    assert log_range_too_large(Web3RPCError(message)) is too_large
    assert not log_range_too_large(TimeoutError(message))


@pytest.mark.parametrize(("message", "answer"), [
    ("already known", "known"),
    ("transaction already imported", "known"),
    ("nonce too low: next nonce 5, tx nonce 4", "nonce too low"),
    ("insufficient funds for gas * price + value", None),
    ("max fee per gas less than block base fee", None),
])
def test_a_resent_transaction_is_recognised(message: str, answer: str | None) -> None:
    assert pool_answer(Web3RPCError(message)) == answer


def test_an_outage_starts_after_repeated_failures_or_a_give_up_and_ends_at_the_first_success() -> None:
    h = ChainHealth()
    h.failed("connection", "refused", gave_up=False)
    h.failed("connection", "refused", gave_up=False)
    assert h.up and h.snapshot()["rpc"] == "up"
    h.failed("connection", "refused", gave_up=False)
    assert not h.up and h.outages == 1 and h.down_since is not None
    h.failed("timeout", "slow", gave_up=True)
    assert h.outages == 1  # the same outage
    snap = h.snapshot()
    assert snap["rpc"] == "down" and snap["errors"] == 4 and snap["last_error"].startswith("timeout")
    h.ok()
    assert h.up and h.down_since is None and h.consecutive_failures == 0 and h.outage_seconds >= 0
    h.failed("http_429", "busy", gave_up=True)
    assert not h.up and h.outages == 2
