"""Governance over HTTP: policies, approval requests and model cards through the routes.

On a real ``keel server --auth`` subprocess (SQLite): an admin sets a policy, alice (an editor)
asks to move a protected alias (202), cannot approve it herself, a failed check is a 409 naming
it, bob (a named approver) approves and the alias moves with the token users in the audit trail,
a viewer cannot decide, a rejection needs a reason, cards are generated and edited, and the CLI
approves with KEEL_TRACKING_URI and bob's KEEL_TRACKING_TOKEN. In process on SQLite and
PostgreSQL: the errors (400 for malformed bodies and ids, 403, 404, 409), never a 500.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from keel.auth.store import AuthStore
from keel.db import make_engine
from keel.errors import Conflict, InvalidInput, KeelError, PermissionDenied
from keel.models import api, governance
from keel.models.api import Registry
from keel.models.governance_models import AliasRequest
from keel.models.remote import RemoteRegistry
from keel.server import create_app
from keel.settings import Settings
from keel.tracking.api import Client
from keel.tracking.fluent import set_client
from tests.auth.conftest import Tokens, bearer, make_tokens
from tests.conftest import run_main
from tests.models.test_cli import _logged, _ok, _one_red_line
from tests.server.conftest import RunningServer, keel_server  # noqa: F401

API = "/api/v1"
POLICY = {
    "protect": ["production"],
    "approvers": ["admins", "bob"],
    "requires": ["tags.validated='yes'"],
    "require_card": True,
}


def error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code and body["message"], body
    return str(body["message"])


def _two_versions(settings: Settings) -> None:
    """Versions 1 and 2 of ``churn``, logged and registered on the local database (the OS
    user registers: who did does not matter to governance)."""
    for alpha in (0.5, 2.0):
        api.register(_logged(alpha), "churn", settings=settings)


# -- a real keel server --auth -----------------------------------------------------------------


@pytest.fixture
def auth_server(
    home: Path,
    keel_server: Callable[..., AbstractContextManager[RunningServer]],  # noqa: F811
) -> Iterator[tuple[RunningServer, Tokens]]:
    """``keel server --auth`` on the tmp home's SQLite database, with churn/1 and churn/2
    registered and tokens for admin, alice and bob (editors) and bob as a viewer."""
    settings = Settings()
    _two_versions(settings)
    set_client(None)
    Client(settings).close()
    engine = make_engine(settings.db_url)
    try:
        tokens = make_tokens(AuthStore(engine))
    finally:
        engine.dispose()
    try:
        with keel_server("--auth") as server:
            yield server, tokens
    finally:
        set_client(None)  # the test's CLI may have opened a client of the server


@pytest.mark.slow
def test_two_person_rule_on_a_keel_server_with_auth(
    auth_server: tuple[RunningServer, Tokens],
    cli: CliRunner,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, tokens = auth_server
    admin, alice, bob = bearer(tokens.admin), bearer(tokens.alice), bearer(tokens.bob)
    viewer = bearer(tokens.bob_viewer)
    with httpx.Client(base_url=f"{server.url}{API}/models") as http:
        assert http.get("/churn/policy").status_code == 401
        denied = http.put("/churn/policy", json=POLICY, headers=alice)
        assert "admin role; alice is editor" in error(denied, 403, "permission_denied")
        policy = http.put("/churn/policy", json=POLICY, headers=admin)
        assert policy.status_code == 200, policy.text
        assert policy.json()["approvers"] == ["@admin", "bob"]
        assert policy.json()["requires"] == ["tags.validated = 'yes'"]
        assert http.get("/churn/policy", headers=viewer).json() == policy.json()

        # alice asks to move production: a pending request, the alias does not move
        asked = http.put(
            "/churn/aliases/production", json={"version": 2, "reason": "better rmse"}, headers=alice
        )
        assert asked.status_code == 202, asked.text
        request = asked.json()
        assert (request["id"], request["state"], request["requested_by"]) == (1, "pending", "alice")
        assert http.get("/churn", headers=viewer).json()["aliases"] == {}
        listed = http.get("/churn/requests", headers=viewer).json()["requests"]
        assert [(r["id"], r["alias"], r["version"]) for r in listed] == [(1, "production", 2)]

        # the requester cannot approve, nor can a viewer token
        own = http.post("/churn/requests/1/approve", json={}, headers=alice)
        assert "other than the requester, alice" in error(own, 403, "permission_denied")
        as_viewer = http.post("/churn/requests/1/approve", json={}, headers=viewer)
        assert "viewer" in error(as_viewer, 403, "permission_denied")
        # bob may, but version 2 fails both checks: a 409 naming them, still pending
        failed = error(http.post("/churn/requests/1/approve", headers=bob), 409, "conflict")
        assert "tags.validated = 'yes' (fails" in failed and "card (fails" in failed
        assert http.get("/churn/requests", headers=bob).json()["requests"][0]["state"] == "pending"

        # cards over HTTP: generated from lineage, edited by a person, refused to regenerate
        generated = http.post("/churn/versions/2/card/generate", headers=alice)
        assert generated.status_code == 200, generated.text
        assert generated.json()["generated"] is True and "churn" in generated.json()["markdown"]
        card = http.get("/churn/versions/2/card", headers=viewer).json()
        assert card["markdown"] == generated.json()["markdown"]
        edited = http.put(
            "/churn/versions/2/card",
            json={"markdown": card["markdown"] + "\n## Intended use\nChurn scoring.\n"},
            headers=alice,
        )
        assert (edited.json()["generated"], edited.json()["updated_by"]) == (False, "alice")
        again = http.post("/churn/versions/2/card/generate", json={}, headers=bob)
        assert "edited by alice" in error(again, 409, "conflict")
        assert http.get("/churn/versions/1/card", headers=bob).status_code == 404
        tagged = http.put("/churn/versions/2/tags/validated", json={"value": "yes"}, headers=alice)
        assert tagged.status_code == 204

        approved = http.post("/churn/requests/1/approve", json={"reason": "card read"}, headers=bob)
        assert approved.status_code == 200, approved.text
        assert (approved.json()["state"], approved.json()["decided_by"]) == ("approved", "bob")
        assert http.get("/churn", headers=viewer).json()["aliases"] == {"production": 2}
        twice = http.post("/churn/requests/1/approve", headers=admin)
        assert "approved already (by bob)" in error(twice, 409, "conflict")

        # a rejection needs a reason; the requester may withdraw her own request
        http.put("/churn/aliases/production", json={"version": 1}, headers=alice)
        error(http.post("/churn/requests/2/reject", json={}, headers=bob), 400, "invalid_input")
        error(http.post("/churn/requests/2/reject", headers=bob), 400, "invalid_input")
        denied = http.post("/churn/requests/2/reject", json={"reason": "no"}, headers=viewer)
        error(denied, 403, "permission_denied")
        rejected = http.post(
            "/churn/requests/2/reject", json={"reason": "v1 is worse"}, headers=bob
        )
        assert rejected.json()["state"] == "rejected"
        error(http.post("/churn/requests/9/approve", headers=bob), 404, "not_found")

        events = http.get("/churn/history", headers=viewer).json()["events"]
        governed = [
            (e["action"], e["actor"], e["alias"], e["version"])
            for e in events
            if e["action"] in ("set_policy", "request", "approve", "set_alias", "reject")
        ]
        assert governed == [
            ("set_policy", "admin", None, None),
            ("request", "alice", "production", 2),
            ("approve", "bob", "production", 2),
            ("set_alias", "bob", "production", 2),
            ("request", "alice", "production", 1),
            ("reject", "bob", "production", 1),
        ]
        assert [e["actor"] for e in events if e["action"] == "edit_card"] == ["alice"]

    # the CLI against the server: alice asks, bob approves, with their tokens
    monkeypatch.setenv("KEEL_TRACKING_URI", server.url)
    monkeypatch.setenv("KEEL_TRACKING_TOKEN", tokens.alice)
    set_client(None)
    asked = run_main(cli, ["models", "alias", "set", "churn", "production", "2", "--reason", "x"])
    assert asked.exit_code == 3, asked.output
    assert asked.stdout.startswith("request #3: moving production to 2 needs approval by admins")
    line = _one_red_line(cli, ["models", "approve", "churn", "3"])
    assert "other than the requester, alice" in line
    monkeypatch.setenv("KEEL_TRACKING_TOKEN", tokens.bob)
    assert "production" in _ok(cli, ["models", "requests", "churn"])
    out = _ok(cli, ["models", "approve", "churn", "3", "--reason", "same version"])
    assert out.startswith("Approved request #3: churn@production -> 2 (requested by alice)")
    shown = json.loads(_ok(cli, ["models", "policy", "show", "churn", "--json"]))
    assert shown["protect"] == ["production"]
    assert "Intended use" in _ok(cli, ["models", "card", "show", "churn@production"])
    assert "admin role; bob is editor" in _one_red_line(cli, ["models", "policy", "clear", "churn"])
    monkeypatch.setenv("KEEL_TRACKING_TOKEN", tokens.admin)
    assert "Cleared the policy of churn" in _ok(cli, ["models", "policy", "clear", "churn"])
    assert "has no policy" in _ok(cli, ["models", "policy", "show", "churn"])


# -- in process, SQLite and PostgreSQL -------------------------------------------------------------


@pytest.fixture
def auth_http(settings: Settings) -> Iterator[tuple[TestClient, Tokens]]:
    _two_versions(settings)
    app = create_app(settings.replace(auth=True))
    with TestClient(app, base_url=f"http://testserver{API}/models") as client:
        yield client, make_tokens(app.state.auth_store)


def test_malformed_bodies_and_ids_are_400_missing_things_404(
    auth_http: tuple[TestClient, Tokens],
) -> None:
    http, tokens = auth_http
    admin, alice = bearer(tokens.admin), bearer(tokens.alice)
    bad_policies: list[Any] = [
        {},
        [],
        {**POLICY, "protect": []},
        {**POLICY, "approvers": []},
        {**POLICY, "protect": "production"},
        {**POLICY, "protect": ["Not An Alias"]},
        {**POLICY, "protect": ["latest"]},
        {**POLICY, "requires": ["metrics.rmse <"]},
        {**POLICY, "requires": ["rmse < 3"]},
        {**POLICY, "requires": ["a\x00"]},
        {**POLICY, "approvers": ["not a user!"]},
        {**POLICY, "require_card": "maybe"},
        {**POLICY, "extra": 1},
    ]
    for body in bad_policies:
        error(http.put("/churn/policy", json=body, headers=admin), 400, "invalid_input")
    bad = http.put("/churn/policy", content=b"{", headers=admin)
    error(bad, 400, "invalid_input")
    error(http.put("/nope/policy", json=POLICY, headers=admin), 404, "not_found")
    error(http.get("/nope/policy", headers=alice), 404, "not_found")
    error(http.get("/Not%20A%20Name/policy", headers=alice), 400, "invalid_input")
    error(http.delete("/churn/policy", headers=admin), 404, "not_found")  # none to clear
    assert http.get("/churn/policy", headers=alice).json() is None

    assert http.put("/churn/policy", json=POLICY, headers=admin).status_code == 200
    asked = http.put("/churn/aliases/production", json={"version": 1}, headers=alice)
    assert asked.status_code == 202
    for request_id in ("0", "x", "-1", str(2**40)):
        error(
            http.post(f"/churn/requests/{request_id}/approve", headers=admin), 400, "invalid_input"
        )
    for body in ({"reason": 3}, {"why": "x"}, {"reason": "a\x00"}):
        reply = http.post("/churn/requests/1/approve", json=body, headers=admin)
        error(reply, 400, "invalid_input")
    error(
        http.post("/churn/requests/1/reject", json={"reason": " "}, headers=admin),
        400,
        "invalid_input",
    )
    error(
        http.post("/churn/requests/7/reject", json={"reason": "x"}, headers=admin), 404, "not_found"
    )
    error(http.post("/nope/requests/1/approve", headers=admin), 404, "not_found")
    assert http.get("/churn/requests?all=yes", headers=alice).status_code == 200
    error(http.get("/churn/requests?all=maybe", headers=alice), 400, "invalid_input")
    # an admin token approves under "admins"; version 1 fails the checks
    failed = http.post("/churn/requests/1/approve", headers=admin)
    assert "tags.validated" in error(failed, 409, "conflict")

    error(
        http.put("/churn/versions/1/card", json={"markdown": " "}, headers=alice),
        400,
        "invalid_input",
    )
    error(http.put("/churn/versions/1/card", json={}, headers=alice), 400, "invalid_input")
    error(
        http.put("/churn/versions/9/card", json={"markdown": "x"}, headers=alice), 404, "not_found"
    )
    error(http.get("/churn/versions/champion/card", headers=alice), 404, "not_found")
    error(http.get("/churn/versions/1/card", headers=alice), 404, "not_found")
    error(
        http.post("/churn/versions/1/card/generate", json={"replace": "x"}, headers=alice),
        400,
        "invalid_input",
    )
    made = http.post("/churn/versions/latest/card/generate", headers=alice)
    assert (made.status_code, made.json()["version"]) == (200, 2)

    # clearing the policy cancels the pending request
    cleared = http.delete("/churn/policy", headers=admin)
    assert cleared.json()["protect"] == ["production"]
    states = http.get("/churn/requests", params={"all": "true"}, headers=alice).json()
    assert [r["state"] for r in states["requests"]] == ["cancelled"]
    error(http.delete("/churn/policy", headers=alice), 403, "permission_denied")


def test_remote_registry_governance_raises_the_local_errors(
    auth_http: tuple[TestClient, Tokens], settings: Settings
) -> None:
    """The governance module functions with a tracking server go through RemoteRegistry (the
    app under uvicorn in a thread) and raise what a local registry raises."""
    from tests.server.conftest import serve

    _, tokens = auth_http
    with serve(settings.replace(auth=True)) as url:
        remote = settings.replace(tracking_uri=url)
        as_admin = remote.replace(tracking_token=tokens.admin)
        as_alice = remote.replace(tracking_token=tokens.alice)
        as_bob = remote.replace(tracking_token=tokens.bob)
        policy = governance.set_policy(
            "churn", protect=["production"], approvers=["bob"], settings=as_admin
        )
        assert policy.approvers == ["bob"] and governance.get_policy("churn", settings=as_bob)
        with pytest.raises(PermissionDenied, match="admin role"):
            governance.clear_policy("churn", settings=as_alice)
        asked = api.set_alias("churn", "production", 2, settings=as_alice)
        assert isinstance(asked, AliasRequest) and asked.requested_by == "alice"
        with pytest.raises(PermissionDenied, match="other than the requester"):
            governance.approve("churn", asked.id, settings=as_alice)
        with pytest.raises(InvalidInput, match="needs a reason"):
            governance.reject("churn", asked.id, reason="", settings=as_bob)
        done = governance.approve("churn", asked.id, reason="ok", settings=as_bob)
        assert done.state == "approved"
        with pytest.raises(Conflict, match="approved already"):
            governance.approve("churn", asked.id, settings=as_bob)
        assert [r.state for r in governance.list_requests("churn", settings=as_bob)] == []
        everything = governance.list_requests("churn", pending_only=False, settings=as_bob)
        assert [r.state for r in everything] == ["approved"]
        card = governance.generate_card("churn@production", settings=as_alice)
        assert card.version == 2 and card.updated_by == "alice"
        governance.edit_card("churn/2", "# churn\n", settings=as_bob)
        assert governance.get_card("churn/2", settings=as_alice).markdown == "# churn\n"
        with pytest.raises(Conflict, match="edited by bob"):
            governance.generate_card("churn/2", settings=as_alice)
        with pytest.raises(InvalidInput, match="non-empty Markdown"):
            governance.edit_card("churn/2", "  ", settings=as_bob)
        with RemoteRegistry(as_admin) as registry:
            assert registry.clear_policy("churn").protect == ["production"]
            assert registry.get_policy("churn") is None
    assert api.get_model("churn", settings=settings).aliases == {"production": 2}


def test_evaluation_and_gates_stay_local_and_say_so(home: Path) -> None:
    from keel.models.evaluation import evaluate
    from keel.models.release_gate import gate

    remote = Settings().replace(tracking_uri="http://127.0.0.1:9")  # never reached
    why = "evaluation and release gates are not served by the tracking server"
    with pytest.raises(InvalidInput, match=why) as caught:
        evaluate("churn/1", data="test@1", target="y", settings=remote)
    assert "unset KEEL_TRACKING_URI" in str(caught.value)
    with pytest.raises(InvalidInput, match=why):
        gate("churn/2", against="churn@champion", metric="rmse", settings=remote)
    # a Registry built on a server's settings says what it is and what to use instead
    with pytest.raises(InvalidInput) as direct:
        Registry(remote)
    assert "a Registry works on the metadata database itself" in str(direct.value)
    assert "registry_for(settings)" in str(direct.value)
    assert "evaluation" not in str(direct.value)


def test_the_mlflow_set_alias_call_on_a_protected_alias_is_an_error_naming_the_request(
    auth_http: tuple[TestClient, Tokens], settings: Settings
) -> None:
    http, tokens = auth_http
    assert http.put("/churn/policy", json=POLICY, headers=bearer(tokens.admin)).status_code == 200
    asked = http.post(
        "http://testserver/api/2.0/mlflow/registered-models/alias",
        json={"name": "churn", "alias": "production", "version": "2"},
        headers=bearer(tokens.alice),
    )
    assert asked.status_code == 403, asked.text  # not 200 {}: the alias did not move
    assert asked.json()["error_code"] == "PERMISSION_DENIED"
    assert "request #1 to move it to 2 awaits approval" in asked.json()["message"]
    assert "(keel models approve churn 1)" in asked.json()["message"]
    assert api.get_model("churn", settings=settings).aliases == {}
    pending = governance.list_requests("churn", settings=settings)
    assert [(r.id, r.requested_by) for r in pending] == [(1, "alice")]


def test_remote_set_alias_is_not_sent_twice(home: Path) -> None:
    """A retry after the server took the request could record a second pending request."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[str] = []

    class Failing(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            received.append(self.path)
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = b'{"error": "storage_error", "message": "the database went away"}'
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    with ThreadingHTTPServer(("127.0.0.1", 0), Failing) as httpd:
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        try:
            remote = RemoteRegistry(Settings().replace(tracking_uri=url))
            with remote, pytest.raises(KeelError, match="the database went away"):
                remote.set_alias("churn", "production", 2)
        finally:
            httpd.shutdown()
    assert received == ["/api/v1/models/churn/aliases/production"]
