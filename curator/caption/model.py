"""Finding a captioning model offline, loading it (CPU or CUDA) and captioning a batch of images.

Families, told apart by ``config.json``'s ``model_type`` and the processor:

* ``blip`` (BlipForConditionalGeneration: Salesforce/blip-image-captioning-base/large): the prompt is the start
  of the caption (``a photo of``); empty for unconditional captions;
* ``florence2`` (Florence2ForConditionalGeneration, native in transformers >= 4.56): the prompt is a task token,
  ``<MORE_DETAILED_CAPTION>`` by default (``<CAPTION>``, ``<DETAILED_CAPTION>``);
* ``vlm``: any image-text-to-text model whose processor has a chat template (LLaVA and LLaVA-NeXT, JoyCaption,
  Qwen2-VL, SmolVLM, Idefics3, ...): the prompt is the user's message.

A model is a local folder (``config.json`` + weights + processor files) or a repository id already in the
Hugging Face cache; kiln never downloads (the Hub is switched to offline while loading).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from curator.autotag.hub import hub_cache_dirs, looks_like_repo_id

if TYPE_CHECKING:
    import torch
    from transformers import BatchFeature

DEFAULT_PROMPTS = {
    "blip": "a photo of",
    "florence2": "<MORE_DETAILED_CAPTION>",
    "vlm": "Describe this image in one or two plain sentences, as a caption for training an image model.",
}
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")


class CaptionModelError(RuntimeError):
    """The model cannot be found or loaded; the message says why and what to do."""


def resolve_model(spec: str) -> Path:
    """A local model folder, or the cached snapshot of a Hugging Face repository id (offline)."""
    text = spec.strip()
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CaptionModelError(f"{path}: no config.json; give the folder that holds the model's config.json")
        return path
    if path.exists():
        raise CaptionModelError(f"{path}: not a folder; give the model folder (with config.json and the weights)")
    if looks_like_repo_id(text):
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(text, local_files_only=True))
        except Exception as exc:  # noqa: BLE001 - LocalEntryNotFoundError and friends: not in the cache
            where = ", ".join(str(d) for d in hub_cache_dirs())
            raise CaptionModelError(
                f"{text} is not in the local Hugging Face cache ({where}) and kiln never downloads: on a machine "
                f"with internet run `hf download {text}`, then copy its models--{text.replace('/', '--')} folder "
                f"into that cache, or pass a local folder ({type(exc).__name__})"
            ) from None
    raise CaptionModelError(f"{text}: no such model folder (and not a repo id like Salesforce/blip-image-captioning-large)")


def detect_family(folder: Path) -> str:
    """``blip``, ``florence2`` or ``vlm`` from the model's config and processor files."""
    try:
        model_type = json.loads((folder / "config.json").read_text("utf-8")).get("model_type", "")
    except (OSError, ValueError) as exc:
        raise CaptionModelError(f"{folder / 'config.json'}: cannot read it ({exc})") from None
    if model_type == "blip":
        return "blip"
    if model_type == "florence2":
        return "florence2"
    if any((folder / name).is_file() for name in CHAT_TEMPLATE_FILES) or _tokenizer_has_template(folder):
        return "vlm"
    raise CaptionModelError(
        f"{folder}: model_type {model_type!r} is not a captioning model kiln knows; use a BLIP captioning model, "
        "Florence-2, or an image-text-to-text model with a chat template (LLaVA, JoyCaption, Qwen2-VL, SmolVLM)"
    )


def _tokenizer_has_template(folder: Path) -> bool:
    try:
        return bool(json.loads((folder / "tokenizer_config.json").read_text("utf-8")).get("chat_template"))
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _device(requested: str) -> str:
    import torch

    if requested == "cuda":
        if not torch.cuda.is_available():
            raise CaptionModelError("--device cuda: this torch build sees no CUDA device; use --device cpu")
        return "cuda"
    if requested == "cpu":
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def _dtype(requested: str, device: str) -> torch.dtype:
    import torch

    if requested == "auto":
        return torch.float16 if device == "cuda" else torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[requested]


@dataclass
class Captioner:
    """A loaded model: ``generate(images, prompts)`` returns one caption per image."""

    family: str
    folder: Path
    name: str
    device: str
    processor: Any
    model: Any

    @classmethod
    def load(cls, folder: Path, device: str = "auto", dtype: str = "auto", name: str | None = None) -> Captioner:
        family = detect_family(folder)
        try:
            import importlib

            importlib.import_module("torch")  # a clear message below when torch is missing
            transformers: Any = importlib.import_module("transformers")  # untyped library: used through Any
        except ImportError as exc:
            raise CaptionModelError(f"captioning needs torch and transformers: pip install 'lorakiln[train]' ({exc})") from None
        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        where = _device(device)
        torch_dtype = _dtype(dtype, where)
        model: Any
        try:
            with _offline():
                processor: Any = transformers.AutoProcessor.from_pretrained(folder, local_files_only=True)
                if family == "blip":
                    model = transformers.BlipForConditionalGeneration.from_pretrained(
                        folder, local_files_only=True, dtype=torch_dtype
                    )
                else:
                    model = transformers.AutoModelForImageTextToText.from_pretrained(
                        folder, local_files_only=True, dtype=torch_dtype
                    )
        except (OSError, ValueError, KeyError) as exc:
            raise CaptionModelError(f"{folder}: cannot load the {family} model ({exc})") from None
        model = model.to(where).eval()
        if family == "vlm":
            tokenizer = getattr(processor, "tokenizer", None)
            if tokenizer is not None:
                tokenizer.padding_side = "left"  # generation continues each prompt where it ends
        return cls(family, folder, name or folder.name, where, processor, model)

    def default_prompt(self) -> str:
        return DEFAULT_PROMPTS[self.family]

    def _inputs(self, images: list[Image.Image], prompts: list[str]) -> BatchFeature:
        features: BatchFeature
        if self.family == "blip":
            texts: list[str] | None = prompts if any(prompts) else None
            features = self.processor(images=images, text=texts, return_tensors="pt", padding=True)
            return features
        if self.family == "florence2":
            features = self.processor(images=images, text=prompts, return_tensors="pt", padding=True)
            return features
        chats = [
            self.processor.apply_chat_template(
                [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}],
                add_generation_prompt=True,
            )
            for prompt in prompts
        ]
        features = self.processor(images=images, text=chats, return_tensors="pt", padding=True)
        return features

    def _room(self, inputs: dict[str, Any]) -> int:
        """How many tokens the text model can still add: its position limit minus the prompt (a longer
        ``--max-length`` would index past the position table)."""
        config = getattr(self.model.config, "text_config", self.model.config)
        limit = getattr(config, "max_position_embeddings", None)
        if not isinstance(limit, int):
            return 1 << 30
        used = inputs["input_ids"].shape[1] if "input_ids" in inputs and self.family != "florence2" else 1
        return limit - used - 1

    def generate(self, images: list[Image.Image], prompts: list[str], max_new_tokens: int, num_beams: int) -> list[str]:
        import torch

        inputs = self._inputs(images, prompts)
        dtype = next(self.model.parameters()).dtype
        moved = {}
        for key, value in inputs.items():
            if hasattr(value, "to"):
                value = value.to(self.device)
                if key == "pixel_values":
                    value = value.to(dtype)
            moved[key] = value
        room = self._room(moved)
        with torch.inference_mode():
            out = self.model.generate(
                **moved, max_new_tokens=max(1, min(max_new_tokens, room)), num_beams=num_beams, do_sample=False
            )
        if self.family == "vlm":
            out = out[:, moved["input_ids"].shape[1] :]  # only what the model added after the prompt
        texts = self.processor.batch_decode(out, skip_special_tokens=True)
        return [str(t) for t in texts]
