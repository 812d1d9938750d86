"""``keel serve``: a model as an HTTP scoring service (uvicorn)."""

from __future__ import annotations

import click

__all__ = ["serve"]


@click.command()
@click.argument("model_uri")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="TCP port."
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Worker processes sharing the port, each with its own copy of the model.",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
def serve(model_uri: str, host: str, port: int, workers: int, log_level: str) -> None:
    """Serve MODEL_URI (runs:/RUN_ID/PATH, models:/NAME/VERSION or models:/NAME@ALIAS) over
    HTTP: POST /predict, GET /health, /ready and /metadata.

    The model is loaded once, before the port opens; a URI that cannot be loaded is an error
    and nothing listens.

    \b
    Examples:
      keel serve models:/diabetes@champion
      keel serve models:/diabetes/3 --host 0.0.0.0 --port 9000 --workers 4
      curl -s localhost:8080/predict -d '{"records": [{"age": 0.03, "bmi": 0.06}]}'
    """
    from keel.serving.launch import serve as run

    run(model_uri, host=host, port=port, workers=workers, log_level=log_level)
