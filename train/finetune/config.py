"""``[finetune]`` section of the training config: the memory options of a full fine-tune (pure pydantic, no
torch), and the checks that tie it to ``network.type = "full"``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from train.config import TrainConfig

WeightsDType = Literal["fp32", "bf16"]
Bf16Update = Literal["stochastic", "master"]


class FinetuneSection(BaseModel):
    """Full fine-tune (network.type = "full"): weight precision, optimizer step in backward, EMA."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    weights: WeightsDType = Field(
        "fp32", description="dtype of the trained weights: fp32 (mixed precision over fp32 weights) | bf16 (half "
        "the weight and gradient memory; see bf16_update)",
    )
    bf16_update: Bf16Update = Field(
        "stochastic", description="how a bf16 weight takes its update: stochastic (rounded stochastically, no "
        "extra memory) | master (an fp32 master copy the optimizer updates: +4 bytes per weight)",
    )
    fused_backward: bool = Field(
        False, description="step the optimizer inside backward, one tensor at a time, so no full set of gradients "
        "is ever held (kohya's fused_backward_pass; needs gradient_accumulation_steps = 1, clips per tensor)",
    )
    ema: bool = Field(False, description="keep an exponential moving average of the trained weights (+4 bytes per "
                                         "weight, fp32)")
    ema_decay: float = Field(0.9999, gt=0, lt=1, description="EMA decay (diffusers' EMAModel; warms up as "
                                                             "(1+t)/(10+t) until it reaches this)")
    ema_on_cpu: bool = Field(False, description="keep the EMA in CPU memory (no GPU memory; slower: it visits the "
                                                "GPU for each update)")
    save_ema: bool = Field(True, description="saved checkpoints hold the EMA weights (false: the trained weights)")


def finetune_problems(cfg: TrainConfig) -> list[tuple[str, object, str]]:
    """``(field, value, fix)`` for every combination a full fine-tune cannot run (empty: fine)."""
    n, f, t, o = cfg.network, cfg.finetune, cfg.train, cfg.output
    problems: list[tuple[str, object, str]] = []
    if n.type != "full":
        defaults = FinetuneSection()
        set_fields = sorted(k for k in f.model_fields_set if getattr(f, k) != getattr(defaults, k))
        if set_fields:
            problems.append((f"finetune.{set_fields[0]}", getattr(f, set_fields[0]),
                             "the [finetune] options apply to a full fine-tune; set network.type = \"full\" or "
                             "remove them"))
        if o.extract_dim is not None:
            problems.append(("output.extract_dim", o.extract_dim,
                             "extracting a LoRA follows a full fine-tune; set network.type = \"full\" or remove it"))
        return problems
    lora_only = {
        "dropout": n.dropout, "rank_dropout": n.rank_dropout, "module_dropout": n.module_dropout,
        "init_from": n.init_from, "scale_weight_norms": n.scale_weight_norms, "down_lr_weight": n.down_lr_weight,
        "mid_lr_weight": n.mid_lr_weight, "up_lr_weight": n.up_lr_weight,
    }
    for name, value in lora_only.items():
        if value is not None:
            problems.append((f"network.{name}", value, "a LoRA option; a full fine-tune trains the weights "
                                                       "themselves: remove it"))
    if o.extract_conv_dim is not None and o.extract_dim is None:
        problems.append(("output.extract_conv_dim", o.extract_conv_dim, "needs output.extract_dim (the rank of the "
                                                                         "linear layers)"))
    if f.fused_backward and t.gradient_accumulation_steps > 1:
        problems.append(("finetune.fused_backward", True,
                         f"steps the optimizer in backward and cannot accumulate gradients over "
                         f"{t.gradient_accumulation_steps} batches; set train.gradient_accumulation_steps = 1 (or "
                         "raise train.batch_size)"))
    if (f.fused_backward or f.weights == "bf16") and t.mixed_precision == "fp16":
        field = "finetune.fused_backward" if f.fused_backward else "finetune.weights"
        problems.append((field, True if f.fused_backward else "bf16",
                         "needs train.mixed_precision = \"bf16\" (or \"no\"): fp16's loss scaling unscales all "
                         "gradients at once"))
    return problems
