"""What an operator deploys (issue: operations, items 3 and 4): the alert rules pass their
promtool unit tests, and every metric the rules and the Grafana dashboard name exists in a
live daemon's /metrics."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import trio

from recorder.simulator.server import Simulator
from recorder.store.lease import lease_for
from tests.helpers import (
    KEY,
    SECRET,
    recording_with_a_gap,
    wait_until,
)

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
DASHBOARD = DEPLOY / "grafana" / "bfx-recorder.json"
PROMTOOL = shutil.which("promtool")
NEEDED = os.environ.get("BFX_RECORDER_REQUIRE_PROMTOOL") == "1"


@pytest.mark.skipif(
    PROMTOOL is None and not NEEDED, reason="promtool is not installed (apt-get install prometheus)"
)
def test_alert_rules_pass_their_unit_tests() -> None:
    assert PROMTOOL is not None, "promtool is required here (apt-get install prometheus)"
    check = subprocess.run(
        [PROMTOOL, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    tests = subprocess.run(
        [PROMTOOL, "test", "rules", "alerts.test.yaml"],
        cwd=ALERTS.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "SUCCESS" in tests.stdout


def test_every_alert_is_tested_and_has_a_runbook() -> None:
    rules = ALERTS.read_text()
    names = re.findall(r"- alert: (\w+)", rules)
    assert len(names) == 9
    tested = set(re.findall(r"alertname: (\w+)", (ALERTS.parent / "alerts.test.yaml").read_text()))
    assert set(names) == tested
    readme = (ALERTS.parents[2] / "README.md").read_text()
    for name in names:
        assert f"### Runbook: {name}" in readme, name
        assert f"README.md#runbook-{name.lower()}" in rules, name


def _metric_names(text: str) -> set[str]:
    return set(re.findall(r"\b(bfx_[a-z_]+)", text))


async def test_every_metric_named_in_the_rules_and_the_dashboard_exists(
    engine: sa.Engine,
) -> None:
    named = _metric_names(ALERTS.read_text())
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    named |= _metric_names("\n".join(exprs))
    assert len(named) >= 20
    lease = lease_for(engine, "main")
    assert lease.try_acquire()
    sim = Simulator(seed=95, rate=300, api_keys={KEY: SECRET}, connection_limit=None)
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        # (a session end, so that the ends by reason have a sample)
        recorder = await recording_with_a_gap(nursery, sim, engine, 100, leases=[lease])
        watch = recorder.chain_watch
        assert watch is not None
        await wait_until(lambda: watch.rounds > 0, "a chain check")
        text = (await http.get(f"http://127.0.0.1:{recorder.metrics_port}/metrics")).text
        recorder.stop()
        await recorder.finished.wait()
        nursery.cancel_scope.cancel()
    scraped = {
        line.split("{")[0].split(" ")[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    missing = sorted(named - scraped)  # as the rules write them: sample names
    assert not missing, missing
