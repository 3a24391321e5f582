"""`kiln lora extract`: a LoRA from the difference between a base model and its fine-tune (kohya's
``networks/extract_lora_from_models.py``, with its facts).

For every module kohya's LoRA trains (LoCon's ResNet and sampler convs too with ``--conv-dim``), the
difference ``tuned - base`` is factorised by SVD at rank ``--dim`` (3x3 convs: ``--conv-dim``; never more than
the layer's smaller side), ``S`` folded into ``lora_up``, both factors clamped at the ``--clamp-quantile``
quantile (1 turns clamping off), and alpha set to the rank (scale 1). Text encoders are extracted with
``--te``, each one only when some weight changed by more than ``--min-diff`` (kohya's test; unchanged ones are
left out and reported). Weights are read one tensor at a time, so memory stays at a few layers, not two
models. The output is a kohya LoRA (LoCon with ``--conv-dim``) whose keys A1111/Forge, ComfyUI and diffusers
load with every key matched.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from train.lora.base import BaseWeights, Location, open_base
from train.lora.errors import LoraToolError
from train.lora.files import check_output
from train.lora.keymap import Slot
from train.lora.options import ExtractOptions, torch_device
from train.lora.progress import progress_bar
from train.lora.svd import factorize

if TYPE_CHECKING:
    import torch

TE_LABELS = {"te": "text encoder", "te1": "text encoder 1 (CLIP-L)", "te2": "text encoder 2 (OpenCLIP-bigG)"}


@dataclass
class ModuleResult:
    name: str
    rank: int
    fro_kept: float
    diff_norm: float


@dataclass
class ExtractReport:
    out: Path
    arch: str
    modules: list[ModuleResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    text_encoders: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def fro_kept(self) -> float:
        """Share of the Frobenius norm of the whole difference the LoRA keeps."""
        total = sum(m.diff_norm**2 for m in self.modules)
        kept = sum((m.diff_norm * m.fro_kept) ** 2 for m in self.modules)
        return 1.0 if total == 0 else math.sqrt(kept / total)


def _locate_all(model: BaseWeights, slots: list[Slot], flag: str) -> dict[str, Location]:
    found: dict[str, Location] = {}
    missing: list[str] = []
    for slot in slots:
        location = model.locate(slot)
        if location is None:
            missing.append(slot.name)
        else:
            found[slot.name] = location
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise LoraToolError(f"{flag} {model.path}: {len(missing)} layers are missing from it ({shown}); is it a "
                            f"complete {model.arch.value.upper()} checkpoint?")
    return found


def _read(model: BaseWeights, slot: Slot, location: Location, device: torch.device) -> torch.Tensor:
    import torch

    tensor = model.weight(slot, location).to(device=device, dtype=torch.float32)
    if tuple(tensor.shape) != slot.shape:
        tensor = tensor.reshape(slot.shape)
    return tensor


def extract(opts: ExtractOptions, *, progress: bool | None = None,
            say: Callable[[str], None] = print) -> ExtractReport:
    """Run the extraction; writes ``opts.out`` atomically. ``say(str)`` gets the notes as they come."""
    import torch

    from train.network.config import NetworkConfig
    from train.network.save import base_model_version, modelspec_metadata, save_kohya

    started = time.perf_counter()
    out = check_output(opts.out, force=opts.force, inputs=(opts.base, opts.tuned))
    device = torch_device(opts.device)
    tell = say
    with open_base(opts.base, allow_pickle=opts.allow_pickle, config_dir=opts.config_dir, flag="--base") as base, \
            open_base(opts.tuned, allow_pickle=opts.allow_pickle, config_dir=opts.config_dir, flag="--tuned") as tuned:
        if base.arch is not tuned.arch:
            raise LoraToolError(f"--base {base.path} is an {base.arch.value.upper()} model but --tuned {tuned.path} is "
                                f"an {tuned.arch.value.upper()} model; a LoRA is the difference of two models of the "
                                "same family")
        keymap = base.keymap()
        wanted = keymap.locon_targets if opts.conv_dim is not None else keymap.lora_targets
        slots = [s for name, s in keymap.slots.items() if name in wanted and (opts.text_encoders or s.part == "unet")]
        base_at = _locate_all(base, slots, "--base")
        tuned_at = _locate_all(tuned, slots, "--tuned")
        for slot in slots:
            a, b = base.shapes[base_at[slot.name].key], tuned.shapes[tuned_at[slot.name].key]
            if a != b:
                raise LoraToolError(f"--tuned {tuned.path}: {slot.name} has shape {list(b)} but {list(a)} in --base; "
                                    "--tuned is not a fine-tune of --base")
        report = ExtractReport(out, base.arch.value)
        te_slots = [s for s in slots if s.part != "unet"]
        unet_slots = [s for s in slots if s.part == "unet"]
        chosen: list[Slot] = []
        if not opts.text_encoders:
            report.notes.append("text encoders not extracted (pass --te to extract them too)")
        else:
            for part in sorted({s.part for s in te_slots}):
                part_slots = [s for s in te_slots if s.part == part]
                biggest = 0.0
                for slot in part_slots:
                    diff = _read(tuned, slot, tuned_at[slot.name], device) - _read(base, slot, base_at[slot.name], device)
                    biggest = max(biggest, float(diff.abs().max()))
                if biggest > opts.min_diff:
                    chosen += part_slots
                    report.text_encoders.append(part)
                    report.notes.append(f"{TE_LABELS[part]} changed (largest |difference| {biggest:.3g} > --min-diff "
                                        f"{opts.min_diff:g}): extracted")
                else:
                    report.notes.append(f"{TE_LABELS[part]} did not change (largest |difference| {biggest:.3g} <= "
                                        f"--min-diff {opts.min_diff:g}): left out")
        for note in report.notes:
            tell(note)
        chosen += unet_slots
        state: dict[str, torch.Tensor] = {}
        unet_changed = False
        with torch.no_grad(), progress_bar("extracting", len(chosen), "modules", progress) as advance:
            for slot in chosen:
                diff = _read(tuned, slot, tuned_at[slot.name], device) - _read(base, slot, base_at[slot.name], device)
                if slot.part == "unet" and bool(diff.abs().max() > 0):
                    unet_changed = True
                rank = opts.conv_dim if slot.kind == "conv" and opts.conv_dim is not None else opts.dim
                factors = factorize(diff, rank, opts.clamp_quantile)
                state[f"{slot.name}.lora_up.weight"] = factors.up.cpu()
                state[f"{slot.name}.lora_down.weight"] = factors.down.cpu()
                state[f"{slot.name}.alpha"] = torch.tensor(float(factors.rank))
                report.modules.append(ModuleResult(slot.name, factors.rank, factors.fro_kept(),
                                                   float(factors.singular_values.double().norm())))
                advance(1)
        if not unet_changed and not report.text_encoders:
            raise LoraToolError(f"--tuned {tuned.path} has the same weights as --base {base.path}: there is no "
                                "difference to extract (nothing written)")
        if not unet_changed:
            tell("the UNet did not change: its modules are all zero")
        v_pred = bool(base.v_prediction) if base.v_prediction is not None else base.arch.value == "sd2"
        network = NetworkConfig(type="locon" if opts.conv_dim else "lora", dim=opts.dim, alpha=float(opts.dim),
                                conv_dim=opts.conv_dim, conv_alpha=float(opts.conv_dim) if opts.conv_dim else None,
                                train_text_encoder=bool(report.text_encoders))
        net_args = {"conv_dim": str(opts.conv_dim), "conv_alpha": str(float(opts.conv_dim))} if opts.conv_dim else {}
        extracted = {"base": base.name, "tuned": tuned.name, "dim": opts.dim, "conv_dim": opts.conv_dim,
                     "clamp_quantile": opts.clamp_quantile, "min_diff": opts.min_diff,
                     "text_encoders": report.text_encoders, "fro_kept": round(report.fro_kept, 6)}
        metadata: dict[str, str] = {
            "ss_network_module": "networks.lora",
            "ss_network_dim": str(opts.dim),
            "ss_network_alpha": str(float(opts.dim)),
            "ss_network_args": json.dumps(net_args),
            "ss_v2": str(base.arch.value == "sd2"),
            "ss_base_model_version": base_model_version(base.arch.value, v_pred),
            "ss_output_name": out.stem,
            "ss_sd_model_name": base.name,
            "ss_training_comment": f"extracted with kiln lora extract from {tuned.name} - {base.name} (dim "
                                   f"{opts.dim}{f', conv_dim {opts.conv_dim}' if opts.conv_dim else ''})",
            "ss_kiln_extract": json.dumps(extracted),
        }
        if base.layout == "single" and base.path.is_file():
            from train.models.loading import legacy_model_hash

            legacy = legacy_model_hash(base.path)
            if legacy:
                metadata["ss_sd_model_hash"] = legacy
        metadata.update(modelspec_metadata(base.arch.value, network, metadata, v_pred))
        save_kohya(out, state, opts.dtype, metadata)
    report.seconds = time.perf_counter() - started
    return report
