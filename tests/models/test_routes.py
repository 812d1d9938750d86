"""The registry's REST routes in process, on SQLite and PostgreSQL (``settings``): register a
real logged model, versions by number and alias, aliases, tags, descriptions, history, diff and
lineage; 400 for bad input and 404 for what does not exist; with ``--auth``, who may write."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

import keel
import keel.models
from keel.auth.models import Permission
from keel.auth.store import AuthStore
from keel.models import api
from keel.server import create_app
from keel.settings import Settings
from tests.auth.conftest import bearer, make_tokens
from tests.models.training import diabetes

API = "/api/v1"


def _train(alpha: float, *, with_param: str = "alpha") -> str:
    """A Ridge model logged in a new run (the local store the server shares); its runs:/ URI."""
    from sklearn.linear_model import Ridge

    X, y = diabetes()
    with keel.start_run(f"ridge-{alpha}"):
        model = Ridge(alpha=alpha).fit(X, y)
        keel.log_param(with_param, alpha)
        keel.log_metric("rmse", float(np.sqrt(np.mean((model.predict(X) - y) ** 2))))
        return keel.models.log_model(model, input_example=X.head()).uri


@pytest.fixture
def http(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code and body["message"], body
    return str(body["message"])


def test_register_read_alias_tag_describe_history_diff_lineage(
    http: TestClient, settings: Settings
) -> None:
    first_uri, second_uri = _train(0.5), _train(2.0)
    ana = {"Keel-User": "ana"}
    created = http.post(
        f"{API}/models/diabetes/versions",
        json={"uri": first_uri, "description": "ridge", "tags": {"team": "ml"}},
        headers=ana,
    )
    assert created.status_code == 201, created.text
    first = created.json()
    assert (first["name"], first["version"], first["source"]) == ("diabetes", 1, first_uri)
    assert first["flavor"] == "sklearn" and first["created_by"] == "ana"
    assert first["tags"] == {"team": "ml"} and first["signature"]["inputs"]
    second = http.post(f"{API}/models/diabetes/versions", json={"uri": second_uri}).json()
    assert second["version"] == 2 and second["created_by"] == "unknown"

    # what the server recorded is what the local registry reads
    assert api.get_version("diabetes", 1, settings=settings).model_dump(mode="json") == first

    assert [m["name"] for m in http.get(f"{API}/models").json()["models"]] == ["diabetes"]
    assert http.get(f"{API}/models", params={"name_like": "x%"}).json() == {"models": []}
    assert http.get(f"{API}/models/diabetes").json()["latest_version"] == 2
    versions = http.get(f"{API}/models/diabetes/versions").json()["versions"]
    assert [v["version"] for v in versions] == [2, 1]
    assert http.get(f"{API}/models/diabetes/versions/1").json() == first
    assert http.get(f"{API}/models/diabetes/versions/latest").json()["version"] == 2

    moved = http.put(
        f"{API}/models/diabetes/aliases/champion",
        json={"version": 1, "reason": "lower rmse"},
        headers=ana,
    )
    assert moved.status_code == 200 and moved.json()["aliases"] == ["champion"]
    assert http.get(f"{API}/models/diabetes/versions/champion").json()["version"] == 1
    assert http.get(f"{API}/models/diabetes/aliases/champion").json()["version"] == 1
    assert http.get(f"{API}/models/diabetes").json()["aliases"] == {"champion": 1}
    http.put(f"{API}/models/diabetes/aliases/champion", json={"version": 2})
    assert http.get(f"{API}/models/diabetes").json()["aliases"] == {"champion": 2}

    assert (
        http.put(f"{API}/models/diabetes/tags/team/owner", json={"value": "ana"}).status_code == 204
    )
    put = http.put(f"{API}/models/diabetes/versions/2/tags/validated", json={"value": "yes"})
    assert put.status_code == 204
    assert http.get(f"{API}/models/diabetes").json()["tags"] == {"team/owner": "ana"}
    assert http.get(f"{API}/models/diabetes/versions/2").json()["tags"] == {"validated": "yes"}
    assert http.delete(f"{API}/models/diabetes/tags/team/owner").status_code == 204
    assert http.delete(f"{API}/models/diabetes/versions/2/tags/validated").status_code == 204
    assert http.get(f"{API}/models/diabetes").json()["tags"] == {}
    described = http.put(f"{API}/models/diabetes/description", json={"description": "progression"})
    assert described.status_code == 204
    http.put(f"{API}/models/diabetes/versions/1/description", json={"description": "alpha 0.5"})
    assert http.get(f"{API}/models/diabetes").json()["description"] == "progression"
    assert http.get(f"{API}/models/diabetes/versions/1").json()["description"] == "alpha 0.5"

    deleted = http.delete(
        f"{API}/models/diabetes/aliases/champion", params={"reason": "drill"}, headers=ana
    )
    assert deleted.json() == {"name": "diabetes", "alias": "champion", "version": 2}
    events = http.get(f"{API}/models/diabetes/history").json()["events"]
    assert [e["action"] for e in events][:4] == [
        "create_model",
        "create_version",
        "create_version",
        "set_alias",
    ]
    assert (events[3]["actor"], events[3]["reason"]) == ("ana", "lower rmse")
    assert (events[-1]["action"], events[-1]["actor"], events[-1]["reason"]) == (
        "delete_alias",
        "ana",
        "drill",
    )

    diff = http.get(
        f"{API}/model-versions/diff", params={"left": "diabetes/1", "right": "models:/diabetes/2"}
    ).json()
    assert diff["params"] == [{"key": "alpha", "left": "0.5", "right": "2.0"}]
    assert [m["key"] for m in diff["metrics"]] == ["rmse"] and diff["metrics"][0]["delta"] > 0

    http.put(f"{API}/models/diabetes/aliases/champion", json={"version": 1})
    graph = http.get(f"{API}/model-versions/lineage", params={"uri": "diabetes@champion"}).json()
    assert graph["root"] == "model:diabetes/1"
    kinds = {node["id"]: node["kind"] for node in graph["nodes"]}
    assert kinds["alias:diabetes@champion"] == "alias"
    run_id = first["run_id"]
    assert kinds[f"run:{run_id}"] == "run"
    edges = {(e["source"], e["target"], e["relation"]) for e in graph["edges"]}
    assert (f"run:{run_id}", "model:diabetes/1", "logged") in edges
    assert ("model:diabetes/1", "alias:diabetes@champion", "alias") in edges
    by_run = http.get(f"{API}/model-versions/lineage", params={"uri": first_uri}).json()
    assert by_run["root"] == f"run:{run_id}"

    found = http.get(f"{API}/model-versions", params={"run_id": run_id}).json()["versions"]
    assert [(v["name"], v["version"]) for v in found] == [("diabetes", 1)]


def test_bad_input_is_400_and_what_is_missing_is_404(http: TestClient) -> None:
    uri = _train(0.5)
    with keel.start_run("notes") as notes:
        keel.log_text("not a model", "notes/readme.txt")
    assert http.post(f"{API}/models/diabetes/versions", json={"uri": uri}).status_code == 201

    # malformed names, aliases, versions, URIs and bodies
    assert "invalid model name" in error(http.get(f"{API}/models/bad name!"), 400, "invalid_input")
    error(http.post(f"{API}/models/-x/versions", json={"uri": uri}), 400, "invalid_input")
    error(http.get(f"{API}/models/diabetes/versions/Champion"), 400, "invalid_input")
    error(http.get(f"{API}/models/diabetes/versions/0"), 400, "invalid_input")
    assert "invalid alias" in error(
        http.put(f"{API}/models/diabetes/aliases/Prod", json={"version": 1}), 400, "invalid_input"
    )
    error(
        http.put(f"{API}/models/diabetes/aliases/latest", json={"version": 1}), 400, "invalid_input"
    )
    error(
        http.put(f"{API}/models/diabetes/aliases/prod", json={"version": 0}), 400, "invalid_input"
    )
    error(http.put(f"{API}/models/diabetes/aliases/prod", json={}), 400, "invalid_input")
    error(
        http.put(f"{API}/models/diabetes/aliases/prod", json={"version": 1, "extra": 1}),
        400,
        "invalid_input",
    )
    bad_json = http.post(
        f"{API}/models/diabetes/versions",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    error(bad_json, 400, "invalid_input")
    error(
        http.post(f"{API}/models/diabetes/versions", json={"uri": "s3://x/model"}),
        400,
        "invalid_input",
    )
    error(
        http.post(f"{API}/models/diabetes/versions", json={"uri": "models:/diabetes/1"}),
        400,
        "invalid_input",
    )
    not_model = http.post(
        f"{API}/models/diabetes/versions", json={"uri": f"runs:/{notes.run_id}/notes"}
    )
    error(not_model, 400, "invalid_input")
    error(
        http.put(f"{API}/models/diabetes/versions/0/tags/k", json={"value": "v"}),
        400,
        "invalid_input",
    )
    error(http.put(f"{API}/models/diabetes/tags/k", json={"value": 3}), 400, "invalid_input")
    error(http.get(f"{API}/model-versions/diff", params={"left": "diabetes"}), 400, "invalid_input")
    error(
        http.get(f"{API}/model-versions/lineage", params={"uri": "nope:/x"}), 400, "invalid_input"
    )
    error(
        http.post(f"{API}/models/diabetes/versions", json={"uri": uri}, headers={"Keel-User": ""}),
        400,
        "invalid_input",
    )

    # what does not exist
    assert "nope" in error(http.get(f"{API}/models/nope"), 404, "not_found")
    error(http.get(f"{API}/models/nope/versions"), 404, "not_found")
    error(http.get(f"{API}/models/diabetes/versions/7"), 404, "not_found")
    error(http.get(f"{API}/models/diabetes/versions/champion"), 404, "not_found")
    error(http.get(f"{API}/models/diabetes/aliases/champion"), 404, "not_found")
    error(http.delete(f"{API}/models/diabetes/aliases/champion"), 404, "not_found")
    error(http.put(f"{API}/models/diabetes/aliases/prod", json={"version": 9}), 404, "not_found")
    error(http.delete(f"{API}/models/diabetes/tags/absent"), 404, "not_found")
    error(
        http.put(f"{API}/models/diabetes/versions/9/description", json={"description": ""}),
        404,
        "not_found",
    )
    missing_run = http.post(
        f"{API}/models/diabetes/versions", json={"uri": f"runs:/{'0' * 32}/model"}
    )
    error(missing_run, 404, "not_found")
    error(
        http.get(
            f"{API}/model-versions/diff", params={"left": "diabetes/1", "right": "diabetes/5"}
        ),
        404,
        "not_found",
    )
    # nothing above changed the registry
    assert [
        v["version"] for v in http.get(f"{API}/models/diabetes/versions").json()["versions"]
    ] == [1]


@pytest.fixture
def auth_http(settings: Settings) -> Iterator[tuple[TestClient, AuthStore]]:
    app = create_app(settings.replace(auth=True))
    with TestClient(app) as client:
        yield client, app.state.auth_store


def test_with_auth_readers_read_editors_write_and_the_audit_names_the_token_user(
    auth_http: tuple[TestClient, AuthStore],
) -> None:
    http, store = auth_http
    tokens = make_tokens(store)
    alice, viewer = bearer(tokens.alice), bearer(tokens.bob_viewer)
    # a model logged locally, in an experiment shared with alice only
    uri = _train(0.5)
    run = keel.Client(Settings())
    try:
        run_id = uri.split("/")[1]
        experiment_id = run.get_run(run_id).experiment_id
    finally:
        run.close()
    store.grant(experiment_id, "alice", Permission.READ, granted_by="admin")

    body = {"uri": uri}
    error(http.post(f"{API}/models/churn/versions", json=body), 401, "unauthenticated")
    error(http.get(f"{API}/models"), 401, "unauthenticated")
    # bob (editor) cannot see alice's run, so he cannot register from it
    error(
        http.post(f"{API}/models/churn/versions", json=body, headers=bearer(tokens.bob)),
        404,
        "not_found",
    )
    created = http.post(
        f"{API}/models/churn/versions", json=body, headers={**alice, "Keel-User": "mallory"}
    )
    assert created.status_code == 201, created.text
    assert created.json()["created_by"] == "alice"  # the token's user, not the claim

    # a viewer reads everything, writes nothing
    assert http.get(f"{API}/models/churn/versions/1", headers=viewer).status_code == 200
    assert http.get(f"{API}/models/churn/history", headers=viewer).status_code == 200
    denied = http.put(f"{API}/models/churn/aliases/champion", json={"version": 1}, headers=viewer)
    assert "viewer" in error(denied, 403, "permission_denied")
    error(
        http.put(f"{API}/models/churn/tags/k", json={"value": "v"}, headers=viewer),
        403,
        "permission_denied",
    )
    error(
        http.post(f"{API}/models/churn/versions", json=body, headers=viewer),
        403,
        "permission_denied",
    )

    moved = http.put(
        f"{API}/models/churn/aliases/champion",
        json={"version": 1},
        headers=bearer(tokens.bob),
    )
    assert moved.status_code == 200
    events = http.get(f"{API}/models/churn/history", headers=viewer).json()["events"]
    assert [(e["action"], e["actor"]) for e in events] == [
        ("create_model", "alice"),
        ("create_version", "alice"),
        ("set_alias", "bob"),
    ]
    # the server's request audit log names the model, the run and the token's user
    entries = http.get(f"{API}/audit", headers=bearer(tokens.admin)).json()["entries"]
    registered = next(e for e in entries if e["action"] == "register" and e["status"] == 201)
    assert registered["user"] == "alice"
    assert "model/churn" in registered["targets"] and f"run/{run_id}" in registered["targets"]


def test_with_auth_lineage_and_diff_show_a_run_only_to_who_may_read_it(
    auth_http: tuple[TestClient, AuthStore],
) -> None:
    http, store = auth_http
    tokens = make_tokens(store)
    alice, viewer = bearer(tokens.alice), bearer(tokens.bob_viewer)
    first, second = _train(0.5), _train(2.0)  # one experiment, shared with alice only
    run_id = first.split("/")[1]
    local = keel.Client(Settings())
    try:
        experiment_id = local.get_run(run_id).experiment_id
        local.log_param(run_id, "late", "after-logging")  # in the run, not in the manifest
    finally:
        local.close()
    store.grant(experiment_id, "alice", Permission.READ, granted_by="admin")
    for uri in (first, second):
        registered = http.post(f"{API}/models/churn/versions", json={"uri": uri}, headers=alice)
        assert registered.status_code == 201, registered.text

    # bob's viewer token cannot read the run: the run's routes and a runs:/ lineage are 404
    error(http.get(f"{API}/runs/{run_id}", headers=viewer), 404, "not_found")
    lineage = f"{API}/model-versions/lineage"
    error(http.get(lineage, params={"uri": first}, headers=viewer), 404, "not_found")
    # the version's lineage shows the run as a bare node, like a purged one
    graph = http.get(lineage, params={"uri": "churn/1"}, headers=viewer).json()
    run_node = next(n for n in graph["nodes"] if n["id"] == f"run:{run_id}")
    assert run_node["attributes"] == {"missing": True}
    assert "after-logging" not in str(graph) and "rmse" not in str(graph)
    diff = f"{API}/model-versions/diff"
    seen = http.get(diff, params={"left": "churn/1", "right": "churn/2"}, headers=viewer).json()
    assert "late" not in [p["key"] for p in seen["params"]]  # only the manifests' params

    # alice may read the run: she sees all of it
    shown = http.get(lineage, params={"uri": first}, headers=alice).json()
    assert shown["root"] == f"run:{run_id}"
    attributes = next(n for n in shown["nodes"] if n["id"] == f"run:{run_id}")["attributes"]
    assert attributes["params"] == {"alpha": "0.5", "late": "after-logging"}
    assert "rmse" in attributes["metrics"]
    full = http.get(diff, params={"left": "churn/1", "right": "churn/2"}, headers=alice).json()
    assert "late" in [p["key"] for p in full["params"]]


def test_registering_a_folder_with_a_malformed_manifest_is_400(
    http: TestClient, tmp_path: Path
) -> None:
    (tmp_path / "keel-model.json").write_text('{"flavor": 3}')
    with keel.start_run() as run:
        keel.log_artifact(tmp_path / "keel-model.json", "model")
    answer = http.post(f"{API}/models/m/versions", json={"uri": f"runs:/{run.run_id}/model"})
    message = error(answer, 400, "invalid_input")
    assert "is not a valid Keel model manifest: flavor: Input should be a valid string" in message
    assert "model_class: Field required" in message
    error(http.get(f"{API}/models/m"), 404, "not_found")  # nothing was registered
