"""Any model in Python: subclass :class:`PythonModel`, implement ``predict(context,
model_input)`` (and ``load_context(context)`` to read files once at load time).

The instance is saved with cloudpickle when it is installed (classes defined in ``__main__`` or a
notebook then load elsewhere), else with pickle (its class must be importable where it is
loaded). Files given as ``artifacts={name: path}`` are copied into the model's folder and handed
back as ``context.artifacts[name]``, a local path, wherever the model is loaded.
"""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from keel.errors import InvalidInput, NotFound
from keel.models.flavors.base import Flavor, Predict

__all__ = ["FLAVOR", "PythonFlavor", "PythonModel", "PythonModelContext"]

MODEL_FILE = "python_model.pkl"
INDEX_FILE = "python_model.json"
ARTIFACTS_FOLDER = "artifacts"


@dataclass(frozen=True)
class PythonModelContext:
    """What a :class:`PythonModel` gets at load and predict time."""

    artifacts: dict[str, str] = field(default_factory=dict)
    """``{name: local path}`` of the files given as ``log_model(..., artifacts=...)``."""


class PythonModel:
    """Base class of a model Keel stores by pickling it.

    Example:
        >>> class Doubler(keel.models.PythonModel):
        ...     def predict(self, context, model_input):
        ...         return model_input["x"] * 2
        >>> keel.models.log_model(Doubler(), input_example=pd.DataFrame({"x": [1.0]}))
        ... # doctest: +SKIP
    """

    def load_context(self, context: PythonModelContext) -> None:
        """Called once after loading (and before predicting at log time): read artifacts."""

    def predict(self, context: PythonModelContext, model_input: Any) -> Any:
        """Predictions for ``model_input`` (checked against the signature first)."""
        raise NotImplementedError(f"{type(self).__name__} must implement predict")


class PythonFlavor(Flavor):
    name: ClassVar[str] = "python"
    module: ClassVar[str] = "keel"
    distributions: ClassVar[tuple[str, ...]] = ("cloudpickle",)
    extra: ClassVar[str] = "python"

    def matches(self, model: Any) -> bool:
        return isinstance(model, PythonModel)

    def version(self) -> str | None:
        """None: the python flavor's framework is the model's own code."""
        return None

    def save(
        self,
        model: Any,
        folder: Path,
        *,
        example: Any = None,
        artifacts: Mapping[str, str | Path] | None = None,
    ) -> list[str]:
        try:
            import cloudpickle as serializer
        except ImportError:  # pickle it is; the class must be importable where it loads
            serializer = pickle
        with open(folder / MODEL_FILE, "wb") as out:
            serializer.dump(model, out)
        copied = {name: _copy(name, Path(path), folder) for name, path in (artifacts or {}).items()}
        index = {"serializer": serializer.__name__, "artifacts": copied}
        (folder / INDEX_FILE).write_text(json.dumps(index, indent=2), encoding="utf-8")
        files = [MODEL_FILE, INDEX_FILE]
        for rel in copied.values():
            target = folder / rel
            paths = sorted(target.rglob("*")) if target.is_dir() else [target]
            files += [p.relative_to(folder).as_posix() for p in paths if p.is_file()]
        return files

    def requirements(self, folder: Path) -> list[str]:
        """cloudpickle when the model was saved with it."""
        index = json.loads((folder / INDEX_FILE).read_text(encoding="utf-8"))
        return ["cloudpickle"] if index.get("serializer") == "cloudpickle" else []

    def load(self, folder: Path, *, model_class: str, files: list[str]) -> Any:
        with open(folder / MODEL_FILE, "rb") as source:
            return pickle.load(source)  # a model is code: load what you trust

    def predictor(self, model: Any, folder: Path) -> Predict:
        index = json.loads((folder / INDEX_FILE).read_text(encoding="utf-8"))
        context = PythonModelContext(
            artifacts={name: str(folder / rel) for name, rel in index["artifacts"].items()}
        )
        model.load_context(context)
        return lambda data: model.predict(context, data)


def _copy(name: str, source: Path, folder: Path) -> str:
    """Copy one artifact to ``artifacts/<name>/<file or folder name>``; return that path."""
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise InvalidInput(f"artifact name {name!r} must be a plain name, e.g. 'vocab'")
    if not source.exists():
        raise NotFound(f"artifact {name!r}: no such file or folder {source}", path=str(source))
    rel = f"{ARTIFACTS_FOLDER}/{name}/{source.name}"
    target = folder / rel
    target.parent.mkdir(parents=True)
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copy2(source, target)
    return rel


FLAVOR = PythonFlavor()
