"""kohya-format LoRA / LoCon networks and LyCORIS adapters (see docs/NETWORKS.md).

Importing this package is cheap (pydantic only); torch is imported by ``create_network`` on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from train.network.config import NetworkConfig, NetworkType

if TYPE_CHECKING:
    import torch

    from train.models.kinds import TextEncoder, UNet2DConditionModel
    from train.network.network import Network

__all__ = ["Network", "NetworkConfig", "NetworkType", "create_network"]


def create_network(arch: str, unet: UNet2DConditionModel, text_encoders: list[TextEncoder] | None,
                   cfg: NetworkConfig, device: torch.device | str | None = None) -> Network:
    """See :func:`train.network.network.create_network`."""
    from train.network.network import create_network as _create

    return _create(arch, unet, text_encoders, cfg, device=device)


def __getattr__(name: str) -> type[Network]:
    if name == "Network":
        from train.network.network import Network

        return Network
    raise AttributeError(name)
