"""Users, tokens, grants and the audit log in the database, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, select

from keel.auth.models import Permission, Role
from keel.auth.store import AuthStore
from keel.db import schema
from keel.errors import AlreadyExists, InvalidInput, NotFound, Unauthenticated
from keel.tracking.store import TrackingStore


@pytest.fixture
def store(engine: Engine) -> AuthStore:
    return AuthStore(engine)


def test_a_token_authenticates_as_its_user_and_role(store: AuthStore) -> None:
    store.create_user("alice")
    made = store.create_token("alice", role=Role.VIEWER, label="laptop")
    principal = store.authenticate(made.token)
    assert (principal.user, principal.role, principal.token_id) == (
        "alice",
        Role.VIEWER,
        made.token_id,
    )
    assert store.authenticate(made.token, user="alice").user == "alice"
    assert made.token.startswith(f"keel_{made.token_id}_")


def test_only_a_salted_hash_of_the_secret_is_stored(store: AuthStore, engine: Engine) -> None:
    store.create_user("alice")
    first = store.create_token("alice", role=Role.EDITOR)
    second = store.create_token("alice", role=Role.EDITOR)
    secret = first.token.split("_", 2)[2]
    with engine.connect() as conn:
        rows = conn.execute(select(schema.api_tokens)).mappings().all()
    stored = " ".join(str(v) for row in rows for v in row.values())
    assert secret not in stored
    assert len({row["salt"] for row in rows}) == 2  # a salt per token
    assert "token" not in store.list_tokens()[0].model_dump()
    assert {t.token_id for t in store.list_tokens(user="alice")} == {
        first.token_id,
        second.token_id,
    }


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # wrong secret
        lambda t: "keel_000000000000_" + t.split("_", 2)[2],  # unknown id
        lambda t: "not-a-token",
        lambda t: "keel__",
    ],
)
def test_a_wrong_or_malformed_token_is_refused(store: AuthStore, mangle) -> None:  # type: ignore[no-untyped-def]
    store.create_user("alice")
    token = store.create_token("alice", role=Role.EDITOR).token
    with pytest.raises(Unauthenticated):
        store.authenticate(mangle(token))


def test_revoked_expired_and_disabled_tokens_are_refused(store: AuthStore, engine: Engine) -> None:
    store.create_user("alice")
    store.create_user("bob")
    revoked = store.create_token("alice", role=Role.EDITOR)
    store.revoke_token(revoked.token_id)
    with pytest.raises(Unauthenticated, match="revoked"):
        store.authenticate(revoked.token)

    expired = store.create_token("alice", role=Role.EDITOR, expires_in_days=1)
    store.authenticate(expired.token)
    with engine.begin() as conn:
        conn.execute(
            schema.api_tokens.update()
            .where(schema.api_tokens.c.token_id == expired.token_id)
            .values(expires_at=1)
        )
    with pytest.raises(Unauthenticated, match="expired"):
        store.authenticate(expired.token)

    bobs = store.create_token("bob", role=Role.EDITOR)
    store.set_user_disabled("bob", True)
    with pytest.raises(Unauthenticated, match="disabled"):
        store.authenticate(bobs.token)
    store.set_user_disabled("bob", False)
    assert store.authenticate(bobs.token).user == "bob"
    with pytest.raises(Unauthenticated, match="does not belong"):
        store.authenticate(bobs.token, user="alice")  # HTTP basic naming another user


def test_user_and_token_mistakes_are_clear(store: AuthStore) -> None:
    store.create_user("alice")
    with pytest.raises(AlreadyExists):
        store.create_user("alice")
    for bad in ("", "a b", "-lead", "x" * 65, "semi;colon", "alice\n"):
        with pytest.raises(InvalidInput, match="invalid user name"):
            store.create_user(bad)
    with pytest.raises(NotFound, match="keel users create carol"):
        store.create_token("carol", role=Role.EDITOR)
    with pytest.raises(NotFound):
        store.set_user_disabled("carol", True)
    with pytest.raises(NotFound):
        store.revoke_token("ffffffffffff")
    with pytest.raises(InvalidInput, match="viewer, editor, admin"):
        Role.parse("root")


def test_grants_decide_visibility_and_permission(store: AuthStore, engine: Engine) -> None:
    tracking = TrackingStore(engine)
    first = tracking.create_experiment("first")
    second = tracking.create_experiment("second")
    alice = store.create_user("alice")
    store.create_user("bob")
    alice_id = store.authenticate(store.create_token("alice", role=Role.EDITOR).token).user_id
    assert alice.name == "alice"

    assert store.visible_experiments(alice_id) == set()
    store.grant(first, "alice", Permission.READ, granted_by="admin")
    store.grant(first, "alice", Permission.WRITE, granted_by="admin")  # replaces, not adds
    store.grant(second, "bob", Permission.OWNER, granted_by="admin")
    assert store.visible_experiments(alice_id) == {first}
    assert store.permission(alice_id, first) is Permission.WRITE
    assert store.permission(alice_id, second) is None
    assert [(g.user, g.permission) for g in store.list_grants(first)] == [("alice", "write")]

    run = tracking.create_run(
        experiment_id=second, run_name="r", user="bob", host="h", pid=None
    ).run_id
    assert store.run_permissions(alice_id, [run, "0" * 32]) == {run: (second, None)}

    store.revoke_grant(first, "alice")
    assert store.visible_experiments(alice_id) == set()
    with pytest.raises(NotFound, match="no grant"):
        store.revoke_grant(first, "alice")
    with pytest.raises(NotFound, match="no experiment"):
        store.grant(999, "alice", Permission.READ, granted_by="admin")


def test_the_audit_log_filters_and_pages_newest_first(store: AuthStore) -> None:
    for i in range(7):
        store.record(
            {
                "at": 1_000 + i,
                "user_name": "alice" if i % 2 else "bob",
                "token_id": "abc",
                "method": "POST",
                "path": f"/api/v1/runs/{i}",
                "action": "log_metrics" if i < 5 else "create_run",
                "status": 200,
                "targets": [f"run/r{i}", "experiment/1"],
                "client": "127.0.0.1",
            }
        )
    entries, next_id = store.audit(limit=3)
    assert [e.at for e in entries] == [1006, 1005, 1004] and next_id is not None
    older, _ = store.audit(limit=3, before_id=next_id)
    assert [e.at for e in older] == [1003, 1002, 1001]
    assert {e.user for e in store.audit(user="alice")[0]} == {"alice"}
    assert [e.at for e in store.audit(action="create_run")[0]] == [1006, 1005]
    assert [e.at for e in store.audit(target="run/r3")[0]] == [1003]
    assert [e.at for e in store.audit(since=1002, until=1004)[0]] == [1003, 1002]
    assert store.audit(limit=100)[1] is None
    assert entries[0].targets == ["run/r6", "experiment/1"]
