"""``keel models export``: a real random forest on diabetes, logged and registered in a tmp home,
exported as a wheel (installed with pip and imported by another Python process), and the CLI's
errors; ``keel.models.loading.load_folder``, which every export loads through.

The Docker and Lambda formats are in ``test_export_docker.py`` and ``test_export_lambda.py``.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import platform
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import keel
import keel.models
from keel.errors import InvalidInput, StorageError
from keel.models import api
from keel.models.loading import load_folder
from keel.models.models import ModelVersion
from keel.serving.export import export_model
from tests.conftest import run_main
from tests.models.training import diabetes

ROWS = 40
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check"]


@pytest.fixture
def registered(home: Path) -> ModelVersion:
    """A 10-tree forest on diabetes, registered as ``diabetes`` v1 with alias ``champion``."""
    from sklearn.ensemble import RandomForestRegressor

    X, y = diabetes()
    model = RandomForestRegressor(n_estimators=10, random_state=0).fit(X, y)
    with keel.start_run():
        logged = keel.models.log_model(model, input_example=X.head(3))
    api.register(logged.uri, "diabetes")
    version = api.set_alias("diabetes", "champion", 1)
    assert isinstance(version, ModelVersion)
    return version


def expected_predictions(version: ModelVersion) -> np.ndarray:
    """The registered model's own predictions for the first rows of diabetes."""
    X, _ = diabetes()
    return np.asarray(keel.models.load(version.uri).raw.predict(X.head(ROWS)))


def isolated_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a process that knows no Keel home: no KEEL_ variable, HOME an empty
    read-only folder (so nothing can be written there)."""
    home = tmp_path / "readonly-home"
    home.mkdir(exist_ok=True)
    home.chmod(0o555)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    return {**env, "HOME": str(home), **extra}


def export_cli(cli: CliRunner, *args: str) -> tuple[int, str]:
    result = run_main(cli, ["models", "export", *args])
    return result.exit_code, result.output


# -- wheel ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_wheel_installs_and_predicts_like_the_model(
    registered: ModelVersion, cli: CliRunner, tmp_path: Path
) -> None:
    code, output = export_cli(
        cli, "models:/diabetes@champion", "--format", "wheel", "--out", str(tmp_path / "dist")
    )
    assert code == 0, output
    wheel = tmp_path / "dist" / "diabetes_model-1-py3-none-any.whl"
    assert wheel.is_file() and str(wheel) in output.replace("\n", "")
    site = tmp_path / "site"
    install = subprocess.run(
        [*PIP, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert install.returncode == 0, install.stderr
    script = f"""
import json, sys
import diabetes_model
from keel.errors import SchemaMismatch
from sklearn.datasets import load_diabetes
X = load_diabetes(as_frame=True).data.head({ROWS})
out = {{
    "file": diabetes_model.__file__,
    "version": diabetes_model.__version__,
    "metadata": diabetes_model.metadata(),
    "frame": diabetes_model.predict(X).tolist(),
    "records": diabetes_model.predict(X.to_dict("records")).tolist(),
    "loads": diabetes_model.load.cache_info().misses,
}}
try:
    diabetes_model.predict({{"age": [0.1]}})
except SchemaMismatch as exc:
    out["refused"] = str(exc)
print(json.dumps(out))
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=isolated_env(tmp_path, PYTHONPATH=str(site)),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["file"] == str(site / "diabetes_model" / "__init__.py")
    expected = expected_predictions(registered)
    np.testing.assert_allclose(got["frame"], expected)
    np.testing.assert_allclose(got["records"], expected)
    assert got["loads"] == 1  # loaded once, then reused
    assert "column 'sex' is missing" in got["refused"]
    meta = got["metadata"]
    assert got["version"] == "1"
    assert (meta["uri"], meta["name"], meta["version"]) == ("models:/diabetes/1", "diabetes", 1)
    assert meta["digest"] == registered.digest
    assert [c["name"] for c in meta["signature"]["inputs"]] == list(diabetes()[0].columns)


def test_the_wheel_follows_the_wheel_format(registered: ModelVersion, tmp_path: Path) -> None:
    from packaging.metadata import Metadata
    from packaging.utils import parse_wheel_filename

    done = export_model("models:/diabetes/1", format="wheel", out=tmp_path / "dist")
    name, version, _, tags = parse_wheel_filename(done.artifact.name)
    assert (name, str(version), [str(t) for t in tags]) == ("diabetes-model", "1", ["py3-none-any"])
    with zipfile.ZipFile(done.artifact) as wheel:
        assert wheel.testzip() is None
        dist_info = "diabetes_model-1.dist-info"
        metadata = Metadata.from_email(wheel.read(f"{dist_info}/METADATA"), validate=True)
        record = list(csv.reader(io.StringIO(wheel.read(f"{dist_info}/RECORD").decode())))
        files = set(wheel.namelist())
        for path, digest, size in record:
            if path == f"{dist_info}/RECORD":
                assert (digest, size) == ("", "")
                continue
            data = wheel.read(path)
            expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            assert digest == "sha256=" + expected.decode() and int(size) == len(data), path
        assert {row[0] for row in record} == files
        assert b"Root-Is-Purelib: true" in wheel.read(f"{dist_info}/WHEEL")
        model_files = {p for p in files if p.startswith("diabetes_model/model/")}
    manifest_requirements = keel.models.load("models:/diabetes/1").manifest.requirements
    from importlib.metadata import version as installed

    assert [str(r) for r in metadata.requires_dist or []] == [
        f"keel=={installed('keel')}",
        *manifest_requirements,
    ]
    major, minor, _ = platform.python_version_tuple()
    assert str(metadata.requires_python) == f"=={major}.{minor}.*"
    assert model_files == {
        "diabetes_model/model/keel-model.json",
        "diabetes_model/model/model.joblib",
        "diabetes_model/model/input_example.parquet",
    }


@pytest.mark.slow
def test_pip_resolves_the_wheels_pinned_requirements_offline(
    registered: ModelVersion, tmp_path: Path
) -> None:
    """Every pin is satisfiable: here they are the versions installed, so pip resolves the
    wheel with no index at all (a wrong pin or malformed metadata would fail)."""
    done = export_model("models:/diabetes@champion", format="wheel", out=tmp_path / "dist")
    resolved = subprocess.run(
        [
            *PIP,
            "install",
            "--dry-run",
            "--no-index",
            "--find-links",
            str(done.out),
            "diabetes_model==1",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert resolved.returncode == 0, resolved.stderr
    assert "Would install diabetes_model-1" in resolved.stdout


def test_an_export_is_the_same_bytes_every_time(registered: ModelVersion, tmp_path: Path) -> None:
    first = export_model("models:/diabetes/1", format="wheel", out=tmp_path / "a")
    again = export_model("models:/diabetes@champion", format="wheel", out=tmp_path / "b")
    assert first.artifact.read_bytes() == again.artifact.read_bytes()


def test_a_runs_uri_exports_under_its_digest(registered: ModelVersion, tmp_path: Path) -> None:
    done = export_model(registered.source, format="wheel", out=tmp_path / "dist")
    digest = registered.digest
    assert done.name == f"model_{digest[:8]}"
    assert done.artifact.name == f"model_{digest[:8]}-0+{digest[:12]}-py3-none-any.whl"
    with zipfile.ZipFile(done.artifact) as wheel:
        info = json.loads(wheel.read(f"model_{digest[:8]}/keel-export.json"))
    assert (info["uri"], info["name"], info["version"]) == (registered.source, None, None)


def test_name_chooses_the_package(registered: ModelVersion, tmp_path: Path) -> None:
    done = export_model("models:/diabetes/1", format="wheel", out=tmp_path / "d", name="risk")
    assert done.artifact.name == "risk-1-py3-none-any.whl"
    with pytest.raises(InvalidInput, match="'Risk-Model' is not a package name"):
        export_model("models:/diabetes/1", format="wheel", out=tmp_path / "e", name="Risk-Model")
    assert not (tmp_path / "e").exists()


# -- errors --------------------------------------------------------------------------------


def _one_line(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert "Traceback" not in output
    return lines[0]


def test_an_unknown_format_is_one_line(registered: ModelVersion, cli: CliRunner) -> None:
    code, output = export_cli(cli, "models:/diabetes/1", "--format", "zip", "--out", "x")
    assert code == 1
    assert "unknown export format 'zip': use wheel, docker, lambda" in _one_line(output)
    assert not Path("x").exists()


def test_a_model_that_does_not_load_is_one_line(home: Path, cli: CliRunner) -> None:
    code, output = export_cli(cli, "models:/nothing@champion", "--format", "wheel", "--out", "x")
    assert code == 1
    assert "nothing" in _one_line(output)
    code, output = export_cli(cli, "diabetes", "--format", "wheel", "--out", "x")
    assert code == 1
    assert "malformed model URI 'diabetes'" in _one_line(output)
    assert not Path("x").exists()


def test_a_non_empty_out_needs_force(
    registered: ModelVersion, cli: CliRunner, tmp_path: Path
) -> None:
    out = tmp_path / "dist"
    out.mkdir()
    (out / "old.txt").write_text("an earlier export")
    code, output = export_cli(cli, "models:/diabetes/1", "--format", "wheel", "--out", str(out))
    assert code == 1
    assert "is not empty" in _one_line(output) and "--force" in output
    assert [p.name for p in out.iterdir()] == ["old.txt"]  # untouched
    code, output = export_cli(
        cli, "models:/diabetes/1", "--format", "wheel", "--out", str(out), "--force"
    )
    assert code == 0, output
    assert sorted(p.name for p in out.iterdir()) == ["diabetes_model-1-py3-none-any.whl"]
    assert not [p for p in tmp_path.iterdir() if "-export-" in p.name]  # no staging left


def test_force_never_replaces_the_current_directory(
    registered: ModelVersion, tmp_path: Path
) -> None:
    (tmp_path / "keep.txt").write_text("work")  # the home fixture runs in tmp_path
    with pytest.raises(InvalidInput, match="holds the current directory"):
        export_model("models:/diabetes/1", format="wheel", out=tmp_path, force=True)
    with pytest.raises(InvalidInput, match="holds the current directory"):
        export_model("models:/diabetes/1", format="wheel", out=tmp_path.parent, force=True)
    assert (tmp_path / "keep.txt").read_text() == "work"


def test_an_empty_current_directory_is_exported_into_in_place(
    registered: ModelVersion, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = tmp_path / "work"
    here.mkdir()
    monkeypatch.chdir(here)
    inode = here.stat().st_ino
    done = export_model("models:/diabetes/1", format="lambda", out=".")
    assert done.artifact == here / "diabetes_model.zip" and done.artifact.is_file()
    assert here.stat().st_ino == inode  # the same folder: a shell standing in it sees the files
    assert sorted(p.name for p in here.iterdir()) == ["README.md", "diabetes_model.zip", "function"]


def test_an_out_that_cannot_be_written_is_one_line(
    registered: ModelVersion, cli: CliRunner, tmp_path: Path
) -> None:
    (tmp_path / "file").write_text("x")
    code, output = export_cli(
        cli, "models:/diabetes/1", "--format", "wheel", "--out", str(tmp_path / "file" / "dist")
    )
    assert code == 1
    assert "cannot write to --out" in _one_line(output)


def test_the_python_example_of_docs_export_runs(registered: ModelVersion, tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "export.md").read_text()
    example = re.search(r"```python\n(from keel.*?)```", text, re.DOTALL)
    assert example is not None
    exec(example.group(1), {})  # writes dist/ in the current directory (tmp_path)
    assert (tmp_path / "dist" / "diabetes_model-1-py3-none-any.whl").is_file()


def test_out_that_is_a_file_is_refused(registered: ModelVersion, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidInput, match="is a file"):
        export_model("models:/diabetes/1", format="docker", out=tmp_path / "file")


def test_help_shows_the_export_command(cli: CliRunner) -> None:
    from keel.cli import cli as keel_cli

    result = cli.invoke(keel_cli, ["models", "--help"])
    assert result.exit_code == 0
    assert "export" in result.output and "wheel, a Docker build context" in result.output
    result = cli.invoke(keel_cli, ["models", "export", "--help"])
    assert "--format wheel|docker|lambda" in result.output


# -- load_folder ---------------------------------------------------------------------------


def test_load_folder_checks_the_digest(registered: ModelVersion, tmp_path: Path) -> None:
    done = export_model("models:/diabetes/1", format="docker", out=tmp_path / "ctx")
    folder = done.out / "model"
    model = load_folder(folder, digest=registered.digest)
    assert model.digest == registered.digest and model.uri == str(folder)
    X, _ = diabetes()
    np.testing.assert_allclose(model.predict(X.head(ROWS)), expected_predictions(registered))
    assert load_folder(folder).digest == registered.digest  # hashed when not given
    with (folder / "model.joblib").open("ab") as changed:
        changed.write(b"\0")
    with pytest.raises(StorageError, match="were changed") as caught:
        load_folder(folder, digest=registered.digest)
    assert caught.value.context["expected"] == registered.digest


def test_load_folder_of_something_else_says_what_a_model_folder_is(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"has no keel-model\.json"):
        load_folder(tmp_path)
    with pytest.raises(InvalidInput, match="is not a folder"):
        load_folder(tmp_path / "missing")
