"""A model version's lineage as a graph: data versions -> run -> model version -> aliases.

Nodes have ids that say what they are (``dataset:diabetes@2``, ``run:5f0c...``,
``model:churn/3``, ``alias:churn@champion``); edges point downstream, from what was used to
what was made of it. The registry (:mod:`keel.models.api`) gathers the facts; the CLI prints
the graph as a tree, the API returns it as it is (later deployments join as nodes after the
aliases).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from keel.models.models import ModelVersion

__all__ = [
    "ENVIRONMENT_TAGS",
    "LineageEdge",
    "LineageNode",
    "ModelLineage",
    "alias_node",
    "dataset_node",
    "run_node",
    "version_node",
]

NodeKind = Literal["dataset", "run", "model_version", "alias"]

ENVIRONMENT_TAGS = {
    "keel.source.git_commit": "commit",
    "keel.source.git_branch": "branch",
    "keel.source.git_dirty": "dirty",
    "keel.source.git_repo": "repository",
    "keel.source.entry_point": "entry_point",
    "keel.python": "python",
    "keel.platform": "platform",
}
"""Run tags shown as the run's code and environment, by the name a lineage node gives them."""


class LineageNode(BaseModel):
    """One thing in the chain."""

    id: str = Field(description="kind:identity, e.g. run:5f0c... or model:churn/3")
    kind: NodeKind
    label: str = Field(description="what a person reads: diabetes@2, churn/3, champion")
    attributes: dict[str, Any] = Field(default_factory=dict)


class LineageEdge(BaseModel):
    """``source`` was used to make ``target`` (or, for an alias, points at it)."""

    source: str
    target: str
    relation: Literal["input", "logged", "alias"]
    context: str | None = Field(default=None, description='an input\'s use: "train", "eval"...')


class ModelLineage(BaseModel):
    """The graph around one model version; ``root`` is that version's node id."""

    root: str
    nodes: list[LineageNode]
    edges: list[LineageEdge]

    def node(self, node_id: str) -> LineageNode:
        """The node with id ``node_id``.

        Raises:
            KeyError: no such node.
        """
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)

    def upstream(self, node_id: str) -> list[LineageEdge]:
        """The edges into ``node_id``."""
        return [edge for edge in self.edges if edge.target == node_id]

    def downstream(self, node_id: str) -> list[LineageEdge]:
        """The edges out of ``node_id``."""
        return [edge for edge in self.edges if edge.source == node_id]


def dataset_node(ref: str, **attributes: Any) -> LineageNode:
    """A dataset version, ``ref`` being ``NAME@VERSION``."""
    return LineageNode(id=f"dataset:{ref}", kind="dataset", label=ref, attributes=attributes)


def run_node(run_id: str, *, label: str, **attributes: Any) -> LineageNode:
    """A run."""
    return LineageNode(id=f"run:{run_id}", kind="run", label=label, attributes=attributes)


def version_node(version: ModelVersion) -> LineageNode:
    """A registered model version."""
    return LineageNode(
        id=f"model:{version.name}/{version.version}",
        kind="model_version",
        label=f"{version.name}/{version.version}",
        attributes={
            "uri": version.uri,
            "source": version.source,
            "digest": version.digest,
            "flavor": version.flavor,
            "created_by": version.created_by,
            "created_at": version.created_at.isoformat(),
        },
    )


def alias_node(name: str, alias: str) -> LineageNode:
    """An alias of model ``name``."""
    return LineageNode(
        id=f"alias:{name}@{alias}",
        kind="alias",
        label=alias,
        attributes={"uri": f"models:/{name}@{alias}"},
    )
