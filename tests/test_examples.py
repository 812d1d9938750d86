"""The examples run as users run them, so they never rot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from keel.settings import Settings
from keel.tracking.api import Client

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quickstart_trains_tracks_searches_and_compares(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    # the store a user standing in tmp_path would get; explicit, because walking up from a
    # pytest tmp folder could find a stray /tmp/.keel
    env["KEEL_HOME"] = str(tmp_path / ".keel")
    env["COLUMNS"] = "160"
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "$ keel runs search" in done.stdout and "$ keel runs compare" in done.stdout
    assert "Best model:" in done.stdout
    # the store holds what the example logged
    client = Client(Settings(home=tmp_path / ".keel"))
    runs = client.search_all(
        "", experiment_ids=[client.resolve_experiment("diabetes").experiment_id]
    )
    assert len(runs) == 8
    assert all(r.status.value == "FINISHED" for r in runs)
    assert all({"rmse", "mae", "r2"} <= r.metrics.keys() for r in runs)
    boosting = next(r for r in runs if r.run_name == "boosting")
    assert len(client.get_metric_history(boosting.run_id, "test_rmse")) == 150
    paths = {a.path for a in client.list_artifacts(boosting.run_id)}
    assert {"model/model.pkl", "plots/predicted_vs_actual.png", "predictions.parquet"} <= paths
    assert "keel/requirements.txt" in paths
