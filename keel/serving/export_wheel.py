"""A model as a pip-installable wheel (``keel models export --format wheel``).

The wheel is written here, per the binary distribution format (PyPA "Binary distribution
format", PEP 427/491), with no build backend and no network: a top-level package whose
``__init__.py`` is :mod:`keel.serving.export_templates.wheel_package` (``predict`` and
``metadata``), ``keel-export.json`` and the model's files as package data, then the
``.dist-info`` folder with ``METADATA`` (``Requires-Dist`` pinning keel and the model's
recorded requirements), ``WHEEL`` and ``RECORD`` (the SHA-256 and size of every file). Entries
carry a fixed timestamp, so exporting the same model twice gives the same bytes.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import zipfile
from pathlib import Path

from keel.errors import InvalidInput
from keel.serving.export_bundle import (
    EXPORT_FILE,
    MODEL_FOLDER,
    ExportedModel,
    Progress,
    copy_stream,
    keel_requirement,
)

__all__ = ["build_wheel", "package_name", "package_version"]

_TEMPLATE = Path(__file__).parent / "export_templates" / "wheel_package.py"
_PACKAGE = re.compile(r"[a-z_][a-z0-9_]*")
_EPOCH = (1980, 1, 1, 0, 0, 0)  # zip's earliest date: the same bytes on every export
_FILE_MODE = 0o644 << 16


def package_name(model: ExportedModel, name: str | None = None) -> str:
    """The wheel's import package (and distribution) name: ``name``, else the registered
    model's name made an identifier with ``_model`` appended (``diabetes`` ->
    ``diabetes_model``), else ``model_<digest prefix>`` for a ``runs:/`` URI.

    Raises:
        InvalidInput: ``name`` is not a lower-case Python identifier.

    Example:
        >>> package_name(exported)  # doctest: +SKIP
        'diabetes_model'
    """
    if name is not None:
        if not _PACKAGE.fullmatch(name):
            raise InvalidInput(
                f"--name {name!r} is not a package name: use lower-case letters, digits and "
                "underscores, not starting with a digit (e.g. diabetes_model)",
                name=name,
            )
        return name
    if model.name is None:
        return f"model_{model.predictor.digest[:8]}"
    stem = re.sub(r"[^a-z0-9]+", "_", model.name.lower()).strip("_")
    return f"{stem}_model" if stem and not stem[0].isdigit() else f"model_{stem}"


def package_version(model: ExportedModel) -> str:
    """The wheel's version: the registered version number (``3``), else ``0+<digest prefix>``
    (a local version: pip installs it, an index refuses it)."""
    if model.version is not None:
        return str(model.version.version)
    return f"0+{model.predictor.digest[:12]}"


def build_wheel(
    model: ExportedModel, out: Path, *, package: str, progress: Progress | None = None
) -> Path:
    """Write ``<package>-<version>-py3-none-any.whl`` into the folder ``out``.

    Args:
        model: the model to embed.
        out: an existing folder.
        package: the import package's name (:func:`package_name`).
        progress: told how many bytes were written.

    Returns:
        The wheel's path.

    Example:
        >>> build_wheel(exported, Path("dist"), package="diabetes_model")  # doctest: +SKIP
        PosixPath('dist/diabetes_model-3-py3-none-any.whl')
    """
    version = package_version(model)
    dist_info = f"{package}-{version}.dist-info"
    path = out / f"{package}-{version}-py3-none-any.whl"
    info = model.info(format="wheel", package=package, package_version=version)
    records: list[tuple[str, str, str]] = []
    if progress is not None:
        progress.phase("writing the wheel", model.size())
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as wheel:
        _add(wheel, f"{package}/__init__.py", _TEMPLATE.read_bytes(), records)
        _add(wheel, f"{package}/{EXPORT_FILE}", _json_bytes(info), records)
        for relative, file in model.model_files():
            arcname = f"{package}/{MODEL_FOLDER}/{relative}"
            with file.open("rb") as reader, wheel.open(_entry(arcname), "w") as writer:
                sha256, size = copy_stream(reader, writer, progress=progress)
            records.append(_record(arcname, sha256, size))
        _add(wheel, f"{dist_info}/METADATA", _metadata(model, package, version), records)
        _add(wheel, f"{dist_info}/WHEEL", _wheel_file(), records)
        _add(wheel, f"{dist_info}/top_level.txt", f"{package}\n".encode(), records)
        records.append((f"{dist_info}/RECORD", "", ""))
        wheel.writestr(_entry(f"{dist_info}/RECORD"), _csv(records))
    return path


def _wheel_file() -> bytes:
    """``WHEEL``: a pure-Python wheel for any Python 3 (the model's Python is pinned by
    ``Requires-Python``)."""
    generator = keel_requirement().replace("==", " ")
    return (
        "Wheel-Version: 1.0\n"
        f"Generator: {generator} (keel models export)\n"
        "Root-Is-Purelib: true\n"
        "Tag: py3-none-any\n"
    ).encode()


def _metadata(model: ExportedModel, package: str, version: str) -> bytes:
    """``METADATA`` (core metadata 2.1): name, version, Python, pinned requirements, and a
    description saying how to use the package."""
    major, minor, *_ = model.python_version.split(".")
    uri = model.info()["uri"]
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {package}",
        f"Version: {version}",
        f"Summary: The Keel model {uri} as a package: predict(data) and metadata()",
        f"Requires-Python: =={major}.{minor}.*",
        *(f"Requires-Dist: {line}" for line in model.requirements()),
        "Description-Content-Type: text/markdown",
        "",
        f"# {package}",
        "",
        f"The Keel model `{uri}` (digest `{model.predictor.digest}`), exported by",
        "`keel models export --format wheel`.",
        "",
        "```python",
        f"import {package}",
        f"{package}.predict(rows)  # a DataFrame, dict of columns or list of row dicts",
        f"{package}.metadata()     # uri, version, digest, signature, requirements",
        "```",
        "",
    ]
    return "\n".join(lines).encode()


def _json_bytes(value: object) -> bytes:
    return (json.dumps(value, indent=2) + "\n").encode()


def _entry(arcname: str) -> zipfile.ZipInfo:
    entry = zipfile.ZipInfo(arcname, date_time=_EPOCH)
    entry.compress_type = zipfile.ZIP_DEFLATED
    entry.external_attr = _FILE_MODE
    return entry


def _add(
    wheel: zipfile.ZipFile, arcname: str, data: bytes, records: list[tuple[str, str, str]]
) -> None:
    with wheel.open(_entry(arcname), "w") as writer:
        sha256, size = copy_stream(io.BytesIO(data), writer)
    records.append(_record(arcname, sha256, size))


def _record(arcname: str, sha256_hex: str, size: int) -> tuple[str, str, str]:
    """A ``RECORD`` row: the path, ``sha256=`` and the urlsafe base64 digest without padding,
    the size."""
    encoded = base64.urlsafe_b64encode(bytes.fromhex(sha256_hex)).rstrip(b"=").decode()
    return arcname, f"sha256={encoded}", str(size)


def _csv(rows: list[tuple[str, str, str]]) -> str:
    """``RECORD``'s text: CSV rows (a path holding a comma is quoted)."""
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    return text.getvalue()
