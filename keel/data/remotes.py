"""Data remotes: named stores that ``keel data push`` sends objects to and ``pull`` fetches from.

A remote is a URL: any fsspec URL (``s3://bucket/keel``, ``memory://x``, ``file:///mnt/x``) or
a local folder. The configuration lives in the Keel home, in two YAML files::

    <home>/config.yaml          committed to git with the project: the team's remotes
    <home>/config.local.yaml    this machine only (credentials, a private mirror); wins

Both look like this (other top-level keys are kept when Keel rewrites the file)::

    remotes:
      origin:
        url: s3://bucket/keel
      nas:
        url: ../keel-remote       # relative to the project folder (the one holding .keel)
    default_remote: origin

A relative folder is stored as written and resolved against the project folder when used, as
DVC resolves paths against its config, so a teammate's clone finds the remote beside its own
checkout. ``<home>/.gitignore`` keeps everything else in ``.keel`` out of git.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field

from keel.artifacts import ArtifactStore
from keel.data.workspace import write_text_atomically
from keel.errors import (
    AlreadyExists,
    InvalidInput,
    KeelError,
    MissingExtra,
    NotFound,
    StorageError,
)
from keel.settings import Settings

__all__ = [
    "CONFIG_FILENAME",
    "LOCAL_CONFIG_FILENAME",
    "Remote",
    "add_remote",
    "get_remote",
    "list_remotes",
    "open_store",
    "remove_remote",
    "set_default_remote",
]

CONFIG_FILENAME = "config.yaml"
LOCAL_CONFIG_FILENAME = "config.local.yaml"

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_HEADER = {
    "project": "# Keel project configuration: commit it (keel remote add writes it).\n",
    "local": "# Keel configuration for this machine only: do not commit it (keel remote add "
    "--local).\n",
}
_GITIGNORE = (
    "# Keel: only config.yaml and this file are meant for git; the rest of .keel is local.\n"
    "/*\n!/config.yaml\n!/.gitignore\n"
)
_EXTRAS = {"s3fs": "s3", "gcsfs": "gcs", "adlfs": "azure"}
"""fsspec implementation package -> the Keel extra that installs it."""

Scope = Literal["project", "local"]


class Remote(BaseModel):
    """One configured remote."""

    name: str
    url: str = Field(description="as configured: a relative folder stays relative")
    resolved_url: str = Field(description="what the store opens: a relative folder made absolute")
    default: bool = Field(description="used when push/pull name no --remote")
    scope: Scope = Field(description="project (config.yaml) or local (config.local.yaml)")


# -- reading --------------------------------------------------------------------------------


def list_remotes(*, settings: Settings | None = None) -> list[Remote]:
    """Every remote of the project and of this machine, sorted by name.

    A remote in ``config.local.yaml`` replaces the project's of the same name, and its
    ``default_remote`` wins.

    Args:
        settings: where the Keel home is; default ``Settings()``.

    Returns:
        The remotes, sorted by name; empty when none is configured.

    Raises:
        InvalidInput: a config file is not valid YAML or not of the expected shape.
        StorageError: a config file cannot be read.

    Example:
        >>> [r.name for r in list_remotes()]  # doctest: +SKIP
        ['nas', 'origin']
    """
    settings = settings or Settings()
    home = settings.home_path
    found: dict[str, Remote] = {}
    default: str | None = None
    for scope in ("project", "local"):
        document = _read(_config_path(home, scope))
        for name, entry in _remotes_of(document, _config_path(home, scope)).items():
            url = entry["url"]
            found[name] = Remote(
                name=name,
                url=url,
                resolved_url=_resolve(url, home),
                default=False,
                scope=scope,
            )
        default = document.get("default_remote") or default
    return [
        remote.model_copy(update={"default": name == default})
        for name, remote in sorted(found.items())
    ]


def get_remote(name: str | None = None, *, settings: Settings | None = None) -> Remote:
    """The remote named ``name``, or the default remote.

    Args:
        name: a configured remote; None for the default (or the only one, if there is one).
        settings: where the Keel home is; default ``Settings()``.

    Returns:
        The :class:`Remote`.

    Raises:
        NotFound: no such remote; or none is configured, or several and none is the default.

    Example:
        >>> get_remote("origin").resolved_url  # doctest: +SKIP
        's3://bucket/keel'
    """
    remotes = list_remotes(settings=settings)
    if name is not None:
        for remote in remotes:
            if remote.name == name:
                return remote
        known = ", ".join(r.name for r in remotes) or "none"
        raise NotFound(
            f"no remote named {name!r} (configured: {known}); add it with: "
            f"keel remote add {name} URL",
            remote=name,
        )
    for remote in remotes:
        if remote.default:
            return remote
    if len(remotes) == 1:
        return remotes[0]
    if not remotes:
        raise NotFound(
            "no remote is configured; add one with: keel remote add origin URL --default"
        )
    names = ", ".join(r.name for r in remotes)
    raise NotFound(
        f"several remotes ({names}) and none is the default: pass --remote NAME, or set one "
        "with: keel remote default NAME"
    )


def open_store(remote: Remote, *, must_exist: bool = False) -> ArtifactStore:
    """The artifact store at a remote's URL (a remote has the local store's layout).

    Args:
        remote: the remote.
        must_exist: a local folder must already be there (to pull from it).

    Returns:
        An :class:`~keel.artifacts.ArtifactStore` on ``remote.resolved_url``.

    Raises:
        NotFound: ``must_exist`` and the remote's folder does not exist.
        MissingExtra: the protocol's fsspec package is not installed.
        StorageError: the store cannot be opened (bad credentials, unreachable host...).

    Example:
        >>> open_store(get_remote("origin")).exists(digest)  # doctest: +SKIP
        True
    """
    url = remote.resolved_url
    if "://" not in url:
        if must_exist and not Path(url).is_dir():
            raise NotFound(
                f"the folder of remote {remote.name!r} does not exist: {url}; push to it "
                "first, or fix its URL (keel remote list)",
                remote=remote.name,
            )
        return ArtifactStore(url)
    _check_protocol(url, url)
    try:
        return ArtifactStore(url)
    except KeelError:
        raise
    except Exception as error:  # fsspec raises what its backend raises
        raise StorageError(
            f"cannot open remote {remote.name!r} ({url}): {error}", remote=remote.name
        ) from error


# -- writing --------------------------------------------------------------------------------


def add_remote(
    name: str,
    url: str,
    *,
    default: bool = False,
    local: bool = False,
    settings: Settings | None = None,
) -> Remote:
    """Configure a new remote (and make it the default when asked or when it is the first).

    Args:
        name: letters, digits, ``_``, ``.``, ``-`` (up to 64, starting with a letter or digit).
        url: any fsspec URL, or a local folder (relative: to the project folder).
        default: make it the default remote.
        local: write ``config.local.yaml`` (this machine only) instead of ``config.yaml``.
        settings: where the Keel home is; default ``Settings()``.

    Returns:
        The new :class:`Remote`.

    Raises:
        InvalidInput: a bad name, an unknown URL protocol, or the URL is the local store.
        MissingExtra: the protocol's fsspec package (s3fs, gcsfs...) is not installed.
        AlreadyExists: a remote of that name is already in the same config file.
        StorageError: the config cannot be written.

    Example:
        >>> add_remote("origin", "s3://bucket/keel", default=True)  # doctest: +SKIP
        Remote(name='origin', url='s3://bucket/keel', ...)
    """
    settings = settings or Settings()
    if not _NAME_RE.fullmatch(name):
        raise InvalidInput(
            f"{name!r} is not a valid remote name: use letters, digits, '_', '.' and '-' (up "
            "to 64, starting with a letter or digit)",
            remote=name,
        )
    url = url.strip()
    if not url:
        raise InvalidInput("the remote URL is empty", remote=name)
    home = settings.home_path
    resolved = _resolve(url, home)
    _check_url(url, resolved, settings)
    scope: Scope = "local" if local else "project"
    first = not list_remotes(settings=settings)
    with _editing(home, scope) as document:
        remotes = document.setdefault("remotes", {})
        if name in remotes:
            where = _config_path(home, scope).name
            raise AlreadyExists(
                f"a remote named {name!r} is already in {where} ({remotes[name]['url']}); "
                f"remove it first with: keel remote remove {name}",
                remote=name,
            )
        remotes[name] = {"url": url}
        if default or first:
            document["default_remote"] = name
    return get_remote(name, settings=settings)


def remove_remote(name: str, *, settings: Settings | None = None) -> Remote:
    """Forget a remote (its data is not touched).

    Removed from ``config.local.yaml`` if it is there, else from ``config.yaml``; a default
    naming it is cleared in that file.

    Args:
        name: the remote.
        settings: where the Keel home is; default ``Settings()``.

    Returns:
        The :class:`Remote` removed.

    Raises:
        NotFound: no such remote.
        StorageError: the config cannot be written.

    Example:
        >>> remove_remote("nas").url  # doctest: +SKIP
        '../keel-remote'
    """
    settings = settings or Settings()
    remote = get_remote(name, settings=settings)
    with _editing(settings.home_path, remote.scope) as document:
        document.get("remotes", {}).pop(name, None)
        if document.get("default_remote") == name:
            del document["default_remote"]
        if not document.get("remotes"):
            document.pop("remotes", None)
    return remote


def set_default_remote(
    name: str, *, local: bool = False, settings: Settings | None = None
) -> Remote:
    """Make ``name`` the remote push and pull use without ``--remote``.

    Args:
        name: a configured remote.
        local: record it in ``config.local.yaml`` (this machine only).
        settings: where the Keel home is; default ``Settings()``.

    Returns:
        The :class:`Remote`, now the default.

    Raises:
        NotFound: no such remote.
        StorageError: the config cannot be written.

    Example:
        >>> set_default_remote("nas").default  # doctest: +SKIP
        True
    """
    settings = settings or Settings()
    get_remote(name, settings=settings)
    home = settings.home_path
    overriding = _read(_config_path(home, "local")).get("default_remote")
    if not local and overriding not in (None, name):
        raise InvalidInput(
            f"config.local.yaml makes {overriding!r} the default on this machine, which wins "
            f"over the project's; run: keel remote default --local {name}",
            remote=name,
        )
    scope: Scope = "local" if local else "project"
    with _editing(home, scope) as document:
        document["default_remote"] = name
    return get_remote(name, settings=settings)


# -- helpers --------------------------------------------------------------------------------


def _config_path(home: Path, scope: str) -> Path:
    return home / (CONFIG_FILENAME if scope == "project" else LOCAL_CONFIG_FILENAME)


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as error:
        raise StorageError(f"cannot read {path}: {error}", path=str(path)) from error
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise InvalidInput(
            f"{path} is not valid YAML{where}: fix or delete it", path=str(path)
        ) from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise InvalidInput(f"{path} is not a YAML mapping: fix or delete it", path=str(path))
    return document


def _remotes_of(document: dict[str, Any], path: Path) -> dict[str, dict[str, str]]:
    remotes = document.get("remotes") or {}
    if not isinstance(remotes, dict) or not all(
        isinstance(entry, dict) and isinstance(entry.get("url"), str) for entry in remotes.values()
    ):
        raise InvalidInput(
            f"{path}: 'remotes' must map each name to {{url: URL}}; fix or delete it",
            path=str(path),
        )
    return {str(name): entry for name, entry in remotes.items()}


@contextmanager
def _editing(home: Path, scope: str) -> Iterator[dict[str, Any]]:
    """Read a config file, let the caller change it, write it back atomically, under a lock
    (so two ``keel remote add`` at once both land); the project one also gets the .gitignore."""
    path = _config_path(home, scope)
    try:
        home.mkdir(parents=True, exist_ok=True)
        lock = open(home / "config.lock", "a+b")  # noqa: SIM115 - held until the write ends
    except OSError as error:
        raise StorageError(f"cannot write in {home}: {error.strerror or error}") from error
    with lock:
        _lock(lock.fileno())
        document = _read(path)
        _remotes_of(document, path)
        yield document
        body = yaml.safe_dump(document, sort_keys=False, default_flow_style=False)
        write_text_atomically(path, _HEADER[scope] + body)
    if scope == "project":
        _ensure_gitignore(home)


def _ensure_gitignore(home: Path) -> None:
    """``<home>/.gitignore`` ignores everything in the home but the project config and itself."""
    path = home / ".gitignore"
    try:
        current = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        current = ""
    except (OSError, UnicodeDecodeError) as error:
        raise StorageError(f"cannot read {path}: {error}", path=str(path)) from error
    lines = {line.strip() for line in current.splitlines()}
    if {"/*", "!/config.yaml", "!/.gitignore"} <= lines:
        return
    prefix = current if not current or current.endswith("\n") else current + "\n"
    write_text_atomically(path, prefix + _GITIGNORE)


def _lock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: config edits are not locked
        return
    fcntl.flock(fd, fcntl.LOCK_EX)  # released when the file is closed


def _resolve(url: str, home: Path) -> str:
    """The URL a store opens: local folders absolute (relative ones against the project)."""
    if "://" in url and not url.startswith("file://"):
        return url
    path = Path(os.path.expanduser(url.removeprefix("file://")))
    if not path.is_absolute():
        path = home.parent / path
    return str(Path(os.path.normpath(path)))


def _check_url(url: str, resolved: str, settings: Settings) -> None:
    """Refuse what cannot be a remote: an unknown protocol, a missing package, the store."""
    if "://" not in resolved:
        store = Path(os.path.normpath(Path(settings.artifacts_url).expanduser().absolute()))
        if Path(resolved) == store:
            raise InvalidInput(
                f"{url} is the local store itself ({store}); a remote must be another folder",
                url=url,
            )
        return
    _check_protocol(url, resolved)


def _check_protocol(url: str, resolved: str) -> None:
    protocol = resolved.split("://", 1)[0]
    from fsspec import get_filesystem_class
    from fsspec.registry import known_implementations

    try:
        get_filesystem_class(protocol)
    except ValueError:
        raise InvalidInput(
            f"unknown protocol {protocol!r} in {url}: use a folder or an fsspec URL such as "
            "s3://bucket/keel, gs://bucket/keel or memory://name",
            url=url,
        ) from None
    except ImportError:
        spec = known_implementations.get(protocol, {})
        package = str(spec.get("class", protocol)).split(".")[0]
        raise MissingExtra(package, extra=_EXTRAS.get(package, package)) from None
