"""scikit-learn: any estimator or Pipeline (or a class built on sklearn's bases), saved with
joblib (the model's own pickle, numpy arrays stored beside it) as ``model.joblib``.

Loading a pickle runs code: load only models you trust, which is what the registry's
governance is for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from keel.models.flavors.base import Flavor, require

__all__ = ["FLAVOR", "SklearnFlavor"]

MODEL_FILE = "model.joblib"


class SklearnFlavor(Flavor):
    name: ClassVar[str] = "sklearn"
    module: ClassVar[str] = "sklearn"
    distributions: ClassVar[tuple[str, ...]] = ("scikit-learn", "joblib")
    extra: ClassVar[str] = "sklearn"

    def save(
        self, model: Any, folder: Path, *, example: Any = None, artifacts: Any = None
    ) -> list[str]:
        joblib = require("joblib", distribution="scikit-learn", extra=self.extra)
        joblib.dump(model, folder / MODEL_FILE)
        return [MODEL_FILE]

    def load(self, folder: Path, *, model_class: str, files: list[str]) -> Any:
        self.framework()
        joblib = require("joblib", distribution="scikit-learn", extra=self.extra)
        return joblib.load(folder / MODEL_FILE)


FLAVOR = SklearnFlavor()
