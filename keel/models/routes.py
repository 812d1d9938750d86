"""The model registry's REST API under ``/api/v1``: models, versions, aliases, tags,
descriptions, history, diff and lineage; governance (policies, approval requests, model cards)
is in :mod:`keel.models.routes_governance`, included here.

Each route calls one :class:`keel.models.api.Registry` method and answers with its entity, so
what a local registry returns and what the server sends are the same models
(:class:`~keel.models.remote.RemoteRegistry` reads them back). A version is addressed by number,
alias or ``latest`` (``/models/churn/versions/3``, ``.../versions/champion``); ``diff`` and
``lineage`` take the references the CLI takes (``churn/3``, ``churn@champion``,
``models:/...``, and for lineage ``runs:/...``). Errors are :class:`keel.errors.KeelError` s:
a malformed name, alias or body is a 400, a missing model, version or alias a 404. Who may
read and write is in :mod:`keel.models.routing`; see ``docs/models.md``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from keel.errors import InvalidInput
from keel.models import tracing
from keel.models.compare import ModelDiff
from keel.models.lineage import ModelLineage
from keel.models.models import ModelVersion, RegisteredModel
from keel.models.routes_governance import router as governance_router
from keel.models.routing import ReaderDep, WriterDep, lifespan, note, tracking_of
from keel.models.uris import RunsUri, parse_model_uri
from keel.models.wire import (
    MAX_TAG_KEY,
    AliasDeleted,
    AliasSet,
    DescriptionSet,
    EventList,
    ModelList,
    RegisterRequest,
    TagSet,
    VersionList,
)
from keel.tracking.models import ErrorBody

__all__ = ["router"]

router = APIRouter(
    prefix="/api/v1",
    tags=["models"],
    lifespan=lifespan,
    responses={
        400: {"model": ErrorBody, "description": "invalid input (error: invalid_input)"},
        403: {"model": ErrorBody, "description": "--auth: a viewer's write (permission_denied)"},
        404: {"model": ErrorBody, "description": "no such model, version or alias"},
    },
)

_NO_NUL = r"^[^\x00]*$"
NamePath = Annotated[str, Path(min_length=1, max_length=128, description="the model's name")]
VersionPath = Annotated[
    str, Path(min_length=1, max_length=64, description="a number, an alias, or latest")
]
NumberPath = Annotated[int, Path(ge=1, le=2**31 - 1, description="the version number")]
AliasPath = Annotated[str, Path(min_length=1, max_length=64)]
KeyPath = Annotated[str, Path(min_length=1, max_length=MAX_TAG_KEY, pattern=_NO_NUL)]
RefQuery = Annotated[str, Query(min_length=1, max_length=2048, pattern=_NO_NUL)]


# -- models --------------------------------------------------------------------------------


@router.get("/models")
def list_models(
    registry: ReaderDep,
    name_like: Annotated[str | None, Query(max_length=256, pattern=_NO_NUL)] = None,
) -> ModelList:
    """Every registered model, by name; ``name_like`` is a SQL LIKE pattern (``churn%``)."""
    return ModelList(models=registry.list_models(name_like=name_like))


@router.get("/models/{name}")
def get_model(name: NamePath, registry: ReaderDep) -> RegisteredModel:
    """A registered model: description, tags, aliases and latest version number."""
    return registry.get_model(name)


@router.get("/models/{name}/history")
def history(name: NamePath, registry: ReaderDep) -> EventList:
    """The model's audit trail, oldest first: every change, who made it, when and why."""
    return EventList(events=registry.history(name))


@router.put("/models/{name}/description", status_code=204, response_class=Response)
def set_model_description(
    name: NamePath, body: DescriptionSet, request: Request, registry: WriterDep
) -> None:
    """Replace the model's description (audited)."""
    note(request, f"model/{name}")
    registry.set_description(name, body.description)


@router.put("/models/{name}/tags/{key:path}", status_code=204, response_class=Response)
def set_model_tag(
    name: NamePath, key: KeyPath, body: TagSet, request: Request, registry: WriterDep
) -> None:
    """Set a tag of the model (``key`` may contain slashes)."""
    note(request, f"model/{name}")
    registry.set_tag(name, key, body.value)


@router.delete("/models/{name}/tags/{key:path}", status_code=204, response_class=Response)
def delete_model_tag(name: NamePath, key: KeyPath, request: Request, registry: WriterDep) -> None:
    """Delete a tag of the model."""
    note(request, f"model/{name}")
    registry.delete_tag(name, key)


# -- versions ------------------------------------------------------------------------------


@router.post("/models/{name}/versions", status_code=201)
def register(
    name: NamePath, body: RegisterRequest, request: Request, registry: WriterDep
) -> ModelVersion:
    """Register the logged model at ``uri`` (``runs:/RUN_ID/PATH``) as the next version.

    The server reads the run's artifacts itself (they are in its store) and checks the folder
    is a Keel model; the version records the folder's digest. The name is created on first use.
    """
    source = parse_model_uri(body.uri)
    if isinstance(source, RunsUri):  # the caller must be able to read the run
        tracking_of(request).get_run(source.run_id)
        note(request, f"run/{source.run_id}")
    note(request, f"model/{name}")
    return registry.register(body.uri, name, description=body.description, tags=body.tags)


@router.get("/models/{name}/versions")
def list_versions(name: NamePath, registry: ReaderDep) -> VersionList:
    """Every version of the model, newest first."""
    return VersionList(versions=registry.list_versions(name))


@router.get("/models/{name}/versions/{version}")
def get_version(name: NamePath, version: VersionPath, registry: ReaderDep) -> ModelVersion:
    """A version by number (``3``), alias (``champion``) or ``latest``."""
    return registry.get_version(name, version)


@router.put(
    "/models/{name}/versions/{version}/description", status_code=204, response_class=Response
)
def set_version_description(
    name: NamePath, version: NumberPath, body: DescriptionSet, request: Request, registry: WriterDep
) -> None:
    """Replace a version's description (audited)."""
    note(request, f"model/{name}/{version}")
    registry.set_description(name, body.description, version=version)


@router.put(
    "/models/{name}/versions/{version}/tags/{key:path}", status_code=204, response_class=Response
)
def set_version_tag(
    name: NamePath,
    version: NumberPath,
    key: KeyPath,
    body: TagSet,
    request: Request,
    registry: WriterDep,
) -> None:
    """Set a tag of a version."""
    note(request, f"model/{name}/{version}")
    registry.set_tag(name, key, body.value, version=version)


@router.delete(
    "/models/{name}/versions/{version}/tags/{key:path}", status_code=204, response_class=Response
)
def delete_version_tag(
    name: NamePath, version: NumberPath, key: KeyPath, request: Request, registry: WriterDep
) -> None:
    """Delete a tag of a version."""
    note(request, f"model/{name}/{version}")
    registry.delete_tag(name, key, version=version)


# -- aliases -------------------------------------------------------------------------------


@router.get("/models/{name}/aliases/{alias}")
def get_version_by_alias(name: NamePath, alias: AliasPath, registry: ReaderDep) -> ModelVersion:
    """The version an alias points at."""
    if alias.isdecimal():
        raise InvalidInput(f"{alias!r} is a version number, not an alias", alias=alias)
    return registry.get_version(name, alias)


@router.put(
    "/models/{name}/aliases/{alias}",
    response_model=ModelVersion,
    responses={202: {"description": "the alias is protected: the approval request made"}},
)
def set_alias(
    name: NamePath, alias: AliasPath, body: AliasSet, request: Request, registry: WriterDep
) -> Any:
    """Point the alias at ``version``, moving it atomically if it is set; answers that version.

    A protected alias (the model's policy) does not move: the answer is a 202 with the approval
    request made instead (see ``keel models policy``).
    """
    note(request, f"model/{name}@{alias}")
    moved = registry.set_alias(name, alias, body.version, reason=body.reason)
    if isinstance(moved, ModelVersion):
        return moved
    return JSONResponse(moved.model_dump(mode="json"), status_code=202)


@router.delete("/models/{name}/aliases/{alias}")
def delete_alias(
    name: NamePath,
    alias: AliasPath,
    request: Request,
    registry: WriterDep,
    reason: Annotated[str | None, Query(max_length=4096, pattern=_NO_NUL)] = None,
) -> AliasDeleted:
    """Remove the alias (audited, with ``reason``); answers the version it pointed at."""
    note(request, f"model/{name}@{alias}")
    version = registry.delete_alias(name, alias, reason=reason)
    return AliasDeleted(name=name, alias=alias, version=version)


# -- across versions: search, diff, lineage -------------------------------------------------


@router.get("/model-versions")
def search_versions(
    registry: ReaderDep,
    name: Annotated[str | None, Query(max_length=128, pattern=_NO_NUL)] = None,
    run_id: Annotated[str | None, Query(max_length=64, pattern=_NO_NUL)] = None,
) -> VersionList:
    """Versions of ``name`` and/or registered from run ``run_id``; every version when neither."""
    return VersionList(versions=registry.search_versions(name=name, run_id=run_id))


@router.get("/model-versions/diff")
def diff(left: RefQuery, right: RefQuery, request: Request, registry: ReaderDep) -> ModelDiff:
    """What differs between two versions (``churn/3``, ``churn@champion``, ``models:/...``):
    params, metrics, signature, requirements and training data. A run the caller may not read
    adds nothing: its side shows what the version's manifest recorded."""
    return tracing.diff(registry, left, right, runs=tracking_of(request))


@router.get("/model-versions/lineage")
def lineage(uri: RefQuery, request: Request, registry: ReaderDep) -> ModelLineage:
    """The graph around a version (or a run's logged model, ``runs:/RUN_ID/PATH``): data
    versions -> run (commit, params, environment) -> version -> aliases, as nodes and edges.

    Runs are read as the caller: a ``runs:/`` URI of a run it may not read is a 404 (as
    ``/api/v1/runs/{id}`` is), and a version's run it may not read is a bare node marked
    ``missing``, without params, metrics, commit or tracked inputs, exactly like a purged run.
    """
    return tracing.lineage(registry, uri, runs=tracking_of(request))


router.include_router(governance_router)
