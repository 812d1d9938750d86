"""Run the Keel server under uvicorn: in this process, or as several worker processes.

Workers are separate processes started by uvicorn's supervisor. They cannot receive a
``Settings`` object, so the supervisor exports every setting as its ``KEEL_*`` environment
variable and each worker builds its app with :func:`worker_app` (``factory=True``). Each worker
opens the store, and the migration lock makes sure a fresh database is migrated once.

TCP_NODELAY: asyncio disables Nagle's algorithm only on connections whose listening socket was
created with ``IPPROTO_TCP``. Uvicorn's supervisor binds with protocol 0 (uvicorn issue #3149),
so with ``--workers N > 1`` every keep-alive request after a connection's first would wait
about 40 ms for the client's delayed ACK. Keel binds the listening socket itself with
``IPPROTO_TCP`` and hands it to the supervisor; a test measures the latency.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from typing import TYPE_CHECKING

from keel.errors import KeelError
from keel.settings import SecretStr, Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["WORKER_FACTORY", "bind_socket", "serve", "settings_environment", "worker_app"]

WORKER_FACTORY = "keel.server.launch:worker_app"
#: uvicorn's exit code for "failed before serving": its supervisor stops instead of respawning
STARTUP_FAILURE = 3
log = logging.getLogger("uvicorn.error")


def settings_environment(settings: Settings) -> dict[str, str]:
    """Every resolved setting as ``{"KEEL_<NAME>": value}``, for processes we start."""
    env = {}
    for setting in Settings.fields():
        value = getattr(settings, setting.name)
        if value is None:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, SecretStr):
            text = value.get_secret_value()
        else:
            text = str(value)
        env[setting.env] = text
    return env


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket whose accepted connections asyncio sets TCP_NODELAY on.

    Raises:
        OSError: the address is in use or not available.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def worker_app() -> FastAPI:
    """The app of one worker process, from the ``KEEL_*`` environment the supervisor set."""
    from sqlalchemy.exc import SQLAlchemyError

    from keel.server.app import create_app

    try:
        return create_app(Settings())
    except (KeelError, SQLAlchemyError, OSError) as exc:
        # a broken store fails every worker the same way: stop the supervisor, don't respawn
        log.error("keel server: a worker cannot open the store: %s", exc)
        sys.exit(STARTUP_FAILURE)


def serve(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 5000,
    workers: int = 1,
    log_level: str = "info",
) -> int:
    """Serve ``create_app(settings)`` until interrupted; returns the exit status.

    Args:
        workers: processes accepting connections on one shared socket.

    Raises:
        KeelError: the store cannot be opened (one process), or the address is unavailable.
    """
    import uvicorn

    if workers <= 1:
        from keel.server.app import create_app

        uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level)
        return 0

    from uvicorn.supervisors import Multiprocess

    os.environ.update(settings_environment(settings))
    config = uvicorn.Config(
        WORKER_FACTORY,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
    )
    try:
        sock = bind_socket(host, port)
    except OSError as exc:
        raise KeelError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    shown = f"[{host}]" if ":" in host else host
    log.info(
        "Keel server on http://%s:%d with %d workers (press CTRL+C to quit)",
        shown,
        sock.getsockname()[1],
        workers,
    )
    supervisor = Multiprocess(config, sockets=[sock])
    try:
        supervisor.run()
    finally:
        sock.close()
    failed = any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes)
    return STARTUP_FAILURE if failed else 0
