"""Profile a table in one streaming pass, and compare two profiles (schema and distribution shift).

:func:`profile_table` reads a CSV file, a Parquet file or a pandas DataFrame batch by batch
(:mod:`keel.data.table_io`) and feeds each column to a bounded accumulator
(:mod:`keel.data.profile_stats`): memory does not grow with the number of rows.

:func:`diff_profiles` reports, per column, schema changes and a distribution-shift statistic:

- numeric and datetime columns: the **population stability index** (``psi``) over the
  reference's histogram bins (the outer bins open to -inf and +inf), both sides' bin masses
  read from their stored percentiles (a piecewise-linear CDF), each mass floored at 1e-4;
  ``shifted`` when PSI >= :data:`PSI_SHIFTED` (0.2, the customary "significant shift"; 0.1 to
  0.2 is "moderate"). The two-sample **Kolmogorov-Smirnov** statistic ``ks`` (largest gap
  between the two CDFs, estimated from the percentiles; within about 0.03 of the exact value)
  is reported in ``details`` with its 5% critical value for the two row counts.
- categorical and boolean columns: the **Jensen-Shannon distance** (``jensen_shannon``, base 2,
  from 0 identical to 1 disjoint) over the categories both profiles count exactly plus one
  "other" bucket for the rest of the rows; ``shifted`` when it is >= :data:`JS_SHIFTED`
  (0.1). The categorical PSI over the same buckets is in ``details``.

pyarrow, numpy and datasketches are imported inside the functions: ``keel --help`` may import
this module.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from keel.data.profile_models import ColumnDiff, ColumnProfile, ProfileDiff, TableProfile

if TYPE_CHECKING:
    import pyarrow as pa

    from keel.data.profile_stats import ColumnStats

__all__ = ["JS_SHIFTED", "PSI_SHIFTED", "diff_profiles", "profile_table"]

#: a numeric column is "shifted" when its PSI reaches this
PSI_SHIFTED = 0.2
#: a categorical column is "shifted" when its Jensen-Shannon distance (base 2) reaches this
JS_SHIFTED = 0.1
_FLOOR = 1e-4


class _Profiler:
    """One accumulator per column of a schema; :func:`profile_table` feeds it batches."""

    def __init__(self, schema: pa.Schema) -> None:
        from keel.data.profile_stats import make_stats

        self.rows = 0
        self.columns: list[ColumnStats] = [make_stats(f.name, f.type) for f in schema]

    def update(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows
        for stats, array in zip(self.columns, batch.columns, strict=True):
            stats.update(array)


def profile_table(
    source: str | os.PathLike[str] | Any,
    *,
    format: str | None = None,
    progress: Callable[[float], None] | None = None,
) -> TableProfile:
    """The schema and profile of a CSV file, a Parquet file or a pandas DataFrame.

    One pass over the table in batches (8 MB of CSV text, or 65,536 rows of Parquet or
    DataFrame, at a time); memory stays bounded whatever the size. A CSV column whose later
    values do not fit the type inferred from the first block is read again wider (integer ->
    double -> string) and its profile says so in ``note``.

    Args:
        source: a path to a ``.csv`` (also ``.csv.gz``, ``.tsv``) or ``.parquet`` file, or a
            pandas DataFrame.
        format: ``csv``, ``parquet`` or ``dataframe`` when the suffix does not tell.
        progress: called after each batch with the share of the table read (0..1).

    Returns:
        The table's profile: row count and one :class:`ColumnProfile` per column.

    Raises:
        InvalidInput: the file does not exist, its format is unknown, or it is malformed (the
            message names the file and the line or reason).

    Example:
        >>> profile = profile_table("data/train.csv")
        >>> profile.rows, profile.column("age").quantiles["0.5"]
        (442, 50.0)
    """
    from keel.data.table_io import scan_table

    profiler, scan = scan_table(
        source, _Profiler, _Profiler.update, format=format, progress=progress
    )
    columns = []
    for stats in profiler.columns:
        column = stats.result()
        if stats.name in scan.notes:  # read wider than inferred, or as text
            column = column.model_copy(update={"note": scan.notes[stats.name]})
        columns.append(column)
    return TableProfile(format=scan.format, rows=profiler.rows, columns=columns)


def diff_profiles(a: TableProfile, b: TableProfile) -> ProfileDiff:
    """Schema changes and per-column distribution shift from ``a`` (reference) to ``b``.

    Args:
        a: the reference profile (an older version, the training data).
        b: the profile compared with it.

    Returns:
        One :class:`ColumnDiff` per column of either profile, in ``a``'s column order then
        ``b``'s new columns: ``added``, ``removed``, ``type_changed``, ``shifted`` or
        ``unchanged``, with the statistic (``psi`` or ``jensen_shannon``) and its value.

    Example:
        >>> diff = diff_profiles(profile_table("v1.csv"), profile_table("v2.csv"))
        >>> [(c.name, c.change, c.statistic, round(c.value, 3)) for c in diff.columns]
        [('age', 'shifted', 'psi', 0.412), ('sex', 'unchanged', 'jensen_shannon', 0.004)]
    """
    columns: list[ColumnDiff] = []
    for old in a.columns:
        new = b.column(old.name)
        if new is None:
            columns.append(ColumnDiff(name=old.name, change="removed", old_type=old.type))
            continue
        columns.append(_diff_column(old, new))
    for new in b.columns:
        if a.column(new.name) is None:
            columns.append(ColumnDiff(name=new.name, change="added", new_type=new.type))
    return ProfileDiff(rows_a=a.rows, rows_b=b.rows, columns=columns)


def _diff_column(old: ColumnProfile, new: ColumnProfile) -> ColumnDiff:
    details: dict[str, float | int | str | None] = {
        "null_fraction_a": round(old.null_fraction, 6),
        "null_fraction_b": round(new.null_fraction, 6),
    }
    statistic: str | None = None
    value: float | None = None
    shifted = False
    numeric = ("numeric", "datetime")
    if old.kind in numeric and new.kind == old.kind and old.percentiles and new.percentiles:
        statistic, value = "psi", _numeric_psi(old, new)
        ks = _ks(old.percentiles, new.percentiles)
        n_a, n_b = old.count - old.nulls, new.count - new.nulls
        details["ks"] = round(ks, 6)
        details["ks_critical_0.05"] = round(1.358 * math.sqrt((n_a + n_b) / (n_a * n_b)), 6)
        shifted = value >= PSI_SHIFTED
    elif old.kind in ("categorical", "boolean") and new.kind == old.kind:
        p, q = _category_masses(old, new)
        if p:
            statistic, value = "jensen_shannon", _js_distance(p, q)
            details["psi"] = round(_psi(p, q), 6)
            shifted = value >= JS_SHIFTED
    change: Literal["type_changed", "shifted", "unchanged"] = "unchanged"
    if old.type != new.type:
        change = "type_changed"
    elif shifted:
        change = "shifted"
    return ColumnDiff(
        name=old.name,
        change=change,
        old_type=old.type,
        new_type=new.type,
        statistic=statistic,
        value=None if value is None else round(value, 6),
        details=details,
    )


def _cdf(percentiles: list[float], points: Any) -> Any:
    """The CDF at ``points``, linear between the 101 percentiles, right-continuous at ties."""
    import numpy as np

    xs = np.asarray(percentiles, dtype=np.float64)
    ranks = np.linspace(0.0, 1.0, len(xs))
    x = np.asarray(points, dtype=np.float64)
    i = np.searchsorted(xs, x, side="right")  # xs[i-1] <= x < xs[i]
    inner = (i > 0) & (i < len(xs))
    j = np.clip(i, 1, len(xs) - 1)
    low, high = xs[j - 1], xs[j]
    span = np.where(high > low, high - low, 1.0)
    between = ranks[j - 1] + (x - low) / span * (ranks[j] - ranks[j - 1])
    return np.where(inner, between, np.where(i == 0, 0.0, 1.0))


def _numeric_psi(old: ColumnProfile, new: ColumnProfile) -> float:
    import numpy as np

    edges = sorted({b.high for b in old.histogram[:-1]})
    if not edges:  # one value in the reference: below, at, above it
        v = float(old.percentiles[0])
        edges = [np.nextafter(v, -np.inf), v]
    cuts = np.asarray(edges, dtype=np.float64)
    p = np.diff(np.concatenate([[0.0], _cdf(old.percentiles, cuts), [1.0]]))
    q = np.diff(np.concatenate([[0.0], _cdf(new.percentiles, cuts), [1.0]]))
    return _psi(p.tolist(), q.tolist())


def _ks(a: list[float], b: list[float]) -> float:
    import numpy as np

    points = np.union1d(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    return float(np.max(np.abs(_cdf(a, points) - _cdf(b, points))))


def _category_masses(old: ColumnProfile, new: ColumnProfile) -> tuple[list[float], list[float]]:
    """Both sides' shares of the categories each counts exactly, plus an "other" bucket.

    A category one side lists and the other does not is counted as 0 on the other side when
    that side's top list is complete (it lists every distinct value); otherwise its rows stay
    in "other" on both sides.
    """
    counts_a = {c.value: c.count for c in old.top}
    counts_b = {c.value: c.count for c in new.top}
    complete_a = old.top_exact and len(old.top) >= old.distinct
    complete_b = new.top_exact and len(new.top) >= new.distinct
    kept = [
        v
        for v in sorted(counts_a.keys() | counts_b.keys())
        if (v in counts_a or complete_a) and (v in counts_b or complete_b)
    ]
    n_a, n_b = old.count - old.nulls, new.count - new.nulls
    if n_a == 0 or n_b == 0:
        return [], []
    p = [counts_a.get(v, 0) / n_a for v in kept]
    q = [counts_b.get(v, 0) / n_b for v in kept]
    p.append(max(0.0, 1.0 - sum(p)))
    q.append(max(0.0, 1.0 - sum(q)))
    return p, q


def _psi(p: list[float], q: list[float]) -> float:
    """Population stability index: sum of (q - p) * ln(q / p), shares floored at 1e-4."""
    total = 0.0
    for expected, actual in zip(p, q, strict=True):
        if expected <= 0 and actual <= 0:
            continue
        e, a = max(expected, _FLOOR), max(actual, _FLOOR)
        total += (a - e) * math.log(a / e)
    return total


def _js_distance(p: list[float], q: list[float]) -> float:
    """Jensen-Shannon distance, base 2: sqrt of the mean KL divergence to the midpoint."""
    divergence = 0.0
    for x, y in zip(p, q, strict=True):
        m = (x + y) / 2
        if x > 0:
            divergence += 0.5 * x * math.log2(x / m)
        if y > 0:
            divergence += 0.5 * y * math.log2(y / m)
    return math.sqrt(max(divergence, 0.0))
