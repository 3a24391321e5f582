"""What the network needs of one adapter module: kiln's :class:`~train.network.lora.LoRAModule` or one of
lycoris' module classes. Every adapter is a torch module hooked into one target module's forward."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch


class Adapter(Protocol):
    lora_name: str
    """kohya's module name, e.g. ``lora_unet_down_blocks_0_attentions_0_proj_in``: the prefix of its keys."""
    multiplier: float

    def apply_to(self) -> None:
        """Hook into the target module's forward (the target's weights are untouched)."""

    def restore(self) -> None:
        """Give the target module its own forward back."""

    def apply_max_norm(self, max_norm: float, device: torch.device | str | None = None,
                       ) -> tuple[bool | None, float | torch.Tensor | None]:
        """kohya's max-norm regularisation: (scaled, norm), or (None, None) for algorithms without it."""

    def parameters(self, recurse: bool = True) -> Iterator[torch.nn.Parameter]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> object: ...
