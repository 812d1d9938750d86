"""Deployments over HTTP against a real ``keel server`` subprocess (SQLite): with
``KEEL_TRACKING_URI`` set, the module functions and DeploymentSource go through
RemoteDeployments; what lands is in the server's database, errors are the same classes, and
racing remote writers lose no update."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from keel.errors import AlreadyExists, InvalidInput, NotFound
from keel.models import api as registry
from keel.serving.deployments import api
from keel.serving.deployments.api import Deployments, deployments_for
from keel.serving.deployments.remote import RemoteDeployments
from keel.serving.deployments.source import DeploymentSource
from keel.settings import Settings
from keel.tracking.fluent import set_client
from tests.serving.deployments.conftest import train_and_register
from tests.tracking.test_remote import Server

pytestmark = pytest.mark.slow


@pytest.fixture
def server(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """A keel server, with KEEL_TRACKING_URI pointing the fluent API and deployments at it."""
    root = tmp_path / "server"
    root.mkdir()
    running = Server(root)
    running.start()
    monkeypatch.setenv("KEEL_TRACKING_URI", running.url)
    set_client(None)
    try:
        yield running
    finally:
        set_client(None)
        running.stop()


def _server_settings(server: Server) -> Settings:
    return Settings(
        home=server.root / "check",
        database_url=f"sqlite:///{server.db}",
        artifact_url=str(server.root / "artifacts"),
        tracking_uri=None,
    )


def test_remote_deployments_round_trip_and_serve_from_the_server(server: Server) -> None:
    registered = train_and_register()  # logged and registered through the server
    with deployments_for() as remote:
        assert isinstance(remote, RemoteDeployments)
    created = api.create(
        "churn", "diabetes@champion", canaries={"diabetes@challenger": 10}, shadows=["diabetes/3"]
    )
    assert created.resolved == {"diabetes@champion": 1, "diabetes@challenger": 2, "diabetes/3": 3}
    with RemoteDeployments(Settings(), actor="anaïs") as remote:
        moved = remote.set_traffic("churn", {"diabetes@challenger": 40}, note="more")
        assert moved.config.describe() == (
            "diabetes@champion=60%, diabetes@challenger=40%; shadows: diabetes/3"
        )
        assert moved.updated_by == "anaïs"

    # a service following the deployment through the server: models downloaded from it
    source = DeploymentSource("churn", interval=1.0)
    plan = source.load()
    try:
        assert [(a.label, a.weight, a.shadow) for a in plan.arms] == [
            ("diabetes/1", 60.0, False),
            ("diabetes/2", 40.0, False),
            ("diabetes/3", 0.0, True),
        ]
        rows = registered.X.head(8)
        for arm in plan.arms:
            assert arm.model_version is not None
            np.testing.assert_allclose(
                arm.predictor.predict(rows), registered.predict(arm.model_version, rows)
            )
        promoted = api.promote("churn", move_alias=True)
        assert promoted.moved is not None and promoted.moved.version == 2
        after = source.poll(plan)
        assert after is not None and [(a.ref, a.label) for a in after.arms] == [
            ("diabetes@champion", "diabetes/2"),
            ("diabetes/3", "diabetes/3"),
        ]
        assert after.arms[0].predictor is plan.arms[1].predictor  # reused, not downloaded
    finally:
        source.close()

    back = api.rollback("churn")
    assert back.revision == 4
    assert [r.action for r in api.history("churn")] == [
        "create",
        "set-traffic",
        "promote",
        "rollback",
    ]
    assert api.get_revision("churn", 2).note == "more"

    # errors are the same classes as locally
    with pytest.raises(AlreadyExists):
        api.create("churn", "diabetes/1")
    with pytest.raises(NotFound, match="diabetes@gone does not resolve"):
        api.set_traffic("churn", {"diabetes@gone": 5})
    with pytest.raises(InvalidInput, match="at most 100%"):
        api.set_traffic("churn", {"diabetes/3": 150})
    with pytest.raises(InvalidInput, match="invalid deployment name"):
        api.get("no good")
    with pytest.raises(NotFound, match="no deployment named 'nope'"):
        api.get("nope")

    # it all landed in the server's own database
    with Deployments(_server_settings(server)) as local:
        assert local.get("churn").revision == 4
        assert [r.actor for r in local.history("churn")][1] == "anaïs"
    assert registry.get_version("diabetes", "champion").version == 2
    assert api.delete("churn") == 4
    assert api.list_deployments() == []


def test_racing_remote_writers_lose_no_update(server: Server) -> None:
    train_and_register()
    api.create("churn", "diabetes/1")
    start = threading.Barrier(6)
    failures: list[BaseException] = []
    refs = ["diabetes/2", "diabetes/3", "diabetes@challenger"]

    def change(number: int) -> None:
        try:
            with RemoteDeployments(Settings(), actor=f"writer-{number}") as remote:
                remote.get("churn")  # connection open
                start.wait()
                if number < 3:
                    remote.set_traffic("churn", {"diabetes/1": 100}, note=str(number))
                else:
                    remote.add_shadow("churn", refs[number - 3])
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=change, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    # diabetes/2 and diabetes@challenger are one version: whichever came second is refused
    refused = [f for f in failures if isinstance(f, InvalidInput) and "both diabetes/2" in str(f)]
    assert len(refused) == 1 and len(failures) == 1, failures
    final = api.get("churn")
    assert final.revision == 6
    assert len(final.config.shadows) == 2 and "diabetes/3" in final.config.shadows
    history = api.history("churn")
    assert [r.revision for r in history] == list(range(1, 7))
    assert [len(r.config.shadows) for r in history if r.action == "add-shadow"] == [1, 2]
