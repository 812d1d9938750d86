"""RemoteRegistry against a real ``keel server`` subprocess on 127.0.0.1 (SQLite): a model logged
through the server is registered, aliased, tagged, described, diffed and traced over HTTP, and
what lands is in the server's own database; errors come back as the same KeelError classes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import keel
import keel.models
from keel.errors import InvalidInput, NotFound
from keel.models.api import Registry
from keel.models.remote import RemoteRegistry
from keel.settings import Settings
from keel.tracking.fluent import set_client
from tests.models.training import diabetes
from tests.tracking.test_remote import Server

pytestmark = pytest.mark.slow


@pytest.fixture
def server(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """A keel server, with KEEL_TRACKING_URI pointing the fluent API at it."""
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


def _log(alpha: float) -> keel.models.LoggedModel:
    """A Ridge model logged through the server (artifacts uploaded to its store)."""
    from sklearn.linear_model import Ridge

    X, y = diabetes()
    with keel.start_run(f"ridge-{alpha}"):
        model = Ridge(alpha=alpha).fit(X, y)
        keel.log_param("alpha", alpha)
        keel.log_metric("rmse", float(np.sqrt(np.mean((model.predict(X) - y) ** 2))))
        return keel.models.log_model(model, input_example=X.head())


def test_remote_registry_round_trip(server: Server) -> None:
    first, second = _log(0.5), _log(2.0)
    with RemoteRegistry(Settings(), actor="anaïs") as registry:
        version = registry.register(
            first.uri, "remote-ridge", description="ridge", tags={"team": "ml"}
        )
        assert (version.name, version.version, version.source) == ("remote-ridge", 1, first.uri)
        assert (version.digest, version.flavor, version.created_by) == (
            first.digest,
            "sklearn",
            "anaïs",
        )
        assert version.signature == first.manifest.signature
        assert registry.register(second.uri, "remote-ridge").version == 2

        moved = registry.set_alias("remote-ridge", "champion", 1, reason="lower rmse")
        assert moved.version == 1 and moved.aliases == ["champion"]
        assert registry.get_version("remote-ridge", "champion").version == 1
        assert registry.get_version("remote-ridge").version == 2
        assert registry.get_version("remote-ridge", "1") == registry.resolve(
            "remote-ridge@champion"
        )
        assert registry.get_model("remote-ridge").aliases == {"champion": 1}
        assert [m.name for m in registry.list_models(name_like="remote%")] == ["remote-ridge"]
        assert [v.version for v in registry.list_versions("remote-ridge")] == [2, 1]
        assert [v.version for v in registry.search_versions(run_id=second.run_id)] == [2]

        registry.set_tag("remote-ridge", "owner/team", "ml")
        registry.set_tag("remote-ridge", "validated", "yes", version=2)
        assert registry.get_model("remote-ridge").tags == {"owner/team": "ml"}
        registry.delete_tag("remote-ridge", "owner/team")
        registry.set_description("remote-ridge", "progression")
        registry.set_description("remote-ridge", "alpha 2", version=2)
        got = registry.get_version("remote-ridge", 2)
        assert (got.tags, got.description) == ({"validated": "yes"}, "alpha 2")
        assert registry.get_model("remote-ridge").tags == {}

        diff = registry.diff("remote-ridge@champion", got)
        assert [(c.key, c.left, c.right) for c in diff.params] == [("alpha", "0.5", "2.0")]
        graph = registry.lineage("remote-ridge@champion")
        assert graph.root == "model:remote-ridge/1"
        assert [e.relation for e in graph.upstream("model:remote-ridge/1")] == ["logged"]
        assert registry.lineage(first.uri).root == f"run:{first.run_id}"

        assert registry.delete_alias("remote-ridge", "champion", reason="drill") == 1
        events = registry.history("remote-ridge")
        assert {e.actor for e in events} == {"anaïs"}
        assert events[-1].action == "delete_alias" and events[-1].reason == "drill"

        # errors are the same classes as a local registry's
        with pytest.raises(NotFound, match="nope"):
            registry.get_model("nope")
        with pytest.raises(NotFound):
            registry.set_alias("remote-ridge", "champion", 9)
        with pytest.raises(NotFound):
            registry.register(f"runs:/{'0' * 32}/model", "remote-ridge")
        with pytest.raises(InvalidInput):
            registry.register("s3://bucket/model", "remote-ridge")
        with pytest.raises(InvalidInput):
            registry.get_version("remote-ridge", "Not-An-Alias")
        with pytest.raises(InvalidInput):
            registry.set_alias("remote-ridge", "Prod", 1)

    # it all landed in the server's own database
    local = Settings(
        home=server.root / "check",
        database_url=f"sqlite:///{server.db}",
        artifact_url=str(server.root / "artifacts"),
    ).replace(tracking_uri=None)
    with Registry(local) as on_server:
        assert [v.version for v in on_server.list_versions("remote-ridge")] == [2, 1]
        assert on_server.get_version("remote-ridge", 1).digest == first.digest

    # loading a registered model through the server: resolved there, downloaded and checked
    loaded = keel.models.load("models:/remote-ridge@latest")
    assert loaded.digest == second.digest
    example = loaded.input_example()
    assert list(loaded.predict(example)) == list(keel.models.load(second.uri).predict(example))
