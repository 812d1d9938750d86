"""A model as a Docker build context that runs ``keel serve`` (``--format docker``).

The context holds the ``Dockerfile`` (a Python base image pinned at the exact version the model
was logged with, the pinned ``requirements.txt`` installed, the model folder copied read-only
for a non-root user, a ``HEALTHCHECK`` on ``/health``, and ``CMD keel serve <model folder>``),
``requirements.txt`` (keel and the model's recorded requirements), the ``model`` folder,
``keel-export.json``, a ``.dockerignore`` letting only those into the build, and a README.
"""

from __future__ import annotations

import json
from pathlib import Path

from keel.serving.export_bundle import EXPORT_FILE, MODEL_FOLDER, ExportedModel, Progress

__all__ = ["APP_FOLDER", "PORT", "WHEELS_FOLDER", "command", "healthcheck", "write_docker_context"]

APP_FOLDER = "/app"
"""Where the image keeps the model folder and ``keel-export.json``."""

PORT = 8080
"""The port ``keel serve`` listens on inside the container."""

WHEELS_FOLDER = "wheels"
"""Wheels pip may install from before the index (e.g. keel's, when the index has none)."""

_USER = "keel"
_UID = 10001


def command(model_folder: str = f"{APP_FOLDER}/{MODEL_FOLDER}") -> list[str]:
    """The container's command: ``keel serve`` on the model folder, on all interfaces.

    Example:
        >>> command()
        ['keel', 'serve', '/app/model', '--host', '0.0.0.0', '--port', '8080']
    """
    return ["keel", "serve", model_folder, "--host", "0.0.0.0", "--port", str(PORT)]


def healthcheck(port: int = PORT) -> list[str]:
    """The ``HEALTHCHECK`` command: ``GET /health`` with the image's own Python (a slim image
    has no curl); a non-2xx answer or no answer exits non-zero."""
    probe = (
        "import urllib.request; "
        f"urllib.request.urlopen('http://127.0.0.1:{port}/health', timeout=4)"
    )
    return ["python", "-c", probe]


def write_docker_context(
    model: ExportedModel, out: Path, *, image: str, progress: Progress | None = None
) -> Path:
    """Write the build context into the empty folder ``out``.

    Args:
        model: the model to serve.
        out: an existing empty folder.
        image: the image name the README's commands use.
        progress: told how many bytes of model were copied.

    Returns:
        The ``Dockerfile``'s path.

    Example:
        >>> write_docker_context(exported, Path("build"), image="diabetes")  # doctest: +SKIP
    """
    model.copy_model(out / MODEL_FOLDER, progress=progress)
    model.write_info(out, format="docker", image=image)
    (out / "requirements.txt").write_text(_requirements(model), encoding="utf-8")
    (out / ".dockerignore").write_text(_DOCKERIGNORE, encoding="utf-8")
    (out / WHEELS_FOLDER).mkdir()
    (out / WHEELS_FOLDER / "README.txt").write_text(_WHEELS_README, encoding="utf-8")
    (out / "README.md").write_text(_readme(model, image), encoding="utf-8")
    dockerfile = out / "Dockerfile"
    dockerfile.write_text(_dockerfile(model), encoding="utf-8")
    return dockerfile


def _requirements(model: ExportedModel) -> str:
    uri = model.info()["uri"]
    return (
        f"# {uri}: keel (which serves it) and the model's recorded requirements, pinned\n"
        + "".join(f"{line}\n" for line in model.requirements())
    )


def _dockerfile(model: ExportedModel) -> str:
    uri = model.info()["uri"]
    return f"""# {uri} served by keel serve; written by keel models export --format docker.
# Python {model.python_version}: the version the model was logged with.
FROM python:{model.python_version}-slim

ENV PYTHONDONTWRITEBYTECODE=1 \\
    PYTHONUNBUFFERED=1 \\
    PIP_NO_CACHE_DIR=1 \\
    PIP_DISABLE_PIP_VERSION_CHECK=1 \\
    KEEL_HOME=/home/{_USER}/.keel

RUN useradd --create-home --uid {_UID} --shell /usr/sbin/nologin {_USER}
WORKDIR {APP_FOLDER}
COPY requirements.txt ./
COPY {WHEELS_FOLDER}/ ./{WHEELS_FOLDER}/
RUN pip install --no-cache-dir --find-links ./{WHEELS_FOLDER} -r requirements.txt
# owned by root: the server reads the model and cannot change it
COPY {MODEL_FOLDER}/ {APP_FOLDER}/{MODEL_FOLDER}/
COPY {EXPORT_FILE} ./

USER {_USER}
EXPOSE {PORT}
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \\
    CMD {json.dumps(healthcheck())}
CMD {json.dumps(command())}
"""


_DOCKERIGNORE = f"""# only what the Dockerfile copies goes into the build
*
!Dockerfile
!requirements.txt
!{EXPORT_FILE}
!{MODEL_FOLDER}/
!{WHEELS_FOLDER}/
"""


_WHEELS_README = """Wheels in this folder are offered to pip beside the package index when
the image is built (pip install --find-links): put a keel wheel here when your index has none.
"""


def _readme(model: ExportedModel, image: str) -> str:
    info = model.info()
    return f"""# {info["uri"]} as a container

Written by `keel models export --format docker`. The image serves the model with `keel serve`
on port {PORT}: `POST /predict`, `GET /health`, `/ready`, `/metadata`.

```sh
docker build -t {image}:{info["version"] or "latest"} .
docker run --rm -p {PORT}:{PORT} {image}:{info["version"] or "latest"}
curl -s localhost:{PORT}/predict -H 'Content-Type: application/json' \\
  -d '{{"records": [{{...one row...}}]}}'
```

- Base image: `python:{model.python_version}-slim`, the Python the model was logged with.
- `requirements.txt`: keel and the model's recorded requirements, each pinned with `==`;
  their own dependencies are resolved by pip when the image is built.
- `model/`: the model's files, digest `{model.predictor.digest}` (`keel-export.json`).
- The server runs as the non-root user `{_USER}` (uid {_UID}); the model files belong to root.
- `HEALTHCHECK` asks `/health` every 30 s.

keel must be installable by the build: if your package index does not have
`{info["requirements"][0]}`, put a keel wheel of that version in `{WHEELS_FOLDER}/` (pip looks
there too), e.g. `pip wheel --no-deps -w {WHEELS_FOLDER} /path/to/keel/source`.
"""
