"""LightGBM: a ``Booster``, saved as LightGBM's text model file (``save_model``), or a
scikit-learn style model (``LGBMRegressor``, ``LGBMClassifier``...), saved with joblib so its
``predict`` (labels for a classifier) comes back as it was, with the booster's text file beside
it for tools that read LightGBM's own format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from keel.models.flavors.base import Flavor, require

__all__ = ["FLAVOR", "LightGBMFlavor"]

BOOSTER_FILE = "model.txt"
WRAPPER_FILE = "model.joblib"


class LightGBMFlavor(Flavor):
    name: ClassVar[str] = "lightgbm"
    module: ClassVar[str] = "lightgbm"
    distributions: ClassVar[tuple[str, ...]] = ("lightgbm",)
    extra: ClassVar[str] = "lightgbm"

    def save(
        self, model: Any, folder: Path, *, example: Any = None, artifacts: Any = None
    ) -> list[str]:
        lgb = self.framework()
        if isinstance(model, lgb.Booster):
            model.save_model(str(folder / BOOSTER_FILE))
            return [BOOSTER_FILE]
        model.booster_.save_model(str(folder / BOOSTER_FILE))
        joblib = require("joblib", extra=self.extra)
        joblib.dump(model, folder / WRAPPER_FILE)
        return [BOOSTER_FILE, WRAPPER_FILE]

    def load(self, folder: Path, *, model_class: str, files: list[str]) -> Any:
        lgb = self.framework()
        if WRAPPER_FILE in files:
            return require("joblib", extra=self.extra).load(folder / WRAPPER_FILE)
        return lgb.Booster(model_file=str(folder / BOOSTER_FILE))


FLAVOR = LightGBMFlavor()
