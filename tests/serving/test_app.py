"""The scoring app in process (httpx ASGITransport) on a real scikit-learn model logged and
registered in a tmp home, and ``keel serve`` as a real subprocess on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

import keel
import keel.models
from keel.models import api
from keel.models.loading import Predictor
from keel.serving import create_scoring_app
from keel.serving.launch import load_for_serving
from tests.conftest import run_main
from tests.models.training import diabetes


@pytest.fixture
def served(home: Path) -> tuple[Predictor, object]:
    """A random forest on diabetes, logged, registered as ``diabetes`` v1 @champion, loaded."""
    from sklearn.ensemble import RandomForestRegressor

    X, y = diabetes()
    model = RandomForestRegressor(n_estimators=10, random_state=0).fit(X, y)
    with keel.start_run():
        logged = keel.models.log_model(model, input_example=X.head(3))
    api.register(logged.uri, "diabetes")
    api.set_alias("diabetes", "champion", 1)
    predictor, version = load_for_serving("models:/diabetes@champion")
    assert version is not None
    return predictor, version


pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``app`` in process, with its lifespan run (startup, then drain at exit)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://model") as client:
            yield client


@pytest.fixture
async def service(served: tuple[Predictor, object]) -> AsyncIterator[httpx.AsyncClient]:
    predictor, version = served
    app = create_scoring_app(predictor, version=version)  # type: ignore[arg-type]
    async with running(app) as client:
        yield client


async def test_records_and_columns_give_the_models_own_predictions(
    service: httpx.AsyncClient, served: tuple[Predictor, object]
) -> None:
    X, _ = diabetes()
    rows = X.head(25)
    expected = served[0].raw.predict(rows)
    by_records = await service.post("/predict", json={"records": rows.to_dict(orient="records")})
    assert by_records.status_code == 200, by_records.text
    np.testing.assert_allclose(by_records.json()["predictions"], expected)
    by_columns = await service.post("/predict", json={"columns": rows.to_dict(orient="list")})
    assert by_columns.status_code == 200, by_columns.text
    np.testing.assert_allclose(by_columns.json()["predictions"], expected)
    # columns in another order are put in the signature's
    shuffled = rows[list(reversed(rows.columns))].to_dict(orient="list")
    again = await service.post("/predict", json={"columns": shuffled})
    np.testing.assert_allclose(again.json()["predictions"], expected)


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b"", "empty"),
        (b"   ", "empty"),
        (b'{"records": [{"age": 0.1,}]}', "not valid JSON"),
        (b'[{"age": 0.1}]', '"records" or "columns"'),
        (b'{"rows": []}', "['rows']"),
        (b'{"records": []}', "non-empty list"),
        (b'{"records": [1, 2]}', "record 0 is a int"),
        (b'{"columns": {"age": 0.1}}', "column 'age' must be a list"),
        (b'{"columns": {"age": [0.1], "bmi": [0.1, 0.2]}}', "differ in length"),
    ],
)
async def test_a_malformed_body_is_a_422_saying_what(
    service: httpx.AsyncClient, body: bytes, named: str
) -> None:
    response = await service.post("/predict", content=body)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_input"
    assert named in response.json()["message"]


async def test_a_missing_column_is_a_422_naming_it(service: httpx.AsyncClient) -> None:
    X, _ = diabetes()
    columns = X.head(2).drop(columns=["bmi"]).to_dict(orient="list")
    response = await service.post("/predict", json={"columns": columns})
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "schema_mismatch"
    assert body["column"] == "bmi"
    assert "'bmi' is missing" in body["message"]


async def test_a_wrong_type_is_a_422_naming_the_column(service: httpx.AsyncClient) -> None:
    X, _ = diabetes()
    records = X.head(2).to_dict(orient="records")
    records[1]["age"] = "forty"
    response = await service.post("/predict", json={"records": records})
    assert response.status_code == 422
    assert response.json()["column"] == "age"
    assert "should hold float" in response.json()["message"]


async def test_a_record_lacking_a_field_is_refused_not_scored_as_nan(
    service: httpx.AsyncClient,
) -> None:
    X, _ = diabetes()
    records = X.head(3).to_dict(orient="records")
    del records[2]["s1"]
    response = await service.post("/predict", json={"records": records})
    assert response.status_code == 422
    assert response.json()["field"] == "records[2]"
    assert "lacks 's1'" in response.json()["message"]


async def test_health_ready_and_metadata(
    service: httpx.AsyncClient, served: tuple[Predictor, object]
) -> None:
    assert (await service.get("/health")).json() == {"status": "ok"}
    assert (await service.get("/ready")).json()["status"] == "ready"
    meta = (await service.get("/metadata")).json()
    assert meta["uri"] == "models:/diabetes@champion"
    assert (meta["name"], meta["version"], meta["aliases"]) == ("diabetes", 1, ["champion"])
    assert meta["flavor"] == "sklearn"
    assert meta["digest"] == served[0].digest
    names = [column["name"] for column in meta["signature"]["inputs"]]
    assert names == list(diabetes()[0].columns)


async def test_request_ids_and_the_model_that_answered(service: httpx.AsyncClient) -> None:
    X, _ = diabetes()
    body = {"records": X.head(2).to_dict(orient="records")}
    given = await service.post("/predict", json=body, headers={"X-Request-Id": "order-17"})
    assert given.headers["X-Request-Id"] == "order-17"
    assert given.json()["request_id"] == "order-17"
    assert given.headers["X-Keel-Model"] == "diabetes/1"
    made = await service.post("/predict", json=body)
    assert len(made.json()["request_id"]) == 32
    assert made.headers["X-Request-Id"] == made.json()["request_id"]
    refused = await service.post("/predict", json=body, headers={"X-Request-Id": "x" * 200})
    assert refused.status_code == 422
    assert refused.json()["field"] == "X-Request-Id"
    assert len(refused.headers["X-Request-Id"]) == 32  # not the refused one echoed back


async def test_csv_and_arrow_bodies_and_answers(
    service: httpx.AsyncClient, served: tuple[Predictor, object]
) -> None:
    import io

    import pandas as pd

    from keel.serving.bodies import ARROW_STREAM, frame_from_arrow, predictions_arrow

    X, _ = diabetes()
    rows = X.head(8)
    expected = served[0].raw.predict(rows)
    csv = rows.to_csv(index=False).encode()
    by_csv = await service.post("/predict", content=csv, headers={"Content-Type": "text/csv"})
    assert by_csv.status_code == 200, by_csv.text
    np.testing.assert_allclose(by_csv.json()["predictions"], expected)
    arrow = predictions_arrow(rows)  # any frame as an Arrow IPC stream
    by_arrow = await service.post("/predict", content=arrow, headers={"Content-Type": ARROW_STREAM})
    np.testing.assert_allclose(by_arrow.json()["predictions"], expected)
    as_csv = await service.post(
        "/predict", content=csv, headers={"Content-Type": "text/csv", "Accept": "text/csv"}
    )
    assert as_csv.headers["content-type"].startswith("text/csv")
    np.testing.assert_allclose(pd.read_csv(io.StringIO(as_csv.text))["prediction"], expected)
    as_arrow = await service.post(
        "/predict", content=csv, headers={"Content-Type": "text/csv", "Accept": ARROW_STREAM}
    )
    np.testing.assert_allclose(frame_from_arrow(as_arrow.content)["prediction"], expected)
    broken = await service.post(
        "/predict", content=b"age,bmi\n1,2,3\n", headers={"Content-Type": "text/csv"}
    )
    assert broken.status_code == 422 and "more cells" in broken.json()["message"]
    unknown = await service.post("/predict", content=b"...", headers={"Content-Type": "image/png"})
    assert unknown.status_code == 415
    assert unknown.json()["error"] == "unsupported_media_type"


async def test_concurrent_requests_share_predict_calls(served: tuple[Predictor, object]) -> None:
    import asyncio

    predictor, version = served
    app = create_scoring_app(predictor, version=version)  # type: ignore[arg-type]
    X, _ = diabetes()
    bodies = [X.iloc[i : i + 1 + i % 3] for i in range(0, 120, 4)]
    async with running(app) as client:
        answers = await asyncio.gather(
            *(client.post("/predict", json={"columns": b.to_dict(orient="list")}) for b in bodies)
        )
        for rows, answer in zip(bodies, answers, strict=True):
            assert answer.status_code == 200, answer.text
            np.testing.assert_allclose(answer.json()["predictions"], predictor.raw.predict(rows))
        (batcher,) = app.state.service.live.batchers.values()
        assert batcher.stats.requests == len(bodies)
        assert batcher.stats.calls < len(bodies)
        metrics = (await client.get("/metrics")).text
    series = 'keel_rows_scored_total{arm="diabetes/1",deployment="diabetes"}'
    assert f"{series} {sum(map(len, bodies))}.0" in metrics


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_keel_serve_predicts_over_http(
    served: tuple[Predictor, object], home: Path, workers: int
) -> None:
    port = _free_port()
    command = [sys.executable, "-m", "keel", "serve", "models:/diabetes@champion"]
    process = subprocess.Popen(
        [*command, "--port", str(port), "--workers", str(workers), "--log-level", "warning"],
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        # each worker imports Keel, sklearn and the model: seconds alone, far more under a
        # loaded CI run (two workers took over 30 s there); a dead process fails at once above
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, process.stderr.read().decode()  # type: ignore[union-attr]
            try:
                if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "keel serve never became ready"
            time.sleep(0.1)
        X, _ = diabetes()
        rows = X.head(5)
        response = httpx.post(f"{base}/predict", json={"records": rows.to_dict("records")})
        assert response.status_code == 200
        np.testing.assert_allclose(response.json()["predictions"], served[0].raw.predict(rows))
        # keep-alive requests do not wait on a delayed ACK with several workers either: that
        # costs every request ~40 ms, so the fastest quarter shows it even when other load on
        # the machine makes the median noisy (it reached 26 ms on a loaded 2-core run)
        with httpx.Client(base_url=base) as keep_alive:
            took = []
            for _ in range(16):
                start = time.perf_counter()
                keep_alive.get("/health").raise_for_status()
                took.append(time.perf_counter() - start)
        assert sorted(took)[len(took) // 4] < 0.025, took
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_keel_serve_of_an_unknown_model_is_one_red_line(home: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "keel", "serve", "models:/nothing/1", "--port", "1"],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and "nothing" in lines[0]


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["serve"], "give either MODEL_URI or --deployment NAME"),
        (["serve", "models:/diabetes/1", "--deployment", "d"], "exactly one"),
        (["serve", "--deployment", "d", "--follow-alias"], "--follow-alias is for MODEL_URI"),
    ],
)
def test_keel_serve_needs_one_thing_to_serve(cli: Any, args: list[str], said: str) -> None:
    result = run_main(cli, args)
    assert result.exit_code == 2
    assert said in result.output
    assert "Traceback" not in result.output


def test_follow_alias_of_a_fixed_version_is_one_red_line(cli: Any) -> None:
    result = run_main(cli, ["serve", "models:/diabetes/3", "--follow-alias"])
    assert result.exit_code == 1
    assert "--follow-alias needs a models:/NAME@ALIAS URI" in result.output
    assert "Traceback" not in result.output


def test_keel_serve_help_shows_examples(cli: Any) -> None:
    from keel.cli import cli as root

    result = cli.invoke(root, ["serve", "--help"])
    assert result.exit_code == 0
    assert "keel serve models:/diabetes@champion --follow-alias" in result.output
    assert "--max-batch-rows" in result.output and "--no-log-predictions" in result.output


async def test_a_local_model_folder_is_served(
    served: tuple[Predictor, object], tmp_path: Path
) -> None:
    import shutil

    from keel.serving.sources import ModelSource

    folder = tmp_path / "exported-model"
    shutil.copytree(served[0].path, folder)
    app = create_scoring_app(ModelSource(str(folder)))
    X, _ = diabetes()
    rows = X.head(4)
    async with running(app) as client:
        answer = await client.post("/predict", json={"records": rows.to_dict("records")})
        meta = (await client.get("/metadata")).json()
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose(answer.json()["predictions"], served[0].raw.predict(rows))
    assert (meta["deployment"], meta["name"], meta["digest"]) == ("default", None, served[0].digest)


class ListOfNumpy(keel.models.PythonModel):
    """Answers a plain list of numpy scalars (int64), as ``list(model.predict(X))`` does; with
    ``fail`` set, objects JSON cannot write for more rows than the 3-row example it is logged
    with."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def predict(self, context: Any, model_input: Any) -> Any:
        if self.fail and len(model_input) > 3:
            return [object() for _ in range(len(model_input))]
        return list((model_input["age"] > 0).to_numpy(dtype=np.int64))


async def test_numpy_scalars_in_an_answer_are_written_and_an_unwritable_answer_is_a_500(
    home: Path,
) -> None:
    X, _ = diabetes()
    rows = X.head(6)
    for fail, status in [(False, 200), (True, 500)]:
        with keel.start_run():
            logged = keel.models.log_model(ListOfNumpy(fail), input_example=X.head(3))
        app = create_scoring_app(keel.models.load(logged.uri))
        async with running(app) as client:
            answer = await client.post("/predict", json={"columns": rows.to_dict(orient="list")})
        assert answer.status_code == status, answer.text
        if fail:  # the model's fault, not the caller's: never a 422
            assert answer.json()["error"] == "internal"
        else:
            assert answer.json()["predictions"] == [int(age > 0) for age in rows["age"]]
