"""WD14-family ONNX autotagger (SmilingWolf's taggers and compatible exports).

Modules: `hub` (offline Hugging Face cache lookup), `model` (model folder, input size, providers, inference),
`labels` (selected_tags.csv), `preprocess` (image -> NHWC BGR float32), `thresholds` (thresholds, MCut,
ordering), `tagtext` (underscores and kaomoji), `captioning` (missing/append/replace on caption bytes),
`pipeline` (batched, threaded tagging), `runner` (a dataset run through the journal), `config`
(`AutotagConfig`). onnxruntime is imported only when a model is loaded.
"""

from curator.autotag.config import AutotagConfig
from curator.autotag.model import ModelError, ModelFiles, TaggerModel, resolve_model
from curator.autotag.runner import AutotagError, AutotagReport, ImageOutcome, run_autotag
from curator.autotag.thresholds import Prediction, SelectionRules, mcut_threshold, select_tags

__all__ = [
    "AutotagConfig",
    "AutotagError",
    "AutotagReport",
    "ImageOutcome",
    "ModelError",
    "ModelFiles",
    "Prediction",
    "SelectionRules",
    "TaggerModel",
    "mcut_threshold",
    "resolve_model",
    "run_autotag",
    "select_tags",
]
