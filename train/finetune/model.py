"""``FullModel``: what the training loop trains when ``network.type = "full"``: the base model's own UNet (and
text encoders, with ``network.train_text_encoder``), registered as this module's children so DDP and the
resumable state see them, in the precision ``[finetune]`` asks for, with the EMA and the optimizer-step
options attached, and saved as a single-file checkpoint in the original (LDM / SGM) layout A1111/Forge and
ComfyUI load (``train.models.convert``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from train.finetune.config import FinetuneSection
from train.finetune.ema import WeightAverage
from train.finetune.fused import FusedBackward
from train.finetune.memory import MemoryPlan, plan_memory
from train.finetune.precision import MasterWeights, StochasticRounding, restore_state_dtypes

if TYPE_CHECKING:
    from train.models.loading import BaseModel

TE_NAMES = ("text_encoder", "text_encoder_2")


class FullModel(nn.Module):
    """The trained parts of ``base`` (``parts["unet"]``, ``parts["text_encoder"]``...) and what trains them."""

    def __init__(self, base: BaseModel, finetune: FinetuneSection, *, train_unet: bool, train_text_encoder: bool,
                 seed: int, num_processes: int = 1) -> None:
        super().__init__()
        if num_processes > 1 and (finetune.fused_backward or finetune.weights == "bf16"):
            raise ValueError("finetune.fused_backward / finetune.weights = \"bf16\" run on one process (their "
                             "per-tensor gradient hooks would run before DDP averages the gradients); train on "
                             "one GPU or use weights = \"fp32\" without fused_backward")
        self.base = base  # a dataclass, not a module: the frozen parts stay out of the module tree
        self.finetune = finetune
        self.seed = seed
        parts: dict[str, nn.Module] = {}
        if train_unet:
            parts["unet"] = base.unet
        if train_text_encoder:
            parts.update(zip(TE_NAMES, base.text_encoders, strict=False))
        if not parts:
            raise ValueError("network: a full fine-tune with train_unet = false and no text encoder trains nothing")
        self.parts = nn.ModuleDict(parts)
        dtype = torch.bfloat16 if finetune.weights == "bf16" else torch.float32
        for module in parts.values():
            module.to(dtype=dtype)
            module.requires_grad_(True)
        self.model_params = [p for module in parts.values() for p in module.parameters()]
        self.masters = MasterWeights(self.model_params) if finetune.weights == "bf16" and \
            finetune.bf16_update == "master" else None
        self.ema = WeightAverage(self.optimizer_params(), finetune.ema_decay, on_cpu=finetune.ema_on_cpu) \
            if finetune.ema else None
        self.rounding: StochasticRounding | None = None
        self.optimizer: torch.optim.Optimizer | None = None

    # ---------------------------------------------------------------- what the optimizer steps
    def optimizer_params(self, part: str | None = None) -> list[nn.Parameter]:
        """The tensors the optimizer updates (the fp32 masters in master mode), of one part or all."""
        modules = [self.parts[part]] if part is not None else list(self.parts.values())
        params = [p for module in modules for p in module.parameters()]
        if self.masters is None:
            return params
        return [self.masters.master_of[id(p)] for p in params]

    def trainable_params(self, unet_lr: float | None, te_lr: float | None) -> list[dict[str, Any]]:
        """Optimizer param groups as the LoRA network gives them: text encoder(s) at ``te_lr``, the UNet at
        ``unet_lr``; groups with lr 0 / None are left out."""
        groups: list[dict[str, Any]] = []
        te = [p for name in TE_NAMES if name in self.parts for p in self.optimizer_params(name)]
        if te and te_lr:
            groups.append({"params": te, "lr": te_lr, "name": "textencoder"})
        if "unet" in self.parts and unet_lr:
            groups.append({"params": self.optimizer_params("unet"), "lr": unet_lr, "name": "unet"})
        return groups

    def attach(self, optimizer: torch.optim.Optimizer, max_grad_norm: float) -> None:
        """Hook the precision and optimizer-step options into ``optimizer`` (built on :meth:`trainable_params`)."""
        self.optimizer = optimizer
        if self.finetune.weights == "bf16" and self.masters is None:
            self.rounding = StochasticRounding(optimizer, self.seed)
        if self.masters is not None:
            self.masters.attach(optimizer)
        if self.finetune.fused_backward:
            masters = self.masters

            def stepped_for(p: torch.Tensor) -> torch.Tensor:
                return masters.master_of[id(p)] if masters is not None else p

            FusedBackward(optimizer, self.model_params, stepped_for, max_grad_norm)

    def sample_dtype(self, compute: torch.dtype) -> torch.dtype:
        """The autocast dtype samples render under: bf16 weights need it even without mixed precision (the
        fp32 VAE and text encoders meet the bf16 UNet)."""
        return torch.bfloat16 if self.finetune.weights == "bf16" else compute

    def after_step(self) -> None:
        """One optimizer step is done: update the EMA."""
        if self.ema is not None:
            self.ema.update()

    def memory_plan(self, optimizer: str, optimizer_args: Mapping[str, object]) -> MemoryPlan:
        """The memory this run holds beyond activations (said in the run's log before the first step)."""
        trained = sum(p.numel() for p in self.model_params)
        trained_ids = {id(p) for p in self.model_params}
        device = self.model_params[0].device

        def on_device(modules: list[nn.Module]) -> tuple[int, torch.dtype | None]:
            """Frozen weights of ``modules`` on the training device (cached parts wait in CPU memory)."""
            params = [p for m in modules for p in m.parameters() if id(p) not in trained_ids and p.device == device]
            return sum(p.numel() for p in params), params[0].dtype if params else None

        frozen, dtype = on_device([*self.base.text_encoders, self.base.unet])
        vae, _ = on_device([self.base.vae])
        return plan_memory(trained, frozen, finetune=self.finetune, optimizer=optimizer,
                           compute_bytes=2 if dtype in (torch.float16, torch.bfloat16) else 4,
                           sgd_momentum=bool(optimizer_args.get("momentum")), vae=vae)

    # ---------------------------------------------------------------- saving
    def save(self, path: Path | str, dtype: str | torch.dtype = "fp16", metadata: Mapping[str, object] | None = None,
             v_prediction: bool = False) -> dict[str, str]:
        """Write the whole model (trained parts, EMA weights with ``save_ema``; the frozen parts as loaded) as a
        single-file ``.safetensors`` checkpoint, atomically. Returns the metadata written."""
        from safetensors.torch import save_file

        from curator.fsutil import atomic_write_with
        from train.models.convert import state_dicts_to_single_file
        from train.network.config import NetworkConfig
        from train.network.save import modelspec_metadata, stringify_metadata, torch_dtype

        out_dtype = torch_dtype(dtype)
        averaged = self.averaged_weights()
        base = self.base

        def part_state(name: str, module: nn.Module) -> dict[str, torch.Tensor]:
            state = module.state_dict()
            for key, value in averaged.get(name, {}).items():
                state[key] = value
            return {k: v.detach().to("cpu", out_dtype if v.is_floating_point() else v.dtype)
                    for k, v in state.items()}

        encoders = [part_state(name, te) for name, te in zip(TE_NAMES, base.text_encoders, strict=False)]
        tensors = state_dicts_to_single_file(
            base.arch, part_state("unet", base.unet), part_state("vae", base.vae), encoders,
            int(base.unet.config["layers_per_block"]), len(base.vae.config["block_out_channels"]))
        md = stringify_metadata(dict(metadata or {}))
        spec = modelspec_metadata(base.arch.value, NetworkConfig(type="full"), md, v_prediction)
        spec["modelspec.architecture"] = spec["modelspec.architecture"].removesuffix("/lora")
        spec["modelspec.title"] = md.get("ss_output_name") or "fine-tune"
        md.update(spec)
        md["kiln_finetune"] = self.finetune.model_dump_json()
        md["kiln_finetune_weights"] = "ema" if averaged else "trained"
        atomic_write_with(Path(path), lambda tmp: save_file(tensors, str(tmp), md))
        return md

    def averaged_weights(self) -> dict[str, dict[str, torch.Tensor]]:
        """The EMA weights by part and parameter name, when saves hold them (else empty)."""
        if self.ema is None or not self.finetune.save_ema:
            return {}
        shadows = iter(self.ema.shadows)
        out: dict[str, dict[str, torch.Tensor]] = {}
        for name, module in self.parts.items():
            out[name] = {key: next(shadows) for key, _ in module.named_parameters()}
        return out

    # ---------------------------------------------------------------- resumable state beyond the weights
    def extra_state(self) -> dict[str, torch.Tensor]:
        """fp32 masters and the EMA, for ``state/extra.safetensors``."""
        out: dict[str, torch.Tensor] = {}
        if self.masters is not None:
            out.update({f"master.{i}": m.detach().to("cpu") for i, m in enumerate(self.masters.masters)})
        if self.ema is not None:
            out.update(self.ema.tensors())
        if self.rounding is not None:
            out["rounding.calls"] = torch.tensor(self.rounding.calls, dtype=torch.int64)
        return out

    def load_extra_state(self, tensors: dict[str, torch.Tensor], folder: Path) -> None:
        """Restore :meth:`extra_state` (after ``folder``'s weights and optimizer state were loaded), and the fp32
        optimizer state of bf16 weights."""
        if self.rounding is not None and self.optimizer is not None:
            saved = torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True)
            restore_state_dtypes(self.optimizer, saved)
            self.rounding.calls = int(tensors.get("rounding.calls", torch.tensor(0)))
        if self.masters is not None:
            masters = self.masters.masters
            if f"master.{len(masters) - 1}" not in tensors:
                raise RuntimeError("state/extra.safetensors has no fp32 master weights for this model: the "
                                   "[finetune] settings changed since the run started")
            with torch.no_grad():
                for i, m in enumerate(masters):
                    m.copy_(tensors[f"master.{i}"])
            self.masters.reload()
        if self.ema is not None:
            self.ema.load(tensors)
