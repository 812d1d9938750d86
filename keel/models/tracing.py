"""Gathering what a version's diff and lineage show: its manifest, its run, the data it read.

:mod:`keel.models.compare` and :mod:`keel.models.lineage` shape the results; this module fetches
the facts through a :class:`Reader` (the :class:`~keel.models.api.Registry`): the version's
``keel-model.json`` from the store by its digest, the run through the tracking client, and the
dataset versions the run read through :mod:`keel.data`. Anything gone (a purged run, a missing
folder) shows as missing rather than failing the whole answer.

Runs are read through ``runs`` when one is given (a server passes the request's tracking view,
which answers 404 for a run the caller may not read): such a run shows exactly as a purged one,
a bare node without its params, metrics, commit or the data it recorded reading, and a diff
shows only what its versions' manifests recorded. A ``runs:/`` lineage of such a run is the
run's :class:`~keel.errors.NotFound`, as it is on ``/api/v1/runs/{id}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from keel.errors import KeelError, NotFound
from keel.models.compare import ModelDiff, Side, diff_versions
from keel.models.lineage import (
    ENVIRONMENT_TAGS,
    LineageEdge,
    LineageNode,
    ModelLineage,
    alias_node,
    dataset_node,
    run_node,
    version_node,
)
from keel.models.models import ModelManifest, ModelVersion
from keel.models.uris import ModelsUri, RunsUri, parse_model_uri, parse_version_ref
from keel.settings import Settings
from keel.tracking.api import Client
from keel.tracking.models import Run

__all__ = [
    "Reader",
    "RunReader",
    "diff",
    "lineage",
    "manifest_or_none",
    "run_or_none",
    "training_data",
]


class RunReader(Protocol):
    """Where runs are read: a tracking client, or a server request's checked view of it."""

    def get_run(self, run_id: str) -> Run: ...


class Reader(Protocol):
    """What tracing reads through: the registry's settings, client, versions and manifests."""

    @property
    def settings(self) -> Settings: ...

    @property
    def client(self) -> Client: ...

    def resolve(self, ref: str | ModelVersion) -> ModelVersion: ...

    def get_version(self, name: str, version_or_alias: int | str = ...) -> ModelVersion: ...

    def search_versions(
        self, *, name: str | None = None, run_id: str | None = None
    ) -> list[ModelVersion]: ...

    def manifest(self, version: ModelVersion) -> ModelManifest: ...


def diff(
    reader: Reader,
    left: str | ModelVersion,
    right: str | ModelVersion,
    *,
    runs: RunReader | None = None,
) -> ModelDiff:
    """What differs between two versions; see :func:`keel.models.api.diff`. The runs' own
    params, metrics and inputs are read through ``runs`` (default: the reader's client)."""
    versions = [reader.resolve(left), reader.resolve(right)]
    found = _readable_runs(reader, {v.run_id for v in versions if v.run_id}, runs)
    inputs = _inputs_by_run(reader, set(found))
    sides = []
    for version in versions:
        manifest = manifest_or_none(reader, version)
        run = found.get(version.run_id or "")
        params = dict(manifest.params) if manifest else {}
        metrics = dict(manifest.metrics) if manifest else {}
        if run is not None:
            params.update(run.params)
            metrics.update(run.metrics)
        used = {
            f"{ref.split('@')[0]} ({context})": ref
            for ref, context in training_data(version.run_id, [manifest], inputs)
        }
        sides.append(Side(version, manifest=manifest, params=params, metrics=metrics, inputs=used))
    return diff_versions(sides[0], sides[1])


def lineage(
    reader: Reader, uri: str | ModelVersion, *, runs: RunReader | None = None
) -> ModelLineage:
    """A version's (or a run's models') lineage graph; see :func:`keel.models.api.lineage`.

    Runs are read through ``runs`` (default: the reader's client); one it cannot read is a
    bare node, and for a ``runs:/`` URI its :class:`~keel.errors.NotFound`.
    """
    versions, root_run = _lineage_roots(reader, uri, runs)
    run_ids = {v.run_id for v in versions if v.run_id} | ({root_run} if root_run else set())
    found = _readable_runs(reader, run_ids, runs)
    inputs = _inputs_by_run(reader, set(found))
    nodes: dict[str, LineageNode] = {}
    edges: list[LineageEdge] = []
    for run_id in sorted(run_ids):
        run = _run_node(run_id, found.get(run_id))
        nodes[run.id] = run
        manifests = [manifest_or_none(reader, v) for v in versions if v.run_id == run_id]
        for ref, context in training_data(run_id, manifests, inputs):
            data = nodes.setdefault(f"dataset:{ref}", _dataset_node(reader, ref))
            edges.append(
                LineageEdge(source=data.id, target=run.id, relation="input", context=context)
            )
    for version in versions:
        node = version_node(version)
        nodes[node.id] = node
        if version.run_id:
            edges.append(
                LineageEdge(source=f"run:{version.run_id}", target=node.id, relation="logged")
            )
        for alias in version.aliases:
            target = nodes.setdefault(
                f"alias:{version.name}@{alias}", alias_node(version.name, alias)
            )
            edges.append(LineageEdge(source=node.id, target=target.id, relation="alias"))
    root = f"run:{root_run}" if root_run else version_node(versions[0]).id
    order = {"dataset": 0, "run": 1, "model_version": 2, "alias": 3}
    ordered = sorted(nodes.values(), key=lambda n: order[n.kind])
    return ModelLineage(root=root, nodes=ordered, edges=edges)


def training_data(
    run_id: str | None,
    manifests: list[ModelManifest | None],
    inputs: Mapping[str, list[tuple[str, str]]],
) -> list[tuple[str, str]]:
    """``[(NAME@VERSION, context)]`` a run trained on: its models' manifests say, then what
    the run recorded reading."""
    found = [
        (f"{ref.name}@{ref.version}", ref.context)
        for manifest in manifests
        if manifest is not None
        for ref in manifest.inputs
    ]
    for item in inputs.get(run_id or "", []):
        if item not in found:
            found.append(item)
    return found


# -- helpers ------------------------------------------------------------------------------------


def _lineage_roots(
    reader: Reader, uri: str | ModelVersion, runs: RunReader | None
) -> tuple[list[ModelVersion], str | None]:
    """The versions a lineage shows, and the run it starts from for a ``runs:/`` URI."""
    if isinstance(uri, ModelVersion):
        return [uri], None
    parsed = _parse_any(uri)
    if isinstance(parsed, ModelsUri):
        return [reader.get_version(parsed.name, parsed.selector)], None
    (runs or reader.client).get_run(parsed.run_id)  # NotFound names the run
    registered = reader.search_versions(run_id=parsed.run_id)
    return [v for v in registered if v.source == str(parsed)], parsed.run_id


def manifest_or_none(reader: Reader, version: ModelVersion) -> ModelManifest | None:
    """The version's manifest, or None when its folder cannot be read."""
    try:
        return reader.manifest(version)
    except KeelError:
        return None


def run_or_none(reader: Reader, run_id: str | None, *, runs: RunReader | None = None) -> Run | None:
    """The run, or None when there is none, it is gone or ``runs`` may not read it."""
    if run_id is None:
        return None
    try:
        return (runs or reader.client).get_run(run_id)
    except NotFound:
        return None


def _readable_runs(reader: Reader, run_ids: set[str], runs: RunReader | None) -> dict[str, Run]:
    """``{run_id: run}`` of the runs among ``run_ids`` that exist and ``runs`` may read."""
    found = {run_id: run_or_none(reader, run_id, runs=runs) for run_id in run_ids}
    return {run_id: run for run_id, run in found.items() if run is not None}


def _run_node(run_id: str, run: Run | None) -> LineageNode:
    """A run's node: its details, or a bare ``missing`` one (gone, or not the caller's to read)."""
    if run is None:
        return run_node(run_id, label=run_id, missing=True)
    environment = {
        shown: run.tags[tag] for tag, shown in ENVIRONMENT_TAGS.items() if tag in run.tags
    }
    return run_node(
        run_id,
        label=run.run_name,
        experiment_id=run.experiment_id,
        status=run.status.value,
        user=run.user,
        start_time=run.start_time,
        commit=environment.pop("commit", None),
        params=dict(run.params),
        metrics=dict(run.metrics),
        environment=environment,
    )


def _dataset_node(reader: Reader, ref: str) -> LineageNode:
    from keel.data.versions import get_version as get_dataset_version

    try:
        found = get_dataset_version(ref, settings=reader.settings)
    except KeelError:
        return dataset_node(ref, missing=True)
    return dataset_node(
        ref,
        digest=found.digest,
        kind=found.kind,
        format=found.format,
        size=found.size,
        source=found.source,
        rows=found.profile.rows if found.profile is not None else None,
    )


def _inputs_by_run(reader: Reader, run_ids: set[str]) -> dict[str, list[tuple[str, str]]]:
    """``{run_id: [(NAME@VERSION, context), ...]}``: the dataset versions each run read."""
    from keel.data.versions import run_inputs

    return {
        run_id: [(i.version.ref, i.context) for i in run_inputs(run_id, settings=reader.settings)]
        for run_id in run_ids
    }


def _parse_any(uri: str) -> RunsUri | ModelsUri:
    if isinstance(uri, str) and uri.startswith(("runs:/", "models:/")):
        return parse_model_uri(uri)
    return parse_version_ref(uri)
