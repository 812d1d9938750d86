"""The tracking API over HTTP: :class:`RemoteClient` talks to a ``keel server``.

It offers the methods of :class:`keel.tracking.api.Client`, so the fluent API and the CLI work
unchanged once ``KEEL_TRACKING_URI`` (or :func:`keel.set_tracking_uri`) names a server;
:func:`connect` builds whichever client the settings call for. Metric points travel in batches
from a background thread (see :mod:`keel.tracking.remote_sender`); everything else is one
request, retried on connection errors and 5xx. The source of a run (git, packages) is captured
in this process and sent as tags and artifacts, since the server cannot see it.
"""

from __future__ import annotations

import atexit
import sys
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, Literal
from urllib.parse import quote

from keel.errors import AlreadyExists, InvalidInput, KeelError, NotFound
from keel.settings import Settings
from keel.tracking.api import Client
from keel.tracking.client_base import MetricLogging
from keel.tracking.inputs import (
    MAX_RESULTS,
    collect_pages,
)
from keel.tracking.liveness import HOST
from keel.tracking.models import (
    Experiment,
    ExperimentList,
    LifecycleStage,
    Metric,
    MetricBucket,
    MetricHistory,
    Run,
    RunOut,
    RunPage,
    RunPageOut,
    RunStatus,
)
from keel.tracking.remote_artifacts import RemoteArtifactMethods
from keel.tracking.remote_http import HttpApi, token_of
from keel.tracking.remote_sender import MetricSender, retry_later
from keel.tracking.source import capture_source as capture_source_info
from keel.tracking.source import current_user, record_source
from keel.tracking.store import MetricCurve, PointTuple, check_key, now_ms

__all__ = ["RemoteClient", "TrackingClient", "connect"]

_remote_clients: weakref.WeakSet[RemoteClient] = weakref.WeakSet()


def _name(value: str) -> str:
    return quote(value, safe="/")


class RemoteClient(RemoteArtifactMethods, MetricLogging):
    """Tracking over a keel server: ``RemoteClient(Settings(tracking_uri="http://host:5000"))``.

    Example:
        >>> client = RemoteClient(Settings(tracking_uri="http://127.0.0.1:5000"))
        >>> run = client.create_run(client.get_or_create_experiment("demo").experiment_id)
        >>> client.log_metric(run.run_id, "rmse", 0.4, step=1)
        >>> client.end_run(run.run_id)
    """

    runs_to_frame = staticmethod(Client.runs_to_frame)

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        if not self.settings.tracking_uri:
            raise InvalidInput("RemoteClient needs settings.tracking_uri (KEEL_TRACKING_URI)")
        self._closed = False
        self.tracking_uri = self.settings.tracking_uri.rstrip("/")
        self._api = HttpApi(self.tracking_uri, token=token_of(self.settings))
        self._open_runs: dict[str, None] = {}
        self.outbox = self.settings.home_path / "outbox"
        self._sender = MetricSender(
            self._api,
            outbox=self.outbox,
            interval=self.settings.metric_flush_interval,
            size=self.settings.metric_flush_size,
            max_points=self.settings.remote_max_buffered_points,
            heartbeat_interval=self.settings.heartbeat_interval,
            open_runs=lambda: list(self._open_runs),
        )
        self.undelivered = 0  # points the last end_run left in the outbox
        _remote_clients.add(self)

    def __repr__(self) -> str:
        return f"<RemoteClient {self.tracking_uri}>"

    @property
    def sender(self) -> MetricSender:
        """The background sender (its ``requests``, ``delivered`` and ``pending`` counts)."""
        return self._sender

    def flush(self) -> None:
        """Deliver every buffered metric point now (waiting up to ``remote_flush_timeout``).

        Raises:
            StorageError: the server could not take them in time; they stay buffered.
        """
        if self._sender.flush(self.settings.remote_flush_timeout) and self._sender.last_error:
            raise self._sender.last_error

    def _settle(self) -> None:
        """Before a read: deliver pending points, so a client reads its own writes."""
        if self._sender.pending:
            timeout = 0.0 if self._sender.failures else self.settings.remote_flush_timeout
            self._sender.flush(timeout)

    @property
    def _intake(self) -> MetricSender:
        return self._sender

    def close(self) -> None:
        """Deliver what is pending (saving the rest to the outbox), stop the sender thread.

        Closing twice is harmless: the second call does nothing.
        """
        if self._closed:
            return
        self._closed = True
        self._sender.close()
        self._finish_delivery(what="at close")
        self._api.close()
        _remote_clients.discard(self)

    def _finish_delivery(self, *, what: str) -> int:
        waiting = self._sender.pending or self._sender.writes_pending
        left = self._sender.flush(self.settings.remote_flush_timeout) if waiting else 0
        writes = self._sender.writes_pending
        if left or writes:
            files = self._sender.spill_all()
            also = f" and {writes} params/tags writes or run ends" if writes else ""
            _report(
                f"keel: {left} metric points{also} could not be delivered to {self.tracking_uri} "
                f"{what} ({self._sender.last_error}). They are saved in {self.outbox} "
                f"({len(files)} files); send them when the server is back with: keel sync"
            )
        return left + writes

    # -- experiments ----------------------------------------------------------------------
    def create_experiment(self, name: str, *, tags: Mapping[str, str] | None = None) -> Experiment:
        body = {"name": name, "tags": {k: str(v) for k, v in (tags or {}).items()}}
        response = self._api.request("POST", "/experiments", json=body, idempotent=False)
        return Experiment.model_validate(response.json())

    def get_experiment(self, experiment_id: int) -> Experiment:
        return Experiment.model_validate(self._api.get_json(f"/experiments/{int(experiment_id)}"))

    def get_experiment_by_name(self, name: str) -> Experiment | None:
        try:
            data = self._api.get_json(f"/experiments/by-name/{_name(name)}")
        except NotFound:
            return None
        return Experiment.model_validate(data)

    def get_or_create_experiment(self, name: str) -> Experiment:
        """The experiment called ``name``, created if missing (an AlreadyExists race is fine)."""
        found = self.get_experiment_by_name(name)
        if found is None:
            try:
                return self.create_experiment(name)
            except AlreadyExists:
                found = self.get_experiment_by_name(name)
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
                return self.get_experiment(int(name_or_id))
            except NotFound:
                if isinstance(name_or_id, int):
                    raise
        found = self.get_experiment_by_name(str(name_or_id))
        if found is None:
            raise NotFound(
                f"no experiment named or numbered {name_or_id!r}; see: keel experiments list",
                experiment=str(name_or_id),
            )
        return found

    def list_experiments(self, *, lifecycle: str = "active") -> list[Experiment]:
        data = self._api.get_json("/experiments", lifecycle=lifecycle)
        return ExperimentList.model_validate(data).experiments

    def rename_experiment(self, experiment_id: int, new_name: str) -> Experiment:
        response = self._api.request(
            "PATCH", f"/experiments/{int(experiment_id)}", json={"name": new_name}
        )
        return Experiment.model_validate(response.json())

    def delete_experiment(self, experiment_id: int) -> None:
        """Soft-delete an experiment and its runs (restore with restore_experiment)."""
        self._api.request("DELETE", f"/experiments/{int(experiment_id)}")

    def restore_experiment(self, experiment_id: int) -> None:
        self._api.request("POST", f"/experiments/{int(experiment_id)}/restore")

    # -- runs -----------------------------------------------------------------------------
    def create_run(
        self,
        experiment_id: int,
        *,
        run_name: str | None = None,
        tags: Mapping[str, Any] | None = None,
        parent_run_id: str | None = None,
        user: str | None = None,
        host: str | None = None,
        start_time: int | None = None,
        capture_source: bool | None = None,
    ) -> Run:
        """Start a RUNNING run on the server; its source is captured here and sent along.

        The run's heartbeats come from this process's sender thread until :meth:`end_run`.
        """
        capture = self.settings.capture_source if capture_source is None else capture_source
        source = capture_source_info() if capture else None
        all_tags: dict[str, str] = dict(source.tags) if source is not None else {}
        all_tags.update({k: str(v) for k, v in (tags or {}).items()})
        run = self.create_remote_run(
            experiment_id,
            host=host or HOST,
            user=user or current_user(),
            run_name=run_name,
            tags=all_tags,
            parent_run_id=parent_run_id,
            start_time=now_ms() if start_time is None else start_time,
        )
        self._open_runs[run.run_id] = None
        self._sender.start()
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
        """Start a run with exactly these fields (no source captured, no heartbeats sent)."""
        body: dict[str, Any] = {
            "experiment_id": int(experiment_id),
            "tags": {k: str(v) for k, v in (tags or {}).items()},
            "host": host,
            "user": user,
        }
        for key, value in (
            ("run_name", run_name),
            ("parent_run_id", parent_run_id),
            ("start_time", start_time),
        ):
            if value is not None:
                body[key] = value
        response = self._api.request("POST", "/runs", json=body, idempotent=False)
        return RunOut.model_validate(response.json())

    def heartbeat(self, run_id: str) -> None:
        """Tell the server the process behind a run is alive."""
        self._api.request("POST", f"/runs/{run_id}/heartbeat")

    def end_run(
        self,
        run_id: str,
        *,
        status: RunStatus | str = RunStatus.FINISHED,
        end_time: int | None = None,
    ) -> None:
        """Deliver the run's metrics and mark it ended with ``status``.

        Waits up to ``remote_flush_timeout`` seconds for the server. If it cannot take
        everything in time, the undelivered points and the end of the run are saved in
        ``<home>/outbox/``, a message on stderr says how many and where, and ``keel sync``
        delivers them later; the run stays RUNNING on the server until then.
        """
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
        ended_at = now_ms() if end_time is None else end_time
        left = self._sender.flush(self.settings.remote_flush_timeout)
        reason = self._sender.last_error
        if not left and not self._sender.writes_pending:
            try:
                self._api.request(
                    "PATCH", f"/runs/{run_id}", json={"status": final.value, "end_time": ended_at}
                )
                return
            except KeelError as exc:
                # as for its points: a refused token is fixed, then keel sync ends the run
                if not retry_later(exc):
                    raise
                reason = exc
        writes = self._sender.writes_pending
        self._sender.queue_end_run(run_id, final.value, ended_at)
        files = self._sender.spill_all()
        self.undelivered = left
        also = f", {writes} params/tags writes" if writes else ""
        _report(
            f"keel: could not deliver {left} metric points{also} and the end ({final.value}) of "
            f"run "
            f"{run_id} to {self.tracking_uri} within {self.settings.remote_flush_timeout:g} s "
            f"({reason}). They are saved in {self.outbox} ({len(files)} "
            "files); send them when the server is back with: keel sync"
        )

    def get_run(self, run_id: str) -> Run:
        self._settle()
        return RunOut.model_validate(self._api.get_json(f"/runs/{run_id}"))

    def get_runs(self, run_ids: Sequence[str]) -> list[Run]:
        """Several runs at once, in the order given (ids that do not exist are left out)."""
        runs = []
        for run_id in run_ids:
            try:
                runs.append(self.get_run(run_id))
            except NotFound:
                continue
        return runs

    def rename_run(self, run_id: str, new_name: str) -> Run:
        """Give a run another name (names need not be unique)."""
        response = self._api.request("PUT", f"/runs/{run_id}/name", json={"run_name": new_name})
        return RunOut.model_validate(response.json())

    def resolve_run_id(self, prefix: str) -> str:
        """The full id of the one run whose id starts with ``prefix``."""
        return str(self._api.get_json(f"/runs/by-prefix/{_name(prefix)}")["run_id"])

    def delete_runs(self, run_ids: Sequence[str]) -> int:
        return self._each(run_ids, "DELETE", "/runs/{}")

    def restore_runs(self, run_ids: Sequence[str]) -> int:
        return self._each(run_ids, "POST", "/runs/{}/restore")

    def _each(self, run_ids: Sequence[str], method: str, path: str) -> int:
        done = 0
        for run_id in run_ids:
            try:
                self._api.request(method, path.format(run_id))
                done += 1
            except NotFound:
                continue
        return done

    def mark_lost_runs(self) -> list[str]:
        """A no-op: the server marks runs LOST when their heartbeats stop."""
        return []

    # -- params, tags, metrics ------------------------------------------------------------
    def log_param(self, run_id: str, key: str, value: Any) -> None:
        self.log_params(run_id, {key: value})

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Record params; while the server is away they wait with the run's points."""
        self._write(
            "params", run_id, {check_key(k, what="param"): str(v) for k, v in params.items()}
        )

    def set_tag(self, run_id: str, key: str, value: Any) -> None:
        self.set_tags(run_id, {key: value})

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        """Set tags; while the server is away they wait with the run's points."""
        self._write("tags", run_id, {check_key(k, what="tag"): str(v) for k, v in tags.items()})

    def _write(self, kind: str, run_id: str, values: dict[str, str]) -> None:
        """Send params or tags now; if the server cannot take them, queue them in order.

        Sent at once while the server answers, so a conflicting param is an error here. Once
        it does not (or while earlier writes still wait, which must land first), they join the
        queue the background thread delivers, and the outbox and ``keel sync`` after that.
        """
        if not self._sender.failures and not self._sender.writes_pending:
            try:
                self._api.request("POST", f"/runs/{run_id}/{kind}", json={kind: values})
                return
            except KeelError as exc:
                if not retry_later(exc):
                    raise
                _report(
                    f"keel: {self.tracking_uri} cannot take the {kind} of run {run_id} now "
                    f"({exc}); they wait with its metric points"
                )
        self._sender.queue_write(kind, run_id, values)

    def delete_tag(self, run_id: str, key: str) -> None:
        self._api.request("DELETE", f"/runs/{run_id}/tags/{_name(key)}")

    def write_metric_points(
        self, points: Sequence[PointTuple], *, batch_id: str | None = None
    ) -> bool:
        """Send points now, in one request (a ``batch_id`` makes a resend harmless)."""
        from keel.tracking.remote_sender import Entry, send_entry

        entry = Entry("metrics", points=list(points), count=len(points))
        if batch_id is not None:
            entry.batch_id = batch_id
        send_entry(self._api, entry, attempts=self._api.attempts)
        return True

    def get_metric_history(self, run_id: str, key: str) -> list[Metric]:
        """Every (step, timestamp, value) logged for ``key``, in step order."""
        self._settle()
        data = self._api.get_json(f"/runs/{run_id}/metrics/history", key=key)
        return list(MetricHistory.model_validate(data).points or [])

    def metric_buckets(self, run_id: str, key: str, *, buckets: int) -> list[MetricBucket]:
        """``key``'s history summarised in at most ``buckets`` step ranges (computed remotely)."""
        self._settle()
        data = self._api.get_json(
            f"/runs/{run_id}/metrics/history", key=key, max_points=int(buckets)
        )
        return list(MetricHistory.model_validate(data).buckets or [])

    def metric_curves(self, run_id: str, *, buckets: int = 40) -> dict[str, MetricCurve]:
        """Each metric's point count, range and per-bucket values (the bucket's last value)."""
        curves = {}
        for key in sorted(self.get_run(run_id).metrics):
            parts = self.metric_buckets(run_id, key, buckets=buckets)
            if not parts:
                continue
            lows = [b.min for b in parts if b.min == b.min]
            highs = [b.max for b in parts if b.max == b.max]
            curves[key] = MetricCurve(
                count=sum(b.count for b in parts),
                low=min(lows) if lows else None,
                high=max(highs) if highs else None,
                first_step=parts[0].first_step,
                last_step=parts[-1].last_step,
                means=[b.last for b in parts],
            )
        return curves

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
        self._settle()
        body: dict[str, Any] = {
            "filter": filter_string,
            "order_by": list(order_by or []),
            "max_results": max_results,
            "lifecycle": lifecycle,
        }
        if experiment_ids is not None:
            body["experiment_ids"] = [int(e) for e in experiment_ids]
        if page_token is not None:
            body["page_token"] = page_token
        page = RunPageOut.model_validate(
            self._api.request("POST", "/runs/search", json=body).json()
        )
        return RunPage(runs=list(page.runs), next_page_token=page.next_page_token)

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


TrackingClient = Client | RemoteClient


def connect(settings: Settings | None = None) -> TrackingClient:
    """The client ``settings`` call for: a :class:`RemoteClient` when ``tracking_uri`` is set,
    else a :class:`~keel.tracking.api.Client` over the local store.

    Example:
        >>> client = connect(Settings(tracking_uri="http://127.0.0.1:5000"))
    """
    settings = settings or Settings()
    if settings.tracking_uri:
        return RemoteClient(settings)
    return Client(settings)


def _report(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _deliver_at_exit() -> None:
    for client in list(_remote_clients):
        try:
            client._finish_delivery(what="at exit")
        except Exception as exc:  # at exit there is no caller left to raise to
            _report(f"keel: could not save undelivered metric points at exit: {exc}")


atexit.register(_deliver_at_exit)
