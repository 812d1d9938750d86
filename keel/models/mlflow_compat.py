"""MLflow-compatible model registry endpoints under ``/api/2.0/mlflow/``, over Keel's registry.

The official MLflow client's registry calls land here: ``create_registered_model``,
``get_registered_model``, ``search_registered_models``, ``create_model_version`` (and so
``mlflow.register_model``), ``get_model_version``, ``search_model_versions``,
``set_registered_model_alias``, ``delete_registered_model_alias``,
``get_model_version_by_alias``, ``get_model_version_download_uri``, tags and descriptions.
Each becomes a :class:`keel.models.api.Registry` call, so what MLflow registers is an ordinary
Keel version with its audit trail (``keel models history``).

A version's source is a run's folder: ``runs:/RUN_ID/PATH``, or the artifact URI MLflow's
client resolves that to (``mlflow-artifacts:/EXPERIMENT/RUN_ID/artifacts/PATH``), which is
stored as ``runs:/RUN_ID/PATH``. A folder with ``keel-model.json`` registers as
:func:`keel.models.register` does; a folder MLflow logged (an ``MLmodel`` file, no Keel
manifest) registers with flavor ``mlflow``, no signature, and the folder's digest.

Keel has aliases, not stages: ``transition_model_version_stage`` and ``get_latest_versions``
answer 404 saying so. Versions are always READY, their stage ``None``. See ``docs/mlflow.md``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, TypeVar
from urllib.parse import urlparse

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from keel.errors import InvalidInput, NotFound, PermissionDenied
from keel.models.api import Registry
from keel.models.governance_models import AliasRequest as PendingRequest
from keel.models.models import MANIFEST_FILE, ModelVersion, RegisteredModel
from keel.models.routing import ReaderDep, WriterDep, note, tracking_of
from keel.models.uris import LATEST, RunsUri, check_model_name, parse_model_uri
from keel.tracking.mlflow_compat_wire import Empty, KeyValue, MlflowRoute, error_response

__all__ = ["MLFLOW_FLAVOR", "MLMODEL_FILE", "register_folder", "router", "runs_uri_of"]

PREFIX = "/api/2.0/mlflow"
MLMODEL_FILE = "MLmodel"
"""The file that makes a folder an MLflow model."""
MLFLOW_FLAVOR = "mlflow"
"""The flavor recorded for a version registered from an MLflow model folder."""
MAX_SEARCH_RESULTS = 200_000
"""MLflow's own cap on a model version search page."""

router = APIRouter(tags=["mlflow"], route_class=MlflowRoute)


# -- wire ----------------------------------------------------------------------------------------


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("text may not contain a NUL character")
        return value


class CreateRegisteredModelRequest(_Message):
    name: str
    tags: list[KeyValue] = Field(default_factory=list)
    description: str | None = None


class UpdateRegisteredModelRequest(_Message):
    name: str
    description: str = ""


class CreateModelVersionRequest(_Message):
    name: str
    source: str
    run_id: str | None = None
    tags: list[KeyValue] = Field(default_factory=list)
    run_link: str | None = Field(default=None, description="ignored")
    description: str | None = None


class UpdateModelVersionRequest(_Message):
    name: str
    version: str
    description: str = ""


class AliasRequest(_Message):
    name: str
    alias: str
    version: str | None = Field(default=None, description="set only")


class ModelTagRequest(_Message):
    name: str
    key: str = Field(min_length=1, max_length=250)
    value: str = ""
    version: str | None = Field(default=None, description="model-versions/... only")


class MlflowModelVersion(BaseModel):
    name: str
    version: str
    creation_timestamp: int
    last_updated_timestamp: int
    user_id: str
    current_stage: str = "None"
    description: str = ""
    source: str
    run_id: str = ""
    status: str = "READY"
    status_message: str = ""
    tags: list[KeyValue] = Field(default_factory=list)
    run_link: str = ""
    aliases: list[str] = Field(default_factory=list)


class MlflowAlias(BaseModel):
    alias: str
    version: str


class MlflowRegisteredModel(BaseModel):
    name: str
    creation_timestamp: int
    last_updated_timestamp: int
    user_id: str
    description: str = ""
    latest_versions: list[MlflowModelVersion] = Field(default_factory=list)
    tags: list[KeyValue] = Field(default_factory=list)
    aliases: list[MlflowAlias] = Field(default_factory=list)


class RegisteredModelResponse(BaseModel):
    registered_model: MlflowRegisteredModel


class SearchRegisteredModelsResponse(BaseModel):
    registered_models: list[MlflowRegisteredModel] = Field(default_factory=list)
    next_page_token: str | None = None


class ModelVersionResponse(BaseModel):
    model_version: MlflowModelVersion


class SearchModelVersionsResponse(BaseModel):
    model_versions: list[MlflowModelVersion] = Field(default_factory=list)
    next_page_token: str | None = None


class DownloadUriResponse(BaseModel):
    artifact_uri: str


def _ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def _pairs(mapping: dict[str, str]) -> list[KeyValue]:
    return [KeyValue.model_construct(key=k, value=v) for k, v in mapping.items()]


def version_message(version: ModelVersion) -> MlflowModelVersion:
    """A Keel version in MLflow's shape (always READY, stage ``None``)."""
    return MlflowModelVersion(
        name=version.name,
        version=str(version.version),
        creation_timestamp=_ms(version.created_at),
        last_updated_timestamp=_ms(version.created_at),
        user_id=version.created_by,
        description=version.description,
        source=version.source,
        run_id=version.run_id or "",
        tags=_pairs(version.tags),
        aliases=sorted(version.aliases),
    )


def model_message(registry: Registry, model: RegisteredModel) -> MlflowRegisteredModel:
    """A Keel registered model in MLflow's shape; ``latest_versions`` holds the newest."""
    latest = []
    if model.latest_version is not None:
        latest = [version_message(registry.get_version(model.name, LATEST))]
    return MlflowRegisteredModel(
        name=model.name,
        creation_timestamp=_ms(model.created_at),
        last_updated_timestamp=_ms(model.updated_at),
        user_id=model.created_by,
        description=model.description,
        latest_versions=latest,
        tags=_pairs(model.tags),
        aliases=[MlflowAlias(alias=a, version=str(v)) for a, v in sorted(model.aliases.items())],
    )


# -- sources -------------------------------------------------------------------------------------

_ARTIFACT_PATH = re.compile(r"/?\d+/(?P<run>[0-9a-f]{32})/artifacts/(?P<path>.+)")


def runs_uri_of(source: str, run_id: str | None = None) -> RunsUri:
    """The run folder an MLflow model version's ``source`` names.

    ``runs:/RUN_ID/PATH`` as it is; ``mlflow-artifacts:/EXPERIMENT/RUN_ID/artifacts/PATH`` (a
    run's artifact URI on this server, as MLflow's client resolves ``runs:/``) back to
    ``runs:/RUN_ID/PATH``.

    Raises:
        InvalidInput: any other source, or one whose run is not ``run_id``.
    """
    found: RunsUri | None = None
    if source.startswith("runs:/"):
        parsed = parse_model_uri(source)
        assert isinstance(parsed, RunsUri)
        found = parsed
    elif source.startswith("mlflow-artifacts:"):
        match = _ARTIFACT_PATH.fullmatch(urlparse(source).path)
        if match is not None:
            parsed = parse_model_uri(f"runs:/{match['run']}/{match['path']}")
            assert isinstance(parsed, RunsUri)
            found = parsed
    if found is None:
        raise InvalidInput(
            f"Keel registers a run's model folder: source runs:/RUN_ID/PATH or "
            f"mlflow-artifacts:/EXPERIMENT_ID/RUN_ID/artifacts/PATH, not {source!r}",
            source=source,
        )
    if run_id and run_id != found.run_id:
        raise InvalidInput(
            f"source {source!r} is in run {found.run_id}, not in run_id {run_id}",
            source=source,
            run_id=run_id,
        )
    return found


def register_folder(
    registry: Registry,
    source: RunsUri,
    name: str,
    *,
    description: str = "",
    tags: dict[str, str] | None = None,
) -> ModelVersion:
    """Register the folder at ``source``: a Keel model as :meth:`Registry.register` does, an
    MLflow model (``MLmodel``, no ``keel-model.json``) with flavor ``mlflow``, no signature and
    the folder's digest (its manifest kept in the store, so gc follows it once the run is gone).

    Raises:
        NotFound: no run, or nothing at that path in its artifacts.
        InvalidInput: the folder is neither a Keel nor an MLflow model.
    """
    check_model_name(name)
    entries = registry.client.list_artifacts(source.run_id, source.path)
    prefix = f"{source.path}/"
    names = {entry.path[len(prefix) :] for entry in entries if entry.path.startswith(prefix)}
    if MANIFEST_FILE in names:
        return registry.register(str(source), name, description=description, tags=tags)
    if not names:
        raise NotFound(f"no model folder at {source}: the run has no files there", uri=str(source))
    if MLMODEL_FILE not in names:
        raise InvalidInput(
            f"{source} is not a model folder: it has neither {MANIFEST_FILE} nor {MLMODEL_FILE}",
            uri=str(source),
        )
    digest = registry.keep_folder(entries, source.path)
    return registry.store.create_version(
        name,
        source=str(source),
        run_id=source.run_id,
        digest=digest,
        flavor=MLFLOW_FLAVOR,
        signature=None,
        actor=registry.actor,
        description=description,
        tags=tags,
    )


# -- registered models ---------------------------------------------------------------------------


@router.post(f"{PREFIX}/registered-models/create")
def create_registered_model(
    body: CreateRegisteredModelRequest, request: Request, registry: WriterDep
) -> RegisteredModelResponse:
    """A new name with no versions (RESOURCE_ALREADY_EXISTS if it is taken)."""
    note(request, f"model/{body.name}")
    model = registry.store.create_model(
        check_model_name(body.name),
        actor=registry.actor,
        description=body.description or "",
        tags={tag.key: tag.value for tag in body.tags},
    )
    return RegisteredModelResponse(registered_model=model_message(registry, model))


@router.get(f"{PREFIX}/registered-models/get")
def get_registered_model(name: str, registry: ReaderDep) -> RegisteredModelResponse:
    return RegisteredModelResponse(
        registered_model=model_message(registry, registry.get_model(name))
    )


@router.patch(f"{PREFIX}/registered-models/update")
def update_registered_model(
    body: UpdateRegisteredModelRequest, request: Request, registry: WriterDep
) -> RegisteredModelResponse:
    """Replace the description."""
    note(request, f"model/{body.name}")
    registry.set_description(body.name, body.description)
    model = registry.get_model(body.name)
    return RegisteredModelResponse(registered_model=model_message(registry, model))


@router.get(f"{PREFIX}/registered-models/search", response_model_exclude_none=True)
def search_registered_models(
    registry: ReaderDep,
    filter: str | None = None,
    max_results: int = 100,
    order_by: Annotated[list[str] | None, Query()] = None,
    page_token: str | None = None,
) -> SearchRegisteredModelsResponse:
    """Models whose name matches ``filter`` (``name = 'x'``, ``name LIKE 'churn%'``, ``ILIKE``,
    ``!=``, joined by ``AND``), by name unless ``order_by`` says otherwise."""
    matches = _matcher(filter, {"name"})
    models = [m for m in registry.list_models() if matches(_row({"name": m.name}, m.tags))]
    models = _ordered(models, order_by, _MODEL_ORDER, default="name")
    page, token = _page(models, max_results, page_token, cap=1000)
    return SearchRegisteredModelsResponse(
        registered_models=[model_message(registry, m) for m in page], next_page_token=token
    )


@router.post(f"{PREFIX}/registered-models/set-tag")
def set_registered_model_tag(body: ModelTagRequest, request: Request, registry: WriterDep) -> Empty:
    note(request, f"model/{body.name}")
    registry.set_tag(body.name, body.key, body.value)
    return Empty()


@router.delete(f"{PREFIX}/registered-models/delete-tag")
def delete_registered_model_tag(
    request: Request, registry: WriterDep, body: ModelTagRequest | None = None
) -> Empty:
    tag = body or _query_body(request, ModelTagRequest)
    note(request, f"model/{tag.name}")
    registry.delete_tag(tag.name, tag.key)
    return Empty()


# -- aliases -------------------------------------------------------------------------------------


@router.post(f"{PREFIX}/registered-models/alias")
def set_registered_model_alias(body: AliasRequest, request: Request, registry: WriterDep) -> Empty:
    """Point the alias at the version, moving it atomically (audited).

    An alias the model's policy protects does not move: the pending request made instead is
    answered as 403 PERMISSION_DENIED naming it, so an MLflow client does not take it for done.
    """
    note(request, f"model/{body.name}@{body.alias}")
    done = registry.set_alias(body.name, body.alias, _number(body.version))
    if isinstance(done, PendingRequest):
        raise PermissionDenied(
            f"{body.name}@{body.alias} did not move: the model's policy protects it, and request "
            f"#{done.id} to move it to {done.version} awaits approval "
            f"(keel models approve {body.name} {done.id})",
            name=body.name,
            alias=body.alias,
            request=done.id,
        )
    return Empty()


@router.delete(f"{PREFIX}/registered-models/alias")
def delete_registered_model_alias(
    request: Request, registry: WriterDep, body: AliasRequest | None = None
) -> Empty:
    """Remove the alias; MLflow's client sends ``name`` and ``alias`` in a JSON body."""
    alias = body or _query_body(request, AliasRequest)
    note(request, f"model/{alias.name}@{alias.alias}")
    registry.delete_alias(alias.name, alias.alias)
    return Empty()


@router.get(f"{PREFIX}/registered-models/alias")
def get_model_version_by_alias(name: str, alias: str, registry: ReaderDep) -> ModelVersionResponse:
    if alias.isdecimal() or alias == LATEST:
        raise InvalidInput(f"{alias!r} is not an alias", alias=alias)
    return ModelVersionResponse(model_version=version_message(registry.get_version(name, alias)))


# -- model versions ------------------------------------------------------------------------------


@router.post(f"{PREFIX}/model-versions/create")
def create_model_version(
    body: CreateModelVersionRequest, request: Request, registry: WriterDep
) -> ModelVersionResponse:
    """Register a run's model folder as the next version (the name is created on first use)."""
    source = runs_uri_of(body.source, body.run_id)
    tracking_of(request).get_run(source.run_id)  # the caller must be able to read the run
    note(request, f"run/{source.run_id}", f"model/{body.name}")
    version = register_folder(
        registry,
        source,
        body.name,
        description=body.description or "",
        tags={tag.key: tag.value for tag in body.tags},
    )
    return ModelVersionResponse(model_version=version_message(version))


@router.get(f"{PREFIX}/model-versions/get")
def get_model_version(name: str, version: str, registry: ReaderDep) -> ModelVersionResponse:
    found = registry.get_version(name, _number(version))
    return ModelVersionResponse(model_version=version_message(found))


@router.patch(f"{PREFIX}/model-versions/update")
def update_model_version(
    body: UpdateModelVersionRequest, request: Request, registry: WriterDep
) -> ModelVersionResponse:
    """Replace the version's description."""
    number = _number(body.version)
    note(request, f"model/{body.name}/{number}")
    registry.set_description(body.name, body.description, version=number)
    return ModelVersionResponse(
        model_version=version_message(registry.get_version(body.name, number))
    )


@router.get(f"{PREFIX}/model-versions/search", response_model_exclude_none=True)
def search_model_versions(
    registry: ReaderDep,
    filter: str | None = None,
    max_results: int = MAX_SEARCH_RESULTS,
    order_by: Annotated[list[str] | None, Query()] = None,
    page_token: str | None = None,
) -> SearchModelVersionsResponse:
    """Versions matching ``filter``: ``name`` and ``run_id`` with ``=``, ``!=``, ``LIKE``,
    ``ILIKE`` or ``IN (...)``, joined by ``AND``; by name, newest first, unless ``order_by``."""
    conditions = _conditions(filter or "", {"name", "run_id"})
    exact = {key: value for key, op, value in conditions if op == "=" and isinstance(value, str)}
    versions = registry.search_versions(name=exact.get("name"), run_id=exact.get("run_id"))
    matches = _matcher_of(conditions)
    versions = [
        v for v in versions if matches(_row({"name": v.name, "run_id": v.run_id or ""}, v.tags))
    ]
    versions = _ordered(versions, order_by, _VERSION_ORDER, default=None)
    page, token = _page(versions, max_results, page_token, cap=MAX_SEARCH_RESULTS)
    return SearchModelVersionsResponse(
        model_versions=[version_message(v) for v in page], next_page_token=token
    )


@router.get(f"{PREFIX}/model-versions/get-download-uri")
def get_model_version_download_uri(
    name: str, version: str, request: Request, registry: ReaderDep
) -> DownloadUriResponse:
    """Where the version's files are: its run's folder under the ``mlflow-artifacts`` proxy."""
    found = registry.get_version(name, _number(version))
    source = parse_model_uri(found.source)
    if not isinstance(source, RunsUri):  # pragma: no cover - versions come from runs
        raise InvalidInput(f"{found.uri} was not registered from a run ({found.source})")
    run = tracking_of(request).get_run(source.run_id)
    return DownloadUriResponse(
        artifact_uri=f"mlflow-artifacts:/{run.experiment_id}/{run.run_id}/artifacts/{source.path}"
    )


@router.post(f"{PREFIX}/model-versions/set-tag")
def set_model_version_tag(body: ModelTagRequest, request: Request, registry: WriterDep) -> Empty:
    number = _number(body.version)
    note(request, f"model/{body.name}/{number}")
    registry.set_tag(body.name, body.key, body.value, version=number)
    return Empty()


@router.delete(f"{PREFIX}/model-versions/delete-tag")
def delete_model_version_tag(
    request: Request, registry: WriterDep, body: ModelTagRequest | None = None
) -> Empty:
    tag = body or _query_body(request, ModelTagRequest)
    number = _number(tag.version)
    note(request, f"model/{tag.name}/{number}")
    registry.delete_tag(tag.name, tag.key, version=number)
    return Empty()


# -- stages: Keel uses aliases -------------------------------------------------------------------

_STAGES = (
    "Keel's registry has no stages; it uses aliases. Instead of {what}, point an alias at the "
    "version: set_registered_model_alias(name, 'production', version), and read it with "
    "get_model_version_by_alias(name, 'production') or models:/NAME@production"
)


@router.post(
    f"{PREFIX}/model-versions/transition-stage", response_model=None, include_in_schema=False
)
def transition_model_version_stage() -> Response:
    return error_response(
        404, "ENDPOINT_NOT_FOUND", _STAGES.format(what="transition_model_version_stage")
    )


@router.api_route(
    f"{PREFIX}/registered-models/get-latest-versions",
    methods=["GET", "POST"],
    response_model=None,
    include_in_schema=False,
)
def get_latest_versions() -> Response:
    return error_response(404, "ENDPOINT_NOT_FOUND", _STAGES.format(what="get_latest_versions"))


# -- filters, order and pages --------------------------------------------------------------------

_CLAUSE = re.compile(
    r"""\s*(?P<key>`?[A-Za-z_][A-Za-z0-9_]*`?(?:\.(?:`[^`]+`|[A-Za-z0-9_.-]+))?)\s*(?P<op>!=|=|ILIKE\b|LIKE\b|IN\b)\s*"""
    r"""(?P<value>'(?:[^']|'')*'|"(?:[^"]|"")*"|\([^)]*\))\s*""",
    re.IGNORECASE,
)
_AND = re.compile(r"AND\b\s*", re.IGNORECASE)
_QUOTED = re.compile(r"""'((?:[^']|'')*)'|"((?:[^"]|"")*)\"""")
Condition = tuple[str, str, str | tuple[str, ...]]
TAG_KEY = "tag:"
_Body = TypeVar("_Body", bound=BaseModel)


def _unquote(text: str) -> str:
    quote = text[0]
    return text[1:-1].replace(quote * 2, quote)


def _conditions(text: str, keys: set[str]) -> list[Condition]:
    """``name = 'a' AND run_id IN ('x', 'y')`` as ``[("name", "=", "a"), ("run_id", "IN",
    ("x", "y"))]``.

    Raises:
        InvalidInput: anything else (the message says what is accepted).
    """
    found: list[Condition] = []
    position = 0
    accepted = ", ".join(sorted(keys))
    while text.strip() and position < len(text):
        match = _CLAUSE.match(text, position)
        key = _key(match["key"]) if match else ""
        op = match["op"].upper() if match else ""
        raw = match["value"] if match else ""
        known = key in keys or key.startswith(TAG_KEY)
        if match is None or not known or (op == "IN") != raw.startswith("("):
            raise InvalidInput(
                f"Keel cannot search with filter {text!r}: use comparisons of {accepted} or "
                "tags.KEY with =, !=, LIKE, ILIKE or IN ('a', 'b') on quoted text, joined by AND",
                filter=text,
            )
        value: str | tuple[str, ...]
        if op == "IN":
            value = tuple(_unquote(m.group(0)) for m in _QUOTED.finditer(raw))
        else:
            value = _unquote(raw)
        found.append((key, op, value))
        position = match.end()
        if position < len(text):
            joined = _AND.match(text, position)
            if joined is None:
                raise InvalidInput(f"clauses of filter {text!r} are joined by AND", filter=text)
            position = joined.end()
    return found


def _like(pattern: str, *, ignore_case: bool) -> re.Pattern[str]:
    body = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.compile(body, re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL)


def _key(text: str) -> str:
    """``name``, or ``tag:KEY`` for ``tags.KEY``, ``tag.KEY`` and ``tags.`KEY```."""
    head, dot, rest = text.partition(".")
    head = head.strip("`").lower()
    if dot and head in ("tag", "tags"):
        return TAG_KEY + rest.strip("`")
    return text.strip("`").lower()


Row = dict[str, str]


def _row(fields: dict[str, str], tags: dict[str, str]) -> Row:
    return {**fields, **{TAG_KEY + key: value for key, value in tags.items()}}


def _test(key: str, op: str, value: str | tuple[str, ...]) -> Callable[[Row], bool]:
    """One condition; a tag the row lacks passes only ``!=``, as in MLflow's server."""
    if op == "IN":
        return lambda row: key in row and row[key] in value
    if op in ("LIKE", "ILIKE"):
        pattern = _like(str(value), ignore_case=op == "ILIKE")
        return lambda row: key in row and pattern.fullmatch(row[key]) is not None
    if op == "!=":
        return lambda row: row.get(key) != value
    return lambda row: key in row and row[key] == value


def _matcher_of(conditions: list[Condition]) -> Callable[[Row], bool]:
    tests = [_test(key, op, value) for key, op, value in conditions]
    return lambda row: all(test(row) for test in tests)


def _matcher(text: str | None, keys: set[str]) -> Callable[[Row], bool]:
    return _matcher_of(_conditions(text or "", keys))


_MODEL_ORDER: dict[str, Callable[[Any], Any]] = {
    "name": lambda m: m.name,
    "creation_timestamp": lambda m: m.created_at,
    "last_updated_timestamp": lambda m: m.updated_at,
    "timestamp": lambda m: m.updated_at,
}
_VERSION_ORDER: dict[str, Callable[[Any], Any]] = {
    "name": lambda v: v.name,
    "version_number": lambda v: v.version,
    "creation_timestamp": lambda v: v.created_at,
    "last_updated_timestamp": lambda v: v.created_at,
    "run_id": lambda v: v.run_id or "",
}


def _ordered(
    items: list[Any],
    order_by: Sequence[str] | None,
    fields: dict[str, Callable[[Any], Any]],
    *,
    default: str | None,
) -> list[Any]:
    clauses = list(order_by or ([] if default is None else [default]))
    for clause in reversed(clauses):  # stable sorts, last clause first
        parts = clause.split()
        key = parts[0].strip("`").lower() if parts else ""
        direction = parts[1].upper() if len(parts) > 1 else "ASC"
        if key not in fields or len(parts) > 2 or direction not in ("ASC", "DESC"):
            raise InvalidInput(
                f"Keel cannot order by {clause!r}: use {', '.join(fields)} with ASC or DESC",
                order_by=clause,
            )
        items = sorted(items, key=fields[key], reverse=direction == "DESC")
    return items


def _page(
    items: list[Any], max_results: int, token: str | None, *, cap: int
) -> tuple[list[Any], str | None]:
    if not 0 < max_results <= cap:
        raise InvalidInput(
            f"Invalid value {max_results} for parameter 'max_results': it must be between 1 "
            f"and {cap}"
        )
    if token and not token.isdigit():
        raise InvalidInput(f"page token {token!r} is not one this server issued")
    offset = int(token) if token else 0
    end = offset + max_results
    return items[offset:end], str(end) if end < len(items) else None


def _number(version: str | None) -> int:
    text = (version or "").strip()
    if not (text.isascii() and text.isdecimal()) or int(text) < 1:
        raise InvalidInput(f"a model version is a number from 1, not {version!r}")
    return int(text)


def _query_body(request: Request, model: type[_Body]) -> _Body:
    """A DELETE's fields from the query string when it came without a JSON body."""
    return model.model_validate(dict(request.query_params))
