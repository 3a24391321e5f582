"""Loading a WD14-family ONNX tagger: where its files are, its input size, execution providers, inference."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from curator.autotag.hub import MODEL_FILES, download_hint, find_in_cache, hub_cache_dirs, looks_like_repo_id
from curator.autotag.labels import Labels, LabelsError, load_labels

if TYPE_CHECKING:
    from onnxruntime import InferenceSession  # untyped: mypy sees Any, readers see what it is

# Preferred order when several are available; CPU is always last.
GPU_PROVIDERS = {
    "cuda": ["CUDAExecutionProvider"],
    "rocm": ["ROCMExecutionProvider", "MIGraphXExecutionProvider"],
}


class ModelError(RuntimeError):
    """The tagger cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class ModelFiles:
    """Where a tagger's two files are, and what the user asked for (for messages)."""

    spec: str
    folder: Path
    onnx_path: Path
    csv_path: Path
    from_cache: bool = False

    @property
    def name(self) -> str:
        return self.spec if self.from_cache else self.folder.name


def resolve_model(spec: str | Path) -> ModelFiles:
    """A local folder (or a model.onnx inside one) or a Hugging Face repo id found in the local cache."""
    text = str(spec).strip()
    if not text:
        raise ModelError("no model given: pass --model with a folder holding model.onnx and selected_tags.csv")
    path = Path(text).expanduser()
    if path.is_file() and path.suffix.lower() == ".onnx":
        return _check_folder(text, path.parent, onnx_name=path.name)
    if path.is_dir():
        return _check_folder(text, path)
    if path.exists():
        raise ModelError(f"model {text!r} is neither a folder nor a .onnx file")
    if looks_like_repo_id(text):
        snapshot = find_in_cache(text)
        if snapshot is None:
            searched = ", ".join(str(d) for d in hub_cache_dirs())
            raise ModelError(
                f"model {text!r}: no such folder, and repository {text} with {' and '.join(MODEL_FILES)} is not in "
                f"the Hugging Face cache (searched {searched}); kiln works offline: {download_hint(text)}"
            )
        return ModelFiles(text, snapshot, snapshot / MODEL_FILES[0], snapshot / MODEL_FILES[1], from_cache=True)
    raise ModelError(
        f"model folder {text!r} does not exist; pass a folder holding {' and '.join(MODEL_FILES)} "
        f"or a Hugging Face repo id such as SmilingWolf/wd-swinv2-tagger-v3 that is in the local cache"
    )


def _check_folder(spec: str, folder: Path, onnx_name: str = "model.onnx") -> ModelFiles:
    onnx_path = folder / onnx_name
    csv_path = folder / "selected_tags.csv"
    missing = [p.name for p in (onnx_path, csv_path) if not p.is_file()]
    if missing:
        present = sorted(p.name for p in folder.iterdir())[:10] if folder.is_dir() else []
        raise ModelError(
            f"model folder {str(folder)!r} lacks {' and '.join(missing)} (it holds: {', '.join(present) or 'nothing'}); "
            f"a WD14 tagger folder needs model.onnx and selected_tags.csv, as in SmilingWolf's repositories"
        )
    return ModelFiles(spec, folder, onnx_path, csv_path)


def choose_providers(device: str, available: list[str]) -> list[str]:
    """Execution providers for onnxruntime: auto = CUDA or ROCm when present, CPU always as the fallback."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    wanted = GPU_PROVIDERS["cuda"] + GPU_PROVIDERS["rocm"] if device == "auto" else GPU_PROVIDERS[device]
    chosen = [p for p in wanted if p in available]
    if device != "auto" and not chosen:
        raise ModelError(
            f"device {device!r}: onnxruntime offers only {', '.join(available)}; install onnxruntime-gpu "
            f"(CUDA) or onnxruntime-rocm, or use --device auto/cpu"
        )
    return chosen + ["CPUExecutionProvider"]


def open_session(path: Path, device: str = "auto", threads: int | None = None) -> InferenceSession:
    """An onnxruntime session on ``path`` (imported here, never at module import), on the providers ``device``
    asks for; the caller turns a load failure into its own message."""
    import onnxruntime as ort

    providers = choose_providers(device, ort.get_available_providers())
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    if providers == ["CPUExecutionProvider"]:
        # idle onnxruntime threads spin by default, stealing the cores the decode threads need
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


def _static_dim(dim: object) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


class TaggerModel:
    """An ONNX tagger: NHWC float32 BGR input of a fixed size, one probabilities output per tag."""

    def __init__(self, files: ModelFiles, labels: Labels, session: InferenceSession):
        self.files = files
        self.labels = labels
        self.session = session
        inp = session.get_inputs()[0]
        self.input_name: str = inp.name
        shape = list(inp.shape)
        if len(shape) != 4:
            raise ModelError(f"{files.onnx_path}: input {inp.name!r} has shape {shape}; a WD14 tagger takes NHWC images")
        height, width, channels = (_static_dim(d) for d in shape[1:])
        if channels != 3 or height is None or width is None:
            raise ModelError(
                f"{files.onnx_path}: input {inp.name!r} has shape {shape}; expected [batch, height, width, 3] "
                f"with a fixed height and width (WD14 taggers are NHWC)"
            )
        self.height, self.width = height, width
        self.fixed_batch: int | None = _static_dim(shape[0])
        self.output_name: str = session.get_outputs()[0].name
        out_shape = list(session.get_outputs()[0].shape)
        n_out = _static_dim(out_shape[-1]) if out_shape else None
        if n_out is not None and n_out != len(labels):
            raise ModelError(
                f"{files.csv_path} lists {len(labels)} tags but {files.onnx_path.name} outputs {n_out} "
                f"probabilities: the csv does not belong to this model (use the selected_tags.csv from the same "
                f"repository)"
            )

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    @classmethod
    def load(cls, files: ModelFiles, device: str = "auto", threads: int | None = None) -> TaggerModel:
        """Read the tag list and open an onnxruntime session (imported here, never at module import)."""
        try:
            labels = load_labels(files.csv_path)
        except LabelsError as exc:
            raise ModelError(str(exc)) from exc
        try:
            session = open_session(files.onnx_path, device, threads)
        except ModelError:
            raise
        except Exception as exc:  # onnxruntime raises its own exception types for a bad file
            raise ModelError(f"{files.onnx_path}: onnxruntime cannot load it: {exc}") from exc
        return cls(files, labels, session)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """[N, H, W, 3] float32 -> [N, tags] probabilities (already sigmoid outputs in WD14 models)."""
        if batch.shape[0] == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        if self.fixed_batch is not None and batch.shape[0] != self.fixed_batch:
            return self._predict_fixed(batch)
        out = self.session.run([self.output_name], {self.input_name: batch})[0]
        return self._checked(np.asarray(out, dtype=np.float32).reshape(batch.shape[0], -1))

    def _predict_fixed(self, batch: np.ndarray) -> np.ndarray:
        """Models exported with a fixed batch size: run in chunks, padding the last with copies."""
        size = self.fixed_batch or 1
        parts = []
        for start in range(0, batch.shape[0], size):
            chunk = batch[start : start + size]
            n = chunk.shape[0]
            if n < size:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], size - n, axis=0)])
            out = self.session.run([self.output_name], {self.input_name: chunk})[0]
            parts.append(np.asarray(out, dtype=np.float32).reshape(size, -1)[:n])
        return self._checked(np.concatenate(parts))

    def _checked(self, out: np.ndarray) -> np.ndarray:
        if out.shape[1] != len(self.labels):
            raise ModelError(
                f"{self.files.onnx_path.name} outputs {out.shape[1]} probabilities but {self.files.csv_path} lists "
                f"{len(self.labels)} tags: the csv does not belong to this model"
            )
        return out
