"""PyTorch: an ``nn.Module``. With an input example it is saved as an exported program
(``torch.export``, ``model.pt2``) whose batch dimension is dynamic: it loads without the code
that defined the module. A module ``torch.export`` cannot capture (data-dependent control flow,
say), or one logged without an example, is saved whole with ``torch.save`` (``model.pth``), and
loading it needs its class importable, as ``model_class`` in the manifest names it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from keel.models.flavors.base import Flavor, Predict

__all__ = ["FLAVOR", "PyTorchFlavor"]

EXPORTED_FILE = "model.pt2"
PICKLED_FILE = "model.pth"


class PyTorchFlavor(Flavor):
    name: ClassVar[str] = "pytorch"
    module: ClassVar[str] = "torch"
    distributions: ClassVar[tuple[str, ...]] = ("torch",)
    extra: ClassVar[str] = "torch"

    def save(
        self, model: Any, folder: Path, *, example: Any = None, artifacts: Any = None
    ) -> list[str]:
        torch = self.framework()
        training = model.training
        model.eval()
        try:
            if example is not None:
                try:
                    tensor = _tensor(torch, example, _dtype(torch, model))
                    batch = torch.export.Dim.DYNAMIC
                    program = torch.export.export(model, (tensor,), dynamic_shapes=({0: batch},))
                except Exception:  # any capture failure: fall back to pickling
                    program = None
                if program is not None:
                    torch.export.save(program, folder / EXPORTED_FILE)
                    return [EXPORTED_FILE]
            torch.save(model, folder / PICKLED_FILE)
            return [PICKLED_FILE]
        finally:
            model.train(training)

    def load(self, folder: Path, *, model_class: str, files: list[str]) -> Any:
        torch = self.framework()
        if EXPORTED_FILE in files:
            return torch.export.load(folder / EXPORTED_FILE).module()
        module = torch.load(folder / PICKLED_FILE, weights_only=False)
        module.eval()
        return module

    def predictor(self, model: Any, folder: Path) -> Predict:
        torch = self.framework()
        dtype = _dtype(torch, model)

        def predict(data: Any) -> Any:
            with torch.no_grad():
                output = model(_tensor(torch, data, dtype))
            return output.detach().cpu().numpy() if hasattr(output, "detach") else output

        return predict


def _dtype(torch: Any, model: Any) -> Any:
    """The dtype of the module's first parameter (float inputs are cast to it), else float32."""
    parameters = model.parameters() if hasattr(model, "parameters") else iter(())
    first = next(iter(parameters), None)
    return first.dtype if first is not None and first.is_floating_point() else torch.float32


def _tensor(torch: Any, data: Any, dtype: Any) -> Any:
    """``data`` (a tensor, an array or a DataFrame) as a tensor; floats take ``dtype``."""
    import numpy as np

    if not isinstance(data, torch.Tensor):
        array = np.ascontiguousarray(data.to_numpy() if hasattr(data, "to_numpy") else data)
        if not array.flags.writeable:  # pandas' copy-on-write views; torch wants to own them
            array = array.copy()
        data = torch.from_numpy(array)
    return data.to(dtype) if data.is_floating_point() else data


FLAVOR = PyTorchFlavor()
