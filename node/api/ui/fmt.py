"""Human units for the pages: token amounts with their decimals, prices per GPU-hour, relative times."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from html import escape

TOKEN = "gDEV"
DASH = "\u2013"  # shown for a missing value
DECIMALS = 18


def amount(base: int | str | None, unit: str = TOKEN, decimals: int = DECIMALS, places: int = 6) -> str:
    """``1234500000000000000000`` -> ``"1,234.5 gDEV"``: thousands grouped, at most ``places`` decimals shown
    (a tiny non-zero amount shows as ``< 0.000001``)."""
    if base is None or base == "":
        return DASH
    n = int(base)
    sign = "-" if n < 0 else ""
    n = abs(n)
    whole, frac = divmod(n, 10**decimals)
    shown = frac // 10 ** (decimals - places) if decimals > places else frac * 10 ** (places - decimals)
    if n and not whole and not shown:
        return f"< {10 ** -places:.{places}f} {unit}"
    text = f"{whole:,}"
    digits = str(shown).rjust(places, "0").rstrip("0")
    if digits:
        text += "." + digits
    return f"{sign}{text} {unit}"


def plain(base: int, decimals: int = DECIMALS) -> str:
    """Base units as an exact decimal without grouping: ``1500000000000000000`` -> ``"1.5"`` (for form fields)."""
    whole, frac = divmod(int(base), 10**decimals)
    digits = str(frac).rjust(decimals, "0").rstrip("0")
    return f"{whole}.{digits}" if digits else str(whole)


def from_plain(text: str, decimals: int = DECIMALS) -> int:
    """``"1.5"`` -> base units; ValueError unless digits with at most ``decimals`` decimals."""
    if not re.fullmatch(rf"[0-9]{{1,60}}(\.[0-9]{{1,{decimals}}})?", text):
        raise ValueError(f"{text!r} is not an amount (digits, at most {decimals} decimals)")
    whole, _, frac = text.partition(".")
    return int(whole) * 10**decimals + int(frac.ljust(decimals, "0") or "0")


def per_gpu_hour(price_per_gpu_second: int | str) -> str:
    return amount(int(price_per_gpu_second) * 3600, f"{TOKEN}/GPU-h")


def relative(ts: float | int | None, now: float | None = None) -> str:
    """``"3 min ago"`` / ``"in 2 h"`` in a ``<time>`` element the page script keeps current."""
    if not ts:
        return DASH
    now = time.time() if now is None else now
    iso = datetime.fromtimestamp(float(ts), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (f'<time datetime="{iso}" title="{iso}" data-ts="{float(ts):.0f}">'
            f"{escape(ago(float(ts) - now))}</time>")


def ago(delta: float) -> str:
    future, d = delta > 0, abs(delta)
    if d < 5:
        return "just now"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min"), (1, "s")):
        if d >= size:
            text = f"{int(d // size)} {unit}"
            return f"in {text}" if future else f"{text} ago"
    return "just now"


def duration(seconds: int | float | None) -> str:
    if seconds is None:
        return DASH
    s = int(seconds)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


def short(text: str | None, keep: int = 6) -> str:
    if not text:
        return DASH
    return text if len(text) <= 2 + 2 * keep else f"{text[:2 + keep]}…{text[-keep:]}"
