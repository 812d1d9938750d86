"""What a run was made from: git commit, branch, dirty diff, entry point (with its arguments
and working folder), Python, packages.

Collected once per process and working directory (a few subprocess calls to git) and reused by
every run the process starts; the diff and the package list become artifacts, stored once by
content however many runs share them. ``keel runs reproduce`` reads all of it back
(:mod:`keel.tracking.reproduce`) and starts the entry point with :data:`REPRODUCED_FROM_ENV`
set, which each run of that process records as the tag ``keel.reproduced_from``.
"""

from __future__ import annotations

import contextlib
import functools
import getpass
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

__all__ = [
    "ARGS_TAG",
    "COMMIT_TAG",
    "DIFF_FILE",
    "DIRTY_TAG",
    "ENTRY_POINT_TAG",
    "REPO_TAG",
    "REPRODUCED_FROM_ENV",
    "REPRODUCED_FROM_TAG",
    "REQUIREMENTS_FILE",
    "WORKDIR_TAG",
    "Source",
    "capture_source",
    "current_user",
    "record_source",
]

ENTRY_POINT_TAG = "keel.source.entry_point"
"""The script (relative to the repository's root when inside it) or ``-m module``."""
ARGS_TAG = "keel.source.args"
"""The entry point's arguments, a JSON list (left out when longer than a tag holds)."""
WORKDIR_TAG = "keel.source.workdir"
"""The working folder, relative to the repository's root (``.`` for the root itself)."""
COMMIT_TAG = "keel.source.git_commit"
REPO_TAG = "keel.source.git_repo"
DIRTY_TAG = "keel.source.git_dirty"
REQUIREMENTS_FILE = "keel/requirements.txt"
DIFF_FILE = "keel/source.diff"
REPRODUCED_FROM_TAG = "keel.reproduced_from"
REPRODUCED_FROM_ENV = "KEEL_REPRODUCED_FROM"
"""Set by ``keel runs reproduce`` for the process it starts: the run being reproduced. Read
here, like ``sys.argv``, as a fact about the process rather than a setting."""
_MAX_ARGS_CHARS = 8000


@dataclass(frozen=True)
class Source:
    tags: dict[str, str] = field(default_factory=dict)
    diff: str = ""
    requirements: str = ""


def current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _entry_point() -> tuple[str, Path]:
    argv0 = sys.argv[0] if sys.argv else ""
    if argv0 and argv0 not in ("-c", "-m") and Path(argv0).is_file():
        path = Path(argv0).resolve()
        return str(path), path.parent
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        return f"-m {spec.name}", Path.cwd()
    return argv0 or "<interactive>", Path.cwd()


@functools.lru_cache(maxsize=8)
def _capture(cwd: str, argv: tuple[str, ...]) -> Source:
    entry, where = _entry_point()
    tags = {
        ENTRY_POINT_TAG: entry,
        "keel.python": platform.python_version(),
        "keel.platform": platform.platform(terse=True),
    }
    args = json.dumps(list(argv[1:]))
    if len(args) <= _MAX_ARGS_CHARS:
        tags[ARGS_TAG] = args
    diff = ""
    top = _git(where, "rev-parse", "--show-toplevel")
    if top:
        root = Path(top.strip())
        commit = (_git(root, "rev-parse", "HEAD") or "").strip()
        branch = (_git(root, "rev-parse", "--abbrev-ref", "HEAD") or "").strip()
        status = _git(root, "status", "--porcelain", "--untracked-files=no") or ""
        if commit:
            tags[COMMIT_TAG] = commit
        if branch:
            tags["keel.source.git_branch"] = branch
        tags[REPO_TAG] = str(root)
        tags[DIRTY_TAG] = "true" if status.strip() else "false"
        if status.strip():
            diff = _git(root, "diff", "HEAD") or ""
        with contextlib.suppress(ValueError):  # an entry point outside the repository
            tags[ENTRY_POINT_TAG] = Path(entry).relative_to(root).as_posix()
        with contextlib.suppress(ValueError):  # working outside the repository
            tags[WORKDIR_TAG] = Path(cwd).resolve().relative_to(root.resolve()).as_posix()
    packages = sorted(
        {
            f"{dist.metadata['Name']}=={dist.version}"
            for dist in metadata.distributions()
            if dist.metadata["Name"]
        },
        key=str.lower,
    )
    return Source(tags=tags, diff=diff, requirements="\n".join(packages) + "\n")


def capture_source() -> Source:
    """The source of the current process (cached per working directory and command line)."""
    source = _capture(str(Path.cwd()), tuple(sys.argv))
    reproduced_from = os.environ.get(REPRODUCED_FROM_ENV)
    if not reproduced_from:
        return source
    tags = {**source.tags, REPRODUCED_FROM_TAG: reproduced_from}
    return Source(tags=tags, diff=source.diff, requirements=source.requirements)


def record_source(source: Source, run_id: str, log_text: Callable[[str, str, str], object]) -> None:
    """Store a run's package list (and dirty diff) as artifacts with a client's ``log_text``."""
    log_text(run_id, source.requirements, REQUIREMENTS_FILE)
    if source.diff:
        log_text(run_id, source.diff, DIFF_FILE)
