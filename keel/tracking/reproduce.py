"""``keel runs reproduce``: run a run's code again, as it was, into a new run linked to it.

From what :mod:`keel.tracking.source` recorded with the run (git commit, repository, dirty diff,
entry point with its arguments and working folder, packages) and the dataset versions it read
(:func:`keel.data.run_inputs`):

1. a temporary ``git worktree`` at the run's commit (the recorded diff applied when the run's
   tree was dirty); nothing in the repository's own working copy changes;
2. the run's dataset versions made present locally (:func:`keel.data.versions.materialize`) and
   the worktree's ``*.keel`` pointers checked out (:func:`keel.data.checkout`);
3. the recorded packages compared with this environment (the differences are listed; nothing
   is installed);
4. ``python SCRIPT ARGS`` (or ``python -m MODULE ARGS``) in the worktree with ``KEEL_HOME``,
   ``KEEL_DATABASE_URL``, ``KEEL_ARTIFACT_URL`` (and ``KEEL_TRACKING_URI``) pointing at this
   store and ``KEEL_REPRODUCED_FROM`` set, so each run it starts records
   ``keel.reproduced_from=RUN_ID``;
5. the new run's metrics compared with the original's.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from keel.errors import Conflict, InvalidInput, KeelError, NotFound
from keel.settings import Settings
from keel.tracking.models import Run
from keel.tracking.remote import TrackingClient, connect
from keel.tracking.source import (
    ARGS_TAG,
    COMMIT_TAG,
    DIFF_FILE,
    DIRTY_TAG,
    ENTRY_POINT_TAG,
    REPO_TAG,
    REPRODUCED_FROM_ENV,
    REPRODUCED_FROM_TAG,
    REQUIREMENTS_FILE,
    WORKDIR_TAG,
)

__all__ = [
    "MetricDelta",
    "Plan",
    "Reproduction",
    "RequirementDiff",
    "plan",
    "reproduce",
]


@dataclass(frozen=True)
class RequirementDiff:
    """A package the run recorded at another version than this environment has (or lacks)."""

    name: str
    recorded: str
    installed: str | None


@dataclass(frozen=True)
class MetricDelta:
    """One metric of the original run next to the reproduced run's."""

    key: str
    original: float | None
    reproduced: float | None

    @property
    def delta(self) -> float | None:
        """reproduced - original (None when one side lacks the metric)."""
        if self.original is None or self.reproduced is None:
            return None
        return self.reproduced - self.original

    @property
    def relative(self) -> float | None:
        """The delta over ``|original|`` (None when one side lacks it or the original is 0)."""
        delta = self.delta
        if delta is None or self.original is None or self.original == 0:
            return None if delta != 0 else 0.0
        return delta / abs(self.original)


@dataclass(frozen=True)
class Plan:
    """What reproducing a run will do (``--dry-run`` prints it and stops)."""

    run_id: str
    run_name: str
    repo: str
    commit: str
    command: list[str] = field(default_factory=list)
    """The entry point as argv, from the worktree's ``workdir``: ``[python, script, *args]``."""
    workdir: str = "."
    dirty: bool = False
    diff_recorded: bool = False
    inputs: list[str] = field(default_factory=list)
    """The dataset versions the run read, as ``name@version (context)``."""
    requirements: int = 0
    """How many packages the run recorded."""
    differing: list[RequirementDiff] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    """The KEEL_* variables the entry point runs with."""
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Reproduction:
    """What a reproduction did: the plan, the new run and the metric deltas."""

    plan: Plan
    run_id: str | None = None
    """The new run (the first one the entry point started), None after a dry run."""
    other_runs: list[str] = field(default_factory=list)
    exit_code: int | None = None
    deltas: list[MetricDelta] = field(default_factory=list)
    worktree: str | None = None
    """Where the worktree was kept (``keep_worktree``), else None: it was removed."""
    inputs: list[str] = field(default_factory=list)
    """The dataset versions the new run read."""


def plan(run_id: str, *, settings: Settings | None = None) -> Plan:
    """What :func:`reproduce` would do for run ``run_id`` (an id or a unique prefix).

    Raises:
        NotFound: no such run; the repository or the commit is gone.
        InvalidInput: the run recorded no git commit or no entry point to run.

    Example:
        >>> plan("3f2a").command  # doctest: +SKIP
        ['/usr/bin/python3', 'train.py', '--alpha', '0.5']
    """
    settings = settings or Settings()
    with _client(settings) as client:
        return _plan(client, client.resolve_run_id(run_id), settings)


def reproduce(
    run_id: str,
    *,
    settings: Settings | None = None,
    keep_worktree: bool = False,
    dry_run: bool = False,
) -> Reproduction:
    """Re-execute run ``run_id``'s entry point at its commit, into a new linked run.

    The entry point's output (stdout too) goes to this process's stderr, leaving stdout to
    the report.

    Args:
        run_id: an id or a unique prefix.
        settings: the store holding the run (the new run goes there too); default
            ``Settings()``.
        keep_worktree: leave the temporary worktree in place (its path is returned).
        dry_run: only make the plan: no worktree, no data, no run.

    Returns:
        A :class:`Reproduction`; ``exit_code`` is the entry point's.

    Raises:
        NotFound: no such run; the repository or the commit is gone; the entry point
            started no run.
        InvalidInput: the run recorded no git commit or no entry point; or its (editable)
            tags name a working folder or script outside the repository, or arguments that
            are not a JSON list.
        Conflict: the recorded diff does not apply to the commit.

    Example:
        >>> result = reproduce("3f2a")  # doctest: +SKIP
        >>> [(d.key, d.delta) for d in result.deltas]  # doctest: +SKIP
        [('rmse', 0.0)]
    """
    settings = settings or Settings()
    with _client(settings) as client:
        original = client.get_run(client.resolve_run_id(run_id))
        the_plan = _plan(client, original.run_id, settings)
        if dry_run:
            return Reproduction(plan=the_plan)
        folder = Path(tempfile.mkdtemp(prefix="keel-reproduce-"))
        worktree = folder / "src"
        kept = False
        try:
            _git(Path(the_plan.repo), "worktree", "add", "--detach", str(worktree), the_plan.commit)
            if the_plan.diff_recorded:
                _apply_diff(client, original.run_id, worktree, folder)
            _checkout_data(original.run_id, worktree, settings)
            cwd = _inside_worktree(worktree, the_plan)
            started = int(time.time() * 1000)
            done = subprocess.run(
                the_plan.command,
                cwd=cwd,
                env={**os.environ, **the_plan.environment},
                stdout=2,  # this process's stdout is for the report
                check=False,
            )
            new_runs = _runs_reproducing(client, original, started)
            if not new_runs:
                raise NotFound(
                    f"{' '.join(the_plan.command[1:])} (exit code {done.returncode}) started no "
                    f"run in this store, so there is nothing to compare with run "
                    f"{original.run_id}",
                    run_id=original.run_id,
                )
            new = new_runs[0]
            kept = keep_worktree
            return Reproduction(
                plan=the_plan,
                run_id=new.run_id,
                other_runs=[r.run_id for r in new_runs[1:]],
                exit_code=done.returncode,
                deltas=_deltas(original, new),
                worktree=str(worktree) if kept else None,
                inputs=_input_refs(new.run_id, settings),
            )
        finally:
            if not kept:
                _git(
                    Path(the_plan.repo), "worktree", "remove", "--force", str(worktree), check=False
                )
                shutil.rmtree(folder, ignore_errors=True)


# -- the plan --------------------------------------------------------------------------------


def _plan(client: TrackingClient, run_id: str, settings: Settings) -> Plan:
    run = client.get_run(run_id)
    tags = run.tags
    commit = tags.get(COMMIT_TAG)
    if not commit:
        raise InvalidInput(
            f"run {run_id} recorded no git commit (it was not started from a git repository, "
            "or KEEL_CAPTURE_SOURCE was off), so there is no code to check out and reproduce",
            run_id=run_id,
        )
    repo = tags.get(REPO_TAG, "")
    if not repo or _git(Path(repo), "rev-parse", "--git-dir", check=False) is None:
        raise NotFound(
            f"run {run_id} was made in the git repository {repo or '(unknown)'}, which is not "
            "available here; clone it to that path, or reproduce on the machine that ran it",
            run_id=run_id,
            repo=repo,
        )
    if _git(Path(repo), "cat-file", "-e", f"{commit}^{{commit}}", check=False) is None:
        raise NotFound(
            f"commit {commit} of run {run_id} is not in {repo}; fetch it (git fetch --all) "
            "or check that the branch holding it was not deleted",
            run_id=run_id,
            commit=commit,
        )
    warnings: list[str] = []
    dirty = tags.get(DIRTY_TAG) == "true"
    diff_recorded = dirty and any(
        a.path == DIFF_FILE for a in client.list_artifacts(run_id, "keel")
    )
    if dirty:
        warnings.append(
            f"the run's working tree was dirty at {commit[:12]}: "
            + (
                "its recorded diff of tracked files is applied (untracked files were not recorded)"
                if diff_recorded
                else "no diff was recorded, so the reproduction runs the committed code"
            )
        )
    args = _recorded_args(run_id, tags, warnings)
    workdir = _recorded_workdir(run_id, tags.get(WORKDIR_TAG, "."))
    entry = _entry_argv(run_id, tags.get(ENTRY_POINT_TAG, ""), workdir)
    inputs = _input_refs(run_id, settings, warnings)
    recorded = _recorded_requirements(client, run_id, warnings)
    return Plan(
        run_id=run_id,
        run_name=run.run_name,
        repo=repo,
        commit=commit,
        command=[sys.executable, *entry, *args],
        workdir=workdir,
        dirty=dirty,
        diff_recorded=diff_recorded,
        inputs=inputs,
        requirements=len(recorded),
        differing=_differing(recorded),
        environment=_environment(settings, run_id),
        warnings=warnings,
    )


_MODULE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def _escapes(path: str) -> bool:
    """Whether ``path`` (relative to the worktree's root) is absolute or leaves it by ``..``."""
    normal = posixpath.normpath(path.replace("\\", "/"))
    return posixpath.isabs(normal) or normal == ".." or normal.startswith("../")


def _recorded_workdir(run_id: str, text: str) -> str:
    """The recorded working folder, relative to the repository's root and inside it: tags
    are editable, so a workdir tag pointing elsewhere is refused."""
    if not text or _escapes(text) or Path(text).is_absolute():
        raise InvalidInput(
            f"run {run_id}'s working folder tag {WORKDIR_TAG}={text!r} is not a folder inside "
            "its repository, so the reproduction would run elsewhere; refusing",
            run_id=run_id,
            workdir=text,
        )
    return posixpath.normpath(text.replace("\\", "/"))


def _entry_argv(run_id: str, entry: str, workdir: str) -> list[str]:
    if entry.startswith("-m "):
        module = entry[3:]
        if not _MODULE.fullmatch(module):
            raise InvalidInput(
                f"run {run_id}'s entry point {entry!r} does not name a module "
                "(-m package.module), so there is nothing to re-execute",
                run_id=run_id,
            )
        return ["-m", module]
    if not entry or entry.startswith("<") or Path(entry).is_absolute():
        raise InvalidInput(
            f"run {run_id} was not started from a script in its repository (its entry point "
            f"is {entry or 'unknown'}), so there is nothing to re-execute",
            run_id=run_id,
        )
    if _escapes(posixpath.join(workdir, entry.replace("\\", "/"))):
        raise InvalidInput(
            f"run {run_id}'s entry point {entry!r} is outside its repository (from the working "
            f"folder {workdir!r}), so the reproduction would run other code; refusing",
            run_id=run_id,
            entry_point=entry,
        )
    return [entry]


def _inside_worktree(worktree: Path, plan: Plan) -> Path:
    """The folder to run in, resolved (symbolic links followed) and required to be inside the
    worktree, as is the script it runs.

    Raises:
        InvalidInput: the working folder or the script resolves outside the worktree.
    """
    root = worktree.resolve()
    cwd = (worktree / plan.workdir).resolve()
    if not cwd.is_relative_to(root) or not cwd.is_dir():
        raise InvalidInput(
            f"run {plan.run_id}'s working folder {plan.workdir!r} is not a folder inside its "
            f"repository at {plan.commit[:12]} (it resolves to {cwd}); refusing",
            run_id=plan.run_id,
            workdir=plan.workdir,
        )
    script = plan.command[1]
    if script != "-m" and not (cwd / script).resolve().is_relative_to(root):
        raise InvalidInput(
            f"run {plan.run_id}'s entry point {script!r} resolves to {(cwd / script).resolve()}, "
            "outside its repository; refusing",
            run_id=plan.run_id,
            entry_point=script,
        )
    return cwd


def _recorded_args(run_id: str, tags: dict[str, str], warnings: list[str]) -> list[str]:
    text = tags.get(ARGS_TAG)
    if text is None:
        warnings.append("the run recorded no command-line arguments; the entry point runs without")
        return []
    try:
        args = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"run {run_id}'s arguments tag {ARGS_TAG} is not a JSON list of strings ({exc}): "
            f"{text[:80]!r}",
            run_id=run_id,
        ) from None
    if not isinstance(args, list):
        raise InvalidInput(
            f"run {run_id}'s arguments tag {ARGS_TAG} is not a JSON list of strings: {text[:80]!r}",
            run_id=run_id,
        )
    return [str(a) for a in args]


def _input_refs(run_id: str, settings: Settings, warnings: list[str] | None = None) -> list[str]:
    from keel.data import run_inputs

    try:
        found = run_inputs(run_id, settings=settings)
    except KeelError as exc:  # a tracking server: dataset versions are not served yet
        if warnings is not None:
            warnings.append(f"dataset versions not checked: {exc}")
        return []
    return [f"{i.version.name}@{i.version.version} ({i.context})" for i in found]


_REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)$")


def _recorded_requirements(
    client: TrackingClient, run_id: str, warnings: list[str]
) -> dict[str, tuple[str, str]]:
    """The packages the run recorded: normalized name -> (name, version)."""
    try:
        text = client.read_artifact(run_id, REQUIREMENTS_FILE).decode()
    except NotFound:
        warnings.append("the run recorded no package list; requirements are not compared")
        return {}
    found = {}
    for line in text.splitlines():
        match = _REQUIREMENT.match(line.strip())
        if match:
            found[_normalize(match[1])] = (match[1], match[2])
    return found


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _differing(recorded: dict[str, tuple[str, str]]) -> list[RequirementDiff]:
    installed = {
        _normalize(dist.metadata["Name"]): dist.version
        for dist in metadata.distributions()
        if dist.metadata["Name"]
    }
    return [
        RequirementDiff(name=name, recorded=version, installed=installed.get(key))
        for key, (name, version) in sorted(recorded.items())
        if installed.get(key) != version
    ]


def _environment(settings: Settings, run_id: str) -> dict[str, str]:
    environment = {
        "KEEL_HOME": str(settings.home_path),
        "KEEL_DATABASE_URL": settings.db_url,
        "KEEL_ARTIFACT_URL": settings.artifacts_url,
        "KEEL_CAPTURE_SOURCE": "true",  # the link to the original is part of the source
        REPRODUCED_FROM_ENV: run_id,
    }
    if settings.tracking_uri:
        environment["KEEL_TRACKING_URI"] = settings.tracking_uri
    return environment


# -- doing it --------------------------------------------------------------------------------


@contextlib.contextmanager
def _client(settings: Settings) -> Iterator[TrackingClient]:
    client = connect(settings)
    try:
        yield client
    finally:
        client.close()


def _git(repo: Path, *args: str, check: bool = True) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, timeout=120, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        if check:
            raise KeelError(f"git {args[0]} failed in {repo}: {exc}") from exc
        return None
    if done.returncode != 0:
        if check:
            raise KeelError(f"git {' '.join(args[:2])} failed in {repo}: {done.stderr.strip()}")
        return None
    return done.stdout


def _apply_diff(client: TrackingClient, run_id: str, worktree: Path, folder: Path) -> None:
    patch = folder / "source.diff"
    patch.write_bytes(client.read_artifact(run_id, DIFF_FILE))
    done = subprocess.run(
        ["git", "apply", "--whitespace=nowarn", str(patch)],
        cwd=worktree,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise Conflict(
            f"run {run_id}'s recorded diff does not apply to its commit: {done.stderr.strip()}",
            run_id=run_id,
        )


def _checkout_data(run_id: str, worktree: Path, settings: Settings) -> None:
    """The run's dataset versions and the worktree's tracked data, present and verified."""
    if not settings.tracking_uri:
        from keel.data import run_inputs
        from keel.data.versions import materialize

        for found in run_inputs(run_id, settings=settings):
            materialize(found.version, settings=settings)
    from keel.data import checkout

    checkout([worktree], settings=settings)


def _runs_reproducing(client: TrackingClient, original: Run, started: int) -> list[Run]:
    """The runs the entry point started (the link tag, started since), the one named like the
    original first, then oldest first."""
    found = client.search_all(
        f"tags.`{REPRODUCED_FROM_TAG}` = '{original.run_id}' and attributes.start_time >= "
        f"{started - 1000}",
        order_by=["attributes.start_time ASC"],
    )
    return sorted(found, key=lambda r: r.run_name != original.run_name)


def _deltas(original: Run, new: Run) -> list[MetricDelta]:
    keys = sorted(set(original.metrics) | set(new.metrics))
    return [
        MetricDelta(
            key=key,
            original=original.metrics.get(key),
            reproduced=new.metrics.get(key),
        )
        for key in keys
    ]
