"""The status page at / (issue: operations, item 1): what it shows, read as a person sees it
in a real browser, with no network; cached reads; behind the token when one is set."""

from __future__ import annotations

import os
import re
import shutil
import threading
import urllib.request
from pathlib import Path

import httpx
import sqlalchemy as sa
import trio

from recorder.config import MetricsConfig
from recorder.simulator.server import Simulator
from recorder.statuspage import CACHE_S
from tests.helpers import (
    KEY,
    SECRET,
    chromium,
    need_chromium,
    recording_with_a_gap,
    start_recording,
    wait_until,
)

ROOT = Path(__file__).resolve().parent.parent


def _fields(html: str) -> dict[str, str]:
    return dict(re.findall(r'data-field="([a-z-]+)">([^<]*)<', html))


async def test_status_page_shows_each_account_from_memory_and_its_own_reads(
    engine: sa.Engine,
) -> None:
    sim = Simulator(seed=97, rate=300, api_keys={KEY: SECRET}, connection_limit=None)
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        recorder = await recording_with_a_gap(nursery, sim, engine, 150)
        url = f"http://127.0.0.1:{recorder.metrics_port}/"
        first = await http.get(url)
        assert first.status_code == 200
        assert first.headers["content-type"].startswith("text/html")
        html = first.text
        fields = _fields(html)
        assert fields["account"] == "main"
        assert fields["state"].startswith("connected since ")
        assert 0 < int(fields["head"]) <= recorder.writer.high_water["main"]
        assert int(fields["events-today"]) > 0
        assert "<script" not in html and "http://" not in html and "https://" not in html
        assert 'class="session"' in html and 'data-chart="exchange USD"' in html
        assert 'data-field="fill-id"' in html
        # Reloaded 20 times in a row: the database is read once per cache period.
        reads = recorder_page_reads(recorder)
        for _ in range(20):
            assert (await http.get(url)).status_code == 200
        assert recorder_page_reads(recorder) - reads <= 1 + int(1 / CACHE_S)
        recorder.stop()
        await recorder.finished.wait()
        nursery.cancel_scope.cancel()


async def test_the_listener_answers_while_the_daemons_loop_is_busy(engine: sa.Engine) -> None:
    """The HTTP listener runs in a thread of its own: a reload of the (cached) page is answered
    while the daemon's trio thread is not taking turns at all (in the daemon's loop, where it
    was served before, it waited for the loop)."""
    sim = Simulator(seed=96, rate=200, api_keys={KEY: SECRET}, connection_limit=None)
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        recorder = await start_recording(
            nursery, sim, engine, metrics=MetricsConfig(listen="127.0.0.1:0")
        )
        await wait_until(lambda: recorder.metrics_port is not None, "metrics listening")
        url = f"http://127.0.0.1:{recorder.metrics_port}/"
        assert (await http.get(url)).status_code == 200  # rendered and cached
        answers: list[int] = []

        def reload() -> None:
            with urllib.request.urlopen(url, timeout=10) as answer:
                answers.append(answer.status)

        reloader = threading.Thread(target=reload)
        reloader.start()
        reloader.join(10)  # blocks this (the daemon's) trio thread until answered
        assert answers == [200]
        recorder.stop()
        await recorder.finished.wait()
        nursery.cancel_scope.cancel()


def recorder_page_reads(recorder: object) -> int:
    """How often the page read the database (its app is the metrics listener's)."""
    app = getattr(recorder, "metrics_app", None)
    return app.page.reads if app is not None else 0


async def test_status_page_needs_the_token_when_one_is_set(engine: sa.Engine) -> None:
    sim = Simulator(seed=98, rate=100, api_keys={KEY: SECRET}, connection_limit=None)
    token = "a-long-enough-token-1234"
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        from recorder.config import Secret

        recorder = await start_recording(
            nursery, sim, engine, metrics=MetricsConfig(listen="127.0.0.1:0", token=Secret(token))
        )
        await wait_until(lambda: recorder.metrics_port is not None, "metrics listening")
        url = f"http://127.0.0.1:{recorder.metrics_port}/"
        assert (await http.get(url)).status_code == 401
        ok = await http.get(url, headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200 and "bfx-recorder" in ok.text
        recorder.stop()
        await recorder.finished.wait()
        nursery.cancel_scope.cancel()


async def test_status_page_in_a_real_browser(tmp_path: Path, engine: sa.Engine) -> None:
    need_chromium()
    sim = Simulator(seed=99, rate=300, api_keys={KEY: SECRET}, connection_limit=None)
    async with trio.open_nursery() as nursery:
        recorder = await recording_with_a_gap(nursery, sim, engine, 200)
        url = f"http://127.0.0.1:{recorder.metrics_port}/"
        dom = await trio.to_thread.run_sync(lambda: chromium("--dump-dom", url))
        assert dom.returncode == 0, dom.stderr[-2000:]
        shown = dom.stdout.decode()
        fields = _fields(shown)
        assert fields["account"] == "main" and fields["state"].startswith("connected since ")
        assert 0 < int(fields["head"]) <= recorder.writer.high_water["main"]
        assert "<polyline" in shown and 'class="gap"' in shown  # a chart, the gap
        shot = tmp_path / "status.png"
        made = await trio.to_thread.run_sync(
            lambda: chromium("--window-size=1280,1100", f"--screenshot={shot}", url)
        )
        assert made.returncode == 0 and shot.stat().st_size > 10_000
        if os.environ.get("BFX_RECORDER_SCREENSHOTS") == "docs":
            shutil.copy(shot, ROOT / "docs" / "status.png")
        recorder.stop()
        await recorder.finished.wait()
        nursery.cancel_scope.cancel()
