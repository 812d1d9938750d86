"""Table schema and profile entities: what ``keel data show`` prints and drift checks compare.

A :class:`TableProfile` is computed in one streaming pass over a CSV file, a Parquet file or a
pandas DataFrame (:func:`keel.data.profile.profile_table`) and stored with the dataset
version. Numeric quantiles, histograms, distinct counts and top categories come from
mergeable sketches, so memory stays bounded whatever the table's size.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "CategoryCount",
    "ColumnDiff",
    "ColumnKind",
    "ColumnProfile",
    "HistogramBin",
    "ProfileDiff",
    "TableProfile",
]

ColumnKind = Literal["numeric", "categorical", "boolean", "datetime", "other"]


class HistogramBin(BaseModel):
    """One histogram bin: values in ``[low, high)`` (the last bin includes ``high``)."""

    model_config = ConfigDict(frozen=True)

    low: float
    high: float
    count: int = Field(ge=0)


class CategoryCount(BaseModel):
    """One of the most frequent values of a column and how many rows hold it."""

    model_config = ConfigDict(frozen=True)

    value: str
    count: int = Field(ge=0)


class ColumnProfile(BaseModel):
    """Schema and statistics of one column."""

    name: str
    type: str = Field(description="the Arrow type, e.g. int64, double, string, timestamp[us]")
    kind: ColumnKind = Field(description="how the column is profiled")
    count: int = Field(ge=0, description="rows, nulls included")
    nulls: int = Field(ge=0)
    distinct: int = Field(ge=0, description="distinct non-null values (estimated above 4096)")
    distinct_exact: bool = Field(default=True, description="False when distinct is an estimate")
    min: float | str | None = None
    max: float | str | None = None
    mean: float | None = None
    std: float | None = None
    quantiles: dict[str, float] = Field(
        default_factory=dict, description='"0.01", "0.05", "0.25", "0.5", "0.75", "0.95", "0.99"'
    )
    percentiles: list[float] = Field(
        default_factory=list,
        description="101 values: the 0th, 1st, ... 100th percentile (numeric and datetime "
        "columns); the KS estimate of a diff reads them",
    )
    histogram: list[HistogramBin] = Field(default_factory=list)
    top: list[CategoryCount] = Field(default_factory=list, description="most frequent values")
    top_exact: bool = Field(
        default=True, description="False when top counts come from a frequent-items sketch"
    )
    note: str | None = Field(
        default=None, description="why the column was read with another type than inferred"
    )

    @property
    def null_fraction(self) -> float:
        """Nulls over rows (0.0 for an empty column)."""
        return self.nulls / self.count if self.count else 0.0


class TableProfile(BaseModel):
    """The schema and per-column profile of a table."""

    format: Literal["csv", "parquet", "dataframe"]
    rows: int = Field(ge=0)
    columns: list[ColumnProfile]

    def column(self, name: str) -> ColumnProfile | None:
        """The profile of column ``name``, or None."""
        return next((c for c in self.columns if c.name == name), None)


class ColumnDiff(BaseModel):
    """How one column changed between two profiles."""

    name: str
    change: Literal["added", "removed", "type_changed", "shifted", "unchanged"]
    old_type: str | None = None
    new_type: str | None = None
    statistic: str | None = Field(default=None, description="psi, ks or jensen_shannon")
    value: float | None = Field(default=None, description="the shift statistic")
    details: dict[str, float | int | str | None] = Field(default_factory=dict)


class ProfileDiff(BaseModel):
    """Schema changes and per-column distribution shift from profile ``a`` to ``b``."""

    rows_a: int
    rows_b: int
    columns: list[ColumnDiff]

    @property
    def schema_changed(self) -> bool:
        return any(c.change in ("added", "removed", "type_changed") for c in self.columns)
