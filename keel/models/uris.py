"""Model URIs: where a model comes from, parsed once for loading, registering and the CLI.

Three forms name a model:

- ``runs:/RUN_ID/PATH``: a logged model's folder in a run's artifacts (``runs:/5f0c.../model``);
- ``models:/NAME/VERSION``: a registered version (``models:/churn/3``);
- ``models:/NAME@ALIAS``: the version an alias points at (``models:/churn@champion``).

``models:/NAME/latest`` (or ``@latest``) names the newest version. The CLI also takes the short
forms ``NAME/3`` and ``NAME@champion`` (:func:`parse_version_ref`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from keel.errors import InvalidInput
from keel.models.models import ALIAS_PATTERN, MODEL_NAME_PATTERN

__all__ = [
    "LATEST",
    "ModelsUri",
    "RunsUri",
    "check_alias",
    "check_model_name",
    "parse_model_uri",
    "parse_version_ref",
]

LATEST = "latest"
"""The word that names a model's newest version; it cannot be an alias."""

# applied with fullmatch: the patterns end in ``$``, which re.match lets match before a "\n"
_NAME = re.compile(MODEL_NAME_PATTERN)
_ALIAS = re.compile(ALIAS_PATTERN)
_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

_FORMS = "runs:/RUN_ID/PATH, models:/NAME/VERSION or models:/NAME@ALIAS"
_SHORT_FORMS = "NAME/VERSION or NAME@ALIAS (or models:/NAME/VERSION, models:/NAME@ALIAS)"


@dataclass(frozen=True)
class RunsUri:
    """``runs:/RUN_ID/PATH``: a folder in a run's artifacts."""

    run_id: str
    path: str

    def __str__(self) -> str:
        return f"runs:/{self.run_id}/{self.path}"


@dataclass(frozen=True)
class ModelsUri:
    """``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``; neither set means the latest."""

    name: str
    version: int | None = None
    alias: str | None = None

    @property
    def is_latest(self) -> bool:
        """True when this names the newest version (``models:/NAME/latest``)."""
        return self.version is None and self.alias is None

    @property
    def selector(self) -> int | str:
        """The version number, the alias, or ``"latest"``: what ``get_version`` takes."""
        if self.version is not None:
            return self.version
        return self.alias if self.alias is not None else LATEST

    @property
    def ref(self) -> str:
        """The short form, ``NAME/3`` or ``NAME@champion``."""
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return f"{self.name}/{self.version if self.version is not None else LATEST}"

    def __str__(self) -> str:
        return f"models:/{self.ref}"


def parse_model_uri(uri: str) -> RunsUri | ModelsUri:
    """Parse ``runs:/RUN_ID/PATH``, ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``.

    Args:
        uri: the URI.

    Returns:
        A :class:`RunsUri` or a :class:`ModelsUri`.

    Raises:
        InvalidInput: anything else; the message names the accepted forms.

    Example:
        >>> parse_model_uri("models:/churn@champion")
        ModelsUri(name='churn', version=None, alias='champion')
        >>> parse_model_uri("runs:/5f0c/model")
        RunsUri(run_id='5f0c', path='model')
    """
    if not isinstance(uri, str):
        raise InvalidInput(f"a model URI is a string ({_FORMS}), not {uri!r}", uri=repr(uri))
    if uri.startswith("runs:/"):
        return _parse_runs(uri)
    if uri.startswith("models:/"):
        return _parse_ref(uri[len("models:/") :], uri=uri, forms=_FORMS)
    raise InvalidInput(f"malformed model URI {uri!r}: use {_FORMS}", uri=uri)


def parse_version_ref(ref: str, *, allow_bare: bool = False) -> ModelsUri:
    """Parse a registered version as the CLI writes it: ``NAME/3``, ``NAME@champion``...

    ``models:/`` URIs are accepted too.

    Args:
        ref: the reference.
        allow_bare: accept a bare ``NAME`` (returned with neither version nor alias), for
            commands that act on a model or one of its versions.

    Raises:
        InvalidInput: anything else; the message names the accepted forms.

    Example:
        >>> parse_version_ref("churn/3")
        ModelsUri(name='churn', version=3, alias=None)
    """
    if not isinstance(ref, str):
        raise InvalidInput(f"a model version is a string ({_SHORT_FORMS}), not {ref!r}")
    body = ref[len("models:/") :] if ref.startswith("models:/") else ref
    if allow_bare and "/" not in body and "@" not in body and _NAME.fullmatch(body):
        return ModelsUri(name=body)
    if "/" not in body and "@" not in body:
        forms = f"NAME, {_SHORT_FORMS}" if allow_bare else _SHORT_FORMS
        raise InvalidInput(f"malformed model version {ref!r}: use {forms}", ref=ref)
    return _parse_ref(body, uri=ref, forms=_SHORT_FORMS)


def check_model_name(name: str) -> str:
    """``name`` when it is a valid registered model name.

    Raises:
        InvalidInput: it is not (the message says what is allowed).
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidInput(
            f"invalid model name {name!r}: use letters, digits, '.', '_' and '-' (starting with "
            "a letter or digit), up to 128 characters",
            name=repr(name),
        )
    return name


def check_alias(alias: str) -> str:
    """``alias`` when it is a valid alias to set (not ``latest``, not a number).

    Raises:
        InvalidInput: it is not (the message says what is allowed).
    """
    if not isinstance(alias, str) or not _ALIAS.fullmatch(alias) or alias == LATEST:
        raise InvalidInput(
            f"invalid alias {alias!r}: use lowercase letters, digits, '_' and '-', starting "
            "with a letter, up to 64 characters ('latest' is reserved)",
            alias=repr(alias),
        )
    return alias


def _parse_runs(uri: str) -> RunsUri:
    run_id, _, path = uri[len("runs:/") :].partition("/")
    path = path.strip("/")
    parts = path.split("/")
    if not _RUN_ID.fullmatch(run_id) or not path or any(p in ("", ".", "..") for p in parts):
        raise InvalidInput(
            f"malformed model URI {uri!r}: a run's model is runs:/RUN_ID/PATH, e.g. "
            f"runs:/5f0c.../model (accepted: {_FORMS})",
            uri=uri,
        )
    return RunsUri(run_id=run_id, path=path)


def _parse_ref(body: str, *, uri: str, forms: str) -> ModelsUri:
    if "@" in body:
        name, _, alias = body.partition("@")
        if _NAME.fullmatch(name) and alias == LATEST:
            return ModelsUri(name=name)
        if _NAME.fullmatch(name) and _ALIAS.fullmatch(alias):
            return ModelsUri(name=name, alias=alias)
    else:
        name, _, version = body.partition("/")
        if _NAME.fullmatch(name) and version == LATEST:
            return ModelsUri(name=name)
        number = int(version) if version.isascii() and version.isdecimal() else 0
        if _NAME.fullmatch(name) and number >= 1:
            return ModelsUri(name=name, version=number)
    raise InvalidInput(
        f"malformed model reference {uri!r}: use {forms}; a name is letters, digits, '.', "
        "'_' and '-', a version a number from 1, an alias lowercase letters, digits, '_' and '-'",
        uri=uri,
    )
