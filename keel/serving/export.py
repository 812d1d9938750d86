"""``export_model``: a logged or registered model as something other infrastructure runs.

Three formats, each written with the model's files (exactly the logged folder, its digest
checked) and ``keel-export.json`` naming the model:

- ``wheel``: a pip-installable package with ``predict(data)`` and ``metadata()``
  (:mod:`keel.serving.export_wheel`), the model as a dependency of another Python service;
- ``docker``: a build context whose image runs ``keel serve`` (:mod:`keel.serving.export_docker`);
- ``lambda``: an AWS Lambda function package for API Gateway (:mod:`keel.serving.export_lambda`).

Everything is written into a staging folder beside ``out`` and renamed into place when
complete, so a failed export leaves nothing half-written, and an existing non-empty ``out`` is
only replaced with ``force``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from keel.errors import InvalidInput
from keel.models.api import get_version
from keel.models.loading import load, load_version
from keel.models.uris import ModelsUri, parse_model_uri
from keel.serving.export_bundle import ExportedModel, Progress
from keel.serving.export_docker import write_docker_context
from keel.serving.export_lambda import write_lambda_package
from keel.serving.export_wheel import build_wheel, package_name

__all__ = ["FORMATS", "Export", "export_model", "resolve"]

FORMATS = ("wheel", "docker", "lambda")


@dataclass(frozen=True)
class Export:
    """What :func:`export_model` wrote.

    Attributes:
        format: ``wheel``, ``docker`` or ``lambda``.
        out: the folder written.
        artifact: the main file: the wheel, the ``Dockerfile`` or the Lambda zip.
        uri: the model's URI (``models:/NAME/VERSION`` once resolved).
        digest: the model folder's digest.
        name: the package, image or function name used.
    """

    format: str
    out: Path
    artifact: Path
    uri: str
    digest: str
    name: str


def resolve(uri: str) -> ExportedModel:
    """Load the model at ``uri`` (resolving an alias once) for export.

    Raises:
        KeelError: the URI is malformed or names nothing loadable (see
            :func:`keel.models.load`).
    """
    parsed = parse_model_uri(uri)
    if isinstance(parsed, ModelsUri):
        version = get_version(parsed.name, parsed.selector)
        return ExportedModel(load_version(version, uri=version.uri), version)
    return ExportedModel(load(uri))


def export_model(
    uri: str,
    *,
    format: str,
    out: str | Path,
    name: str | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> Export:
    """Export the model at ``uri`` as a wheel, a Docker build context or a Lambda package.

    Args:
        uri: ``models:/NAME/VERSION``, ``models:/NAME@ALIAS`` or ``runs:/RUN_ID/PATH``.
        format: ``wheel``, ``docker`` or ``lambda``.
        out: the folder to write; it must not exist or be empty, unless ``force``.
        name: the package name (default ``<model name>_model``), used as the image and
            function name too.
        force: replace the content of a non-empty ``out``.
        progress: where to report the bytes copied.

    Returns:
        An :class:`Export` naming what was written.

    Raises:
        InvalidInput: an unknown format, a bad ``name``, ``out`` is a file or a non-empty
            folder without ``force``, or ``force`` on a folder holding the current directory.
        NotFound: no such model, version or alias.
        StorageError: the model's files do not match their digest.
        MissingExtra: the model's framework is not installed (it is loaded to check it).

    Example:
        >>> export_model("models:/diabetes@champion", format="wheel", out="dist")
        ... # doctest: +SKIP
        Export(format='wheel', out=PosixPath('dist'), artifact=PosixPath(
            'dist/diabetes_model-3-py3-none-any.whl'), ...)
    """
    if format not in FORMATS:
        raise InvalidInput(
            f"unknown export format {format!r}: use {', '.join(FORMATS)}", format=format
        )
    target = Path(out).absolute()
    _check_out(target, force=force)
    if progress is not None:
        progress.phase(f"loading {uri}", None)
    model = resolve(uri)
    chosen = package_name(model, name)
    with _staging(target) as staging:
        if format == "wheel":
            artifact = build_wheel(model, staging, package=chosen, progress=progress)
        elif format == "docker":
            artifact = write_docker_context(model, staging, image=chosen, progress=progress)
        else:
            artifact = write_lambda_package(model, staging, name=chosen, progress=progress)
    return Export(
        format=format,
        out=target,
        artifact=target / artifact.relative_to(staging),
        uri=model.info()["uri"],
        digest=model.predictor.digest,
        name=chosen,
    )


def _check_out(target: Path, *, force: bool) -> None:
    """Refuse an ``out`` that is a file, non-empty without ``force``, or (with ``force``) one
    holding the current directory, a home or a root, whose removal would lose far more than an
    old export."""
    if target.exists() and not target.is_dir():
        raise InvalidInput(f"--out {target} is a file; give a folder", out=str(target))
    if not target.is_dir() or not any(target.iterdir()):
        return
    if not force:
        raise InvalidInput(
            f"--out {target} is not empty; give an empty or new folder, or --force to replace "
            "its content",
            out=str(target),
        )
    cwd = Path.cwd().resolve()
    resolved = target.resolve()
    if resolved == Path(resolved.anchor) or resolved == Path.home().resolve():
        raise InvalidInput(f"--force will not replace {target}: give a folder of its own")
    if cwd == resolved or resolved in cwd.parents:
        raise InvalidInput(
            f"--force will not replace {target}: it holds the current directory; give a "
            "folder of its own",
            out=str(target),
        )


@contextmanager
def _staging(target: Path) -> Iterator[Path]:
    """A new folder beside ``target`` to write into. When the block completes, it becomes
    ``target``, or, if ``target`` is a folder already, its content replaces ``target``'s (the
    folder itself stays: it may be a shell's current directory); when it fails, it is removed
    and ``target`` is left as it was.

    Raises:
        InvalidInput: the staging folder cannot be made there (no permission, a file in the
            way).
    """
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-export-", dir=target.parent))
    except OSError as exc:
        raise InvalidInput(
            f"cannot write to --out {target}: {exc.strerror or exc}", out=str(target)
        ) from None
    try:
        yield staging
        if target.is_dir():
            for old in target.iterdir():
                if old.is_dir() and not old.is_symlink():
                    shutil.rmtree(old)
                else:
                    old.unlink()
            for new in staging.iterdir():
                new.rename(target / new.name)
        else:
            os.chmod(staging, 0o755)  # mkdtemp makes it 0700
            staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
