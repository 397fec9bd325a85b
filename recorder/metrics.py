"""Metrics and health, answered from memory: ``GET /metrics`` (Prometheus text format) and
``GET /healthz`` (200, or 503 with a one-line JSON reason), served inside the daemon's trio
process by hypercorn's trio worker (no thread per request; the receive loops never wait on
it), only when ``[metrics] listen`` is set.

Nothing here queries the database: the writer, the sessions, the projectors and the
backfillers keep what is needed in memory, and a custom collector turns it into metric
families at scrape time (the hot path pays no per-frame metric calls).
"""

from __future__ import annotations

import hmac
import math
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

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

from recorder.serving import is_http, serve_asgi
from recorder.writer import COMMIT_BUCKETS

if TYPE_CHECKING:
    from recorder.daemon import Recorder


class RecorderCollector(Collector):
    """Every metric, built from the recorder's in-memory state at scrape time."""

    def __init__(self, recorder: Recorder) -> None:
        self.r = recorder

    def collect(self) -> Iterator[Metric]:
        r, stats = self.r, self.r.writer.stats
        now = datetime.now(UTC)
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
        for account in r.status:
            appended.add_metric([account], per_account.get(account, 0))
            gaps.add_metric([account], stats.by_kind.get((account, "recorder.seq-gap"), 0))
        yield frames
        yield appended
        yield gaps
        yield self._commit_histogram()
        queue = GaugeMetricFamily("bfx_writer_queue_depth", "Items waiting for the writer")
        queue.add_metric([], r.writer.queue_depth)
        yield queue
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
        for account, status in r.status.items():
            connected.add_metric([account], 1 if status.connected else 0)
            for reason, n in sorted(status.ends.items()):
                ends.add_metric([account, reason], n)
            last = stats.last_frame_at.get(account)
            age.add_metric([account], (now - last).total_seconds() if last else math.inf)
            head.add_metric([account], r.writer.high_water.get(account, 0))
            backfiller = r.backfillers.get(account)
            windows.add_metric([account], backfiller.open_windows if backfiller else 0)
        yield connected
        yield ends
        yield age
        yield head
        yield windows
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
        for p in r.projectors:
            behind = max(r.writer.high_water.get(p.account, 0) - p.checkpoint, 0)
            lag.add_metric([p.account, p.name], behind)
            lag_s.add_metric([p.account, p.name], r.writer.lag_seconds(p.account, p.checkpoint))
            differences.add_metric([p.account, p.name], p.reconciled)
        yield lag
        yield lag_s
        yield differences
        stood = CounterMetricFamily(
            "bfx_projector_stand_backs",
            "Projection rounds put off while the writer was more than a batch behind",
        )
        stood.add_metric([], r.pool.stood_back if r.pool is not None else 0)
        yield stood
        failures = CounterMetricFamily(
            "bfx_projector_failures",
            "Projection rounds that failed (recording goes on; the round is retried)",
        )
        failures.add_metric([], r.pool.failures if r.pool is not None else 0)
        yield failures
        failing = GaugeMetricFamily(
            "bfx_projector_failing", "1 while projection rounds keep failing"
        )
        failing.add_metric([], int(r.pool is not None and r.pool.failing is not None))
        yield failing

    def _commit_histogram(self) -> Metric:
        times = self.r.writer.stats.commit_times
        buckets, total = [], 0
        for bound, n in zip((*COMMIT_BUCKETS, math.inf), times.counts, strict=True):
            total += n
            buckets.append(("+Inf" if bound == math.inf else str(bound), total))
        family = HistogramMetricFamily(
            "bfx_batch_commit_seconds", "Time to commit one batch, retries included"
        )
        family.add_metric([], buckets, times.total)
        return family


def health(recorder: Recorder) -> tuple[bool, str]:
    """Healthy when every account is connected, or reconnecting within its back-off, and
    frames and projectors are within the ``[status]`` bounds. Returns (ok, reason)."""
    bounds = recorder.cfg.status
    now = datetime.now(UTC)
    for account, status in recorder.status.items():
        if status.stopped is not None:
            return False, f"account {account} stopped: {status.stopped.reason}"
        if not status.connected and status.disconnected_for() > status.reconnect_allowance:
            return False, f"account {account} not connected ({status.last_reason})"
        last = recorder.writer.stats.last_frame_at.get(account)
        if last is not None and (now - last).total_seconds() > bounds.max_frame_age_s:
            age = (now - last).total_seconds()
            return False, f"account {account}: last frame {age:.0f}s ago"
    if recorder.pool is not None and recorder.pool.failing is not None:
        return False, f"projections failing (recording goes on): {recorder.pool.failing}"
    for p in recorder.projectors:
        behind = recorder.writer.high_water.get(p.account, 0) - p.checkpoint
        if behind > bounds.max_projector_lag:
            return False, f"projector {p.name} of {p.account} is {behind} events behind"
    return True, "ok"


def authorized(scope: dict[str, Any], token: str) -> bool:
    """Whether the request carries ``Authorization: Bearer <token>`` (compared in constant
    time)."""
    for name, value in scope.get("headers", []):
        if name.lower() == b"authorization":
            scheme, _, given = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token):
                return True
    return False


class MetricsApp:
    """The ASGI app: /metrics and /healthz."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(RecorderCollector(recorder))

    async def __call__(
        self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]
    ) -> None:
        if not await is_http(scope, receive, send):
            return
        token = self.recorder.cfg.metrics.token
        if token is not None and not authorized(scope, token.reveal()):
            status, ctype, body = 401, b"text/plain", b"unauthorized: send Authorization: Bearer\n"
        elif scope["path"] == "/metrics":
            status, ctype, body = 200, b"text/plain; version=0.0.4", generate_latest(self.registry)
        elif scope["path"] == "/healthz":
            ok, reason = health(self.recorder)
            doc = {"status": "ok" if ok else "unhealthy", "reason": reason}
            status, ctype, body = (200 if ok else 503), b"application/json", orjson.dumps(doc)
        else:
            status, ctype, body = 404, b"text/plain", b"not found: try /metrics or /healthz\n"
        await send(
            {"type": "http.response.start", "status": status, "headers": [(b"content-type", ctype)]}
        )
        await send({"type": "http.response.body", "body": body})


async def serve_metrics(
    recorder: Recorder,
    listen: str,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; ``nursery.start`` returns the bound port."""
    await serve_asgi(MetricsApp(recorder), listen, task_status=task_status)
