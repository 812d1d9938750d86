"""Per-column accumulators of a table profile, fed one Arrow batch at a time.

Each accumulator keeps bounded state whatever the number of rows:

- count and nulls (NaN counts as null in floating columns);
- mean and sample standard deviation (ddof=1), merged batch by batch with Chan et al.'s
  parallel algorithm (numerically stable; no sum of squares);
- quantiles, percentiles and histogram counts from one KLL sketch (datasketches
  ``kll_doubles_sketch``, k=200: normalized rank error about 1.65%; exact below 200 values);
- distinct values: an exact set up to :data:`EXACT_DISTINCT` values, then an HLL sketch
  (``hll_sketch``, lg_k=12: relative standard error about 1.6%);
- top categories: exact counts up to :data:`EXACT_DISTINCT` distinct values, then a
  Misra-Gries ``frequent_strings_sketch`` fed with each batch's :data:`FREQUENT_FEED` most
  frequent values (a value's count may be under-estimated by at most the count of the
  1024th most frequent value of each batch it was left out of).

This module imports numpy, pyarrow and datasketches at the top: import it inside functions of
modules that ``keel --help`` may load.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import datasketches as ds
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from keel.data.profile_models import CategoryCount, ColumnKind, ColumnProfile, HistogramBin

__all__ = [
    "EXACT_DISTINCT",
    "FREQUENT_FEED",
    "HISTOGRAM_BINS",
    "QUANTILES",
    "TOP_CATEGORIES",
    "ColumnStats",
    "column_kind",
    "make_stats",
    "type_name",
]

EXACT_DISTINCT = 4096
FREQUENT_FEED = 1024
HISTOGRAM_BINS = 20
TOP_CATEGORIES = 20
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
KLL_K = 200
HLL_LG_K = 12
FREQUENT_LG_MAX = 11
MAX_TEXT = 200


def column_kind(type_: pa.DataType) -> ColumnKind:
    """How a column of this Arrow type is profiled.

    Args:
        type_: the column's Arrow type (a dictionary type is read as its values' type).

    Returns:
        ``numeric``, ``datetime``, ``boolean``, ``categorical`` or ``other``.

    Example:
        >>> column_kind(pa.dictionary(pa.int8(), pa.string()))
        'categorical'
    """
    if pa.types.is_dictionary(type_):
        return column_kind(type_.value_type)
    if pa.types.is_boolean(type_):
        return "boolean"
    if pa.types.is_integer(type_) or pa.types.is_floating(type_) or pa.types.is_decimal(type_):
        return "numeric"
    if pa.types.is_timestamp(type_) or pa.types.is_date(type_):
        return "datetime"
    if pa.types.is_string(type_) or pa.types.is_large_string(type_) or _is_string_view(type_):
        return "categorical"
    return "other"


def type_name(type_: pa.DataType) -> str:
    """The Arrow type as a profile names it.

    Large and view variants and dictionaries read as their plain type, so a CSV and a
    DataFrame of the same data agree.

    Args:
        type_: an Arrow type.

    Returns:
        Its name, e.g. ``int64``, ``string``, ``timestamp[us]``.

    Example:
        >>> type_name(pa.large_string())
        'string'
    """
    if pa.types.is_dictionary(type_):
        return type_name(type_.value_type)
    if pa.types.is_large_string(type_) or _is_string_view(type_):
        return "string"
    if pa.types.is_large_binary(type_):
        return "binary"
    return str(type_)


def _is_string_view(type_: pa.DataType) -> bool:
    check = getattr(pa.types, "is_string_view", None)
    return bool(check and check(type_))


class _Distinct:
    """Distinct non-null values: exact up to EXACT_DISTINCT, then an HLL sketch."""

    def __init__(self) -> None:
        self.values: set[Any] | None = set()
        self.hll: Any = None

    def update(self, uniques: list[Any]) -> None:
        if self.values is not None:
            if len(self.values) + len(uniques) <= EXACT_DISTINCT:
                self.values.update(uniques)
                return
            self.values.update(uniques)
            if len(self.values) <= EXACT_DISTINCT:
                return
            self.hll = ds.hll_sketch(HLL_LG_K, ds.HLL_8)
            self._feed(self.values)
            self.values = None
            return
        self._feed(uniques)

    def _feed(self, values: Any) -> None:
        deque(map(self.hll.update, values), maxlen=0)  # a C loop: 3x a Python for

    @property
    def exact(self) -> bool:
        return self.values is not None

    def count(self) -> int:
        if self.values is not None:
            return len(self.values)
        return round(self.hll.get_estimate())


class ColumnStats:
    """The running statistics of one column; :meth:`update` per batch, :meth:`result` at the end.

    Args:
        name: the column's name.
        type_: its Arrow type (as read; dictionary columns are decoded per batch).
        note: why the column was read with another type than inferred, if it was.
    """

    def __init__(self, name: str, type_: pa.DataType, note: str | None = None) -> None:
        self.name = name
        self.type = type_
        self.kind = column_kind(type_)
        self.note = note
        self.count = 0
        self.nulls = 0

    def update(self, array: pa.Array | pa.ChunkedArray) -> None:
        """Add one batch's values of this column."""
        if pa.types.is_dictionary(array.type):
            array = array.dictionary_decode()
        self.count += len(array)
        self.nulls += array.null_count
        if array.null_count < len(array):
            self._update(array)

    def _update(self, array: pa.Array) -> None:
        """Add the batch's values (nulls included; at least one is not null)."""

    def result(self) -> ColumnProfile:
        """The column's profile so far."""
        return ColumnProfile(
            name=self.name,
            type=type_name(self.type),
            kind=self.kind,
            count=self.count,
            nulls=self.nulls,
            distinct=0,
            note=self.note,
        )


class _NumericStats(ColumnStats):
    """Numbers (and datetimes through :class:`_DatetimeStats`): moments, KLL, distinct."""

    def __init__(self, name: str, type_: pa.DataType, note: str | None = None) -> None:
        super().__init__(name, type_, note)
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.low = math.inf
        self.high = -math.inf
        self.kll = ds.kll_doubles_sketch(KLL_K)
        self.distinct = _Distinct()

    def _values(self, array: pa.Array) -> np.ndarray:
        """The batch's non-null values as float64."""
        return np.asarray(
            pc.cast(array.drop_null(), pa.float64()).to_numpy(zero_copy_only=False),
            dtype=np.float64,
        )

    def _update(self, array: pa.Array) -> None:
        values = self._values(array)
        nan = np.isnan(values)
        if nan.any():
            self.nulls += int(nan.sum())
            values = values[~nan]
        if values.size == 0:
            return
        self.distinct.update(pc.unique(pa.array(values)).to_numpy().tolist())
        if not values.flags.writeable:  # the sketch takes only writable arrays
            values = values.copy()
        self.kll.update(values)
        self.low = min(self.low, float(values.min()))
        self.high = max(self.high, float(values.max()))
        # Chan et al.: merge (n, mean, M2) of the batch into the running ones
        n_b = values.size
        mean_b = float(values.mean())
        m2_b = float(((values - mean_b) ** 2).sum())
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta * delta * self.n * n_b / n
        self.n = n

    def result(self) -> ColumnProfile:
        profile = super().result()
        if self.n == 0:
            return profile
        std = math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else 0.0
        if math.isnan(self.mean):  # infinities
            std = math.nan
        return profile.model_copy(
            update={
                "distinct": min(self.distinct.count(), self.n),  # an estimate may overshoot
                "distinct_exact": self.distinct.exact,
                "min": self.low,
                "max": self.high,
                "mean": self.mean,
                "std": std,
                "quantiles": self._quantiles(),
                "percentiles": self._percentiles(),
                "histogram": self._histogram(),
            }
        )

    def _percentiles(self) -> list[float]:
        """The 0th..100th percentiles; the ends are the exact min and max."""
        inner = self.kll.get_quantiles([i / 100 for i in range(1, 100)])
        return [self.low, *(min(max(v, self.low), self.high) for v in inner), self.high]

    def _quantiles(self) -> dict[str, float]:
        return dict(
            zip((str(q) for q in QUANTILES), self.kll.get_quantiles(list(QUANTILES)), strict=True)
        )

    def _histogram(self) -> list[HistogramBin]:
        """HISTOGRAM_BINS equal-width bins over [min, max], counts from the KLL sketch."""
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            return []
        if self.low == self.high:
            return [HistogramBin(low=self.low, high=self.high, count=self.n)]
        edges = np.linspace(self.low, self.high, HISTOGRAM_BINS + 1)
        inner = sorted(set(edges[1:-1].tolist()))
        masses = self.kll.get_pmf(inner)  # len(inner) + 1 intervals, the last includes max
        counts = [round(m * self.n) for m in masses]
        counts[int(np.argmax(counts))] += self.n - sum(counts)
        bounds = [self.low, *inner, self.high]
        return [
            HistogramBin(low=bounds[i], high=bounds[i + 1], count=max(c, 0))
            for i, c in enumerate(counts)
        ]


class _DatetimeStats(_NumericStats):
    """Timestamps and dates: statistics over seconds since the epoch, min/max as ISO text."""

    def __init__(self, name: str, type_: pa.DataType, note: str | None = None) -> None:
        super().__init__(name, type_, note)
        self.first: Any = None
        self.last: Any = None

    def _values(self, array: pa.Array) -> np.ndarray:
        type_ = array.type
        if pa.types.is_date(type_):
            days = pc.cast(pc.cast(array.drop_null(), pa.date32()), pa.int32())
            return days.to_numpy(zero_copy_only=False).astype(np.float64) * 86400.0
        ticks = pc.cast(array.drop_null(), pa.int64()).to_numpy(zero_copy_only=False)
        per_second = {"s": 1, "ms": 1e3, "us": 1e6, "ns": 1e9}[type_.unit]
        return ticks.astype(np.float64) / per_second

    def _update(self, array: pa.Array) -> None:
        super()._update(array)
        bounds = pc.min_max(array)
        low, high = bounds["min"].as_py(), bounds["max"].as_py()
        self.first = low if self.first is None or low < self.first else self.first
        self.last = high if self.last is None or high > self.last else self.last

    def result(self) -> ColumnProfile:
        profile = super().result()
        if self.first is None:
            return profile
        return profile.model_copy(
            update={"min": self.first.isoformat(), "max": self.last.isoformat()}
        )


class _BooleanStats(ColumnStats):
    def __init__(self, name: str, type_: pa.DataType, note: str | None = None) -> None:
        super().__init__(name, type_, note)
        self.trues = 0

    def _update(self, array: pa.Array) -> None:
        self.trues += int(pc.sum(array).as_py() or 0)

    def result(self) -> ColumnProfile:
        profile = super().result()
        n = self.count - self.nulls
        if n == 0:
            return profile
        top = [
            CategoryCount(value="true", count=self.trues),
            CategoryCount(value="false", count=n - self.trues),
        ]
        top = sorted((c for c in top if c.count), key=lambda c: (-c.count, c.value))
        return profile.model_copy(
            update={
                "distinct": len(top),
                "min": 0.0 if self.trues < n else 1.0,
                "max": 1.0 if self.trues > 0 else 0.0,
                "mean": self.trues / n,
                "top": top,
            }
        )


class _CategoricalStats(ColumnStats):
    """Strings: exact value counts while few, then HLL + frequent-items sketches."""

    def __init__(self, name: str, type_: pa.DataType, note: str | None = None) -> None:
        super().__init__(name, type_, note)
        self.counts: dict[str, int] | None = {}
        self.frequent: Any = None
        self.distinct = _Distinct()
        self.low: str | None = None
        self.high: str | None = None

    def _update(self, array: pa.Array) -> None:
        if not pa.types.is_string(array.type):
            array = pc.cast(array, pa.string())
        tallies = pc.value_counts(array.drop_null())
        values = tallies.field("values").to_pylist()
        counts = tallies.field("counts").to_pylist()
        self.distinct.update(values)
        bounds = pc.min_max(array)
        low, high = bounds["min"].as_py(), bounds["max"].as_py()
        self.low = low if self.low is None or low < self.low else self.low
        self.high = high if self.high is None or high > self.high else self.high
        if self.counts is not None:
            for value, count in zip(values, counts, strict=True):
                self.counts[value] = self.counts.get(value, 0) + count
            if len(self.counts) <= EXACT_DISTINCT:
                return
            self.frequent = ds.frequent_strings_sketch(FREQUENT_LG_MAX)
            for value, count in self.counts.items():
                self.frequent.update(value, count)
            self.counts = None
            return
        if len(values) > FREQUENT_FEED:
            keep = np.argsort(np.asarray(counts))[-FREQUENT_FEED:]
            values = [values[i] for i in keep]
            counts = [counts[i] for i in keep]
        deque(map(self.frequent.update, values, counts), maxlen=0)

    def result(self) -> ColumnProfile:
        profile = super().result()
        if self.low is None or self.high is None:
            return profile
        if self.counts is not None:
            pairs = list(self.counts.items())
        else:
            pairs = [
                (item[0], int(item[1]))
                for item in self.frequent.get_frequent_items(ds.NO_FALSE_POSITIVES)
            ]
        pairs.sort(key=lambda p: (-p[1], p[0]))
        top = [CategoryCount(value=v, count=c) for v, c in pairs[:TOP_CATEGORIES]]
        return profile.model_copy(
            update={
                "distinct": min(self.distinct.count(), self.count - self.nulls),
                "distinct_exact": self.distinct.exact,
                "min": self.low[:MAX_TEXT],
                "max": self.high[:MAX_TEXT],
                "top": top,
                "top_exact": self.counts is not None,
            }
        )


def make_stats(name: str, type_: pa.DataType, note: str | None = None) -> ColumnStats:
    """The accumulator for a column of this Arrow type.

    Args:
        name: the column's name.
        type_: its Arrow type.
        note: why it was read with another type than inferred, if it was.

    Returns:
        A :class:`ColumnStats` to :meth:`~ColumnStats.update` per batch.

    Example:
        >>> stats = make_stats("age", pa.int64())
        >>> stats.update(pa.array([1, 2, None]))
        >>> stats.result().mean
        1.5
    """
    kind = column_kind(type_)
    cls: type[ColumnStats] = {
        "numeric": _NumericStats,
        "datetime": _DatetimeStats,
        "boolean": _BooleanStats,
        "categorical": _CategoricalStats,
    }.get(kind, ColumnStats)
    return cls(name, type_, note)
