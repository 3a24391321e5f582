"""`kiln lora merge`: LoRAs into a checkpoint, or LoRAs into one LoRA.

Into a checkpoint (``--into CKPT A.safetensors:0.8 B:0.5``): every layer a LoRA adapts becomes
``W + sum_i s_i * dW_i`` (each dW against the original weight, as A1111 computes them; float32 maths), every
other tensor is copied as it is. The output is a single-file checkpoint with the input's keys (a diffusers
folder is written in the original LDM / SGM layout), each tensor in its input dtype unless ``--dtype`` says
otherwise: what A1111/Forge and ComfyUI load, and diffusers' ``from_single_file``.

Into one LoRA (``A:1 B:0.5 --out C``): matching modules are concatenated along the rank (exact: the result's
weight change is ``sum_i s_i * dW_i``), or with ``--svd-rank N`` that sum is factorised again at rank N
(what kohya's svd_merge_lora does; LoHa / LoKr / full-diff inputs need it).

Before anything is written: every LoRA must be for the checkpoint's architecture, every module must have a
layer of the right shape in it, and every module type must be one the output can take.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from train.lora.adapters import AdapterModule, LoraFile, guess_arch, read_lora
from train.lora.base import BaseWeights, Location, open_base
from train.lora.delta import bias_delta, check_supported, delta, needs_base_weight
from train.lora.errors import LoraToolError
from train.lora.files import check_output, save_safetensors
from train.lora.keymap import KeyMap, Slot
from train.lora.options import MergeOptions, torch_device
from train.lora.progress import progress_bar
from train.lora.svd import factorize

if TYPE_CHECKING:
    import torch

_SHOW = 5


@dataclass
class MergeReport:
    out: Path
    modules: int = 0
    layers: int = 0
    notes: list[str] = field(default_factory=list)
    fro_kept: float | None = None
    max_rank: int | None = None
    seconds: float = 0.0


def _listing(items: list[str]) -> str:
    return ", ".join(items[:_SHOW]) + (f" and {len(items) - _SHOW} more" if len(items) > _SHOW else "")


def read_inputs(opts: MergeOptions) -> list[tuple[LoraFile, float]]:
    """Every LoRA, read and checked for keys kiln cannot read (a partial merge would be silent)."""
    loras = []
    for path, strength in opts.loras:
        lora = read_lora(path, allow_pickle=opts.allow_pickle, flag=str(path))
        if lora.unknown:
            raise LoraToolError(f"{path}: {len(lora.unknown)} keys kiln cannot read ({_listing(lora.unknown)}); "
                                "merging the rest would silently drop them, so nothing is written")
        loras.append((lora, strength))
    return loras


def _implied_shape_problem(module: AdapterModule, slot: Slot) -> str | None:
    """Why the module cannot sit on the layer, judged from its tensors' shapes (None when it fits)."""
    out, rest = slot.shape[0], slot.shape[1:]
    t = module.tensors
    if module.algo == "lora":
        up, down = t["lora_up.weight"], t["lora_down.weight"]
        inner = tuple(down.shape[1:]) if "lora_mid.weight" not in t else (down.shape[1], *t["lora_mid.weight"].shape[2:])
        if up.shape[0] != out or math.prod(inner) != math.prod(rest) or inner[0] != rest[0]:
            return f"module {up.shape[0]}x{list(inner)}, layer {list(slot.shape)}"
    elif module.algo == "loha":
        if t["hada_w1_a"].shape[0] != out:
            return f"module output {t['hada_w1_a'].shape[0]}, layer {out}"
    elif module.algo == "full":
        if tuple(t["diff"].shape) != slot.shape:
            return f"module {list(t['diff'].shape)}, layer {list(slot.shape)}"
    elif module.algo == "ia3":
        n = t["weight"].numel()
        if n not in (slot.shape[0], slot.shape[1]):
            return f"module {n} scales, layer {list(slot.shape)}"
    return None


@dataclass
class _Placed:
    slot: Slot
    location: Location
    module: AdapterModule
    strength: float


def check_arch(lora: LoraFile, arch: str, target: str) -> None:
    """A LoRA whose structure or metadata names another architecture than ``arch`` is an error."""
    guess = guess_arch(lora)
    if guess.arch is not None and guess.arch != arch:
        why = "; ".join(guess.evidence[:2])
        raise LoraToolError(f"{lora.path.name} is an {guess.arch.upper()} LoRA ({why}) but {target} is an "
                            f"{arch.upper()} model; use it with an {guess.arch.upper()} model")


def match_modules(lora: LoraFile, keymap: KeyMap, target: str) -> list[tuple[AdapterModule, Slot]]:
    """Each module of ``lora`` with its layer in the model ``keymap`` describes (``target`` names that model
    in messages). A LoRA for another architecture, a module without a layer or of the wrong shape, and a
    module type kiln cannot apply are errors, all found before anything is changed."""
    arch = keymap.arch.value
    check_arch(lora, arch, target)
    matched: list[tuple[AdapterModule, Slot]] = []
    homeless: list[str] = []
    misfits: list[str] = []
    for name, module in lora.modules.items():
        check_supported(module)
        slot = keymap.resolve(name)
        if slot is None:
            homeless.append(name)
            continue
        problem = _implied_shape_problem(module, slot)
        if problem:
            misfits.append(f"{name} ({problem})")
            continue
        matched.append((module, slot))
    if homeless:
        raise LoraToolError(f"{lora.path.name}: {len(homeless)} of its {len(lora.modules)} modules have no layer in "
                            f"the {arch.upper()} model {target} ({_listing(homeless)}); it was made for another model")
    if misfits:
        raise LoraToolError(f"{lora.path.name}: {len(misfits)} modules do not fit their layer in {target} "
                            f"({_listing(misfits)}); it was made for another model (SD1 vs SD2?)")
    return matched


def plan_checkpoint_merge(base: BaseWeights, loras: list[tuple[LoraFile, float]]) -> dict[str, list[_Placed]]:
    """Where each module goes (by checkpoint key); every problem found is raised together."""
    for lora, _ in loras:
        check_arch(lora, base.arch.value, f"--into {base.path.name}")
    keymap = base.keymap()
    plan: dict[str, list[_Placed]] = {}
    for lora, strength in loras:
        missing: list[str] = []
        for module, slot in match_modules(lora, keymap, f"--into {base.path.name}"):
            location = base.locate(slot)
            if location is None:
                missing.append(module.name)
                continue
            plan.setdefault(location.key, []).append(_Placed(slot, location, module, strength))
        if missing:
            raise LoraToolError(f"{lora.path.name}: {len(missing)} layers it adapts are missing from --into "
                                f"{base.path} ({_listing(missing)}); is the checkpoint complete?")
    return plan


def _dtype(name: str | None) -> torch.dtype | None:
    if name is None:
        return None
    from train.network.save import torch_dtype

    return torch_dtype(name)


def _unshared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Pickled state dicts may share storage between tensors; safetensors refuses that."""
    seen: set[int] = set()
    out = {}
    for key, tensor in tensors.items():
        pointer = tensor.untyped_storage().data_ptr() if tensor.numel() else -1
        if pointer in seen or not tensor.is_contiguous():
            tensor = tensor.contiguous().clone()
        elif pointer != -1:
            seen.add(pointer)
        out[key] = tensor
    return out


def merge_into_checkpoint(opts: MergeOptions, *, progress: bool | None = None,
                          say: Callable[[str], None] = print) -> MergeReport:
    import torch

    assert opts.into is not None
    started = time.perf_counter()
    out = check_output(opts.out, force=opts.force, inputs=(opts.into, *(p for p, _ in opts.loras)))
    device = torch_device(opts.device)
    cast = _dtype(opts.dtype)
    loras = read_inputs(opts)
    report = MergeReport(out)
    with open_base(opts.into, allow_pickle=opts.allow_pickle, config_dir=opts.config_dir, flag="--into") as base:
        plan = plan_checkpoint_merge(base, loras)
        for lora, _ in loras:
            if lora.embeddings:
                report.notes.append(f"{lora.path.name}: its {len(lora.embeddings)} bundled embedding tensors are not "
                                    "merged (use them as textual-inversion embeddings)")
        report.modules = sum(len(v) for v in plan.values())
        report.layers = len(plan)
        tensors: dict[str, torch.Tensor] = {}
        bias_updates: dict[str, list[tuple[float, torch.Tensor, tuple[int, int] | None]]] = {}
        with torch.no_grad(), progress_bar("merging", len(base.shapes), "tensors", progress) as advance:
            for key in base.tensor_keys():
                tensor = base.read(key)
                if key in plan:
                    merged = tensor.to(device=device, dtype=torch.float32)
                    original = merged.clone()
                    for placed in plan[key]:
                        rows = placed.location.rows
                        region = merged[rows[0] : rows[1]] if rows else merged
                        before = original[rows[0] : rows[1]] if rows else original
                        change = delta(placed.module, placed.slot.shape,
                                       before if needs_base_weight(placed.module) else None, device)
                        region += placed.strength * change.reshape(region.shape)
                        bias = bias_delta(placed.module)
                        if bias is not None and placed.location.bias_key:
                            bias_updates.setdefault(placed.location.bias_key, []).append(
                                (placed.strength, bias, placed.location.rows))
                    tensor = merged.to(dtype=tensor.dtype).cpu()
                tensors[key] = tensor
                advance(1)
            for key, updates in bias_updates.items():
                value = tensors[key].float().clone()
                for strength, change, rows in updates:
                    part = value[rows[0] : rows[1]] if rows else value
                    part += strength * change.reshape(part.shape)
                tensors[key] = value.to(tensors[key].dtype)
        if cast is not None:
            tensors = {k: v.to(cast) if v.is_floating_point() else v for k, v in tensors.items()}
        metadata = dict(base.metadata)
        if base.layout == "diffusers":
            tensors = _diffusers_to_single_file(base, tensors)
            report.notes.append("the diffusers folder was written as one single-file checkpoint (original layout)")
        metadata["kiln_merged_loras"] = json.dumps([{"file": lora.path.name, "strength": s} for lora, s in loras])
        metadata.setdefault("format", "pt")
        if base.pickled:
            tensors = _unshared(tensors)
        for note in report.notes:
            say(note)
        save_safetensors(out, tensors, metadata)
    report.seconds = time.perf_counter() - started
    return report


def _diffusers_to_single_file(base: BaseWeights, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers folder's merged tensors in the original single-file layout (``train.models.convert``)."""
    from train.models.convert import state_dicts_to_single_file

    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        component, _, inner = key.partition("/")
        parts.setdefault(component, {})[inner] = value
    unet_cfg = json.loads((base.path / "unet" / "config.json").read_text(encoding="utf-8"))
    vae_cfg = json.loads((base.path / "vae" / "config.json").read_text(encoding="utf-8"))
    encoders = [parts["text_encoder"]] + ([parts["text_encoder_2"]] if "text_encoder_2" in parts else [])
    lpb = unet_cfg.get("layers_per_block", 2)
    return state_dicts_to_single_file(base.arch, parts["unet"], parts["vae"], encoders,
                                      int(lpb[0] if isinstance(lpb, list) else lpb),
                                      len(vae_cfg["block_out_channels"]))


# ---------------------------------------------------------------------------------------------- LoRA + LoRA
def _common_arch(loras: list[tuple[LoraFile, float]]) -> str | None:
    known = {lora.path.name: guess_arch(lora).arch for lora, _ in loras}
    archs = {a for a in known.values() if a}
    if len(archs) > 1:
        listing = ", ".join(f"{name}: {arch or '?'}" for name, arch in known.items())
        raise LoraToolError(f"the LoRAs are for different base models ({listing}); only LoRAs of one family merge")
    return next(iter(archs)) if archs else None


def _concat(name: str, entries: list[tuple[AdapterModule, float, str]]) -> dict[str, torch.Tensor]:
    """Modules concatenated along the rank; up and down each take sqrt(|s * scale|) (kohya's merge_lora)."""
    import torch

    ups, downs = [], []
    for module, strength, source in entries:
        if module.algo != "lora" or module.dora or "lora_mid.weight" in module.tensors:
            raise LoraToolError(f"{source}: {name} is a {module.kind_label} module, which cannot be concatenated "
                                "with others; pass --svd-rank N to merge by re-factorising instead")
        factor = strength * module.scale
        root = math.sqrt(abs(factor))
        ups.append(module.tensors["lora_up.weight"].float() * (root * (1 if factor >= 0 else -1)))
        downs.append(module.tensors["lora_down.weight"].float() * root)
    shapes = {(tuple(u.shape[:1]) + tuple(u.shape[2:]), tuple(d.shape[1:])) for u, d in zip(ups, downs, strict=True)}
    if len(shapes) > 1:
        raise LoraToolError(f"{name}: the LoRAs disagree on this layer's shape ({sorted(shapes)}); they were made "
                            "for different base models")
    up, down = torch.cat(ups, dim=1), torch.cat(downs, dim=0)
    return {f"{name}.lora_up.weight": up, f"{name}.lora_down.weight": down,
            f"{name}.alpha": torch.tensor(float(down.shape[0]))}


def merge_loras(opts: MergeOptions, *, config_dir: Path | None = None, progress: bool | None = None,
                say: Callable[[str], None] = print) -> MergeReport:
    import torch

    from train.lora.resize import file_dtype, layer_shape_of, layer_shapes
    from train.network.config import NetworkConfig
    from train.network.save import base_model_version, modelspec_metadata, save_kohya

    started = time.perf_counter()
    out = check_output(opts.out, force=opts.force, inputs=tuple(p for p, _ in opts.loras))
    device = torch_device(opts.device)
    loras = read_inputs(opts)
    arch = _common_arch(loras)
    folder = config_dir or opts.config_dir
    if arch is None and folder is not None:
        from train.models.arch import ModelLoadError, detect_diffusers_folder

        try:
            arch = detect_diffusers_folder(Path(folder))[0].value
        except ModelLoadError as exc:
            raise LoraToolError(f"--config-dir: {exc}") from None
    by_name: dict[str, list[tuple[AdapterModule, float, str]]] = {}
    for lora, strength in loras:
        for name, module in lora.modules.items():
            check_supported(module)
            by_name.setdefault(name, []).append((module, strength, lora.path.name))
    report = MergeReport(out)
    state: dict[str, torch.Tensor] = {}
    kept_sq = total_sq = 0.0
    has_conv = False
    keymap = None
    if opts.svd_rank is not None and any(m.algo in ("loha", "lokr") for lora, _ in loras for m in lora.modules.values()):
        keymap = layer_shapes(loras[0][0], config_dir or opts.config_dir)
    with torch.no_grad(), progress_bar("merging", len(by_name), "modules", progress) as advance:
        for name, entries in by_name.items():
            advance(1)
            if opts.svd_rank is None:
                state.update(_concat(name, entries))
                has_conv = has_conv or state[f"{name}.lora_down.weight"].dim() == 4 and \
                    tuple(state[f"{name}.lora_down.weight"].shape[2:]) != (1, 1)
                continue
            total: torch.Tensor | None = None
            for module, strength, source in entries:
                if needs_base_weight(module):
                    raise LoraToolError(f"{source}: {name} is a {module.kind_label} module, whose weight change depends "
                                        "on the base weights; merge it into a checkpoint (--into) instead")
                shape = layer_shape_of(module, keymap) if module.algo != "lora" or "lora_mid.weight" in module.tensors \
                    else (module.tensors["lora_up.weight"].shape[0], *module.tensors["lora_down.weight"].shape[1:])
                if shape is None:
                    raise LoraToolError(f"{source}: {name}: the layer's shape is not in the file; pass --config-dir "
                                        "with the base model's diffusers config folder")
                change = strength * delta(module, tuple(shape), None, device)
                if total is not None and total.shape != change.shape:
                    raise LoraToolError(f"{name}: the LoRAs disagree on this layer's shape ({list(total.shape)} vs "
                                        f"{list(change.shape)}); they were made for different base models")
                total = change if total is None else total + change
            assert total is not None
            conv3x3 = total.dim() == 4 and tuple(total.shape[2:]) != (1, 1)
            has_conv = has_conv or conv3x3
            rank = (opts.svd_conv_rank or opts.svd_rank) if conv3x3 else opts.svd_rank
            factors = factorize(total, rank)
            kept = factors.fro_kept()
            norm_sq = float(factors.singular_values.double().pow(2).sum())
            total_sq += norm_sq
            kept_sq += norm_sq * kept**2
            state[f"{name}.lora_up.weight"] = factors.up.cpu()
            state[f"{name}.lora_down.weight"] = factors.down.cpu()
            state[f"{name}.alpha"] = torch.tensor(float(factors.rank))
    report.modules = len(by_name)
    ranks = [int(v.shape[0]) for k, v in state.items() if k.endswith(".lora_down.weight")]
    report.max_rank = max(ranks) if ranks else None
    if opts.svd_rank is not None:
        report.fro_kept = 1.0 if total_sq == 0 else math.sqrt(kept_sq / total_sq)
    dim = opts.svd_rank or report.max_rank or 1
    first_md = loras[0][0].metadata
    v_pred = first_md.get("ss_v_parameterization") == "True" or first_md.get("ss_base_model_version", "").endswith("_v")
    metadata: dict[str, str] = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(dim),
        "ss_network_alpha": str(float(dim)),
        "ss_output_name": out.stem,
        "ss_training_comment": "merged with kiln lora merge: " + " + ".join(
            f"{lora.path.name} x {s:g}" for lora, s in loras) + (f" (svd rank {opts.svd_rank})" if opts.svd_rank else
                                                                 " (ranks concatenated)"),
        "ss_kiln_merge": json.dumps({"inputs": [{"file": lora.path.name, "strength": s} for lora, s in loras],
                                     "svd_rank": opts.svd_rank, "svd_conv_rank": opts.svd_conv_rank}),
    }
    if has_conv:
        conv = opts.svd_conv_rank or dim
        metadata["ss_network_args"] = json.dumps({"conv_dim": str(conv), "conv_alpha": str(float(conv))})
    if arch is not None:
        metadata["ss_v2"] = str(arch == "sd2")
        metadata["ss_base_model_version"] = base_model_version(arch, v_pred)
        network = NetworkConfig(type="locon" if has_conv else "lora", dim=min(dim, 4096), alpha=float(dim))
        metadata.update(modelspec_metadata(arch, network, metadata, v_pred))
    else:
        report.notes.append("the base model family could not be told from the inputs; ss_base_model_version left out")
    for note in report.notes:
        say(note)
    save_kohya(out, state, opts.dtype or file_dtype(loras[0][0]), metadata)
    report.seconds = time.perf_counter() - started
    return report
