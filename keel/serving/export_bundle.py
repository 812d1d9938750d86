"""What every export format starts from: a loaded model, the registered version it came from,
the pip requirements it needs, and ``keel-export.json``, the file an exported package reads to
know which model it holds and what its files must hash to.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import IO, Any, Protocol

from keel.errors import InvalidInput, StorageError
from keel.models.loading import Predictor
from keel.models.models import ModelVersion
from keel.models.packaging import local_folder_digest
from keel.models.requirements import merge

__all__ = [
    "EXPORT_FILE",
    "MODEL_FOLDER",
    "ExportedModel",
    "Progress",
    "copy_stream",
    "keel_requirement",
]

EXPORT_FILE = "keel-export.json"
"""Beside the model folder in every export: which model it is and its digest."""

MODEL_FOLDER = "model"
"""The model's files (exactly the registered folder, ``keel-model.json`` included)."""

_CHUNK = 1 << 20


class Progress(Protocol):
    """Where long work reports how far it is (the CLI draws a progress bar)."""

    def phase(self, description: str, total: int | None) -> None:
        """A new step begins; ``total`` units of work (bytes), if known."""

    def advance(self, amount: int = 1) -> None:
        """``amount`` more units of the current step are done."""


class _NoProgress:
    def phase(self, description: str, total: int | None) -> None:
        pass

    def advance(self, amount: int = 1) -> None:
        pass


@dataclass(frozen=True)
class ExportedModel:
    """A model being exported.

    Attributes:
        predictor: the loaded model (its ``path`` is the checked cache folder).
        version: the registered version, when the URI was ``models:/``.
    """

    predictor: Predictor
    version: ModelVersion | None = None

    @property
    def name(self) -> str | None:
        """The registered model's name, or None for a ``runs:/`` URI."""
        return self.version.name if self.version is not None else None

    @property
    def python_version(self) -> str:
        """The Python version the model was logged with, e.g. ``3.11.7``."""
        return self.predictor.manifest.python_version

    def requirements(self) -> list[str]:
        """keel pinned at the version exporting, then the model's recorded requirements.

        Raises:
            InvalidInput: a recorded line is a pip option (``-e``, ``--index-url``), which
                neither a wheel's metadata nor a Dockerfile's pip line can carry as a pin.
        """
        lines = merge([keel_requirement()], self.predictor.manifest.requirements)
        options = [line for line in lines if line.startswith("-")]
        if options:
            raise InvalidInput(
                f"the model's recorded requirements hold pip options {options}, which an "
                "export cannot pin; log the model again with plain requirements "
                "(log_model(..., requirements=['name==version']))",
                requirements=options,
            )
        return lines

    def info(self, **extra: Any) -> dict[str, Any]:
        """``keel-export.json``'s content: the model, its digest, signature and requirements,
        plus ``extra`` (the format, a wheel's package name...). Nothing in it changes between
        two exports of the same model, so exports are reproducible."""
        manifest = self.predictor.manifest
        signature = manifest.signature
        return {
            "format_version": 1,
            "uri": self.version.uri if self.version is not None else self.predictor.uri,
            "name": self.name,
            "version": self.version.version if self.version is not None else None,
            "source": self.version.source if self.version is not None else self.predictor.uri,
            "digest": self.predictor.digest,
            "flavor": manifest.flavor,
            "model_class": manifest.model_class,
            "run_id": manifest.run_id,
            "signature": signature.model_dump(mode="json") if signature is not None else None,
            "python_version": manifest.python_version,
            "requirements": self.requirements(),
            "model_folder": MODEL_FOLDER,
            **extra,
        }

    def write_info(self, folder: Path, **extra: Any) -> Path:
        """Write ``keel-export.json`` into ``folder``."""
        path = folder / EXPORT_FILE
        path.write_text(json.dumps(self.info(**extra), indent=2) + "\n", encoding="utf-8")
        return path

    def model_files(self) -> list[tuple[str, Path]]:
        """``(relative path, file)`` for each of the model's files, sorted."""
        root = self.predictor.path
        return sorted(
            (path.relative_to(root).as_posix(), path) for path in root.rglob("*") if path.is_file()
        )

    def size(self) -> int:
        """The model files' total size in bytes."""
        return sum(path.stat().st_size for _, path in self.model_files())

    def copy_model(self, dst: Path, *, progress: Progress | None = None) -> Path:
        """Copy the model's files into the new folder ``dst`` and check that they hash to the
        model's digest.

        Raises:
            StorageError: the copy hashes to another digest (the cache folder was changed).
        """
        progress = progress or _NoProgress()
        progress.phase("copying the model", self.size())
        for relative, source in self.model_files():
            target = dst / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with source.open("rb") as reader, target.open("wb") as writer:
                copy_stream(reader, writer, progress=progress)
        written = local_folder_digest(dst)
        if written != self.predictor.digest:
            raise StorageError(
                f"the model's files in {self.predictor.path} hash to {written}, not to the "
                f"model's digest {self.predictor.digest}; delete that folder and export again "
                "(it is downloaded anew)",
                expected=self.predictor.digest,
                actual=written,
            )
        return dst


def copy_stream(
    reader: IO[bytes], writer: IO[bytes], *, progress: Progress | None = None
) -> tuple[str, int]:
    """Copy ``reader`` into ``writer`` by chunks; the bytes' SHA-256 (hex) and their count."""
    digest, size = hashlib.sha256(), 0
    while chunk := reader.read(_CHUNK):
        writer.write(chunk)
        digest.update(chunk)
        size += len(chunk)
        if progress is not None:
            progress.advance(len(chunk))
    return digest.hexdigest(), size


def keel_requirement() -> str:
    """``keel==VERSION`` for the keel installed here (what an export's code is written for),
    or ``keel`` when it runs from a source tree that was never installed."""
    try:
        return f"keel=={installed_version('keel')}"
    except PackageNotFoundError:
        return "keel"
