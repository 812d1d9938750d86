"""``keel models``: list, show, register, alias, tag, diff, lineage, history and export.

Each command calls one function of :mod:`keel.models.api` and prints with rich, or JSON with
``--json`` for the listing commands. Versions are written ``NAME/3`` or ``NAME@champion``
(``models:/`` URIs work too). ``alias set`` on an alias the model's policy protects exits
:data:`ALIAS_REQUESTED`: the alias did not move, a request awaits approval.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from keel.lazy_cli import LazyGroup
from keel.models import api
from keel.models.cli_eval import mount as mount_evaluation
from keel.models.cli_governance import mount as mount_governance
from keel.models.compare import Change, ModelDiff
from keel.models.governance_models import AliasRequest
from keel.models.lineage import LineageNode, ModelLineage
from keel.models.models import AuditEvent, ModelVersion
from keel.models.uris import parse_version_ref

__all__ = ["ALIAS_REQUESTED", "models"]

ALIAS_REQUESTED = 3
"""``keel models alias set``'s exit status when the alias is protected: a request awaits
approval and the alias did not move."""

_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


#: subcommand -> "module:attribute", imported on first use (serving sits above models)
LAZY_COMMANDS = {
    "export": (
        "keel.serving.export_cli:export",
        "Export a model as a wheel, a Docker build context or an AWS Lambda package.",
    ),
}


@click.group(cls=LazyGroup, lazy=LAZY_COMMANDS)
def models() -> None:
    """Register logged models, move their aliases, compare and trace versions.

    \b
    Example:
      keel models register runs:/5f0c.../model churn
      keel models alias set churn champion 3 --reason "rmse 52 < 57"
      keel models lineage churn@champion
    """


mount_evaluation(models)  # evaluate, evaluations, gate
mount_governance(models)  # policy, requests, approve, reject, card


@models.command("list")
@click.option("--name-like", metavar="PATTERN", help="Only names matching a SQL LIKE pattern.")
@_json_option
def list_(name_like: str | None, as_json: bool) -> None:
    """List registered models: latest version, aliases, description.

    \b
    Example:
      keel models list
      keel models list --name-like 'churn%' --json
    """
    found = api.list_models(name_like=name_like)
    if as_json:
        _echo_json([m.model_dump(mode="json") for m in found])
        return
    if not found:
        click.echo("No registered models yet (keel models register runs:/RUN_ID/model NAME).")
        return
    table = Table("model", "latest", "aliases", "updated", "description")
    for m in found:
        table.add_row(
            escape(m.name),
            str(m.latest_version or "-"),
            escape(_aliases(m.aliases)),
            _when(m.updated_at),
            escape(_first_line(m.description)),
        )
    _console().print(table)


@models.command()
@click.argument("name")
@_json_option
def show(name: str, as_json: bool) -> None:
    """Show model NAME: description, tags, aliases and its versions.

    \b
    Example:
      keel models show churn
      keel models show churn --json
    """
    model = api.get_model(name)
    found = api.list_versions(name)
    if as_json:
        document = model.model_dump(mode="json")
        document["versions"] = [v.model_dump(mode="json") for v in found]
        _echo_json(document)
        return
    console = _console()
    console.print(
        f"[bold]{escape(model.name)}[/] (created by {escape(model.created_by)} "
        f"{_when(model.created_at)})"
    )
    if model.description:
        console.print(escape(model.description))
    if model.tags:
        console.print(f"tags: {escape(_pairs(model.tags))}")
    console.print(f"aliases: {escape(_aliases(model.aliases) or 'none')}")
    _print_versions(console, found)


@models.command()
@click.argument("name")
@_json_option
def versions(name: str, as_json: bool) -> None:
    """List the versions of model NAME, newest first.

    \b
    Example:
      keel models versions churn
      keel models versions churn --json
    """
    found = api.list_versions(name)
    if as_json:
        _echo_json([v.model_dump(mode="json") for v in found])
        return
    _print_versions(_console(), found)


@models.command()
@click.argument("uri")
@click.argument("name")
@click.option("--description", "-d", default="", help="The version's description.")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="A tag; repeatable.")
def register(uri: str, name: str, description: str, tags: Sequence[str]) -> None:
    """Register the model logged at URI (runs:/RUN_ID/PATH) as the next version of NAME.

    \b
    Example:
      keel models register runs:/5f0c.../model churn
      keel models register runs:/5f0c.../model churn --tag team=growth -d "weekly retrain"
    """
    version = api.register(uri, name, description=description, tags=_tag_options(tags))
    click.echo(f"Registered {version.uri} ({version.flavor}, from {version.source})")


@models.group()
def alias() -> None:
    """Point an alias (champion, challenger...) at a version, or remove it.

    \b
    Example:
      keel models alias set churn champion 3 --reason "rmse 52 < 57"
      keel models alias delete churn challenger
    """


@alias.command("set")
@click.argument("name")
@click.argument("alias_name", metavar="ALIAS")
@click.argument("version", type=click.IntRange(min=1))
@click.option("--reason", help="Why; recorded in the audit trail (keel models history).")
def set_alias(name: str, alias_name: str, version: int, reason: str | None) -> None:
    """Point ALIAS of model NAME at VERSION, moving it atomically if it is set.

    An alias the model's policy protects does not move: a request is recorded, printed, and
    the command exits 3 (a request awaits approval: keel models approve NAME ID).

    \b
    Example:
      keel models alias set churn champion 3 --reason "rmse 52 < 57"
    """
    before = api.get_model(name).aliases.get(alias_name)
    done = api.set_alias(name, alias_name, version, reason=reason)
    if isinstance(done, AliasRequest):  # a protected alias: approval needed
        click.echo(done.summary)
        click.echo(
            f"{name}@{alias_name} did not move; keel models approve {name} {done.id} moves it",
            err=True,
        )
        sys.exit(ALIAS_REQUESTED)
    moved = f" (was {before})" if before is not None and before != version else ""
    click.echo(f"{name}@{alias_name} -> {version}{moved}")


@alias.command("delete")
@click.argument("name")
@click.argument("alias_name", metavar="ALIAS")
@click.option("--reason", help="Why; recorded in the audit trail (keel models history).")
def delete_alias(name: str, alias_name: str, reason: str | None) -> None:
    """Remove ALIAS of model NAME.

    \b
    Example:
      keel models alias delete churn challenger --reason "experiment over"
    """
    version = api.delete_alias(name, alias_name, reason=reason)
    click.echo(f"Removed {name}@{alias_name} (it pointed at {version})")


@models.command()
@click.argument("target", metavar="NAME[/VERSION]")
@click.argument("key")
@click.argument("value", required=False)
@click.option("--delete", is_flag=True, help="Remove tag KEY instead of setting it.")
def tag(target: str, key: str, value: str | None, delete: bool) -> None:
    """Set tag KEY to VALUE on model NAME, or on one version (NAME/3); --delete removes it.

    \b
    Example:
      keel models tag churn owner growth-team
      keel models tag churn/3 validated yes
      keel models tag churn/3 validated --delete
    """
    ref = parse_version_ref(target, allow_bare=True)
    if ref.alias is not None:
        raise click.UsageError(f"tag a version by number (NAME/3), not an alias: {target}")
    if delete == (value is not None):
        raise click.UsageError("give a VALUE to set, or --delete without one")
    if value is None:
        api.delete_tag(ref.name, key, version=ref.version)
        click.echo(f"Removed tag {key} from {target}")
    else:
        api.set_tag(ref.name, key, value, version=ref.version)
        click.echo(f"Tagged {target}: {key}={value}")


@models.command()
@click.argument("left", metavar="V1")
@click.argument("right", metavar="V2")
@_json_option
def diff(left: str, right: str, as_json: bool) -> None:
    """Compare two versions: params, metrics, signature, requirements and training data.

    Only what differs is listed.

    \b
    Example:
      keel models diff churn@champion churn/4
      keel models diff churn/3 churn/4 --json
    """
    found = api.diff(left, right)
    if as_json:
        _echo_json(found.model_dump(mode="json"))
        return
    _print_diff(_console(), found)


@models.command()
@click.argument("ref", metavar="NAME@ALIAS|NAME/VERSION")
@_json_option
def lineage(ref: str, as_json: bool) -> None:
    """Trace a version: data versions -> run (commit, params, environment) -> version -> aliases.

    \b
    Example:
      keel models lineage churn@champion
      keel models lineage churn/3 --json
    """
    graph = api.lineage(ref)
    if as_json:
        _echo_json(graph.model_dump(mode="json"))
        return
    _console().print(_lineage_tree(graph))


@models.command()
@click.argument("name")
@_json_option
def history(name: str, as_json: bool) -> None:
    """Show model NAME's audit trail: every change, who made it, when and why.

    \b
    Example:
      keel models history churn
      keel models history churn --json
    """
    events = api.history(name)
    if as_json:
        _echo_json([e.model_dump(mode="json") for e in events])
        return
    table = Table()
    for column in ("at", "actor", "action"):
        table.add_column(column, no_wrap=True)
    table.add_column("change", overflow="fold")
    table.add_column("reason")
    for event in events:
        table.add_row(
            _when(event.at),
            escape(event.actor),
            event.action,
            escape(_change(event)),
            escape(event.reason or ""),
        )
    _console().print(table)


# -- output ------------------------------------------------------------------------------------


def _print_versions(console: Console, found: list[ModelVersion]) -> None:
    table = Table()
    for column in ("version", "aliases", "created", "by", "flavor"):
        table.add_column(column, no_wrap=True)
    table.add_column("source", overflow="fold")
    table.add_column("tags")
    for v in found:
        table.add_row(
            str(v.version),
            escape(", ".join(v.aliases)),
            _when(v.created_at),
            escape(v.created_by),
            v.flavor,
            escape(v.source),
            escape(_pairs(v.tags)),
        )
    console.print(table)


def _print_diff(console: Console, found: ModelDiff) -> None:
    left, right = found.left, found.right
    console.print(f"[bold]{left.name}/{left.version}[/] -> [bold]{right.name}/{right.version}[/]")
    if found.same:
        console.print("No differences in params, metrics, signature, requirements or data.")
        return
    sections: list[tuple[str, Sequence[Change]]] = [
        ("flavor", [found.flavor] if found.flavor else []),
        ("params", found.params),
        ("metrics", found.metrics),
        ("signature", found.signature),
        ("requirements", found.requirements),
        ("training data", found.training_data),
    ]
    table = Table(
        "", "key", f"{left.name}/{left.version}", f"{right.name}/{right.version}", "delta"
    )
    for section, changes in sections:
        for n, change in enumerate(changes):
            delta = getattr(change, "delta", None)
            table.add_row(
                section if n == 0 else "",
                escape(change.key),
                escape(_value(change.left)),
                escape(_value(change.right)),
                f"{delta:+.6g}" if delta is not None else "",
            )
    console.print(table)


def _lineage_tree(graph: ModelLineage) -> Tree:
    root = graph.node(graph.root)
    tree = Tree(_node_line(root))
    if root.kind == "run":
        _add_run_inputs(tree, graph, root)
        for edge in graph.downstream(root.id):
            version = graph.node(edge.target)
            branch = tree.add(f"registered as {_node_line(version)}")
            _add_aliases(branch, graph, version)
        return tree
    for edge in graph.upstream(root.id):
        run = graph.node(edge.source)
        branch = tree.add(f"logged by {_node_line(run)}")
        _add_run_details(branch, run)
        _add_run_inputs(branch, graph, run)
    _add_aliases(tree, graph, root)
    return tree


def _add_run_details(branch: Tree, run: LineageNode) -> None:
    attributes = run.attributes
    if attributes.get("params"):
        branch.add(f"params: {escape(_pairs(attributes['params']))}")
    if attributes.get("environment"):
        branch.add(f"environment: {escape(_pairs(attributes['environment']))}")


def _add_run_inputs(branch: Tree, graph: ModelLineage, run: LineageNode) -> None:
    inputs = [e for e in graph.upstream(run.id) if e.relation == "input"]
    if not inputs:
        branch.add("data: none recorded (keel.data.load or keel.log_input inside the run)")
        return
    data = branch.add("data")
    for edge in inputs:
        data.add(f"{_node_line(graph.node(edge.source))} [dim]({edge.context})[/]")


def _add_aliases(branch: Tree, graph: ModelLineage, version: LineageNode) -> None:
    aliases = [graph.node(e.target) for e in graph.downstream(version.id) if e.relation == "alias"]
    if aliases:
        branch.add("aliases: " + ", ".join(f"[bold]{escape(a.label)}[/]" for a in aliases))


def _node_line(node: LineageNode) -> str:
    a = node.attributes
    label = f"[bold]{escape(node.label)}[/]"
    if a.get("missing"):
        return f"{label} [red](no longer in this database)[/]"
    if node.kind == "model_version":
        return f"{label} {a['flavor']}, by {escape(a['created_by'])}, digest {a['digest'][:12]}"
    if node.kind == "run":
        commit = f", commit {str(a['commit'])[:12]}" if a.get("commit") else ""
        return f"run {label} ({node.id[4:]}) {a['status']}{commit}"
    if node.kind == "dataset":
        rows = f", {a['rows']:,} rows" if a.get("rows") is not None else ""
        return f"{label} {a.get('format') or a.get('kind')}{rows}"
    return label


def _change(event: AuditEvent) -> str:
    """What an audit event changed, in a few words: ``champion -> 3 (was 2)``, ``v3 k=v``."""
    d = event.detail
    version = f"v{event.version}" if event.version is not None else ""
    if event.action == "set_alias":
        was = f" (was {d['from']})" if d.get("from") is not None else ""
        via = f" by request #{d['request']}" if d.get("request") else ""
        return f"{event.alias} -> {event.version}{was}{via}"
    if event.action in ("request", "approve", "reject"):
        checks = "; ".join(
            f"{c['check']} {'passes' if c['passed'] else 'fails'}" for c in d.get("checks", [])
        )
        by = f", requested by {d['requested_by']}" if d.get("requested_by") else ""
        line = f"#{d.get('request')} {event.alias} -> {event.version}{by}"
        return f"{line}; checks: {checks}" if checks else line
    if event.action in ("set_policy", "clear_policy"):
        parts = [f"protect {', '.join(d.get('protect', []))}"]
        parts.append(f"approvers {', '.join(d.get('approvers', []))}")
        parts += [f"require {check}" for check in d.get("requires", [])]
        parts += ["require card"] if d.get("require_card") else []
        if d.get("cancelled_requests"):
            parts.append(f"cancelled #{', #'.join(map(str, d['cancelled_requests']))}")
        return ("was: " if event.action == "clear_policy" else "") + "; ".join(parts)
    if event.action in ("generate_card", "edit_card"):
        sections = f" in {', '.join(d['sections'])}" if d.get("sections") else ""
        added, removed = d.get("lines_added", 0), d.get("lines_removed", 0)
        return f"{version} card +{added} -{removed} lines{sections}"
    if event.action == "evaluate":
        return f"{version} on {d.get('dataset')} ({d.get('task')}, {d.get('rows')} rows)"
    if event.action == "gate":
        verdict = "pass" if d.get("passed") else "fail"
        against = (
            f"{d.get('against')} (v{d['against_version']})"
            if d.get("against_version")
            else str(d.get("against"))
        )
        return f"{version} {verdict} on {d.get('metric')} against {against}"
    if event.action == "delete_alias":
        return f"{event.alias} (was {event.version})"
    if event.action == "create_version":
        return f"{version} from {d.get('source', '')}"
    if event.action == "set_tag":
        return f"{version} {d.get('key')}={d.get('value')}".strip()
    if event.action == "delete_tag":
        return f"{version} -{d.get('key')}".strip()
    if event.action == "set_description":
        return f"{version} {_first_line(str(d.get('to', '')))}".strip()
    extra = ", ".join(f"{k}={v}" for k, v in d.items() if v)
    return " ".join(part for part in (version, event.alias or "", extra) if part)


def _tag_options(tags: Sequence[str]) -> dict[str, str]:
    parsed = {}
    for item in tags:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--tag")
        parsed[key] = value
    return parsed


def _aliases(aliases: dict[str, int]) -> str:
    return ", ".join(f"{a} -> {v}" for a, v in aliases.items())


def _pairs(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _first_line(text: str, width: int = 60) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def _when(at: datetime) -> str:
    return at.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _echo_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2))


def _console() -> Console:
    return Console(highlight=False)
