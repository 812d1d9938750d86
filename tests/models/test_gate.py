"""``keel models gate`` through the real CLI entry point, on SQLite and PostgreSQL, with two
Ridge models on diabetes: pass (exit 0), fail (exit 1), thresholds relative and absolute,
no champion, no evaluation in common (exit 2), and every verdict recorded and audited."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from click.testing import CliRunner

import keel
import keel.data
import keel.models
from keel.db import make_engine
from keel.errors import InvalidInput, NotFound
from keel.models import api
from keel.models.release_gate import NoCommonEvaluation, Threshold
from keel.models.store_evaluation import EvaluationStore
from keel.settings import Settings
from tests.conftest import run_main
from tests.models.training import diabetes

GOOD, POOR = 0.01, 30.0
"""Ridge alphas: 0.01 fits diabetes well, 30 barely (its rmse is far higher)."""


@pytest.fixture
def versions(settings: Settings) -> dict[int, dict[str, float]]:
    """diabetes/1 (poor) and diabetes/2 (good), no alias; diabetes-test@1 logged; their rmse
    and r2 on it computed with scikit-learn."""
    from sklearn.linear_model import Ridge
    from sklearn.metrics import mean_squared_error, r2_score

    X, y = diabetes()
    train, test = slice(0, 300), slice(300, None)
    scores = {}
    for alpha in (POOR, GOOD):
        model = Ridge(alpha=alpha).fit(X.iloc[train], y.iloc[train])
        with keel.start_run(f"ridge-{alpha}"):
            logged = keel.models.log_model(model, input_example=X.head())
        version = keel.models.register(logged.uri, "diabetes").version
        predicted = model.predict(X.iloc[test])
        scores[version] = {
            "rmse": math.sqrt(mean_squared_error(y.iloc[test], predicted)),
            "r2": r2_score(y.iloc[test], predicted),
        }
    keel.data.log_dataset(X.iloc[test].assign(progression=y.iloc[test]), "diabetes-test")
    return scores


def _evaluate(*refs: str, data: str = "diabetes-test@1") -> None:
    for ref in refs:
        keel.models.evaluate(ref, data=data, target="progression")


def _gate(cli: CliRunner, *args: str) -> tuple[int, str]:
    result = run_main(cli, ["models", "gate", *args])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


def _verdicts(settings: Settings) -> list[Any]:
    engine = make_engine(settings.db_url)
    try:
        return EvaluationStore(engine).list_verdicts("diabetes")
    finally:
        engine.dispose()


def test_a_better_candidate_passes_and_a_worse_one_fails(
    cli: CliRunner, settings: Settings, versions: dict[int, dict[str, float]]
) -> None:
    _evaluate("diabetes/1", "diabetes/2")
    api.set_alias("diabetes", "champion", 1)

    code, out = _gate(
        cli,
        "diabetes/2",
        "--against",
        "diabetes@champion",
        "--metric",
        "rmse",
        "--min-improvement",
        "1%",
    )
    assert code == 0, out
    good, poor = versions[2]["rmse"], versions[1]["rmse"]
    assert out.splitlines()[0] == "PASS diabetes/2 against diabetes@champion (version 1) on rmse"
    assert f"candidate  {good:.6g}" in out and f"champion   {poor:.6g}" in out
    assert f"change     {good - poor:+.6g} ({(good - poor) / poor:+.2%}), lower is better" in out
    assert "threshold  better by at least 1%: passed" in out

    api.set_alias("diabetes", "champion", 2)
    code, out = _gate(cli, "diabetes/1", "--against", "diabetes@champion", "--metric", "rmse")
    assert code == 1, out
    assert out.splitlines()[0] == "FAIL diabetes/1 against diabetes@champion (version 2) on rmse"
    assert "threshold  at least as good as the champion: failed" in out

    # higher is better for r2: the good model passes against the poor one
    code, out = _gate(cli, "diabetes/2", "--against", "diabetes/1", "--metric", "r2")
    assert code == 0, out
    assert "higher is better" in out

    # each verdict recorded (newest first) and audited on the candidate
    recorded = _verdicts(settings)
    assert [(v.version, v.against_version, v.metric, v.passed) for v in recorded] == [
        (2, 1, "r2", True),
        (1, 2, "rmse", False),
        (2, 1, "rmse", True),
    ]
    assert recorded[2].detail["candidate_value"] == pytest.approx(good)
    assert recorded[2].detail["champion_value"] == pytest.approx(poor)
    assert recorded[2].detail["dataset"] == "diabetes-test@1"
    gates = [e for e in api.history("diabetes") if e.action == "gate"]
    assert [(e.version, e.detail["passed"], e.detail["verdict"]) for e in gates] == [
        (2, True, recorded[2].id),
        (1, False, recorded[1].id),
        (2, True, recorded[0].id),
    ]
    assert gates[1].reason is not None and gates[1].reason.startswith("fail: rmse ")
    assert gates[1].reason.endswith("at least as good as the champion: no")
    shown = run_main(cli, ["models", "history", "diabetes"]).output
    assert "v1 fail on rmse against diabetes@champion (v2)" in shown
    assert "v2 pass on r2 against diabetes/1 (v1)" in shown
    assert "v1 on diabetes-test@1 (regression," in shown


def test_min_improvement_relative_and_absolute(
    cli: CliRunner, settings: Settings, versions: dict[int, dict[str, float]]
) -> None:
    _evaluate("diabetes/1", "diabetes/2")
    gained = versions[1]["rmse"] - versions[2]["rmse"]  # > 0: version 2 is better
    share = gained / versions[1]["rmse"]
    base = ["diabetes/2", "--against", "diabetes/1", "--metric", "rmse"]

    assert _gate(cli, *base, "--min-improvement", f"{gained * 0.99}")[0] == 0
    assert _gate(cli, *base, "--min-improvement", f"{gained * 1.01}")[0] == 1
    assert _gate(cli, *base, "--min-improvement", f"{share * 100 * 0.99}%")[0] == 0
    code, out = _gate(cli, *base, "--min-improvement", f"{share * 100 * 1.01}%")
    assert code == 1 and "better by at least" in out and "failed" in out


def test_max_regression_relative_and_absolute(
    cli: CliRunner, settings: Settings, versions: dict[int, dict[str, float]]
) -> None:
    _evaluate("diabetes/1", "diabetes/2")
    lost = versions[1]["rmse"] - versions[2]["rmse"]  # version 1 is worse by this
    share = lost / versions[2]["rmse"]
    base = ["diabetes/1", "--against", "diabetes/2", "--metric", "rmse"]

    assert _gate(cli, *base, "--max-regression", f"{lost * 1.01}")[0] == 0
    assert _gate(cli, *base, "--max-regression", f"{lost * 0.99}")[0] == 1
    assert _gate(cli, *base, "--max-regression", f"{share * 100 * 1.01}%")[0] == 0
    code, out = _gate(cli, *base, "--max-regression", f"{share * 100 * 0.99}%", "--json")
    assert code == 1
    verdict = json.loads(out)
    assert verdict["passed"] is False and verdict["against_version"] == 2
    [check] = verdict["detail"]["checks"]
    assert check["rule"] == "max_regression" and check["passed"] is False
    assert verdict["detail"]["improvement"] == pytest.approx(-lost)


def test_no_champion_passes_and_says_so(
    cli: CliRunner, settings: Settings, versions: dict[int, dict[str, float]]
) -> None:
    code, out = _gate(cli, "diabetes/1", "--against", "diabetes@champion", "--metric", "rmse")
    assert code == 0, out
    assert "no champion to beat: diabetes@champion is not set" in out
    [verdict] = _verdicts(settings)
    assert verdict.passed and verdict.against_version is None
    assert verdict.detail["reason"] == "no champion to beat: diabetes@champion is not set"
    assert [e.action for e in api.history("diabetes")][-1] == "gate"


def test_an_unset_alias_of_a_model_with_aliases_is_a_typo_not_a_pass(
    cli: CliRunner, settings: Settings, versions: dict[int, dict[str, float]]
) -> None:
    api.set_alias("diabetes", "champion", 2)
    api.set_alias("diabetes", "challenger", 1)
    code, out = _gate(cli, "diabetes/1", "--against", "diabetes@champoin", "--metric", "rmse")
    assert code == 2, out
    assert "diabetes@champoin is not set, and diabetes has aliases challenger -> 1, " in out
    assert "champion -> 2: is it a typo? (--allow-no-champion" in out
    assert _verdicts(settings) == []  # nothing decided, nothing recorded
    with pytest.raises(NotFound, match="is it a typo"):
        keel.models.gate("diabetes/1", against="diabetes@champoin", metric="rmse")

    args = ["diabetes/1", "--against", "diabetes@prod", "--metric", "rmse", "--allow-no-champion"]
    code, out = _gate(cli, *args)
    assert code == 0, out
    assert "no champion to beat: diabetes@prod is not set" in out
    [verdict] = _verdicts(settings)
    assert verdict.passed and verdict.against_version is None


def test_no_common_evaluation_exits_2_naming_what_to_run(
    cli: CliRunner, settings: Settings, versions: dict[int, dict[str, float]]
) -> None:
    api.set_alias("diabetes", "champion", 1)
    code, out = _gate(cli, "diabetes/2", "--against", "diabetes@champion", "--metric", "rmse")
    assert code == 2, out
    assert "keel models evaluate diabetes/2 --data DATASET@VERSION --target COLUMN" in out

    _evaluate("diabetes/2")
    code, out = _gate(cli, "diabetes/2", "--against", "diabetes@champion", "--metric", "rmse")
    assert code == 2, out
    assert "diabetes/2 and diabetes/1 have no evaluation on the same dataset version" in out
    assert "keel models evaluate diabetes/1 --data diabetes-test@1 --target progression" in out
    with pytest.raises(NoCommonEvaluation):
        keel.models.gate("diabetes/2", against="diabetes@champion", metric="rmse")

    # other problems are usage problems too: an unknown metric, a bad threshold
    code, out = _gate(cli, "diabetes/2", "--against", "diabetes/1", "--metric", "brier")
    assert code == 2 and "pass --higher-is-better or --lower-is-better" in out
    code, out = _gate(
        cli, "diabetes/2", "--against", "diabetes/1", "--metric", "rmse", "--min-improvement", "x"
    )
    assert code == 2 and "--min-improvement is a non-negative number" in out
    assert _verdicts(settings) == []


def test_data_and_target_evaluate_what_is_missing_then_reuse_it(
    cli: CliRunner, settings: Settings, versions: dict[int, dict[str, float]]
) -> None:
    X, y = diabetes()
    keel.data.log_dataset(X.iloc[:100].assign(progression=y.iloc[:100]), "diabetes-early")
    _evaluate("diabetes/1", "diabetes/2", data="diabetes-early@1")
    api.set_alias("diabetes", "champion", 1)
    args = ["diabetes/2", "--against", "diabetes@champion", "--metric", "rmse"]

    code, out = _gate(cli, *args, "--data", "diabetes-test", "--target", "progression")
    assert code == 0, out
    assert "data       diabetes-test@1, target progression" in out
    evaluated = {(e.version, e.dataset) for e in _evaluations()}
    assert evaluated == {
        (1, "diabetes-early@1"),
        (2, "diabetes-early@1"),
        (1, "diabetes-test@1"),
        (2, "diabetes-test@1"),
    }
    # a second gate on the same data evaluates nothing again
    assert _gate(cli, *args, "--data", "diabetes-test@1", "--target", "progression")[0] == 0
    assert len(_evaluations()) == 4
    # without --data: the latest dataset both were evaluated on
    verdict = keel.models.gate("diabetes/2", against="diabetes@champion", metric="rmse")
    assert verdict.detail["dataset"] == "diabetes-test@1"
    assert verdict.detail["candidate_value"] == pytest.approx(versions[2]["rmse"])

    with pytest.raises(InvalidInput, match="--data and --target together"):
        keel.models.gate("diabetes/2", against="diabetes/1", metric="rmse", data="diabetes-test")


def _evaluations() -> list[Any]:
    from keel.models.evaluation import list_evaluations

    return list_evaluations("diabetes")


def test_thresholds_parse() -> None:
    assert Threshold.parse("1%", option="x") == Threshold(0.01, relative=True)
    assert Threshold.parse("0.5", option="x") == Threshold(0.5, relative=False)
    assert Threshold.parse(2, option="x") == Threshold(2.0, relative=False)
    assert str(Threshold.parse("2.5%", option="x")) == "2.5%"
    assert Threshold.parse("1%", option="x").amount(-50.0) == pytest.approx(0.5)
    for bad in ("-1", "abc", "%", "nan", "inf%"):
        with pytest.raises(InvalidInput, match="non-negative number"):
            Threshold.parse(bad, option="--max-regression")
