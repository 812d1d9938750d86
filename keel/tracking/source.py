"""What a run was made from: git commit, branch, dirty diff, entry point, Python, packages.

Collected once per process and working directory (a few subprocess calls to git) and reused by
every run the process starts; the diff and the package list become artifacts, stored once by
content however many runs share them.
"""

from __future__ import annotations

import contextlib
import functools
import getpass
import platform
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

__all__ = ["Source", "capture_source", "current_user", "record_source"]


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
def _capture(cwd: str, argv0: str) -> Source:
    entry, where = _entry_point()
    tags = {
        "keel.source.entry_point": entry,
        "keel.python": platform.python_version(),
        "keel.platform": platform.platform(terse=True),
    }
    diff = ""
    top = _git(where, "rev-parse", "--show-toplevel")
    if top:
        root = Path(top.strip())
        commit = (_git(root, "rev-parse", "HEAD") or "").strip()
        branch = (_git(root, "rev-parse", "--abbrev-ref", "HEAD") or "").strip()
        status = _git(root, "status", "--porcelain", "--untracked-files=no") or ""
        if commit:
            tags["keel.source.git_commit"] = commit
        if branch:
            tags["keel.source.git_branch"] = branch
        tags["keel.source.git_repo"] = str(root)
        tags["keel.source.git_dirty"] = "true" if status.strip() else "false"
        if status.strip():
            diff = _git(root, "diff", "HEAD") or ""
        with contextlib.suppress(ValueError):  # an entry point outside the repository
            tags["keel.source.entry_point"] = str(Path(entry).relative_to(root))
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
    """The source of the current process (cached per working directory and entry point)."""
    return _capture(str(Path.cwd()), sys.argv[0] if sys.argv else "")


def record_source(source: Source, run_id: str, log_text: Callable[[str, str, str], object]) -> None:
    """Store a run's package list (and dirty diff) as artifacts with a client's ``log_text``."""
    log_text(run_id, source.requirements, "keel/requirements.txt")
    if source.diff:
        log_text(run_id, source.diff, "keel/source.diff")
