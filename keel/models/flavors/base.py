"""What every flavor provides: recognise a model, save it to a folder, load it back, predict.

A flavor never imports its framework at module level: :func:`require` imports it when a model
is saved or loaded, and a missing one raises :class:`~keel.errors.MissingExtra` naming the pip
extra that installs it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

from keel.errors import InvalidInput, MissingExtra

__all__ = ["Flavor", "Predict", "class_path", "import_class", "made_by", "require"]

Predict = Callable[[Any], Any]
"""A loaded model's prediction function: takes checked input, returns predictions."""


class Flavor:
    """One framework's way to store models. Subclasses set the class variables and implement
    :meth:`save`, :meth:`load` and :meth:`predictor`."""

    name: ClassVar[str]
    """The manifest's ``flavor``: sklearn, xgboost, lightgbm, pytorch, onnx or python."""
    module: ClassVar[str]
    """The framework's import name (``sklearn``); models whose class comes from it match."""
    distributions: ClassVar[tuple[str, ...]]
    """pip distributions to pin in the requirements; the first one's version is recorded."""
    extra: ClassVar[str]
    """The keel extra that installs the framework (``pip install 'keel[extra]'``)."""

    def matches(self, model: Any) -> bool:
        """True when ``model`` is this flavor's (decided without importing the framework)."""
        return made_by(model, self.module)

    def version(self) -> str | None:
        """The installed framework's version, or None when it is not installed."""
        try:
            return importlib.metadata.version(self.distributions[0])
        except importlib.metadata.PackageNotFoundError:
            return None

    def save(
        self, model: Any, folder: Path, *, example: Any = None, artifacts: Any = None
    ) -> list[str]:
        """Write ``model`` into ``folder``; return the files written, relative to it.

        ``example`` is the input example (a flavor may trace the model with it);
        ``artifacts`` are extra files, which only the python flavor takes.
        """
        raise NotImplementedError

    def requirements(self, folder: Path) -> list[str]:
        """The pip distributions the saved model needs, to be pinned at their versions."""
        return list(self.distributions)

    def load(self, folder: Path, *, model_class: str, files: list[str]) -> Any:
        """The model saved in ``folder`` (the framework's own object)."""
        raise NotImplementedError

    def predictor(self, model: Any, folder: Path) -> Predict:
        """A function predicting with ``model`` (as loaded, or as given to ``log_model``)."""
        return lambda data: model.predict(data)

    def framework(self) -> ModuleType:
        """The framework's module, imported now."""
        return require(self.module, distribution=self.distributions[0], extra=self.extra)


def require(module: str, *, distribution: str | None = None, extra: str) -> ModuleType:
    """Import ``module``, or raise MissingExtra naming ``pip install 'keel[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(distribution or module, extra=extra) from None


def made_by(model: Any, module: str) -> bool:
    """True when ``model``'s class or one of its bases comes from package ``module``."""
    prefix = module + "."
    return any(
        cls.__module__ == module or cls.__module__.startswith(prefix) for cls in type(model).__mro__
    )


def class_path(model: Any) -> str:
    """``package.module.Class`` of ``model``."""
    cls = type(model)
    return f"{cls.__module__}.{cls.__qualname__}"


def import_class(path: str, *, within: str, extra: str) -> type:
    """The class named by ``path`` (``xgboost.sklearn.XGBRegressor``); it must live in the
    package ``within``, so a manifest cannot make Keel import arbitrary code.

    Raises:
        InvalidInput: ``path`` is outside ``within`` or names no class.
        MissingExtra: the package is not installed.
    """
    module_name, _, name = path.rpartition(".")
    if not (module_name == within or module_name.startswith(within + ".")):
        raise InvalidInput(f"model class {path!r} is not a {within} class", model_class=path)
    module = require(module_name, distribution=within, extra=extra)
    cls = getattr(module, name, None)
    if not isinstance(cls, type):
        raise InvalidInput(f"{path!r} names no class", model_class=path)
    return cls
