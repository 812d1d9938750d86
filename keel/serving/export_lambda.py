"""A model as an AWS Lambda function package (``keel models export --format lambda``).

``out/function/`` holds ``handler.py`` (:mod:`keel.serving.export_templates.lambda_handler`,
``handler(event, context)`` for API Gateway REST and HTTP API events), ``keel-export.json``,
the ``model`` folder and ``requirements.txt``; ``out/<name>.zip`` is that folder's content at
the archive's root, with fixed timestamps (the same bytes on every export of the model), ready
to be joined with the installed requirements; ``out/README.md`` says how to deploy it.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

from keel.serving.export_bundle import MODEL_FOLDER, ExportedModel, Progress, copy_stream

__all__ = ["FUNCTION_FOLDER", "HANDLER", "write_lambda_package"]

FUNCTION_FOLDER = "function"
HANDLER = "handler.handler"
"""The function's handler setting (``handler.py``'s ``handler``)."""

_TEMPLATE = Path(__file__).parent / "export_templates" / "lambda_handler.py"
_EPOCH = (1980, 1, 1, 0, 0, 0)
_FILE_MODE = 0o644 << 16


def write_lambda_package(
    model: ExportedModel, out: Path, *, name: str, progress: Progress | None = None
) -> Path:
    """Write ``out/function/``, ``out/<name>.zip`` and ``out/README.md`` into the empty folder
    ``out``.

    Args:
        model: the model to score.
        out: an existing empty folder.
        name: the zip's stem and the function name the README uses.
        progress: told how many bytes of model were copied.

    Returns:
        The zip's path.

    Example:
        >>> write_lambda_package(exported, Path("build"), name="diabetes")  # doctest: +SKIP
        PosixPath('build/diabetes.zip')
    """
    function = out / FUNCTION_FOLDER
    function.mkdir()
    model.copy_model(function / MODEL_FOLDER, progress=progress)
    shutil.copyfile(_TEMPLATE, function / "handler.py")
    model.write_info(function, format="lambda", handler=HANDLER)
    lines = model.requirements()
    (function / "requirements.txt").write_text("".join(f"{line}\n" for line in lines))
    archive = out / f"{name}.zip"
    _zip(function, archive, progress=progress)
    (out / "README.md").write_text(_readme(model, name), encoding="utf-8")
    return archive


def _zip(folder: Path, archive: Path, *, progress: Progress | None) -> None:
    """``folder``'s files at the root of ``archive``, sorted, with fixed timestamps."""
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    if progress is not None:
        progress.phase("zipping the function", sum(path.stat().st_size for path in files))
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zipped:
        for path in files:
            entry = zipfile.ZipInfo(path.relative_to(folder).as_posix(), date_time=_EPOCH)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = _FILE_MODE
            with path.open("rb") as reader, zipped.open(entry, "w") as writer:
                copy_stream(reader, writer, progress=progress)


def _readme(model: ExportedModel, name: str) -> str:
    info = model.info()
    major, minor, *_ = model.python_version.split(".")
    runtime = f"python{major}.{minor}"
    return f"""# {info["uri"]} as an AWS Lambda function

Written by `keel models export --format lambda`. `{FUNCTION_FOLDER}/handler.py` answers API
Gateway REST API (payload 1.0) and HTTP API (payload 2.0) events, and direct invocations:

- `POST` with `{{"records": [...]}}` or `{{"columns": {{...}}}}` (or CSV / Arrow IPC by
  `Content-Type`; base64 bodies when `isBase64Encoded`) -> 200 `{{"predictions": [...]}}`
- `GET` -> 200, the model's metadata (`keel-export.json`)
- input the signature refuses -> 422 naming the field; unknown content type -> 415;
  an event without a body or a body that is not base64 -> 400

The model is loaded on the first request of each container and kept for the next ones.

## Deploy as a zip (runtime `{runtime}`, handler `{HANDLER}`)

`{name}.zip` holds the handler, the model and `keel-export.json`; add the requirements
(`{FUNCTION_FOLDER}/requirements.txt`, pinned) built for Lambda's Linux:

```sh
pip install -r {FUNCTION_FOLDER}/requirements.txt --target package \\
    --platform manylinux2014_x86_64 --implementation cp --python-version {major}.{minor} \\
    --only-binary=:all:
(cd package && zip -qr ../{name}.zip .)
aws lambda create-function --function-name {name} --runtime {runtime} \\
    --handler {HANDLER} --zip-file fileb://{name}.zip --memory-size 1024 --timeout 30 \\
    --role arn:aws:iam::ACCOUNT:role/ROLE
```

A zip deployment may hold at most 250 MB unzipped; keel with numpy, pandas, pyarrow and the
model's framework usually exceeds it. Then build a container image instead (up to 10 GB):

```dockerfile
FROM public.ecr.aws/lambda/python:{major}.{minor}
COPY {FUNCTION_FOLDER}/requirements.txt ./
RUN pip install -r requirements.txt
COPY {FUNCTION_FOLDER}/ ${{LAMBDA_TASK_ROOT}}/
CMD ["{HANDLER}"]
```

Put the function behind an API Gateway REST or HTTP API route (`POST /predict`, `GET /`).
"""
