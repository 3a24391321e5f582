"""The LyCORIS algorithms (LoHa, LoKr, (IA)^3, DoRA), taken from the ``lycoris-lora`` package.

kiln does not re-implement them: each target gets one of lycoris' module classes, named with kohya's module
name, so the saved keys are the LyCORIS/kohya ones A1111/Forge and ComfyUI load:
``lora_unet_<name>.hada_w1_a`` (LoHa), ``.lokr_w1`` / ``.lokr_w2`` (LoKr), ``.weight`` + ``.on_input`` (IA3),
``.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha`` / ``.dora_scale`` (DoRA).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from train.network.adapter import Adapter

LYCORIS_ALGOS = ("loha", "lokr", "ia3", "dora")

# What kohya's ss_network_args carries for a LyCORIS network (``--network_args algo=...``).
LYCORIS_NETWORK_MODULE = "lycoris.kohya"


def lycoris_version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("lycoris-lora")
    except PackageNotFoundError:  # pragma: no cover - metadata missing in odd installs
        return "unknown"


def make_lycoris_module(
    algo: str,
    lora_name: str,
    org_module: torch.nn.Module,
    *,
    dim: int,
    alpha: float,
    dropout: float | None,
    rank_dropout: float | None,
    module_dropout: float | None,
    multiplier: float = 1.0,
    lokr_factor: int = -1,
) -> Adapter:
    """A lycoris module for one target; not yet hooked (call ``.apply_to()``)."""
    try:
        from lycoris.modules import IA3Module, LoConModule, LohaModule, LokrModule
    except ImportError as exc:  # pragma: no cover - dependency missing
        raise RuntimeError(
            f"network.type={algo!r} needs the lycoris-lora package: pip install lycoris-lora"
        ) from exc
    common = {
        "multiplier": multiplier,
        "lora_dim": int(dim),
        "alpha": float(alpha),
        "dropout": float(dropout or 0.0),
        "rank_dropout": float(rank_dropout or 0.0),
        "module_dropout": float(module_dropout or 0.0),
    }
    module: Adapter
    if algo == "loha":
        module = LohaModule(lora_name, org_module, **common)
    elif algo == "lokr":
        module = LokrModule(lora_name, org_module, factor=int(lokr_factor), **common)
    elif algo == "ia3":
        module = IA3Module(lora_name, org_module, **common)
    elif algo == "dora":
        module = LoConModule(lora_name, org_module, weight_decompose=True, **common)
    else:
        raise ValueError(f"network.type: {algo!r} is not a LyCORIS algorithm ({', '.join(LYCORIS_ALGOS)})")
    return module
