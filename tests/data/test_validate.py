"""``keel data validate`` and :func:`keel.data.validate.validate`: inferred and written rules,
pass/fail through the CLI with exit codes, streaming across batches, malformed rules files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from keel.data import table_io
from keel.data.profile import profile_table
from keel.data.rules import parse_rules, plan_rules
from keel.data.validate import validate
from keel.errors import InvalidInput, NotFound
from tests.conftest import run_main


def _reference(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.integers(18, 90, n),
            "sex": rng.choice(["F", "M"], n),
            "bmi": rng.normal(26, 4, n).round(2),
            "email": [f"user{i}@example.org" for i in range(n)],
        }
    )


def _write(tmp_path: Path, name: str, frame: pd.DataFrame) -> Path:
    path = tmp_path / name
    if name.endswith(".parquet"):
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False)
    return path


def _one_red_line(result) -> str:  # type: ignore[no-untyped-def]
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return str(lines[0])


def test_a_fresh_batch_of_the_same_data_passes(cli: CliRunner, tmp_path: Path) -> None:
    ref = _write(tmp_path, "ref.csv", _reference())
    new = _write(
        tmp_path, "new.csv", _reference(300, seed=1).assign(age=lambda f: f.age.clip(18, 89))
    )
    result = run_main(cli, ["data", "validate", str(new), "--against", str(ref)])
    assert result.exit_code == 0, result.output
    assert "PASSED: all" in result.output and "(300 rows)" in result.output

    result = run_main(cli, ["data", "validate", str(new), "--against", str(ref), "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["passed"] is True and body["rows"] == 300
    kinds = {(c["column"], c["kind"]) for c in body["checks"]}
    assert {
        (None, "rows"),
        (None, "columns"),
        ("age", "type"),
        ("age", "min"),
        ("age", "max"),
    } <= kinds
    assert {("sex", "allowed"), ("bmi", "not_null"), ("email", "present")} <= kinds
    # an identifier column is not turned into a list of allowed values
    assert ("email", "allowed") not in kinds


def test_failures_are_counted_with_examples(cli: CliRunner, tmp_path: Path) -> None:
    ref = _write(tmp_path, "ref.csv", _reference())
    bad = _reference(300, seed=2).assign(age=lambda f: f.age.clip(18, 89))
    bad.loc[[4, 9, 200], "age"] = 150  # out of the range (max 89 + 10% of the span)
    bad.loc[7, "sex"] = "X"  # not an allowed category
    bad.loc[[1, 2], "bmi"] = np.nan  # the reference had no nulls
    bad = bad.drop(columns=["email"]).assign(extra=1)
    new = _write(tmp_path, "new.csv", bad)

    result = run_main(cli, ["data", "validate", str(new), "--against", str(ref), "--json"])
    assert result.exit_code == 1, result.output
    body = json.loads(result.output)
    failed = {(c["column"], c["kind"]): c for c in body["checks"] if not c["passed"]}
    assert set(failed) == {
        ("age", "max"),
        ("sex", "allowed"),
        ("bmi", "not_null"),
        ("email", "present"),
        (None, "columns"),
    }
    age = failed[("age", "max")]
    assert age["failures"] == 3 and age["expected"] == "<= 97"
    assert [(e["row"], e["value"]) for e in age["examples"]] == [
        (5, "150"),
        (10, "150"),
        (201, "150"),
    ]
    assert failed[("sex", "allowed")]["examples"] == [{"row": 8, "value": "X"}]
    assert failed[("bmi", "not_null")]["failures"] == 2
    assert failed[(None, "columns")]["actual"] == "unexpected: extra"
    assert failed[("email", "present")]["actual"] == "missing"

    result = run_main(cli, ["data", "validate", str(new), "--against", str(ref)])
    assert result.exit_code == 1
    assert "FAILED: 5 of" in result.output and "row 5: 150" in result.output
    assert "Traceback" not in result.output


def test_types_and_row_counts(tmp_path: Path) -> None:
    ref = _write(tmp_path, "ref.parquet", _reference())
    few = _reference(50).assign(age=lambda f: f.age.astype(str) + "y")
    report = validate(_write(tmp_path, "few.parquet", few), against=ref)
    failed = {(c.column, c.kind): c for c in report.failed}
    assert set(failed) == {(None, "rows"), ("age", "type")}
    assert (
        failed[("age", "type")].actual == "string" and failed[("age", "type")].expected == "integer"
    )
    assert failed[(None, "rows")].actual == "50 rows"
    assert failed[(None, "rows")].expected == "200 .. 600 rows"
    # an integer column where the reference had floats is fine; the reverse is not
    floats = _reference().assign(bmi=lambda f: f.bmi.round().astype(int))
    assert validate(floats, against=ref).passed


def test_written_rules_add_override_and_turn_off(tmp_path: Path) -> None:
    ref = _write(tmp_path, "ref.csv", _reference())
    new = _reference(300, seed=3).assign(age=lambda f: f.age + 30, extra="x")
    new.loc[10, "email"] = "not-an-email"
    new.loc[20, "email"] = new.loc[3, "email"]
    report = validate(new, against=ref)
    assert {(c.column, c.kind) for c in report.failed} == {("age", "max"), (None, "columns")}

    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "tolerances: {range: 1.0}\n"
        "table:\n  allow_extra_columns: true\n"
        "columns:\n"
        "  email: {regex: '^[^@]+@[^@]+$', unique: true}\n"
        "  sex: {allowed: [F]}\n"
    )
    report = validate(new, against=ref, rules=rules)
    failed = {(c.column, c.kind): c for c in report.failed}
    assert set(failed) == {("email", "regex"), ("email", "unique"), ("sex", "allowed")}
    assert failed[("email", "regex")].examples[0].row == 11
    assert failed[("email", "unique")].examples[0].value == "user3@example.org"
    assert failed[("sex", "allowed")].source == "rules"
    assert failed[("sex", "allowed")].failures == int((new.sex == "M").sum())

    rules.write_text("infer: {ranges: false, columns: false}\n")
    assert validate(new, against=ref, rules=rules).passed
    rules.write_text("columns:\n  age: {infer: false}\n  extra: {type: string}\n")
    assert validate(new, against=ref, rules=rules).passed


def test_rules_alone_without_a_reference(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": [1, 2, 3, None], "b": ["x", "y", "x", "z"]})
    rules = parse_rules("table: {rows: {min: 5}}\ncolumns:\n  a: {nullable: false, max: 2}\n")
    report = validate(frame, rules=rules)
    assert report.reference is None
    assert {(c.column, c.kind) for c in report.failed} == {
        (None, "rows"),
        ("a", "not_null"),
        ("a", "max"),
    }
    with pytest.raises(InvalidInput, match="nothing to validate against"):
        validate(frame)


def test_uniqueness_and_nulls_span_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Small CSV blocks: a duplicate in a later batch and the null fraction over all batches."""
    monkeypatch.setattr(table_io, "CSV_BLOCK_BYTES", 8 << 10)
    n = 20_000
    ref = pd.DataFrame({"id": np.arange(n), "v": np.where(np.arange(n) % 10 == 0, np.nan, 1.0)})
    new = ref.copy()
    new.loc[n - 1, "id"] = 5  # duplicates row 6, many batches earlier
    new.loc[: n // 2, "v"] = np.nan  # half the rows: far above 10% + 5%
    path = _write(tmp_path, "new.csv", new)
    rules = parse_rules("columns:\n  id: {unique: true}\n")
    report = validate(path, against=profile_table(ref), rules=rules)
    failed = {(c.column, c.kind): c for c in report.failed}
    assert set(failed) == {("id", "unique"), ("v", "null_fraction")}
    assert failed[("id", "unique")].examples[0].row == n and failed[("id", "unique")].failures == 1
    assert failed[("v", "null_fraction")].expected == "<= 15.0% nulls"
    assert failed[("v", "null_fraction")].actual == "55.0% nulls"  # half, then every 10th


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("columns:\n  age:\n    minn: 3\n", "rules.yaml, line 3: columns.age.minn: Extra inputs"),
        ("columns:\n  age: {type: integr}\n", "rules.yaml, line 2: columns.age.type: unknown type"),
        ("columns:\n  e:\n    regex: '(['\n", "rules.yaml, line 3: columns.e.regex: not a valid"),
        ("tolerances:\n  range: -1\n", "rules.yaml, line 2: tolerances.range: Input should be"),
        ("columns: [a\n", "rules.yaml, line 2: "),
        ("- a\n- b\n", "rules.yaml, line 1: a rules file is a YAML mapping"),
    ],
)
def test_a_malformed_rules_file_names_the_line(
    cli: CliRunner, tmp_path: Path, text: str, message: str
) -> None:
    ref = _write(tmp_path, "ref.csv", _reference(20))
    (tmp_path / "rules.yaml").write_text(text)
    result = run_main(
        cli, ["data", "validate", str(ref), "--against", str(ref), "--rules", "rules.yaml"]
    )
    line = _one_red_line(result)
    assert message in line, line


def test_user_mistakes_are_one_red_line(cli: CliRunner, tmp_path: Path) -> None:
    ref = _write(tmp_path, "ref.csv", _reference(20))
    line = _one_red_line(run_main(cli, ["data", "validate", str(ref), "--against", "nope.csv"]))
    assert "neither a file nor a dataset version" in line
    line = _one_red_line(run_main(cli, ["data", "validate", "missing.csv", "--against", str(ref)]))
    assert "missing.csv does not exist" in line
    line = _one_red_line(run_main(cli, ["data", "validate", str(ref)]))
    assert "nothing to validate against" in line
    line = _one_red_line(run_main(cli, ["data", "validate", str(ref), "--rules", "none.yaml"]))
    assert "cannot read the rules file none.yaml" in line
    with pytest.raises(NotFound):
        validate(ref, against=tmp_path / "nope.parquet")


def test_against_a_dataset_version(cli: CliRunner, tmp_path: Path) -> None:
    from keel.data.versions import log_dataset

    version = log_dataset(_reference(), name="patients")
    assert version.profile is not None
    good = _write(
        tmp_path, "good.csv", _reference(300, seed=5).assign(age=lambda f: f.age.clip(18, 89))
    )
    result = run_main(cli, ["data", "validate", str(good), "--against", "patients@1"])
    assert result.exit_code == 0, result.output
    assert "against patients@1" in result.output

    bad = _write(tmp_path, "bad.csv", _reference(300, seed=5).assign(sex="?"))
    result = run_main(cli, ["data", "validate", str(bad), "--against", "patients@1", "--all"])
    assert result.exit_code == 1 and "one of F, M" in result.output and "row 1: ?" in result.output
    line = _one_red_line(run_main(cli, ["data", "validate", str(bad), "--against", "patients@9"]))
    assert "patients" in line


def test_plan_rules_widens_ranges_by_the_tolerance() -> None:
    profile = profile_table(pd.DataFrame({"x": [0.0, 10.0, 5.0], "k": [3, 3, 3]}))
    rules = {(r.column, r.kind): r for r in plan_rules(profile)}
    assert rules[("x", "min")].value == -1.0 and rules[("x", "max")].value == 11.0
    # a constant column is widened by 10% of its value
    assert rules[("k", "min")].value == 2 and rules[("k", "max")].value == 4
    assert rules[(None, "rows")].value == (1, 5)
    tight = plan_rules(profile, parse_rules("tolerances: {range: 0}\ninfer: {rows: false}"))
    keyed = {(r.column, r.kind): r for r in tight}
    assert keyed[("x", "max")].value == 10.0 and (None, "rows") not in keyed


def test_without_column_inference_a_missing_column_is_fine(tmp_path: Path) -> None:
    ref = _reference()
    new = _reference(300, seed=4).drop(columns=["bmi"]).assign(age=lambda f: f.age.clip(18, 89))
    assert {(c.column, c.kind) for c in validate(new, against=profile_table(ref)).failed} == {
        ("bmi", "present")
    }
    rules = parse_rules("infer: {columns: false}")
    assert validate(new, against=profile_table(ref), rules=rules).passed
    # a column the rules file names must be there unless required: false
    rules = parse_rules("infer: {columns: false}\ncolumns:\n  bmi: {max: 50}\n")
    failed = validate(new, against=profile_table(ref), rules=rules).failed
    assert [(c.column, c.kind, c.actual) for c in failed] == [("bmi", "present", "missing")]
    rules = parse_rules("infer: {columns: false}\ncolumns:\n  bmi: {max: 50, required: false}\n")
    assert validate(new, against=profile_table(ref), rules=rules).passed


def test_a_categorical_dataframe_matches_its_own_profile() -> None:
    frame = pd.DataFrame({"cat": pd.Categorical(list("aabba")), "n": [1, 2, 3, 4, 5]})
    assert validate(frame, against=profile_table(frame)).passed
    changed = frame.assign(cat=pd.Categorical(list("aabbc")))
    [failure] = validate(changed, against=profile_table(frame)).failed
    assert (failure.column, failure.kind, failure.examples[0].value) == ("cat", "allowed", "c")


def test_nan_in_parquet_counts_as_null(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    values = pa.array([1.0, float("nan"), 2.0, float("nan"), 3.0, float("nan")])
    assert values.null_count == 0  # NaN, not null, as Arrow stores it
    pq.write_table(pa.table({"v": values}), tmp_path / "nan.parquet")
    rules = parse_rules("columns:\n  v: {max_null_fraction: 0.25}\n")
    [failure] = validate(tmp_path / "nan.parquet", rules=rules).failed
    assert (failure.kind, failure.actual) == ("null_fraction", "50.0% nulls")
    assert profile_table(tmp_path / "nan.parquet").columns[0].nulls == 3
