"""An ONNX text detector (DB, EAST or docTR family) run on one image: the share of it that is text.

onnxruntime is imported in :meth:`TextDetector.load` only. The image is resized keeping its aspect ratio (the
longer side to ``TextModelConfig.side``, or into the model's fixed input size), normalised as its family expects
(``TextModelConfig.preset``), and padded at the right and bottom to a multiple of 32 or the fixed size; the text
area is measured on the cells of the probability map that lie over the image, not the padding, as the share its
text lines cover (``curator.textdetect.boxes``: DB's post-processing).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from curator.textdetect.boxes import text_line_area
from curator.textdetect.config import TextModelConfig

if TYPE_CHECKING:
    from onnxruntime import InferenceSession  # untyped: mypy sees Any, readers see what it is

SHAPE_HELP = (
    "kiln needs one image input [batch, 3, height, width] and a text probability map output [batch, 1, h, w] "
    "or [batch, h, w] (a DB, EAST or docTR detector exported to ONNX; see docs/DATASET.md)"
)


LOGIT_MARGIN = 0.01  # a map reaching this far outside 0..1 holds logits (rounding keeps probabilities within)


class TextModelError(RuntimeError):
    """The text detector cannot be used; the message names ``--text-model`` and what to do."""


def _static(dim: object) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


class TextDetector:
    """An open text detector session with its input layout checked."""

    def __init__(self, config: TextModelConfig, session: InferenceSession) -> None:
        self.config = config
        self.session = session
        where = f"--text-model {config.path}"
        inputs = session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or _static(inputs[0].shape[1]) != 3:
            shapes = [list(i.shape) for i in inputs]
            raise TextModelError(f"{where}: its inputs are {shapes}; {SHAPE_HELP}")
        self.input_name: str = inputs[0].name
        self.fixed: tuple[int, int] | None = None
        height, width = (_static(d) for d in inputs[0].shape[2:])
        if height is not None and width is not None:
            self.fixed = (height, width)
        maps = [o for o in session.get_outputs() if len(o.shape) == 3 or (len(o.shape) == 4 and _static(o.shape[1]) == 1)]
        if not maps:
            shapes = [list(o.shape) for o in session.get_outputs()]
            raise TextModelError(f"{where}: its outputs are {shapes}; {SHAPE_HELP}")
        self.output_name: str = maps[0].name

    @classmethod
    def load(cls, config: TextModelConfig, device: str = "auto", threads: int | None = None) -> TextDetector:
        """Open an onnxruntime session on the model (imported here, never at module import)."""
        from curator.autotag.model import ModelError, open_session

        try:
            session = open_session(config.path, device, threads)
        except ModelError as exc:  # a device onnxruntime does not offer
            raise TextModelError(f"--text-model {config.path}: {exc}") from exc
        except Exception as exc:
            raise TextModelError(f"--text-model {config.path}: onnxruntime cannot load it ({exc}); "
                                 f"{SHAPE_HELP}") from exc  # fmt: skip
        return cls(config, session)

    def prepare(self, image: Image.Image) -> tuple[NDArray[np.float32], tuple[float, float]]:
        """The model input [1, 3, H, W] for ``image`` and the share of H and W the image covers."""
        rgb = image.convert("RGB")
        w, h = rgb.size
        if self.fixed is not None:
            height, width = self.fixed
            scale = min(width / w, height / h)
        else:
            scale = self.config.side / max(w, h)
        new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
        if self.fixed is None:
            width, height = math.ceil(new_w / 32) * 32, math.ceil(new_h / 32) * 32
        new_w, new_h = min(new_w, width), min(new_h, height)
        pixels = np.asarray(rgb.resize((new_w, new_h), Image.Resampling.BILINEAR), dtype=np.float32)
        order, factor, mean, std = self.config.normalisation()
        if order == "bgr":
            pixels = pixels[..., ::-1]
        normalised = (pixels * factor - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
        canvas = np.zeros((height, width, 3), dtype=np.float32)  # padding: the mean colour
        canvas[:new_h, :new_w] = normalised
        return canvas.transpose(2, 0, 1)[None], (new_h / height, new_w / width)

    def text_area(self, image: Image.Image) -> float:
        """The share of ``image`` the detector's text lines cover (regions of values over ``pixel_threshold``,
        kept and grown back as :func:`text_line_area` says; a map of logits, with values outside 0..1, goes
        through a sigmoid first)."""
        tensor, (cover_h, cover_w) = self.prepare(image)
        out = np.asarray(self.session.run([self.output_name], {self.input_name: tensor})[0], dtype=np.float32)
        text_map: NDArray[np.float32] = out.reshape(out.shape[-2], out.shape[-1])
        if text_map.size and (text_map.min() < -LOGIT_MARGIN or text_map.max() > 1.0 + LOGIT_MARGIN):
            text_map = (1.0 / (1.0 + np.exp(-text_map))).astype(np.float32)
        rows = max(1, math.floor(cover_h * text_map.shape[0] + 1e-6))  # the cells over the image only, not
        cols = max(1, math.floor(cover_w * text_map.shape[1] + 1e-6))  # those that take in padding
        region = text_map[:rows, :cols]
        config = self.config
        return text_line_area(region, config.pixel_threshold, config.box_threshold, config.unclip_ratio,
                              config.min_elongation, text_map.shape[0] / tensor.shape[2])  # fmt: skip
