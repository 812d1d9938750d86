"""The deployments API on SQLite and PostgreSQL with real registered models: create, traffic,
shadows, promote (with and without moving the alias, and under governance), rollback, delete;
errors that say what exists; and no lost update when writers race."""

from __future__ import annotations

import threading

import pytest

from keel.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from keel.models import api as registry
from keel.models import governance
from keel.models.governance_models import AliasRequest
from keel.serving.deployments import api
from keel.serving.deployments.api import Deployments
from keel.serving.deployments.models import DeploymentConfig
from keel.serving.deployments.store import StaleRevision
from keel.settings import Settings
from tests.serving.deployments.conftest import Registered


def test_create_records_revision_one_with_what_each_reference_resolved_to(
    registered: Registered, settings: Settings
) -> None:
    created = api.create(
        "churn",
        "models:/diabetes@champion",
        canaries={"diabetes@challenger": 10},
        shadows=["diabetes/3"],
        note="first canary",
        settings=settings,
    )
    assert (created.name, created.revision) == ("churn", 1)
    assert created.config.describe() == (
        "diabetes@champion=90%, diabetes@challenger=10%; shadows: diabetes/3"
    )
    assert created.resolved == {"diabetes@champion": 1, "diabetes@challenger": 2, "diabetes/3": 3}
    assert api.get("churn", settings=settings) == created
    assert [d.name for d in api.list_deployments(settings=settings)] == ["churn"]
    [first] = api.history("churn", settings=settings)
    assert (first.revision, first.action, first.note) == (1, "create", "first canary")
    assert first.actor == created.created_by == created.updated_by
    assert api.get_revision("churn", 1, settings=settings) == first

    with pytest.raises(AlreadyExists, match="exists already"):
        api.create("churn", "diabetes/1", settings=settings)


_REFUSED = [
    ("diabetes@nope", {}, [], NotFound, "diabetes@nope does not resolve.*champion -> 1"),
    ("diabetes/9", {}, [], NotFound, "diabetes/9 does not resolve.*has 1-3"),
    ("diabets/1", {}, [], NotFound, "did you mean diabetes"),
    ("diabetes/1", {"diabetes@champion": 10}, [], InvalidInput, "both diabetes/1"),
    ("diabetes/1", {}, ["diabetes/1"], InvalidInput, "named twice"),
    ("diabetes/1", {"diabetes/2": 100}, [], InvalidInput, "leaving nothing"),
    ("diabetes/1", {"diabetes/2": 0.001}, [], InvalidInput, "two decimals"),
    ("runs:/abc/model", {}, [], InvalidInput, "register it first"),
    ("diabetes", {}, [], InvalidInput, "NAME/VERSION or NAME@ALIAS"),
]


def test_a_reference_that_does_not_resolve_is_a_clear_error(
    registered: Registered, settings: Settings
) -> None:
    for model, canaries, shadows, error, message in _REFUSED:
        with pytest.raises(error, match=message):
            api.create("churn", model, canaries=canaries, shadows=shadows, settings=settings)
    assert api.list_deployments(settings=settings) == []


def test_invalid_names_are_refused(registered: Registered, settings: Settings) -> None:
    for name in ("", "a b", "../x", "x\n", "-x"):
        with pytest.raises(InvalidInput, match="invalid deployment name"):
            api.create(name, "diabetes/1", settings=settings)
    with pytest.raises(NotFound, match="no deployment named 'nope'; none exists yet"):
        api.get("nope", settings=settings)


def test_set_traffic_shifts_the_rest_to_the_other_primaries(
    registered: Registered, settings: Settings
) -> None:
    api.create(
        "churn", "diabetes@champion", canaries={"diabetes@challenger": 10}, settings=settings
    )
    moved = api.set_traffic("churn", {"diabetes@challenger": 25}, note="more", settings=settings)
    assert moved.revision == 2
    assert moved.config.describe() == "diabetes@champion=75%, diabetes@challenger=25%"
    three = api.set_traffic("churn", {"models:/diabetes/3": 5}, settings=settings)
    assert three.config.describe() == (
        "diabetes@champion=71.25%, diabetes@challenger=23.75%, diabetes/3=5%"
    )
    assert three.resolved["diabetes/3"] == 3
    dropped = api.set_traffic("churn", {"diabetes@challenger": 0}, settings=settings)
    assert dropped.config.describe() == "diabetes@champion=93.45%, diabetes/3=6.55%"

    with pytest.raises(InvalidInput, match="over 100%"):
        api.set_traffic("churn", {"diabetes/3": 60, "diabetes@champion": 50}, settings=settings)
    with pytest.raises(InvalidInput, match="leave nothing for diabetes@champion"):
        api.set_traffic("churn", {"diabetes/3": 100}, settings=settings)
    with pytest.raises(NotFound, match="diabetes@gone does not resolve"):
        api.set_traffic("churn", {"diabetes@gone": 1}, settings=settings)
    with pytest.raises(NotFound, match="no deployment named 'chrun'; did you mean churn"):
        api.set_traffic("chrun", {"diabetes/3": 1}, settings=settings)
    assert [r.action for r in api.history("churn", settings=settings)] == [
        "create",
        "set-traffic",
        "set-traffic",
        "set-traffic",
    ]


def test_shadows_are_added_and_removed(registered: Registered, settings: Settings) -> None:
    api.create("churn", "diabetes@champion", settings=settings)
    added = api.add_shadow("churn", "diabetes/3", settings=settings)
    assert added.config.shadows == ["diabetes/3"] and added.revision == 2
    with pytest.raises(InvalidInput, match="a shadow of this deployment already"):
        api.add_shadow("churn", "diabetes/3", settings=settings)
    with pytest.raises(InvalidInput, match="both diabetes/1"):
        api.add_shadow("churn", "diabetes/1", settings=settings)
    removed = api.remove_shadow("churn", "diabetes/3", settings=settings)
    assert removed.config.shadows == [] and removed.revision == 3
    with pytest.raises(InvalidInput, match="not a shadow"):
        api.remove_shadow("churn", "diabetes/3", settings=settings)

    # two arms whose aliases came to point at one version do not block other changes
    api.set_traffic("churn", {"diabetes@challenger": 10}, settings=settings)
    registry.set_alias("diabetes", "challenger", 1, settings=settings)
    again = api.add_shadow("churn", "diabetes/3", settings=settings)
    assert again.resolved == {"diabetes@champion": 1, "diabetes@challenger": 1, "diabetes/3": 3}
    with pytest.raises(InvalidInput, match="diabetes@champion and diabetes/1 are both diabetes/1"):
        api.set_traffic("churn", {"diabetes/1": 5}, settings=settings)


def test_promote_the_canary_keeps_the_shadows(registered: Registered, settings: Settings) -> None:
    api.create(
        "churn",
        "diabetes@champion",
        canaries={"diabetes@challenger": 10},
        shadows=["diabetes/3"],
        settings=settings,
    )
    done = api.promote("churn", settings=settings)
    assert (done.promoted, done.version, done.alias, done.moved, done.request) == (
        "diabetes@challenger",
        2,
        None,
        None,
        None,
    )
    assert done.deployment.config.describe() == "diabetes@challenger=100%; shadows: diabetes/3"
    assert registry.get_version("diabetes", "champion", settings=settings).version == 1

    with pytest.raises(InvalidInput, match="nothing to promote"):
        api.promote("churn", settings=settings)
    # a shadow can be promoted by name: it leaves the shadows
    named = api.promote("churn", "diabetes/3", settings=settings)
    assert named.deployment.config.describe() == "diabetes/3=100%"
    with pytest.raises(InvalidInput, match="not an arm of this deployment"):
        api.promote("churn", "diabetes/1", settings=settings)


def test_promote_with_move_alias_moves_champion_and_follows_it(
    registered: Registered, settings: Settings
) -> None:
    api.create("churn", "diabetes@champion", canaries={"diabetes/3": 20}, settings=settings)
    done = api.promote("churn", move_alias=True, note="3 wins", settings=settings)
    assert done.alias == "diabetes@champion" and done.request is None
    assert done.moved is not None and done.moved.version == 3
    assert registry.get_version("diabetes", "champion", settings=settings).version == 3
    assert done.deployment.config.describe() == "diabetes@champion=100%"
    assert done.deployment.resolved == {"diabetes@champion": 3}
    audit = registry.history("diabetes", settings=settings)[-1]
    assert (audit.action, audit.alias, audit.version, audit.reason) == (
        "set_alias",
        "champion",
        3,
        "3 wins",
    )


def test_promote_with_a_protected_alias_makes_a_request_and_pins_the_canary(
    registered: Registered, settings: Settings
) -> None:
    governance.set_policy("diabetes", protect=["champion"], approvers=["admins"], settings=settings)
    api.create("churn", "diabetes@champion", canaries={"diabetes/3": 20}, settings=settings)
    done = api.promote("churn", move_alias=True, settings=settings)
    assert done.moved is None and isinstance(done.request, AliasRequest)
    assert (done.request.alias, done.request.version, done.request.state) == (
        "champion",
        3,
        "pending",
    )
    assert registry.get_version("diabetes", "champion", settings=settings).version == 1
    assert done.deployment.config.describe() == "diabetes/3=100%"


def test_move_alias_needs_an_alias_of_the_same_model(
    registered: Registered, settings: Settings
) -> None:
    api.create("pinned", "diabetes/1", canaries={"diabetes/3": 20}, settings=settings)
    with pytest.raises(InvalidInput, match="names no alias"):
        api.promote("pinned", move_alias=True, settings=settings)
    assert api.get("pinned", settings=settings).revision == 1
    assert registry.get_version("diabetes", "champion", settings=settings).version == 1


def test_rollback_appends_the_previous_configuration(
    registered: Registered, settings: Settings
) -> None:
    api.create(
        "churn", "diabetes@champion", canaries={"diabetes@challenger": 10}, settings=settings
    )
    with pytest.raises(InvalidInput, match="revision 1 is the current revision"):
        api.rollback("churn", to=1, settings=settings)
    api.set_traffic("churn", {"diabetes@challenger": 50}, settings=settings)
    api.promote("churn", settings=settings)
    back = api.rollback("churn", settings=settings)
    assert back.revision == 4
    assert back.config.describe() == "diabetes@champion=50%, diabetes@challenger=50%"
    first = api.rollback("churn", to=1, note="canary errors", settings=settings)
    assert first.revision == 5
    assert first.config == api.get_revision("churn", 1, settings=settings).config
    history = api.history("churn", settings=settings)
    assert [(r.revision, r.action) for r in history] == [
        (1, "create"),
        (2, "set-traffic"),
        (3, "promote"),
        (4, "rollback"),
        (5, "rollback"),
    ]
    assert history[-1].note == "canary errors"
    with pytest.raises(NotFound, match="has no revision 9; it has 1 to 5"):
        api.rollback("churn", to=9, settings=settings)


def test_rollback_of_a_first_revision_and_delete(
    registered: Registered, settings: Settings
) -> None:
    api.create("churn", "diabetes/1", settings=settings)
    with pytest.raises(InvalidInput, match="nothing to roll back to"):
        api.rollback("churn", settings=settings)
    api.set_traffic("churn", {"diabetes/2": 50}, settings=settings)
    assert api.delete("churn", settings=settings) == 2
    with pytest.raises(NotFound):
        api.get("churn", settings=settings)
    with pytest.raises(NotFound):
        api.history("churn", settings=settings)
    again = api.create("churn", "diabetes/2", settings=settings)
    assert again.revision == 1
    assert len(api.history("churn", settings=settings)) == 1


def test_a_stale_revision_is_refused_by_the_store(
    registered: Registered, settings: Settings
) -> None:
    with Deployments(settings) as deployments:
        created = deployments.create("churn", DeploymentConfig.of("diabetes/1"))
        config = DeploymentConfig.of("diabetes/2")
        resolved = deployments.resolve(config)
        deployments.store.append(
            "churn", config, expected=1, resolved=resolved, action="set-traffic", actor="a"
        )
        with pytest.raises(StaleRevision, match="changed meanwhile") as raised:
            deployments.store.append(
                "churn",
                config,
                expected=created.revision,
                resolved=resolved,
                action="set-traffic",
                actor="b",
            )
        assert isinstance(raised.value, Conflict)
        assert deployments.get("churn").revision == 2


def test_racing_writers_lose_no_update(registered: Registered, settings: Settings) -> None:
    """Eight threads, each with its own connections, add a different shadow at the same
    moment: every shadow is there afterwards and the revisions are 1 to 9, no gap, no repeat."""
    from keel.models.api import Registry

    with Registry(settings) as models:
        source = models.get_version("diabetes", 3).source
        for _ in range(8):
            models.register(source, "shadows")
    api.create("churn", "diabetes/1", settings=settings)
    start = threading.Barrier(8)
    failures: list[BaseException] = []

    def add(number: int) -> None:
        try:
            with Deployments(settings, actor=f"writer-{number}") as deployments:
                deployments.registry.get_version("shadows", number)  # connections warm
                start.wait()
                deployments.add_shadow("churn", f"shadows/{number}")
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=add, args=(n,)) for n in range(1, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == []
    final = api.get("churn", settings=settings)
    assert final.revision == 9
    assert sorted(final.config.shadows) == sorted(f"shadows/{n}" for n in range(1, 9))
    history = api.history("churn", settings=settings)
    assert [r.revision for r in history] == list(range(1, 10))
    assert sorted(r.actor for r in history[1:]) == sorted(f"writer-{n}" for n in range(1, 9))
    # each revision holds one more shadow than the one before: none built on a stale one
    assert [len(r.config.shadows) for r in history] == list(range(9))


def test_a_share_that_would_round_to_nothing_is_refused_not_dropped() -> None:
    config = DeploymentConfig.of("diabetes@champion", canaries={"diabetes@tiny": 0.01})
    with pytest.raises(InvalidInput, match="diabetes@tiny would round to 0%"):
        config.with_traffic({"diabetes/3": 50})


def test_promote_refuses_a_deployment_changed_since_it_chose_the_canary(
    registered: Registered, settings: Settings
) -> None:
    """Another writer swaps the canary between promote's read and its write: promote says so
    instead of promoting the arm the other writer removed."""
    api.create(
        "churn", "diabetes@champion", canaries={"diabetes@challenger": 10}, settings=settings
    )

    class Interleaved(Deployments):
        def _version(self, ref: str):  # type: ignore[no-untyped-def]
            found = super()._version(ref)
            with Deployments(settings) as other:  # a real second writer, now
                other.set_traffic("churn", {"diabetes@challenger": 0, "diabetes/3": 10})
            return found

    with Interleaved(settings) as deployments, pytest.raises(Conflict, match="changed while"):
        deployments.promote("churn")
    latest = api.get("churn", settings=settings)
    assert latest.config.describe() == "diabetes@champion=90%, diabetes/3=10%"
