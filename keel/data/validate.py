"""Validate a table against a reference: inferred and written rules, checked batch by batch.

:func:`validate` reads the new table in one streaming pass (:func:`keel.data.table_io.scan_table`)
and applies the rules :func:`keel.data.rules.plan_rules` gives:

- schema rules (columns present, no unexpected ones, types by family) from the Arrow schema;
- value rules (not null, min, max, allowed values, regex) with pandera: one
  ``DataFrameSchema`` built from the rules validates each batch with ``lazy=True``, so every
  failing row of every check is collected; failures are counted per check, with the first
  :data:`EXAMPLES` failing rows kept as examples;
- whole-table rules (row count, null fraction, uniqueness across batches) from running totals;
  uniqueness keeps one 64-bit hash per distinct value seen (about 50 bytes per row in memory).

The report lists every check with its outcome; :attr:`ValidationReport.passed` gates CI.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from keel.data.profile_models import TableProfile
from keel.data.rules import Rule, RulesFile, family_accepts, load_rules, plan_rules, type_family
from keel.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    import pyarrow as pa

    from keel.settings import Settings

__all__ = ["EXAMPLES", "CheckResult", "FailureExample", "ValidationReport", "validate"]

#: failing rows kept per check
EXAMPLES = 5
_VALUE_KINDS = ("not_null", "min", "max", "allowed", "regex")


class FailureExample(BaseModel):
    """One failing row: its number (1-based, the header not counted) and its value."""

    row: int | None = None
    value: str


class CheckResult(BaseModel):
    """The outcome of one rule."""

    kind: str = Field(description="rows, columns, present, type, not_null, null_fraction, ...")
    column: str | None = None
    expected: str
    source: Literal["inferred", "rules"]
    passed: bool = True
    failures: int = Field(default=0, ge=0, description="failing rows (1 for a schema rule)")
    actual: str | None = Field(default=None, description="what was found, when it failed")
    examples: list[FailureExample] = Field(default_factory=list)


class ValidationReport(BaseModel):
    """Every check of a validation and whether the table passed."""

    source: str = Field(description="the table validated")
    reference: str | None = Field(description="what the rules were inferred from")
    rows: int = Field(ge=0)
    checks: list[CheckResult]
    notes: dict[str, str] = Field(
        default_factory=dict, description="columns read wider than pyarrow inferred, and why"
    )

    @property
    def passed(self) -> bool:
        """True when every check passed."""
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[CheckResult]:
        """The checks that failed."""
        return [c for c in self.checks if not c.passed]


def validate(
    source: str | os.PathLike[str] | Any,
    *,
    against: str | os.PathLike[str] | TableProfile | None = None,
    rules: str | os.PathLike[str] | RulesFile | None = None,
    format: str | None = None,
    settings: Settings | None = None,
    progress: Callable[[float], None] | None = None,
) -> ValidationReport:
    """Check a table against rules inferred from a reference and rules from a file.

    Args:
        source: the table to check: a CSV or Parquet path, or a pandas DataFrame.
        against: the reference: a dataset version ``NAME@VERSION`` (its stored profile), a
            CSV or Parquet file (profiled now), or a :class:`TableProfile`. None: only the
            written rules apply.
        rules: a rules YAML file (see :mod:`keel.data.rules`) or a parsed :class:`RulesFile`.
        format: ``csv`` or ``parquet`` when ``source``'s suffix does not tell.
        settings: for dataset versions (the metadata database); default ``Settings()``.
        progress: called after each batch of ``source`` with the share read (0..1).

    Returns:
        The report: every check, its failures with a few failing rows, and ``passed``.

    Raises:
        InvalidInput: no reference and no rules; a malformed table or rules file.
        NotFound: the reference names neither a file nor a dataset version.

    Example:
        >>> report = validate("batch.csv", against="diabetes@2", rules="rules.yaml")
        >>> report.passed, [(c.column, c.kind, c.failures) for c in report.failed]
        (False, [('age', 'max', 3)])
    """
    if against is None and rules is None:
        raise InvalidInput("nothing to validate against: give a reference (--against) or rules")
    reference, label = _reference(against, settings)
    written = load_rules(rules) if isinstance(rules, (str, os.PathLike)) else rules
    planned = plan_rules(reference, written)

    from keel.data.table_io import scan_table

    def start(schema: pa.Schema) -> _Validator:
        return _Validator(schema, planned)

    validator, scan = scan_table(source, start, _Validator.update, format=format, progress=progress)
    return ValidationReport(
        source=scan.source,
        reference=label,
        rows=validator.rows,
        checks=validator.finish(),
        notes=scan.notes,
    )


def _reference(
    against: str | os.PathLike[str] | TableProfile | None, settings: Settings | None
) -> tuple[TableProfile | None, str | None]:
    """The reference profile and how to name it."""
    if against is None:
        return None, None
    if isinstance(against, TableProfile):
        return against, "a profile"
    from keel.data.profile import profile_table

    path = os.fspath(against)
    if os.path.isfile(path):
        return profile_table(path), path
    if "@" in path and os.sep not in path:
        from keel.data.versions import resolve

        version = resolve(path, settings=settings)
        if version.profile is None:
            raise InvalidInput(
                f"{version.ref} is not a table (no profile): validate against a CSV or "
                "Parquet dataset version, or a reference file",
                ref=version.ref,
            )
        return version.profile, version.ref
    raise NotFound(
        f"reference {path} is neither a file nor a dataset version NAME@VERSION", ref=path
    )


class _Validator:
    """The running state of one validation pass; :func:`validate` feeds it batches."""

    def __init__(self, schema: pa.Schema, rules: list[Rule]) -> None:
        import pandera.pandas as pandera

        from keel.data.profile_stats import type_name

        self.rows = 0
        self.results: dict[tuple[str | None, str], CheckResult] = {}
        self.aggregate: list[Rule] = []
        self.nulls: dict[str, int] = {}
        self.seen: dict[str, set[int]] = {}
        names = set(schema.names)
        families = {f.name: type_family(type_name(f.type)) for f in schema}
        skip: set[str] = set()  # columns missing or of the wrong type: no value checks
        value_rules: dict[str, list[Rule]] = {}
        for rule in rules:
            result = self._result(rule)
            column = rule.column
            if rule.kind == "columns":
                extra = [n for n in schema.names if n not in set(rule.value or [])]
                if extra:
                    self._fail(result, 1, f"unexpected: {', '.join(extra)}")
            elif rule.kind == "present":
                if column not in names:
                    self._fail(result, 1, "missing")
                    skip.add(str(column))
            elif rule.kind == "type":
                actual = families.get(str(column))
                if actual is not None and not family_accepts(rule.value, actual):
                    self._fail(result, 1, actual)
                    skip.add(str(column))
            elif rule.kind in _VALUE_KINDS or rule.kind in ("null_fraction", "unique"):
                if column in names:
                    if rule.kind in _VALUE_KINDS:
                        value_rules.setdefault(str(column), []).append(rule)
                    else:
                        self.aggregate.append(rule)
                # else: its `present` rule fails, or it may be absent (`required: false`,
                # or inference of columns off): nothing to check
            else:  # rows: at the end
                self.aggregate.append(rule)
        self.checks: dict[str, list[Rule]] = {}  # column -> its pandera checks, in order
        columns = {}
        for name, column_rules in value_rules.items():
            if name in skip:
                continue
            checks = [r for r in column_rules if r.kind != "not_null"]
            self.checks[name] = checks
            columns[name] = pandera.Column(
                nullable=not any(r.kind == "not_null" for r in column_rules),
                checks=[_pandera_check(pandera, r) for r in checks],
            )
        self.regex_columns = {
            n for n, rs in self.checks.items() if any(r.kind == "regex" for r in rs)
        }
        self.schema = pandera.DataFrameSchema(columns) if columns else None
        self.errors = pandera.errors.SchemaErrors
        self.needed = sorted(
            {*columns, *(str(r.column) for r in self.aggregate if r.column is not None)}
        )

    def _result(self, rule: Rule) -> CheckResult:
        result = CheckResult(
            kind=rule.kind, column=rule.column, expected=rule.expected, source=rule.source
        )
        self.results[(rule.column, rule.kind)] = result
        return result

    @staticmethod
    def _fail(result: CheckResult, count: int, actual: str | None = None) -> None:
        result.passed = False
        result.failures += count
        if actual is not None:
            result.actual = actual

    def update(self, batch: pa.RecordBatch) -> None:
        offset = self.rows
        self.rows += batch.num_rows
        if not self.needed or batch.num_rows == 0:
            return
        for rule in self.aggregate:
            if rule.kind == "null_fraction":
                name = str(rule.column)
                self.nulls[name] = self.nulls.get(name, 0) + _null_count(batch.column(name))
            elif rule.kind == "unique":
                self._unique(rule, batch.column(str(rule.column)), offset)
        if self.schema is None:
            return
        frame = batch.select(list(self.checks)).to_pandas()
        for name in self.regex_columns:
            frame[name] = frame[name].astype("string")
        try:
            self.schema.validate(frame, lazy=True)
        except self.errors as error:
            self._record(error.failure_cases, offset)

    def _record(self, cases: Any, offset: int) -> None:
        """Count pandera's failure cases per check and keep the first few as examples."""
        for row in cases.itertuples(index=False):
            name = row.column
            if name not in self.checks:
                continue
            number = row.check_number
            if row.check == "not_nullable":
                kind = "not_null"
            elif number is not None and number == number:  # not NaN
                kind = self.checks[name][int(number)].kind
            else:
                continue
            result = self.results[(name, kind)]
            result.passed = False
            result.failures += 1
            if len(result.examples) < EXAMPLES:
                index = row.index
                where = offset + int(index) + 1 if index is not None and index == index else None
                value = "null" if kind == "not_null" else str(row.failure_case)
                result.examples.append(FailureExample(row=where, value=value))

    def _unique(self, rule: Rule, array: pa.Array, offset: int) -> None:
        import pandas as pd

        seen = self.seen.setdefault(str(rule.column), set())
        values = array.to_pandas()
        hashes = pd.util.hash_pandas_object(values, index=False).to_numpy()
        result = self.results[(rule.column, "unique")]
        for i, (value, digest) in enumerate(zip(values.tolist(), hashes.tolist(), strict=True)):
            if value is None or value != value:  # nulls are not duplicates
                continue
            if digest in seen:
                result.passed = False
                result.failures += 1
                if len(result.examples) < EXAMPLES:
                    result.examples.append(FailureExample(row=offset + i + 1, value=str(value)))
            else:
                seen.add(digest)

    def finish(self) -> list[CheckResult]:
        """Apply the whole-table rules and return every result."""
        for rule in self.aggregate:
            result = self.results[(rule.column, rule.kind)]
            if rule.kind == "rows":
                low, high = rule.value
                if self.rows < low or (high is not None and self.rows > high):
                    self._fail(result, 1, f"{self.rows:,} rows")
            elif rule.kind == "null_fraction" and self.rows:
                fraction = self.nulls.get(str(rule.column), 0) / self.rows
                if fraction > rule.value:
                    self._fail(result, self.nulls[str(rule.column)], f"{fraction:.1%} nulls")
        return list(self.results.values())


def _pandera_check(pandera: Any, rule: Rule) -> Any:
    """The pandera check for a value rule (nulls are skipped by every check)."""
    value = rule.value
    if rule.kind in ("min", "max") and isinstance(value, str):
        import pandas as pd

        value = pd.Timestamp(value)
    if rule.kind == "min":
        return pandera.Check.ge(value)
    if rule.kind == "max":
        return pandera.Check.le(value)
    if rule.kind == "allowed":
        return pandera.Check.isin(value)
    return pandera.Check.str_matches(value)


def _null_count(array: pa.Array) -> int:
    """Nulls in a batch's column, NaN counted as null (as profiles and pandera count it)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    nulls = array.null_count
    if pa.types.is_floating(array.type):
        nulls += int(pc.sum(pc.is_nan(array)).as_py() or 0)
    return nulls
