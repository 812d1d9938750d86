"""Keel's one settings object: every knob, its default, its environment variable (``KEEL_*``).

Build it once (``Settings()`` reads the environment) and pass it explicitly; nothing deeper in
Keel reads ``os.environ``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, PrivateAttr, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["HOME_DIRNAME", "Settings", "environment_key", "find_home"]

HOME_DIRNAME = ".keel"


def find_home(start: Path | None = None) -> tuple[Path, bool]:
    """Find the ``.keel`` folder by walking up from ``start`` as git finds ``.git``.

    Returns:
        ``(path, found)``: the nearest existing ``.keel`` folder and True, or
        ``start/.keel`` (not yet created) and False when no parent has one.
    """
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        candidate = folder / HOME_DIRNAME
        if candidate.is_dir():
            return candidate, True
    return start / HOME_DIRNAME, False


def environment_key() -> tuple[str, tuple[tuple[str, str], ...]]:
    """What ``Settings()`` would be built from: the working directory and the KEEL_* variables.

    Building Settings costs about a millisecond; callers that resolve a default often (the
    fluent API) cache by this key instead.
    """
    keel_vars = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("KEEL_")))
    return os.getcwd(), keel_vars


class Settings(BaseSettings):
    """Resolved configuration; each field maps to the environment variable ``KEEL_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="KEEL_", extra="ignore", validate_default=True)

    home: Path | None = Field(
        default=None,
        description="The .keel folder holding the embedded database and artifacts. Default: the "
        "nearest .keel found walking up from the current directory, else ./.keel.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the metadata database, e.g. "
        "postgresql+psycopg://user@host/db. Default: sqlite:///<home>/keel.db.",
    )
    tracking_uri: str | None = Field(
        default=None,
        description="URL of a keel server (http://host:5000). When set, the Python API and the "
        "CLI talk to that server instead of a local store.",
    )
    tracking_token: SecretStr | None = Field(
        default=None,
        description="API token sent to a keel server started with --auth (made by `keel tokens "
        "create`); the Python API, the CLI and `keel sync` send it as a bearer token.",
    )
    auth: bool = Field(
        default=False,
        description="`keel server` requires a token on every request and enforces roles, "
        "per-experiment grants and the audit log (the same as --auth).",
    )
    artifact_url: str | None = Field(
        default=None,
        description="fsspec URL or path of the content-addressed artifact store "
        "(s3://bucket/prefix, gs://..., /mnt/share). Default: <home>/artifacts.",
    )
    data_fsync: bool = Field(
        default=False,
        description="Make the objects of `keel data add`, `pull` and `log_dataset` durable "
        "(one flush to disk) before the pointer or version naming them is written. Off, as in "
        "git and DVC: the working copy or the remote still holds the content, and an object a "
        "power cut lost is caught by the hash check on read and by `keel data fsck`.",
    )
    metric_flush_interval: float = Field(
        default=1.0,
        gt=0,
        description="Seconds between background writes of buffered metric points.",
    )
    metric_flush_size: int = Field(
        default=5000,
        gt=0,
        description="Buffered metric points that trigger a write before the interval ends.",
    )
    sqlite_busy_timeout: float = Field(
        default=60.0,
        gt=0,
        description="Seconds a SQLite writer waits for another process's lock before failing.",
    )
    heartbeat_interval: float = Field(
        default=30.0,
        gt=0,
        description="Seconds between a running run's heartbeats (how a crashed run is detected).",
    )
    lost_run_timeout: float = Field(
        default=300.0,
        gt=0,
        description="Seconds without a heartbeat after which a RUNNING run on another host is "
        "marked LOST (runs on this host are checked by process id at once).",
    )
    remote_flush_timeout: float = Field(
        default=30.0,
        ge=0,
        description="Seconds end_run waits for a keel server (tracking_uri) to take a run's "
        "metric points before saving the rest in <home>/outbox for `keel sync`.",
    )
    remote_max_buffered_points: int = Field(
        default=100_000,
        gt=0,
        description="Metric points held in memory while a keel server cannot be reached; older "
        "points are written to <home>/outbox beyond it.",
    )
    capture_source: bool = Field(
        default=True,
        description="Record git commit, branch, dirty diff, entry point and installed packages "
        "with every run.",
    )

    _sources: dict[str, str] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _resolve(self) -> Settings:
        sources: dict[str, str] = {}
        for name in type(self).model_fields:
            env = f"KEEL_{name.upper()}"
            if env in os.environ:
                sources[name] = f"environment ({env})"
            elif name in self.model_fields_set:
                sources[name] = "argument"
            else:
                sources[name] = "default"
        if self.home is None:
            home, found = find_home()
            self.home = home
            sources["home"] = (
                "found walking up from the current directory" if found else ("default (./.keel)")
            )
        else:
            self.home = Path(self.home).expanduser().resolve()
        if self.database_url is None:
            self.database_url = f"sqlite:///{self.home / 'keel.db'}"
            sources["database_url"] = "default (inside home)"
        if self.artifact_url is None:
            self.artifact_url = str(self.home / "artifacts")
            sources["artifact_url"] = "default (inside home)"
        self._sources = sources
        return self

    @property
    def home_path(self) -> Path:
        """The resolved home folder (always set after validation)."""
        assert self.home is not None
        return self.home

    @property
    def db_url(self) -> str:
        """The resolved database URL (always set after validation)."""
        assert self.database_url is not None
        return self.database_url

    @property
    def artifacts_url(self) -> str:
        """The resolved artifact store URL (always set after validation)."""
        assert self.artifact_url is not None
        return self.artifact_url

    def describe(self) -> list[dict[str, Any]]:
        """Every setting with its value, where the value came from and what it means."""
        rows = []
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            rows.append(
                {
                    "name": name,
                    "env": f"KEEL_{name.upper()}",
                    "value": str(value) if isinstance(value, Path) else value,
                    "source": self._sources.get(name, "default"),
                    "description": field.description or "",
                }
            )
        return rows
