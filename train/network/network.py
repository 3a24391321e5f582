"""The trainable network: one adapter module per target, hooked into the base models' forward.

``create_network(arch, unet, text_encoders, cfg)`` builds it; ``Network.apply()`` hooks it in (base weights
are never changed), ``trainable_params`` gives optimizer param groups, ``save`` writes a kohya file.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from train.network import targets as tg
from train.network.adapter import Adapter
from train.network.config import NetworkConfig
from train.network.lora import LoRAModule
from train.network.lycoris import make_lycoris_module

if TYPE_CHECKING:
    from train.models.kinds import TextEncoder, UNet2DConditionModel

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ block-wise learning rates (kohya)
def _preset(name_with_base: str, n: int) -> list[float]:
    name, _, base = name_with_base.partition("+")
    b = float(base) if base else 0.0
    steps = range(n)
    if name == "cosine":
        return [math.sin(math.pi * (i / (n - 1)) / 2) + b for i in reversed(steps)]
    if name == "sine":
        return [math.sin(math.pi * (i / (n - 1)) / 2) + b for i in steps]
    if name == "linear":
        return [i / (n - 1) + b for i in steps]
    if name == "reverse_linear":
        return [i / (n - 1) + b for i in reversed(steps)]
    if name == "zeros":
        return [b] * n
    raise ValueError(f"unknown block lr preset {name!r}")


def _fit(field: str, values: list[float], n: int) -> list[float]:
    if len(values) > n:
        raise ValueError(f"network.{field}: {len(values)} values given, this model has {n} blocks; give {n}")
    return list(values) + [1.0] * (n - len(values))


def block_lr_weights(arch: str, cfg: NetworkConfig) -> list[float] | None:
    """kohya's ``get_block_lr_weight``: per-block lr multipliers indexed by ``targets.block_index``
    (SD1/SD2: 12 down + 1 mid + 12 up = 25; SDXL: 1 + 9 down + 3 mid + 9 up + 1 = 23). None when unused."""
    if not cfg.has_block_lr:
        return None
    sdxl = arch == "sdxl"
    n = tg.NUM_BLOCKS_SDXL if sdxl else tg.NUM_BLOCKS_SD
    n_mid = tg.NUM_MID_BLOCKS_SDXL if sdxl else tg.NUM_MID_BLOCKS_SD

    def side(field: str, value: list[float] | str | None, count: int) -> list[float]:
        if value is None:
            return [1.0] * count
        values = _preset(value, count) if isinstance(value, str) else _fit(field, value, count)
        return [w if w > cfg.block_lr_zero_threshold else 0.0 for w in values]

    weights = (
        side("down_lr_weight", cfg.down_lr_weight, n)
        + side("mid_lr_weight", cfg.mid_lr_weight, n_mid)
        + side("up_lr_weight", cfg.up_lr_weight, n)
    )
    return [1.0, *weights, 1.0] if sdxl else weights


BlockDims = tuple[list[int], list[float], list[int] | None, list[float] | None]


def block_dims_and_alphas(arch: str, cfg: NetworkConfig) -> BlockDims | None:
    """kohya's ``get_block_dims_and_alphas``: (dims, alphas, conv dims, conv alphas) per UNet block, indexed by
    ``targets.block_index`` (25 for SD1/SD2, 23 for SDXL), or None without ``block_dims``. Unset alphas follow
    ``alpha``; unset conv dims follow ``conv_dim`` (no 3x3 modules without one), unset conv alphas
    ``conv_alpha`` (else 1). A block whose block lr weight is 0 gets rank 0, as in kohya."""
    if cfg.block_dims is None:
        return None
    n = 23 if arch == "sdxl" else 25
    for name in ("block_dims", "block_alphas", "conv_block_dims", "conv_block_alphas"):
        given = getattr(cfg, name)
        if given is not None and len(given) != n:
            raise ValueError(f"network.{name}: {len(given)} values given, {arch} has {n} blocks in kohya's layout; "
                             f"give {n}")
    dims = list(cfg.block_dims)
    alphas = list(cfg.block_alphas) if cfg.block_alphas is not None else [cfg.alpha] * n
    conv_dims: list[int] | None = None
    conv_alphas: list[float] | None = None
    if cfg.conv_block_dims is not None:
        conv_dims = list(cfg.conv_block_dims)
        conv_alphas = list(cfg.conv_block_alphas) if cfg.conv_block_alphas is not None \
            else [cfg.conv_alpha if cfg.conv_alpha is not None else 1.0] * n
    elif cfg.effective_conv_dim is not None:
        conv_dims = [cfg.effective_conv_dim] * n
        conv_alphas = [float(cfg.effective_conv_alpha or 1.0)] * n
    weights = block_lr_weights(arch, cfg)
    if weights is not None:
        for i, w in enumerate(weights[:n]):
            if w == 0:
                dims[i] = 0
                if conv_dims is not None:
                    conv_dims[i] = 0
    return dims, alphas, conv_dims, conv_alphas


# ------------------------------------------------------------------ the network
class Network(nn.Module):
    """Adapter modules registered under their kohya names (so ``state_dict()`` keys are kohya keys)."""

    def __init__(self, arch: str, cfg: NetworkConfig, modules: list[Adapter], unet_names: set[str],
                 block_weights: list[float] | None, block_of: dict[str, int],
                 part_of: dict[str, str] | None = None) -> None:
        super().__init__()
        self.part_of = part_of or {}
        """kohya name -> 'unet', 'te', 'te1' or 'te2'."""
        self.arch = arch
        self.cfg = cfg
        self.modules_list = modules
        self.unet_names = unet_names
        self.block_weights = block_weights
        self.block_of = block_of
        self.multiplier = 1.0
        self.applied = False
        for m in modules:
            self.add_module(m.lora_name, cast(nn.Module, m))  # every adapter is a torch module

    @property
    def unet_modules(self) -> list[Adapter]:
        return [m for m in self.modules_list if m.lora_name in self.unet_names]

    @property
    def text_encoder_modules(self) -> list[Adapter]:
        return [m for m in self.modules_list if m.lora_name not in self.unet_names]

    def apply(self, fn: Callable[[nn.Module], None] | None = None) -> Network:
        """Hook every module into its target's forward (``apply(fn)`` keeps nn.Module's meaning)."""
        if fn is not None:
            super().apply(fn)
            return self
        for m in self.modules_list:
            m.apply_to()
        self.applied = True
        return self

    def restore(self) -> None:
        """Unhook: the base models run exactly as before ``apply()``."""
        for m in reversed(self.modules_list):
            m.restore()
        self.applied = False

    def set_multiplier(self, multiplier: float) -> None:
        self.multiplier = float(multiplier)
        for m in self.modules_list:
            m.multiplier = self.multiplier

    def trainable_params(self, unet_lr: float | None,
                         te_lr: float | None | Sequence[float | None]) -> list[dict[str, Any]]:
        """Optimizer param groups: text encoder(s) at ``te_lr`` (SDXL: one value, or one per encoder), UNet at
        ``unet_lr`` (per block with block lr weights). With LoRA+ each group's ``lora_up`` matrices form a
        group of their own at ``lr * ratio`` (kohya's "plus" groups). Groups with lr 0 / None are left out
        (kohya). Each group has a ``name`` for logging."""
        self.requires_grad_(True)
        groups: list[dict[str, Any]] = []

        def add(name: str, modules: list[Adapter], lr: float | None) -> None:
            ratio = self.cfg.loraplus_ratio("unet" if name.startswith("unet") else "te")
            plain: list[torch.nn.Parameter] = []
            plus: list[torch.nn.Parameter] = []
            for m in modules:
                for pname, p in cast(nn.Module, m).named_parameters():
                    if p.requires_grad:
                        (plus if ratio is not None and pname.startswith(("lora_up", "lora_B")) else plain).append(p)
            if plain and lr:
                groups.append({"params": plain, "lr": lr, "name": name})
            if plus and lr and ratio is not None:
                groups.append({"params": plus, "lr": lr * ratio, "name": f"{name} plus"})

        te_lrs = list(te_lr) if isinstance(te_lr, Sequence) else [te_lr]
        if self.text_encoder_modules:
            parts = sorted({self.part_of[m.lora_name] for m in self.text_encoder_modules})
            if len(te_lrs) == 1 or len(set(te_lrs)) == 1:
                add("textencoder", self.text_encoder_modules, te_lrs[0])
            else:
                if len(te_lrs) != len(parts):
                    raise ValueError(f"train.text_encoder_lr: {len(te_lrs)} values for {len(parts)} text encoder(s); "
                                     "give one, or one per text encoder")
                for index, (part, lr) in enumerate(zip(parts, te_lrs, strict=True), start=1):
                    modules = [m for m in self.text_encoder_modules if self.part_of[m.lora_name] == part]
                    add(f"textencoder{index}", modules, lr)
        unet = self.unet_modules
        if unet:
            if self.block_weights is None:
                add("unet", unet, unet_lr)
            else:
                by_block: dict[int, list[Adapter]] = {}
                for m in unet:
                    by_block.setdefault(self.block_of[m.lora_name], []).append(m)
                for idx in sorted(by_block):
                    weight = self.block_weights[idx] if 0 <= idx < len(self.block_weights) else 1.0
                    add(f"unet_block{idx}", by_block[idx], None if unet_lr is None else unet_lr * weight)
        return groups

    def state_dict_kohya(self) -> dict[str, torch.Tensor]:
        """Every tensor under its kohya key (``lora_unet_..._to_q.lora_down.weight``...)."""
        from train.network.dylora import DyLoRAModule

        out: dict[str, torch.Tensor] = {}
        for m in self.modules_list:
            tensors = m.kohya_state_dict() if isinstance(m, DyLoRAModule) else m.state_dict()
            for key, value in tensors.items():
                out[f"{m.lora_name}.{key}"] = value
        return out

    def save(self, path: Path | str, dtype: str | torch.dtype = "fp16", metadata: Mapping[str, object] | None = None,
             v_prediction: bool = False) -> dict[str, str]:
        """Write a kohya-format ``.safetensors``. ``metadata`` holds the training values (ss_steps, ...);
        the network's own ``ss_*`` keys, ``modelspec.*`` and the sshs hashes are added here."""
        from train.network.save import modelspec_metadata, network_metadata, save_kohya

        md: dict[str, object] = dict(metadata or {})
        md.update(network_metadata(self.cfg, self.arch, v_prediction))
        md.update(modelspec_metadata(self.arch, self.cfg, {k: str(v) for k, v in md.items()}, v_prediction))
        return save_kohya(path, self.state_dict_kohya(), dtype, md)

    def load_weights(self, path: Path | str) -> dict[str, str]:
        """Load a kohya LoRA file (names and shapes must match); returns its metadata."""
        from train.network.load import load_file_into_network

        return load_file_into_network(self, path)

    @torch.no_grad()
    def apply_max_norm(self, max_norm: float, device: torch.device | str | None = None) -> tuple[int, float, float]:
        """kohya's ``scale_weight_norms``: cap each module's update norm at ``max_norm``.
        Returns (keys scaled, mean norm, max norm) for logging."""
        scaled_count = 0
        norms: list[float] = []
        for m in self.modules_list:
            scaled, norm = m.apply_max_norm(max_norm, device)
            if scaled is None:  # algorithm without max-norm support (lycoris IA3, LoHa...)
                continue
            scaled_count += int(bool(scaled))
            norms.append(float(norm or 0.0))
        if not norms:
            return 0, 0.0, 0.0
        return scaled_count, sum(norms) / len(norms), max(norms)


def _module_for(target: tg.Target, cfg: NetworkConfig, dim: int, alpha: float,
                device: torch.device | str | None) -> Adapter:
    if cfg.type == "dylora":
        from train.network.dylora import DyLoRAModule

        return DyLoRAModule(target.name, target.module, 1.0, dim, alpha, unit=cfg.dylora_unit, device=device)
    if cfg.is_lycoris:
        return make_lycoris_module(
            cfg.type, target.name, target.module, dim=dim, alpha=alpha, dropout=cfg.dropout,
            rank_dropout=cfg.rank_dropout, module_dropout=cfg.module_dropout, lokr_factor=cfg.lokr_factor,
        )
    return LoRAModule(target.name, target.module, 1.0, dim, alpha, cfg.dropout, cfg.rank_dropout,
                      cfg.module_dropout, device=device)


def create_network(arch: str, unet: UNet2DConditionModel, text_encoders: list[TextEncoder] | None,
                   cfg: NetworkConfig, device: torch.device | str | None = None) -> Network:
    """Build the network for ``arch`` ('sd1', 'sd2', 'sdxl') over a diffusers UNet and the CLIP text
    encoder(s). Only the parts being trained get modules. Loads ``cfg.init_from`` when set."""
    tg.check_arch(arch)
    if not isinstance(cfg, NetworkConfig):
        raise TypeError("cfg must be a NetworkConfig")
    block_weights = block_lr_weights(arch, cfg)
    found = tg.find_targets(
        arch,
        unet if cfg.train_unet else None,
        list(text_encoders or []) if cfg.train_text_encoder else None,
        include_conv=cfg.trains_convs,
    )
    if cfg.train_text_encoder and not text_encoders:
        log.info("no text encoder given: training the UNet only")
    modules: list[Adapter] = []
    skipped: list[str] = []
    per_block = block_dims_and_alphas(arch, cfg)
    for t in found:
        if t.is_conv3x3:
            dim, alpha = cfg.effective_conv_dim, cfg.effective_conv_alpha
        else:
            dim, alpha = cfg.dim, cfg.alpha
        if per_block is not None and t.part == "unet":
            dims, alphas, conv_dims, conv_alphas = per_block
            if t.is_conv3x3:
                dim, alpha = (conv_dims[t.block_index], conv_alphas[t.block_index]) if conv_dims and conv_alphas \
                    else (None, None)
            else:
                dim, alpha = dims[t.block_index], alphas[t.block_index]
        if not dim or alpha is None:  # convs when the network trains none; kohya: rank 0 = no module
            continue
        if block_weights is not None and t.part == "unet" and 0 <= t.block_index < len(block_weights) \
                and block_weights[t.block_index] == 0:
            skipped.append(t.name)  # kohya: a block with lr weight 0 gets no modules
            continue
        modules.append(_module_for(t, cfg, dim, float(alpha), device))
    if skipped:
        log.info("block lr weight 0: %d modules not created", len(skipped))
    if not modules:
        raise ValueError(f"network: no modules to train for {arch} with {cfg.type} (check train_unet, "
                         "train_text_encoder and the block lr weights)")
    unet_names = {t.name for t in found if t.part == "unet"}
    network = Network(arch, cfg, modules, unet_names, block_weights, {t.name: t.block_index for t in found},
                      {t.name: t.part for t in found})
    if cfg.init_from is not None:
        network.load_weights(cfg.init_from)
    return network
