"""ONNX: an ``onnx.ModelProto``, saved as ``model.onnx`` and run with onnxruntime on the CPU.

``predict`` feeds a model of one input the whole table (or array) in that input's element type;
a model with one input per column (as skl2onnx makes for mixed tables) gets each column by name.
It returns the first output (the label, for a classifier), a column vector flattened.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from keel.models.flavors.base import Flavor, Predict, require

__all__ = ["FLAVOR", "OnnxFlavor"]

MODEL_FILE = "model.onnx"

# onnxruntime's input type names -> numpy dtypes
_TYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(bool)": "bool",
    "tensor(string)": "object",
}


class OnnxFlavor(Flavor):
    name: ClassVar[str] = "onnx"
    module: ClassVar[str] = "onnx"
    distributions: ClassVar[tuple[str, ...]] = ("onnx", "onnxruntime")
    extra: ClassVar[str] = "onnx"

    def save(
        self, model: Any, folder: Path, *, example: Any = None, artifacts: Any = None
    ) -> list[str]:
        self.framework()
        (folder / MODEL_FILE).write_bytes(model.SerializeToString())
        return [MODEL_FILE]

    def load(self, folder: Path, *, model_class: str, files: list[str]) -> Any:
        ort = require("onnxruntime", extra=self.extra)
        return ort.InferenceSession(str(folder / MODEL_FILE), providers=["CPUExecutionProvider"])

    def predictor(self, model: Any, folder: Path) -> Predict:
        if not hasattr(model, "get_inputs"):  # a ModelProto being logged: run it from the file
            model = self.load(folder, model_class="onnx.ModelProto", files=[MODEL_FILE])
        inputs = [(i.name, _TYPES.get(i.type, "float32")) for i in model.get_inputs()]

        def predict(data: Any) -> Any:
            import numpy as np

            if len(inputs) == 1:
                name, dtype = inputs[0]
                array = data.to_numpy() if hasattr(data, "to_numpy") else np.asarray(data)
                feed = {name: array.astype(dtype, copy=False)}
            else:
                feed = {
                    name: data[name].to_numpy().astype(dtype, copy=False).reshape(-1, 1)
                    for name, dtype in inputs
                }
            output = model.run(None, feed)[0]
            if getattr(output, "ndim", 0) == 2 and output.shape[1] == 1:
                return output.ravel()
            return output

        return predict


FLAVOR = OnnxFlavor()
