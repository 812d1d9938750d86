"""Rules the tracking store enforces for every caller: a run cannot end before it started, and a
parent run must exist. Checked through the Client, the native REST API and the MLflow-compatible
API (which all reach the same store method), on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from keel.errors import Conflict, InvalidInput, NotFound
from keel.server import create_app
from keel.settings import Settings
from keel.tracking.api import Client
from keel.tracking.models import LifecycleStage, RunStatus

START = 1_793_491_200_000  # 2026-11-01T00:00:00Z
API = "/api/v1"
MLFLOW = "/api/2.0/mlflow"


@pytest.fixture
def http(settings: Settings) -> Iterator[httpx.Client]:
    with TestClient(create_app(settings)) as client:
        yield client


def _experiment(client: Client, name: str = "exp") -> int:
    return client.get_or_create_experiment(name).experiment_id


# -- end time -------------------------------------------------------------------------------


def test_a_run_cannot_end_before_it_started(client: Client) -> None:
    run = client.create_run(_experiment(client), start_time=START)

    with pytest.raises(InvalidInput) as raised:
        client.end_run(run.run_id, end_time=START - 1)

    message = str(raised.value)
    assert f"cannot end at {START - 1} (2026-10-31T23:59:59.999+00:00)" in message
    assert f"before it started, at {START} (2026-11-01T00:00:00.000+00:00)" in message
    assert raised.value.context == {
        "run_id": run.run_id,
        "start_time": START,
        "end_time": START - 1,
    }
    still = client.get_run(run.run_id)
    assert still.status is RunStatus.RUNNING and still.end_time is None

    client.end_run(run.run_id, end_time=START)  # a run may end the instant it started
    assert client.get_run(run.run_id).end_time == START


def test_ending_a_run_with_no_time_never_ends_it_before_its_start(client: Client) -> None:
    # a caller whose clock runs ahead of the store's starts a run "in the future"
    future = client.create_run(_experiment(client), start_time=4_000_000_000_000)

    client.store.set_run_status(future.run_id, RunStatus.FINISHED, end_time=None)

    assert client.get_run(future.run_id).end_time == 4_000_000_000_000


def test_ending_an_unknown_run_is_not_found(client: Client) -> None:
    with pytest.raises(NotFound, match=r"no run with id .0{32}."):
        client.store.set_run_status("0" * 32, RunStatus.FINISHED, end_time=START)


def test_patch_refuses_an_end_time_before_the_start(http: httpx.Client) -> None:
    eid = http.post(f"{API}/experiments", json={"name": "e"}).json()["experiment_id"]
    run = http.post(f"{API}/runs", json={"experiment_id": eid, "start_time": START}).json()

    response = http.patch(
        f"{API}/runs/{run['run_id']}", json={"status": "FINISHED", "end_time": START - 60_000}
    )

    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid_input"
    assert (body["start_time"], body["end_time"]) == (START, START - 60_000)
    assert str(START) in body["message"] and str(START - 60_000) in body["message"]
    assert http.get(f"{API}/runs/{run['run_id']}").json()["status"] == "RUNNING"


# -- parent run -----------------------------------------------------------------------------


@pytest.mark.parametrize("parent", ["0" * 32, "p" * 33, "ABC", "abc\x00def"])
def test_a_parent_run_that_does_not_exist_is_refused(client: Client, parent: str) -> None:
    experiment_id = _experiment(client)

    for create in (
        lambda: client.create_run(experiment_id, parent_run_id=parent),
        lambda: client.create_remote_run(experiment_id, host="h", user="u", parent_run_id=parent),
    ):
        with pytest.raises(NotFound) as raised:
            create()
        assert f"no run with id {parent!r} to be the parent" in str(raised.value)
        assert raised.value.context == {"parent_run_id": parent}

    assert client.search_runs(experiment_ids=[experiment_id]).runs == []


def test_a_parent_may_be_in_another_experiment_or_deleted(client: Client) -> None:
    parent = client.create_run(_experiment(client, "parents"))
    client.delete_runs([parent.run_id])

    child = client.create_run(_experiment(client, "children"), parent_run_id=parent.run_id)

    got = client.get_run(child.run_id)
    assert got.parent_run_id == parent.run_id
    assert client.get_run(parent.run_id).lifecycle_stage is LifecycleStage.DELETED


def test_mlflow_create_run_checks_the_parent_tag(http: httpx.Client) -> None:
    def create(parent: str) -> httpx.Response:
        tags = [{"key": "mlflow.parentRunId", "value": parent}]
        return http.post(f"{MLFLOW}/runs/create", json={"experiment_id": "0", "tags": tags})

    missing = create("0" * 32)
    assert missing.status_code == 404, missing.text
    assert missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    assert "to be the parent" in missing.json()["message"]

    parent = http.post(f"{MLFLOW}/runs/create", json={"experiment_id": "0"}).json()
    parent_id = parent["run"]["info"]["run_id"]
    child = create(parent_id)
    assert child.status_code == 200, child.text
    tags = {t["key"]: t["value"] for t in child.json()["run"]["data"]["tags"]}
    assert tags["mlflow.parentRunId"] == parent_id


def test_mlflow_end_run_keeps_the_clients_end_time(http: httpx.Client) -> None:
    """An MLflow client whose clock runs an hour ahead of the server's still ends its runs: the
    end time it sends is used, not the server's (which would fall before the start)."""
    ahead = int(time.time() * 1000) + 3_600_000
    created = http.post(f"{MLFLOW}/runs/create", json={"experiment_id": "0", "start_time": ahead})
    run_id = created.json()["run"]["info"]["run_id"]
    ended = http.post(
        f"{MLFLOW}/runs/update",
        json={"run_id": run_id, "status": "FINISHED", "end_time": ahead + 5_000},
    )
    assert ended.status_code == 200, ended.text
    assert int(ended.json()["run_info"]["end_time"]) == ahead + 5_000
    # and with no end time the server's clock is used, but never before the start
    second = http.post(f"{MLFLOW}/runs/create", json={"experiment_id": "0", "start_time": ahead})
    second_id = second.json()["run"]["info"]["run_id"]
    http.post(f"{MLFLOW}/runs/update", json={"run_id": second_id, "status": "KILLED"})
    assert http.get(f"{API}/runs/{second_id}").json()["end_time"] == ahead


def test_download_into_a_clashing_folder_is_a_conflict(client: Client, tmp_path: Path) -> None:
    run = client.create_run(_experiment(client))
    client.log_text(run.run_id, "weights", "model/a")
    client.log_text(run.run_id, "card", "model/b")
    dst = tmp_path / "out"
    (dst / "model").mkdir(parents=True)
    (dst / "model" / "a").mkdir()  # a folder where the file 'model/a' must go
    (dst / "model" / "keep.txt").write_text("mine")
    with pytest.raises(Conflict) as raised:
        client.download_artifacts(run.run_id, "model", dst=dst)
    assert str(dst / "model" / "a") in raised.value.message
    assert not (dst / "model" / "b").exists()  # nothing half-written
    assert (dst / "model" / "keep.txt").read_text() == "mine"
