"""Operations: metrics and health from memory, the heartbeat line, the systemd unit."""

from __future__ import annotations

import configparser
import io
import logging
import shutil
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
import trio

from recorder import logs
from recorder.config import LoggingConfig, MetricsConfig, StatusConfig, WriterConfig
from recorder.metrics import CommitTimes
from recorder.simulator.server import Simulator
from recorder.store.database import Database
from recorder.writer import Writer, WriterStats
from tests.helpers import (
    KEY,
    REST_CASES,
    SECRET,
    ev,
    progressed,
    quiesce,
    rest_port_for,
    samples,
    start_recording,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[1]


def sizes(stats: WriterStats) -> dict[str, int]:
    """The length of every container the writer's statistics keep, except deques with a
    bound of their own."""
    return {
        name: len(value)
        for name, value in vars(stats).items()
        if hasattr(value, "__len__") and not (isinstance(value, deque) and value.maxlen)
    }


async def test_writer_statistics_do_not_grow_with_batches(engine: sa.Engine) -> None:
    """A daemon serves no metrics by default, so nothing scrapes (and empties) the writer's
    statistics: what they keep must not grow with every batch. The commit times are counted
    in the histogram's buckets as they happen."""
    writer = Writer(Database(engine), WriterConfig(batch_max_frames=1, batch_max_ms=1))
    times = CommitTimes()  # what the metrics listener hangs on the writer
    writer.observers.append(times.observe)
    seen: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        async with writer.send_channel as send:
            for n in range(1, 121):
                await send.send(ev("main", n))
                if n == 60:
                    with trio.fail_after(30):
                        while writer.stats.committed_events < 60:
                            await writer.wait_any()
                    seen = sizes(writer.stats)
        with trio.fail_after(30):
            await writer.done.wait()
    stats = writer.stats
    assert stats.committed_events == 120 and stats.batches == 120
    assert sizes(stats) == seen  # 60 more batches, nothing longer
    assert sum(times.counts) == stats.batches
    assert times.total > 0 and stats.commit_seconds > 0


@pytest.mark.parametrize("rest", REST_CASES)
async def test_metrics_and_health_answered_from_memory(engine: sa.Engine, rest: str) -> None:
    stream = io.StringIO()
    logs.setup("text", "INFO", stream=stream)
    sim = Simulator(seed=81, rate=300, api_keys={KEY: SECRET}, connection_limit=None)
    try:
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
            recorder = await start_recording(
                nursery,
                sim,
                engine,
                rest_port=rest_port_for(rest),
                metrics=MetricsConfig(listen="127.0.0.1:0"),
                logging_cfg=LoggingConfig(summary_interval_s=0.2),
                status=StatusConfig(max_frame_age_s=2.0, max_projector_lag=100_000),
            )
            await progressed(recorder, 200)
            await wait_until(lambda: recorder.metrics_port is not None, "metrics listening")
            base = f"http://127.0.0.1:{recorder.metrics_port}"
            metrics = await http.get(f"{base}/metrics")
            assert metrics.status_code == 200
            got = samples(metrics.text)
            assert got['bfx_connected{account="main"}'] == 1
            assert got['bfx_frames_total{account="main",kind="wu"}'] > 0
            assert got['bfx_events_appended_total{account="main"}'] >= 200
            head = got['bfx_head_event_id{account="main"}']
            assert 0 < head <= recorder.writer.high_water["main"]  # it keeps recording
            assert got["bfx_batch_commit_seconds_count"] > 0
            assert got["bfx_batch_commit_seconds_count"] <= recorder.writer.stats.batches
            assert (
                got['bfx_batch_commit_seconds_bucket{le="+Inf"}']
                == (got["bfx_batch_commit_seconds_count"])
            )
            assert 'bfx_projector_lag_events{account="main",projector="orders"}' in got
            assert "bfx_writer_queue_depth" in got
            healthy = await http.get(f"{base}/healthz")
            assert healthy.status_code == 200
            assert orjson.loads(healthy.content) == {"status": "ok", "reason": "ok"}
            # Nothing arrives for longer than the bound: unhealthy, with the reason.
            await quiesce(sim, recorder, engine)
            with trio.fail_after(10):
                while (sick := await http.get(f"{base}/healthz")).status_code == 200:
                    await trio.sleep(0.05)
            assert sick.status_code == 503
            reason = orjson.loads(sick.content)
            assert reason["status"] == "unhealthy" and "last frame" in reason["reason"]
            assert "\n" not in sick.text
            recorder.stop()
            with trio.fail_after(20):
                await recorder.finished.wait()
            nursery.cancel_scope.cancel()
    finally:
        logging.getLogger().handlers.clear()
    summary = [line for line in stream.getvalue().splitlines() if " summary " in line]
    assert summary, "no heartbeat line"
    assert all(
        f in summary[0]
        for f in ("account=main", "frames=", "projector_lag=", "head=", "connected=")
    )


def test_service_unit() -> None:
    unit = ROOT / "config" / "bfx-recorder.service"
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(unit)
    service = parser["Service"]
    assert service["ExecStart"].endswith("bfx-recorder run")
    assert service["Restart"] == "on-failure" and service["KillSignal"] == "SIGTERM"
    assert int(service["TimeoutStopSec"]) >= 60  # covers the drain (unavailable_timeout_s 30)
    for key in ("NoNewPrivileges", "PrivateTmp"):
        assert service[key] == "yes"
    assert service["ProtectSystem"] == "strict" and service["ReadWritePaths"]
    assert service["User"] and service["User"] != "root"
    assert "EnvironmentFile" in service and "SECRET=" not in unit.read_text().replace(
        "#   BFX_API_SECRET=...", ""
    )
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed: the unit was parsed only")
    # The command installed beside this interpreter (the suite runs without the venv's
    # bin on PATH too), else the one on PATH.
    beside = Path(sys.executable).parent / "bfx-recorder"
    exe = str(beside) if beside.exists() else shutil.which("bfx-recorder")
    assert exe is not None
    local = Path("/tmp") / f"bfx-recorder-test-{unit.stat().st_mtime_ns}.service"
    # The unit's path is the README's install step (a virtual environment in /opt).
    assert service["ExecStart"] == "/opt/bfx-recorder/bin/bfx-recorder run"
    assert "/opt/bfx-recorder/bin/pip install ." in unit.read_text()
    local.write_text(unit.read_text().replace("/opt/bfx-recorder/bin/bfx-recorder", exe))
    try:
        checked = subprocess.run(
            ["systemd-analyze", "verify", str(local)], capture_output=True, text=True, timeout=60
        )
    finally:
        local.unlink()
    assert checked.returncode == 0, checked.stderr
