"""``keel serve --deployment`` end to end, as a real subprocess with two workers on loopback:
the canary split over 2,000 sticky keys is exactly what the BLAKE2b buckets say, every answer
is the chosen version's own prediction, the shadow is never returned, ``keel deploy promote``
reaches both workers within the poll interval, and ``keel deploy status`` reads back what was
served from the prediction logs written on shutdown."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from click.testing import CliRunner

from keel.serving.deployments import api
from keel.serving.plan import bucket_of
from tests.conftest import run_main
from tests.serving.deployments.conftest import Registered, train_and_register

pytestmark = pytest.mark.slow

POLL = 0.5
REQUESTS = 2000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served(home: Path) -> Iterator[tuple[str, Registered, subprocess.Popen[bytes]]]:
    """diabetes 1-3 registered; deployment churn (champion 80%, challenger 20%, shadow 3)
    served by ``keel serve --deployment churn --workers 2``."""
    registered = train_and_register()
    api.create(
        "churn", "diabetes@champion", canaries={"diabetes@challenger": 20}, shadows=["diabetes/3"]
    )
    port = _free_port()
    log = home.parent / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "keel", "serve", "--deployment", "churn"),
                *("--port", str(port), "--workers", "2", "--poll-interval", str(POLL)),
                *("--log-level", "warning"),
            ],
            env=os.environ.copy(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # two workers import Keel, sklearn and three models
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"keel serve never became ready:\n{log.read_text()}"
            time.sleep(0.2)
        yield base, registered, process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)


def _ask(http: httpx.Client, key: str, row: int, registered: Registered) -> str:
    rows = registered.X.iloc[[row]]
    response = http.post(
        "/predict", json={"records": rows.to_dict("records")}, headers={"X-Keel-Key": key}
    )
    assert response.status_code == 200, response.text
    arm = response.headers["X-Keel-Model"]
    version = int(arm.split("/")[1])
    np.testing.assert_allclose(response.json()["predictions"], registered.predict(version, rows))
    return arm


def test_canary_split_stickiness_shadow_promote_and_status(
    served: tuple[str, Registered, subprocess.Popen[bytes]], cli: CliRunner
) -> None:
    base, registered, process = served
    answered: Counter[str] = Counter()
    with httpx.Client(base_url=base, timeout=30) as http:
        started = time.perf_counter()
        for n in range(REQUESTS):
            key = f"user-{n}"
            arm = _ask(http, key, n % len(registered.X), registered)
            # the split is the buckets': below 80% of 10,000 is champion, the rest challenger
            assert arm == ("diabetes/1" if bucket_of(key) < 8000 else "diabetes/2"), key
            answered[arm] += 1
        took = time.perf_counter() - started
        assert set(answered) == {"diabetes/1", "diabetes/2"}  # the shadow is never returned
        assert abs(answered["diabetes/2"] / REQUESTS - 0.20) < 0.03, answered
        # the same key lands on the same arm on either worker, every time
        for n in range(0, 400, 7):
            assert _ask(http, f"user-{n}", 0, registered) == (
                "diabetes/1" if bucket_of(f"user-{n}") < 8000 else "diabetes/2"
            )

        promoted = run_main(cli, ["deploy", "promote", "churn", "--note", "e2e"])
        assert promoted.exit_code == 0, promoted.output
        assert "churn revision 2: diabetes@challenger=100%; shadows: diabetes/3" in promoted.output
        moved_at = time.perf_counter()
        streak, seen_after = 0, None
        while streak < 50:  # 50 answers in a row from the promoted version, on both workers
            arm = _ask(http, f"after-{streak}-{time.perf_counter()}", 1, registered)
            streak = streak + 1 if arm == "diabetes/2" else 0
            if streak == 1:
                seen_after = time.perf_counter() - moved_at
            assert time.perf_counter() - moved_at < 20 * POLL, "the promotion never arrived"
        assert seen_after is not None and seen_after < 10 * POLL
        metadata = http.get("/metadata").json()
        assert json.dumps(metadata).count("diabetes/3") >= 1

    process.send_signal(signal.SIGINT)  # graceful: the prediction logs are flushed
    process.wait(timeout=60)
    status = run_main(cli, ["deploy", "status", "churn", "--json"])
    assert status.exit_code == 0, status.output
    found = json.loads(status.output)
    arms = {a["arm"]: a for a in found["arms"]}
    assert arms["diabetes/1"]["requests"] >= answered["diabetes/1"]
    assert arms["diabetes/2"]["requests"] >= answered["diabetes/2"] + 50
    shadow = arms["diabetes/3"]
    assert shadow["role"] == "shadow" and shadow["ref"] == "diabetes/3"
    total = sum(a["requests"] for a in found["arms"] if a["role"] == "primary")
    assert shadow["requests"] == total and shadow["compared"] == total
    assert 0 <= shadow["agreement"] < 1 and shadow["mean_abs_diff"] > 0
    assert arms["diabetes/1"]["p50_ms"] > 0 and arms["diabetes/1"]["errors"] == 0
    print(
        f"\n{REQUESTS} sequential requests in {took:.2f}s ({REQUESTS / took:.0f}/s); "
        f"split {dict(answered)}; promotion seen after {seen_after:.2f}s (poll {POLL}s)"
    )
    table = run_main(cli, ["deploy", "status", "churn"])
    assert table.exit_code == 0 and "flushed every few seconds" in table.output
