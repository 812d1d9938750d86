"""``/metrics``: the series and their values in one process, and with ``keel serve --workers 2``
a scrape of either worker counting both workers' requests (prometheus_client's multiprocess
mode), the metrics folder removed and the prediction log flushed when the service stops."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from keel.serving.metrics import ScoringMetrics
from keel.serving.predlog import log_url, read_predictions
from keel.settings import Settings
from tests.models.training import diabetes
from tests.serving.test_app import _free_port, served  # noqa: F401 (a fixture)
from tests.serving.test_follow import _wait_ready


def _samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """``{sorted labels: value}`` of the samples called ``name``."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_the_series_and_their_values() -> None:
    metrics = ScoringMetrics()
    other = ScoringMetrics()  # a second app in the same process does not clash
    for seconds in (0.0004, 0.003, 0.2):
        metrics.request("churn", "churn/3", 200, seconds, rows=10)
    metrics.request("churn", "churn/3", 422, 0.001)
    metrics.error("churn", "churn/3", "schema_mismatch")
    metrics.batch("churn", "churn/3", 3, 30)
    metrics.shadow("churn", "churn/4", "skipped")
    metrics.prediction_log("churn", buffered=7, dropped=2)
    metrics.prediction_log("churn", buffered=0, dropped=5)
    text = metrics.exposition().decode()
    arm = (("arm", "churn/3"), ("deployment", "churn"))
    requests = _samples(text, "keel_requests_total")
    assert requests == {
        (*arm[:1], ("code", "2xx"), arm[1]): 3.0,
        (*arm[:1], ("code", "4xx"), arm[1]): 1.0,
    }
    buckets = _samples(text, "keel_request_duration_seconds_bucket")
    assert buckets[(*arm, ("le", "0.0005"))] == 1.0
    assert buckets[(*arm, ("le", "0.005"))] == 3.0
    assert buckets[(*arm, ("le", "10.0"))] == 4.0
    assert _samples(text, "keel_rows_scored_total") == {arm: 30.0}
    assert _samples(text, "keel_batch_requests_sum") == {arm: 3.0}
    assert _samples(text, "keel_batch_rows_sum") == {arm: 30.0}
    assert list(_samples(text, "keel_prediction_errors_total").values()) == [1.0]
    assert list(_samples(text, "keel_shadow_requests_total").values()) == [1.0]
    assert _samples(text, "keel_prediction_log_buffered_rows") == {(("deployment", "churn"),): 0.0}
    dropped = _samples(text, "keel_prediction_log_dropped_rows_total")
    assert dropped == {(("deployment", "churn"),): 5.0}
    assert _samples(other.exposition().decode(), "keel_requests_total") == {}


@pytest.mark.slow
@pytest.mark.usefixtures("served")
def test_two_workers_count_together_and_flush_their_logs(home: Path, tmp_path: Path) -> None:
    port = _free_port()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    command = [sys.executable, "-m", "keel", "serve", "models:/diabetes@champion"]
    process = subprocess.Popen(
        [*command, "--port", str(port), "--workers", "2", "--log-level", "warning"],
        env={**os.environ, "TMPDIR": str(scratch)},  # where the metrics folder goes
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    X, _ = diabetes()
    body = {"records": X.head(3).to_dict("records")}

    def one(_: int) -> str:  # a new connection each time, so both workers get some
        answer = httpx.post(f"{base}/predict", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        return str(answer.json()["request_id"])

    try:
        _wait_ready(process, base)
        (folder,) = scratch.glob("keel-serve-metrics-*")
        sent: list[str] = []
        with ThreadPoolExecutor(16) as pool:
            deadline = time.monotonic() + 120
            while len(list(folder.glob("counter_*.db"))) < 2:  # one file per worker that counted
                assert time.monotonic() < deadline, "one worker took every request"
                sent += pool.map(one, range(32))
        for _ in range(6):  # whichever worker answers, it counts both
            text = httpx.get(f"{base}/metrics", timeout=30).text
            requests = _samples(text, "keel_requests_total")
            assert sum(requests.values()) == len(sent), requests
            assert sum(_samples(text, "keel_rows_scored_total").values()) == 3 * len(sent)
    finally:
        process.terminate()
        process.wait(timeout=60)
    assert process.returncode == 0, process.stderr.read().decode()  # type: ignore[union-attr]
    assert not folder.exists()
    logged = read_predictions(log_url(Settings()), "diabetes")  # written at shutdown
    assert sorted(set(logged["request_id"])) == sorted(sent)
    assert len(logged) == 3 * len(sent)
