"""``keel serve``: a model or a deployment as an HTTP scoring service (uvicorn)."""

from __future__ import annotations

import click

__all__ = ["serve"]


@click.command()
@click.argument("model_uri", required=False)
@click.option(
    "--deployment", metavar="NAME", help="Serve this deployment's arms instead of one model."
)
@click.option(
    "--follow-alias",
    is_flag=True,
    help="Re-resolve MODEL_URI's alias every --poll-interval seconds and swap in the version "
    "it points at, without dropping a request.",
)
@click.option(
    "--poll-interval",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    metavar="SECONDS",
    help="How often the alias (--follow-alias) or the deployment's configuration is checked.",
)
@click.option(
    "--max-batch-rows",
    default=1024,
    show_default=True,
    type=click.IntRange(min=0),
    help="Rows one predict call takes at most when concurrent requests are batched "
    "(0: no micro-batching).",
)
@click.option(
    "--max-wait-ms",
    default=2.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Under concurrent load, how long a batch may wait to be as large as the previous one "
    "(a lone request never waits; 0: never wait).",
)
@click.option(
    "--log-predictions/--no-log-predictions",
    default=True,
    show_default=True,
    help="Append every prediction to the prediction log (Parquet in the artifact store).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="TCP port."
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Worker processes sharing the port, each with its own copy of the models.",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
def serve(
    model_uri: str | None,
    deployment: str | None,
    follow_alias: bool,
    poll_interval: float,
    max_batch_rows: int,
    max_wait_ms: float,
    log_predictions: bool,
    host: str,
    port: int,
    workers: int,
    log_level: str,
) -> None:
    """Serve MODEL_URI (runs:/RUN_ID/PATH, models:/NAME/VERSION or models:/NAME@ALIAS), or a
    deployment, over HTTP: POST /predict, GET /health, /ready, /metadata and /metrics.

    The models are loaded once, before the port opens; one that cannot be loaded is an error
    and nothing listens. Concurrent requests are scored together (micro-batching).

    \b
    Examples:
      keel serve models:/diabetes@champion
      keel serve models:/diabetes@champion --follow-alias --poll-interval 2
      keel serve models:/diabetes/3 --host 0.0.0.0 --port 9000 --workers 4
      keel serve --deployment diabetes
      curl -s localhost:8080/predict -d '{"records": [{"age": 0.03, "bmi": 0.06}]}'
    """
    if (model_uri is None) == (deployment is None):
        raise click.UsageError("give either MODEL_URI or --deployment NAME (exactly one)")
    if follow_alias and deployment is not None:
        raise click.UsageError(
            "--follow-alias is for MODEL_URI: a deployment's aliases are always followed"
        )
    from keel.serving.launch import ServeOptions
    from keel.serving.launch import serve as run
    from keel.serving.plan import PlanSource
    from keel.serving.sources import ModelSource, deployment_source

    source: PlanSource
    if model_uri is not None:
        source = ModelSource(model_uri, follow_alias=follow_alias, interval=poll_interval)
    else:
        assert deployment is not None
        source = deployment_source(deployment, interval=poll_interval)
    options = ServeOptions(
        max_batch_rows=max_batch_rows, max_wait_ms=max_wait_ms, log_predictions=log_predictions
    )
    run(source, options=options, host=host, port=port, workers=workers, log_level=log_level)
