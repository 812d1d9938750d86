"""``keel models export --format docker``: the build context is complete, and the command its
image runs serves the exported model over real HTTP. Docker itself is not available to the
tests, so the container's ``CMD`` and ``HEALTHCHECK`` are run as they are written, with the
model folder's path and the port mapped onto the exported context."""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version as installed
from pathlib import Path

import httpx
import numpy as np
import pytest
from click.testing import CliRunner

import keel.models
from keel.models.models import ModelVersion
from keel.models.packaging import local_folder_digest
from keel.serving.export import Export, export_model
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
def context(registered: ModelVersion, tmp_path: Path) -> Export:
    return export_model("models:/diabetes@champion", format="docker", out=tmp_path / "ctx")


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of a Dockerfile, continuation lines joined, comments out."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_the_context_holds_everything_the_dockerfile_needs(
    context: Export, registered: ModelVersion, cli: CliRunner, tmp_path: Path
) -> None:
    out = context.out
    assert context.artifact == out / "Dockerfile"
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == [
        ".dockerignore",
        "Dockerfile",
        "README.md",
        "keel-export.json",
        "model/input_example.parquet",
        "model/keel-model.json",
        "model/model.joblib",
        "requirements.txt",
        "wheels/README.txt",
    ]
    steps = instructions(out / "Dockerfile")
    kinds = [kind for kind, _ in steps]
    args = dict(steps)  # the last of each kind
    # the base is the Python the model was logged with (this process), pinned to the patch
    assert steps[0] == ("FROM", f"python:{platform.python_version()}-slim")
    assert args["USER"] == "keel"  # not root
    assert any(a.startswith("useradd") and a.endswith(" keel") for k, a in steps if k == "RUN")
    assert kinds.index("USER") > max(i for i, k in enumerate(kinds) if k in ("RUN", "COPY"))
    assert json.loads(args["CMD"]) == [
        "keel",
        "serve",
        "/app/model",
        "--host",
        "0.0.0.0",
        "--port",
        "8080",
    ]
    assert "http://127.0.0.1:8080/health" in args["HEALTHCHECK"]
    assert args["EXPOSE"] == "8080"
    pip = next(a for k, a in steps if k == "RUN" and "pip install" in a)
    assert "-r requirements.txt" in pip
    # every COPY source is in the context and let through by .dockerignore
    allowed = {
        line[1:].rstrip("/")
        for line in (out / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    sources = {a.split()[0].rstrip("/") for k, a in steps if k == "COPY"}
    assert sources == {"requirements.txt", "wheels", "model", "keel-export.json"}
    assert sources <= allowed and all((out / s).exists() for s in sources)
    assert "*" in (out / ".dockerignore").read_text().splitlines()
    # requirements: keel and the model's recorded ones, every one pinned
    lines = [
        line
        for line in (out / "requirements.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    manifest = keel.models.load("models:/diabetes/1").manifest
    assert lines == [f"keel=={installed('keel')}", *manifest.requirements]
    assert all(re.fullmatch(r"[a-z0-9-]+==[0-9][^ ]*", line) for line in lines), lines
    # the model folder is exactly the registered one
    assert local_folder_digest(out / "model") == registered.digest
    info = json.loads((out / "keel-export.json").read_text())
    assert (info["uri"], info["digest"], info["format"]) == (
        "models:/diabetes/1",
        registered.digest,
        "docker",
    )
    readme = (out / "README.md").read_text()
    assert "docker build -t diabetes_model:1 ." in readme
    # the CLI writes the same context
    code, output = export_cli(
        cli, "models:/diabetes/1", "--format", "docker", "--out", str(tmp_path / "again")
    )
    assert code == 0, output
    assert (tmp_path / "again" / "Dockerfile").read_bytes() == (out / "Dockerfile").read_bytes()


@contextmanager
def running(argv: list[str], env: dict[str, str], port: int) -> Iterator[subprocess.Popen[str]]:
    """``argv`` running until the block ends; ready once ``/health`` answers on ``port``."""
    process = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 180  # imports keel, sklearn and the model on a busy CI
        while True:
            if process.poll() is not None:
                break  # the caller reads why
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server never answered /health"
            time.sleep(0.1)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=30)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def container_argv(out: Path, argv: list[str], port: int) -> list[str]:
    """The container's command with /app mapped onto the context and its port onto ``port``;
    ``keel`` and ``python`` are this environment's (what the image installs)."""
    bin_dir = Path(sys.executable).parent
    mapped = [a.replace("/app/", f"{out}/").replace("8080", str(port)) for a in argv]
    if mapped[0] in ("keel", "python"):
        mapped[0] = str(bin_dir / mapped[0]) if mapped[0] == "keel" else sys.executable
    return mapped


def check_serving(context: Export, registered: ModelVersion, port: int) -> None:
    """The container's HEALTHCHECK passes, and /predict and /metadata answer for the model."""
    healthcheck = dict(instructions(context.out / "Dockerfile"))["HEALTHCHECK"]
    probe = json.loads(healthcheck.split("CMD ", 1)[1])
    health = subprocess.run(
        container_argv(context.out, probe, port), capture_output=True, text=True, timeout=60
    )
    assert health.returncode == 0, health.stderr
    X, _ = diabetes()
    rows = X.head(ROWS)
    base = f"http://127.0.0.1:{port}"
    answer = httpx.post(f"{base}/predict", json={"records": rows.to_dict("records")}, timeout=30)
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose(answer.json()["predictions"], expected_predictions(registered))
    refused = httpx.post(f"{base}/predict", json={"records": [{"age": 0.1}]}, timeout=30)
    assert refused.status_code == 422 and "sex" in refused.text
    assert httpx.get(f"{base}/metadata", timeout=30).json()["digest"] == registered.digest


@pytest.mark.slow
def test_the_images_command_serves_the_exported_model(
    context: Export, registered: ModelVersion, tmp_path: Path
) -> None:
    """The image's CMD run as written (the model folder mapped onto the context), with a new
    empty KEEL_HOME as in the image: the server needs no store or registry; its HEALTHCHECK
    passes and its predictions are the model's own."""
    port = free_port()
    argv = json.loads(dict(instructions(context.out / "Dockerfile"))["CMD"])
    env = isolated_env(tmp_path, KEEL_HOME=str(tmp_path / "container-home" / ".keel"))
    with running(container_argv(context.out, argv, port), env, port) as process:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        check_serving(context, registered, port)
