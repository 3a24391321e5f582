"""The exponential moving average of the trained weights (diffusers' ``EMAModel``: decay warming up as
``(1+t)/(10+t)`` until ``finetune.ema_decay``), kept in fp32 on the training device or in CPU memory, and its
tensors for the resumable state."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from diffusers.training_utils import EMAModel


class WeightAverage:
    """EMA over ``params`` (fp32 shadows). ``on_cpu``: shadows in CPU memory, brought to the device to update."""

    def __init__(self, params: list[torch.nn.Parameter], decay: float, *, on_cpu: bool) -> None:
        import torch
        from diffusers.training_utils import EMAModel

        self.params = params
        self.on_cpu = on_cpu
        self.device = params[0].device if params else torch.device("cpu")
        self.ema: EMAModel = EMAModel(params, decay=decay, foreach=True)
        self.ema.to(device="cpu" if on_cpu else self.device, dtype=torch.float32)

    def update(self) -> None:
        """One optimizer step happened: move the average towards the weights."""
        if self.on_cpu:
            self.ema.to(device=self.device)
            self.ema.step(self.params)
            self.ema.to(device="cpu")
        else:
            self.ema.step(self.params)

    @property
    def shadows(self) -> list[torch.Tensor]:
        return list(self.ema.shadow_params)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The resumable state: ``ema.<i>`` shadows and the step count."""
        import torch

        out = {f"ema.{i}": s.detach().to("cpu", torch.float32) for i, s in enumerate(self.ema.shadow_params)}
        out["ema.step"] = torch.tensor(self.ema.optimization_step, dtype=torch.int64)
        return out

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`tensors` returned."""
        count = len(self.ema.shadow_params)
        if f"ema.{count - 1}" not in tensors or f"ema.{count}" in tensors:
            raise RuntimeError("state/extra.safetensors holds an EMA of another model: the [network] or [finetune] "
                               "settings changed since the run started")
        for i, shadow in enumerate(self.ema.shadow_params):
            shadow.copy_(tensors[f"ema.{i}"])
        self.ema.optimization_step = int(tensors["ema.step"])
