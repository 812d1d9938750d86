"""The deployments' REST routes in process, on SQLite and PostgreSQL: every route, what lands in
the database, 400/404/409 for mistakes (never a 500), and with ``--auth`` who may write."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from keel.auth.store import AuthStore
from keel.models import api as registry
from keel.server import create_app
from keel.serving.deployments import api
from keel.settings import Settings
from tests.auth.conftest import bearer, make_tokens
from tests.serving.deployments.conftest import Registered

API = "/api/v1/deployments"
CONFIG = {
    "primaries": [
        {"ref": "diabetes@champion", "weight": 90},
        {"ref": "diabetes@challenger", "weight": 10},
    ],
    "shadows": ["diabetes/3"],
}


@pytest.fixture
def http(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code and body["message"], body
    return str(body["message"])


def test_every_route_and_what_lands_in_the_database(
    registered: Registered, http: TestClient, settings: Settings
) -> None:
    ana = {"Keel-User": "ana"}
    created = http.post(API, json={"name": "churn", "config": CONFIG, "note": "go"}, headers=ana)
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["name"], body["revision"], body["created_by"]) == ("churn", 1, "ana")
    assert body["resolved"] == {"diabetes@champion": 1, "diabetes@challenger": 2, "diabetes/3": 3}
    assert api.get("churn", settings=settings).model_dump(mode="json") == body

    assert [d["name"] for d in http.get(API).json()["deployments"]] == ["churn"]
    assert http.get(f"{API}/churn").json() == body
    moved = http.put(f"{API}/churn/traffic", json={"weights": {"diabetes@challenger": 30}})
    assert moved.status_code == 200, moved.text
    assert moved.json()["config"]["primaries"][0] == {"ref": "diabetes@champion", "weight": 70.0}
    assert moved.json()["updated_by"] == "unknown"
    removed = http.post(f"{API}/churn/shadows/remove", json={"ref": "diabetes/3"}, headers=ana)
    assert removed.json()["config"]["shadows"] == []
    added = http.post(f"{API}/churn/shadows", json={"ref": "models:/diabetes/3"}, headers=ana)
    assert added.json()["config"]["shadows"] == ["diabetes/3"]
    promoted = http.post(f"{API}/churn/promote", json={"move_alias": True, "note": "2 wins"})
    assert promoted.status_code == 200, promoted.text
    done = promoted.json()
    assert (done["promoted"], done["version"], done["alias"]) == (
        "diabetes@challenger",
        2,
        "diabetes@champion",
    )
    assert done["moved"]["version"] == 2 and done["request"] is None
    assert registry.get_version("diabetes", "champion", settings=settings).version == 2
    back = http.post(f"{API}/churn/rollback", json={"to": 1, "note": "undo"}, headers=ana)
    assert back.json()["revision"] == 6 and back.json()["config"] == api.get(
        "churn", settings=settings
    ).config.model_dump(mode="json")
    revisions = http.get(f"{API}/churn/revisions").json()["revisions"]
    assert [(r["revision"], r["action"], r["actor"]) for r in revisions] == [
        (1, "create", "ana"),
        (2, "set-traffic", "unknown"),
        (3, "remove-shadow", "ana"),
        (4, "add-shadow", "ana"),
        (5, "promote", "unknown"),
        (6, "rollback", "ana"),
    ]
    assert http.get(f"{API}/churn/revisions/5").json() == revisions[4]
    deleted = http.delete(f"{API}/churn")
    assert deleted.json() == {"name": "churn", "revision": 6}
    assert api.list_deployments(settings=settings) == []


def test_mistakes_are_400_404_409_never_500(registered: Registered, http: TestClient) -> None:
    assert http.post(API, json={"name": "churn", "config": CONFIG}).status_code == 201
    error(http.post(API, json={"name": "churn", "config": CONFIG}), 409, "already_exists")
    bad_configs = [
        {"primaries": [{"ref": "diabetes/1", "weight": 50}]},
        {"primaries": []},
        {"primaries": [{"ref": "diabetes/1", "weight": "lots"}]},
        {"primaries": [{"ref": "runs:/abc/model", "weight": 100}]},
        {"primaries": [{"ref": "diabetes/1", "weight": 100}], "extra": 1},
        {"primaries": [{"ref": "diabetes/1", "weight": 100}], "shadows": ["diabetes/1"]},
    ]
    for config in bad_configs:
        error(http.post(API, json={"name": "other", "config": config}), 400, "invalid_input")
    error(http.post(API, json={"name": "a b", "config": CONFIG}), 400, "invalid_input")
    missing = {"primaries": [{"ref": "diabetes@gone", "weight": 100}]}
    assert "diabetes@gone does not resolve" in error(
        http.post(API, json={"name": "other", "config": missing}), 404, "not_found"
    )
    error(http.get(f"{API}/nope"), 404, "not_found")
    error(http.get(f"{API}/churn/revisions/7"), 404, "not_found")
    error(http.get(f"{API}/churn/revisions/0"), 400, "invalid_input")
    error(http.get(f"{API}/bad%20name"), 400, "invalid_input")
    error(http.put(f"{API}/churn/traffic", json={"weights": {}}), 400, "invalid_input")
    error(http.put(f"{API}/churn/traffic", json={"weights": {"x": 5}}), 400, "invalid_input")
    error(
        http.put(f"{API}/churn/traffic", json={"weights": {"diabetes/3": 101}}),
        400,
        "invalid_input",
    )
    error(http.post(f"{API}/churn/rollback", json={}), 400, "invalid_input")  # only revision 1
    error(http.post(f"{API}/churn/rollback", json={"to": 0}), 400, "invalid_input")
    error(http.post(f"{API}/churn/promote", json={"arm": "diabetes/9"}), 400, "invalid_input")
    error(http.post(f"{API}/churn/shadows", content=b"{not json"), 400, "invalid_input")
    assert http.get(f"{API}/churn").json()["revision"] == 1


@pytest.fixture
def auth_http(settings: Settings) -> Iterator[tuple[TestClient, AuthStore]]:
    app = create_app(settings.replace(auth=True))
    with TestClient(app) as client:
        yield client, app.state.auth_store


def test_with_auth_viewers_read_editors_write_as_themselves(
    registered: Registered, auth_http: tuple[TestClient, AuthStore]
) -> None:
    http, store = auth_http
    tokens = make_tokens(store)
    alice, viewer = bearer(tokens.alice), bearer(tokens.bob_viewer)
    body = {"name": "churn", "config": CONFIG}
    error(http.post(API, json=body), 401, "unauthenticated")
    error(http.get(API), 401, "unauthenticated")
    assert "cannot change deployments" in error(
        http.post(API, json=body, headers=viewer), 403, "permission_denied"
    )
    created = http.post(API, json=body, headers={**alice, "Keel-User": "mallory"})
    assert created.status_code == 201, created.text
    assert created.json()["created_by"] == "alice"  # the token's user, not the claim
    assert http.get(f"{API}/churn", headers=viewer).status_code == 200
    assert http.get(f"{API}/churn/revisions", headers=viewer).status_code == 200
    for method, path, payload in [
        ("PUT", "/churn/traffic", {"weights": {"diabetes@challenger": 50}}),
        ("POST", "/churn/promote", {}),
        ("POST", "/churn/rollback", {"to": 1}),
        ("POST", "/churn/shadows", {"ref": "diabetes/1"}),
        ("DELETE", "/churn", None),
    ]:
        denied = http.request(method, f"{API}{path}", json=payload, headers=viewer)
        error(denied, 403, "permission_denied")
    promoted = http.post(f"{API}/churn/promote", json={"move_alias": True}, headers=alice)
    assert promoted.status_code == 200, promoted.text
    revisions = http.get(f"{API}/churn/revisions", headers=viewer).json()["revisions"]
    assert [(r["action"], r["actor"]) for r in revisions] == [
        ("create", "alice"),
        ("promote", "alice"),
    ]
    moved = http.get("/api/v1/models/diabetes/history", headers=viewer).json()["events"][-1]
    assert (moved["action"], moved["actor"], moved["version"]) == ("set_alias", "alice", 2)
    entries = http.get("/api/v1/audit", headers=bearer(tokens.admin)).json()["entries"]
    assert any("deployment/churn" in e["targets"] and e["user"] == "alice" for e in entries)
