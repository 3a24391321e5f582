"""``[network]`` section of the training config: what adapter to train and how (pure pydantic, no torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from train.aliases import KohyaNamed

NetworkType = Literal["lora", "locon", "dylora", "loha", "lokr", "ia3", "dora", "full"]
BLOCK_LR_PRESETS = ("cosine", "sine", "linear", "reverse_linear", "zeros")
BLOCKS_SD = 25  # kohya's block layout for block_dims: 12 down + 1 mid + 12 up
BLOCKS_SDXL = 23  # 1 (embeddings) + 9 input + 3 middle + 9 output + 1 (out)


class NetworkConfig(KohyaNamed):
    """The adapter: kohya LoRA / LoCon, or a LyCORIS algorithm (LoHa, LoKr, IA3, DoRA) from ``lycoris-lora``."""

    section = "network"

    type: NetworkType = Field(
        "lora",
        description="lora = attention/MLP linears (kohya LierLa); locon = + ResNet/up/down convs (C3Lier); "
        "dylora = kohya's DyLoRA (every rank up to dim usable; + convs with conv_dim); "
        "loha, lokr, ia3, dora = LyCORIS algorithms; full = fine-tune the weights themselves (see [finetune])",
    )
    dylora_unit: int = Field(
        1, ge=1, description="DyLoRA: ranks are trained in blocks of this many (dim must be a multiple) (kohya: unit)",
    )
    dim: int = Field(16, ge=1, le=4096, description="rank of linear and 1x1-conv modules (kohya: network_dim)")
    alpha: float = Field(8.0, gt=0, description="the update is scaled by alpha / dim (kohya: network_alpha)")
    conv_dim: int | None = Field(
        None, ge=1, le=4096, description="rank of 3x3 convs (locon: defaults to dim; LyCORIS types train convs only when set)"
    )
    conv_alpha: float | None = Field(None, gt=0, description="alpha of 3x3 convs (unset: 1 as in kohya, or alpha when conv_dim is unset too)")
    dropout: float | None = Field(None, ge=0, lt=1, description="neuron dropout on the LoRA down output (kohya: network_dropout)")
    rank_dropout: float | None = Field(None, ge=0, lt=1, description="drop whole ranks during training")
    module_dropout: float | None = Field(None, ge=0, lt=1, description="skip whole modules during training")
    train_unet: bool = Field(True, description="train the UNet modules")
    train_text_encoder: bool = Field(True, description="train the text encoder(s) too")
    init_from: Path | None = Field(None, description="start from this kohya LoRA .safetensors (names must match) "
                                   "(kohya: network_weights)")
    down_lr_weight: list[float] | str | None = Field(
        None, description="kohya block lr weights for the down blocks (12 for SD1/2, 9 for SDXL) or a preset: "
        "cosine, sine, linear, reverse_linear, zeros, optionally '+base' (e.g. 'sine+.5')",
    )
    mid_lr_weight: list[float] | None = Field(None, description="block lr weight(s) for the mid block (SDXL: 3)")
    up_lr_weight: list[float] | str | None = Field(None, description="block lr weights for the up blocks")
    block_lr_zero_threshold: float = Field(
        0.0, ge=0, description="block lr weights at or below this are 0 (those blocks get no modules)"
    )
    block_dims: list[int] | None = Field(
        None, description="rank per UNet block, kohya's layout: 25 for SD1/SD2 (IN00-IN11, MID, OUT00-OUT11), 23 "
        "for SDXL (0, IN0-IN8, MID0-MID2, OUT0-OUT8, OUT); 0 = no modules in that block; text encoders keep dim",
    )
    block_alphas: list[float] | None = Field(None, description="alpha per UNet block (needs block_dims; unset: alpha)")
    conv_block_dims: list[int] | None = Field(
        None, description="3x3-conv rank per UNet block (locon, with block_dims; unset: conv_dim in every block)"
    )
    conv_block_alphas: list[float] | None = Field(
        None, description="3x3-conv alpha per UNet block (needs conv_block_dims; unset: conv_alpha, else 1)"
    )
    loraplus_lr_ratio: float | None = Field(
        None, gt=0, description="LoRA+: lora_up matrices learn this many times faster (16 is the paper's choice)"
    )
    loraplus_unet_lr_ratio: float | None = Field(None, gt=0, description="LoRA+ ratio for the UNet (unset: loraplus_lr_ratio)")
    loraplus_text_encoder_lr_ratio: float | None = Field(
        None, gt=0, description="LoRA+ ratio for the text encoder(s) (unset: loraplus_lr_ratio)"
    )
    scale_weight_norms: float | None = Field(
        None, gt=0, description="kohya max-norm regularisation: cap each module's update norm (1.0 is typical)"
    )
    lokr_factor: int = Field(-1, description="LoKr factorisation factor (-1 = automatic)")

    @field_validator("down_lr_weight", "up_lr_weight")
    @classmethod
    def _check_preset(cls, value: list[float] | str | None) -> list[float] | str | None:
        if isinstance(value, str):
            name, _, base = value.partition("+")
            if name not in BLOCK_LR_PRESETS:
                raise ValueError(
                    f"{value!r} is not a block lr preset; use a list of numbers or one of "
                    f"{', '.join(BLOCK_LR_PRESETS)} (optionally '+base', e.g. 'cosine+0.5')"
                )
            if base:
                try:
                    float(base)
                except ValueError:
                    raise ValueError(f"{value!r}: the part after '+' must be a number") from None
        elif isinstance(value, list) and any(w < 0 for w in value):
            raise ValueError(f"{value!r}: block lr weights must be >= 0")
        return value

    @field_validator("block_dims", "block_alphas", "conv_block_dims", "conv_block_alphas", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        """kohya writes these as one comma-separated string in network_args ("2,4,4,..."): a list either way."""
        if isinstance(value, str):
            try:
                return [float(v) if "." in v or "e" in v.lower() else int(v) for v in value.split(",") if v.strip()]
            except ValueError:
                raise ValueError(f"{value!r}: give numbers separated by commas, or a list") from None
        return value

    @field_validator("block_dims", "block_alphas", "conv_block_dims", "conv_block_alphas")
    @classmethod
    def _block_values(cls, value: list[float] | None) -> list[float] | None:
        if value is None:
            return value
        if len(value) not in (BLOCKS_SD, BLOCKS_SDXL):
            raise ValueError(f"{len(value)} values given: kohya's layout has {BLOCKS_SD} blocks for SD1/SD2 and "
                             f"{BLOCKS_SDXL} for SDXL")
        if any(v < 0 for v in value):
            raise ValueError(f"{value!r}: values must be >= 0")
        return value

    @field_validator("mid_lr_weight")
    @classmethod
    def _check_mid(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and any(w < 0 for w in value):
            raise ValueError(f"{value!r}: block lr weights must be >= 0")
        return value

    @model_validator(mode="after")
    def _check_combination(self) -> NetworkConfig:
        if not self.train_unet and not self.train_text_encoder:
            raise ValueError(
                "train_unet: false together with train_text_encoder: false trains nothing; enable one of them"
            )
        if self.type == "full" and (self.conv_dim is not None or self.conv_alpha is not None):
            raise ValueError("conv_dim / conv_alpha: a full fine-tune has no rank; remove them (the rank of an "
                             "extracted LoRA is output.extract_dim / extract_conv_dim)")
        if self.type == "lora" and self.conv_dim is not None:
            raise ValueError(
                f"conv_dim: {self.conv_dim} is not used by type 'lora' (linear layers only); "
                "set type = 'locon' to train the 3x3 convs too"
            )
        if self.conv_alpha is not None and self.conv_dim is None and self.type != "locon":
            raise ValueError(f"conv_alpha: {self.conv_alpha} needs conv_dim (set conv_dim, or remove conv_alpha)")
        needs = (("block_alphas", "block_dims"), ("conv_block_dims", "block_dims"),
                 ("conv_block_alphas", "conv_block_dims"))
        for name, base in needs:
            if getattr(self, name) is not None and getattr(self, base) is None:
                raise ValueError(f"{name} needs {base} (set {base} too, or remove {name})")
        lists = [v for v in (self.block_dims, self.block_alphas, self.conv_block_dims, self.conv_block_alphas) if v]
        if len({len(v) for v in lists}) > 1:
            raise ValueError("block_dims, block_alphas, conv_block_dims and conv_block_alphas must have one value per "
                             "block each (the same count)")
        if self.block_dims is not None and self.type not in ("lora", "locon"):
            raise ValueError(f"block_dims: per-block ranks are kohya LoRA's (type lora or locon), not {self.type!r}")
        if self.conv_block_dims is not None and self.type != "locon":
            raise ValueError("conv_block_dims: 3x3 convs are trained by type 'locon'; set type = 'locon'")
        if self.type == "dylora":
            if self.dim % self.dylora_unit:
                raise ValueError(f"dim: {self.dim} is not a multiple of dylora_unit {self.dylora_unit} (kohya's rule)")
            if self.conv_dim is not None and self.conv_dim != self.dim:
                raise ValueError(f"conv_dim: DyLoRA trains convs at dim ({self.dim}), not {self.conv_dim} (kohya's "
                                 "rule); set conv_dim = dim")
        if self.has_loraplus and self.type in ("loha", "lokr", "ia3"):
            raise ValueError(f"loraplus_lr_ratio: LoRA+ speeds up the lora_up matrices, and {self.type} has none; "
                             "use type lora, locon, dylora or dora")
        return self

    # ------------------------------------------------------------------ derived values
    @property
    def is_lycoris(self) -> bool:
        return self.type in ("loha", "lokr", "ia3", "dora")

    @property
    def trains_convs(self) -> bool:
        """True when ResNet / up- / down-sampling convs are targeted."""
        return self.type == "locon" or ((self.is_lycoris or self.type == "dylora") and self.conv_dim is not None)

    @property
    def has_loraplus(self) -> bool:
        return any(r is not None for r in (self.loraplus_lr_ratio, self.loraplus_unet_lr_ratio,
                                           self.loraplus_text_encoder_lr_ratio))

    def loraplus_ratio(self, part: str) -> float | None:
        """kohya's LoRA+ ratio for the UNet ('unet') or the text encoders: the specific one, else the common one."""
        specific = self.loraplus_unet_lr_ratio if part == "unet" else self.loraplus_text_encoder_lr_ratio
        return specific or self.loraplus_lr_ratio

    @property
    def effective_conv_dim(self) -> int | None:
        if not self.trains_convs:
            return None
        return self.conv_dim if self.conv_dim is not None else self.dim

    @property
    def effective_conv_alpha(self) -> float | None:
        if not self.trains_convs:
            return None
        if self.conv_alpha is not None:
            return self.conv_alpha
        # kohya: conv_alpha defaults to 1 when conv_dim is given; with conv_dim unset (= dim) follow alpha.
        return 1.0 if self.conv_dim is not None else self.alpha

    @property
    def has_block_lr(self) -> bool:
        return any(w is not None for w in (self.down_lr_weight, self.mid_lr_weight, self.up_lr_weight))
