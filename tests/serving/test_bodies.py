"""The wire formats of ``POST /predict``: JSON, CSV and Arrow IPC bodies to DataFrames (and the
422 each malformed one gets), and predictions back to JSON, CSV and Arrow."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.ipc
import pytest

from keel.errors import InvalidInput
from keel.serving.bodies import (
    ARROW_FILE,
    ARROW_STREAM,
    UnsupportedMediaType,
    frame_from_arrow,
    frame_from_body,
    frame_from_csv,
    predictions_arrow,
    predictions_csv,
    predictions_json,
    response_type,
)

FRAME = pd.DataFrame({"age": [0.03, -0.01, 0.05], "bmi": [0.06, 0.02, -0.04], "sex": [1, 2, 1]})


def _arrow(frame: pd.DataFrame, *, file_format: bool) -> bytes:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    sink = pa.BufferOutputStream()
    new = pyarrow.ipc.new_file if file_format else pyarrow.ipc.new_stream
    with new(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (
            b'{"records": [{"age": 0.03, "bmi": 0.06, "sex": 1}, {"age": -0.01, "bmi": 0.02, '
            b'"sex": 2}, {"age": 0.05, "bmi": -0.04, "sex": 1}]}',
            None,
        ),
        (
            b'{"columns": {"age": [0.03, -0.01, 0.05], "bmi": [0.06, 0.02, -0.04], '
            b'"sex": [1, 2, 1]}}',
            "application/json; charset=utf-8",
        ),
        (FRAME.to_csv(index=False).encode(), "text/csv"),
        (FRAME.to_csv(index=False).encode(), "text/csv; charset=utf-8"),
        (_arrow(FRAME, file_format=False), ARROW_STREAM),
        (_arrow(FRAME, file_format=True), ARROW_FILE),
        (_arrow(FRAME, file_format=True), ARROW_STREAM),  # told apart by the magic bytes
        (
            b'{"columns": {"age": [0.03, -0.01, 0.05], "bmi": [0.06, 0.02, -0.04], '
            b'"sex": [1, 2, 1]}}',
            "application/x-www-form-urlencoded",
        ),  # what curl -d sends
    ],
)
def test_every_format_gives_the_same_frame(body: bytes, content_type: str | None) -> None:
    frame = frame_from_body(body, content_type)
    pd.testing.assert_frame_equal(frame, FRAME, check_dtype=False)
    assert list(frame.columns) == ["age", "bmi", "sex"]


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b"", "empty"),
        (b"  \n", "empty"),
        (b"age,bmi\n", "header (age, bmi) but no rows"),
        (b"age,bmi\n0.1,0.2,0.3\n", "more cells than the header"),
        (b"age,bmi\n0.1,0.2\n0.1,0.2,0.3\n", "Expected 2 fields in line 3, saw 3"),
        (b'age,bmi\n"0.1,0.2\n', "EOF inside string"),
        (b"age,,sex\n1,2,3\n", "empty column name"),
        (b"\xff\xfeage\n1\n", "not UTF-8"),
    ],
)
def test_a_malformed_csv_says_what(body: bytes, named: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        frame_from_csv(body)
    assert named in caught.value.message
    assert caught.value.context["field"] == "body"


def test_a_short_csv_row_becomes_nulls() -> None:
    frame = frame_from_csv(b"age,bmi\n0.1\n")
    assert frame["age"].tolist() == [0.1]
    assert frame["bmi"].isna().all()


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b"", "empty"),
        (b"not arrow at all", "not a readable Arrow IPC stream"),
        (b"ARROW1 and then nothing", "not a readable Arrow IPC file"),
        (_arrow(FRAME, file_format=False)[:-40], "not a readable Arrow IPC stream"),
        (_arrow(FRAME.head(0), file_format=False), "holds no rows"),
    ],
)
def test_a_corrupt_arrow_body_says_what(body: bytes, named: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        frame_from_arrow(body)
    assert named in caught.value.message


def test_an_unknown_content_type_is_a_415_naming_the_ones_read() -> None:
    with pytest.raises(UnsupportedMediaType) as caught:
        frame_from_body(b"\x89PNG", "image/png")
    assert caught.value.status_code == 415
    assert "'image/png'" in caught.value.message
    assert "text/csv" in caught.value.message and ARROW_STREAM in caught.value.message


def test_predictions_json_turns_nan_into_null() -> None:
    assert predictions_json(np.array([1.5, np.nan, 2.0])) == [1.5, None, 2.0]
    assert predictions_json(np.array([[1.0, np.nan], [3.0, 4.0]])) == [[1.0, None], [3.0, 4.0]]
    assert predictions_json(np.array([1, 2])) == [1, 2]
    assert predictions_json(pd.Series(["a", None])) == ["a", None]
    assert predictions_json([0.5, float("nan")]) == [0.5, None]
    frame = pd.DataFrame({"label": ["a", "b"], "score": [0.9, np.nan]})
    assert predictions_json(frame) == [
        {"label": "a", "score": 0.9},
        {"label": "b", "score": None},
    ]


def test_predictions_as_csv_and_arrow() -> None:
    assert predictions_csv(np.array([1.5, 2.0])) == b"prediction\n1.5\n2.0\n"
    assert predictions_csv(np.array([[1, 2]])) == b"prediction_0,prediction_1\n1,2\n"
    for file_format in (False, True):
        body = predictions_arrow(np.array([1.5, 2.0]), file_format=file_format)
        assert frame_from_arrow(body)["prediction"].tolist() == [1.5, 2.0]
    back = pd.read_csv(io.BytesIO(predictions_csv(pd.DataFrame({"p": [0.1]}))))
    assert back["p"].tolist() == [0.1]


@pytest.mark.parametrize(
    ("accept", "kind"),
    [
        (None, "application/json"),
        ("*/*", "application/json"),
        ("text/csv", "text/csv"),
        ("text/html, text/csv;q=0.9", "text/csv"),
        (f"{ARROW_STREAM}", ARROW_STREAM),
        ("image/png", "application/json"),
    ],
)
def test_response_type_follows_accept(accept: str | None, kind: str) -> None:
    assert response_type(accept) == kind


def test_an_arrow_body_with_a_column_twice_is_a_422_naming_it() -> None:
    table = pa.table([pa.array([1.0]), pa.array([2.0]), pa.array([3.0])], names=["a", "b", "a"])
    sink = pa.BufferOutputStream()
    with pyarrow.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    with pytest.raises(InvalidInput) as caught:
        frame_from_arrow(bytes(sink.getvalue()))
    assert "named more than once: 'a'" in caught.value.message
    assert caught.value.context["column"] == "a"
