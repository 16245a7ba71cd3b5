"""The final model as MLflow serves it: an MLflow model from code that rebuilds the network
(the seed CNN, torchvision's, or a user's from the file logged beside it) from its arguments
and weights (read with ``weights_only``, no pickle) on the device of the
machine that loads it. A ``torch.export`` archive keeps the device it was traced on, so one
logged on a CPU would not load on a GPU node, nor one traced on a GPU on a CPU server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow.pyfunc import PythonModel

from trainables.config import is_file_reference
from trainables.trial_state import model_from

# model_export.WEIGHTS (this file runs where only trainables/ comes along): {"model_args", "state"}
WEIGHTS = "weights"


class ServedModel(PythonModel):
    """Normalized images (N, C, H, W) in, class logits (N, classes) out."""

    def load_context(self, context: Any) -> None:
        chosen = (context.model_config or {}).get("device")
        self.device = torch.device(chosen or ("cuda" if torch.cuda.is_available() else "cpu"))
        weights = Path(context.artifacts[WEIGHTS])
        saved = torch.load(weights, map_location=self.device, weights_only=True)
        args = saved["model_args"]
        if is_file_reference(args.get("model")) and not Path(args["model"]).is_absolute():
            args = {**args, "model": _logged_code(args, weights)}
        model = model_from(args)
        model.load_state_dict(saved["state"])
        self.model = model.to(self.device).eval()

    def predict(
        self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        images = torch.as_tensor(np.asarray(model_input, dtype=np.float32), device=self.device)
        with torch.no_grad():
            return self.model(images).float().cpu().numpy()


def _logged_code(args: dict[str, Any], weights: Path) -> str:
    """A user's ``file.py:factory``, found in the model's code/ (or, while MLflow checks the
    model as it logs it, where the file was then: ``source``)."""
    file, _, factory = args["model"].rpartition(":")
    places = [weights.parents[1] / "code" / file, Path(args.get("source", file))]
    return f"{next((p for p in places if p.is_file()), places[0])}:{factory}"


mlflow.models.set_model(ServedModel())
