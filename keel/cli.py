"""The ``keel`` command: a root group whose subcommand groups are imported only when used.

A user mistake (any :class:`keel.errors.KeelError`) prints one red message and exits 1, never a
traceback; ``keel --help`` imports nothing heavy.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from keel.lazy_cli import LazyGroup

__all__ = ["cli", "main"]

#: subcommand -> "module:attribute", imported on first use
LAZY_COMMANDS = {
    "experiments": (
        "keel.tracking.cli:experiments",
        "Create, list, rename and delete experiments.",
    ),
    "runs": ("keel.tracking.cli:runs", "List, show, search, compare, export and delete runs."),
    "server": ("keel.server.cli:server", "Serve the REST API over HTTP (uvicorn, N workers)."),
    "sync": ("keel.tracking.sync_cli:sync", "Send metric points saved offline to the server."),
    "users": ("keel.auth.cli:users", "Create, list and disable users (keel server --auth)."),
    "tokens": ("keel.auth.cli:tokens", "Create, list and revoke API tokens."),
    "grants": ("keel.auth.cli:grants", "Give users read or write on an experiment."),
    "audit": ("keel.auth.cli:audit", "Show who wrote what, when (admins)."),
    "data": ("keel.data.cli:data", "Version data files and folders in the content store."),
    "remote": ("keel.data.cli_remote:remote", "Add, list and remove data remotes (push/pull)."),
    "models": ("keel.models.cli:models", "Register models, move aliases, diff and trace versions."),
    "serve": ("keel.serving.cli:serve", "Serve a model over HTTP: POST /predict (uvicorn)."),
    "deploy": (
        "keel.serving.deployments.cli:deploy",
        "Deployments: canary, A/B and shadow traffic between model versions.",
    ),
    "batch-predict": (
        "keel.serving.batch_cli:batch_predict",
        "Score CSV or Parquet files in chunks into Parquet (local or Ray).",
    ),
    "worker": (
        "keel.serving.worker_cli:worker",
        "Score prediction requests from a Redis Stream (consumer group).",
    ),
}


@click.group(
    cls=LazyGroup, lazy=LAZY_COMMANDS, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(package_name="keel", prog_name="keel")
def cli() -> None:
    """Keel: track experiments, version data and models, serve and monitor them.

    \b
    Examples:
      keel init                      # a .keel store in this folder
      keel runs search "metrics.rmse < 50 and params.model = 'ridge'"
      keel runs compare 3f2a 9c1b
    """


@cli.command()
@click.argument("path", required=False, type=click.Path(file_okay=False))
def init(path: str | None) -> None:
    """Create a Keel store (.keel/) in PATH (default: the current folder).

    \b
    Example:
      keel init ~/projects/churn
    """
    from pathlib import Path

    from keel.db import open_engine
    from keel.settings import HOME_DIRNAME, Settings

    home = (Path(path) if path else Path.cwd()).resolve() / HOME_DIRNAME
    existed = home.is_dir()
    home.mkdir(parents=True, exist_ok=True)
    settings = Settings(home=home)
    open_engine(settings.db_url, busy_timeout=settings.sqlite_busy_timeout).dispose()
    verb = "Using existing" if existed else "Created"
    click.echo(f"{verb} Keel store at {home}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def config(as_json: bool) -> None:
    """Print every setting's resolved value and where it came from.

    \b
    Example:
      KEEL_HOME=/tmp/k keel config
    """
    from keel.settings import Settings

    rows = Settings().describe()
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("setting", "value", "from", "environment variable", box=None)
    for row in rows:
        table.add_row(row["name"], str(row["value"]), row["source"], row["env"])
    Console().print(table)


def main(argv: list[str] | None = None) -> Any:
    """Entry point of the ``keel`` console script."""
    from keel.errors import KeelError

    try:
        return cli.main(args=argv, prog_name="keel", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except KeelError as exc:
        click.secho(f"Error: {exc}", fg="red", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except OSError as exc:  # a path the user named: a missing folder, a file where one is needed
        click.secho(
            f"Error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), fg="red", err=True
        )
        sys.exit(1)
    except Exception as exc:
        if "sqlalchemy" not in sys.modules:
            raise
        from sqlalchemy.exc import SQLAlchemyError

        if not isinstance(exc, SQLAlchemyError):
            raise
        reason = getattr(exc, "orig", None) or exc
        click.secho(
            f"Error: the database refused the request: {reason}. `keel config` shows which "
            "database is in use (a damaged store or another Keel version's can cause this).",
            fg="red",
            err=True,
        )
        sys.exit(1)
