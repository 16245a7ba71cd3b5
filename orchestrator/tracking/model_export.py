"""The final model exported to MLflow as it serves it (``served_model.py``): its settings and
weights in one weights-only file, logged with an input example and the code that rebuilds it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from orchestrator.study.folder import StudyFolder

URI_VARIABLE = "MLFLOW_TRACKING_URI"
WEIGHTS = "weights"  # the logged model's artifact that served_model.py reads


def served_weights(
    folder: StudyFolder, config: dict[str, Any], classes: int, into: Path
) -> tuple[Path, Any, list[Path]]:
    """The final model's arguments and weights in one weights-only file (what the served model
    reads), the input example, and a user's model file to log with it as code (the served
    model reads it from there). A checkpoint of an earlier version, without its
    model's arguments, has them made from its config and the example."""
    import numpy as np
    import torch

    from trainables.checkpoint import load_checkpoint
    from trainables.config import SEED_KNOBS

    example = np.load(folder.input_example)
    saved = load_checkpoint(folder.final / "checkpoint.pt", config)
    args = saved.get("model_args") or {
        "in_channels": example.shape[1],
        "num_classes": classes,
        "image_size": list(example.shape[2:]),
        **{k: config[k] for k in SEED_KNOBS},
    }
    code = []
    if ".py:" in args.get("model", ""):
        file, _, factory = args["model"].rpartition(":")
        code.append(Path(file))
        args = {**args, "model": f"{Path(file).name}:{factory}", "source": file}  # in code/
    path = into / "weights.pt"
    torch.save({"model_args": args, "state": saved["model"]}, path)
    return path, example, code


def log_model(uri: str, run_id: str, weights: Path, example: Any, code: list[Path] = ()) -> str:
    """Log the final model (``weights``: its arguments and state dict) as MLflow serves it
    (``served_model.py``), with the signature inferred from ``example`` (normalized images;
    two, so the batch size stays free); returns its URI."""
    import mlflow
    import torch
    import torchvision

    import trainables

    args = torch.load(weights, weights_only=True)["model_args"]
    vision = args.get("model", "").startswith("torchvision.")  # the served env needs it too
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a job's log
    exported = os.environ.get(URI_VARIABLE)
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=Path(__file__).with_name("served_model.py"),
                artifacts={WEIGHTS: str(weights)},
                code_paths=[str(Path(trainables.__file__).parent), *map(str, code)],
                input_example=example,
                pip_requirements=[_pinned(torch), *([_pinned(torchvision)] * vision), "numpy"],
            )
    finally:  # set_tracking_uri also exports the URI; the process keeps the one it had
        if exported is None:
            os.environ.pop(URI_VARIABLE, None)
        else:
            os.environ[URI_VARIABLE] = exported
    return info.model_uri


def _pinned(module: Any) -> str:
    return f"{module.__name__}=={module.__version__.split('+')[0]}"
