"""`kiln lora grid`: test saved LoRAs side by side — prompts x strengths x saved epochs x base checkpoints
(x block presets), one fixed seed, rendered with diffusers pipelines.

Every base is loaded offline (``train.models.load_base_model``) and sampled with the same pipeline the trainer's
previews use (``train.sample.build_pipeline``). A LoRA is applied at a strength by adding ``s * dW`` to the
layers' weights and restoring them after (``train.lora.apply``), as A1111/Forge do; strength 0 is always the
first column and is the base model's own image (the weights are not touched for it). Output: the contact
sheet (``--out``, PNG, rows and columns labelled), every single image in ``<out stem>_cells/``, and a JSON
index ``<out stem>.json`` naming each image's base, LoRA file, epoch, block preset, strength, prompt and seed.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from train.lora.adapters import LoraFile, read_lora
from train.lora.blocks import BlockWeights, parse_block_spec
from train.lora.errors import LoraToolError
from train.lora.files import check_output, require_input
from train.lora.options import GridOptions, torch_device
from train.lora.progress import progress_bar
from train.models.probe import SAFETENSORS_SUFFIXES
from train.prompts import Prompt, PromptError, read_prompt_file

if TYPE_CHECKING:
    from PIL import Image

_EPOCH = re.compile(r"-(\d{6})$")
_STEP = re.compile(r"-step(\d{8})$")


@dataclass
class LoraInput:
    path: Path
    label: str
    epoch: int | None
    step: int | None


@dataclass
class GridReport:
    sheet: Path
    index: Path
    cells_dir: Path
    images: int = 0
    rows: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    seconds: float = 0.0


def read_prompts(path: Path) -> list[Prompt]:
    """The prompts of a kohya sample-prompt file (``train.prompts``: one a line with ``--n --w --h --d --l --s``
    options, or kohya's TOML / JSON forms)."""
    path = require_input(path, "--prompts")
    try:
        return read_prompt_file(path)
    except PromptError as exc:
        raise LoraToolError(f"--prompts: {exc}") from None


def _epoch_of(path: Path) -> tuple[int | None, int | None]:
    """(epoch, step) from kiln/kohya file names (``name-000003``, ``name-step00000100``) or ``ss_epoch``."""
    m = _EPOCH.search(path.stem)
    if m:
        return int(m.group(1)), None
    m = _STEP.search(path.stem)
    if m:
        return None, int(m.group(1))
    from train.lora.files import read_header

    metadata = read_header(path, "--lora").metadata
    try:
        return (int(metadata["ss_epoch"]) if "ss_epoch" in metadata else None,
                int(metadata["ss_steps"]) if "ss_steps" in metadata else None)
    except ValueError:
        return None, None


def _is_finetune_checkpoint(path: Path) -> bool:
    """A full fine-tune's checkpoint in a run directory (not a LoRA: the grid tests its extracted LoRA)."""
    from train.lora.files import read_header

    try:
        return "kiln_finetune" in read_header(path, "--lora").metadata
    except LoraToolError:
        return False  # a broken file is reported when it is read as a LoRA


def lora_inputs(specs: list[Path]) -> list[LoraInput]:
    """The LoRA files to test: files as given, and for a run directory its saved files, oldest first (the
    final ``<name>.safetensors`` last; a full fine-tune's run: its extracted LoRA, not its checkpoints)."""
    found: list[LoraInput] = []
    for spec in specs:
        spec = require_input(spec, "--lora")
        if spec.is_dir():
            saved = sorted(p for p in spec.glob("*.safetensors") if not p.name.startswith("."))
            files = [p for p in saved if not _is_finetune_checkpoint(p)]
            if saved and not files:
                raise LoraToolError(f"--lora: {spec} holds full fine-tune checkpoints and no LoRA; set "
                                    "output.extract_dim to extract one when the run ends, or kiln lora extract one")
            if not files:
                raise LoraToolError(f"--lora: {spec} holds no saved .safetensors files (is it a run directory whose "
                                    "training saved nothing yet?)")
            entries = []
            for file in files:
                epoch, step = _epoch_of(file)
                entries.append((file, epoch, step))
            intermediate = [e for e in entries if _EPOCH.search(e[0].stem) or _STEP.search(e[0].stem)]
            final = [e for e in entries if e not in intermediate]
            intermediate.sort(key=lambda e: (e[1] if e[1] is not None else -1, e[2] if e[2] is not None else -1))
            for file, epoch, step in intermediate + final:
                label = (f"epoch {epoch}" if epoch is not None and _EPOCH.search(file.stem) else
                         f"step {step}" if step is not None and _STEP.search(file.stem) else
                         f"final ({file.stem})")
                found.append(LoraInput(file, label, epoch, step))
        else:
            if spec.suffix.lower() not in SAFETENSORS_SUFFIXES:
                raise LoraToolError(f"--lora: {spec.name} is not a .safetensors LoRA")
            epoch, step = _epoch_of(spec)
            found.append(LoraInput(spec, spec.stem, epoch, step))
    return found


def _strengths(values: list[float]) -> list[float]:
    out = [0.0]
    for v in values:
        if v not in out:
            out.append(v)
    return out


def _fmt(value: float) -> str:
    return f"{value:g}"


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _wrap(text: str, width_chars: int, lines: int) -> list[str]:
    import textwrap

    from curator.textsafe import printable

    wrapped = textwrap.wrap(printable(text), width=max(8, width_chars)) or [""]
    if len(wrapped) > lines:
        wrapped = wrapped[:lines]
        wrapped[-1] = wrapped[-1][: max(0, width_chars - 1)] + "\u2026"
    return wrapped


def contact_sheet(rows: list[tuple[list[str], list[Image.Image]]], columns: list[str], thumb: int,
                  title: str = "LoRA strength") -> Image.Image:
    """The labelled sheet: ``title`` and the column titles on top, then one row per entry (its label lines on
    the left, its images scaled to at most ``thumb`` pixels on their long side)."""
    from PIL import Image, ImageDraw

    first = rows[0][1][0]
    scale = min(1.0, thumb / max(first.size))
    cell_w, cell_h = max(1, round(first.size[0] * scale)), max(1, round(first.size[1] * scale))
    font_size = max(11, min(22, max(cell_w, 160) // 14))
    font = _font(font_size)
    line_h = font_size + 4
    pad = 6
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    col_w = max(cell_w, *(int(measure.textlength(c, font=font)) + pad for c in columns))
    label_w = max(180, min(420, cell_w * 3 // 2))
    label_chars = max(12, int(label_w / (font_size * 0.55)))
    wrapped = [[line for label in labels for line in _wrap(label, label_chars, 3)] for labels, _ in rows]
    row_h = max(cell_h, line_h * max((len(w) for w in wrapped), default=1))
    header_h = line_h * 2 + pad
    sheet = Image.new("RGB", (label_w + len(columns) * (col_w + pad) + pad, header_h + len(rows) * (row_h + pad) + pad),
                      "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((label_w + pad, 2), title, fill="black", font=font)
    for c, name in enumerate(columns):
        draw.text((label_w + pad + c * (col_w + pad), 2 + line_h), name, fill="black", font=font)
    for r, ((_, images), lines) in enumerate(zip(rows, wrapped, strict=True)):
        y = header_h + pad + r * (row_h + pad)
        for i, line in enumerate(lines):
            draw.text((pad, y + i * line_h), line, fill="black", font=font)
        for c, image in enumerate(images):
            x = label_w + pad + c * (col_w + pad)
            sheet.paste(image.convert("RGB").resize((cell_w, cell_h)), (x, y))
    return sheet


@contextlib.contextmanager
def _rendering(prompt: str) -> Iterator[None]:
    """A failure inside the pipeline (out of memory, a size the model cannot take) as a clear error."""
    try:
        yield
    except (RuntimeError, ValueError) as exc:
        from curator.textsafe import printable, shorten

        raise LoraToolError(f"rendering {shorten(printable(prompt), 60)!r} failed: {type(exc).__name__}: "
                            f"{shorten(str(exc), 300)}") from None


def _png(image: Image.Image) -> bytes:
    from io import BytesIO

    buf = BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:40] or "x"


def render_grid(opts: GridOptions, *, prediction: str = "auto", precision: str = "auto",
                progress: bool | None = None, say: Callable[[str], None] = print) -> GridReport:
    """Render the grid (see the module docstring); every check runs before the first image."""
    import torch

    from curator.fsutil import atomic_write_bytes
    from train.lora.apply import WeightPatcher
    from train.models import ModelConfig, ModelLoadError, load_base_model
    from train.sample import build_pipeline

    started = time.perf_counter()
    sheet_path = check_output(opts.out, force=opts.force, suffixes=(".png",))
    index_path = check_output(sheet_path.with_suffix(".json"), force=opts.force, suffixes=(".json",))
    cells_dir = sheet_path.with_name(sheet_path.stem + "_cells")
    if cells_dir.exists() and any(cells_dir.iterdir()) and not opts.force:
        raise LoraToolError(f"--out: {cells_dir} already holds images; pass --force to replace them")
    prompts = read_prompts(opts.prompts)
    inputs = lora_inputs(opts.loras)
    loras: list[tuple[LoraInput, LoraFile]] = []
    for item in inputs:
        lora = read_lora(item.path, flag="--lora")
        if lora.unknown:
            raise LoraToolError(f"--lora {item.path}: {len(lora.unknown)} keys kiln cannot read "
                                f"(first: {', '.join(lora.unknown[:3])})")
        loras.append((item, lora))
    try:
        presets: list[BlockWeights | None] = [parse_block_spec(s) for s in opts.blocks] or [None]
    except ValueError as exc:
        raise LoraToolError(str(exc)) from None
    strengths = _strengths(opts.strengths)
    device = torch_device(opts.device)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}.get(
        precision, torch.float16 if device.type == "cuda" else torch.float32)
    v_pred = {"auto": None, "epsilon": False, "v": True}[prediction]
    configs = []
    for base_path in opts.bases:
        try:
            configs.append(ModelConfig(path=base_path, config_dir=opts.config_dir, allow_pickle=opts.allow_pickle,
                                       v_prediction=v_pred))
        except ValueError as exc:
            raise LoraToolError(f"--base {base_path}: {exc}") from None
    from train.lora.base import open_base
    from train.lora.merge import check_arch, match_modules

    for config in configs:  # every base exists and every LoRA fits it, before the first (slow) load
        with open_base(config.path, allow_pickle=opts.allow_pickle, config_dir=opts.config_dir) as probe:
            for _item, lora in loras:
                check_arch(lora, probe.arch.value, f"--base {config.path.name}")
            keymap = probe.keymap()
            for _item, lora in loras:
                match_modules(lora, keymap, f"--base {config.path.name}")
    columns = ["0 (control)"] + [_fmt(s) for s in strengths[1:]]
    report = GridReport(sheet_path, index_path, cells_dir, columns=columns)
    cells: list[dict[str, Any]] = []
    sheet_rows: list[tuple[list[str], list[Image.Image]]] = []
    written: set[Path] = set()

    def keep(name: str, image: Image.Image) -> Image.Image:
        """Write one cell image (atomically) and return its thumbnail for the sheet."""
        path = cells_dir / name
        atomic_write_bytes(path, _png(image))
        written.add(path)
        small = image.convert("RGB")
        small.thumbnail((opts.thumb, opts.thumb))
        return small

    cells_dir.mkdir(parents=True, exist_ok=True)
    total = len(configs) * len(prompts) * (1 + len(loras) * len(presets) * (len(strengths) - 1))
    with progress_bar("rendering", total, "images", progress) as advance:
        for config in configs:
            try:
                base = load_base_model(config, dtype=dtype, device=device, allow_pickle=opts.allow_pickle)
            except ModelLoadError as exc:
                raise LoraToolError(f"--base: {exc}") from None
            pipe = build_pipeline(base, opts.sampler)
            patcher = WeightPatcher(base.arch.value, base.unet, base.text_encoders)
            base_name = base.model_hash.name

            def render(prompt: Prompt, pipe: Any = pipe) -> tuple[Image.Image, int]:
                seed = prompt.seed if prompt.seed is not None else opts.seed
                generator = torch.Generator(device="cpu").manual_seed(seed)
                with torch.no_grad(), _rendering(prompt.text):
                    image = pipe(prompt=prompt.text, negative_prompt=prompt.negative or opts.negative or None,
                                 width=prompt.width or opts.width, height=prompt.height or opts.height,
                                 num_inference_steps=prompt.steps or opts.steps,
                                 guidance_scale=prompt.cfg_scale if prompt.cfg_scale is not None else opts.cfg_scale,
                                 generator=generator).images[0]
                return image, seed

            controls: list[tuple[Image.Image, str]] = []
            for p_index, prompt in enumerate(prompts):
                image, seed = render(prompt)
                name = f"{_slug(base_name)}_p{p_index:02d}_control.png"
                controls.append((keep(name, image), name))
                cells.append({"base": str(config.path), "lora": None, "label": "control", "epoch": None,
                              "preset": None, "strength": 0.0, "prompt_index": p_index, "prompt": prompt.text,
                              "seed": seed, "image": f"{cells_dir.name}/{name}"})
                advance(1)
            for l_index, (item, lora) in enumerate(loras):
                for preset in presets:
                    row_images: dict[int, list[Image.Image]] = {p: [controls[p][0]] for p in range(len(prompts))}
                    for strength in strengths[1:]:
                        patcher.apply(lora, strength, preset, f"--base {config.path.name}")
                        try:
                            for p_index, prompt in enumerate(prompts):
                                image, seed = render(prompt)
                                tag = f"_{_slug(preset.label)}" if preset is not None else ""
                                name = (f"{_slug(base_name)}_l{l_index:02d}-{_slug(item.path.stem)}{tag}_"
                                        f"s{_fmt(strength)}_p{p_index:02d}.png")
                                row_images[p_index].append(keep(name, image))
                                cells.append({"base": str(config.path), "lora": str(item.path), "label": item.label,
                                              "epoch": item.epoch, "step": item.step,
                                              "preset": preset.label if preset else None, "strength": strength,
                                              "prompt_index": p_index, "prompt": prompt.text, "seed": seed,
                                              "image": f"{cells_dir.name}/{name}"})
                                advance(1)
                        finally:
                            patcher.restore()
                    for p_index, prompt in enumerate(prompts):
                        labels = [f"base: {base_name}", f"LoRA: {item.label}"]
                        if preset is not None:
                            labels.append(f"blocks: {preset.label}")
                        labels.append(f"prompt {p_index + 1}: {prompt.text}")
                        report.rows.append(" | ".join(labels))
                        sheet_rows.append((labels, row_images[p_index]))
            del pipe, patcher, base
    if opts.force:  # images of an earlier grid under the same name
        for old in cells_dir.glob("*.png"):
            if old not in written:
                old.unlink()
    sheet = contact_sheet(sheet_rows, columns, opts.thumb) if sheet_rows else None
    if sheet is not None:
        atomic_write_bytes(sheet_path, _png(sheet))
    index = {
        "sheet": sheet_path.name, "cells_dir": cells_dir.name, "columns": columns, "rows": report.rows,
        "bases": [str(c.path) for c in configs], "strengths": strengths,
        "loras": [{"file": str(i.path), "label": i.label, "epoch": i.epoch, "step": i.step} for i, _ in loras],
        "presets": [p.label if p else None for p in presets], "prompts": [p.text for p in prompts],
        "seed": opts.seed, "steps": opts.steps, "cfg_scale": opts.cfg_scale, "sampler": opts.sampler,
        "cells": cells,
    }
    atomic_write_bytes(index_path, json.dumps(index, indent=2, ensure_ascii=False).encode("utf-8"))
    report.images = len(written)
    report.seconds = time.perf_counter() - started
    return report
