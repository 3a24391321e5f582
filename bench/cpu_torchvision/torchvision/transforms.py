"""``torchvision.transforms`` as kohya sd-scripts uses it: PIL/numpy HWC uint8 -> CHW float in [0, 1], then
``(x - mean) / std`` per channel. Exactly torchvision's arithmetic for these inputs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch


class Compose:
    def __init__(self, transforms: Sequence[Callable[[Any], Any]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, value: Any) -> Any:
        for transform in self.transforms:
            value = transform(value)
        return value


class ToTensor:
    """HWC uint8 (PIL image or numpy array) -> CHW float32 / 255; float arrays are only transposed."""

    def __call__(self, picture: Any) -> torch.Tensor:
        array = np.asarray(picture)
        if array.ndim == 2:
            array = array[:, :, None]
        tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
        if tensor.dtype == torch.uint8:
            return tensor.to(torch.float32).div(255)
        return tensor


class Normalize:
    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = list(mean)
        self.std = list(std)

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        mean = torch.as_tensor(self.mean, dtype=tensor.dtype).view(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=tensor.dtype).view(-1, 1, 1)
        return (tensor - mean) / std


class functional:  # torchvision's module name: transforms.functional.pil_to_tensor
    @staticmethod
    def pil_to_tensor(picture: Any) -> torch.Tensor:
        array = np.asarray(picture)
        if array.ndim == 2:
            array = array[:, :, None]
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))

    @staticmethod
    def gaussian_blur(*_args: Any, **_kwargs: Any) -> torch.Tensor:
        raise NotImplementedError("the CPU stand-in for torchvision has no gaussian_blur (kohya's unsharp option)")
