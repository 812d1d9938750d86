"""The fluent tracking functions (``keel.start_run``, ``keel.log_metric``, ...).

The active run stack and the current experiment live in ``ContextVar``s over an explicit
:class:`~keel.tracking.api.Client`; the default client is built from ``Settings()`` and rebuilt
when the resolved store changes (a different ``KEEL_HOME``, say), so nothing needs resetting.
A run left by an exception ends FAILED, by KeyboardInterrupt KILLED; runs still open at a normal
process exit end FINISHED (FAILED if the exit was an uncaught exception), with their metrics
written first.
"""

from __future__ import annotations

import atexit
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from keel.data.versions import log_input as record_input
from keel.data.versions import register_run_finder
from keel.errors import InvalidInput, KeelError
from keel.settings import Settings, environment_key
from keel.tracking.api import DEFAULT_EXPERIMENT, Client, flush_all_clients
from keel.tracking.models import ArtifactEntry, Experiment, Metric, Run, RunStatus
from keel.tracking.remote import TrackingClient, connect

if TYPE_CHECKING:
    import pandas as pd

    from keel.data.version_models import DatasetVersion

__all__ = [
    "ActiveRun",
    "active_run",
    "download_artifacts",
    "end_run",
    "get_client",
    "get_metric_history",
    "get_run",
    "log_artifact",
    "log_artifacts",
    "log_dict",
    "log_figure",
    "log_input",
    "log_metric",
    "log_metrics",
    "log_param",
    "log_params",
    "log_table",
    "log_text",
    "search_runs",
    "set_client",
    "set_experiment",
    "set_tag",
    "set_tags",
    "set_tracking_uri",
    "start_run",
]


class ActiveRun:
    """A run started by :func:`start_run`; a context manager that ends it on exit."""

    def __init__(self, client: TrackingClient, run: Run) -> None:
        self.client = client
        self.run = run
        self.run_id = run.run_id
        self._ended = False

    @property
    def experiment_id(self) -> int:
        return self.run.experiment_id

    @property
    def run_name(self) -> str:
        return self.run.run_name

    def __repr__(self) -> str:
        return f"<ActiveRun {self.run_id} {self.run_name!r}>"

    def __enter__(self) -> ActiveRun:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            status = RunStatus.FINISHED
        elif issubclass(exc_type, KeyboardInterrupt):
            status = RunStatus.KILLED
        else:
            status = RunStatus.FAILED
        _end(self, status)


_runs: ContextVar[tuple[ActiveRun, ...]] = ContextVar("keel_active_runs", default=())
_experiment: ContextVar[Experiment | None] = ContextVar("keel_experiment", default=None)
_client: ContextVar[TrackingClient | None] = ContextVar("keel_client", default=None)
_cache: dict[tuple[str, str], TrackingClient] = {}  # one client per store or server
_by_environment: dict[Any, TrackingClient] = {}  # (cwd, KEEL_* variables) -> its store's client
_cache_lock = threading.Lock()
_open: dict[str, ActiveRun] = {}  # every unended fluent run, for the exit handler
_exit_status: list[RunStatus] = []


def set_client(client: TrackingClient | None) -> None:
    """Make ``client`` the one the fluent functions use in this context (None: the default)."""
    _client.set(client)
    _experiment.set(None)


def get_client() -> TrackingClient:
    """The client the fluent functions use: the one set, else one built from ``Settings()``
    (a :class:`~keel.tracking.remote.RemoteClient` when ``tracking_uri`` is set)."""
    client = _client.get()
    if client is not None:
        return client
    environment = environment_key()
    client = _by_environment.get(environment)
    if client is not None:
        return client
    settings = Settings()
    key = (settings.tracking_uri or settings.db_url, settings.artifacts_url)
    with _cache_lock:
        client = _cache.get(key)
        if client is None:
            client = _cache[key] = connect(settings)
        _by_environment[environment] = client
    return client


def set_tracking_uri(uri: str | None) -> None:
    """Send the fluent functions to the keel server at ``uri`` in this context (None: back to
    the default, ``KEEL_TRACKING_URI`` or the local store).

    Example:
        >>> keel.set_tracking_uri("http://127.0.0.1:5000")
    """
    if uri is None:
        set_client(None)
        return
    settings = Settings(tracking_uri=uri)
    key = (uri, settings.artifacts_url)
    with _cache_lock:
        client = _cache.get(key)
        if client is None:
            client = _cache[key] = connect(settings)
    set_client(client)


def _current_experiment(client: TrackingClient) -> Experiment:
    experiment = _experiment.get()
    if experiment is None or _experiment_client.get() is not client:
        experiment = client.get_or_create_experiment(DEFAULT_EXPERIMENT)
    return experiment


_experiment_client: ContextVar[TrackingClient | None] = ContextVar(
    "keel_experiment_client", default=None
)


def set_experiment(name: str) -> Experiment:
    """Make ``name`` the current experiment (created if missing) for runs started later."""
    client = get_client()
    experiment = client.get_or_create_experiment(name)
    _experiment.set(experiment)
    _experiment_client.set(client)
    return experiment


def start_run(
    name: str | None = None,
    *,
    tags: Mapping[str, Any] | None = None,
    nested: bool = False,
) -> ActiveRun:
    """Start a run in the current experiment and make it active.

    Use it as a context manager; the run ends FINISHED, FAILED (exception) or KILLED
    (KeyboardInterrupt) when the block exits.

    Raises:
        InvalidInput: a run is already active and ``nested`` is False.

    Example:
        >>> with keel.start_run(name="baseline") as run:
        ...     keel.log_metric("rmse", 0.42)
    """
    stack = _runs.get()
    if stack and not nested:
        raise InvalidInput(
            f"run {stack[-1].run_id} is already active; end it with keel.end_run() first, or "
            "pass nested=True to start a child run",
            run_id=stack[-1].run_id,
        )
    client = stack[-1].client if stack else get_client()
    experiment = _current_experiment(client)
    parent = stack[-1].run_id if stack else None
    run = client.create_run(
        experiment.experiment_id, run_name=name, tags=tags, parent_run_id=parent
    )
    active = ActiveRun(client, run)
    _runs.set((*stack, active))
    _open[run.run_id] = active
    _install_exit_hooks()
    return active


def end_run(status: RunStatus | str = RunStatus.FINISHED) -> None:
    """End the active run (the innermost one when runs are nested); a no-op without one."""
    stack = _runs.get()
    if stack:
        _end(stack[-1], status)


def _end(active: ActiveRun, status: RunStatus | str) -> None:
    if active._ended:
        return
    stack = _runs.get()
    if active in stack:
        _runs.set(tuple(r for r in stack if r is not active))
    _open.pop(active.run_id, None)
    active._ended = True
    active.client.end_run(active.run_id, status=status)


def active_run() -> ActiveRun | None:
    """The innermost active run, or None."""
    stack = _runs.get()
    return stack[-1] if stack else None


def _run() -> ActiveRun:
    stack = _runs.get()
    return stack[-1] if stack else start_run()


def log_param(key: str, value: Any) -> None:
    active = _run()
    active.client.log_param(active.run_id, key, value)


def log_params(params: Mapping[str, Any]) -> None:
    active = _run()
    active.client.log_params(active.run_id, params)


def log_metric(
    key: str, value: float, step: int | None = None, timestamp: int | None = None
) -> None:
    """Log one metric point to the active run (buffered: no database round trip)."""
    stack = _runs.get()
    active = stack[-1] if stack else start_run()
    active.client.log_metric(active.run_id, key, value, step=step, timestamp=timestamp)


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    active = _run()
    active.client.log_metrics(active.run_id, metrics, step=step)


def set_tag(key: str, value: Any) -> None:
    active = _run()
    active.client.set_tag(active.run_id, key, value)


def set_tags(tags: Mapping[str, Any]) -> None:
    active = _run()
    active.client.set_tags(active.run_id, tags)


def log_artifact(local_path: str | Path, artifact_path: str | None = None) -> ArtifactEntry:
    active = _run()
    return active.client.log_artifact(active.run_id, local_path, artifact_path=artifact_path)


def log_artifacts(local_dir: str | Path, artifact_path: str | None = None) -> ArtifactEntry:
    active = _run()
    return active.client.log_artifacts(active.run_id, local_dir, artifact_path=artifact_path)


def log_text(text: str, artifact_file: str) -> ArtifactEntry:
    active = _run()
    return active.client.log_text(active.run_id, text, artifact_file)


def log_dict(data: Mapping[str, Any], artifact_file: str) -> ArtifactEntry:
    active = _run()
    return active.client.log_dict(active.run_id, data, artifact_file)


def log_figure(figure: Any, artifact_file: str) -> ArtifactEntry:
    active = _run()
    return active.client.log_figure(active.run_id, figure, artifact_file)


def log_table(data: Any, artifact_file: str) -> ArtifactEntry:
    active = _run()
    return active.client.log_table(active.run_id, data, artifact_file)


def log_input(version: DatasetVersion | str, context: str = "train") -> DatasetVersion:
    """Record that the active run uses a dataset version (``keel data lineage`` lists it).

    :func:`keel.data.load` records it by itself inside a run; call this for data read another
    way. Recording the same version and context again does nothing.

    Args:
        version: a :class:`~keel.data.version_models.DatasetVersion`, or ``"name@3"`` / ``"name"``
            (the latest).
        context: how the run uses it, e.g. ``"train"`` or ``"eval"``.

    Returns:
        The version recorded.

    Raises:
        NotFound: no such dataset or version.
        KeelError: the run is on a tracking server (dataset versions are not served over
            HTTP yet).

    Example:
        >>> with keel.start_run():
        ...     keel.log_input("diabetes@2", context="eval")
    """
    active = _run()
    return record_input(active.run_id, version, context=context, settings=active.client.settings)


def _run_for_data() -> tuple[str, Settings] | None:
    """The active run for keel.data (``load`` records inputs, ``log_dataset`` the producer)."""
    stack = _runs.get()
    if not stack:
        return None
    return stack[-1].run_id, stack[-1].client.settings


register_run_finder(_run_for_data)


def _client_for_reads() -> TrackingClient:
    stack = _runs.get()
    return stack[-1].client if stack else get_client()


def get_run(run_id: str) -> Run:
    return _client_for_reads().get_run(run_id)


def get_metric_history(run_id: str, key: str) -> list[Metric]:
    return _client_for_reads().get_metric_history(run_id, key)


def download_artifacts(run_id: str, path: str = "", dst: str | Path | None = None) -> Path:
    """Copy a run's artifacts under ``path`` into ``dst`` (a new temp dir if None)."""
    target = Path(dst) if dst is not None else Path(tempfile.mkdtemp(prefix="keel-"))
    return _client_for_reads().download_artifacts(run_id, path, dst=target)


def search_runs(
    filter_string: str = "",
    order_by: Sequence[str] | None = None,
    max_results: int = 1000,
    experiment_names: Sequence[str] | None = None,
    output: Literal["list", "pandas"] = "list",
) -> list[Run] | pd.DataFrame:
    """Runs matching ``filter_string``; see docs/search.md for the grammar.

    Args:
        filter_string: e.g. ``"metrics.rmse < 1 and params.model = 'tree'"``.
        order_by: e.g. ``["metrics.rmse ASC", "start_time DESC"]``; missing values last.
        max_results: at most this many runs.
        experiment_names: limit to these experiments; by default the experiment set with
            :func:`set_experiment`, or every experiment when none was set.
        output: ``"list"`` of :class:`Run`, or ``"pandas"`` for a DataFrame with columns
            ``params.x``, ``metrics.y``, ``tags.z`` as MLflow names them.

    Raises:
        InvalidQuery: the filter does not parse; its message points at the problem.
    """
    client = _client_for_reads()
    experiment_ids: list[int] | None
    if experiment_names is not None:
        experiment_ids = [client.resolve_experiment(n).experiment_id for n in experiment_names]
    else:
        current = _experiment.get()
        experiment_ids = (
            [current.experiment_id]
            if current is not None and _experiment_client.get() is client
            else None
        )
    runs = client.search_all(
        filter_string, order_by=order_by, experiment_ids=experiment_ids, max_results=max_results
    )
    if output == "pandas":
        return Client.runs_to_frame(runs)
    if output != "list":
        raise InvalidInput(f"output must be 'list' or 'pandas', not {output!r}")
    return runs


_hooks_installed = False


def _install_exit_hooks() -> None:
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    previous = sys.excepthook

    def excepthook(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
        _exit_status.append(
            RunStatus.KILLED if issubclass(exc_type, KeyboardInterrupt) else RunStatus.FAILED
        )
        previous(exc_type, exc, tb)

    sys.excepthook = excepthook
    atexit.register(_at_exit)


def _at_exit() -> None:
    status = _exit_status[-1] if _exit_status else RunStatus.FINISHED
    for active in reversed(list(_open.values())):
        try:
            _end(active, status)
        except KeelError as exc:
            print(f"keel: could not end run {active.run_id} at exit: {exc}", file=sys.stderr)
    flush_all_clients()
