"""Model entities: what a logged model's manifest records, and the registry's records.

A logged model is a folder in its run's artifacts (``runs:/RUN_ID/model``) holding the
flavor's own files and ``keel-model.json``, the :class:`ModelManifest`. The folder is one
content-addressed manifest in the artifact store, so its digest names the exact bytes a
:class:`ModelVersion` was registered from, and loading checks them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ALIAS_PATTERN",
    "MANIFEST_FILE",
    "MODEL_NAME_PATTERN",
    "AuditEvent",
    "ColumnSpec",
    "DataType",
    "DatasetRef",
    "ModelManifest",
    "ModelVersion",
    "RegisteredModel",
    "Signature",
    "TensorSpec",
]

MANIFEST_FILE = "keel-model.json"
"""The manifest's file name inside a logged model's folder."""

MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
"""A registered model's name: letters, digits, ``.``, ``_``, ``-``; up to 128 characters."""

ALIAS_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"
"""An alias (``champion``, ``challenger``, ``production``...): lowercase, not a number."""

DataType = Literal["boolean", "integer", "float", "string", "datetime", "binary"]
"""A column's logical type. Integers widen to float where the model was trained on floats;
nothing narrows (a float column where integers are expected is a mismatch)."""


class ColumnSpec(BaseModel):
    """One named input or output column."""

    model_config = ConfigDict(frozen=True)

    name: str
    type: DataType
    nullable: bool = Field(default=False, description="nulls were seen in the example")


class TensorSpec(BaseModel):
    """An array input or output (PyTorch, ONNX): dtype and shape, -1 for any length."""

    model_config = ConfigDict(frozen=True)

    dtype: str = Field(description="numpy dtype name, e.g. float32")
    shape: tuple[int, ...]


class Signature(BaseModel):
    """What ``predict`` takes and returns. Either columns (a DataFrame) or one tensor."""

    model_config = ConfigDict(frozen=True)

    inputs: list[ColumnSpec] | TensorSpec
    outputs: list[ColumnSpec] | TensorSpec | None = None


class DatasetRef(BaseModel):
    """A dataset version the model's run read (``keel.log_input`` or ``keel.data.load``)."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: int
    digest: str
    context: str = "train"


class ModelManifest(BaseModel):
    """``keel-model.json``: everything needed to load, check and trace a logged model."""

    model_config = ConfigDict(frozen=True)

    format_version: Literal[1] = 1
    flavor: str = Field(description="sklearn, xgboost, lightgbm, pytorch, onnx or python")
    flavor_version: str | None = Field(
        default=None, description="the framework's version when the model was saved"
    )
    model_class: str = Field(description="fully qualified class of the saved object")
    files: list[str] = Field(description="the flavor's files in the folder, relative paths")
    signature: Signature | None = None
    input_example: str | None = Field(
        default=None, description="file holding the input example (Parquet), if one was given"
    )
    requirements: list[str] = Field(
        default_factory=list, description="pinned pip requirements, e.g. scikit-learn==1.7.2"
    )
    python_version: str
    keel_version: str
    run_id: str | None = None
    artifact_path: str = Field(description="the folder's path in the run's artifacts")
    inputs: list[DatasetRef] = Field(default_factory=list)
    metrics: dict[str, float] = Field(
        default_factory=dict, description="the run's latest metrics when the model was logged"
    )
    params: dict[str, str] = Field(default_factory=dict)
    created_at: datetime


class RegisteredModel(BaseModel):
    """A name under which versions are registered; aliases point at versions."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    aliases: dict[str, int] = Field(default_factory=dict, description="alias -> version")
    latest_version: int | None = None
    created_at: datetime
    updated_at: datetime
    created_by: str


class ModelVersion(BaseModel):
    """One registered version: immutable content (``digest``) plus editable description/tags."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: int = Field(ge=1)
    source: str = Field(description="where it was registered from, e.g. runs:/RUN_ID/model")
    run_id: str | None = None
    digest: str = Field(description="the model folder's manifest digest in the artifact store")
    flavor: str
    signature: Signature | None = None
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    aliases: list[str] = Field(default_factory=list)
    created_at: datetime
    created_by: str

    @property
    def uri(self) -> str:
        """``models:/NAME/VERSION``."""
        return f"models:/{self.name}/{self.version}"


class AuditEvent(BaseModel):
    """One registry change, append-only: who did what, when and why."""

    model_config = ConfigDict(frozen=True)

    id: int
    model: str
    action: str = Field(
        description="create_model, create_version, set_alias, delete_alias, set_tag, "
        "delete_tag, set_description, request, approve, reject, set_policy, ..."
    )
    version: int | None = None
    alias: str | None = None
    actor: str
    reason: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)
    at: datetime
