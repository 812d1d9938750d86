"""The BentoML 1.4 service of benchmarks/serving_vs_peers.py, copied into a temporary folder as
``service.py`` and run by ``bentoml serve service:Diabetes`` (or ``service:DiabetesBatched``).

The model comes from BentoML's own model store (``bentoml.sklearn.save_model`` into a temporary
``BENTOML_HOME``), as BentoML's guides do it. The body is ``{"records": [{column: value}, ...]}``
(the API's parameter is named ``records``), the answer a JSON list of predictions. One worker.
``DiabetesBatched`` adds BentoML's adaptive batching (``batchable=True``): requests are merged
along rows up to 1,600 rows (16 clients x 100 rows) per ``predict``. It takes a 2-D array
(``{"rows": [[age, sex, ...], ...]}``, columns in ``COLUMNS`` order), not records: in BentoML
1.4.39 a batchable DataFrame parameter never answers (``PandasDataFrameContainer.get_batch_size``
returns the frame's shape, a tuple, and the dispatcher's ``int + tuple`` fails in its
background task, leaving the request waiting).
"""

from __future__ import annotations

from typing import Annotated

import bentoml
import numpy as np
import pandas as pd
from bentoml.validators import DataframeSchema

COLUMNS = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
Records = Annotated[pd.DataFrame, DataframeSchema(orient="records", columns=COLUMNS)]


@bentoml.service(workers=1)
class Diabetes:
    stored = bentoml.models.BentoModel("diabetes:latest")

    def __init__(self) -> None:
        self.model = bentoml.sklearn.load_model(self.stored)

    @bentoml.api
    def predict(self, records: Records) -> np.ndarray:
        return self.model.predict(records)


@bentoml.service(workers=1)
class DiabetesBatched:
    stored = bentoml.models.BentoModel("diabetes:latest")

    def __init__(self) -> None:
        self.model = bentoml.sklearn.load_model(self.stored)

    @bentoml.api(batchable=True, max_batch_size=1600)
    def predict(self, rows: np.ndarray) -> np.ndarray:
        return self.model.predict(pd.DataFrame(rows, columns=COLUMNS))
