"""Keel's one settings object: every knob, its default, its environment variable (``KEEL_*``).

Build it once (``Settings()`` reads the environment) and pass it explicitly; nothing deeper in
Keel reads ``os.environ``.

``Settings`` is a plain frozen dataclass, not a pydantic model: this module is imported by every
command, and pydantic with pydantic-settings cost ~0.3 s of a CLI start that must stay near
0.1 s. Each field carries its default, description and bounds in its metadata (one place); one
table, :data:`_PARSERS`, turns environment strings into each field type.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Any, NamedTuple

from keel.errors import InvalidInput

__all__ = [
    "HOME_DIRNAME",
    "SecretStr",
    "Setting",
    "Settings",
    "environment_key",
    "find_home",
]

HOME_DIRNAME = ".keel"
ENV_PREFIX = "KEEL_"
#: the source ``keel config`` shows for database_url and artifact_url derived from home
INSIDE_HOME = "default (inside home)"


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

    Building Settings walks up the folders and reads the environment; callers that resolve a
    default often (the fluent API) cache by this key instead.
    """
    keel_vars = tuple(sorted((k, v) for k, v in os.environ.items() if _is_keel_variable(k)))
    return os.getcwd(), keel_vars


def _is_keel_variable(name: str) -> bool:
    return name[: len(ENV_PREFIX)].upper() == ENV_PREFIX


class SecretStr:
    """A string kept out of output: ``str()`` and ``repr()`` show ``**********``.

    The same surface as pydantic's ``SecretStr``, which callers used before.

    Example:
        >>> SecretStr("keel_abc").get_secret_value()
        'keel_abc'
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        """The secret itself, for the one place that must send it."""
        return self._value

    def __str__(self) -> str:
        return "**********" if self._value else ""

    def __repr__(self) -> str:
        return f"SecretStr('{self}')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretStr) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[type[SecretStr], tuple[str]]:
        return SecretStr, (self._value,)


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def _already(*kinds: type) -> Callable[[Any], Any]:
    """Accept an argument already of one of ``kinds`` (a bool is no number), else TypeError."""

    def check(value: Any) -> Any:
        if isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool)):
            return value
        raise TypeError(value)

    return check


def _path(value: str | os.PathLike[str]) -> Path:
    return Path(value).expanduser()


#: field type -> (parse an environment string, check an argument of another type, expected)
_PARSERS: dict[type, tuple[Callable[[str], Any], Callable[[Any], Any], str]] = {
    bool: (_parse_bool, _already(bool), "true/false, 1/0, yes/no or on/off"),
    int: (int, _already(int), "an integer"),
    float: (float, lambda value: float(_already(int, float)(value)), "a number"),
    str: (str, _already(str), "a string"),
    Path: (_path, _path, "a path"),
    SecretStr: (SecretStr, _already(SecretStr), "a string"),
}


class Setting(NamedTuple):
    """One setting as :meth:`Settings.fields` lists it."""

    name: str
    env: str
    default: Any
    description: str
    type: type
    optional: bool
    gt: float | None
    ge: float | None

    def convert(self, value: Any, *, given_as: str) -> Any:
        """``value`` (an environment string or an argument) as this setting's type.

        Raises:
            InvalidInput: the value does not parse or breaks a bound; the message names
                ``given_as``, the value and what is expected.
        """
        parse, check, expected = _PARSERS[self.type]
        if self.gt is not None:
            expected = f"{expected} greater than {self.gt:g}"
        if self.ge is not None:
            expected = f"{expected} of at least {self.ge:g}"
        if self.optional and (value is None or (isinstance(value, str) and value == "")):
            return None
        try:
            converted = parse(value) if isinstance(value, str) else check(value)
        except (ValueError, TypeError):
            self._fail(value, given_as, expected)
        if (self.gt is not None and not converted > self.gt) or (
            self.ge is not None and not converted >= self.ge
        ):
            self._fail(value, given_as, expected)
        return converted

    def _fail(self, value: Any, given_as: str, expected: str) -> typing.NoReturn:
        shown = "(hidden)" if self.type is SecretStr else repr(value)
        raise InvalidInput(
            f"invalid setting {given_as}={shown}: expected {expected}",
            setting=self.name,
            value=shown,
            expected=expected,
        )


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


#: the dataclass default of every field: tells an argument apart from "not given"
_UNSET: Any = _Unset()


def _about(
    default: Any, description: str, *, gt: float | None = None, ge: float | None = None
) -> dict[str, Any]:
    """A field's metadata: its real default (the dataclass default is ``_UNSET``) and docs."""
    return {"default": default, "description": description, "gt": gt, "ge": ge}


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Resolved configuration; each field maps to the environment variable ``KEEL_<NAME>``.

    Keyword arguments win over the environment, which wins over the defaults. Variable names
    are matched case-insensitively (``keel_home`` works); unknown ``KEEL_*`` variables are
    ignored; an empty variable leaves an optional setting unset.

    Raises:
        InvalidInput: a value does not parse or breaks its bound (``KEEL_METRIC_FLUSH_SIZE=0``).

    Example:
        >>> settings = Settings(home="/srv/keel")
        >>> settings.db_url
        'sqlite:////srv/keel/keel.db'
        >>> settings.replace(auth=True).auth
        True
    """

    home: Path | None = field(
        default=_UNSET,
        metadata=_about(
            None,
            "The .keel folder holding the embedded database and artifacts. Default: the nearest "
            ".keel found walking up from the current directory, else ./.keel.",
        ),
    )
    database_url: str | None = field(
        default=_UNSET,
        metadata=_about(
            None,
            "SQLAlchemy URL of the metadata database, e.g. postgresql+psycopg://user@host/db. "
            "Default: sqlite:///<home>/keel.db.",
        ),
    )
    tracking_uri: str | None = field(
        default=_UNSET,
        metadata=_about(
            None,
            "URL of a keel server (http://host:5000). When set, the Python API and the CLI talk to "
            "that server instead of a local store.",
        ),
    )
    tracking_token: SecretStr | None = field(
        default=_UNSET,
        metadata=_about(
            None,
            "API token sent to a keel server started with --auth (made by `keel tokens create`); "
            "the Python API, the CLI and `keel sync` send it as a bearer token.",
        ),
    )
    auth: bool = field(
        default=_UNSET,
        metadata=_about(
            False,
            "`keel server` requires a token on every request and enforces roles, per-experiment "
            "grants and the audit log (the same as --auth).",
        ),
    )
    artifact_url: str | None = field(
        default=_UNSET,
        metadata=_about(
            None,
            "fsspec URL or path of the content-addressed artifact store (s3://bucket/prefix, "
            "gs://..., /mnt/share). Default: <home>/artifacts.",
        ),
    )
    data_fsync: bool = field(
        default=_UNSET,
        metadata=_about(
            False,
            "Make the objects of `keel data add`, `pull` and `log_dataset` durable (one flush "
            "to disk) before the pointer or version naming them is written. Off, as in git and "
            "DVC: the working copy or the remote still holds the content, and an object a power "
            "cut lost is caught by the hash check on read and by `keel data fsck`.",
        ),
    )
    metric_flush_interval: float = field(
        default=_UNSET,
        metadata=_about(1.0, "Seconds between background writes of buffered metric points.", gt=0),
    )
    metric_flush_size: int = field(
        default=_UNSET,
        metadata=_about(
            5000, "Buffered metric points that trigger a write before the interval ends.", gt=0
        ),
    )
    sqlite_busy_timeout: float = field(
        default=_UNSET,
        metadata=_about(
            60.0, "Seconds a SQLite writer waits for another process's lock before failing.", gt=0
        ),
    )
    heartbeat_interval: float = field(
        default=_UNSET,
        metadata=_about(
            30.0,
            "Seconds between a running run's heartbeats (how a crashed run is detected).",
            gt=0,
        ),
    )
    lost_run_timeout: float = field(
        default=_UNSET,
        metadata=_about(
            300.0,
            "Seconds without a heartbeat after which a RUNNING run on another host is marked LOST "
            "(runs on this host are checked by process id at once).",
            gt=0,
        ),
    )
    remote_flush_timeout: float = field(
        default=_UNSET,
        metadata=_about(
            30.0,
            "Seconds end_run waits for a keel server (tracking_uri) to take a run's metric points "
            "before saving the rest in <home>/outbox for `keel sync`.",
            ge=0,
        ),
    )
    remote_max_buffered_points: int = field(
        default=_UNSET,
        metadata=_about(
            100_000,
            "Metric points held in memory while a keel server cannot be reached; older points are "
            "written to <home>/outbox beyond it.",
            gt=0,
        ),
    )
    capture_source: bool = field(
        default=_UNSET,
        metadata=_about(
            True,
            "Record git commit, branch, dirty diff, entry point and installed packages with every "
            "run.",
        ),
    )

    #: where each value came from, as ``keel config`` shows it
    _sources: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        environ = _keel_environment()
        sources: dict[str, str] = {}
        for setting in _FIELDS:
            value = getattr(self, setting.name)
            if value is not _UNSET:
                value = setting.convert(value, given_as=setting.name)
                sources[setting.name] = "argument"
            elif setting.env in environ:
                variable, text = environ[setting.env]
                value = setting.convert(text, given_as=variable)
                sources[setting.name] = f"environment ({variable})"
                if value is None:
                    sources[setting.name] = "default"
            else:
                value = setting.default
                sources[setting.name] = "default"
            object.__setattr__(self, setting.name, value)
        if self.home is None:
            home, found = find_home()
            sources["home"] = (
                "found walking up from the current directory" if found else "default (./.keel)"
            )
        else:
            home = self.home.resolve()
        object.__setattr__(self, "home", home)
        if self.database_url is None:
            object.__setattr__(self, "database_url", f"sqlite:///{home / 'keel.db'}")
            sources["database_url"] = INSIDE_HOME
        if self.artifact_url is None:
            object.__setattr__(self, "artifact_url", str(home / "artifacts"))
            sources["artifact_url"] = INSIDE_HOME
        object.__setattr__(self, "_sources", sources)

    @classmethod
    def fields(cls) -> tuple[Setting, ...]:
        """Every setting with its environment variable, default, description and type.

        Example:
            >>> [s.env for s in Settings.fields()][:2]
            ['KEEL_HOME', 'KEEL_DATABASE_URL']
        """
        return _FIELDS

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied (converted and checked as arguments are).

        The environment is not read again. A database or artifact URL that defaulted to
        inside home follows a changed ``home``.

        Raises:
            InvalidInput: a change is not a valid value, or names no setting.

        Example:
            >>> server_settings = settings.replace(auth=True)
        """
        unknown = sorted(set(changes) - {s.name for s in _FIELDS})
        if unknown:
            raise InvalidInput(f"unknown setting(s): {', '.join(unknown)}", settings=unknown)
        values = {s.name: getattr(self, s.name) for s in _FIELDS}
        sources = dict(self._sources)
        if "home" in changes:
            for name in ("database_url", "artifact_url"):
                if sources[name] == INSIDE_HOME and name not in changes:
                    values[name] = None
        values.update(changes)
        copy = Settings(**values)
        sources.update(dict.fromkeys(changes, "argument"))
        sources.update({n: s for n, s in copy._sources.items() if s == INSIDE_HOME})
        object.__setattr__(copy, "_sources", sources)
        return copy

    @property
    def home_path(self) -> Path:
        """The resolved home folder (always set after construction)."""
        assert self.home is not None
        return self.home

    @property
    def db_url(self) -> str:
        """The resolved database URL (always set after construction)."""
        assert self.database_url is not None
        return self.database_url

    @property
    def artifacts_url(self) -> str:
        """The resolved artifact store URL (always set after construction)."""
        assert self.artifact_url is not None
        return self.artifact_url

    def sources(self) -> dict[str, str]:
        """Where each value came from: ``argument``, ``environment (KEEL_X)``, ``default``..."""
        return dict(self._sources)

    def describe(self) -> list[dict[str, Any]]:
        """Every setting with its value, where the value came from and what it means."""
        return [
            {
                "name": setting.name,
                "env": setting.env,
                "value": str(value) if isinstance(value, Path) else value,
                "source": self._sources.get(setting.name, "default"),
                "description": setting.description,
            }
            for setting in _FIELDS
            for value in (getattr(self, setting.name),)
        ]


def _keel_environment() -> dict[str, tuple[str, str]]:
    """``{"KEEL_NAME": (variable as spelled, value)}``; an upper-case spelling wins."""
    found: dict[str, tuple[str, str]] = {}
    for name, value in os.environ.items():
        if _is_keel_variable(name):
            upper = name.upper()
            if upper not in found or name == upper:
                found[upper] = (name, value)
    return found


def _describe_fields() -> Iterator[Setting]:
    hints = typing.get_type_hints(Settings)
    for f in dataclasses.fields(Settings):
        if not f.init:
            continue
        kind = hints[f.name]
        members = typing.get_args(kind) if isinstance(kind, UnionType) else (kind,)
        (base,) = [m for m in members if m is not type(None)]
        yield Setting(
            name=f.name,
            env=f"{ENV_PREFIX}{f.name.upper()}",
            default=f.metadata["default"],
            description=f.metadata["description"],
            type=base,
            optional=type(None) in members,
            gt=f.metadata["gt"],
            ge=f.metadata["ge"],
        )


_FIELDS: tuple[Setting, ...] = tuple(_describe_fields())
