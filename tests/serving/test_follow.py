"""``--follow-alias``: moving the alias swaps the model in without failing a request (a real
``keel serve`` subprocess under continuous load), and a new version that cannot be loaded leaves
the old one serving until it can."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import keel
import keel.models
from keel.errors import InvalidInput
from keel.models import api
from keel.serving import create_scoring_app
from keel.serving.sources import ModelSource, source_from_spec
from tests.models.training import diabetes
from tests.serving.test_app import _free_port, running


def _register(model: Any) -> int:
    X, _ = diabetes()
    with keel.start_run():
        logged = keel.models.log_model(model, input_example=X.head(3))
    return api.register(logged.uri, "diabetes").version


@pytest.fixture
def two_versions(home: Path) -> dict[str, Any]:
    """diabetes v1 (a forest) @champion and v2 (a linear model)."""
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.linear_model import LinearRegression

    X, y = diabetes()
    forest = RandomForestRegressor(n_estimators=10, random_state=0).fit(X, y)
    linear = LinearRegression().fit(X, y)
    _register(forest)
    _register(linear)
    api.set_alias("diabetes", "champion", 1)
    return {"diabetes/1": forest, "diabetes/2": linear}


def _wait_ready(process: subprocess.Popen[bytes], base: str) -> None:
    deadline = time.monotonic() + 180
    while True:
        assert process.poll() is None, process.stderr.read().decode()  # type: ignore[union-attr]
        try:
            if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "keel serve never became ready"
        time.sleep(0.1)


@pytest.mark.slow
def test_moving_the_alias_swaps_the_model_without_a_failed_request(
    two_versions: dict[str, Any],
) -> None:
    port = _free_port()
    command = [sys.executable, "-m", "keel", "serve", "models:/diabetes@champion"]
    options = ["--follow-alias", "--poll-interval", "0.3", "--no-log-predictions"]
    process = subprocess.Popen(
        [*command, *options, "--port", str(port), "--log-level", "warning"],
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    X, _ = diabetes()
    rows = X.iloc[10:14]
    own = {label: model.predict(rows) for label, model in two_versions.items()}
    answers: list[list[tuple[int, str, list[float]]]] = [[] for _ in range(4)]
    stop = threading.Event()

    def fire(seen: list[tuple[int, str, list[float]]]) -> None:
        with httpx.Client(base_url=base, timeout=30) as client:
            while not stop.is_set():
                answer = client.post("/predict", json={"records": rows.to_dict("records")})
                label = answer.headers.get("X-Keel-Model", "")
                seen.append((answer.status_code, label, answer.json().get("predictions")))

    try:
        _wait_ready(process, base)
        threads = [threading.Thread(target=fire, args=(seen,)) for seen in answers]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        api.set_alias("diabetes", "champion", 2)
        deadline = time.monotonic() + 60
        while not all(seen and seen[-1][1] == "diabetes/2" for seen in answers):
            assert time.monotonic() < deadline, "the new version was never served"
            time.sleep(0.1)
        time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join()
        meta = httpx.get(f"{base}/metadata").json()
    finally:
        stop.set()
        process.terminate()
        process.wait(timeout=30)
    assert (meta["version"], meta["uri"]) == (2, "models:/diabetes@champion")
    for seen in answers:
        assert [status for status, _, _ in seen] == [200] * len(seen)
        labels = [label for _, label, _ in seen]
        switch = labels.index("diabetes/2")
        assert switch > 0 and set(labels[:switch]) == {"diabetes/1"}
        assert set(labels[switch:]) == {"diabetes/2"}  # never back to the old one
        for _, label, predictions in seen:
            np.testing.assert_allclose(predictions, own[label])


class Fussy(keel.models.PythonModel):
    """Loads only while there is no file named ``poison`` in the working directory."""

    def load_context(self, context: Any) -> None:
        if Path("poison").exists():
            raise RuntimeError("poisoned")

    def predict(self, context: Any, model_input: Any) -> Any:
        return model_input["age"].to_numpy() * 0


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_version_that_cannot_load_leaves_the_old_one_serving(
    two_versions: dict[str, Any], caplog: pytest.LogCaptureFixture, anyio_backend: str
) -> None:
    version = _register(Fussy())
    Path("poison").touch()
    source = ModelSource("models:/diabetes@champion", follow_alias=True, interval=0.05)
    app = create_scoring_app(source)
    X, _ = diabetes()
    body = {"records": X.head(2).to_dict("records")}
    with caplog.at_level(logging.WARNING, logger="uvicorn.error"):
        async with running(app) as client:
            api.set_alias("diabetes", "champion", version)
            await asyncio.sleep(0.5)
            answer = await client.post("/predict", json=body)
            assert answer.status_code == 200
            assert answer.headers["X-Keel-Model"] == "diabetes/1"
            assert "cannot refresh diabetes (poisoned)" in caplog.text
            Path("poison").unlink()
            deadline = time.monotonic() + 30
            while answer.headers["X-Keel-Model"] != f"diabetes/{version}":
                assert time.monotonic() < deadline, "the version never came in once loadable"
                await asyncio.sleep(0.05)
                answer = await client.post("/predict", json=body)
            assert answer.json()["predictions"] == [0.0, 0.0]


def test_follow_alias_needs_an_alias_and_specs_round_trip(home: Path) -> None:
    with pytest.raises(InvalidInput, match="needs a models:/NAME@ALIAS URI"):
        ModelSource("models:/diabetes/3", follow_alias=True)
    source = ModelSource("models:/diabetes@champion", follow_alias=True, interval=2.5)
    again = source_from_spec(source.spec())
    assert isinstance(again, ModelSource)
    assert (again.uri, again.follow_alias, again.interval) == (source.uri, True, 2.5)
    pinned = source_from_spec({"kind": "model", "uri": "models:/diabetes@champion", "version": 1})
    assert isinstance(pinned, ModelSource) and pinned.pinned == 1 and pinned.interval is None
    with pytest.raises(InvalidInput, match="unknown plan source kind 'cloud'"):
        source_from_spec({"kind": "cloud"})
