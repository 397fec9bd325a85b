"""The period statement as text and as one self-contained HTML file.

The HTML needs no network: no script, no font or style from anywhere else; the charts are
inline SVG drawn here (a balance line per wallet and currency, and the sessions' gaps on a
timeline). It prints on paper as it shows on screen. Every number it shows is the JSON
output's text (the same :func:`recorder.audit.statement.dec`), and each carries a
``data-field`` attribute naming it, so that a test can read the page as a person sees it and
compare it with the JSON.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from html import escape
from typing import Any

from recorder.audit.statement import Statement, WalletLine, dec
from recorder.protocol.ledger import GROUP_ORDER

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .5em 0; font-size: 12px; }
th, td { border: 1px solid #ccc; padding: .2em .45em; }
td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.ok { color: #176b2c; font-weight: bold; } .bad { color: #b00020; font-weight: bold; }
figure { display: inline-block; margin: .5em 1em .5em 0; }
figcaption { font-size: .9em; color: #555; }
@media print { body { margin: 0; } figure, table { page-break-inside: avoid; } }
"""


def text(st: Statement) -> str:
    out = [
        f"Statement of account {st.account}",
        f"period {st.start.isoformat()} .. {st.end.isoformat()}",
        "",
    ]
    for w in st.wallets:
        out.append(f"{w.wallet} {w.currency}")
        out.append(f"  opening balance        {dec(w.opening):>24}")
        for g in GROUP_ORDER:
            if g in w.entries:
                out.append(f"  {g:<22} {dec(w.entries[g]):>24}")
        closing = w.closing if w.closing is not None else w.opening
        out.append(f"  closing balance        {dec(closing):>24}")
        check = "holds" if w.balanced else "DOES NOT HOLD"
        out.append(
            f"  opening + entries = closing: {check} "
            f"({dec(w.opening)} + {dec(w.total)} = {dec(w.opening + w.total)})"
        )
        if w.socket_closing is not None:
            out.append(f"  last balance the socket stated: {dec(w.socket_closing)}")
        if w.unknown:
            out.append(f"  entries without a known category: {w.unknown}")
        for d in w.differences:
            out.append(f"  difference at ledger row {d['ledger_id']} ({d['at']}): {d['problem']}")
    out += ["", "Fees per currency"]
    out += [f"  {c:<8} {dec(a):>24}" for c, a in sorted(st.fees.items())] or ["  none"]
    out += ["", "Fills and volume per pair"]
    for s, p in sorted(st.pairs.items()):
        out.append(
            f"  {s:<12} {p['fills']:>6} fills  volume {dec(p['volume'])}  "
            f"notional {dec(p['notional'])}"
        )
    out += ["", "Longest positions"]
    for p in st.positions:
        out.append(
            f"  {p['symbol']} {p['position']} {p['status']} {p['seconds']} s (opened {p['opened']})"
        )
    h = st.health
    out += [
        "",
        "The record's health",
        f"  sessions: {h['sessions']}; gaps: {len(h['gaps'])} ({h['gap_seconds']} s), "
        f"{h['gaps_not_backfilled']} without a complete backfill",
    ]
    for g in h["gaps"]:
        mark = "backfilled" if g["backfilled"] else "NOT backfilled"
        out.append(f"  gap {g['from']} .. {g['to']} ({g['seconds']} s, {g['reason']}): {mark}")
    verified = "verifies" if h["chain_verified"] else "DOES NOT verify"
    out.append(f"  chain head at the end: {h['head']['id']}:{h['head']['hash']} ({verified})")
    out.append("")
    out.append("every wallet balances" if st.balanced else "SOME WALLETS DO NOT BALANCE")
    return "\n".join(out) + "\n"


def _num(field: str, value: Decimal | None) -> str:
    shown = dec(value) if value is not None else ""
    return f'<td class="n" data-field="{escape(field)}">{escape(shown or "")}</td>'


def _chart(w: WalletLine, start: datetime, end: datetime) -> str:
    """A balance line (SVG) over the period; the y axis spans the balances shown."""
    return step_chart(f"{w.wallet} {w.currency}", w.points, start, end)


def step_chart(
    name: str, points: list[tuple[datetime, Decimal]], start: datetime, end: datetime
) -> str:
    """A balance as a step line (SVG, the balance holds until the next change), with its
    range in the caption; '' without points. Shared by the statement and the status page."""
    width, height, pad = 420, 160, 8
    if not points:
        return ""
    start = max(start, points[0][0])  # from the first balance seen, not an empty period
    span = (end - start).total_seconds() or 1.0
    values = [v for _, v in points]
    low, high = min(values), max(values)
    rng = (high - low) or Decimal(1)

    def xy(at: datetime, v: Decimal) -> str:
        x = pad + (width - 2 * pad) * max(0.0, min(1.0, (at - start).total_seconds() / span))
        y = height - pad - float((v - low) / rng) * (height - 2 * pad)
        return f"{x:.1f},{y:.1f}"

    coords = []
    for i, (at, v) in enumerate(points):
        if i:
            coords.append(xy(at, points[i - 1][1]))
        coords.append(xy(at, v))
    coords.append(xy(end, points[-1][1]))
    return (
        f'<figure><svg class="chart" data-chart="{escape(name)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="balance of {escape(name)}">'
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fafafa" stroke="#ddd"/>'
        f'<polyline fill="none" stroke="#1f6fd1" stroke-width="2" points="{" ".join(coords)}"/>'
        f"</svg><figcaption>{escape(name)}: {escape(dec(low) or '')} .. "
        f"{escape(dec(high) or '')} (from {escape(start.isoformat(timespec='seconds'))})"
        "</figcaption></figure>"
    )


def _timeline(st: Statement) -> str:
    width, height = 860, 36
    span = (st.end - st.start).total_seconds() or 1.0
    bars = []
    for g in st.health["gaps"]:
        a, b = datetime.fromisoformat(g["from"]), datetime.fromisoformat(g["to"])
        x0 = max(0.0, (a - st.start).total_seconds() / span) * width
        x1 = min(1.0, (b - st.start).total_seconds() / span) * width
        colour = "#2e9d4f" if g["backfilled"] else "#d1452f"
        bars.append(
            f'<rect class="gap" x="{x0:.1f}" y="4" width="{max(x1 - x0, 2):.1f}" height="28" '
            f'fill="{colour}"><title>{escape(g["from"])} .. {escape(g["to"])}</title></rect>'
        )
    return (
        f'<svg class="timeline" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
        f'<rect x="0" y="14" width="{width}" height="8" fill="#9ec5f8"/>{"".join(bars)}</svg>'
        "<p>blue: recorded; green: a gap a complete backfill covers; red: a gap without one</p>"
    )


def html(st: Statement) -> str:
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Statement {escape(st.account)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Statement of account {escape(st.account)}</h1>",
        f"<p>Period {escape(st.start.isoformat())} .. {escape(st.end.isoformat())}. "
        + (
            "<span class='ok' data-field='balanced'>every wallet balances</span>"
            if st.balanced
            else "<span class='bad' data-field='balanced'>some wallets do not balance</span>"
        )
        + "</p>",
        "<h2>Balances</h2><table><tr><th>wallet</th><th>currency</th><th>opening</th>",
        *[f"<th>{g}</th>" for g in GROUP_ORDER],
        "<th>closing</th><th>opening + entries = closing</th><th>socket's last balance</th></tr>",
    ]
    for w in st.wallets:
        key = f"{w.wallet}/{w.currency}"
        closing = w.closing if w.closing is not None else w.opening
        parts.append(f"<tr><td>{escape(w.wallet)}</td><td>{escape(w.currency)}</td>")
        parts.append(_num(f"{key}/opening", w.opening))
        parts += [_num(f"{key}/{g}", w.entries.get(g)) for g in GROUP_ORDER]
        parts.append(_num(f"{key}/closing", closing))
        ok = "holds" if w.balanced else "does not hold"
        parts.append(f"<td class='{'ok' if w.balanced else 'bad'}'>{ok}</td>")
        parts.append(_num(f"{key}/socket_closing", w.socket_closing) + "</tr>")
    parts.append("</table>")
    for w in st.wallets:
        for d in w.differences:
            parts.append(
                f"<p class='bad'>{escape(w.wallet)} {escape(w.currency)}: ledger row "
                f"{d['ledger_id']} ({escape(str(d['at']))}): {escape(d['problem'])}</p>"
            )
    parts.append("<h2>Balance over time</h2>")
    parts += [_chart(w, st.start, st.end) for w in st.wallets]
    parts.append("<h2>Fees per currency</h2><table><tr><th>currency</th><th>fees</th></tr>")
    parts += [
        f"<tr><td>{escape(c)}</td>{_num(f'fees/{c}', a)}</tr>" for c, a in sorted(st.fees.items())
    ]
    parts.append(
        "</table><h2>Fills and volume per pair</h2><table><tr><th>pair</th>"
        "<th>fills</th><th>volume</th><th>notional</th></tr>"
    )
    for s, p in sorted(st.pairs.items()):
        parts.append(
            f"<tr><td>{escape(s)}</td><td class='n' data-field='pairs/{escape(s)}/fills'>"
            f"{p['fills']}</td>{_num(f'pairs/{s}/volume', p['volume'])}"
            f"{_num(f'pairs/{s}/notional', p['notional'])}</tr>"
        )
    parts.append(
        "</table><h2>Longest positions</h2><table><tr><th>symbol</th><th>position"
        "</th><th>status</th><th>open for (s)</th><th>opened</th></tr>"
    )
    parts += [
        f"<tr><td>{escape(str(p['symbol']))}</td><td>{escape(str(p['position']))}</td>"
        f"<td>{escape(str(p['status']))}</td><td class='n'>{p['seconds']}</td>"
        f"<td>{escape(p['opened'])}</td></tr>"
        for p in st.positions
    ]
    h: dict[str, Any] = st.health
    verified = "verifies" if h["chain_verified"] else "does not verify"
    parts += [
        "</table><h2>The record's health</h2>",
        f"<p><span data-field='health/sessions'>{h['sessions']}</span> sessions; "
        f"<span data-field='health/gaps'>{len(h['gaps'])}</span> gaps "
        f"({h['gap_seconds']} s), {h['gaps_not_backfilled']} without a complete backfill.</p>",
        _timeline(st),
        f"<p>Chain head at the end: <code data-field='health/head'>{h['head']['id']}:"
        f"{escape(h['head']['hash'])}</code> ({verified}).</p>",
        "</body></html>",
    ]
    return "".join(parts)
