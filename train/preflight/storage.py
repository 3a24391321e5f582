"""Storage checks: the output folder can be written, and the disks have room for what the run will write
(the LoRA saves, the resumable state, the latent cache on disk), estimated before anything is written."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from train.preflight.core import Context, Finding, check, error

# LoRA parameters per unit of rank (sum of in + out features of every trained layer; for 3x3 convs
# in*3*3 + out), per part of each shipped full-size architecture; tests/test_preflight.py recounts them from
# the meta models.
PARAMS_PER_RANK: dict[str, dict[str, int]] = {
    "sd1": {"te": 165888, "unet": 423936, "unet_conv3x3": 544000, "unet_conv1x1": 82880},
    "sd2": {"te": 423936, "unet": 432128, "unet_conv3x3": 544000, "unet_conv1x1": 82880},
    "sdxl": {"te1": 165888, "te2": 737280, "unet": 2659840, "unet_conv3x3": 355840, "unet_conv1x1": 58560},
}
FACTORS = {"loha": 2.0}  # two low-rank pairs per layer; the other types are at most LoRA's size
SAVE_BYTES = {"fp16": 2, "bf16": 2, "float": 4}
LATENT_CHANNELS, LATENT_SCALE, LATENT_BYTES = 4, 8, 4  # SD latents: 4 channels at 1/8 size, saved as fp32
TEXT_WIDTH = {"sd1": (768, 0), "sd2": (1024, 0), "sdxl": (768 + 1280, 1280)}  # hidden width, pooled width
ENTRY_OVERHEAD = 4096  # a safetensors latent file's header plus the file system's block rounding
GB = 1024 ** 3


def network_params(arch: str, ctx: Context) -> int:
    """The LoRA's parameter count for this network config on the standard ``arch`` model."""
    table = PARAMS_PER_RANK.get(arch)
    if table is None:
        return 0
    net = ctx.cfg.network
    total = 0.0
    if net.train_unet:
        total += net.dim * table["unet"]
        if net.trains_convs:
            total += net.dim * table["unet_conv1x1"] + (net.effective_conv_dim or net.dim) * table["unet_conv3x3"]
    if ctx.cfg.trains_text_encoder:
        total += net.dim * sum(v for k, v in table.items() if k.startswith("te"))
    return int(total * FACTORS.get(net.type, 1.0))


def optimizer_state_bytes_per_param(name: str) -> int:
    """Bytes of optimizer state per trained parameter in state/ (estimate by family)."""
    from train.optim import family_of, spec_of

    if spec_of(name).cuda_only:
        return 2  # 8-bit moments
    if name in ("SGD", "Adafactor"):
        return 4
    return 16 if family_of(name) == "adaptive" else 8


@dataclass
class DiskNeed:
    """What a run will write where: bytes per folder, with the reasons."""

    by_folder: dict[Path, int] = field(default_factory=dict)
    parts: list[str] = field(default_factory=list)

    def add(self, folder: Path, size: int, what: str) -> None:
        if size <= 0:
            return
        self.by_folder[folder] = self.by_folder.get(folder, 0) + size
        self.parts.append(f"{what} {human(size)}")


def human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit in ("B", "KB") else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def existing_ancestor(path: Path) -> Path:
    path = Path(path).expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def estimate_disk(ctx: Context) -> DiskNeed | None:
    """Bytes the run writes (None before the dataset is scanned or when the architecture is unknown)."""
    if ctx.data is None or ctx.items is None or ctx.arch is None:
        return None
    cfg = ctx.cfg
    need = DiskNeed()
    steps = ctx.data.step_math(cfg.train, num_processes=ctx.num_processes)
    total, epochs = steps.total_steps or 0, steps.epochs or 0
    out = cfg.output
    full = cfg.network.type == "full"
    extra = 0
    if full:  # a full fine-tune saves the whole model; its state holds the trained weights (train/finetune)
        from train.finetune.memory import extra_state_bytes, weight_counts
        from train.models.arch import Arch

        counts = weight_counts(cfg, Arch(ctx.arch.removesuffix("-v")))
        params = counts.trained(cfg)
        lora = counts.total * SAVE_BYTES[out.save_precision]
        extra = extra_state_bytes(cfg.finetune, params)
    else:
        params = network_params(ctx.arch, ctx)
        lora = params * SAVE_BYTES[out.save_precision]
    what = "checkpoint" if full else "LoRA"
    saves = 1  # the final file
    for every, count in ((out.save_every_n_steps, max(total - 1, 0)), (out.save_every_n_epochs, max(epochs - 1, 0))):
        if every:
            kept = count // every
            saves += min(kept, out.save_last_n) if out.save_last_n else kept
    need.add(cfg.run_dir, saves * lora, f"{saves} {what} save{'s' * (saves != 1)} x {human(lora)} =")
    # state/: fp32 weights + optimizer moments; written beside the previous one before it is replaced
    state = params * (4 + optimizer_state_bytes_per_param(cfg.train.optimizer)) + extra
    copies = 2 if out.save_state else 1  # a stop or save-now writes one even without save_state
    need.add(cfg.run_dir, copies * state, "resumable state")
    if cfg.dataset.cache_latents_to_disk:
        subsets = ctx.data.run.subsets
        entries = 0
        for item in ctx.items:
            w, h = item.bucket
            per = LATENT_CHANNELS * (w // LATENT_SCALE) * (h // LATENT_SCALE) * LATENT_BYTES + ENTRY_OVERHEAD
            flips = item.subset < len(subsets) and subsets[item.subset].config.flip_aug  # a TOML's own flip_aug
            entries += per * (2 if flips else 1)
        folder = latent_folder(ctx)
        cached = _folder_bytes(folder) if folder is not None else 0
        need.add(folder or cfg.run_dir, max(entries - cached, 0), "latent cache")
    if cfg.dataset.cache_text_encoder_outputs_to_disk:
        folder = text_folder(ctx)
        cached = _folder_bytes(folder) if folder is not None else 0
        need.add(folder or cfg.run_dir, max(text_cache_bytes(ctx) - cached, 0), "text-encoder cache")
    return need


def text_cache_bytes(ctx: Context) -> int:
    """The on-disk text-encoder cache: one file per distinct caption, (max_token_length + 2) tokens of the
    architecture's hidden width (SDXL: both encoders, plus the pooled output) in the frozen encoders' dtype."""
    if ctx.items is None or ctx.arch is None:
        return 0
    width, pooled = TEXT_WIDTH[ctx.arch]
    mixed = ctx.cfg.train.mixed_precision
    half = mixed in ("fp16", "bf16") or (mixed == "auto" and ctx.device.cuda)
    tokens = ctx.cfg.dataset.max_token_length + 2
    per = (tokens * width + pooled) * (2 if half else 4) + ENTRY_OVERHEAD
    return per * len({item.caption for item in ctx.items})


def text_folder(ctx: Context) -> Path | None:
    if ctx.dataset is None:
        return None
    return Path(ctx.dataset.index.kiln_dir) / "text"


def latent_folder(ctx: Context) -> Path | None:
    if ctx.dataset is None:
        return None
    return Path(ctx.dataset.index.kiln_dir) / "latents"


def _folder_bytes(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += (Path(root) / name).stat().st_size
            except OSError:
                continue
    return total


@check("output folder writable")
def output_writable(ctx: Context) -> Iterator[Finding]:
    """output.dir (or the folder it will be made in) is a folder this user can create files in."""
    run_dir = ctx.cfg.run_dir
    base = existing_ancestor(run_dir)
    if not base.is_dir():
        yield error("output.dir", f"{run_dir} cannot be made: {base} is a file, not a folder",
                    fix="--set output.dir=<a folder for runs>")
        return
    try:
        fd, probe = tempfile.mkstemp(prefix=".kiln-write-test-", dir=base)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        yield error("output.dir", f"cannot write in {base}: {exc.strerror or exc}",
                    fix="--set output.dir=<a writable folder> (or fix the folder's permissions)")


@check("free disk space", stage="dataset")
def free_disk(ctx: Context) -> Iterator[Finding]:
    """Each disk has room for the LoRA saves (kept ones), the resumable state and the latent cache the run
    writes (estimated from the network size, save count and precision, latent shapes)."""
    import shutil

    need = estimate_disk(ctx)
    if need is None:
        return
    by_device: dict[int, tuple[Path, int]] = {}
    for folder, size in need.by_folder.items():
        base = existing_ancestor(folder)
        try:
            dev = base.stat().st_dev
        except OSError:
            continue
        where, total = by_device.get(dev, (base, 0))
        by_device[dev] = (where, total + size)
    for where, size in by_device.values():
        try:
            free = shutil.disk_usage(where).free
        except OSError:
            continue
        if free < size:
            yield error("output.dir" if where == existing_ancestor(ctx.cfg.run_dir) else "dataset.cache_latents_to_disk",
                        f"the run needs about {human(size)} on the disk of {where} ({'; '.join(need.parts)}) but "
                        f"only {human(free)} is free",
                        fix="free some space, save less (output.save_last_n, a larger save_every_n_steps, "
                            "output.save_precision = \"fp16\"), lower network.dim, or --set output.dir=<a folder on a bigger disk>")
