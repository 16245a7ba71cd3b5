"""The final model exported to MLflow as it serves it (``served_model.py``): its settings and
weights in one weights-only file, logged with an input example and the code that rebuilds it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

from orchestrator.study.folder import StudyFolder

URI_VARIABLE = "MLFLOW_TRACKING_URI"
WEIGHTS = "weights"  # the logged model's artifact that served_model.py reads


class Export(NamedTuple):
    """What ``log_model`` logs: the weights file, the input example, a user's model file."""

    weights: Path
    example: Any
    code: list[Path]
    torchvision: bool  # the served environment needs it too


def served_weights(folder: StudyFolder, config: dict[str, Any], classes: int, into: Path) -> Export:
    """The final model's arguments and weights in one weights-only file (what the served model
    reads), the input example, and a user's model file to log with it as code (the served
    model reads it from there). A checkpoint of an earlier version, without its
    model's arguments, has them made from its config and the example."""
    import numpy as np
    import torch

    from trainables.checkpoint import load_checkpoint
    from trainables.config import SEED_KNOBS, is_file_reference
    from trainables.networks import TORCHVISION

    example = np.load(folder.input_example)
    saved = load_checkpoint(folder.final / "checkpoint.pt", config)
    args = saved.get("model_args") or {
        "in_channels": example.shape[1],
        "num_classes": classes,
        "image_size": list(example.shape[2:]),
        **{k: config[k] for k in SEED_KNOBS},
    }
    code = []
    if is_file_reference(args.get("model")):
        file, _, factory = args["model"].rpartition(":")
        code.append(Path(file))
        args = {**args, "model": f"{Path(file).name}:{factory}", "source": file}  # in code/
    path = into / "weights.pt"
    torch.save({"model_args": args, "state": saved["model"]}, path)
    vision = str(args.get("model", "")).startswith(TORCHVISION)
    return Export(path, example, code, vision)


def log_model(uri: str, run_id: str, export: Export) -> str:
    """Log the final model as MLflow serves it (``served_model.py``), with the signature
    inferred from the example (normalized images; two, so the batch size stays free); returns
    its URI."""
    import mlflow
    import torch
    import torchvision

    import trainables

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a job's log
    exported = os.environ.get(URI_VARIABLE)
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=Path(__file__).with_name("served_model.py"),
                artifacts={WEIGHTS: str(export.weights)},
                code_paths=[str(Path(trainables.__file__).parent), *map(str, export.code)],
                input_example=export.example,
                pip_requirements=[
                    _pinned(torch),
                    *([_pinned(torchvision)] * export.torchvision),
                    "numpy",
                ],
            )
    finally:  # set_tracking_uri also exports the URI; the process keeps the one it had
        if exported is None:
            os.environ.pop(URI_VARIABLE, None)
        else:
            os.environ[URI_VARIABLE] = exported
    return info.model_uri


def _pinned(module: Any) -> str:
    return f"{module.__name__}=={module.__version__.split('+')[0]}"
