"""``POST /feedback``: labels sent over a real socket (uvicorn on 127.0.0.1) and in process
(httpx ASGITransport), joined to the predictions of a real scikit-learn model when read; every
malformed body is a 422 naming the field, never a 500."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pandas as pd
import pytest
import uvicorn
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.errors import InvalidInput
from keel.serving.feedback import MAX_LABELS, feedback_router, parse_feedback
from keel.serving.predlog import PredictionLog, read_feedback, read_predictions
from tests.models.training import diabetes

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def log(tmp_path: Path) -> Iterator[PredictionLog]:
    log = PredictionLog(str(tmp_path / "log"), "diabetes", flush_seconds=3600)
    yield log
    log.close()


def _app(log: PredictionLog) -> FastAPI:
    app = FastAPI()
    app.include_router(feedback_router(log))
    return app


@pytest.fixture
async def client(log: PredictionLog) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=_app(log))
    async with httpx.AsyncClient(transport=transport, base_url="http://model") as client:
        yield client


def _log_predictions(log: PredictionLog, requests: int, rows: int) -> pd.DataFrame:
    """Score diabetes rows with a real forest, log them as the scoring app would; the rows
    with their request ids, predictions and true targets."""
    from sklearn.ensemble import RandomForestRegressor

    X, y = diabetes()
    model = RandomForestRegressor(n_estimators=10, random_state=0).fit(X, y)
    now = time.time_ns() // 1_000_000
    scored = []
    for request in range(requests):
        batch = X.iloc[request * rows : (request + 1) * rows]
        outputs = model.predict(batch)
        log.log(
            request_id=f"req-{request}",
            time_ms=now + request,
            arm="diabetes/1",
            model="diabetes",
            version=1,
            role="primary",
            inputs=batch,
            outputs=outputs,
            latency_ms=0.4,
        )
        for row in range(len(batch)):
            target = float(y.iloc[request * rows + row])
            scored.append((f"req-{request}", row, float(outputs[row]), target))
    return pd.DataFrame(scored, columns=["request_id", "row", "predicted", "target"])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served(log: PredictionLog) -> Iterator[str]:
    """The feedback app served by uvicorn on loopback, in a thread."""
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(_app(log), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_labels_sent_over_http_join_their_predictions(log: PredictionLog, served: str) -> None:
    scored = _log_predictions(log, requests=20, rows=5)
    first, rest = scored[scored["request_id"] < "req-5"], scored[scored["request_id"] >= "req-5"]
    with httpx.Client(base_url=served) as http:
        items = [
            {"request_id": rid, "row": row, "label": target}
            for rid, row, _, target in first.itertuples(index=False)
        ]
        answer = http.post("/feedback", json={"labels": items})
        assert answer.status_code == 200 and answer.json() == {"accepted": len(first)}
        for request_id, labels in rest.groupby("request_id", sort=False)["target"]:
            answer = http.post("/feedback", json={"request_id": request_id, "labels": list(labels)})
            assert answer.json() == {"accepted": 5}
    log.close()

    predictions = read_predictions(log.url, "diabetes")
    labels = read_feedback(log.url, "diabetes")
    assert len(predictions) == len(labels) == 100
    joined = predictions.merge(labels[["request_id", "row", "label"]], on=["request_id", "row"])
    joined = joined.merge(scored, on=["request_id", "row"])
    assert len(joined) == 100
    np.testing.assert_array_equal(joined["label"], joined["target"])
    np.testing.assert_array_equal(joined["output"], joined["predicted"])
    X, _ = diabetes()
    np.testing.assert_array_equal(
        joined.sort_values(["request_id", "row"])["input.bmi"].to_numpy()[:5],
        X["bmi"].iloc[0:5].to_numpy(),  # req-0 sorts first: rows 0-4
    )


async def test_a_label_may_come_before_its_prediction_is_written(
    log: PredictionLog, client: httpx.AsyncClient
) -> None:
    answer = await client.post("/feedback", json={"labels": [{"request_id": "req-0", "label": 99}]})
    assert answer.json() == {"accepted": 1}  # row defaults to 0
    log.flush()
    scored = _log_predictions(log, requests=1, rows=1)
    log.close()
    joined = read_predictions(log.url, "diabetes").merge(
        read_feedback(log.url, "diabetes"), on=["request_id", "row"]
    )
    assert joined["label"].tolist() == [99]
    assert joined["output"].tolist() == scored["predicted"].tolist()


def _body(value: Any) -> bytes:
    return value if isinstance(value, bytes) else orjson.dumps(value)


MALFORMED = [
    (b"", "body"),
    (b"{not json", "body"),
    ([{"request_id": "r", "label": 1}], "body"),
    ({"request_id": "r"}, "body"),
    ({"labels": [], "extra": 1}, "extra"),
    ({"labels": []}, "labels"),
    ({"labels": {"r": 1}}, "labels"),
    ({"labels": [3.5]}, "labels[0]"),
    ({"labels": [{"row": 0, "label": 1}]}, "labels[0].request_id"),
    ({"labels": [{"request_id": "r", "row": 0}]}, "labels[0].label"),
    ({"labels": [{"request_id": "r", "label": None}]}, "labels[0].label"),
    ({"labels": [{"request_id": "r", "lable": 1, "label": 1}]}, "labels[0].lable"),
    (
        {"labels": [{"request_id": "r", "label": 1}, {"request_id": 7, "label": 1}]},
        "labels[1].request_id",
    ),
    ({"labels": [{"request_id": "", "label": 1}]}, "labels[0].request_id"),
    ({"labels": [{"request_id": "r" * 257, "label": 1}]}, "labels[0].request_id"),
    ({"labels": [{"request_id": "r", "row": -1, "label": 1}]}, "labels[0].row"),
    ({"labels": [{"request_id": "r", "row": "0", "label": 1}]}, "labels[0].row"),
    ({"labels": [{"request_id": "r", "row": True, "label": 1}]}, "labels[0].row"),
    ({"labels": [{"request_id": "r", "row": 1.0, "label": 1}]}, "labels[0].row"),
    ({"labels": [{"request_id": "r", "row": 2**31, "label": 1}]}, "labels[0].row"),
    ({"request_id": "r", "labels": [1, None]}, "labels[1]"),
    ({"request_id": ["r"], "labels": [1]}, "request_id"),
    (b'{"labels": [{"request_id": "r", "label": 1e999999}]}', "body"),
    (
        b'{"labels": [{"request_id": "r", "row": 99999999999999999999999, "label": 1}]}',
        "labels[0].row",
    ),
    ({"request_id": "r", "labels": [0] * (MAX_LABELS + 1)}, "labels"),
]


@pytest.mark.parametrize(("body", "field"), MALFORMED)
async def test_a_malformed_body_is_a_422_naming_the_field(
    client: httpx.AsyncClient, log: PredictionLog, body: Any, field: str
) -> None:
    answer = await client.post("/feedback", content=_body(body))
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == field and answer.json()["message"]
    assert log.stats()["buffered"] == 0  # nothing kept from a refused body


async def test_a_closing_service_refuses_labels_with_503(
    client: httpx.AsyncClient, log: PredictionLog
) -> None:
    log.close()
    answer = await client.post("/feedback", json={"request_id": "r", "labels": [1]})
    assert answer.status_code == 503 and "shutting down" in answer.json()["message"]


def test_parse_feedback_of_both_shapes() -> None:
    assert parse_feedback(b'{"request_id": "r1", "labels": [3.5, "a", {"k": 1}]}') == [
        ("r1", 0, 3.5),
        ("r1", 1, "a"),
        ("r1", 2, {"k": 1}),
    ]
    items = [{"request_id": "r1", "row": 4, "label": False}, {"request_id": "r2", "label": 0}]
    body = orjson.dumps({"labels": items})
    assert parse_feedback(body) == [("r1", 4, False), ("r2", 0, 0)]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["labels", "request_id", "row", "label", "x"]), inner, max_size=4
        )
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_any_json_is_parsed_or_refused_as_invalid_input(value: Any) -> None:
    try:
        body = orjson.dumps(value)
    except TypeError:  # an integer beyond 64 bits: not sendable as JSON by orjson either
        return
    try:
        labels = parse_feedback(body)
    except InvalidInput as exc:
        assert exc.context["field"]
        return
    assert labels and all(isinstance(rid, str) and row >= 0 for rid, row, _ in labels)
