"""The MLflow pyfunc of a study's model, logged as code ("models from code"): MLflow copies this file
into the model and runs it at load, so no Python object of the model is ever pickled.

`load_context` rebuilds the model with `fedray.inference.predict.load_trained` from the model's one
artifact, a snapshot of the run folder (resolved config, hospitals.json, the checkpoint read with
`allow_pickle=False`, the client states the judged model reads). `predict` takes a DataFrame with a
column `image` (a NIfTI path) and optionally `output` (a folder; a new temporary one if absent),
writes one label map per image and labels.json there, and returns one row per image.

Keep this file free of fedray imports at module level: MLflow also runs it once when the model is
logged, and a process that only loads the model should import no more of fedray than the loader.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel, PythonModelContext

STUDY_ARTIFACT = "study"  # the artifact name of the run-folder snapshot


class StudyModel(PythonModel):
    """A fedray study's judged model (the one its test set scored), segmenting NIfTI files."""

    def load_context(self, context: PythonModelContext) -> None:
        from fedray.inference.predict import load_trained  # the loader's whole import chain

        device = (context.model_config or {}).get("device", "cpu")
        self.trained = load_trained(context.artifacts[STUDY_ARTIFACT], device=device)

    def predict(self, context: PythonModelContext, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        """Segment each row's `image` into its `output` folder; one result row per input row, in order."""
        from fedray.inference.predict import predict_files

        frame = pd.DataFrame(model_input).reset_index(drop=True)
        if "image" not in frame.columns:
            raise ValueError("the model takes a DataFrame with a column 'image' (NIfTI paths).")
        outputs = frame["output"] if "output" in frame.columns else [None] * len(frame)
        folders = [_folder(o) for o in outputs]
        if any(f is None for f in folders):
            fresh = tempfile.mkdtemp(prefix="fedray-predict-")
            folders = [f or fresh for f in folders]
        rows: dict[int, dict] = {}
        for folder in dict.fromkeys(folders):  # one predict_files call (and labels.json) per folder
            where = [i for i, f in enumerate(folders) if f == folder]
            results = predict_files(self.trained, [Path(str(frame["image"].iloc[i])) for i in where], folder)
            for i, result in zip(where, results, strict=True):
                rows[i] = {
                    "input": str(result.input),
                    "output": None if result.output is None else str(result.output),
                    "error": result.error,
                    "seconds": result.seconds,
                    **{f"voxels/{organ}": (result.voxels or {}).get(organ) for organ in self.trained.organs},
                }
        result = pd.DataFrame([rows[i] for i in range(len(frame))])
        counts = [c for c in result.columns if c.startswith("voxels/")]
        return result.astype({c: "Int64" for c in counts})  # <NA> where an input was not segmented


def _folder(value) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == "":
        return None
    return str(value)


mlflow.models.set_model(StudyModel())
