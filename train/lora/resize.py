"""`kiln lora resize`: a LoRA at a lower rank by SVD of each module's weight change (kohya's
``networks/resize_lora.py``), reporting per module and in total the share of the Frobenius norm kept.

``--rank N`` (3x3 convs: ``--conv-rank``, default N) or ``--dynamic sv_ratio|sv_fro|sv_cumulative`` with
``--dynamic-param`` (kohya's rules; ``--rank`` then caps the rank). alpha keeps each module's alpha/rank ratio
(kohya). The SVD of ``up @ down`` is computed exactly from the factors (QR of each, SVD of the small core), so
a large LoRA resizes in seconds on a CPU. A module never grows: a rank above its own keeps it as it is
(resizing to a LoRA's own rank is lossless). LoHa, LoKr, Tucker LoCon and full-diff modules are turned into
plain LoRA modules (their weight change factorised); IA³ and other modules without a rank are kept unchanged.
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
from train.lora.delta import check_supported, low_rank_delta
from train.lora.errors import LoraToolError
from train.lora.files import check_output
from train.lora.keymap import KeyMap
from train.lora.options import ResizeOptions, torch_device
from train.lora.progress import progress_bar
from train.lora.svd import MIN_SV, dynamic_rank, fro_kept, low_rank_svd, shape_factors, svd

if TYPE_CHECKING:
    import torch

_NO_RANK = {"ia3": "IA³", "norm": "norm", "glora": "GLoRA", "oft": "OFT"}


@dataclass
class ResizedModule:
    name: str
    old_rank: int | None
    new_rank: int
    fro_kept: float
    norm: float  # Frobenius norm of the module's weight change before resizing
    converted: str | None = None  # e.g. "LoHa -> LoRA"


@dataclass
class ResizeReport:
    out: Path
    modules: list[ResizedModule] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # modules copied unchanged
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def fro_kept(self) -> float:
        total = sum(m.norm**2 for m in self.modules)
        kept = sum((m.norm * m.fro_kept) ** 2 for m in self.modules)
        return 1.0 if total == 0 else math.sqrt(kept / total)


def file_dtype(lora: LoraFile) -> str:
    """'fp16' / 'bf16' / 'fp32': what most of the file's floating tensors are."""
    import torch

    names = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}
    counts: dict[str, int] = {}
    for module in lora.modules.values():
        for tensor in module.tensors.values():
            if tensor.is_floating_point() and tensor.dtype in names:
                counts[names[tensor.dtype]] = counts.get(names[tensor.dtype], 0) + 1
    return max(counts, key=lambda k: counts[k]) if counts else "fp16"


def layer_shapes(lora: LoraFile, config_dir: Path | None) -> KeyMap | None:
    """The key map of the model the LoRA is for (shipped config of its architecture, or ``config_dir``): the
    layer shapes LyCORIS factors do not carry."""
    from train.lora.base import keymap_from_config
    from train.models.arch import Arch
    from train.models.assemble import CONFIGS_DIR, shipped_config_name

    arch = guess_arch(lora).arch
    if config_dir is not None:
        from train.models.arch import ModelLoadError, detect_diffusers_folder

        if arch is None:
            try:
                arch = detect_diffusers_folder(Path(config_dir))[0].value
            except ModelLoadError as exc:
                raise LoraToolError(f"--config-dir: {exc}") from None
        return keymap_from_config(Path(config_dir).resolve(), Arch(arch))
    if arch is None:
        return None
    return keymap_from_config((CONFIGS_DIR / shipped_config_name(arch, True)).resolve(), Arch(arch))


def _target_rank(opts: ResizeOptions, module_kernel_3x3: bool, s: torch.Tensor) -> int:
    if opts.dynamic is not None:
        assert opts.dynamic_param is not None
        rank = dynamic_rank(s, opts.dynamic, opts.dynamic_param)
        cap = opts.conv_rank if module_kernel_3x3 and opts.conv_rank else opts.rank
        return min(rank, cap) if cap else rank
    assert opts.rank is not None
    return (opts.conv_rank or opts.rank) if module_kernel_3x3 else opts.rank


def layer_shape_of(module: AdapterModule, keymap: KeyMap | None) -> tuple[int, ...] | None:
    if keymap is not None:
        slot = keymap.resolve(module.name)
        if slot is not None:
            return slot.shape
    t = module.tensors
    if module.algo == "full":
        return tuple(t["diff"].shape)
    if module.algo == "lora" and "lora_mid.weight" in t:
        up, down, mid = t["lora_up.weight"], t["lora_down.weight"], t["lora_mid.weight"]
        return (up.shape[0], down.shape[1], mid.shape[2], mid.shape[3])
    if module.algo == "loha" and t["hada_w1_b"].dim() == 2 and "hada_t1" not in t:
        return (t["hada_w1_a"].shape[0], t["hada_w1_b"].shape[1])
    return None


def resize(opts: ResizeOptions, *, config_dir: Path | None = None, progress: bool | None = None,
           say: Callable[[str], None] = print) -> ResizeReport:
    """Resize ``opts.file`` into ``opts.out`` (written atomically)."""
    import torch

    from train.network.save import save_kohya

    started = time.perf_counter()
    out = check_output(opts.out, force=opts.force, inputs=(opts.file,))
    device = torch_device(opts.device)
    lora = read_lora(opts.file, allow_pickle=opts.allow_pickle, flag="FILE")
    if lora.unknown:
        raise LoraToolError(f"FILE {opts.file}: {len(lora.unknown)} keys kiln cannot read (first: "
                            f"{', '.join(lora.unknown[:3])}); nothing written")
    needs_shapes = any(m.algo in ("loha", "lokr") for m in lora.modules.values())
    keymap = layer_shapes(lora, config_dir) if needs_shapes else None
    report = ResizeReport(out)
    state: dict[str, torch.Tensor] = {}
    alphas: set[float] = set()
    with torch.no_grad(), progress_bar("resizing", len(lora.modules), "modules", progress) as advance:
        for name, module in lora.modules.items():
            advance(1)
            if module.algo in _NO_RANK:
                report.kept.append(name)
                for suffix, tensor in module.tensors.items():
                    state[f"{name}.{suffix}"] = tensor
                if module.alpha is not None:
                    state[f"{name}.alpha"] = torch.tensor(module.alpha)
                continue
            check_supported(module)
            plain = module.algo == "lora" and "lora_mid.weight" not in module.tensors
            if plain:
                up = module.tensors["lora_up.weight"].to(device=device, dtype=torch.float32)
                down = module.tensors["lora_down.weight"].to(device=device, dtype=torch.float32)
                shape = (up.shape[0], *down.shape[1:])
                u, s, vh = low_rank_svd(up.flatten(1), down.flatten(1))
                scale = module.scale
                converted = None
            else:
                found = layer_shape_of(module, keymap)
                if found is None:
                    raise LoraToolError(f"{name}: the layer's shape is not in the file ({module.kind_label}); pass "
                                        "--config-dir with the base model's diffusers config folder")
                shape = found
                change = low_rank_delta(module, shape, device)
                u, s, vh = svd(change.reshape(shape[0], -1))
                scale = 1.0
                converted = f"{module.kind_label.replace(' + DoRA', '')} -> LoRA"
            kernel_3x3 = len(shape) == 4 and tuple(shape[2:]) != (1, 1)
            old_rank = module.rank
            if float(s[0]) <= MIN_SV:
                rank = 1
            else:
                rank = _target_rank(opts, kernel_3x3, s.cpu())
            cap = old_rank if plain and old_rank else rank  # a low-rank module never grows
            rank = max(1, min(rank, int(s.numel()), cap))
            new_up, new_down = shape_factors(u[:, :rank] * s[:rank], vh[:rank], shape)
            alpha = scale * rank
            alphas.add(alpha)
            state[f"{name}.lora_up.weight"] = new_up.contiguous().cpu()
            state[f"{name}.lora_down.weight"] = new_down.contiguous().cpu()
            state[f"{name}.alpha"] = torch.tensor(alpha)
            if module.dora:
                state[f"{name}.dora_scale"] = module.tensors["dora_scale"]
            report.modules.append(ResizedModule(name, old_rank, rank, fro_kept(s.cpu(), rank),
                                                scale * float(s.double().norm()), converted))
    converted_count = sum(1 for m in report.modules if m.converted)
    if converted_count:
        report.notes.append(f"{converted_count} LyCORIS modules were turned into plain LoRA modules")
    if report.kept:
        kinds = sorted({_NO_RANK[lora.modules[n].algo] for n in report.kept})
        report.notes.append(f"{len(report.kept)} modules without a rank ({', '.join(kinds)}) were kept as they are")
    for note in report.notes:
        say(note)
    metadata = {k: v for k, v in lora.metadata.items() if not k.startswith("sshs_")}
    old = metadata.get("ss_training_comment", "")
    old_dims = sorted({m.old_rank for m in report.modules if m.old_rank})
    from_text = "/".join(str(d) for d in old_dims) or "?"
    if opts.dynamic is None:
        conv = f" (conv: {opts.conv_rank})" if opts.conv_rank and opts.conv_rank != opts.rank else ""
        metadata["ss_training_comment"] = f"dimension is resized from {from_text} to {opts.rank}{conv}; {old}"
        metadata["ss_network_dim"] = str(opts.rank)
        metadata["ss_network_alpha"] = str(alphas.pop()) if len(alphas) == 1 else "Dynamic"
    else:
        metadata["ss_training_comment"] = f"Dynamic resize with {opts.dynamic}: {opts.dynamic_param} from {from_text}; {old}"
        metadata["ss_network_dim"] = "Dynamic"
        metadata["ss_network_alpha"] = "Dynamic"
    if converted_count and not report.kept:
        metadata["ss_network_module"] = "networks.lora"
        args = _json_dict(metadata.get("ss_network_args"))
        for key in ("algo", "factor", "dora_wd", "use_tucker", "use_scalar"):
            args.pop(key, None)
        metadata["ss_network_args"] = json.dumps(args)
    metadata["ss_kiln_resize"] = json.dumps({
        "from": lora.path.name, "rank": opts.rank, "conv_rank": opts.conv_rank, "dynamic": opts.dynamic,
        "dynamic_param": opts.dynamic_param, "fro_kept": round(report.fro_kept, 6)})
    save_kohya(out, state, opts.dtype or file_dtype(lora), metadata)
    report.seconds = time.perf_counter() - started
    return report


def _json_dict(text: str | None) -> dict[str, object]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
