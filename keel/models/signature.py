"""Signatures: what a model's ``predict`` takes and returns, inferred from examples and checked
on every call.

:func:`infer_signature` reads an input example (a pandas DataFrame, a numpy array, a dict of
columns or a list of row dicts) and, optionally, the model's predictions on it. :func:`check`
validates the data given to ``predict`` against it and converts what may be converted: columns
are put in the signature's order and integer columns widen to float where the model was trained
on floats. Nothing narrows. Non-float columns the example had no nulls in (``nullable=False``)
must have none; NaN in a float column is a float value the model decides about (XGBoost,
LightGBM and HistGradientBoosting take it as "missing"; most sklearn estimators refuse it with
their own error), since a 5-row example cannot tell which a model expects. The check reads each
column's dtype and asks the frame once which columns hold a null (one vectorised
``isna().any()``), never looping over rows in Python.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from keel.errors import InvalidInput, SchemaMismatch
from keel.models.models import ColumnSpec, DataType, Signature, TensorSpec

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = ["as_frame", "check", "infer_schema", "infer_signature"]

# numpy dtype kind -> logical type; "O" (object) is decided from the column's values.
_KINDS: dict[str, DataType] = {
    "b": "boolean",
    "i": "integer",
    "u": "integer",
    "f": "float",
    "M": "datetime",
    "U": "string",
    "S": "binary",
}

# an object column's values, as pandas.api.types.infer_dtype names them -> logical type
_OBJECT_TYPES: dict[str, DataType] = {"string": "string", "empty": "string", "bytes": "binary"}

# what each expected type accepts, by dtype kind; the kinds that need a cast are the widenings
_ACCEPTS: dict[DataType, frozenset[str]] = {
    "boolean": frozenset("b"),
    "integer": frozenset("iu"),
    "float": frozenset("fiu"),
    "string": frozenset("OUT"),  # T: numpy's StringDType
    "datetime": frozenset("M"),
    "binary": frozenset("OS"),
}


def infer_signature(inputs: Any, outputs: Any = None) -> Signature:
    """The signature of a model that takes ``inputs`` and returns ``outputs``.

    Args:
        inputs: an input example: a DataFrame, a numpy array (or a torch tensor), a dict of
            columns or a list of row dicts.
        outputs: the model's predictions on it, if known.

    Returns:
        A :class:`~keel.models.models.Signature`: columns for tables, one tensor for arrays.

    Raises:
        InvalidInput: the example is empty or of a kind Keel cannot describe.

    Example:
        >>> infer_signature(pd.DataFrame({"age": [0.1], "bmi": [2]})).inputs  # doctest: +SKIP
        [ColumnSpec(name='age', type='float', ...), ColumnSpec(name='bmi', type='integer', ...)]
    """
    return Signature(
        inputs=infer_schema(inputs),
        outputs=None if outputs is None else infer_schema(outputs, what="output"),
    )


def infer_schema(data: Any, *, what: str = "input") -> list[ColumnSpec] | TensorSpec:
    """Columns for a table (DataFrame, Series, dict, list of dicts), a tensor for an array."""
    import numpy as np
    import pandas as pd

    if isinstance(data, pd.Series):
        data = data.to_frame(name=data.name if data.name is not None else "prediction")
    if isinstance(data, pd.DataFrame):
        if data.columns.empty:
            raise InvalidInput(f"the {what} example has no columns")
        return [_column_spec(str(name), data[name]) for name in data.columns]
    if isinstance(data, Mapping) or (
        isinstance(data, list) and data and isinstance(data[0], Mapping)
    ):
        return infer_schema(as_frame(data), what=what)
    array = _as_array(data)
    if array is None:
        raise InvalidInput(
            f"cannot infer a signature from a {type(data).__name__} {what} example: give a "
            "pandas DataFrame, a numpy array, a dict of columns or a list of row dicts"
        )
    if array.ndim == 1 and array.dtype.kind in "OUST":  # labels: one column of values
        return infer_schema(pd.Series(array, name="prediction"), what=what)
    if array.dtype.kind == "O" or array.ndim == 0:
        raise InvalidInput(f"the {what} example must be a numeric array, not {array.dtype}")
    return TensorSpec(dtype=str(np.dtype(array.dtype)), shape=(-1, *array.shape[1:]))


def _column_spec(name: str, column: pd.Series) -> ColumnSpec:
    import pandas as pd

    dtype = column.dtype
    kind = dtype.kind
    nullable = bool(column.isna().any())
    if isinstance(dtype, pd.CategoricalDtype):
        kind = dtype.categories.dtype.kind
    logical = _KINDS.get(kind)
    if logical is None and kind in "OT":
        inferred = pd.api.types.infer_dtype(column, skipna=True)
        logical = _OBJECT_TYPES.get(inferred)
        if logical is None:
            raise InvalidInput(
                f"column {name!r} holds {inferred} values in an object column; give numbers, "
                "booleans and times their own dtype (DataFrame.astype / convert_dtypes)",
                column=name,
            )
    if logical is None:
        raise InvalidInput(f"column {name!r} has dtype {dtype}, which Keel cannot describe")
    return ColumnSpec(name=name, type=logical, nullable=nullable)


def _as_array(data: Any) -> np.ndarray | None:
    import numpy as np

    if isinstance(data, np.ndarray):
        return data
    if hasattr(data, "detach") and hasattr(data, "numpy"):  # a torch tensor
        return np.asarray(data.detach().cpu().numpy())
    if isinstance(data, list | tuple):
        return np.asarray(data)
    return None


def as_frame(data: Any) -> pd.DataFrame:
    """``data`` as a DataFrame: a dict of columns (or of scalars: one row), a list of row dicts.

    Raises:
        InvalidInput: ``data`` is none of these.
    """
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, Mapping):
        if not any(_is_column(v) for v in data.values()):
            return pd.DataFrame([dict(data)])  # one row of scalars
        return pd.DataFrame(dict(data))
    if isinstance(data, list) and all(isinstance(row, Mapping) for row in data):
        return pd.DataFrame.from_records(data)
    raise InvalidInput(f"cannot make a table of a {type(data).__name__}")


def _is_column(value: Any) -> bool:
    return hasattr(value, "__len__") and not isinstance(value, str | bytes)


def check(data: Any, signature: Signature | None) -> Any:
    """Validate ``data`` against ``signature``'s inputs and return what the model should get.

    For columns: ``data`` becomes a DataFrame (a dict or a list of row dicts is converted; a 2-D
    array takes the signature's column names), its columns are put in the signature's order, and
    integer columns where floats are expected become float64. For a tensor: ``data`` becomes an
    array of the expected dtype (a safe cast only) and its shape is checked.

    Args:
        data: what was passed to ``predict``.
        signature: the model's signature; None checks nothing.

    Returns:
        The DataFrame or array to give the model.

    Raises:
        SchemaMismatch: a column is missing or unexpected, has the wrong type, or holds nulls
            where the signature has none (``nullable=False``); or the array has the wrong dtype
            or shape. The message names the column, what was expected and what came.

    Example:
        >>> check({"bmi": [2]}, Signature(inputs=[ColumnSpec(name="bmi", type="float")]))
        ... # doctest: +SKIP
           bmi
        0  2.0
    """
    if signature is None:
        return data
    if isinstance(signature.inputs, TensorSpec):
        return _check_tensor(data, signature.inputs)
    return _check_columns(data, signature.inputs)


def _check_columns(data: Any, specs: list[ColumnSpec]) -> pd.DataFrame:
    import pandas as pd

    names = [spec.name for spec in specs]
    if not isinstance(data, pd.DataFrame):
        array = None if isinstance(data, Mapping | list) else _as_array(data)
        if array is not None:
            if array.ndim != 2 or array.shape[1] != len(specs):
                raise SchemaMismatch(
                    f"expected a table of {len(specs)} columns ({', '.join(names)}), got an "
                    f"array of shape {array.shape}",
                    expected=names,
                    actual=list(array.shape),
                )
            data = pd.DataFrame(array, columns=names)
        else:
            try:
                data = as_frame(data)
            except InvalidInput:
                raise SchemaMismatch(
                    f"expected a table with columns {', '.join(names)}, got a "
                    f"{type(data).__name__}",
                    expected=names,
                    actual=type(data).__name__,
                ) from None
    columns = list(data.columns)
    if columns != names:
        given = set(columns)
        for name in names:
            if name not in given:
                raise SchemaMismatch(
                    f"column {name!r} is missing: the model expects {', '.join(names)}",
                    column=name,
                    expected=names,
                    actual=[str(c) for c in columns],
                )
        expected = set(names)
        for name in columns:
            if name not in expected:
                raise SchemaMismatch(
                    f"column {name!r} is unexpected: the model expects {', '.join(names)}",
                    column=str(name),
                    expected=names,
                    actual=[str(c) for c in columns],
                )
        if len(columns) != len(given):
            raise SchemaMismatch("the input has duplicate column names", actual=columns)
        data = data[names]
    widen: dict[str, str] = {}
    dtypes = data.dtypes
    for spec, dtype in zip(specs, dtypes, strict=True):
        kind = dtype.kind
        if kind not in _ACCEPTS[spec.type]:
            if isinstance(dtype, pd.CategoricalDtype) and (
                dtype.categories.dtype.kind in _ACCEPTS[spec.type]
            ):
                continue
            raise SchemaMismatch(
                f"column {spec.name!r} should hold {spec.type} values, got {_describe(dtype)}",
                column=spec.name,
                expected=spec.type,
                actual=str(dtype),
            )
        if spec.type == "float" and kind != "f":
            widen[spec.name] = "float64"
    if not all(spec.nullable or spec.type == "float" for spec in specs):
        _check_no_nulls(data, specs)
    if widen:
        data = data.astype(widen)
    return data


def _check_no_nulls(data: pd.DataFrame, specs: list[ColumnSpec]) -> None:
    """Refuse nulls (None, NaN, NaT, pd.NA) in a non-float column whose spec is not nullable.

    One vectorised ``isna().any()`` over the frame answers for every column at once (a third
    of the cost of asking column by column on 10 float columns); rows are counted only for
    the column refused.
    """
    seen = data.isna().any().to_numpy()
    for spec, has_nulls in zip(specs, seen, strict=True):
        if has_nulls and not spec.nullable and spec.type != "float":
            _refuse_nulls(data[spec.name], spec.name)


def _refuse_nulls(column: pd.Series, name: str) -> None:
    count = int(column.isna().sum())
    raise SchemaMismatch(
        f"column {name!r} holds {count} null value{'s' if count != 1 else ''} in "
        f"{len(column)} rows, but the model's signature has none for it (its input example "
        "had no nulls there): fill or drop them, or log the model with an example or "
        "signature whose column is nullable",
        column=name,
        nulls=count,
        rows=len(column),
    )


def _describe(dtype: Any) -> str:
    logical = _KINDS.get(dtype.kind)
    if dtype.kind in "OT":
        return f"{dtype} (strings or mixed values)"
    return f"{logical} ({dtype})" if logical else str(dtype)


def _check_tensor(data: Any, spec: TensorSpec) -> np.ndarray:
    import numpy as np
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        array = data.to_numpy()
    else:
        array = _as_array(data)
        if array is None:
            raise SchemaMismatch(
                f"expected an array of {spec.dtype} with shape {_shape(spec.shape)}, got a "
                f"{type(data).__name__}",
                expected=spec.dtype,
                actual=type(data).__name__,
            )
    expected = np.dtype(spec.dtype)
    if array.dtype != expected:
        widening = np.can_cast(array.dtype, expected, casting="safe") or (
            expected.kind == "f" and array.dtype.kind in "iuf"
        )
        if not widening:
            raise SchemaMismatch(
                f"expected an array of {expected}, got {array.dtype}",
                expected=str(expected),
                actual=str(array.dtype),
            )
        array = array.astype(expected)
    if array.ndim != len(spec.shape) or any(
        want not in (-1, got) for want, got in zip(spec.shape, array.shape, strict=True)
    ):
        raise SchemaMismatch(
            f"expected an array of shape {_shape(spec.shape)}, got {tuple(array.shape)}",
            expected=list(spec.shape),
            actual=list(array.shape),
        )
    return array


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join("any" if n == -1 else str(n) for n in shape) + ")"
