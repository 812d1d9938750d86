"""The tracking API: :class:`Client` over the metadata store and the artifact store.

A Client is explicit (built from :class:`keel.settings.Settings`); the fluent functions in
:mod:`keel.tracking.fluent` keep an active run and call it. Metric points are buffered and
written in batches (see :mod:`keel.tracking.buffer`); every read first flushes what is pending,
so a client always reads its own writes.
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import json
import os
import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from keel.artifacts import ArtifactStore
from keel.db import open_engine
from keel.errors import InvalidInput, NotFound
from keel.settings import Settings
from keel.tracking.api_artifacts import ArtifactMethods
from keel.tracking.buffer import MetricBuffer
from keel.tracking.client_base import MetricLogging
from keel.tracking.inputs import (
    MAX_RESULTS,
    collect_pages,
)
from keel.tracking.liveness import HOST, PROCESS_SPACE, lost_runs
from keel.tracking.models import (
    Experiment,
    LifecycleStage,
    Metric,
    MetricBucket,
    Run,
    RunPage,
    RunStatus,
)
from keel.tracking.source import Source, current_user, record_source
from keel.tracking.source import capture_source as capture_source_info
from keel.tracking.store import MetricCurve, PointTuple, TrackingStore, now_ms

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["DEFAULT_EXPERIMENT", "Client"]

DEFAULT_EXPERIMENT = "Default"
_clients: weakref.WeakSet[Client] = weakref.WeakSet()


class Client(ArtifactMethods, MetricLogging):
    """Tracking over an explicit store: ``Client(Settings(home=...))``.

    Example:
        >>> client = Client()
        >>> run = client.create_run(client.get_or_create_experiment("demo").experiment_id)
        >>> client.log_metric(run.run_id, "rmse", 0.4, step=1)
        >>> client.end_run(run.run_id)
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.engine = open_engine(
            self.settings.db_url, busy_timeout=self.settings.sqlite_busy_timeout
        )
        self.store = TrackingStore(self.engine)
        self._artifacts: ArtifactStore | None = None
        self._open_runs: dict[str, None] = {}
        self._buffer = MetricBuffer(
            self.store,
            interval=self.settings.metric_flush_interval,
            size=self.settings.metric_flush_size,
            heartbeat_interval=self.settings.heartbeat_interval,
            open_runs=lambda: list(self._open_runs),
        )
        self.mark_lost_runs()
        _clients.add(self)

    def flush(self) -> None:
        """Write every buffered metric point now."""
        self._buffer.flush()

    @property
    def _intake(self) -> MetricBuffer:
        return self._buffer

    def close(self) -> None:
        """Flush, stop the background writer and release database connections."""
        self._buffer.close()
        self.engine.dispose()
        _clients.discard(self)

    # -- experiments ----------------------------------------------------------------------
    def create_experiment(self, name: str, *, tags: Mapping[str, str] | None = None) -> Experiment:
        return self.store.get_experiment(self.store.create_experiment(name, tags=tags))

    def get_experiment(self, experiment_id: int) -> Experiment:
        return self.store.get_experiment(experiment_id)

    def get_experiment_by_name(self, name: str) -> Experiment | None:
        return self.store.get_experiment_by_name(name)

    def get_or_create_experiment(self, name: str) -> Experiment:
        """The experiment called ``name``, created if missing (an AlreadyExists race is fine)."""
        found = self.store.get_experiment_by_name(name)
        if found is None:
            from keel.errors import AlreadyExists

            try:
                return self.create_experiment(name)
            except AlreadyExists:
                found = self.store.get_experiment_by_name(name)
                assert found is not None
        if found.lifecycle_stage is LifecycleStage.DELETED:
            raise InvalidInput(
                f"experiment {name!r} is deleted; restore it with: keel experiments restore "
                f"{found.experiment_id}",
                name=name,
            )
        return found

    def resolve_experiment(self, name_or_id: str | int) -> Experiment:
        """An experiment by id (an int or digits) or by name."""
        if isinstance(name_or_id, int) or str(name_or_id).isdigit():
            try:
                return self.store.get_experiment(int(name_or_id))
            except NotFound:
                if isinstance(name_or_id, int):
                    raise
        found = self.store.get_experiment_by_name(str(name_or_id))
        if found is None:
            raise NotFound(
                f"no experiment named or numbered {name_or_id!r}; see: keel experiments list",
                experiment=str(name_or_id),
            )
        return found

    def list_experiments(self, *, lifecycle: str = "active") -> list[Experiment]:
        return self.store.list_experiments(lifecycle=lifecycle)

    def rename_experiment(self, experiment_id: int, new_name: str) -> Experiment:
        self.store.rename_experiment(experiment_id, new_name)
        return self.store.get_experiment(experiment_id)

    def delete_experiment(self, experiment_id: int) -> None:
        """Soft-delete an experiment and its runs (restore with restore_experiment)."""
        self.store.set_experiment_lifecycle(experiment_id, LifecycleStage.DELETED)

    def restore_experiment(self, experiment_id: int) -> None:
        self.store.set_experiment_lifecycle(experiment_id, LifecycleStage.ACTIVE)

    # -- runs -----------------------------------------------------------------------------
    def create_run(
        self,
        experiment_id: int,
        *,
        run_name: str | None = None,
        tags: Mapping[str, Any] | None = None,
        parent_run_id: str | None = None,
        start_time: int | None = None,
        capture_source: bool | None = None,
    ) -> Run:
        """Start a RUNNING run of this process; records its source (git, entry point,
        packages) by default. A server starts runs for callers with :meth:`create_remote_run`.
        """
        capture = self.settings.capture_source if capture_source is None else capture_source
        source = capture_source_info() if capture else None
        run = self.store.create_run(
            experiment_id=experiment_id,
            run_name=run_name,
            user=current_user(),
            host=HOST,
            pid=os.getpid(),
            process_space=PROCESS_SPACE,
            tags=_run_tags(HOST, parent_run_id, tags, source),
            parent_run_id=parent_run_id,
            start_time=start_time,
        )
        self._open_runs[run.run_id] = None
        self._buffer.start_heartbeats()
        if source is not None:
            record_source(source, run.run_id, self.log_text)
        return run

    def create_remote_run(
        self,
        experiment_id: int,
        *,
        host: str,
        user: str,
        run_name: str | None = None,
        tags: Mapping[str, Any] | None = None,
        parent_run_id: str | None = None,
        start_time: int | None = None,
    ) -> Run:
        """Start a RUNNING run for a caller in another process (what the server does).

        Unlike :meth:`create_run`, nothing about this process is recorded: no source, no
        process id, no heartbeats from here, even when ``host`` names this machine. The
        caller sends heartbeats (:meth:`heartbeat`) and ends the run; a run whose heartbeats
        stop is marked LOST after ``lost_run_timeout``.
        """
        return self.store.create_run(
            experiment_id=experiment_id,
            run_name=run_name,
            user=user,
            host=host,
            pid=None,
            tags=_run_tags(host, parent_run_id, tags, None),
            parent_run_id=parent_run_id,
            start_time=start_time,
        )

    def heartbeat(self, run_id: str) -> None:
        """Record that the process behind a run is alive.

        Raises:
            NotFound: no such run.
        """
        self.store.heartbeat_run(run_id)

    def end_run(
        self,
        run_id: str,
        *,
        status: RunStatus | str = RunStatus.FINISHED,
        end_time: int | None = None,
    ) -> None:
        """Flush the run's metrics and mark it ended with ``status`` (at ``end_time``, else now)."""
        try:
            final = RunStatus(str(status).upper())
        except ValueError:
            raise InvalidInput(
                f"unknown run status {status!r}; use one of "
                + ", ".join(s.value for s in RunStatus if s.is_terminal),
                status=str(status),
            ) from None
        if not final.is_terminal:
            raise InvalidInput(f"end_run needs a final status, not {final.value}")
        self._open_runs.pop(run_id, None)
        self._buffer.flush()
        # None: the store picks now, or the start if a caller's clock ran ahead of ours
        self.store.set_run_status(run_id, final, end_time=end_time)

    def get_run(self, run_id: str) -> Run:
        self._buffer.flush()
        return self.store.get_run(run_id)

    def get_runs(self, run_ids: Sequence[str]) -> list[Run]:
        """Several runs at once, in the order given (ids that do not exist are left out)."""
        self._buffer.flush()
        return self.store.get_runs(run_ids)

    def rename_run(self, run_id: str, new_name: str) -> Run:
        """Give a run another name (names need not be unique)."""
        self.store.rename_run(run_id, new_name)
        return self.get_run(run_id)

    def resolve_run_id(self, prefix: str, *, experiment_ids: Sequence[int] | None = None) -> str:
        """The full id of the one run whose id starts with ``prefix`` (of ``experiment_ids``)."""
        return self.store.resolve_run_id(prefix, experiment_ids=experiment_ids)

    def delete_runs(self, run_ids: Sequence[str]) -> int:
        return self.store.set_run_lifecycle(run_ids, LifecycleStage.DELETED)

    def restore_runs(self, run_ids: Sequence[str]) -> int:
        return self.store.set_run_lifecycle(run_ids, LifecycleStage.ACTIVE)

    def mark_lost_runs(self) -> list[str]:
        """Mark LOST every RUNNING run whose process is gone; returns their ids."""
        lost = lost_runs(
            (r for r in self.store.running_runs() if r.run_id not in self._open_runs),
            now_ms=now_ms(),
            timeout_s=self.settings.lost_run_timeout,
        )
        self.store.mark_lost(lost)
        return lost

    # -- params, tags, metrics ------------------------------------------------------------
    def log_param(self, run_id: str, key: str, value: Any) -> None:
        self.store.log_params(run_id, {key: value})

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        self.store.log_params(run_id, params)

    def set_tag(self, run_id: str, key: str, value: Any) -> None:
        self.store.set_tags(run_id, {key: value})

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        self.store.set_tags(run_id, tags)

    def delete_tag(self, run_id: str, key: str) -> None:
        self.store.delete_tag(run_id, key)

    def get_metric_history(self, run_id: str, key: str) -> list[Metric]:
        """Every (step, timestamp, value) logged for ``key``, in step order."""
        self._buffer.flush()
        return self.store.metric_history(run_id, key)

    def write_metric_points(
        self, points: Sequence[PointTuple], *, batch_id: str | None = None
    ) -> bool:
        """Store ``(run_id, key, value, step, timestamp)`` points now, in one transaction.

        Unlike :meth:`log_metric` nothing is buffered: when this returns the points are stored
        (a server must not acknowledge what it has not written). A batch carrying a
        ``batch_id`` that was applied before is skipped (a client's retry).

        Returns:
            False when the batch was skipped as already applied, else True.

        Raises:
            NotFound: a point names a run that does not exist.
        """
        return self.store.log_metric_points(points, batch_id=batch_id)

    def metric_buckets(self, run_id: str, key: str, *, buckets: int) -> list[MetricBucket]:
        """``key``'s history summarised in at most ``buckets`` step ranges (computed in SQL).

        Each bucket has its first and last step, point count, min, max and last value.

        Raises:
            NotFound: no such run.
        """
        self._buffer.flush()
        return self.store.metric_buckets(run_id, key, buckets=buckets)

    def metric_curves(self, run_id: str, *, buckets: int = 40) -> dict[str, MetricCurve]:
        """Each metric's point count, range and bucketed means (for sparklines)."""
        self._buffer.flush()
        return self.store.metric_curves(run_id, buckets=buckets)

    # -- search ---------------------------------------------------------------------------
    def search_runs(
        self,
        filter_string: str = "",
        *,
        order_by: Sequence[str] | None = None,
        experiment_ids: Sequence[int] | None = None,
        max_results: int = 1000,
        page_token: str | None = None,
        lifecycle: Literal["active", "deleted", "all"] = "active",
    ) -> RunPage:
        """One page of runs matching ``filter_string`` (see docs/search.md).

        Raises:
            InvalidQuery: the filter or an order_by clause does not parse.
        """
        if not 0 < max_results <= MAX_RESULTS:
            raise InvalidInput(f"max_results must be between 1 and {MAX_RESULTS}")
        self._buffer.flush()
        order = list(order_by or [])
        fingerprint = _query_fingerprint(filter_string, order, experiment_ids, lifecycle)
        offset = _decode_token(page_token, fingerprint) if page_token else 0
        ids = self.store.search_run_ids(
            filter_string=filter_string,
            order_by=order,
            experiment_ids=experiment_ids,
            lifecycle=lifecycle,
            limit=max_results + 1,
            offset=offset,
        )
        token = None
        if len(ids) > max_results:
            ids = ids[:max_results]
            token = _encode_token(offset + max_results, fingerprint)
        return RunPage(runs=self.store.get_runs(ids), next_page_token=token)

    def search_all(
        self,
        filter_string: str = "",
        *,
        order_by: Sequence[str] | None = None,
        experiment_ids: Sequence[int] | None = None,
        max_results: int = 1000,
        lifecycle: Literal["active", "deleted", "all"] = "active",
    ) -> list[Run]:
        """Up to ``max_results`` runs, following page tokens as needed."""
        return collect_pages(
            lambda size, token: self.search_runs(
                filter_string,
                order_by=order_by,
                experiment_ids=experiment_ids,
                max_results=size,
                page_token=token,
                lifecycle=lifecycle,
            ),
            max_results,
        )

    @staticmethod
    def runs_to_frame(runs: Sequence[Run]) -> pd.DataFrame:
        """Runs as a DataFrame with MLflow's columns: run_id, ..., params.x, metrics.y, tags.z."""
        import pandas as pd

        rows = []
        for run in runs:
            row: dict[str, Any] = {
                "run_id": run.run_id,
                "experiment_id": run.experiment_id,
                "run_name": run.run_name,
                "status": run.status.value,
                "user": run.user,
                "start_time": pd.Timestamp(run.start_time, unit="ms", tz="UTC"),
                "end_time": (
                    pd.Timestamp(run.end_time, unit="ms", tz="UTC")
                    if run.end_time is not None
                    else pd.NaT
                ),
            }
            row.update({f"metrics.{k}": v for k, v in run.metrics.items()})
            row.update({f"params.{k}": v for k, v in run.params.items()})
            row.update({f"tags.{k}": v for k, v in run.tags.items()})
            rows.append(row)
        frame = pd.DataFrame(rows)
        if frame.empty:
            frame = pd.DataFrame(
                columns=[
                    "run_id",
                    "experiment_id",
                    "run_name",
                    "status",
                    "user",
                    "start_time",
                    "end_time",
                ]
            )
        fixed = [c for c in frame.columns if "." not in c]
        dynamic = sorted(c for c in frame.columns if "." in c)
        order = [
            *fixed,
            *(c for c in dynamic if c.startswith("metrics.")),
            *(c for c in dynamic if c.startswith("params.")),
            *(c for c in dynamic if c.startswith("tags.")),
        ]
        return frame[order]


def _query_fingerprint(
    filter_string: str, order: list[str], experiment_ids: Sequence[int] | None, lifecycle: str
) -> str:
    raw = json.dumps([filter_string, order, sorted(experiment_ids or []), lifecycle])
    return hashlib.blake2s(raw.encode(), digest_size=6).hexdigest()


def _encode_token(offset: int, fingerprint: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset, "q": fingerprint}).encode()).decode()


def _decode_token(token: str, fingerprint: str) -> int:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        offset = int(data["o"])
        same = data["q"] == fingerprint
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidInput(f"page token {token!r} is not one Keel issued") from exc
    if not same or offset < 0:
        raise InvalidInput(
            "this page token belongs to a different query; repeat the query with the same "
            "filter, order and experiments to page through it"
        )
    return offset


def _run_tags(
    host: str,
    parent_run_id: str | None,
    tags: Mapping[str, Any] | None,
    source: Source | None,
) -> dict[str, Any]:
    """The tags a new run starts with: its source, host and parent, then the caller's own."""
    all_tags: dict[str, Any] = dict(source.tags) if source is not None else {}
    all_tags["keel.host"] = host
    if parent_run_id is not None:
        all_tags["keel.parent_run_id"] = parent_run_id
    all_tags.update(tags or {})
    return all_tags


def _after_fork_in_child() -> None:
    """A forked child (multiprocessing, data loader workers) logs through its own writer.

    The parent's writer thread and pooled database connections do not belong to the child;
    multiprocessing children leave through ``os._exit`` (no atexit), so a multiprocessing
    finalizer writes what they logged.
    """
    clients = list(_clients)
    if not clients:
        return
    for client in clients:
        client.engine.dispose(close=False)
        client._buffer.reset_after_fork()
        client._open_runs.clear()  # the parent keeps its runs alive, not the child
    from multiprocessing import util

    util.Finalize(None, flush_all_clients, exitpriority=100)
    # a multiprocessing child clears the finalizers right after the fork, then runs its
    # after-fork callbacks: register again from one of those
    util.register_after_fork(_FORK_SENTINEL, _register_exit_flush)


def _register_exit_flush(_sentinel: object) -> None:
    from multiprocessing import util

    util.Finalize(None, flush_all_clients, exitpriority=100)


class _Sentinel:
    """A weak-referenceable object for multiprocessing's after-fork registry."""


_FORK_SENTINEL = _Sentinel()


def flush_all_clients() -> None:
    """Flush every live client's buffered points (called at process exit)."""
    for client in list(_clients):
        try:
            client.flush()
        except Exception as exc:  # at exit there is no caller left to raise to
            import sys

            print(f"keel: could not write buffered metrics at exit: {exc}", file=sys.stderr)


atexit.register(flush_all_clients)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
