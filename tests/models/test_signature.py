"""Signatures: inferred from examples and predictions; ``check`` names what does not match,
converts what may be converted, and costs next to nothing beside a real model's predict."""

from __future__ import annotations

import statistics
import time

import numpy as np
import pandas as pd
import pytest

from keel.errors import InvalidInput, SchemaMismatch
from keel.models.models import ColumnSpec, Signature, TensorSpec
from keel.models.signature import check, infer_schema, infer_signature
from tests.models.training import diabetes


def _mixed() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "age": [31, 45, 52],
            "income": [1200.5, None, 800.0],
            "city": ["Oslo", "Lima", "Pune"],
            "member": [True, False, True],
            "joined": pd.to_datetime(["2024-01-01", "2024-02-01", "2024-03-01"]),
            "photo": [b"\x00", b"\x01", b"\x02"],
        }
    )


def test_a_table_gives_one_typed_column_each_with_nulls_seen() -> None:
    specs = infer_schema(_mixed())
    assert specs == [
        ColumnSpec(name="age", type="integer"),
        ColumnSpec(name="income", type="float", nullable=True),
        ColumnSpec(name="city", type="string"),
        ColumnSpec(name="member", type="boolean"),
        ColumnSpec(name="joined", type="datetime"),
        ColumnSpec(name="photo", type="binary"),
    ]


def test_row_dicts_and_a_dict_of_columns_describe_the_same_table() -> None:
    rows = [{"a": 1.0, "b": "x"}, {"a": 2.0, "b": "y"}]
    columns = {"a": [1.0, 2.0], "b": ["x", "y"]}
    expected = [ColumnSpec(name="a", type="float"), ColumnSpec(name="b", type="string")]
    assert infer_schema(rows) == infer_schema(columns) == expected


def test_an_array_is_a_tensor_of_any_length() -> None:
    assert infer_schema(np.zeros((5, 3, 2), dtype=np.float32)) == TensorSpec(
        dtype="float32", shape=(-1, 3, 2)
    )


def test_outputs_of_numbers_are_a_tensor_and_labels_a_column() -> None:
    signature = infer_signature(pd.DataFrame({"x": [1.0]}), np.array([0.5, 1.5]))
    assert signature.outputs == TensorSpec(dtype="float64", shape=(-1,))
    labels = infer_signature(pd.DataFrame({"x": [1.0]}), np.array(["setosa", "virginica"]))
    assert labels.outputs == [ColumnSpec(name="prediction", type="string")]


def test_numbers_stored_as_objects_are_refused_with_the_fix() -> None:
    with pytest.raises(InvalidInput, match=r"column 'n' holds integer values.*astype"):
        infer_schema(pd.DataFrame({"n": pd.Series([1, 2], dtype=object)}))


def _signature() -> Signature:
    return infer_signature(_mixed())


def test_a_missing_column_is_named_with_what_the_model_expects() -> None:
    with pytest.raises(SchemaMismatch) as caught:
        check(_mixed().drop(columns=["city"]), _signature())
    assert "column 'city' is missing" in str(caught.value)
    assert caught.value.context["column"] == "city"
    assert "age, income, city" in str(caught.value)


def test_an_unexpected_column_is_named() -> None:
    with pytest.raises(SchemaMismatch, match="column 'zip' is unexpected") as caught:
        check(_mixed().assign(zip=1), _signature())
    assert caught.value.context["column"] == "zip"


def test_strings_where_floats_are_expected_name_the_column_and_both_types() -> None:
    with pytest.raises(SchemaMismatch) as caught:
        check(_mixed().assign(income=["a", "b", "c"]), _signature())
    error = caught.value
    assert "column 'income' should hold float values" in str(error)
    assert error.context["column"] == "income"
    assert error.context["expected"] == "float"
    assert error.context["actual"] in ("str", "object")  # pandas 3 / pandas 2


def test_integers_widen_to_float_and_nothing_narrows() -> None:
    given = _mixed().assign(income=[1, 2, 3])
    checked = check(given, _signature())
    assert checked["income"].dtype == np.float64
    assert checked["income"].tolist() == [1.0, 2.0, 3.0]
    assert given["income"].dtype == np.int64  # the caller's frame is left alone
    with pytest.raises(SchemaMismatch, match="column 'age' should hold integer values"):
        check(_mixed().assign(age=[31.5, 45.0, 52.0]), _signature())


def test_columns_are_put_in_the_signature_order() -> None:
    frame = _mixed()
    checked = check(frame[list(reversed(frame.columns))], _signature())
    assert list(checked.columns) == list(frame.columns)


def test_a_matching_frame_is_passed_through_untouched() -> None:
    frame = _mixed()
    assert check(frame, _signature()) is frame


def test_row_dicts_and_a_2d_array_become_the_table_the_model_expects() -> None:
    signature = Signature(
        inputs=[ColumnSpec(name="a", type="float"), ColumnSpec(name="b", type="float")]
    )
    rows = check([{"b": 2.0, "a": 1.0}], signature)
    assert rows.to_dict("records") == [{"a": 1.0, "b": 2.0}]
    array = check(np.array([[1.0, 2.0]]), signature)
    assert list(array.columns) == ["a", "b"]
    with pytest.raises(SchemaMismatch, match=r"2 columns \(a, b\), got an array of shape"):
        check(np.zeros((1, 3)), signature)


def test_a_tensor_checks_dtype_and_shape() -> None:
    signature = Signature(inputs=TensorSpec(dtype="float32", shape=(-1, 4)))
    assert check(np.zeros((2, 4), dtype=np.int32), signature).dtype == np.float32
    with pytest.raises(SchemaMismatch, match=r"shape \(any, 4\), got \(2, 3\)"):
        check(np.zeros((2, 3), dtype=np.float32), signature)
    integers = Signature(inputs=TensorSpec(dtype="int64", shape=(-1,)))
    with pytest.raises(SchemaMismatch, match="expected an array of int64, got float64"):
        check(np.zeros(3), integers)


@pytest.mark.slow
def test_the_check_costs_under_a_tenth_of_a_forest_predict_on_10000_rows() -> None:
    from sklearn.ensemble import RandomForestRegressor

    X, y = diabetes()
    model = RandomForestRegressor(n_estimators=100, random_state=0, n_jobs=1).fit(X, y)
    rows = pd.concat([X] * 23, ignore_index=True).iloc[:10_000]
    signature = infer_signature(X.head())

    def median(call: object, repeat: int = 9) -> float:
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            call()  # type: ignore[operator]
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    predict = median(lambda: model.predict(rows), repeat=5)
    checking = median(lambda: check(rows, signature))
    assert checking < 0.1 * predict, (checking, predict)


def test_nulls_in_a_column_the_example_had_none_in_are_refused_with_their_count() -> None:
    frame = _mixed()
    checked = check(frame, _signature())  # income had a null in the example: nullable
    assert checked["income"].isna().sum() == 1
    for column, values in (
        ("age", [31.0, np.nan, np.nan]),  # NaN where integers were expected is a mismatch too
        ("city", ["Oslo", None, "Pune"]),
        ("joined", pd.to_datetime(["2024-01-01", None, "2024-03-01"])),
    ):
        with pytest.raises(SchemaMismatch) as caught:
            check(frame.assign(**{column: values}), _signature())
        assert f"column {column!r}" in str(caught.value)
    with pytest.raises(SchemaMismatch, match=r"column 'city' holds 2 null values in 3 rows"):
        check(frame.assign(city=["Oslo", None, np.nan]), _signature())
    # NaN in a float column is a value the model decides about (XGBoost and LightGBM read it
    # as missing): a 5-row example without NaN cannot say the model refuses it
    floats = Signature(inputs=[ColumnSpec(name="bmi", type="float")])
    assert check({"bmi": [0.5, np.nan]}, floats)["bmi"].isna().sum() == 1
