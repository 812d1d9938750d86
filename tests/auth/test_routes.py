"""A server with --auth, in process: tokens, roles, grants, invisibility, admin API, audit log."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from keel.auth.store import AuthStore
from tests.auth.conftest import API, Tokens, bearer

AsUser = Callable[[str], httpx.Client]


def error(response: httpx.Response, status: int, code: str) -> dict:  # type: ignore[type-arg]
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code and body["message"], body
    return body  # type: ignore[no-any-return]


def make_experiment(as_user: AsUser, token: str, name: str = "churn") -> tuple[int, str]:
    """An experiment ``token``'s user creates (and so owns), with one run: (id, run_id)."""
    http = as_user(token)
    created = http.post(f"{API}/experiments", json={"name": name})
    assert created.status_code == 201, created.text
    eid = created.json()["experiment_id"]
    run = http.post(f"{API}/runs", json={"experiment_id": eid})
    assert run.status_code == 201, run.text
    run_id = run.json()["run_id"]
    assert (
        http.post(
            f"{API}/runs/{run_id}/metrics", json={"points": [{"key": "loss", "value": 0.5}]}
        ).status_code
        == 200
    )
    assert http.put(f"{API}/runs/{run_id}/artifacts/notes.txt", content=b"hello").status_code == 201
    return eid, run_id


# -- authentication ---------------------------------------------------------------------------


def test_every_route_but_health_needs_a_token(auth_app: tuple[FastAPI, TestClient]) -> None:
    """Every operation the OpenAPI document lists, and the unlisted MLflow routes: a route
    added later without the check fails this test."""
    app, http = auth_app
    assert http.get("/health").status_code == 200
    assert http.get("/ready").status_code == 200
    operations = [
        (method.upper(), path)
        for path, item in app.openapi()["paths"].items()
        for method in item
        if path not in ("/health", "/ready")
    ]
    operations.append(("POST", "/api/2.0/mlflow/model-versions/create"))
    for method, template in operations:
        path = re.sub(r"\{[^}]+\}", "1", template)
        response = http.request(method, path, json={})
        assert response.status_code == 401, (method, template, response.text)
        assert "token" in response.json()["message"]
    assert len(operations) > 50


def test_401_says_what_is_missing(http: TestClient, tokens: Tokens) -> None:
    body = error(http.get(f"{API}/experiments"), 401, "unauthenticated")
    assert "Authorization: Bearer" in body["message"] and "keel tokens create" in body["message"]
    response = http.get(f"{API}/experiments")
    assert response.headers["www-authenticate"].startswith("Bearer")
    bad = http.get(f"{API}/experiments", headers={"Authorization": "Bearer keel_x_y"})
    assert "malformed" in error(bad, 401, "unauthenticated")["message"]
    unknown = http.get(f"{API}/experiments", headers=bearer("keel_000000000000_secret"))
    assert "not valid" in error(unknown, 401, "unauthenticated")["message"]
    weird = http.get(f"{API}/experiments", headers={"Authorization": "Digest abc"})
    assert "unsupported" in error(weird, 401, "unauthenticated")["message"]
    garbled = http.get(f"{API}/experiments", headers={"Authorization": "Basic %%%"})
    assert "base64" in error(garbled, 401, "unauthenticated")["message"]


def test_http_basic_takes_the_user_and_the_token_as_password(
    http: TestClient, tokens: Tokens
) -> None:
    def basic(user: str, token: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()}

    assert http.get(f"{API}/whoami", headers=basic("alice", tokens.alice)).json()["user"] == "alice"
    error(http.get(f"{API}/whoami", headers=basic("bob", tokens.alice)), 401, "unauthenticated")
    error(http.get(f"{API}/whoami", headers=basic("alice", "")), 401, "unauthenticated")


def test_mlflow_routes_answer_401_in_mlflow_shape(http: TestClient) -> None:
    response = http.get("/api/2.0/mlflow/experiments/get", params={"experiment_id": "0"})
    assert response.status_code == 401
    assert response.json()["error_code"] == "UNAUTHENTICATED"


def test_revoking_or_disabling_takes_effect_at_once(
    as_user: AsUser, tokens: Tokens, store: AuthStore
) -> None:
    alice = as_user(tokens.alice)
    assert alice.get(f"{API}/whoami").json() == {
        "user": "alice",
        "role": "editor",
        "token_id": tokens.alice.split("_")[1],
    }
    store.set_user_disabled("alice", True)
    error(alice.get(f"{API}/experiments"), 401, "unauthenticated")
    store.set_user_disabled("alice", False)
    assert alice.get(f"{API}/experiments").status_code == 200
    # a user may revoke their own token
    assert alice.delete(f"{API}/tokens/{tokens.alice.split('_')[1]}").status_code == 204
    error(alice.get(f"{API}/experiments"), 401, "unauthenticated")


# -- authorization ----------------------------------------------------------------------------


def test_an_experiment_not_granted_is_invisible(as_user: AsUser, tokens: Tokens) -> None:
    eid, run_id = make_experiment(as_user, tokens.alice)
    bob = as_user(tokens.bob)
    missing = bob.get(f"{API}/experiments/999")
    hidden = bob.get(f"{API}/experiments/{eid}")
    # exactly like an experiment that does not exist, so its existence does not leak
    assert error(hidden, 404, "not_found")["message"] == f"no experiment with id {eid}"
    assert missing.json()["message"] == "no experiment with id 999"
    assert bob.get(f"{API}/experiments").json()["experiments"] == []
    assert bob.get(f"{API}/experiments/by-name/churn").status_code == 404
    assert bob.post(f"{API}/runs/search", json={}).json()["runs"] == []
    search = bob.post(f"{API}/runs/search", json={"experiment_ids": [eid]})
    assert search.json()["runs"] == []
    for path in (
        f"/runs/{run_id}",
        f"/runs/{run_id}/metrics/history?key=loss",
        f"/runs/{run_id}/artifacts",
        f"/runs/{run_id}/artifacts/notes.txt",
        f"/runs/by-prefix/{run_id[:8]}",
    ):
        error(bob.get(API + path), 404, "not_found")
    # and writes to it are 404s too, not 403s
    error(bob.post(f"{API}/runs", json={"experiment_id": eid}), 404, "not_found")
    error(bob.post(f"{API}/runs/{run_id}/params", json={"params": {"a": "1"}}), 404, "not_found")
    # MLflow's endpoints see the same
    mlflow = bob.get("/api/2.0/mlflow/runs/get", params={"run_id": run_id})
    assert mlflow.status_code == 404
    assert (
        bob.post("/api/2.0/mlflow/runs/search", json={"experiment_ids": [str(eid)]})
        .json()
        .get("runs", [])
        == []
    )


def test_read_write_and_owner_grants(as_user: AsUser, tokens: Tokens) -> None:
    eid, run_id = make_experiment(as_user, tokens.alice)
    alice, bob, bob_viewer = as_user(tokens.alice), as_user(tokens.bob), as_user(tokens.bob_viewer)

    granted = alice.put(f"{API}/experiments/{eid}/grants/bob", json={"permission": "read"})
    assert granted.status_code == 200 and granted.json()["granted_by"] == "alice"
    assert [e["name"] for e in bob.get(f"{API}/experiments").json()["experiments"]] == ["churn"]
    assert bob.get(f"{API}/runs/{run_id}").json()["metrics"] == {"loss": 0.5}
    assert bob.get(f"{API}/runs/{run_id}/artifacts/notes.txt").content == b"hello"
    assert len(bob.post(f"{API}/runs/search", json={}).json()["runs"]) == 1
    denied = error(
        bob.post(f"{API}/runs/{run_id}/tags", json={"tags": {"a": "1"}}), 403, "permission_denied"
    )
    assert denied["has"] == "read" and denied["needs"] == "write"
    assert f"keel grants add {eid} bob write" in denied["message"]

    alice.put(f"{API}/experiments/{eid}/grants/bob", json={"permission": "write"})
    assert bob.post(f"{API}/runs/{run_id}/tags", json={"tags": {"a": "1"}}).status_code == 204
    points = {"points": [{"key": "acc", "value": 0.9, "step": 1}]}
    assert bob.post(f"{API}/runs/{run_id}/metrics", json=points).status_code == 200
    created = bob.post(f"{API}/runs", json={"experiment_id": eid, "user": "mallory"})
    assert created.status_code == 201
    assert created.json()["user"] == "bob"  # the token's user, whatever the body claims
    # a viewer token cannot write even where its user may
    viewer = error(
        bob_viewer.post(f"{API}/runs/{run_id}/metrics", json=points), 403, "permission_denied"
    )
    assert viewer["role"] == "viewer" and "editor token" in viewer["message"]
    error(bob_viewer.post(f"{API}/experiments", json={"name": "mine"}), 403, "permission_denied")
    assert bob_viewer.get(f"{API}/runs/{run_id}").status_code == 200

    # renaming and deleting the experiment, and granting, need owner
    error(bob.patch(f"{API}/experiments/{eid}", json={"name": "x"}), 403, "permission_denied")
    error(bob.delete(f"{API}/experiments/{eid}"), 403, "permission_denied")
    error(
        bob.put(f"{API}/experiments/{eid}/grants/admin", json={"permission": "read"}),
        403,
        "permission_denied",
    )
    error(bob.get(f"{API}/experiments/{eid}/grants"), 403, "permission_denied")
    # owners grant read or write, but only admins make owners or touch an owner's grant
    error(
        alice.put(f"{API}/experiments/{eid}/grants/bob", json={"permission": "owner"}),
        403,
        "permission_denied",
    )
    admin = as_user(tokens.admin)
    assert (
        admin.put(f"{API}/experiments/{eid}/grants/bob", json={"permission": "owner"}).status_code
        == 200
    )
    error(alice.delete(f"{API}/experiments/{eid}/grants/bob"), 403, "permission_denied")
    assert bob.patch(f"{API}/experiments/{eid}", json={"name": "churn-2"}).status_code == 200

    assert admin.delete(f"{API}/experiments/{eid}/grants/bob").status_code == 204
    error(bob.get(f"{API}/experiments/{eid}"), 404, "not_found")
    grants = alice.get(f"{API}/experiments/{eid}/grants").json()["grants"]
    assert [(g["user"], g["permission"]) for g in grants] == [("alice", "owner")]


def test_admins_see_everything_and_manage_users_and_tokens(
    as_user: AsUser, tokens: Tokens, http: TestClient
) -> None:
    eid, run_id = make_experiment(as_user, tokens.alice)
    admin, alice = as_user(tokens.admin), as_user(tokens.alice)
    assert [e["experiment_id"] for e in admin.get(f"{API}/experiments").json()["experiments"]] == [
        eid
    ]
    assert admin.get(f"{API}/runs/{run_id}").status_code == 200

    assert admin.post(f"{API}/users", json={"name": "carol"}).status_code == 201
    error(admin.post(f"{API}/users", json={"name": "carol"}), 409, "already_exists")
    error(admin.post(f"{API}/users", json={"name": "no spaces"}), 400, "invalid_input")
    made = admin.post(
        f"{API}/tokens", json={"user": "carol", "role": "viewer", "expires_in_days": 1}
    )
    assert made.status_code == 201
    carol = as_user(made.json()["token"])
    assert carol.get(f"{API}/whoami").json()["role"] == "viewer"
    listed = admin.get(f"{API}/tokens", params={"user": "carol"}).json()["tokens"]
    assert len(listed) == 1 and "token" not in listed[0] and listed[0]["expires_at"]
    assert [u["name"] for u in admin.get(f"{API}/users").json()["users"]] == [
        "admin",
        "alice",
        "bob",
        "carol",
    ]
    assert admin.post(f"{API}/users/carol/disable").json()["disabled"] is True
    error(carol.get(f"{API}/whoami"), 401, "unauthenticated")

    # editors do not administer
    for response in (
        alice.get(f"{API}/users"),
        alice.post(f"{API}/users", json={"name": "dave"}),
        alice.post(f"{API}/tokens", json={"user": "alice", "role": "admin"}),
        alice.get(f"{API}/audit"),
        alice.get(f"{API}/tokens", params={"user": "bob"}),
    ):
        assert error(response, 403, "permission_denied")["needs"] == "admin"
    assert len(alice.get(f"{API}/tokens").json()["tokens"]) == 1  # their own
    error(alice.delete(f"{API}/tokens/{tokens.bob.split('_')[1]}"), 404, "not_found")


# -- the audit log ----------------------------------------------------------------------------


def test_every_write_is_audited_with_who_what_and_the_outcome(
    as_user: AsUser, tokens: Tokens, http: TestClient
) -> None:
    eid, run_id = make_experiment(as_user, tokens.alice)
    bob = as_user(tokens.bob)
    bob.post(f"{API}/runs/{run_id}/params", json={"params": {"a": "1"}})  # 404: invisible
    http.post(f"{API}/experiments", json={"name": "anon"})  # 401
    as_user(tokens.alice).post(f"{API}/runs/search", json={})  # a read: not audited
    as_user(tokens.alice).get(f"{API}/runs/{run_id}")  # a read: not audited

    admin = as_user(tokens.admin)
    entries = admin.get(f"{API}/audit").json()["entries"]
    summary = [(e["user"], e["action"], e["status"]) for e in reversed(entries)]
    assert summary == [
        ("alice", "create_experiment", 201),
        ("alice", "create_run", 201),
        ("alice", "log_metrics", 200),
        ("alice", "upload_artifact", 201),
        ("bob", "log_params", 404),
        (None, "create_experiment", 401),
    ]
    assert entries[-1]["targets"] == [f"experiment/{eid}"]
    assert entries[-2]["targets"] == [f"experiment/{eid}", f"run/{run_id}"]
    assert entries[-3]["path"] == f"{API}/runs/{run_id}/metrics"
    assert all(e["at"] > 0 and e["client"] for e in entries)

    page = admin.get(f"{API}/audit", params={"user": "alice", "limit": 2}).json()
    assert [e["action"] for e in page["entries"]] == ["upload_artifact", "log_metrics"]
    older = admin.get(
        f"{API}/audit", params={"user": "alice", "before_id": page["next_before_id"]}
    ).json()
    assert [e["action"] for e in older["entries"]] == ["create_run", "create_experiment"]
    by_run = admin.get(f"{API}/audit", params={"target": f"run/{run_id}"}).json()["entries"]
    assert {e["action"] for e in by_run} == {
        "create_run",
        "log_metrics",
        "upload_artifact",
        "log_params",  # bob's refused attempt is there too
    }
    assert admin.get(f"{API}/audit", params={"limit": 0}).status_code == 400


def test_the_audit_row_is_written_before_the_answer(
    auth_app: tuple[FastAPI, TestClient], as_user: AsUser, tokens: Tokens, store: AuthStore
) -> None:
    """A caller that saw its write succeed finds it in the log at once."""
    alice = as_user(tokens.alice)
    for i in range(5):
        assert alice.post(f"{API}/experiments", json={"name": f"e{i}"}).status_code == 201
        entries, _ = store.audit(limit=1)
        assert entries[0].targets == [f"experiment/{i + 1}"]


def test_without_auth_the_admin_routes_do_not_exist(settings) -> None:  # type: ignore[no-untyped-def]
    from keel.server import create_app

    with TestClient(create_app(settings)) as http:
        assert http.get(f"{API}/users").status_code == 404
        assert http.get(f"{API}/experiments").status_code == 200  # and no token is needed


def test_fuzzed_requests_with_tokens_never_get_a_server_error(
    auth_app: tuple[FastAPI, TestClient], tokens: Tokens, as_user: AsUser
) -> None:
    """Schemathesis over every /api/v1 operation, admin routes included, as an admin and as an
    editor who owns one experiment: 4xx answers with a JSON error code, never a 5xx."""
    import schemathesis

    from tests.server.test_routes import fuzz

    app = auth_app[0]
    eid, run_id = make_experiment(as_user, tokens.alice, name="fuzzed")
    schema = schemathesis.openapi.from_asgi(f"{API}/openapi.json", app).include(
        path_regex=f"^{API}/"
    )
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 30
    known = {"experiment_id": eid, "run_id": run_id, "user": "bob", "name": "bob"}
    for operation in operations:
        fuzz(operation, known, headers={"Authorization": f"Bearer {tokens.admin}"}, examples=5)
        if "auth" in (operation.tags or ()):  # the guard's refusals on the admin routes
            fuzz(operation, known, headers={"Authorization": f"Bearer {tokens.alice}"}, examples=5)


# -- found by review ----------------------------------------------------------------------------


def test_run_id_prefixes_resolve_only_among_visible_runs(as_user: AsUser, tokens: Tokens) -> None:
    """A hidden run neither matches a prefix nor makes one ambiguous: the whole answer is what
    a store without it would give, so prefixes cannot be walked to list hidden run ids."""
    _, hidden = make_experiment(as_user, tokens.alice, name="hidden")
    bob = as_user(tokens.bob)
    created = bob.post(f"{API}/experiments", json={"name": "bobs"}).json()["experiment_id"]
    mine = bob.post(f"{API}/runs", json={"experiment_id": created}).json()["run_id"]
    for prefix in (hidden[:1], hidden[:6], hidden):
        answer = bob.get(f"{API}/runs/by-prefix/{prefix}")
        if mine.startswith(prefix):
            assert answer.json() == {"run_id": mine}
            continue
        assert answer.status_code == 404
        assert answer.json() == {
            "error": "not_found",
            "message": f"no run id starts with {prefix!r}",
            "run_id": prefix,
        }
    assert bob.get(f"{API}/runs/by-prefix/{mine[:4]}").json() == {"run_id": mine}
    assert as_user(tokens.admin).get(f"{API}/runs/by-prefix/{hidden}").json() == {"run_id": hidden}


@pytest.mark.parametrize(
    "header",
    [
        "Basic \xff\xfe",  # not ASCII
        "Basic " + base64.b64encode(b"alice:keel_ab\x00cdef012345_secret").decode(),  # NUL
        "Basic " + base64.b64encode(b"alice:keel_ABCDEF012345_secret").decode(),  # not hex
        "Basic " + base64.b64encode("ålice:tøken".encode()).decode(),
        "Bearer " + "k" * 8000,
        "Bearer keel_abcdef012345_",
        "Basic",
        "",
    ],
)
def test_malformed_credentials_are_a_401_never_a_500(http: TestClient, header: str) -> None:
    for path in (f"{API}/experiments", "/api/2.0/mlflow/experiments/search"):
        response = http.post(path, headers={"Authorization": header.encode("latin-1")}, json={})
        assert response.status_code == 401, (header[:30], response.text)


def test_writes_are_audited_by_route_not_by_path(
    as_user: AsUser, tokens: Tokens, store: AuthStore
) -> None:
    """A write whose path ends in /search is still a write; a GET that creates (MLflow's
    experiment "0" makes Default) is recorded; searches are not."""
    eid, run_id = make_experiment(as_user, tokens.alice)
    alice = as_user(tokens.alice)
    before = len(store.audit(limit=1000)[0])
    assert alice.put(f"{API}/runs/{run_id}/artifacts/model/search", content=b"x").status_code == 201
    assert alice.delete(f"{API}/runs/{run_id}/tags/a/search").status_code in (204, 404)
    default = alice.get("/api/2.0/mlflow/experiments/get", params={"experiment_id": "0"})
    assert default.status_code == 200
    alice.post(f"{API}/runs/search", json={})
    alice.post("/api/2.0/mlflow/runs/search", json={"experiment_ids": [str(eid)]})
    alice.get(f"{API}/experiments/{eid}/grants")  # an owner looking is not a write
    entries = store.audit(limit=1000)[0][: len(store.audit(limit=1000)[0]) - before]
    assert [e.action for e in reversed(entries)] == [
        "upload_artifact",
        "delete_tag",
        "get_experiment",
    ]
    assert entries[0].targets and entries[0].targets[0].startswith("experiment/")


def test_an_owner_with_a_viewer_token_may_look_at_grants(
    as_user: AsUser, tokens: Tokens, store: AuthStore
) -> None:
    bob = as_user(tokens.bob)
    eid = bob.post(f"{API}/experiments", json={"name": "bobs"}).json()["experiment_id"]
    viewer = as_user(tokens.bob_viewer)
    grants = viewer.get(f"{API}/experiments/{eid}/grants").json()["grants"]
    assert [(g["user"], g["permission"]) for g in grants] == [("bob", "owner")]
    refused = viewer.put(f"{API}/experiments/{eid}/grants/alice", json={"permission": "read"})
    assert error(refused, 403, "permission_denied")["needs"] == "editor"


def test_the_mlflow_user_tag_cannot_be_spoofed(as_user: AsUser, tokens: Tokens) -> None:
    bob = as_user(tokens.bob)
    eid = bob.post(f"{API}/experiments", json={"name": "bobs"}).json()["experiment_id"]
    created = bob.post(
        "/api/2.0/mlflow/runs/create",
        json={"experiment_id": str(eid), "tags": [{"key": "mlflow.user", "value": "alice"}]},
    ).json()["run"]
    run_id = created["info"]["run_id"]
    bob.post(f"{API}/runs/{run_id}/tags", json={"tags": {"mlflow.user": "alice"}})
    seen = bob.get("/api/2.0/mlflow/runs/get", params={"run_id": run_id}).json()["run"]
    tags = {t["key"]: t["value"] for t in seen["data"]["tags"]}
    assert tags["mlflow.user"] == "bob" and seen["info"]["user_id"] == "bob"
