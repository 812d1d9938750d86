"""Shared fixtures: settings in a tmp home, stores on SQLite and PostgreSQL, clients, the CLI.

PostgreSQL runs for real at 127.0.0.1:5432 (one database per test session, dropped at the end).
Under ``CI=true`` a missing server fails the PostgreSQL tests; elsewhere they skip with a reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine

from keel.settings import Settings
from keel.tracking.api import Client

PG_ADMIN_URL = os.environ.get(
    "KEEL_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
IN_CI = os.environ.get("CI", "").lower() == "true"
_TABLES = (
    "experiments, experiment_tags, runs, params, tags, metrics, latest_metrics, artifacts, "
    "write_batches, users, api_tokens, experiment_grants, audit_log, metric_blocks, "
    "datasets, dataset_versions, run_inputs, registered_models, model_versions, "
    "registered_model_tags, model_version_tags, model_aliases, model_audit, model_policies, "
    "alias_requests, model_cards, model_evaluations, gate_verdicts, deployments, "
    "deployment_revisions"
)
"""Emptied after each PostgreSQL test (TRUNCATE is not a row change, so model_audit's
append-only triggers allow it)."""


def _pg_admin():  # type: ignore[no-untyped-def]
    from sqlalchemy import create_engine

    return create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")


def create_pg_database(prefix: str = "keel_test") -> str:
    """Create a fresh PostgreSQL database and return its URL (skip or fail if no server)."""
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        engine = _pg_admin()
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
    except OperationalError as exc:
        if IN_CI:
            pytest.fail(f"PostgreSQL is required under CI=true but unreachable: {exc}")
        pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432 ({exc.orig})")
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def drop_pg_database(url: str) -> None:
    from sqlalchemy import text

    name = url.rsplit("/", 1)[1]
    engine = _pg_admin()
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    url = create_pg_database()
    yield url
    drop_pg_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL with an empty Keel schema: a SQLite file, or the session's PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'keel.db'}"
        return
    url = request.getfixturevalue("pg_url")
    yield url
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {_TABLES} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture
def engine(store_url: str) -> Iterator[Engine]:
    """An engine on an empty database at the head schema; parametrized sqlite / postgresql."""
    from keel.db import ensure_schema, make_engine

    engine = make_engine(store_url)
    ensure_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tmp .keel home that the environment points at (fluent API and CLI use it)."""
    path = tmp_path / ".keel"
    for name in list(os.environ):
        if name.startswith("KEEL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("KEEL_HOME", str(path))
    monkeypatch.setenv("KEEL_CAPTURE_SOURCE", "false")
    monkeypatch.chdir(tmp_path)
    return path


@pytest.fixture
def settings(home: Path, store_url: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("KEEL_DATABASE_URL", store_url)
    return Settings()


@pytest.fixture
def client(settings: Settings) -> Iterator[Client]:
    c = Client(settings)
    yield c
    c.close()


@pytest.fixture
def sqlite_client(home: Path) -> Iterator[Client]:
    c = Client(Settings())
    yield c
    c.close()


@pytest.fixture
def cli(home: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("COLUMNS", "200")  # rich tables wide enough to assert on
    return CliRunner()


def run_main(runner: CliRunner, args: list[str]):  # type: ignore[no-untyped-def]
    """``keel ARGS`` through :func:`keel.cli.main`, the entry point that turns a KeelError into
    one red line and exit 1 (``runner.invoke(cli, ...)`` would skip it)."""
    import click

    @click.command(context_settings={"ignore_unknown_options": True})
    @click.argument("argv", nargs=-1, type=click.UNPROCESSED)
    def shim(argv: tuple[str, ...]) -> None:
        from keel.cli import main

        main(list(argv))

    return runner.invoke(shim, args)
