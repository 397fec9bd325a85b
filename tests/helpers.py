"""Test helpers shared by several modules."""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
import trio

from recorder import health
from recorder.config import (
    AccountConfig,
    AuditConfig,
    Config,
    Credentials,
    DatabaseConfig,
    LoggingConfig,
    MetricsConfig,
    Secret,
    StatusConfig,
    WriterConfig,
)
from recorder.daemon import Recorder
from recorder.simulator.model import AccountModel
from recorder.simulator.server import Simulator
from recorder.store.database import Database
from recorder.store.eventlog import EventLog, NewEvent
from recorder.store.schema import (
    PROJECTION_TABLES,
    events,
    fold_findings,
    projector_checkpoints,
    reconciliations,
    sessions,
)
from recorder.store.sessions import open_session
from recorder.upstream.rest import RestClient


class SimThread:
    """A simulator on its own trio loop in a thread (for asyncio clients and subprocesses)."""

    def __init__(self, **kwargs: Any) -> None:
        self.sim = Simulator(**kwargs)
        self.ports: queue.Queue[int] = queue.Queue()
        self.token: trio.lowlevel.TrioToken | None = None
        self.cancel: trio.CancelScope | None = None
        self.thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)

    async def _main(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as scope:
            self.cancel = scope
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                self.ports.put(await nursery.start(self.sim.serve))

    def __enter__(self) -> SimThread:
        self.thread.start()
        self.port = self.ports.get(timeout=10)
        return self

    def call(self, fn: Any, *args: Any) -> Any:
        return trio.from_thread.run_sync(fn, *args, trio_token=self.token)

    def run(self, afn: Any, *args: Any) -> Any:
        return trio.from_thread.run(afn, *args, trio_token=self.token)

    def spawn(self, afn: Any, *args: Any) -> None:
        """Start ``afn(*args)`` as a task on the simulator's loop, without waiting for it."""
        self.call(self.nursery.start_soon, afn, *args)

    def __exit__(self, *exc: object) -> None:
        assert self.cancel is not None
        self.call(self.cancel.cancel)
        self.thread.join(10)


def closed_port() -> int:
    """A loopback port nothing listens on (bound once, then closed): a REST host that
    cannot be reached."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# The crash, fault and metrics tests run with the backfill off and with it on against a REST
# host that cannot be reached: the socket's frames must not depend on REST.
REST_CASES = ["rest-off", "rest-unreachable"]


def rest_port_for(case: str) -> int | None:
    return closed_port() if case == "rest-unreachable" else None


def dump_database(engine: sa.Engine) -> str:
    """Every row of every table, as text (for 'the secret appears nowhere' checks)."""
    out = []
    insp = sa.inspect(engine)
    with engine.connect() as conn:
        for table in insp.get_table_names():
            for row in conn.execute(sa.text(f'SELECT * FROM "{table}"')):
                out.append(f"{table}: {tuple(row)!r}")
    return "\n".join(out)


# --- waiting on conditions, not on time -----------------------------------------------------
# Each helper waits for a state the test needs (a bounded wait: a timeout is a failure), so
# no test passes or fails by timing luck.


async def wait_until(
    condition: Callable[[], bool], what: str = "condition", timeout: float = 20.0
) -> None:
    """Wait until ``condition()`` holds, looking again after each short pause."""
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.01)


def poll(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """:func:`wait_until` for tests outside trio (subprocesses): wait until ``condition()``
    holds, looking again after each short pause; a timeout is a failure naming ``what``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


async def progressed(recorder: Recorder, events_: int = 20) -> None:
    """Wait until the writer has committed ``events_`` more events than now: frames are
    flowing through the current session."""
    target = recorder.writer.stats.committed_events + events_
    await wait_until(lambda: recorder.writer.stats.committed_events >= target, "progress")


def recorded_on_last_session(engine: sa.Engine, account: str | None = None) -> int:
    """Frames recorded on the newest session (of ``account``, if given)."""
    newest = sa.select(sa.func.max(events.c.session_id))
    mine = [events.c.account == account] if account is not None else []
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count())
                .select_from(events)
                .where(
                    *mine,
                    events.c.session_id == newest.where(*mine).scalar_subquery(),
                    events.c.kind.not_like("recorder.%"),
                    events.c.kind.not_like("rest.%"),  # REST answers: not from the socket
                )
            ).scalar_one()
        )


async def settle(recorder: Recorder, account: str = "main") -> None:
    """Wait until every projector of ``account`` has folded everything committed so far."""

    await wait_until(lambda: health.caught_up(recorder, account), "projectors caught up")


async def drain(sim: Simulator, recorder: Recorder, engine: sa.Engine) -> None:
    """With the simulator paused: wait until the current session has recorded every frame the
    simulator sent on it, then until the projections have folded them."""
    await sim.settled()  # a step that began before the pause has sent everything
    await wait_until(
        lambda: recorded_on_last_session(engine) == len(sim.frames_for(sim.connection_count)),
        "the last session recorded everything sent",
    )
    await settle(recorder)


async def quiesce(sim: Simulator, recorder: Recorder, engine: sa.Engine) -> None:
    """Stop the simulated account (no activity, no heartbeats), then :func:`drain`."""
    sim.pause()
    sim.heartbeat_period = 1e9
    await drain(sim, recorder, engine)


async def reauth(
    sim: Simulator, fault: str, arg: float | None = None, *, steps_while_out: int = 0
) -> None:
    """Inject ``fault`` and wait until a client has authenticated again; with
    ``steps_while_out``, the account makes that many moves while every client is kept out
    (the gap surely holds them)."""
    auth = sim.auth_events
    if steps_while_out:
        sim.refuse()
    await sim.inject(fault, arg)
    if steps_while_out:
        await sim.advance(steps_while_out)
        sim.refuse(0)
    with trio.fail_after(20):
        await auth.wait()


# --- moved here from the test modules that defined them (no test module imports another) ---

KEY = "daemon-test-key"
SECRET = "daemon-test-secret-3f9a0c1e5b7d"
EVENTS = [
    "order_snapshot",
    "order_new",
    "order_update",
    "order_cancel",
    "position_snapshot",
    "position_new",
    "position_update",
    "position_close",
    "trade_execution",
    "trade_execution_update",
    "funding_offer_snapshot",
    "funding_offer_new",
    "funding_offer_update",
    "funding_offer_cancel",
    "funding_credit_snapshot",
    "funding_credit_new",
    "funding_credit_update",
    "funding_credit_close",
    "funding_loan_snapshot",
    "funding_loan_new",
    "funding_loan_update",
    "funding_loan_close",
    "wallet_snapshot",
    "wallet_update",
    "balance_update",
    "base_margin_info",
    "symbol_margin_info",
    "funding_info_update",
    "on-req-notification",
    "oc-req-notification",
    "fon-req-notification",
    "foc-req-notification",
]


def socket_frames(engine: sa.Engine, session_id: int) -> list[str]:
    """What a session recorded from its socket (not its markers, not REST answers)."""
    with engine.connect() as conn:
        return [
            frame
            for frame, kind in conn.execute(
                sa.select(events.c.frame, events.c.kind)
                .where(events.c.session_id == session_id)
                .order_by(events.c.id)
            )
            if not kind.startswith(("recorder.", "rest."))
        ]


def _fold(received: list[tuple[str, Any]]) -> dict[str, dict[Any, Any]]:
    """What a client knows after applying the snapshots and updates it received, in order."""
    orders: dict[int, Any] = {}
    positions: dict[str, Any] = {}
    wallets: dict[tuple[str, str], Any] = {}
    trades: dict[int, Any] = {}
    for name, data in received:
        if name == "order_snapshot":
            orders = {o.id: o for o in data}
        elif name in ("order_new", "order_update"):
            orders[data.id] = data
        elif name == "order_cancel":
            orders.pop(data.id, None)
        elif name == "position_snapshot":
            positions = {p.symbol: p for p in data}
        elif name in ("position_new", "position_update"):
            positions[data.symbol] = data
        elif name == "position_close":
            positions.pop(data.symbol, None)
        elif name == "wallet_snapshot":
            wallets = {(w.wallet_type, w.currency): w for w in data}
        elif name == "wallet_update":
            wallets[(data.wallet_type, data.currency)] = data
        elif name == "trade_execution_update":
            trades[data.id] = data
    return {"orders": orders, "positions": positions, "wallets": wallets, "trades": trades}


def synthetic_log(seed: int, steps: int, gap_every: int, snap_every: int) -> list[tuple[str, str]]:
    """(kind, frame) pairs as a recorder would store them: snapshots on (re)connect, updates,
    disconnect markers, and frames lost in gaps (the model moves on, nothing is logged)."""
    model = AccountModel(seed=seed, clock=lambda: 1_700_000_000_000)
    log: list[tuple[str, str]] = []

    def snapshots() -> None:
        for abbr, payload in model.snapshots():
            log.append((abbr, orjson.dumps([0, abbr, payload]).decode()))

    snapshots()
    for i in range(1, steps + 1):
        messages = model.step()
        if gap_every and i % gap_every == 0:
            log.append(
                ("recorder.disconnected", '{"event":"recorder.disconnected","reason":"closed"}')
            )
            continue  # these frames were never received
        for abbr, payload in messages:
            log.append((abbr, orjson.dumps([0, abbr, payload]).decode()))
        if snap_every and i % snap_every == 0:
            snapshots()
    log.append(("malformed", '[0,"on",[1,2'))
    log.append(("os", '[0,"os",{"not":"a list"}]'))  # a known kind with a bad payload
    return log


def store_log(engine: sa.Engine, account: str, log: list[tuple[str, str]]) -> None:
    sid = open_session(engine, account, "ws://127.0.0.1/ws/2", LOG_T0)
    items = [
        NewEvent(account, sid, LOG_T0 + timedelta(milliseconds=i), 0, kind, None, None, frame)
        for i, (kind, frame) in enumerate(log)
    ]
    EventLog(engine).append(items, {})


def table_rows(engine: sa.Engine, name: str, account: str = "main") -> list[dict[str, Any]]:
    table = PROJECTION_TABLES[name]
    pk = [c for c in table.primary_key.columns]
    with engine.connect() as conn:
        return [
            dict(r)
            for r in conn.execute(
                sa.select(table).where(table.c.account == account).order_by(*pk)
            ).mappings()
        ]


def everything(engine: sa.Engine, account: str = "main") -> dict[str, Any]:
    out: dict[str, Any] = {name: table_rows(engine, name, account) for name in PROJECTION_TABLES}
    with engine.connect() as conn:
        out["reconciliations"] = [
            (r.event_id, r.projection, r.key, r.problem, r.folded, r.snapshot, r.explained_by)
            for r in conn.execute(
                sa.select(reconciliations)
                .where(reconciliations.c.account == account)
                .order_by(
                    reconciliations.c.event_id, reconciliations.c.projection, reconciliations.c.key
                )
            )
        ]
        out["fold_findings"] = sorted(
            (r.projection, r.event_id, r.key, r.reason, r.row)
            for r in conn.execute(
                sa.select(fold_findings).where(fold_findings.c.account == account)
            )
        )
        out["checkpoints"] = [
            (r.projector, r.event_id, r.stale, r.synced, r.skipped)
            for r in conn.execute(
                sa.select(projector_checkpoints)
                .where(projector_checkpoints.c.account == account)
                .order_by(projector_checkpoints.c.projector)
            )
        ]
    return out


def make_recorder(
    engine: sa.Engine,
    port: int,
    *,
    accounts: list[tuple[str, str, str]] | None = None,
    writer: WriterConfig | None = None,
    rest_port: int | None = None,
    allow_write_key: bool = False,
    metrics: MetricsConfig | None = None,
    logging_cfg: LoggingConfig | None = None,
    status: StatusConfig | None = None,
    account_options: dict[str, Any] | None = None,
    audit: AuditConfig | None = None,
    **kw: Any,
) -> Recorder:
    """A recorder on the simulator at ``port``; with ``rest_port`` it backfills gaps from
    the simulator's REST API (paced and retried fast, for tests), else backfill is off."""
    cfg = Config(
        database=DatabaseConfig(url=str(engine.url)),
        writer=writer or WriterConfig(batch_max_ms=5, unavailable_timeout_s=5),
        metrics=metrics or MetricsConfig(),
        logging=logging_cfg or LoggingConfig(),
        status=status or StatusConfig(),
        audit=audit or AuditConfig(),
    )
    accounts = accounts or [("main", KEY, SECRET)]
    accs = [
        (
            AccountConfig(
                name=name,
                url=f"ws://127.0.0.1:{port}/ws/2",
                heartbeat_period_s=0.25,
                backoff_cap_s=0.2,
                backfill=rest_port is not None,
                rest_url=f"http://127.0.0.1:{rest_port or 1}/v2",
                allow_write_key=allow_write_key,
                **(account_options or {}),
            ),
            Credentials(Secret(key), Secret(secret)),
        )
        for name, key, secret in accounts
    ]
    if rest_port is not None:
        kw.setdefault(
            "rest_options",
            {
                "pace": 0.0,
                "rate_limit_wait": 0.2,
                "attempts": 3,
                "retry_delay": 0.05,
                "retry_every": 0.5,
            },
        )
    return Recorder(cfg, accs, Database(engine), connection_limit=(100, 1.0), **kw)


async def start_recording(
    nursery: trio.Nursery, sim: Simulator, engine: sa.Engine, **kw: Any
) -> Recorder:
    """Serve ``sim``, start a recorder on it, and return once it has authenticated."""
    port = await nursery.start(sim.serve)
    recorder = make_recorder(engine, port, **kw)
    first = sim.auth_events
    await nursery.start(recorder.run)
    with trio.fail_after(10):
        await first.wait()
    return recorder


def session_rows(engine: sa.Engine, account: str = "main") -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                sessions.select().where(sessions.c.account == account).order_by(sessions.c.id)
            )
        )


def event_rows(engine: sa.Engine, account: str = "main") -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(events.select().where(events.c.account == account).order_by(events.c.id))
        )


LOG_T0 = datetime(2026, 1, 1, tzinfo=UTC)  # where store_log's events begin
EV_T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)  # where ev's events begin


def ev(account: str, n: int, kind: str = "on", chan_id: int | None = 0) -> NewEvent:
    frame = f'[0,"{kind}",[{n}]]'
    return NewEvent(account, None, EV_T0 + timedelta(seconds=n), chan_id, kind, None, None, frame)


def rest_client(
    base_url: str,
    http: Any,
    emit: Callable[[Any], Any],
    **options: Any,
) -> RestClient:
    """The recorder's REST client for a test's REST host: its own increasing nonces, its own
    lock, unpaced, one try (``options`` override any of it)."""
    counter = itertools.count(1)

    async def nonce() -> int:
        return next(counter)

    settings: dict[str, Any] = {
        "account": "main",
        "base_url": base_url,
        "api_key": Secret(KEY),
        "api_secret": Secret(SECRET),
        "nonce": nonce,
        "key_lock": trio.Lock(),
        "emit": emit,
        "http": http,
        "pace": 0.0,
        "attempts": 1,
    }
    return RestClient(**{**settings, **options})


@contextlib.contextmanager
def serving_in_a_thread(server: Any) -> Iterator[int]:
    """Run ``server.serve`` (a trio server) in a thread of its own, for a client that runs
    its own event loop (the official asyncio client); yields the bound port."""
    ports: list[int] = []
    ready, stop = threading.Event(), threading.Event()

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            ports.append(await nursery.start(server.serve))
            ready.set()
            await trio.to_thread.run_sync(stop.wait)
            nursery.cancel_scope.cancel()

    thread = threading.Thread(target=trio.run, args=(serve,), daemon=True)
    thread.start()
    try:
        assert ready.wait(30), "the server did not start"
        yield ports[0]
    finally:
        stop.set()
        thread.join(10)


def official_client(port: int, received: list[tuple[str, Any]]) -> Any:
    """The official client on ``port``, every account event appended to ``received``."""
    from bfxapi import Client

    client = Client(KEY, SECRET, wss_host=f"ws://127.0.0.1:{port}/ws/2")
    for name in EVENTS:
        client.wss.on(name, lambda data, _n=name: received.append((_n, data)))
    return client


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(*args: str) -> subprocess.CompletedProcess[bytes]:
    """Debian's Chromium, headless, with no network but loopback (the proxy is a closed port;
    loopback always bypasses it)."""
    assert CHROMIUM is not None
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--proxy-server=127.0.0.1:9",
            *args,
        ],
        capture_output=True,
        timeout=120,
    )


def need_chromium() -> None:
    """Skip without Chromium, unless CI requires it (BFX_RECORDER_REQUIRE_CHROMIUM=1)."""
    import pytest

    if CHROMIUM is None:
        if os.environ.get("BFX_RECORDER_REQUIRE_CHROMIUM"):
            pytest.fail("chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")


def samples(text: str) -> dict[str, float]:
    """Prometheus text format -> {'name{labels}': value}."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def chan0(engine: sa.Engine, account: str = "main") -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(events.c.frame)
                .where(events.c.account == account, events.c.chan_id == 0)
                .order_by(events.c.id)
            ).scalars()
        )


async def record_simulation(engine: sa.Engine, seed: int, faults: list[str]) -> None:
    """A simulator run recorded into ``engine`` (account 'main'), reconnecting per fault."""
    sim = Simulator(
        seed=seed, rate=300, api_keys={KEY: SECRET}, connection_limit=None, close_after_20051=0.05
    )
    async with trio.open_nursery() as nursery:
        recorder = await start_recording(nursery, sim, engine)
        await progressed(recorder, 60)
        for fault in faults:
            if fault == "malformed":
                await sim.inject(fault)
            else:
                await reauth(sim, fault)
            await progressed(recorder, 60)
        sim.pause()
        await drain(sim, recorder, engine)
        recorder.stop()
        await recorder.finished.wait()
        nursery.cancel_scope.cancel()


async def recording_with_a_gap(
    nursery: trio.Nursery, sim: Simulator, engine: sa.Engine, frames: int, **kw: Any
) -> Recorder:
    """A recorder with the backfill on (the simulator's REST) and metrics served, that has
    recorded ``frames`` frames, lost its connection once (a gap, backfilled) and recorded
    ``frames`` more; returns once its metrics listener is up."""
    rest_port = await nursery.start(sim.serve_rest)
    recorder = await start_recording(
        nursery,
        sim,
        engine,
        rest_port=rest_port,
        metrics=MetricsConfig(listen="127.0.0.1:0"),
        **kw,
    )
    await progressed(recorder, frames)
    await reauth(sim, "drop")
    await progressed(recorder, frames)
    await wait_until(lambda: recorder.metrics_port is not None, "metrics listening")
    return recorder
