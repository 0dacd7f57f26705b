"""Small HTML building blocks: the page frame, tables with fixed columns, links between the views, an SVG chart.
Every value is escaped here; callers pass text, or ``Markup`` for HTML they built with these functions."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from urllib.parse import urlencode

from node.api.ui.fmt import DASH, short


class Markup(str):
    """HTML that is already safe to insert."""


def e(value: object) -> Markup:
    return value if isinstance(value, Markup) else Markup(escape(DASH if value is None else str(value)))


NAV = (("/", "Overview"), ("/market", "Market"), ("/leases", "My leases"), ("/money", "Money"),
       ("/peers", "Peers"), ("/explorer", "Explorer"))


def page(title: str, body: str, *, active: str, refresh: bool = True) -> str:
    on = ' class="on"'
    nav = "".join(f'<a href="{href}"{on if href == active else ""}>{label}</a>' for href, label in NAV)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{e(title)} · gpunet node</title><link rel="icon" href="data:,">'
        '<link rel="stylesheet" href="/static/dashboard.css"><script src="/static/dashboard.js" defer></script>'
        f'</head><body data-refresh="{"5" if refresh else ""}"><header><strong>gpunet</strong><nav>{nav}</nav>'
        '<form id="token-form" class="token"><label>API token <input id="token" type="password" '
        'autocomplete="off" placeholder="for actions"></label><button>Keep</button><span id="token-state">'
        '</span></form></header>'
        f'<main><h1>{e(title)}</h1>{body}</main></body></html>'
    )


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], *, empty: str = "Nothing yet.",
          cls: str = "") -> Markup:
    rows = list(rows)
    if not rows:
        return Markup(f'<p class="empty">{e(empty)}</p>')
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return Markup(f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')


def facts(items: Iterable[tuple[str, object]]) -> Markup:
    return Markup('<dl class="facts">' + "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in items) + "</dl>")


def link(href: str, text: object, title: str | None = None) -> Markup:
    t = f' title="{escape(title)}"' if title else ""
    return Markup(f'<a href="{escape(href)}"{t}>{e(text)}</a>')


def explore(kind: str, value: object, text: object | None = None) -> Markup:
    """A link to the explorer narrowed to one lease, provider, offer or transaction."""
    if value in (None, ""):
        return e(None)
    v = str(value)
    label = text if text is not None else (short(v) if v.startswith("0x") else v)
    return link("/explorer?" + urlencode({kind: v}), label, v)


def badge(text: str) -> Markup:
    return Markup(f'<span class="badge b-{escape(text.lower())}">{e(text)}</span>')


def svg_chart(points: Sequence[tuple[float, float]], *, width: int = 640, height: int = 180,
              x_label: str = "", y_label: str = "", marks: Sequence[tuple[float, str]] = ()) -> Markup:
    """A line chart of ``points`` (x ascending) with axis extremes labelled; ``marks`` are vertical lines at x."""
    if len(points) < 2:
        return Markup('<p class="empty">Not enough data for a chart yet.</p>')
    pad_l, pad_b, pad_t, pad_r = 56, 24, 10, 10
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y1 = max(ys) if max(ys) > 0 else 1

    def sx(x: float) -> float:
        return pad_l + (x - x0) / (x1 - x0) * (width - pad_l - pad_r)

    def sy(y: float) -> float:
        return height - pad_b - y / y1 * (height - pad_b - pad_t)

    line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
    lines = "".join(f'<line class="mark" x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{pad_t}" y2="{height - pad_b}">'
                    f"<title>{e(t)}</title></line>" for x, t in marks if x0 <= x <= x1)
    return Markup(
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{e(y_label)} over {e(x_label)}">'
        f'<line class="axis" x1="{pad_l}" y1="{height - pad_b}" x2="{width - pad_r}" y2="{height - pad_b}"/>'
        f'<line class="axis" x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{height - pad_b}"/>'
        f'<text x="{pad_l - 4}" y="{pad_t + 8}" text-anchor="end">{y1:g}</text>'
        f'<text x="{pad_l - 4}" y="{height - pad_b}" text-anchor="end">0</text>'
        f'<text x="{pad_l}" y="{height - 6}">{e(x_label)}</text>'
        f'<text x="{pad_l - 50}" y="{height / 2:.0f}">{e(y_label)}</text>'
        f'{lines}<polyline class="line" points="{line}"/></svg>'
    )
