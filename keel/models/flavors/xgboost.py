"""XGBoost: a ``Booster`` or a scikit-learn style model (``XGBRegressor``, ``XGBClassifier``...),
saved in XGBoost's own portable UBJSON format (``save_model``), no pickle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from keel.models.flavors.base import Flavor, class_path, import_class

__all__ = ["FLAVOR", "XGBoostFlavor"]

MODEL_FILE = "model.ubj"
BOOSTER = "xgboost.core.Booster"


class XGBoostFlavor(Flavor):
    name: ClassVar[str] = "xgboost"
    module: ClassVar[str] = "xgboost"
    distributions: ClassVar[tuple[str, ...]] = ("xgboost",)
    extra: ClassVar[str] = "xgboost"

    def save(
        self, model: Any, folder: Path, *, example: Any = None, artifacts: Any = None
    ) -> list[str]:
        self.framework()
        model.save_model(str(folder / MODEL_FILE))
        return [MODEL_FILE]

    def load(self, folder: Path, *, model_class: str, files: list[str]) -> Any:
        xgb = self.framework()
        cls = (
            xgb.Booster
            if model_class == BOOSTER
            else import_class(model_class, within=self.module, extra=self.extra)
        )
        model = cls()
        model.load_model(str(folder / MODEL_FILE))
        return model

    def predictor(self, model: Any, folder: Path) -> Any:
        if class_path(model) != BOOSTER:
            return model.predict
        xgb = self.framework()
        return lambda data: model.predict(xgb.DMatrix(data))


FLAVOR = XGBoostFlavor()
