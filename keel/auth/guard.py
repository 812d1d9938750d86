"""The tracking service as one authenticated caller may use it.

:class:`GuardedClient` stands in for :class:`keel.tracking.api.Client` in every route of a
server started with ``--auth``. It has exactly the methods routes call (the
:class:`keel.tracking.service.TrackingService` protocol, checked by mypy), and each checks the
caller's token role and experiment grant before it delegates. A method it lacks cannot be called,
so a new route fails closed until its check is written here.

What is checked:

- reading an experiment or anything in it needs a grant (read, write or owner); without one the
  experiment and its runs answer 404 exactly as if they did not exist, and lists and searches
  leave them out;
- writing needs an editor (or admin) token and a write or owner grant;
- renaming, deleting and restoring an experiment needs an owner grant;
- creating an experiment needs an editor token and makes the caller its owner;
- an admin token may do everything.

Each experiment or run a call touches is noted in ``targets`` for the audit log.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from keel.artifacts import BlobReader
from keel.auth.models import Permission, Principal, Role
from keel.auth.store import AuthStore
from keel.errors import AlreadyExists, NotFound, PermissionDenied
from keel.settings import Settings
from keel.tracking.api import Client
from keel.tracking.models import (
    ArtifactEntry,
    Experiment,
    Metric,
    MetricBucket,
    Run,
    RunPage,
    RunStatus,
)
from keel.tracking.store import PointTuple

__all__ = ["GuardedClient"]


_GRANT_HINT = (
    "an owner of the experiment or an admin grants it: keel grants add {eid} {user} {perm}"
)


class GuardedClient:
    """A :class:`Client` seen through one caller's token and grants."""

    def __init__(
        self, client: Client, store: AuthStore, principal: Principal, targets: list[str]
    ) -> None:
        self._client = client
        self._store = store
        self.principal = principal
        self.targets = targets
        # what this request has looked up already (a GuardedClient lives for one request)
        self._seen_runs: dict[str, tuple[int, Permission | None]] = {}
        self.wrote = False  # a write was attempted: the audit log records the request

    @property
    def settings(self) -> Settings:
        return self._client.settings

    # -- checks ---------------------------------------------------------------------------
    def _need_editor(self, what: str) -> None:
        if self.principal.role < Role.EDITOR:
            raise PermissionDenied(
                f"token {self.principal.token_id} has role viewer, which cannot {what}; "
                "use an editor token (keel tokens create --role editor)",
                role=self.principal.role.label,
                needs="editor",
            )

    def _check(
        self, experiment_id: int, have: Permission | None, need: Permission, *, write: bool
    ) -> None:
        if have is None:
            raise NotFound(f"no experiment with id {experiment_id}", experiment_id=experiment_id)
        if write:
            self._need_editor("write")
        if have < need:
            hint = _GRANT_HINT.format(eid=experiment_id, user=self.principal.user, perm=need.label)
            raise PermissionDenied(
                f"user {self.principal.user!r} has {have.label} on experiment {experiment_id}; "
                f"this needs {need.label} ({hint})",
                experiment_id=experiment_id,
                has=have.label,
                needs=need.label,
            )

    def check_experiment(
        self, experiment_id: int, need: Permission, *, write: bool | None = None
    ) -> None:
        """Raise unless the caller has ``need`` on the experiment (404 when it has nothing).

        Args:
            write: the request changes something, so the token must be an editor's (default:
                ``need`` is write or owner). An owner with a viewer token may still look at
                the experiment's grants (``need=OWNER, write=False``).
        """
        write = need >= Permission.WRITE if write is None else write
        self.targets.append(f"experiment/{experiment_id}")
        self.wrote |= write
        if self.principal.is_admin:
            return
        have = self._store.permission(self.principal.user_id, experiment_id)
        self._check(experiment_id, have, need, write=write)

    def _runs(self, run_ids: Sequence[str], need: Permission) -> None:
        self.targets.extend(f"run/{run_id}" for run_id in dict.fromkeys(run_ids))
        self.wrote |= need >= Permission.WRITE
        if self.principal.is_admin:
            return
        unknown = [run_id for run_id in run_ids if run_id not in self._seen_runs]
        if unknown:  # one request often checks the same run several times (MLflow's log-batch)
            self._seen_runs.update(self._store.run_permissions(self.principal.user_id, unknown))
        found = self._seen_runs
        for run_id in run_ids:
            if run_id not in found:
                raise NotFound(f"no run with id {run_id!r}", run_id=run_id)
            experiment_id, have = found[run_id]
            if have is None:  # an experiment not shared: its runs do not exist for this caller
                raise NotFound(f"no run with id {run_id!r}", run_id=run_id)
            self._check(experiment_id, have, need, write=need >= Permission.WRITE)

    def _visible(self, experiment_id: int) -> bool:
        return (
            self.principal.is_admin
            or self._store.permission(self.principal.user_id, experiment_id) is not None
        )

    # -- experiments ----------------------------------------------------------------------
    def create_experiment(self, name: str, *, tags: Mapping[str, str] | None = None) -> Experiment:
        self.wrote = True
        self._need_editor("create experiments")
        experiment = self._client.create_experiment(name, tags=tags)
        self.targets.append(f"experiment/{experiment.experiment_id}")
        self._store.grant(
            experiment.experiment_id,
            self.principal.user,
            Permission.OWNER,
            granted_by=self.principal.user,
        )
        return experiment

    def get_experiment(self, experiment_id: int) -> Experiment:
        self.check_experiment(experiment_id, Permission.READ)
        return self._client.get_experiment(experiment_id)

    def get_experiment_by_name(self, name: str) -> Experiment | None:
        found = self._client.get_experiment_by_name(name)
        return found if found is not None and self._visible(found.experiment_id) else None

    def get_or_create_experiment(self, name: str) -> Experiment:
        found = self._client.get_experiment_by_name(name)
        if found is None:
            try:
                return self.create_experiment(name)
            except AlreadyExists:
                found = self._client.get_experiment_by_name(name)
                assert found is not None
        if not self._visible(found.experiment_id):
            # creating it is impossible (the name is taken), so say so instead of a bare 404
            raise NotFound(
                f"experiment {name!r} is not shared with user {self.principal.user!r}; "
                + _GRANT_HINT.format(eid=shlex.quote(name), user=self.principal.user, perm="write"),
                name=name,
            )
        return self._client.get_or_create_experiment(name)

    def list_experiments(self, *, lifecycle: str = "active") -> list[Experiment]:
        experiments = self._client.list_experiments(lifecycle=lifecycle)
        if self.principal.is_admin:
            return experiments
        visible = self._store.visible_experiments(self.principal.user_id)
        return [e for e in experiments if e.experiment_id in visible]

    def rename_experiment(self, experiment_id: int, new_name: str) -> Experiment:
        self.check_experiment(experiment_id, Permission.OWNER)
        return self._client.rename_experiment(experiment_id, new_name)

    def delete_experiment(self, experiment_id: int) -> None:
        self.check_experiment(experiment_id, Permission.OWNER)
        self._client.delete_experiment(experiment_id)

    def restore_experiment(self, experiment_id: int) -> None:
        self.check_experiment(experiment_id, Permission.OWNER)
        self._client.restore_experiment(experiment_id)

    # -- runs -----------------------------------------------------------------------------
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
        """Create a run; its user is the token's, whatever the caller claims."""
        self.check_experiment(experiment_id, Permission.WRITE)
        if parent_run_id is not None:
            self._runs([parent_run_id], Permission.READ)
        run = self._client.create_remote_run(
            experiment_id,
            host=host,
            user=self.principal.user,
            run_name=run_name,
            tags=tags,
            parent_run_id=parent_run_id,
            start_time=start_time,
        )
        self.targets.append(f"run/{run.run_id}")
        return run

    def get_run(self, run_id: str) -> Run:
        self._runs([run_id], Permission.READ)
        return self._client.get_run(run_id)

    def resolve_run_id(self, prefix: str) -> str:
        """Resolve among the runs the caller may see: hidden runs neither match nor make a
        prefix ambiguous, so the answer is the one an empty store would give."""
        if self.principal.is_admin:
            return self._client.resolve_run_id(prefix)
        visible = self._store.visible_experiments(self.principal.user_id)
        run_id = self._client.resolve_run_id(prefix, experiment_ids=sorted(visible))
        self.targets.append(f"run/{run_id}")
        return run_id

    def end_run(
        self,
        run_id: str,
        *,
        status: RunStatus | str = RunStatus.FINISHED,
        end_time: int | None = None,
    ) -> None:
        self._runs([run_id], Permission.WRITE)
        self._client.end_run(run_id, status=status, end_time=end_time)

    def rename_run(self, run_id: str, new_name: str) -> Run:
        self._runs([run_id], Permission.WRITE)
        return self._client.rename_run(run_id, new_name)

    def delete_runs(self, run_ids: Sequence[str]) -> int:
        self._runs(run_ids, Permission.WRITE)
        return self._client.delete_runs(run_ids)

    def restore_runs(self, run_ids: Sequence[str]) -> int:
        self._runs(run_ids, Permission.WRITE)
        return self._client.restore_runs(run_ids)

    def heartbeat(self, run_id: str) -> None:
        self._runs([run_id], Permission.WRITE)
        self._client.heartbeat(run_id)

    def log_param(self, run_id: str, key: str, value: Any) -> None:
        self._runs([run_id], Permission.WRITE)
        self._client.log_param(run_id, key, value)

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        self._runs([run_id], Permission.WRITE)
        self._client.log_params(run_id, params)

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        self._runs([run_id], Permission.WRITE)
        self._client.set_tags(run_id, tags)

    def delete_tag(self, run_id: str, key: str) -> None:
        self._runs([run_id], Permission.WRITE)
        self._client.delete_tag(run_id, key)

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
        """Search the experiments the caller may read (of ``experiment_ids``, when given)."""
        if not self.principal.is_admin:
            visible = self._store.visible_experiments(self.principal.user_id)
            wanted = visible if experiment_ids is None else set(experiment_ids) & visible
            if not wanted:
                return RunPage(runs=[])
            experiment_ids = sorted(wanted)
        return self._client.search_runs(
            filter_string,
            order_by=order_by,
            experiment_ids=experiment_ids,
            max_results=max_results,
            page_token=page_token,
            lifecycle=lifecycle,
        )

    # -- metrics --------------------------------------------------------------------------
    def write_metric_points(
        self, points: Sequence[PointTuple], *, batch_id: str | None = None
    ) -> bool:
        self._runs([point[0] for point in points], Permission.WRITE)
        return self._client.write_metric_points(points, batch_id=batch_id)

    def get_metric_history(self, run_id: str, key: str) -> list[Metric]:
        self._runs([run_id], Permission.READ)
        return self._client.get_metric_history(run_id, key)

    def metric_buckets(self, run_id: str, key: str, *, buckets: int) -> list[MetricBucket]:
        self._runs([run_id], Permission.READ)
        return self._client.metric_buckets(run_id, key, buckets=buckets)

    # -- artifacts ------------------------------------------------------------------------
    def list_artifacts(self, run_id: str, path: str = "") -> list[ArtifactEntry]:
        self._runs([run_id], Permission.READ)
        return self._client.list_artifacts(run_id, path)

    def open_artifact(self, run_id: str, path: str) -> BlobReader:
        self._runs([run_id], Permission.READ)
        return self._client.open_artifact(run_id, path)

    def log_stream(
        self,
        run_id: str,
        stream: Any,
        artifact_file: str,
        *,
        digest: str | None = None,
        size_hint: int | None = None,
    ) -> ArtifactEntry:
        self._runs([run_id], Permission.WRITE)
        return self._client.log_stream(
            run_id, stream, artifact_file, digest=digest, size_hint=size_hint
        )
