"""``keel models export``: a model as a wheel, a Docker build context or a Lambda package.

Mounted lazily under ``keel models`` (by the string ``keel.serving.export_cli:export``), so
``keel models`` does not import serving.
"""

from __future__ import annotations

import sys

import click
from rich.console import Console
from rich.markup import escape

from keel.data.cli_maint import progress_bar
from keel.serving.export import FORMATS, Export, export_model

__all__ = ["export"]


@click.command()
@click.argument("model_uri")
@click.option(
    "--format",
    "format_",
    required=True,
    metavar="|".join(FORMATS),
    help="wheel: a pip package with predict(); docker: a build context running keel serve; "
    "lambda: an AWS Lambda handler package.",
)
@click.option(
    "--out",
    required=True,
    metavar="DIR",
    help="Folder to write; must be new or empty unless --force.",
)
@click.option(
    "--name",
    help="Package name (default <model name>_model), also the image and function name.",
)
@click.option("--force", is_flag=True, help="Replace the content of a non-empty --out.")
def export(model_uri: str, format_: str, out: str, name: str | None, force: bool) -> None:
    """Export MODEL_URI (models:/NAME/VERSION, models:/NAME@ALIAS or runs:/RUN_ID/PATH) for
    other infrastructure, with the model's files and pinned requirements.

    \b
    Examples:
      keel models export models:/diabetes@champion --format wheel --out dist
      pip install dist/diabetes_model-3-py3-none-any.whl
      keel models export models:/diabetes/3 --format docker --out build/diabetes
      docker build -t diabetes build/diabetes && docker run -p 8080:8080 diabetes
      keel models export models:/diabetes/3 --format lambda --out build/lambda
    """
    with progress_bar(enabled=sys.stderr.isatty(), bytes_=True) as progress:
        done = export_model(
            model_uri, format=format_, out=out, name=name, force=force, progress=progress
        )
    _print(done)


def _print(done: Export) -> None:
    console = Console()
    console.print(
        f"Exported {escape(done.uri)} ({done.digest[:12]}) as {done.format}: "
        f"[bold]{escape(str(done.artifact))}[/bold]"
    )
    if done.format == "wheel":
        console.print(f"  pip install {escape(str(done.artifact))}")
        console.print(f"  python -c 'import {done.name}; print({done.name}.metadata())'")
    elif done.format == "docker":
        console.print(f"  docker build -t {done.name} {escape(str(done.out))}")
        console.print(f"  docker run --rm -p 8080:8080 {done.name}")
    else:
        console.print(f"  deploy: see {escape(str(done.out / 'README.md'))}")
