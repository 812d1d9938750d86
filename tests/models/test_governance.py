"""Governance through the registry's API on SQLite and PostgreSQL, with real logged models:
policies, requests for protected aliases, approvals by someone else that pass or fail the
checks, rejection, the card requirement, the audit trail, and two approvers at once."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

import keel
import keel.data
import keel.models
from keel.auth.models import Role
from keel.db import make_engine
from keel.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from keel.models import api, governance
from keel.models.api import Registry
from keel.models.governance_models import AliasRequest
from keel.settings import Settings
from tests.models.training import diabetes


def _register(name: str = "diabetes", *, alpha: float = 0.5) -> None:
    from sklearn.linear_model import Ridge

    X, y = diabetes()
    with keel.start_run(f"ridge-{alpha}"):
        model = Ridge(alpha=alpha).fit(X, y)
        keel.log_param("alpha", alpha)
        keel.log_param("solver", "auto")
        keel.log_metric("rmse", float(np.sqrt(np.mean((model.predict(X) - y) ** 2))))
        logged = keel.models.log_model(model, input_example=X.head())
    keel.models.register(logged.uri, name)


@pytest.fixture
def two_versions(settings: Settings) -> Settings:
    """diabetes/1 and /2 (rmse about 55 and 58), production -> 1, a policy on production."""
    _register(alpha=0.1)
    _register(alpha=2.0)
    api.set_alias("diabetes", "production", 1)
    governance.set_policy(
        "diabetes",
        protect=["production"],
        approvers=["admins", "carol"],
        requires=["metrics.rmse < 70", "params.solver = 'auto'"],
    )
    return settings


def test_a_policy_round_trips_and_is_audited(settings: Settings) -> None:
    _register()
    assert governance.get_policy("diabetes") is None
    policy = governance.set_policy(
        "diabetes",
        protect=["production", "champion", "production"],
        approvers=["@admin", "ana,bo"],
        requires=["metrics.rmse<60", 'tags.validated = "yes"'],
        require_card=True,
    )
    assert policy.protect == ["production", "champion"]
    assert (
        policy.approvers == ["@admin", "ana", "bo"] and policy.approvers_text == "admins or ana, bo"
    )
    assert policy.requires == ["metrics.rmse < 60", "tags.validated = 'yes'"]
    assert governance.get_policy("diabetes") == policy
    assert governance.clear_policy("diabetes") == policy
    assert governance.get_policy("diabetes") is None
    with pytest.raises(NotFound, match="has no policy"):
        governance.clear_policy("diabetes")
    events = [e for e in api.history("diabetes") if e.action.endswith("_policy")]
    assert [e.action for e in events] == ["set_policy", "clear_policy"]
    assert events[0].detail["requires"] == policy.requires and events[0].detail["require_card"]


@pytest.mark.parametrize(
    ("check", "why"),
    [
        ("rmse < 60", "is not metrics.NAME"),
        ("metrics.rmse < 'low'", "a metric compares with a number"),
        ("metrics.rmse < 60 AND metrics.mae < 3", "write one comparison"),
        ("metrics.rmse == 60", "use = to test equality"),
        ("params.solver > 'a'", "a string compares with = or !="),
        ("metrics.rmse < 6o", "invalid number"),
        ("metrics.rmse <", "write one comparison"),
    ],
)
def test_a_malformed_check_is_refused_naming_it(settings: Settings, check: str, why: str) -> None:
    _register()
    with pytest.raises(InvalidInput, match=why) as caught:
        governance.set_policy(
            "diabetes", protect=["production"], approvers=["admins"], requires=[check]
        )
    assert repr(check) in str(caught.value)
    assert governance.get_policy("diabetes") is None


def test_policy_mistakes_and_who_may_set_one(settings: Settings) -> None:
    _register()
    with pytest.raises(InvalidInput, match="at least one alias"):
        governance.set_policy("diabetes", protect=[], approvers=["admins"])
    with pytest.raises(InvalidInput, match="'latest' is reserved"):
        governance.set_policy("diabetes", protect=["latest"], approvers=["admins"])
    with pytest.raises(InvalidInput, match="neither admins"):
        governance.set_policy("diabetes", protect=["production"], approvers=["ana smith"])
    bo = Registry(actor="bo", role=Role.EDITOR)
    with bo, pytest.raises(PermissionDenied, match="needs the admin role; bo is editor"):
        bo.set_policy("diabetes", protect=["production"], approvers=["bo"])
    with pytest.raises(NotFound, match="did you mean diabetes"):
        governance.set_policy("diabetis", protect=["production"], approvers=["admins"])


def test_a_protected_alias_moves_only_on_another_approvers_passing_approval(
    two_versions: Settings,
) -> None:
    with Registry(actor="alice", role=Role.EDITOR) as alice:
        request = alice.set_alias("diabetes", "production", 2, reason="retrained")
        assert isinstance(request, AliasRequest) and request.state == "pending"
        assert request.summary.startswith(
            f"request #{request.id}: moving production to 2 needs approval by admins or carol; "
            "checks: metrics.rmse < 70 (passes: metrics.rmse = "
        )
        assert api.get_model("diabetes").aliases == {"production": 1}  # not moved
        with pytest.raises(
            PermissionDenied, match="needs an approval by a user other than the requester, alice"
        ):
            alice.approve("diabetes", request.id)
    dave = Registry(actor="dave", role=Role.EDITOR)
    with dave, pytest.raises(PermissionDenied, match="by admins or carol; dave is not one of"):
        dave.approve("diabetes", request.id)
    with Registry(actor="carol", role=Role.EDITOR) as carol:
        done = carol.approve("diabetes", request.id, reason="looks good")
    assert (done.state, done.decided_by, done.decision_reason) == (
        "approved",
        "carol",
        "looks good",
    )
    assert all(c.passed for c in done.checks) and len(done.checks) == 2
    assert api.get_model("diabetes").aliases == {"production": 2}
    assert governance.list_requests("diabetes") == []
    assert [r.state for r in governance.list_requests("diabetes", pending_only=False)] == [
        "approved"
    ]

    events = api.history("diabetes")[-3:]
    assert [(e.action, e.actor) for e in events] == [
        ("request", "alice"),
        ("approve", "carol"),
        ("set_alias", "carol"),
    ]
    assert events[0].reason == "retrained" and events[0].detail["from"] == 1
    assert events[1].reason == "looks good" and events[1].detail["requested_by"] == "alice"
    assert events[2].detail == {"from": 1, "to": 2, "request": request.id, "requested_by": "alice"}
    with pytest.raises(Conflict, match="is approved already \\(by carol\\)"):
        governance.approve("diabetes", request.id)


def test_a_failed_check_is_named_and_keeps_the_request_pending(two_versions: Settings) -> None:
    governance.set_policy(
        "diabetes", protect=["production"], approvers=["admins"], requires=["metrics.rmse < 1"]
    )
    with Registry(actor="alice", role=Role.EDITOR) as alice:
        request = alice.set_alias("diabetes", "production", 2)
    assert isinstance(request, AliasRequest)
    with pytest.raises(
        Conflict, match=r"fails metrics.rmse < 1 \(fails: metrics.rmse = 60.1205\)"
    ) as e:
        governance.approve("diabetes", request.id)
    assert "stays pending" in str(e.value)
    assert [r.id for r in governance.list_requests("diabetes")] == [request.id]
    assert api.get_model("diabetes").aliases == {"production": 1}
    assert [e.action for e in api.history("diabetes")][-1] == "request"  # nothing else written

    governance.set_policy(  # a tag check instead: fails until the version is tagged
        "diabetes", protect=["production"], approvers=["admins"], requires=["tags.ok = 'yes'"]
    )
    with pytest.raises(Conflict, match=r"tags\.ok is not recorded"):
        governance.approve("diabetes", request.id)
    api.set_tag("diabetes", "ok", "yes", version=2)
    assert governance.approve("diabetes", request.id).state == "approved"
    assert api.get_model("diabetes").aliases == {"production": 2}


def test_reject_needs_a_reason_and_a_decider(two_versions: Settings) -> None:
    with Registry(actor="alice", role=Role.EDITOR) as alice:
        first = alice.set_alias("diabetes", "production", 2)
        second = alice.set_alias("diabetes", "production", 2)
    assert isinstance(first, AliasRequest) and isinstance(second, AliasRequest)
    with pytest.raises(InvalidInput, match="needs a reason"):
        governance.reject("diabetes", first.id, reason=" ")
    with Registry(actor="dave", role=Role.EDITOR) as dave, pytest.raises(PermissionDenied):
        dave.reject("diabetes", first.id, reason="no")
    done = governance.reject("diabetes", first.id, reason="drift in March")
    assert (done.state, done.decision_reason) == ("rejected", "drift in March")
    with Registry(actor="alice", role=Role.EDITOR) as alice:  # a requester may withdraw
        assert alice.reject("diabetes", second.id, reason="withdrawn").state == "rejected"
    with pytest.raises(Conflict, match="is rejected already"):
        governance.approve("diabetes", first.id)
    assert api.get_model("diabetes").aliases == {"production": 1}
    rejects = [e for e in api.history("diabetes") if e.action == "reject"]
    assert [(e.actor, e.reason) for e in rejects] == [
        (Registry(two_versions).actor, "drift in March"),
        ("alice", "withdrawn"),
    ]
    with pytest.raises(NotFound, match="has no request #99"):
        governance.approve("diabetes", 99)


def test_require_card_and_protected_deletes(two_versions: Settings) -> None:
    governance.set_policy(
        "diabetes", protect=["production"], approvers=["admins"], require_card=True
    )
    with Registry(actor="alice", role=Role.EDITOR) as alice:
        request = alice.set_alias("diabetes", "production", 2)
    assert isinstance(request, AliasRequest)
    assert str(request.checks[0]) == ("card (fails: none (keel models card generate diabetes/2))")
    with pytest.raises(Conflict, match="fails card"):
        governance.approve("diabetes", request.id)
    governance.generate_card("diabetes/2")
    assert governance.approve("diabetes", request.id).checks[0].passed

    with pytest.raises(PermissionDenied, match="take it out of the policy's --protect list"):
        api.delete_alias("diabetes", "production")
    api.set_alias("diabetes", "challenger", 1)  # unprotected: moves directly
    assert api.delete_alias("diabetes", "challenger") == 1

    with Registry(actor="alice", role=Role.EDITOR) as alice:
        pending = alice.set_alias("diabetes", "production", 1)
    cleared = governance.clear_policy("diabetes")
    assert cleared.require_card
    assert governance.list_requests("diabetes", pending_only=False)[0].state == "cancelled"
    assert api.history("diabetes")[-1].detail["cancelled_requests"] == [pending.id]  # type: ignore[union-attr]
    assert api.delete_alias("diabetes", "production") == 2


def test_no_api_edits_the_governance_audit_rows(two_versions: Settings, engine: Engine) -> None:
    with Registry(actor="alice", role=Role.EDITOR) as alice:
        alice.set_alias("diabetes", "production", 2)
    assert not any(hasattr(Registry, name) for name in ("delete_event", "update_event"))
    for statement in (
        "UPDATE model_audit SET actor = 'mallory' WHERE action = 'request'",
        "DELETE FROM model_audit WHERE action = 'set_policy'",
    ):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text(statement))
    assert [e.actor for e in api.history("diabetes") if e.action == "request"] == ["alice"]


def test_two_approvers_at_once_exactly_one_succeeds(two_versions: Settings) -> None:
    with Registry(actor="alice", role=Role.EDITOR) as alice:
        request = alice.set_alias("diabetes", "production", 2)
    assert isinstance(request, AliasRequest)
    barrier = threading.Barrier(2)
    outcomes: dict[str, object] = {}

    def decide(actor: str) -> None:
        with Registry(two_versions, actor=actor, role=Role.ADMIN) as registry:
            registry.store.get_request("diabetes", request.id)  # connect before the race
            barrier.wait()
            try:
                outcomes[actor] = registry.approve("diabetes", request.id, reason=actor).state
            except Conflict as error:
                outcomes[actor] = error

    threads = [threading.Thread(target=decide, args=(who,)) for who in ("bo", "carol")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(map(type, outcomes.values()), key=str) == sorted([str, Conflict], key=str)
    winner = next(actor for actor, outcome in outcomes.items() if outcome == "approved")
    events = api.history("diabetes")
    assert [e.actor for e in events if e.action == "approve"] == [winner]
    assert [e.actor for e in events if e.action == "set_alias"][-1] == winner
    assert api.get_model("diabetes").aliases == {"production": 2}


def test_the_local_default_is_the_os_user_as_admin(settings: Settings) -> None:
    from keel.tracking.source import current_user

    with Registry() as registry:
        assert (registry.actor, registry.role) == (current_user(), Role.ADMIN)
    engine = make_engine(settings.db_url)
    engine.dispose()


def test_checks_read_the_manifest_and_evaluations_never_the_runs_current_values(
    settings: Settings,
) -> None:
    from sklearn.linear_model import Ridge

    X, y = diabetes()
    with keel.start_run("ridge"):
        logged = keel.models.log_model(Ridge().fit(X, y), input_example=X.head())
        keel.log_metric("r2", 0.99)  # on the run after the model was logged: not its manifest
        keel.log_param("reviewed", "yes")
    keel.models.register(logged.uri, "diabetes")
    governance.set_policy(
        "diabetes",
        protect=["production"],
        approvers=["admins"],
        requires=["metrics.r2 > 0.1", "params.reviewed = 'yes'"],
    )
    with Registry(actor="alice", role=Role.EDITOR) as alice:
        request = alice.set_alias("diabetes", "production", 1)
    assert isinstance(request, AliasRequest)
    assert [c.found for c in request.checks] == [
        "metrics.r2 is not recorded in the manifest of diabetes/1 nor in its 0 evaluations",
        "params.reviewed is not recorded in the manifest of diabetes/1",
    ]
    with pytest.raises(Conflict, match=r"fails metrics\.r2 > 0\.1"):
        governance.approve("diabetes", request.id)

    keel.data.log_dataset(X.assign(progression=y), "diabetes-all")
    keel.models.evaluate("diabetes/1", data="diabetes-all", target="progression")
    governance.set_policy(
        "diabetes", protect=["production"], approvers=["admins"], requires=["metrics.r2 > 0.1"]
    )
    done = governance.approve("diabetes", request.id)
    assert done.state == "approved"
    assert done.checks[0].found.startswith("metrics.r2 = 0.")
    assert done.checks[0].found.endswith(" (evaluation on diabetes-all@1)")


def test_an_approver_removed_while_an_approval_waits_for_the_lock_cannot_approve(
    two_versions: Settings, engine: Engine
) -> None:
    with Registry(actor="alice", role=Role.EDITOR) as alice:
        request = alice.set_alias("diabetes", "production", 2)
    assert isinstance(request, AliasRequest)
    outcome: list[object] = []
    carol = Registry(two_versions, actor="carol", role=Role.EDITOR)

    def approve() -> None:
        try:
            outcome.append(carol.approve("diabetes", request.id).state)
        except PermissionDenied as error:
            outcome.append(error)

    with carol:
        carol.store.get_request("diabetes", request.id)  # connected before the lock is taken
        with engine.begin() as conn:  # an admin's change holds the model's lock meanwhile
            conn.execute(
                text("UPDATE registered_models SET updated_at = updated_at + 1 WHERE name = :n"),
                {"n": "diabetes"},
            )
            conn.execute(text("""UPDATE model_policies SET approvers = '["@admin"]'"""))
            thread = threading.Thread(target=approve)
            thread.start()
            time.sleep(2)  # carol has read the request and the policy, and waits for the lock
        thread.join(timeout=60)
    assert len(outcome) == 1 and isinstance(outcome[0], PermissionDenied), outcome
    assert "carol is not one of them" in str(outcome[0])
    assert api.get_model("diabetes").aliases == {"production": 1}
    assert governance.list_requests("diabetes")[0].id == request.id
