"""``keel models export --format lambda``: the zip holds the function, and its handler, imported
from the unpacked zip in a separate process (read-only, no Keel home, as on Lambda), answers API
Gateway REST (payload 1.0) and HTTP API (payload 2.0) events with the model's own predictions,
and bad input with a JSON error."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from keel.models.models import ModelVersion
from tests.models.training import diabetes
from tests.serving.test_export import (
    ROWS,
    expected_predictions,
    export_cli,
    isolated_env,
    registered,
)

__all__ = ["registered"]  # the fixture, shared with test_export.py


@pytest.fixture
def package(registered: ModelVersion, cli: CliRunner, tmp_path: Path) -> Path:
    out = tmp_path / "lambda"
    code, output = export_cli(
        cli, "models:/diabetes@champion", "--format", "lambda", "--out", str(out)
    )
    assert code == 0, output
    return out


def test_the_zip_holds_the_function(package: Path, registered: ModelVersion) -> None:
    function = package / "function"
    files = sorted(p.relative_to(function).as_posix() for p in function.rglob("*") if p.is_file())
    assert files == [
        "handler.py",
        "keel-export.json",
        "model/input_example.parquet",
        "model/keel-model.json",
        "model/model.joblib",
        "requirements.txt",
    ]
    with zipfile.ZipFile(package / "diabetes_model.zip") as zipped:
        assert zipped.namelist() == files
        for name in files:
            assert zipped.read(name) == (function / name).read_bytes(), name
    info = json.loads((function / "keel-export.json").read_text())
    assert (info["digest"], info["handler"]) == (registered.digest, "handler.handler")
    requirements = (function / "requirements.txt").read_text().splitlines()
    assert requirements[0].startswith("keel==") and all("==" in line for line in requirements)
    readme = (package / "README.md").read_text()
    assert "--handler handler.handler" in readme and "250 MB" in readme


def _v1(method: str, body: str | None, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """An API Gateway REST API (payload 1.0) proxy event, as AWS sends it."""
    return {
        "resource": "/predict",
        "path": "/predict",
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in (headers or {}).items()},
        "queryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/predict",
            "httpMethod": method,
            "path": "/prod/predict",
            "stage": "prod",
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
        },
        "body": body,
        "isBase64Encoded": False,
    }


def _v2(
    method: str, body: str | None, headers: dict[str, str] | None = None, *, b64: bool = False
) -> dict[str, Any]:
    """An HTTP API (payload 2.0) event: lower-case headers, the method under requestContext."""
    return {
        "version": "2.0",
        "routeKey": f"{method} /predict",
        "rawPath": "/predict",
        "rawQueryString": "",
        "headers": {k.lower(): v for k, v in (headers or {}).items()},
        "requestContext": {
            "http": {"method": method, "path": "/predict", "protocol": "HTTP/1.1"},
            "requestId": "JKJaXmPLvHcESHA=",
            "stage": "$default",
        },
        "body": body,
        "isBase64Encoded": b64,
    }


@pytest.mark.slow
def test_the_handler_answers_api_gateway_events(
    package: Path, registered: ModelVersion, tmp_path: Path
) -> None:
    task = tmp_path / "var-task"  # Lambda unpacks the zip read-only into /var/task
    with zipfile.ZipFile(package / "diabetes_model.zip") as zipped:
        zipped.extractall(task)
    X, _ = diabetes()
    rows = X.head(ROWS)
    records = json.dumps({"records": rows.to_dict("records")})
    columns = json.dumps({"columns": rows.to_dict("list")})
    as_json = {"Content-Type": "application/json"}
    events = {
        "v1 records": _v1("POST", records, as_json),
        "v2 columns base64": _v2("POST", base64.b64encode(columns.encode()).decode(), b64=True),
        "v2 csv": _v2("POST", rows.to_csv(index=False), {"Content-Type": "text/csv"}),
        "direct": {"records": rows.to_dict("records")},
        "v1 get": _v1("GET", None),
        "v2 missing column": _v2("POST", json.dumps({"records": [{"age": 0.1}]}), as_json),
        "v1 not json": _v1("POST", "{rows", as_json),
        "v2 bad base64": _v2("POST", "###", b64=True),
        "v2 xml": _v2("POST", "<rows/>", {"Content-Type": "application/xml"}),
        "v1 put": _v1("PUT", records),
        "not http": {"detail-type": "Scheduled Event"},
    }
    (tmp_path / "events.json").write_text(json.dumps(events))
    for path in [task, *task.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    script = f"""
import json, sys
import handler
events = json.load(open({str(tmp_path / "events.json")!r}))
class Context:
    aws_request_id = "8f5e-request"
answers = {{name: handler.handler(event, Context()) for name, event in events.items()}}
print(json.dumps({{"answers": answers, "loads": handler.model.cache_info().misses}}))
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=task,
        env=isolated_env(tmp_path, PYTHONPATH=str(task)),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["loads"] == 1  # once per container, however many events
    answers = result["answers"]
    expected = expected_predictions(registered)
    for name in ("v1 records", "v2 columns base64", "v2 csv", "direct"):
        answer = answers[name]
        assert answer["statusCode"] == 200, (name, answer)
        assert answer["headers"]["Content-Type"] == "application/json"
        body = json.loads(answer["body"])
        np.testing.assert_allclose(body["predictions"], expected, err_msg=name)
        assert body["request_id"] == "8f5e-request"
    meta = json.loads(answers["v1 get"]["body"])
    assert answers["v1 get"]["statusCode"] == 200
    assert (meta["uri"], meta["digest"]) == ("models:/diabetes/1", registered.digest)
    errors = {name: (a["statusCode"], json.loads(a["body"])) for name, a in answers.items()}
    assert errors["v2 missing column"][0] == 422
    assert errors["v2 missing column"][1]["column"] == "sex"
    assert errors["v1 not json"][0] == 422
    assert "not valid JSON" in errors["v1 not json"][1]["message"]
    assert errors["v2 bad base64"][0] == 400
    assert "not base64" in errors["v2 bad base64"][1]["message"]
    assert errors["v2 xml"][0] == 415
    assert errors["v1 put"][0] == 405
    assert errors["not http"][0] == 400
    assert "not an API Gateway request" in errors["not http"][1]["message"]
