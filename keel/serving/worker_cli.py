"""``keel worker``: score prediction requests from a Redis Stream (see ``docs/workers.md``)."""

from __future__ import annotations

import logging

import click

__all__ = ["worker"]


@click.command()
@click.argument("model_uri")
@click.option(
    "--broker",
    default="redis://127.0.0.1:6379/0",
    show_default=True,
    help="Redis URL: redis://[:PASSWORD@]HOST:PORT/DB, rediss://... or unix:///path.sock.",
)
@click.option("--stream", required=True, help="The request stream to consume.")
@click.option("--group", default="keel", show_default=True, help="Consumer group (created).")
@click.option("--consumer", default=None, help="This worker's name in the group [HOST-PID].")
@click.option(
    "--batch",
    default=64,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Requests per read, scored in one predict call where their columns match.",
)
@click.option(
    "--block-ms",
    default=1000,
    show_default=True,
    type=click.IntRange(1, 60_000),
    help="How long one read waits for requests.",
)
@click.option(
    "--claim-idle-ms",
    default=30_000,
    show_default=True,
    type=click.IntRange(1),
    help="Claim requests pending this long on a dead consumer (above the longest batch).",
)
@click.option(
    "--reply-stream", default=None, help="Replies for requests without reply_to [STREAM:replies]."
)
@click.option(
    "--reply-maxlen",
    default=100_000,
    show_default=True,
    type=click.IntRange(0),
    help="Replies kept per reply stream (approximate trim; 0 keeps all).",
)
@click.option(
    "--reply-ttl",
    default=86_400,
    show_default=True,
    type=click.IntRange(0),
    help="Seconds a reply stream lives after its last reply (0: forever).",
)
@click.option(
    "--max-deliveries",
    default=3,
    show_default=True,
    type=click.IntRange(1),
    help="A request delivered more often (workers died on it) gets an error reply.",
)
@click.option(
    "--keep-requests", is_flag=True, help="Leave answered requests in the stream (acked)."
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
def worker(
    model_uri: str,
    broker: str,
    stream: str,
    group: str,
    consumer: str | None,
    batch: int,
    block_ms: int,
    claim_idle_ms: int,
    reply_stream: str | None,
    reply_maxlen: int,
    reply_ttl: int,
    max_deliveries: int,
    keep_requests: bool,
    log_level: str,
) -> None:
    """Score MODEL_URI's prediction requests from a Redis Stream in a consumer group.

    Each request entry's "body" field holds {"records": [...]} or {"columns": {...}}; the
    reply (id, status, predictions or error, model) goes to the entry's "reply_to" stream,
    else STREAM:replies, and the request is acknowledged in the same atomic step. Requests a
    dead worker held are claimed after --claim-idle-ms. SIGTERM or Ctrl-C finishes the batch
    in hand and exits 0. Run more workers with the same --stream and --group to scale.

    \b
    Examples:
      keel worker models:/diabetes@champion --stream scoring
      keel worker models:/diabetes/3 --broker redis://cache:6379/1 --stream scoring --batch 128
      redis-cli XADD scoring '*' id r1 body '{"records": [{"age": 0.03, "bmi": 0.06}]}'
      redis-cli XREAD BLOCK 5000 STREAMS scoring:replies 0
    """
    from keel.serving.worker import WorkerOptions, default_consumer, run_worker

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s keel worker: %(message)s"
    )
    options = WorkerOptions(
        stream=stream,
        group=group,
        consumer=consumer or default_consumer(),
        batch=batch,
        block_ms=block_ms,
        claim_idle_ms=claim_idle_ms,
        reply_stream=reply_stream,
        reply_maxlen=reply_maxlen,
        reply_ttl_s=reply_ttl,
        max_deliveries=max_deliveries,
        keep_requests=keep_requests,
    )
    run_worker(model_uri, broker=broker, options=options)
