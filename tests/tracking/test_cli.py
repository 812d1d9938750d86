"""The keel CLI against a real store: listings, search, compare, export, and user mistakes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import keel
from tests.conftest import run_main as _run_main


@pytest.fixture
def seeded(home: Path) -> dict[str, str]:
    keel.set_experiment("diabetes")
    ids = {}
    for model, rmse, alpha in (
        ("ridge", 53.0, "0.5"),
        ("tree", 61.0, "1.0"),
        ("forest", 55.5, "1.0"),
    ):
        with keel.start_run(name=model) as run:
            keel.log_params({"model": model, "alpha": alpha})
            keel.log_metrics({"rmse": rmse, "r2": 0.4})
        ids[model] = run.run_id
    return ids


def test_runs_list_and_json(cli: CliRunner, seeded: dict[str, str]) -> None:
    result = _run_main(cli, ["runs", "list", "-e", "diabetes"])
    assert result.exit_code == 0, result.output
    assert "ridge" in result.output and "FINISHED" in result.output
    result = _run_main(cli, ["runs", "list", "--json"])
    data = json.loads(result.output)
    assert {r["run_name"] for r in data} == {"ridge", "tree", "forest"}


def test_runs_search_filters_and_orders(cli: CliRunner, seeded: dict[str, str]) -> None:
    result = _run_main(
        cli,
        [
            "runs",
            "search",
            "metrics.rmse < 60 or params.model = 'tree'",
            "-o",
            "metrics.rmse DESC",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert [r["run_name"] for r in json.loads(result.output)] == ["tree", "forest", "ridge"]


def test_malformed_filter_is_one_clear_error(cli: CliRunner, seeded: dict[str, str]) -> None:
    result = _run_main(cli, ["runs", "search", "metrics.rmse <<< 1"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "^" in result.output and "Error" in result.output


def test_show_accepts_a_prefix(cli: CliRunner, seeded: dict[str, str]) -> None:
    result = _run_main(cli, ["runs", "show", seeded["ridge"][:8]])
    assert result.exit_code == 0, result.output
    assert "alpha" in result.output and "53" in result.output
    result = _run_main(cli, ["runs", "show", "nothex!"])
    assert result.exit_code == 1 and "not a run id" in result.output


def test_compare_highlights_what_differs(cli: CliRunner, seeded: dict[str, str]) -> None:
    result = _run_main(cli, ["runs", "compare", seeded["ridge"], seeded["tree"], "--json"])
    assert result.exit_code == 0, result.output
    rows = {(r["section"], r["key"]): r for r in json.loads(result.output)["rows"]}
    assert rows[("params", "alpha")]["differs"] is True
    assert rows[("metrics", "r2")]["differs"] is False
    table = _run_main(cli, ["runs", "compare", seeded["ridge"][:6], seeded["tree"][:6]])
    assert "alpha" in table.output and "r2" not in table.output  # equal rows hidden
    lonely = _run_main(cli, ["runs", "compare", seeded["ridge"]])
    assert lonely.exit_code == 1 and "at least two" in lonely.output


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_export(cli: CliRunner, seeded: dict[str, str], tmp_path: Path, fmt: str) -> None:
    import pandas as pd

    out = tmp_path / f"runs.{fmt}"
    result = _run_main(
        cli,
        ["runs", "export", "--format", fmt, "--filter", "metrics.rmse < 60", "--output", str(out)],
    )
    assert result.exit_code == 0, result.output
    frame = {"csv": pd.read_csv, "json": pd.read_json, "parquet": pd.read_parquet}[fmt](out)
    assert sorted(frame["params.model"]) == ["forest", "ridge"]
    assert "metrics.rmse" in frame.columns and "tags.keel.host" in frame.columns


def test_export_parquet_needs_output(cli: CliRunner, seeded: dict[str, str]) -> None:
    result = _run_main(cli, ["runs", "export", "--format", "parquet"])
    assert result.exit_code == 1 and "--output" in result.output


def test_delete_and_restore(cli: CliRunner, seeded: dict[str, str]) -> None:
    result = _run_main(cli, ["runs", "delete", seeded["tree"][:10]])
    assert result.exit_code == 0 and "restore" in result.output
    listed = json.loads(_run_main(cli, ["runs", "list", "--json"]).output)
    assert seeded["tree"] not in {r["run_id"] for r in listed}
    assert _run_main(cli, ["runs", "restore", seeded["tree"]]).exit_code == 0
    listed = json.loads(_run_main(cli, ["runs", "list", "--json"]).output)
    assert seeded["tree"] in {r["run_id"] for r in listed}


def test_experiments_commands(cli: CliRunner, home: Path) -> None:
    assert _run_main(cli, ["experiments", "create", "a"]).exit_code == 0
    dup = _run_main(cli, ["experiments", "create", "a"])
    assert dup.exit_code == 1 and "already exists" in dup.output
    assert _run_main(cli, ["experiments", "rename", "a", "b"]).exit_code == 0
    listed = json.loads(_run_main(cli, ["experiments", "list", "--json"]).output)
    assert [e["name"] for e in listed] == ["b"]
    assert _run_main(cli, ["experiments", "delete", "b"]).exit_code == 0
    assert json.loads(_run_main(cli, ["experiments", "list", "--json"]).output) == []
    assert _run_main(cli, ["experiments", "restore", "b"]).exit_code == 0
    missing = _run_main(cli, ["experiments", "delete", "nope"])
    assert missing.exit_code == 1 and "no experiment" in missing.output


def test_init_and_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("KEEL_"):
            monkeypatch.delenv(name)
    project = tmp_path / "project"
    (project / "src" / "deep").mkdir(parents=True)
    runner = CliRunner()
    result = _run_main(runner, ["init", str(project)])
    assert result.exit_code == 0 and "Created" in result.output
    assert (project / ".keel" / "keel.db").exists()
    monkeypatch.chdir(project / "src" / "deep")
    data = {r["name"]: r for r in json.loads(_run_main(runner, ["config", "--json"]).output)}
    assert data["home"]["value"] == str(project / ".keel")
    assert data["home"]["source"].startswith("found walking up")
    monkeypatch.setenv("KEEL_ARTIFACT_URL", "memory://bucket")
    data = {r["name"]: r for r in json.loads(_run_main(runner, ["config", "--json"]).output)}
    assert data["artifact_url"] == {
        **data["artifact_url"],
        "value": "memory://bucket",
        "source": "environment (KEEL_ARTIFACT_URL)",
    }


def test_console_script_prints_no_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "KEEL_HOME": str(tmp_path / ".keel")}
    done = subprocess.run(
        [sys.executable, "-m", "keel", "runs", "show", "abc"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "no run id starts with 'abc'" in done.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "keel", "runs", "frobnicate"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2 and "No such command" in bad.stderr


def test_a_damaged_store_is_one_clear_error(cli: CliRunner, seeded: dict[str, str]) -> None:
    import sqlite3

    from keel.settings import Settings

    db = sqlite3.connect(Settings().home_path / "keel.db")
    db.execute("ALTER TABLE runs RENAME TO runs_damaged")
    db.commit()
    db.close()
    result = _run_main(cli, ["runs", "list"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "the database refused the request" in result.output and "runs" in result.output


def test_show_draws_metric_curves(cli: CliRunner, home: Path) -> None:
    with keel.start_run() as run:
        for step in range(200):
            keel.log_metric("loss", 1.0 / (step + 1), step=step)
    result = _run_main(cli, ["runs", "show", run.run_id])
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.strip().startswith("loss"))
    assert "200" in line and "█" in line and "▁" in line
    curve = keel.tracking.fluent.get_client().metric_curves(run.run_id)["loss"]
    assert curve.count == 200 and len(curve.means) == 40
    assert curve.means == sorted(curve.means, reverse=True)  # a falling loss falls
