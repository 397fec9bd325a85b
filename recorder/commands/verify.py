"""``bfx-recorder verify``: recompute the hash chain and list every gap; exit 1 if broken."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import orjson

from recorder.audit.balances import BalanceReport, check_balances
from recorder.audit.verify import Report, verify
from recorder.commands.common import (
    account_option,
    open_engine,
    parse_time,
    pick_account,
    with_config,
)
from recorder.config import Config, ConfigError
from recorder.store.eventlog import EventLog
from recorder.store.types import utc


def parse_head(option: str, text: str) -> tuple[int, str]:
    """``ID:HASH`` (an ``ACCOUNT `` prefix, as `head` prints it, is allowed)."""
    value = text.strip().split()[-1] if text.strip() else ""
    ident, _, digest = value.partition(":")
    if not ident.isdigit() or len(digest) != 64:
        raise ConfigError(option, f"{text!r} is not ID:HASH", "copy a line of `bfx-recorder head`")
    return int(ident), digest


def read_heads(path: str) -> list[tuple[int, str]]:
    """A file of heads: the output of `head --json`, or of `head` (one per line)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError("--heads", f"cannot read {path}: {exc.strerror}", "give a file") from None
    if text.lstrip().startswith("["):
        try:
            return [(int(h["id"]), str(h["hash"])) for h in orjson.loads(text)]
        except (ValueError, KeyError, TypeError):
            raise ConfigError(
                "--heads", f"{path} is not `head --json` output", "regenerate it"
            ) from None
    return [parse_head("--heads", line) for line in text.splitlines() if line.strip()]


@click.command("verify")
@account_option
@click.option(
    "--head",
    "heads",
    multiple=True,
    help="ID:HASH kept from `bfx-recorder head`; fail if the log no longer has it (repeatable).",
)
@click.option(
    "--heads",
    "heads_file",
    type=click.Path(dir_okay=False),
    help="A file of heads (`head` or `head --json` output).",
)
@click.option(
    "--balances",
    is_flag=True,
    help="Also check that balances follow from the entries (ledger chain, socket changes, "
    "reconnect snapshots); exit 1 on an unexplained break.",
)
@click.option("--since", default=None, help="Only findings at or after this ISO 8601 time.")
@click.option("--details", is_flag=True, help="List every finding, not only the summary.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of lines.")
@with_config
def command(
    cfg: Config,
    account: str | None,
    heads: tuple[str, ...],
    heads_file: str | None,
    balances: bool,
    since: str | None,
    details: bool,
    as_json: bool,
) -> None:
    """Check the hash chain and list every gap; exit 1 if the chain is broken, a kept head
    is no longer in the log, or (--balances) a balance does not follow from the entries."""
    start = parse_time("--since", since)
    wanted = [parse_head("--head", h) for h in heads]
    if heads_file:
        wanted += read_heads(heads_file)
    engine = open_engine(cfg, read_only=True)
    try:
        log = EventLog(engine)
        if account:
            pick_account(log.accounts(), account)
        report = verify(engine, account)
        found = {ident: log.hash_at(ident) for ident, _ in wanted}
        checked = check_balances(engine, account) if balances else None
    finally:
        engine.dispose()
    if start is not None:
        report.findings = [f for f in report.findings if f.at is None or _after(f.at, start)]
        if checked is not None:
            checked.findings = [f for f in checked.findings if f.at is None or _after(f.at, start)]
    kept = _kept_heads(wanted, found)
    lost = sum(1 for k in kept if k["state"] != "present")
    code = 0 if report.ok and not lost and (checked is None or checked.ok) else 1
    if as_json:
        doc = _as_json(report, kept, code)
        if checked is not None:
            doc["balances"] = checked.as_json()
        click.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
    else:
        _print(report, kept, details)
        if checked is not None:
            _print_balances(checked, details)
    sys.exit(code)


def _after(at: Any, start: Any) -> bool:
    found = utc(at)
    return found is not None and found >= start


def _print_balances(checked: BalanceReport, details: bool) -> None:
    for (acc, wallet, ccy), t in sorted(checked.tallies.items()):
        click.echo(
            f"{acc} {wallet} {ccy}: ledger {t.links_verified}/{max(t.ledger_rows - 1, 0)} links "
            f"verified; socket {t.socket_accounted}/{t.socket_changes} changes accounted; "
            f"snapshots {t.snapshot_explained}/{t.snapshot_differences} differences explained"
        )
    for f in checked.findings:
        if details or f.fails:
            at = f.at.isoformat() if f.at else "-"
            click.echo(f"  {at} {f.account} {f.wallet} {f.currency} {f.check} {f.kind}: {f.detail}")
    counts = ", ".join(f"{n} {what}" for what, n in checked.counts().items())
    verdict = "balances follow from the entries" if checked.ok else "balances BROKEN"
    click.echo(f"{verdict}" + (f" ({counts})" if counts else ""))


def _kept_heads(
    wanted: list[tuple[int, str]], found: dict[int, tuple[str, str] | None]
) -> list[dict[str, Any]]:
    """Each kept head: present, missing (the tail was removed) or changed."""
    kept = []
    for ident, digest in wanted:
        row = found[ident]
        state = (
            "present"
            if row is not None and row[1] == digest
            else ("missing" if row is None else "changed")
        )
        kept.append({"id": ident, "hash": digest, "state": state})
    return kept


def _as_json(report: Report, kept: list[dict[str, Any]], code: int) -> dict[str, Any]:
    return {
        "ok": code == 0,
        "accounts": {
            acc: {"events_checked": n, "broken_at": report.broken.get(acc)}
            for acc, n in sorted(report.checked.items())
        },
        "kept_heads": kept,
        "counts": report.counts(),
        "findings": [f.as_json() for f in report.findings],
    }


def _print(report: Report, kept: list[dict[str, Any]], details: bool = False) -> None:
    for k in kept:
        short = f"{k['id']}:{str(k['hash'])[:16]}…"
        if k["state"] == "present":
            click.echo(f"kept head {short} is in the log")
        else:
            why = "missing (the tail was removed)" if k["state"] == "missing" else "changed"
            click.echo(f"kept head {short} is {why}: the log was altered")
    for acc, n in sorted(report.checked.items()):
        if acc in report.broken:
            click.echo(
                f"{acc}: hash chain BROKEN at event {report.broken[acc]} "
                f"({n} events before it verified)"
            )
        else:
            click.echo(f"{acc}: hash chain intact ({n} events)")
    if details:
        for f in report.findings:
            at = f.at.isoformat() if f.at else "-"
            where = f" event {f.event_id}" if f.event_id else ""
            click.echo(f"  {at} {f.account} {f.what}{where}: {f.detail}")
    counts = ", ".join(f"{n} {what}" for what, n in report.counts().items())
    click.echo(f"{len(report.findings)} finding(s)" + (f": {counts}" if counts else ""))
    if report.findings and not details:
        click.echo("(--details lists each one; --since T only the recent ones)")
