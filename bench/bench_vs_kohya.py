"""kiln vs kohya sd-scripts, side by side in one run: the same checkpoint, the same photos, the same settings.

For each row (architecture x batch size x gradient checkpointing x optimizer) it runs kohya's
``train_network.py`` / ``sdxl_train_network.py`` and then ``kiln train``, each in its own process under
``bench/step_probe.py``, which measures both the same way: per-step wall times from PyTorch's global optimizer
step hook (after a CUDA synchronize), peak allocated / reserved CUDA memory over the whole process
(``torch.cuda.max_memory_*``, surviving kiln's peak reset) and after the warm-up steps, and the time from launch
to the end of the first step (interpreter start, imports, loading, latent and text caching). Neither program's
files are changed. Then it prints one table (s/it, images/s, peak memory, time to first step, kiln / kohya)
and writes it as JSON (``--json``).

Settings on both sides: LoRA rank 16 / alpha 16 on the attention and MLP linears (kohya's ``networks.lora``,
kiln's ``network.type = "lora"``), AdamW (AdamW8bit where bitsandbytes runs), lr 1e-4 constant, bf16 mixed
precision (fp32 on a CPU), SDPA attention, latents cached in memory (VAE in fp32: kohya ``--no_half_vae``, as
kiln always encodes), batch 1 / 4, gradient checkpointing off / on, no data-loader workers, gradient clipping
at 1.0, seed 42. SD1.5 trains the text encoder too; SDXL trains the UNet only with the text-encoder outputs
cached. ``--warmup`` steps are excluded, ``--steps`` are measured.

Models and data: full-size SD1.5 / SDXL single-file checkpoints with random weights, built from kiln's shipped
configs (fp16 on disk), and photos made from the real photographs of ``examples/dataset`` (crops at the exact
sizes of five buckets, 512 px for SD1.5 and 1024 px for SDXL, captions from the sample set; every bucket holds a
multiple of the largest batch, so every batch is full and images/s = batch / (s/it)).

Without CUDA (or with ``--models tiny``) kiln runs on the tiny test models at 64 px, and the kohya side is
skipped: kohya's model code has the full-size shapes written in (library/original_unet.py, model_util.py,
sdxl_original_unet.py), so it cannot load them. ``--models full`` on a CPU runs the real thing slowly (the
check that kohya's command lines are right).

    python bench/bench_vs_kohya.py --kohya bench/out/sd-scripts --kohya-python bench/out/kohya-venv/bin/python \\
        [--arch sd15,sdxl] [--batch 1,4] [--grad-ckpt off,on] [--optimizer AdamW,AdamW8bit] [--steps 30] \\
        [--warmup 5] [--lever channels_last ...] [--deadline SECONDS] [--json PATH]

docs/BENCH.md says how to run it on a GPU machine (bench/gpu_vs_kohya.sh).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from curator.textsafe import printable  # noqa: E402 - needs ROOT on sys.path when run as a script

PROBE = ROOT / "bench" / "step_probe.py"
SAMPLE = ROOT / "examples" / "dataset"
ARCHS = ("sd15", "sdxl")
KILN_ARCH = {"sd15": "sd1", "sdxl": "sdxl"}
OPTIMIZERS = ("AdamW", "AdamW8bit")
RANK = 16
LEARNING_RATE = 1e-4
SEED = 42
BUCKET_ASPECTS = (1.0, 0.75, 4 / 3, 2 / 3, 1.5)  # w / h of the five buckets the photos are cut to
KOHYA_CANNOT_LOAD_TINY = (
    "kohya cannot load the tiny test models: its model code has the full-size SD1.5/SDXL shapes written in "
    "(library/original_unet.py BLOCK_OUT_CHANNELS, model_util.py UNET_PARAMS_*, sdxl_original_unet.py), so only "
    "full-size checkpoints load (--models full)"
)

# Opt-in kiln settings measured as extra kiln rows (kiln / kohya against the same kohya row).
LEVERS: dict[str, tuple[str, ...]] = {
    "channels_last": ("train.channels_last=true",),
    "fused_adamw": ("train.optimizer_args={ fused = true }",),
    "compile": ("train.compile=default",),
    "compile_max_autotune": ("train.compile=max-autotune",),
    "cuda_graphs": ("train.compile=reduce-overhead",),
    "sdpa_flash": ("train.sdpa_backend=flash",),
    "sdpa_efficient": ("train.sdpa_backend=efficient",),
    "sdpa_cudnn": ("train.sdpa_backend=cudnn",),
    "pinned_latents": ("dataset.pin_memory=true",),
    "vae_batch_8": ("dataset.vae_batch_size=8",),
}

Tool = Literal["kohya", "kiln"]


# ----------------------------------------------------------------------------------------------- rows and results
@dataclass(frozen=True)
class Row:
    arch: str
    batch: int
    grad_ckpt: bool
    optimizer: str
    lever: str | None = None

    @property
    def id(self) -> str:
        base = f"{self.arch}-b{self.batch}-gc{int(self.grad_ckpt)}-{self.optimizer}"
        return f"{base}.{self.lever}" if self.lever else base

    @property
    def base(self) -> Row:
        return Row(self.arch, self.batch, self.grad_ckpt, self.optimizer)


@dataclass
class Side:
    """One program's figures for one row (None where not measured)."""

    status: Literal["ok", "failed", "skipped"]
    reason: str = ""
    s_it: float | None = None
    images_s: float | None = None
    peak_allocated_mib: float | None = None
    peak_reserved_mib: float | None = None
    train_peak_allocated_mib: float | None = None
    train_peak_reserved_mib: float | None = None
    first_step_s: float | None = None
    steps_recorded: int = 0
    wall_s: float | None = None
    device: str | None = None
    log: str | None = None


@dataclass
class Result:
    row: Row
    kohya: Side
    kiln: Side
    ratio: dict[str, float | None] = field(default_factory=dict)


RATIO_KEYS = ("s_it", "images_s", "peak_allocated_mib", "peak_reserved_mib", "train_peak_allocated_mib",
              "first_step_s")


def ratios(kiln: Side, kohya: Side) -> dict[str, float | None]:
    """kiln / kohya for each figure both sides have (below 1 is better for kiln, except images/s)."""
    out: dict[str, float | None] = {}
    for key in RATIO_KEYS:
        a, b = getattr(kiln, key), getattr(kohya, key)
        out[key] = round(a / b, 3) if isinstance(a, float) and isinstance(b, float) and b > 0 else None
    return out


def side_from_stats(stats: dict[str, object], *, batch: int, warmup: int, steps: int, wall_s: float,
                    log: Path) -> Side:
    """The figures of one probed run (bench/step_probe.py's JSON)."""
    raw = stats.get("step_t")
    stamps = [float(t) for t in raw] if isinstance(raw, list) else []
    launch = stats.get("launch_t")
    launch_t = float(launch) if isinstance(launch, int | float) else None
    side = Side(status="ok", steps_recorded=len(stamps), wall_s=round(wall_s, 1), log=str(log),
                device=str(stats.get("device") or ""))
    for key in ("peak_allocated_mib", "peak_reserved_mib", "train_peak_allocated_mib", "train_peak_reserved_mib"):
        value = stats.get(key)
        setattr(side, key, float(value) if isinstance(value, int | float) else None)
    if stamps and launch_t is not None:
        side.first_step_s = round(stamps[0] - launch_t, 2)
    if len(stamps) >= warmup + steps and warmup >= 1:
        s_it = (stamps[warmup + steps - 1] - stamps[warmup - 1]) / steps
        side.s_it = round(s_it, 4)
        side.images_s = round(batch / s_it, 3) if s_it > 0 else None
    exit_code = stats.get("exit")
    if exit_code not in (0, None) or side.s_it is None:
        side.status = "failed"
        error = stats.get("error")
        side.reason = (f"exit {exit_code}; {len(stamps)} of {warmup + steps} steps recorded"
                       + (f"; {str(error).strip().splitlines()[-1]}" if error else "")
                       + f"; log: {log}")
    return side


# ----------------------------------------------------------------------------------------------- models and data
@dataclass(frozen=True)
class Checkpoint:
    path: Path
    config_dir: Path | None  # kiln's model.config_dir (tiny models only)
    resolution: int
    min_bucket: int
    max_bucket: int


def build_checkpoint(arch: str, models: str, folder: Path, device: str) -> Checkpoint:
    """A single-file checkpoint: tiny (kiln's test models) or full size with random weights (fp16 on disk)."""
    folder.mkdir(parents=True, exist_ok=True)
    if models == "tiny":
        from train.models.tiny import save_tiny

        paths = save_tiny(KILN_ARCH[arch], folder / f"tiny-{arch}")
        return Checkpoint(paths.single_file, paths.config_dir, 64, 64, 128)
    import torch
    from safetensors.torch import save_file

    from train.models.arch import Arch
    from train.models.convert import pipeline_to_single_file
    from train.models.meta import materialize, meta_model

    path = folder / f"random-{arch}.safetensors"
    resolution = 512 if arch == "sd15" else 1024
    checkpoint = Checkpoint(path, None, resolution, 256 if arch == "sd15" else 512, 1024 if arch == "sd15" else 2048)
    if path.is_file():
        return checkpoint
    meta = meta_model(KILN_ARCH[arch], with_vae=True)
    assert meta.vae is not None, "meta_model(with_vae=True) has a VAE"
    unet = materialize(meta.unet, device=device, dtype=torch.float16, seed=1)
    vae = materialize(meta.vae, device=device, dtype=torch.float16, seed=2)
    encoders = [materialize(te, device=device, dtype=torch.float16, seed=3 + i)
                for i, te in enumerate(meta.text_encoders)]
    state = pipeline_to_single_file(Arch(KILN_ARCH[arch]), unet, vae, encoders)
    state = {k: v.to("cpu") for k, v in state.items()}
    del unet, vae, encoders
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt", "kiln_bench": "random full-size weights"})
    os.replace(tmp, path)
    return checkpoint


def bucket_targets(resolution: int, min_bucket: int, max_bucket: int) -> list[tuple[int, int]]:
    """The predefined buckets closest to BUCKET_ASPECTS (distinct), as kohya builds them."""
    from curator.buckets import BucketSettings, bucket_resolutions

    settings = BucketSettings(resolution=(resolution, resolution), min_bucket=min_bucket, max_bucket=max_bucket)
    buckets = bucket_resolutions(settings)
    chosen: list[tuple[int, int]] = []
    for aspect in BUCKET_ASPECTS:
        best = min(buckets, key=lambda b: abs(math.log(b[0] / b[1]) - math.log(aspect)))
        if best not in chosen:
            chosen.append(best)
    return chosen


def sample_photos() -> list[tuple[Path, str]]:
    """The sample set's photos with their captions (class tokens where an image has none)."""
    from curator.layout import IMAGE_EXTENSIONS

    photos: list[tuple[Path, str]] = []
    for sub in sorted(p for p in SAMPLE.iterdir() if p.is_dir()):
        tokens = sub.name.partition("_")[2]
        for image in sorted(sub.iterdir()):
            if image.suffix.lower() in IMAGE_EXTENSIONS:
                caption = image.with_suffix(".txt")
                text = caption.read_text(encoding="utf-8").strip() if caption.is_file() else tokens
                photos.append((image, text))
    return photos


def build_dataset(folder: Path, checkpoint: Checkpoint, count: int, batch_multiple: int) -> dict[str, int]:
    """``count`` photos (rounded up so each bucket holds a multiple of ``batch_multiple``) in kohya layout:
    crops of the sample photographs, each at the exact size of one of five buckets, with real captions.
    Returns the images per bucket, checked with kiln's (kohya's) bucket assignment."""
    from PIL import Image, ImageOps

    from curator.buckets import BucketSettings, assign_bucket

    targets = bucket_targets(checkpoint.resolution, checkpoint.min_bucket, checkpoint.max_bucket)
    per_bucket = max(1, math.ceil(count / len(targets) / batch_multiple)) * batch_multiple
    sub = folder / "1_kilnsample photo"
    if folder.exists():
        shutil.rmtree(folder)
    sub.mkdir(parents=True)
    photos = sample_photos()
    settings = BucketSettings(resolution=(checkpoint.resolution, checkpoint.resolution),
                              min_bucket=checkpoint.min_bucket, max_bucket=checkpoint.max_bucket)
    counts: dict[str, int] = {}
    n = 0
    for b, (width, height) in enumerate(targets):
        for i in range(per_bucket):
            source, caption = photos[(b * per_bucket + i) % len(photos)]
            with Image.open(source) as opened:
                image = ImageOps.exif_transpose(opened).convert("RGB")
            # a different crop window per copy of a photo: every file is distinct (kiln caches by content hash)
            sw, sh = image.size
            aspect = width / height
            cw, ch = (sw, round(sw / aspect)) if sw / sh < aspect else (round(sh * aspect), sh)
            scale = 1.0 - 0.25 * ((i // len(photos)) % 4) / 3
            cw, ch = max(8, round(cw * scale)), max(8, round(ch * scale))
            offset = (b * 7 + i * 13) % 11 / 10
            left, top = round((sw - cw) * offset), round((sh - ch) * (1 - offset))
            crop = image.crop((left, top, left + cw, top + ch)).resize((width, height), Image.Resampling.LANCZOS)
            if (b + i) % 2:
                crop = ImageOps.mirror(crop)
            name = f"{n:04d}_{source.stem}"
            crop.save(sub / f"{name}.jpg", quality=92)
            (sub / f"{name}.txt").write_text(caption, encoding="utf-8")
            bucket = assign_bucket(width, height, settings).bucket
            key = f"{bucket[0]}x{bucket[1]}"
            counts[key] = counts.get(key, 0) + 1
            n += 1
    uneven = {k: v for k, v in counts.items() if v % batch_multiple}
    if uneven:
        raise RuntimeError(f"bucket counts not a multiple of {batch_multiple}: {uneven}")
    return counts


def kohya_tokenizers(folder: Path) -> Path:
    """kohya's ``--tokenizer_cache_dir`` filled from kiln's shipped CLIP tokenizer files (it would download them)."""
    from train.models import assemble_config_dir, shipped_config_name

    config = assemble_config_dir(shipped_config_name("sdxl", False))
    for sub, name in (("tokenizer", "openai_clip-vit-large-patch14"),
                      ("tokenizer_2", "laion_CLIP-ViT-bigG-14-laion2B-39B-b160k")):
        dest = folder / name
        if not dest.is_dir():
            shutil.copytree(config / sub, dest)
    return folder


# ----------------------------------------------------------------------------------------------- command lines
def kohya_command(row: Row, ckpt: Checkpoint, data: Path, out: Path, tokenizers: Path, precision: str,
                  steps: int, workers: int) -> list[str]:
    """kohya's arguments for a row (train_network.py's / sdxl_train_network.py's own names)."""
    r = ckpt.resolution
    args = [
        "--pretrained_model_name_or_path", str(ckpt.path), "--train_data_dir", str(data),
        "--output_dir", str(out), "--output_name", row.id, "--save_model_as", "safetensors",
        "--resolution", f"{r},{r}", "--enable_bucket", "--min_bucket_reso", str(ckpt.min_bucket),
        "--max_bucket_reso", str(ckpt.max_bucket), "--bucket_reso_steps", "64", "--caption_extension", ".txt",
        "--network_module", "networks.lora", "--network_dim", str(RANK), "--network_alpha", str(RANK),
        "--optimizer_type", row.optimizer, "--learning_rate", str(LEARNING_RATE), "--lr_scheduler", "constant",
        "--train_batch_size", str(row.batch), "--max_train_steps", str(steps), "--max_grad_norm", "1.0",
        "--mixed_precision", precision, "--save_precision", "fp16", "--sdpa",
        "--cache_latents", "--vae_batch_size", "1", "--no_half_vae",
        "--max_data_loader_n_workers", str(workers), "--seed", str(SEED), "--tokenizer_cache_dir", str(tokenizers),
    ]
    if row.grad_ckpt:
        args.append("--gradient_checkpointing")
    if row.arch == "sdxl":
        args += ["--network_train_unet_only", "--cache_text_encoder_outputs"]
    return args


def kiln_overrides(row: Row, ckpt: Checkpoint, data: Path, out: Path, precision: str, steps: int,
                   workers: int) -> list[str]:
    """``kiln train --set`` values for the same settings."""
    r = ckpt.resolution
    sets = [
        f"model.path={ckpt.path}", f"dataset.path={data}", f"dataset.resolution={r}",
        f"dataset.min_bucket_reso={ckpt.min_bucket}", f"dataset.max_bucket_reso={ckpt.max_bucket}",
        "dataset.bucket_reso_steps=64", "dataset.caption_extension=.txt", "dataset.cache_latents=true",
        "dataset.vae_batch_size=1", f"dataset.num_workers={workers}",
        "network.type=lora", f"network.dim={RANK}", f"network.alpha={RANK}",
        f"train.optimizer={row.optimizer}", f"train.learning_rate={LEARNING_RATE}", "train.lr_scheduler=constant",
        f"train.batch_size={row.batch}", f"train.max_steps={steps}", "train.max_grad_norm=1.0",
        f"train.mixed_precision={precision}", "train.attention=sdpa",
        f"train.gradient_checkpointing={'true' if row.grad_ckpt else 'false'}", f"train.seed={SEED}",
        f"output.dir={out}", f"output.name={row.id}", "output.save_precision=fp16", "sample.enabled=false",
    ]
    if ckpt.config_dir is not None:
        sets.append(f"model.config_dir={ckpt.config_dir}")
    if row.arch == "sdxl":
        sets += ["network.train_text_encoder=false", "dataset.cache_text_encoder_outputs=true"]
    else:
        sets.append("network.train_text_encoder=true")
    if row.lever:
        sets += LEVERS[row.lever]
    return sets


# ----------------------------------------------------------------------------------------------- environments
@dataclass
class KohyaEnv:
    ready: bool
    reason: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    bnb_problem: str | None = None


KOHYA_CHECK = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
out = {"versions": {}}
import importlib.metadata as md
for name in ("torch", "diffusers", "transformers", "accelerate", "huggingface-hub", "tokenizers", "safetensors"):
    try:
        out["versions"][name] = md.version(name)
    except Exception:
        out["versions"][name] = "missing"
try:
    import torch, library.train_util, networks.lora, train_network, sdxl_train_network
    out["ok"] = True
except BaseException as exc:
    out["ok"] = False
    out["error"] = f"{type(exc).__name__}: {exc}"
try:
    import torch, bitsandbytes
    out["bnb"] = None if torch.cuda.is_available() else "bitsandbytes runs on CUDA GPUs only and this machine has none"
except BaseException as exc:
    out["bnb"] = f"bitsandbytes does not import in kohya's environment ({type(exc).__name__}: {exc})"
print("KOHYA_CHECK " + json.dumps(out))
"""


def check_kohya(kohya: Path | None, python: str, pythonpath: str | None) -> KohyaEnv:
    """Can kohya's scripts run here (source present, its environment imports them)? And bitsandbytes?"""
    if kohya is None:
        return KohyaEnv(False, "kohya sd-scripts' source not given (--kohya DIR: a fetched copy of kohya-ss/sd-scripts)")
    if not (kohya / "train_network.py").is_file() or not (kohya / "sdxl_train_network.py").is_file():
        return KohyaEnv(False, f"kohya sd-scripts' source missing: {kohya} has no train_network.py / "
                               "sdxl_train_network.py")
    if shutil.which(python) is None and not Path(python).is_file():
        return KohyaEnv(False, f"kohya's python not found: {python} (--kohya-python; docs/BENCH.md builds a venv)")
    proc = subprocess.run([python, "-c", KOHYA_CHECK, str(kohya)], cwd=kohya, env=child_env(pythonpath),
                          capture_output=True, text=True, timeout=600, check=False)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("KOHYA_CHECK ")), None)
    if line is None:
        tail = printable((proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"])
        return KohyaEnv(False, f"kohya's python does not start: {tail}")
    info = json.loads(line.removeprefix("KOHYA_CHECK "))
    versions = {str(k): str(v) for k, v in info.get("versions", {}).items()}
    if not info.get("ok"):
        return KohyaEnv(False, f"kohya's scripts do not import in its environment: {printable(info.get('error'))}",
                        versions)
    return KohyaEnv(True, versions=versions, bnb_problem=info.get("bnb"))


CPU_THREADS: str | None = None
"""OMP_NUM_THREADS for the children on a CPU (set by main): on a small shared machine 1 thread runs the tiny
models several times faster than OpenMP threads fighting over the cores."""


def child_env(pythonpath: str | None) -> dict[str, str]:
    """A child's environment: offline hubs, unbuffered output, and its own PYTHONPATH (never the other side's)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if CPU_THREADS:
        env["OMP_NUM_THREADS"] = CPU_THREADS
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONUNBUFFERED="1",
               TOKENIZERS_PARALLELISM="false", DISABLE_TELEMETRY="1", HF_HUB_DISABLE_TELEMETRY="1")
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return env


def kiln_pythonpath() -> str:
    """kiln's side: this repository first, then whatever PYTHONPATH the bench itself runs with."""
    return os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)


def kiln_problem(optimizer: str) -> str | None:
    from train.optim import optimizer_problem

    return optimizer_problem(optimizer)


# ----------------------------------------------------------------------------------------------- running
def note_skip(skipped: list[dict[str, str]], row: str, side: str, why: str) -> None:
    """Record what was not measured and why, once: a reason already given for every row ("*") is not repeated."""
    if any(s["side"] == side and s["why"] == why and s["row"] in ("*", row) for s in skipped):
        return
    skipped.append({"row": row, "side": side, "why": why})


def run_probed(tool: Tool, row: Row, command: list[str], *, cwd: Path, env: dict[str, str], work: Path,
               warmup: int, steps: int, timeout: float) -> Side:
    """Run one side under the probe; its output goes to a log file."""
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{row.id}-{tool}.log"
    stats_path = logs / f"{row.id}-{tool}.stats.json"
    stats_path.unlink(missing_ok=True)
    env = dict(env, BENCH_LAUNCH_T=repr(time.time()))
    started = time.perf_counter()
    with log.open("w", encoding="utf-8") as out:
        out.write("$ " + " ".join(command) + "\n\n")
        out.flush()
        try:
            subprocess.run(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout,
                           check=False)
        except subprocess.TimeoutExpired:
            return Side(status="failed", reason=f"timed out after {timeout:.0f} s; log: {log}", log=str(log),
                        wall_s=round(time.perf_counter() - started, 1))
    wall = time.perf_counter() - started
    if not stats_path.is_file():
        return Side(status="failed", reason=f"no probe record (crashed before exit?); log: {log}", log=str(log),
                    wall_s=round(wall, 1))
    stats = json.loads(stats_path.read_text(encoding="utf-8"))
    return side_from_stats(stats, batch=row.batch, warmup=warmup, steps=steps, wall_s=wall, log=log)


@dataclass
class Plan:
    rows: list[Row]
    models: str
    precision: str
    steps: int
    warmup: int
    workers: int
    timeout: float
    deadline: float | None


def run_rows(plan: Plan, *, kohya: Path | None, kohya_env: KohyaEnv, kohya_python: str,
             kohya_pythonpath: str | None, work: Path, checkpoints: dict[str, Checkpoint],
             datasets: dict[str, Path], started: float, skipped: list[dict[str, str]]) -> list[Result]:
    results: list[Result] = []
    kohya_results: dict[Row, Side] = {}
    # seconds one side of a row takes, for --deadline: first guesses for an H100/H200, then the last run's
    estimate: dict[tuple[str, Tool], float] = {("sd15", "kohya"): 45.0, ("sd15", "kiln"): 45.0,
                                               ("sdxl", "kohya"): 150.0, ("sdxl", "kiln"): 150.0}
    tokenizers = kohya_tokenizers(work / "kohya-tokenizers") if kohya_env.ready else work
    total = plan.warmup + plan.steps
    for row in plan.rows:
        ckpt, data = checkpoints[row.arch], datasets[row.arch]
        out = work / "runs"
        # ---- the kohya side (once per base row; lever rows reuse it)
        kohya_side: Side
        run_kohya = row.lever is None and kohya_env.ready and plan.models == "full"
        if row.lever is not None:
            kohya_side = kohya_results.get(row.base, Side(status="skipped", reason="no kohya row for these settings"))
        elif not kohya_env.ready:
            kohya_side = Side(status="skipped", reason=kohya_env.reason)
        elif plan.models != "full":
            kohya_side = Side(status="skipped", reason=KOHYA_CANNOT_LOAD_TINY)
        elif row.optimizer != "AdamW" and kohya_env.bnb_problem:
            kohya_side = Side(status="skipped", reason=kohya_env.bnb_problem)
            run_kohya = False
        kiln_reason = kiln_problem(row.optimizer)
        need = (estimate.get((row.arch, "kohya"), 0.0) if run_kohya else 0.0) + estimate.get((row.arch, "kiln"), 0.0)
        left = plan.deadline - (time.perf_counter() - started) if plan.deadline else None
        if left is not None and (left <= 0 or need > left):
            reason = f"time budget: {max(left, 0):.0f} s left of --deadline {plan.deadline:.0f}, the row needs ~{need:.0f} s"
            results.append(Result(row, Side("skipped", reason), Side("skipped", reason)))
            note_skip(skipped, row.id, "both", reason)
            print(f"-- {row.id}: skipped ({reason})", flush=True)
            continue
        if run_kohya:
            assert kohya is not None, "a ready kohya environment has a source folder"
            script = kohya / ("sdxl_train_network.py" if row.arch == "sdxl" else "train_network.py")
            stats = work / "logs" / f"{row.id}-kohya.stats.json"
            command = [kohya_python, str(PROBE), "--stats", str(stats), "--warmup", str(plan.warmup),
                       "--script", str(script), "--",
                       *kohya_command(row, ckpt, data, out / "kohya", tokenizers, plan.precision, total, plan.workers)]
            print(f"-- {row.id}: kohya ...", flush=True)
            kohya_side = run_probed("kohya", row, command, cwd=kohya, env=child_env(kohya_pythonpath), work=work,
                                    warmup=plan.warmup, steps=plan.steps, timeout=plan.timeout)
            if kohya_side.wall_s:
                estimate[(row.arch, "kohya")] = kohya_side.wall_s
        if row.lever is None:
            kohya_results[row] = kohya_side
        if kohya_side.status == "skipped" and row.lever is None:
            note_skip(skipped, row.id, "kohya", kohya_side.reason)
        # ---- the kiln side
        if kiln_reason:
            kiln_side = Side(status="skipped", reason=kiln_reason)
            note_skip(skipped, row.id, "kiln", kiln_reason)
        else:
            shutil.rmtree(data / ".kiln", ignore_errors=True)  # a cold start: no index from an earlier run
            command = [sys.executable, str(PROBE), "--stats", str(work / "logs" / f"{row.id}-kiln.stats.json"),
                       "--warmup", str(plan.warmup), "--module", "tui.cli", "--", "train", "--quiet", "--force",
                       *[a for s in kiln_overrides(row, ckpt, data, out / "kiln", plan.precision, total, plan.workers)
                         for a in ("--set", s)]]
            print(f"-- {row.id}: kiln ...", flush=True)
            kiln_side = run_probed("kiln", row, command, cwd=ROOT, env=child_env(kiln_pythonpath()), work=work,
                                   warmup=plan.warmup, steps=plan.steps, timeout=plan.timeout)
            if kiln_side.wall_s:
                estimate[(row.arch, "kiln")] = kiln_side.wall_s
        result = Result(row, kohya_side, kiln_side, ratios(kiln_side, kohya_side))
        results.append(result)
        for side_name, side in (("kohya", kohya_side), ("kiln", kiln_side)):
            if side.status == "failed" and not (side_name == "kohya" and row.lever):  # a lever reuses kohya's row
                print(f"   {side_name} FAILED: {printable(side.reason)}", flush=True)
                note_skip(skipped, row.id, side_name, f"failed: {side.reason}")
    return results


# ----------------------------------------------------------------------------------------------- the table
def _num(value: float | None, fmt: str, scale: float = 1.0) -> str:
    width = int(fmt.split(".")[0])
    return "-".rjust(width) if value is None else format(value / scale, fmt)


def format_table(results: Sequence[Result]) -> str:
    head = (f"{'row':36} {'tool':5} {'s/it':>8} {'img/s':>7} {'alloc GiB':>9} {'resv GiB':>8} "
            f"{'train GiB':>9} {'1st step s':>10}  status")
    lines = [head, "-" * len(head)]
    for r in results:
        for name, side in (("kohya", r.kohya), ("kiln", r.kiln)):
            status = side.status if side.status == "ok" else f"{side.status}: {printable(side.reason)[:90]}"
            lines.append(f"{r.row.id if name == 'kohya' else '':36} {name:5} {_num(side.s_it, '8.3f')} "
                         f"{_num(side.images_s, '7.2f')} {_num(side.peak_allocated_mib, '9.2f', 1024)} "
                         f"{_num(side.peak_reserved_mib, '8.2f', 1024)} "
                         f"{_num(side.train_peak_allocated_mib, '9.2f', 1024)} {_num(side.first_step_s, '10.1f')}  "
                         f"{status}")
        q = r.ratio
        lines.append(f"{'':36} {'÷':5} {_num(q.get('s_it'), '8.2f')} {_num(q.get('images_s'), '7.2f')} "
                     f"{_num(q.get('peak_allocated_mib'), '9.2f')} {_num(q.get('peak_reserved_mib'), '8.2f')} "
                     f"{_num(q.get('train_peak_allocated_mib'), '9.2f')} {_num(q.get('first_step_s'), '10.2f')}  "
                     "kiln / kohya")
    return "\n".join(lines)


def to_json(results: Sequence[Result], meta: dict[str, object], skipped: list[dict[str, str]]) -> dict[str, object]:
    rows = []
    for r in results:
        rows.append({"id": r.row.id, **asdict(r.row), "kohya": asdict(r.kohya), "kiln": asdict(r.kiln),
                     "kiln_over_kohya": r.ratio})
    return {"meta": meta, "rows": rows, "skipped": skipped}


# ----------------------------------------------------------------------------------------------- main
def _choices(text: str, allowed: Sequence[str], name: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        raise SystemExit(f"--{name}: {','.join(bad) or text!r} is not allowed; use a comma list of {', '.join(allowed)}")
    return values


def plan_rows(archs: list[str], batches: list[int], gcs: list[bool], optimizers: list[str],
              levers: list[str], lever_base: list[str] | None) -> list[Row]:
    """Rows in the order given (arch, then optimizer, batch, checkpointing), then the lever rows: each lever on
    the first row of each architecture, or on the rows named by ``lever_base``."""
    rows = [Row(a, b, g, o) for a in archs for o in optimizers for b in batches for g in gcs]
    bases = ([r for r in rows if r.id in lever_base] if lever_base
             else [next(r for r in rows if r.arch == a) for a in archs])
    return rows + [Row(b.arch, b.batch, b.grad_ckpt, b.optimizer, lever) for lever in levers for b in bases]


def parse_row(text: str) -> Row:
    """A row from its id, ``<arch>-b<batch>-gc<0|1>-<optimizer>[.<lever>]`` (as the table names it)."""
    base, _, lever = text.strip().partition(".")
    parts = base.split("-")
    ok = (len(parts) == 4 and parts[0] in ARCHS and parts[1][:1] == "b" and parts[1][1:].isdigit()
          and int(parts[1][1:]) >= 1 and parts[2] in ("gc0", "gc1") and parts[3] in OPTIMIZERS
          and (not lever or lever in LEVERS))
    if not ok:
        raise SystemExit(f"--rows: {text!r} is not a row id; write e.g. sd15-b4-gc0-AdamW or sdxl-b1-gc1-AdamW8bit, "
                         f"optionally .LEVER ({', '.join(sorted(LEVERS))})")
    return Row(parts[0], int(parts[1][1:]), parts[2] == "gc1", parts[3], lever or None)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kohya", type=Path, help="a fetched kohya-ss/sd-scripts work tree (kept out of the repo)")
    parser.add_argument("--kohya-python", default="python3", help="python of kohya's environment (default python3)")
    parser.add_argument("--kohya-pythonpath", help="PYTHONPATH for kohya's side (e.g. its wheels' --target folder)")
    parser.add_argument("--models", choices=["auto", "tiny", "full"], default="auto",
                        help="auto: full size on CUDA, tiny test models on a CPU")
    parser.add_argument("--arch", default="sd15,sdxl")
    parser.add_argument("--batch", default="1,4")
    parser.add_argument("--grad-ckpt", default="off,on")
    parser.add_argument("--optimizer", default="AdamW,AdamW8bit")
    parser.add_argument("--lever", action="append", default=[], choices=sorted(LEVERS),
                        help="also run kiln with this opt-in setting (extra rows; repeatable)")
    parser.add_argument("--lever-base", help="comma list of row ids the levers run on (default: each arch's first)")
    parser.add_argument("--rows", help="comma list of row ids to run, in this order (instead of --arch/--batch/"
                        "--grad-ckpt/--optimizer/--lever), e.g. sd15-b4-gc0-AdamW,sdxl-b1-gc1-AdamW.channels_last")
    parser.add_argument("--steps", type=int, help="measured steps (default 30; tiny models 3)")
    parser.add_argument("--warmup", type=int, help="steps before measuring (default 5; tiny models 2)")
    parser.add_argument("--images", type=int, help="photos in each dataset (default 100; tiny models 8)")
    parser.add_argument("--workers", type=int, default=0, help="data loader workers on both sides")
    parser.add_argument("--cpu-threads", type=int, default=1, help="OMP_NUM_THREADS of both sides on a CPU")
    parser.add_argument("--timeout", type=float, default=900, help="seconds one side of one row may take")
    parser.add_argument("--deadline", type=float, help="skip rows that would end past this many seconds")
    parser.add_argument("--work", type=Path, help="work folder (default: bench/out/vs-kohya)")
    parser.add_argument("--json", type=Path, help="write the table as JSON here")
    args = parser.parse_args(argv)

    import torch

    started = time.perf_counter()
    cuda = torch.cuda.is_available()
    models = args.models if args.models != "auto" else ("full" if cuda else "tiny")
    tiny = models == "tiny"
    archs = _choices(args.arch, ARCHS, "arch")
    batches = [int(b) for b in _choices(args.batch, [str(i) for i in range(1, 65)], "batch")]
    gcs = [g == "on" for g in _choices(args.grad_ckpt, ("off", "on"), "grad-ckpt")]
    optimizers = _choices(args.optimizer, OPTIMIZERS, "optimizer")
    steps = args.steps or (3 if tiny else 30)
    warmup = args.warmup if args.warmup is not None else (2 if tiny else 5)
    if warmup < 1 or steps < 1:
        raise SystemExit("--warmup and --steps must be >= 1 (the first measured interval starts after a warm-up step)")
    images = args.images or (8 if tiny else 100)
    work = (args.work or ROOT / "bench" / "out" / "vs-kohya").resolve()
    work.mkdir(parents=True, exist_ok=True)
    precision = "bf16" if cuda else "no"
    global CPU_THREADS
    CPU_THREADS = None if cuda else str(args.cpu_threads)
    skipped: list[dict[str, str]] = []
    if args.rows:
        rows = list(dict.fromkeys(parse_row(r) for r in args.rows.split(",") if r.strip()))
        archs = [a for a in ARCHS if any(r.arch == a for r in rows)]
        batches = sorted({r.batch for r in rows})
        optimizers = [o for o in OPTIMIZERS if any(r.optimizer == o for r in rows)]
    else:
        rows = plan_rows(archs, batches, gcs, optimizers, args.lever,
                         [s.strip() for s in args.lever_base.split(",")] if args.lever_base else None)

    device = torch.cuda.get_device_name(0) if cuda else f"CPU ({platform.processor() or platform.machine()})"
    print(f"kiln vs kohya sd-scripts on {device}: {models} models, {precision} mixed precision, "
          f"{warmup} warm-up + {steps} measured steps, {len(rows)} rows", flush=True)
    if not cuda:
        print("NO CUDA: figures are CPU figures (not GPU speed); memory columns stay empty", flush=True)

    kohya_dir = args.kohya.resolve() if args.kohya else None
    if os.sep in args.kohya_python:  # a path: absolute (not resolved: a venv's python is a link into the venv)
        args.kohya_python = os.path.abspath(args.kohya_python)
    kohya_env = check_kohya(kohya_dir, args.kohya_python, args.kohya_pythonpath)
    if not kohya_env.ready:
        print(f"kohya side skipped: {kohya_env.reason}", flush=True)
        note_skip(skipped, "*", "kohya", kohya_env.reason)
    elif tiny:
        note_skip(skipped, "*", "kohya", KOHYA_CANNOT_LOAD_TINY)
    if kohya_env.ready and kohya_env.bnb_problem and "AdamW8bit" in optimizers:
        note_skip(skipped, "*-AdamW8bit", "kohya", kohya_env.bnb_problem)

    checkpoints: dict[str, Checkpoint] = {}
    datasets: dict[str, Path] = {}
    bucket_counts: dict[str, dict[str, int]] = {}
    build_device = "cpu"  # this process never holds GPU memory while the two programs are measured
    for arch in archs:
        t0 = time.perf_counter()
        checkpoints[arch] = build_checkpoint(arch, models, work / "models", build_device)
        datasets[arch] = work / f"data-{arch}"
        bucket_counts[arch] = build_dataset(datasets[arch], checkpoints[arch], images, max(batches))
        print(f"{arch}: checkpoint {checkpoints[arch].path.name}, {sum(bucket_counts[arch].values())} photos in "
              f"buckets {bucket_counts[arch]} ({time.perf_counter() - t0:.0f} s)", flush=True)

    plan = Plan(rows=rows, models=models, precision=precision, steps=steps, warmup=warmup, workers=args.workers,
                timeout=args.timeout, deadline=args.deadline)
    results = run_rows(plan, kohya=kohya_dir, kohya_env=kohya_env, kohya_python=args.kohya_python,
                       kohya_pythonpath=args.kohya_pythonpath, work=work, checkpoints=checkpoints,
                       datasets=datasets, started=started, skipped=skipped)

    print()
    print(format_table(results))
    print()
    if skipped:
        print("Skipped or failed:")
        for item in skipped:
            print(f"  {item['row']} [{item['side']}]: {printable(item['why'])}")
    import diffusers
    import transformers

    commit = kohya_dir / ".commit" if kohya_dir else None
    meta: dict[str, object] = {
        "device": device, "models": models, "mixed_precision": precision, "steps": steps, "warmup": warmup,
        "images": {a: bucket_counts[a] for a in archs}, "rank": RANK, "workers": args.workers,
        "kiln_versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                          "transformers": transformers.__version__, "python": platform.python_version()},
        "kohya_versions": kohya_env.versions,
        "kohya_commit": commit.read_text(encoding="utf-8").strip() if commit and commit.is_file() else None,
        "wall_s": round(time.perf_counter() - started, 1),
        "measure": "per-step wall times from torch's global optimizer step post-hook after cuda synchronize; "
                   "peaks from torch.cuda.max_memory_* over the process (and after warm-up: train_*); first step "
                   "= launch to the end of step 1 (bench/step_probe.py, the same on both sides)",
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(to_json(results, meta, skipped), indent=1), encoding="utf-8")
        print(f"JSON: {args.json}")
    failed = [r for r in results if "failed" in (r.kiln.status, r.kohya.status)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
