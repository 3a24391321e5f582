"""Read kohya-format LoRA files and load them into a :class:`~train.network.network.Network` (``init_from``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from train.network.adapter import Adapter
    from train.network.network import Network

_SHOW = 12


class NetworkLoadError(ValueError):
    """A LoRA file that does not fit the network: lists what did not match."""


def read_kohya_file(path: Path | str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a ``.safetensors`` LoRA. Pickled ``.pt``/``.ckpt`` files are refused."""
    from safetensors import SafetensorError, safe_open

    path = Path(path).expanduser()
    if not path.is_file():
        raise NetworkLoadError(f"network.init_from: {str(path)!r} does not exist (give the path of a .safetensors LoRA)")
    if path.suffix.lower() != ".safetensors":
        raise NetworkLoadError(
            f"network.init_from: {str(path)!r} is not a .safetensors file; kiln does not load pickled "
            "LoRAs (.pt/.ckpt): convert it to .safetensors first"
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except (SafetensorError, OSError, ValueError) as exc:
        raise NetworkLoadError(f"network.init_from: {str(path)!r} is not a readable safetensors file: {exc}") from None
    return tensors, metadata


def _listing(title: str, items: list[str]) -> str:
    shown = items[:_SHOW]
    more = f"\n    ... and {len(items) - _SHOW} more" if len(items) > _SHOW else ""
    return f"  {title} ({len(items)}):\n" + "\n".join(f"    {i}" for i in shown) + more


def match_report(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor]) -> list[str]:
    """Human-readable lines for every key that is missing, unexpected, or has the wrong shape."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    wrong_shape = [
        f"{k}: file {tuple(given[k].shape)}, network {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(given))
        if tuple(given[k].shape) != tuple(expected[k].shape)
    ]
    lines = []
    if missing:
        lines.append(_listing("in the network but not in the file", missing))
    if unexpected:
        lines.append(_listing("in the file but not in the network", unexpected))
    if wrong_shape:
        lines.append(_listing("shape differs (dim / conv_dim / base model?)", wrong_shape))
    return lines


def load_into_network(network: Network, tensors: dict[str, torch.Tensor], source: str = "state dict") -> None:
    """Copy ``tensors`` (kohya keys) into ``network``; every key must match by name and shape."""
    import torch

    expected = network.state_dict_kohya()
    tensors = with_default_alphas(tensors)
    problems = match_report(expected, tensors)
    if problems:
        extra = set(tensors) - set(expected)
        if extra and all(k.startswith("lora_te") for k in extra) and not network.text_encoder_modules:
            problems.append("  the file has text-encoder modules but this run does not train the text encoder: "
                            "set network.train_text_encoder = true with a text_encoder_lr > 0, or start from a "
                            "UNet-only LoRA")
        raise NetworkLoadError(
            f"{source} does not fit this network ({network.cfg.type}, dim {network.cfg.dim}, {network.arch}):\n"
            + "\n".join(problems)
            + "\n  fix: use a LoRA trained for the same base model family with the same network type, dim and "
            "conv_dim, and the same train_unet / train_text_encoder choice"
        )
    from train.network.dylora import DyLoRAModule

    with torch.no_grad():
        for module in network.modules_list:
            prefix = module.lora_name + "."
            sub = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            if isinstance(module, DyLoRAModule):  # a rank-dim LoRA file: its rows
                module.load_kohya_state_dict(sub)
                continue
            own = module.state_dict()
            for key, value in sub.items():
                if key in own:
                    own[key].copy_(value.to(own[key].dtype))
            module.load_state_dict(own, strict=False)
            _refresh_scale(module)


def with_default_alphas(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Old kohya LoRAs have no ``.alpha``: like kohya, such a module's alpha is its dim (scale 1)."""
    import torch

    out = dict(tensors)
    for key, value in tensors.items():
        if key.endswith(".lora_down.weight"):
            alpha_key = key[: -len("lora_down.weight")] + "alpha"
            if alpha_key not in out:
                out[alpha_key] = torch.tensor(float(value.shape[0]))
    return out


def _refresh_scale(module: Adapter) -> None:
    """alpha may come from the file: keep ``scale = alpha / dim`` in step (kohya computes it at creation)."""
    alpha = getattr(module, "alpha", None)
    dim = getattr(module, "lora_dim", None)
    if alpha is not None and dim and hasattr(module, "scale") and not getattr(module, "rs_lora", False):
        module.scale = float(alpha) / dim


def load_file_into_network(network: Network, path: Path | str) -> dict[str, str]:
    """Load a kohya LoRA file into ``network``; returns the file's metadata."""
    tensors, metadata = read_kohya_file(path)
    load_into_network(network, tensors, source=f"{str(path)!r}")
    return metadata
