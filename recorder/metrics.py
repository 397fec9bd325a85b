"""Metrics and health, answered from memory: ``GET /metrics`` (Prometheus text format) and
``GET /healthz`` (200, or 503 with a one-line JSON reason), and the status page at ``GET /``
(:mod:`recorder.statuspage`, which alone reads the database, on its own engine), served by
hypercorn's trio worker in a thread of its own with its own trio loop (connections, parsing,
formatting and the page never take a turn of the daemon's loop, where the sockets are read),
only when ``[metrics] listen`` is set. What the daemon knows is read in the daemon's thread
(:func:`recorder.serving.call_in`): one short call per request, no lock on the hot path.

Nothing here queries the database: the writer, the sessions, the projectors and the
backfillers keep what is needed in memory, and a custom collector turns it into metric
families at scrape time (the hot path pays no per-frame metric calls).
"""

from __future__ import annotations

import hmac
import math
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from recorder import health
from recorder.health import Observed
from recorder.serving import call_in, is_http, serve_asgi_in_thread
from recorder.statuspage import StatusPage
from recorder.writer import Commit

# Upper bounds (seconds) of the batch commit time histogram (``bfx_batch_commit_seconds``).
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass
class CommitTimes:
    """How long batches took to commit, as histogram counts: a fixed size however long the
    daemon runs (a list of every batch's time grew without bound). Fed by the writer's
    commit observer from the moment metrics are served."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(COMMIT_BUCKETS) + 1))
    total: float = 0.0  # seconds, summed

    def add(self, seconds: float) -> None:
        # The first bound >= seconds; past the last bound, the +Inf bucket.
        self.counts[bisect_left(COMMIT_BUCKETS, seconds)] += 1
        self.total += seconds

    def observe(self, commit: Commit) -> None:
        self.add(commit.seconds)


class RecorderCollector(Collector):
    """Every metric, built at scrape time from one reading of the recorder's in-memory
    state (:mod:`recorder.health`) and the writer's counts."""

    def __init__(self, recorder: Observed, times: CommitTimes) -> None:
        self.r = recorder
        self.times = times

    def collect(self) -> Iterator[Metric]:
        reading = health.read(self.r)
        yield from self._log_families(reading)
        yield self._commit_histogram()
        queue = GaugeMetricFamily("bfx_writer_queue_depth", "Items waiting for the writer")
        queue.add_metric([], reading.queue_depth)
        yield queue
        yield from self._account_families(reading)
        yield from self._projection_families(reading)
        yield from self._chain_families()
        yield from self._operations_families(reading)

    def _operations_families(self, reading: health.Reading) -> Iterator[Metric]:
        """What the alert rules compare (deploy/prometheus/alerts.yaml): how long disconnected
        against the allowance, the configured bounds, backfill and REST trouble, the writer's
        room and the database, the leases."""
        r = self.r
        gone = GaugeMetricFamily(
            "bfx_disconnected_seconds", "Seconds since the socket closed (0 while connected)",
            labels=["account"],
        )  # fmt: skip
        allowance = GaugeMetricFamily(
            "bfx_reconnect_allowance_seconds",
            "How long a reconnect may take (back-off cap and connection limit)",
            labels=["account"],
        )
        for account, a in reading.accounts.items():
            gone.add_metric([account], a.disconnected_for)
            allowance.add_metric([account], a.reconnect_allowance)
        yield gone
        yield allowance
        age_bound = GaugeMetricFamily(
            "bfx_frame_age_bound_seconds", "status.max_frame_age_s: the last frame's age bound"
        )
        age_bound.add_metric([], r.cfg.status.max_frame_age_s)
        yield age_bound
        lag_bound = GaugeMetricFamily(
            "bfx_projector_lag_bound_events", "status.max_projector_lag: the projector lag bound"
        )
        lag_bound.add_metric([], r.cfg.status.max_projector_lag)
        yield lag_bound
        oldest = GaugeMetricFamily(
            "bfx_backfill_oldest_incomplete_seconds",
            "Seconds since the oldest backfill window still incomplete first failed (0: none)",
            labels=["account"],
        )
        answers = CounterMetricFamily(
            "bfx_rest_answers",
            "REST answers by status (ok, rate-limited, unavailable, error)",
            labels=["account", "status"],
        )
        for account, backfiller in sorted(r.backfillers.items()):
            oldest.add_metric([account], backfiller.oldest_incomplete_s)
            for status in ("ok", "rate-limited", "unavailable", "error"):
                answers.add_metric([account, status], backfiller.client.answers.get(status, 0))
        yield oldest
        yield answers
        capacity = GaugeMetricFamily(
            "bfx_writer_queue_capacity", "writer.queue_size: items the writer's queue holds"
        )
        capacity.add_metric([], r.cfg.writer.queue_size)
        yield capacity
        up = GaugeMetricFamily("bfx_database_up", "0 while the database refuses commits")
        up.add_metric([], 1 if r.writer.stats.unavailable_since is None else 0)
        yield up
        held = GaugeMetricFamily(
            "bfx_lease_held", "1 while this process holds the account's lease", labels=["account"]
        )
        leases = getattr(r, "leases", {})
        for account in sorted(getattr(r, "leased", ())):
            held.add_metric([account], 1 if account in leases else 0)
        yield held

    def _chain_families(self) -> Iterator[Metric]:
        """The chain's self-check (``[audit] verify_every_s``): where it got, and whether the
        last check found the chain intact."""
        watch = getattr(self.r, "chain_watch", None)
        verified = GaugeMetricFamily(
            "bfx_chain_verified_id",
            "The last log position whose hash chain the daemon verified",
            labels=["account"],
        )
        intact = GaugeMetricFamily(
            "bfx_chain_intact",
            "1 when the last chain check found nothing wrong",
            labels=["account"],
        )
        failures = CounterMetricFamily(
            "bfx_chain_verify_failures", "Chain checks that found a problem", labels=["account"]
        )
        last = GaugeMetricFamily(
            "bfx_chain_last_check_timestamp_seconds",
            "When the chain was last checked (Unix time)",
            labels=["account"],
        )
        for account, check in watch.checks.items() if watch is not None else []:
            verified.add_metric([account], check.verified_id)
            intact.add_metric([account], 0 if check.problem else 1)
            failures.add_metric([account], check.failures)
            if check.last_check_at is not None:
                last.add_metric([account], check.last_check_at)
        yield verified
        yield intact
        yield failures
        yield last

    def _log_families(self, reading: health.Reading) -> Iterator[Metric]:
        """What the writer appended: frames by kind, events, sequence problems."""
        stats = self.r.writer.stats
        frames = CounterMetricFamily(
            "bfx_frames",
            "Frames and markers received, by account and kind",
            labels=["account", "kind"],
        )
        appended = CounterMetricFamily(
            "bfx_events_appended", "Events committed to the log", labels=["account"]
        )
        gaps = CounterMetricFamily(
            "bfx_sequence_gaps", "Sequence problems marked in the log", labels=["account"]
        )
        per_account: dict[str, int] = {}
        for (account, kind), n in sorted(stats.by_kind.items()):
            frames.add_metric([account, kind], n)
            per_account[account] = per_account.get(account, 0) + n
        for account in reading.accounts:
            appended.add_metric([account], per_account.get(account, 0))
            gaps.add_metric([account], stats.by_kind.get((account, "recorder.seq-gap"), 0))
        yield frames
        yield appended
        yield gaps

    @staticmethod
    def _account_families(reading: health.Reading) -> Iterator[Metric]:
        """Each account: connected, session ends, last frame age, head, open windows."""
        connected = GaugeMetricFamily(
            "bfx_connected", "1 while the account's socket is open", labels=["account"]
        )
        ends = CounterMetricFamily(
            "bfx_session_ends", "Sessions ended, by reason", labels=["account", "reason"]
        )
        age = GaugeMetricFamily(
            "bfx_last_frame_age_seconds", "Seconds since the last frame", labels=["account"]
        )
        head = GaugeMetricFamily(
            "bfx_head_event_id", "The account's last committed log position", labels=["account"]
        )
        windows = GaugeMetricFamily(
            "bfx_backfill_windows_open",
            "Backfill windows queued, running or waiting to be retried",
            labels=["account"],
        )
        for account, a in reading.accounts.items():
            connected.add_metric([account], 1 if a.connected else 0)
            for reason, n in sorted(a.ends.items()):
                ends.add_metric([account, reason], n)
            age.add_metric([account], a.last_frame_age)
            head.add_metric([account], a.head)
            windows.add_metric([account], a.open_windows)
        yield connected
        yield ends
        yield age
        yield head
        yield windows

    @staticmethod
    def _projection_families(reading: health.Reading) -> Iterator[Metric]:
        """Each projection's lag and differences; the live rounds' stand-backs and failures."""
        lag = GaugeMetricFamily(
            "bfx_projector_lag_events",
            "Log events a projector has not folded yet",
            labels=["account", "projector"],
        )
        lag_s = GaugeMetricFamily(
            "bfx_projector_lag_seconds",
            "Age of the oldest commit a projector has not folded yet",
            labels=["account", "projector"],
        )
        differences = CounterMetricFamily(
            "bfx_reconciliation_differences",
            "Differences found when snapshots were compared with the folded state",
            labels=["account", "projector"],
        )
        for p in reading.projections:
            lag.add_metric([p.account, p.name], p.lag)
            lag_s.add_metric([p.account, p.name], p.lag_seconds)
            differences.add_metric([p.account, p.name], p.reconciled)
        yield lag
        yield lag_s
        yield differences
        stood = CounterMetricFamily(
            "bfx_projector_stand_backs",
            "Projection rounds put off in a burst (the writer behind, or taking frames in fast)",
        )
        stood.add_metric([], reading.stand_backs)
        yield stood
        failures = CounterMetricFamily(
            "bfx_projector_failures",
            "Projection rounds that failed (recording goes on; the round is retried)",
        )
        failures.add_metric([], reading.failures)
        yield failures
        failing = GaugeMetricFamily(
            "bfx_projector_failing", "1 while projection rounds keep failing"
        )
        failing.add_metric([], int(reading.failing is not None))
        yield failing

    def _commit_histogram(self) -> Metric:
        times = self.times
        buckets, total = [], 0
        for bound, n in zip((*COMMIT_BUCKETS, math.inf), times.counts, strict=True):
            total += n
            buckets.append(("+Inf" if bound == math.inf else str(bound), total))
        family = HistogramMetricFamily(
            "bfx_batch_commit_seconds", "Time to commit one batch, retries included"
        )
        family.add_metric([], buckets, times.total)
        return family


def authorized(scope: dict[str, Any], token: str) -> bool:
    """Whether the request carries ``Authorization: Bearer <token>`` (compared in constant
    time)."""
    for name, value in scope.get("headers", []):
        if name.lower() == b"authorization":
            scheme, _, given = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token):
                return True
    return False


class Collected(Collector):
    """Metric families already collected (in the daemon's thread), to format elsewhere."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


class MetricsApp:
    """The ASGI app: /, /metrics and /healthz. Made in the daemon's loop (it observes the
    writer there); called in the listener's thread, reaching the daemon's state only through
    :func:`call_in`."""

    def __init__(self, recorder: Observed) -> None:
        self.recorder = recorder
        self.home = trio.lowlevel.current_trio_token()  # the daemon's loop
        self.times = CommitTimes()
        recorder.writer.observers.append(self.times.observe)
        self.collector = RecorderCollector(recorder, self.times)
        self.page = StatusPage(recorder, self.home)

    def _metrics(self) -> list[Metric]:
        return list(self.collector.collect())  # in the daemon's thread

    def _health(self) -> tuple[bool, str]:
        return health.verdict(health.read(self.recorder), self.recorder.cfg.status)

    async def __call__(
        self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]
    ) -> None:
        if not await is_http(scope, receive, send):
            return
        token = self.recorder.cfg.metrics.token
        try:
            status, ctype, body = await self._answer(scope, token.reveal() if token else None)
        except trio.RunFinishedError:
            status, ctype, body = 503, b"text/plain", b"the recorder is stopping\n"
        await send(
            {"type": "http.response.start", "status": status, "headers": [(b"content-type", ctype)]}
        )
        await send({"type": "http.response.body", "body": body})

    async def _answer(self, scope: dict[str, Any], token: str | None) -> tuple[int, bytes, bytes]:
        if token is not None and not authorized(scope, token):
            return 401, b"text/plain", b"unauthorized: send Authorization: Bearer\n"
        if scope["path"] == "/metrics":
            registry = CollectorRegistry(auto_describe=False)
            registry.register(Collected(await call_in(self.home, self._metrics)))
            return 200, b"text/plain; version=0.0.4", generate_latest(registry)
        if scope["path"] == "/":
            return 200, b"text/html; charset=utf-8", await self.page.render()
        if scope["path"] == "/healthz":
            ok, reason = await call_in(self.home, self._health)
            doc = {"status": "ok" if ok else "unhealthy", "reason": reason}
            return (200 if ok else 503), b"application/json", orjson.dumps(doc)
        return 404, b"text/plain", b"not found: try /, /metrics or /healthz\n"


async def serve_metrics(
    app: MetricsApp,
    listen: str,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` until cancelled; ``nursery.start`` returns the bound port."""
    try:
        await serve_asgi_in_thread(app, listen, task_status=task_status)
    finally:
        app.page.close()
