"""The servers compared by benchmarks/serving_vs_peers.py: how each is prepared, started, asked
and read, and the virtualenvs the peers run in.

Every peer serves the same joblib file written by ``_serving_side.py train``, in the form its
own documentation uses: MLflow a folder from ``mlflow.sklearn.save_model``, BentoML its model
store, Keel a version logged and registered in a temporary ``KEEL_HOME``. Bodies are records in
each tool's own shape (``{"records": [...]}``, MLflow's ``{"dataframe_records": [...]}``),
except BentoML with batching, which takes arrays (see ``_serving_bento.py``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SIDE = HERE / "_serving_side.py"
VENVS = HERE / ".venvs"
KEEL_PYTHON = Path(sys.executable)
MLFLOW_VENV = VENVS / "mlflow"
BENTOML_VENV = VENVS / "bentoml"
BENTOML_SPEC = "bentoml==1.4.39"
# the same scikit-learn, numpy and pandas as Keel's venv, so the one pickle scores alike
SHARED = ("scikit-learn", "numpy", "pandas")


@dataclasses.dataclass(frozen=True)
class Launch:
    """How to start one server: argv, working folder and environment."""

    argv: list[str]
    cwd: Path
    env: dict[str, str]


@dataclasses.dataclass(frozen=True)
class Peer:
    """One server under test."""

    name: str  # as given to --only
    title: str  # as shown in the tables
    python: Path  # the interpreter of its virtualenv
    predict_path: str
    health_path: str
    body_key: str  # the JSON key holding the rows
    launch: Callable[[Path, Path, int], Launch]  # (model folder, workdir, port)
    prepare: Callable[[Path, Path], None] | None = None  # (model folder, workdir)
    answer: Callable[[Any], Any] = lambda body: body["predictions"]
    arrays: bool = False  # rows as lists of values (columns in order) instead of records

    def body(self, records: list[dict[str, float]]) -> bytes:
        rows = [list(record.values()) for record in records] if self.arrays else records
        return json.dumps({self.body_key: rows}).encode()


def clean_env(bin_dir: Path, extra: dict[str, str]) -> dict[str, str]:
    """The calling environment minus every tool's settings, with ``bin_dir`` first on PATH
    (``mlflow models serve`` exits 127 without its venv's bin on PATH: FINDINGS, Serving)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("KEEL_", "MLFLOW_", "BENTOML_", "VIRTUAL_ENV", "PYTHON"))
    }
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def run_side(
    python: Path,
    args: list[str | Path],
    env: dict[str, str],
    cwd: Path,
    *,
    cpus: str | None = None,
) -> str:
    """Run a ``_serving_side.py`` step in ``python``'s venv (pinned to ``cpus`` when given);
    its stdout.

    Raises:
        RuntimeError: the step failed (with the tail of its stderr).
    """
    pin = ["taskset", "-c", cpus] if cpus else []
    done = subprocess.run(
        [*pin, str(python), str(SIDE), *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{SIDE.name} {args[0]} failed:\n{done.stderr[-3000:]}")
    return done.stdout


# --- FastAPI: the thin-wrapper reference -------------------------------------------------------


def _fastapi_launch(model: Path, workdir: Path, port: int) -> Launch:
    argv = [
        str(KEEL_PYTHON), "-m", "uvicorn", "_serving_fastapi:app", "--app-dir", str(HERE),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    env = clean_env(KEEL_PYTHON.parent, {"BENCH_MODEL": str(model / "model.joblib")})
    return Launch(argv, workdir, env)


# --- MLflow --------------------------------------------------------------------------------------


def _mlflow_env(workdir: Path) -> dict[str, str]:
    return clean_env(
        MLFLOW_VENV / "bin",
        {
            "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "true",
        },
    )


def _mlflow_prepare(model: Path, workdir: Path) -> None:
    run_side(
        MLFLOW_VENV / "bin" / "python",
        ["mlflow", model, workdir / "model"],
        _mlflow_env(workdir),
        workdir,
    )


def _mlflow_launch(model: Path, workdir: Path, port: int) -> Launch:
    argv = [
        str(MLFLOW_VENV / "bin" / "mlflow"), "models", "serve", "-m", str(workdir / "model"),
        "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1",
    ]  # fmt: skip
    return Launch(argv, workdir, _mlflow_env(workdir))


# --- BentoML -------------------------------------------------------------------------------------


def _bentoml_env(workdir: Path) -> dict[str, str]:
    return clean_env(
        BENTOML_VENV / "bin",
        {"BENTOML_HOME": str(workdir / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"},
    )


def _bentoml_prepare(model: Path, workdir: Path) -> None:
    shutil.copy(HERE / "_serving_bento.py", workdir / "service.py")
    run_side(BENTOML_VENV / "bin" / "python", ["bentoml", model], _bentoml_env(workdir), workdir)


def _bentoml_launch(service: str) -> Callable[[Path, Path, int], Launch]:
    def launch(model: Path, workdir: Path, port: int) -> Launch:
        argv = [
            str(BENTOML_VENV / "bin" / "bentoml"), "serve", f"service:{service}",
            "--host", "127.0.0.1", "--port", str(port),
        ]  # fmt: skip
        return Launch(argv, workdir, _bentoml_env(workdir))

    return launch


# --- Keel ----------------------------------------------------------------------------------------


def _keel_env(workdir: Path) -> dict[str, str]:
    return clean_env(KEEL_PYTHON.parent, {"KEEL_HOME": str(workdir / "keel-home")})


def _keel_prepare(model: Path, workdir: Path) -> None:
    run_side(KEEL_PYTHON, ["keel", model], _keel_env(workdir), workdir)


def _keel_launch(*options: str) -> Callable[[Path, Path, int], Launch]:
    def launch(model: Path, workdir: Path, port: int) -> Launch:
        argv = [
            str(KEEL_PYTHON.parent / "keel"), "serve", "models:/diabetes@champion",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1", *options,
        ]  # fmt: skip
        return Launch(argv, workdir, _keel_env(workdir))

    return launch


PEERS = {
    peer.name: peer
    for peer in (
        Peer(
            "fastapi", "FastAPI thin wrapper", KEEL_PYTHON, "/predict", "/health", "records",
            _fastapi_launch,
        ),
        Peer(
            "mlflow", "mlflow models serve", MLFLOW_VENV / "bin" / "python", "/invocations",
            "/ping", "dataframe_records", _mlflow_launch, _mlflow_prepare,
        ),
        Peer(
            "bentoml", "bentoml serve", BENTOML_VENV / "bin" / "python", "/predict", "/readyz",
            "records", _bentoml_launch("Diabetes"), _bentoml_prepare, lambda body: body,
        ),
        Peer(
            "bentoml-batching", "bentoml serve, batchable", BENTOML_VENV / "bin" / "python",
            "/predict", "/readyz", "rows", _bentoml_launch("DiabetesBatched"),
            _bentoml_prepare, lambda body: body, arrays=True,
        ),
        Peer(
            "keel", "keel serve", KEEL_PYTHON, "/predict", "/ready", "records", _keel_launch(),
            _keel_prepare,
        ),
        Peer(
            "keel-nolog", "keel serve --no-log-predictions", KEEL_PYTHON, "/predict", "/ready",
            "records", _keel_launch("--no-log-predictions"), _keel_prepare,
        ),
    )
}  # fmt: skip


# --- virtualenvs ---------------------------------------------------------------------------------


def _uv() -> str:
    uv = KEEL_PYTHON.parent / "uv"
    found = str(uv) if uv.exists() else shutil.which("uv")
    if found is None:
        sys.exit("uv not found beside the interpreter or on PATH: pip install uv")
    return found


def _version(python: Path, package: str) -> str | None:
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def _pins() -> list[str]:
    """Keel's venv's versions of the libraries the pickled model needs."""
    return [f"{name}=={_version(KEEL_PYTHON, name)}" for name in SHARED]


def ensure_venvs(names: set[str]) -> None:
    """MLflow's venv (shared with the other MLflow benchmarks) and BentoML's, created with uv
    when missing, each with Keel's versions of scikit-learn, numpy and pandas."""
    if "mlflow" in names:
        from tracking_vs_mlflow import ensure_mlflow_venv

        ensure_mlflow_venv()
        _ensure_packages(MLFLOW_VENV, _pins())
    if names & {"bentoml", "bentoml-batching"}:
        if not (BENTOML_VENV / "bin" / "python").exists():
            print(f"Creating {BENTOML_VENV.relative_to(REPO)}", flush=True)
            subprocess.run([_uv(), "venv", str(BENTOML_VENV), "--python", sys.executable],
                           check=True)  # fmt: skip
        _ensure_packages(BENTOML_VENV, [BENTOML_SPEC, *_pins()])


def _ensure_packages(venv: Path, specs: list[str]) -> None:
    python = venv / "bin" / "python"
    missing = [s for s in specs if _version(python, s.split("==")[0]) != s.split("==")[1]]
    if missing:
        print(f"Installing {' '.join(missing)} into {venv.relative_to(REPO)}", flush=True)
        subprocess.run([_uv(), "pip", "install", "--python", str(python), *missing], check=True)


def versions(names: set[str]) -> dict[str, str | None]:
    """The versions that matter to the comparison, read from each venv."""
    found: dict[str, str | None] = {
        "keel": _version(KEEL_PYTHON, "keel"),
        "fastapi": _version(KEEL_PYTHON, "fastapi"),
        "uvicorn": _version(KEEL_PYTHON, "uvicorn"),
        "scikit-learn": _version(KEEL_PYTHON, "scikit-learn"),
    }
    if "mlflow" in names:
        found["mlflow"] = _version(MLFLOW_VENV / "bin" / "python", "mlflow")
    if names & {"bentoml", "bentoml-batching"}:
        found["bentoml"] = _version(BENTOML_VENV / "bin" / "python", "bentoml")
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()
    found["wrk"] = wrk[1] if len(wrk) > 1 else None
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "keel"], capture_output=True, text=True
    ).stdout.strip()
    found["keel_commit"] = f"{commit}{' + uncommitted keel/ changes' if dirty else ''}"
    return found
