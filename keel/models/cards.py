"""Model cards: a version's Markdown description, generated from its lineage and metrics.

:func:`render_card` writes the card from facts the registry gathered (the version, its
``keel-model.json``, its lineage graph, its evaluations): what it is, its signature, the data
versions it was trained on with their digests, the run with its commit, params and metrics,
evaluations, requirements and aliases, plus *Intended use* and *Limitations* sections left for
people to fill in. :func:`edit_summary` says what an edit changed, for the audit trail.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from keel.models.lineage import LineageNode, ModelLineage
from keel.models.models import ColumnSpec, ModelManifest, ModelVersion, Signature

__all__ = ["FILL_IN", "edit_summary", "render_card"]

FILL_IN = "_To be filled in"
"""How a placeholder section starts; a card still holding one is not finished."""


def render_card(
    version: ModelVersion,
    *,
    manifest: ModelManifest | None,
    lineage: ModelLineage,
    evaluations: Sequence[Mapping[str, Any]] = (),
) -> str:
    """The Markdown card of ``version``.

    Example:
        >>> render_card(version, manifest=m, lineage=g).splitlines()[0]  # doctest: +SKIP
        '# diabetes/3'
    """
    root = lineage.node(lineage.root)
    runs = [lineage.node(e.source) for e in lineage.upstream(root.id) if e.relation == "logged"]
    parts = [
        f"# {version.name}/{version.version}",
        _overview(version, manifest),
        _section("Description", version.description.strip() or "_No description given._"),
        _section(
            "Intended use",
            f"{FILL_IN}: who should use this model, for which decisions, on which population._",
        ),
        _section(
            "Limitations",
            f"{FILL_IN}: where it is known to do badly, what it must not be used for, "
            "fairness and data caveats._",
        ),
        _section("Signature", _signature(version.signature)),
        _section("Training data", _training_data(lineage, runs)),
        _section("Training run", _runs(runs)),
        _section("Evaluations", _evaluations(evaluations)),
        _section("Requirements", _requirements(manifest)),
    ]
    return "\n\n".join(parts) + "\n"


def edit_summary(before: str | None, after: str) -> dict[str, Any]:
    """What an edit changed, for the audit trail: lines added and removed, sections touched."""
    old = (before or "").splitlines()
    new = after.splitlines()
    added = removed = 0
    sections: list[str] = []
    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        removed += i2 - i1
        added += j2 - j1
        touched = [(new, j) for j in range(j1, j2)] + [(old, i) for i in range(i1, i2)]
        for lines, index in touched:
            heading = _heading_before(lines, index) if lines[index].strip() else ""
            if heading and heading not in sections:
                sections.append(heading)
    return {"lines_added": added, "lines_removed": removed, "sections": sections}


# -- sections ---------------------------------------------------------------------------------


def _overview(version: ModelVersion, manifest: ModelManifest | None) -> str:
    flavor = version.flavor
    if manifest is not None and manifest.flavor_version:
        flavor = f"{flavor} {manifest.flavor_version}"
    rows = [
        ("model", version.name),
        ("version", str(version.version)),
        ("flavor", flavor),
        ("class", manifest.model_class if manifest else "-"),
        ("registered", f"{version.created_at:%Y-%m-%d %H:%M} UTC by {version.created_by}"),
        ("source", version.source),
        ("digest", f"`{version.digest}`"),
        ("aliases", ", ".join(version.aliases) or "none"),
    ]
    if version.tags:
        rows.append(("tags", ", ".join(f"{k}={v}" for k, v in version.tags.items())))
    return _table(["", ""], rows)


def _signature(signature: Signature | None) -> str:
    if signature is None:
        return "_No signature recorded: predict's input is not checked._"
    return "\n\n".join(
        f"{title}:\n\n{_spec(spec)}"
        for title, spec in (("Inputs", signature.inputs), ("Outputs", signature.outputs))
        if spec is not None
    )


def _spec(spec: list[ColumnSpec] | Any) -> str:
    if isinstance(spec, list):
        return _table(
            ["column", "type", "nullable"],
            [(c.name, c.type, "yes" if c.nullable else "no") for c in spec],
        )
    shape = ", ".join("any" if n == -1 else str(n) for n in spec.shape)
    return f"a tensor of {spec.dtype}, shape ({shape})"


def _training_data(lineage: ModelLineage, runs: list[LineageNode]) -> str:
    rows = []
    for run in runs:
        for edge in lineage.upstream(run.id):
            if edge.relation != "input":
                continue
            data = lineage.node(edge.source)
            a = data.attributes
            digest = "_(no longer in this database)_" if a.get("missing") else f"`{a['digest']}`"
            rows.append(
                (
                    data.label,
                    edge.context or "",
                    str(a.get("format") or a.get("kind") or ""),
                    f"{a['rows']:,}" if a.get("rows") is not None else "",
                    digest,
                )
            )
    if not rows:
        return "_No dataset versions recorded (keel.data.load or keel.log_input in the run)._"
    return _table(["dataset", "use", "format", "rows", "digest"], rows)


def _runs(runs: list[LineageNode]) -> str:
    if not runs:
        return "_Not logged by a run in this database._"
    blocks = []
    for run in runs:
        a = run.attributes
        if a.get("missing"):
            blocks.append(f"Run `{run.id[4:]}` (no longer in this database).")
            continue
        lines = [f"Run **{run.label}** (`{run.id[4:]}`), {a.get('status', '').lower()}"]
        if a.get("commit"):
            lines[0] += f", commit `{a['commit']}`"
        if a.get("environment"):
            lines.append(
                "Environment: " + ", ".join(f"{k}={v}" for k, v in a["environment"].items())
            )
        blocks.append(".\n".join(lines) + ".")
        blocks.append(_pairs_table("param", a.get("params") or {}))
        blocks.append(_pairs_table("metric", a.get("metrics") or {}))
    return "\n\n".join(b for b in blocks if b)


def _evaluations(evaluations: Sequence[Mapping[str, Any]]) -> str:
    if not evaluations:
        return "_No evaluations recorded (keel models evaluate NAME/VERSION --data ...)._"
    rows = [
        (
            str(e["dataset"]),
            str(e["target"]),
            str(e["task"]),
            f"{e['rows']:,}",
            ", ".join(f"{k}={_number(v)}" for k, v in sorted(e["metrics"].items())),
        )
        for e in evaluations
    ]
    return _table(["dataset", "target", "task", "rows", "metrics"], rows)


def _requirements(manifest: ModelManifest | None) -> str:
    if manifest is None:
        return "_The version's keel-model.json could not be read._"
    lines = [f"python=={manifest.python_version}", *manifest.requirements]
    return "```\n" + "\n".join(lines) + "\n```"


# -- Markdown ---------------------------------------------------------------------------------


def _section(title: str, body: str) -> str:
    return f"## {title}\n\n{body}"


def _pairs_table(what: str, values: Mapping[str, Any]) -> str:
    if not values:
        return ""
    return _table([what, "value"], [(k, _number(v)) for k, v in sorted(values.items())])


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = [_row(header), _row(["---"] * len(header))]
    lines += [_row(row) for row in rows]
    return "\n".join(lines)


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def _number(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _heading_before(lines: list[str], index: int) -> str:
    for line in reversed(lines[: index + 1]):
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return ""
