"""``kiln train --from-kohya FILE``: a kohya training config as a kiln config.

Two inputs: sd-scripts' ``--config_file`` TOML (argparse names, sections flattened as kohya does) and the
JSON that bmaltais' GUI saves (its own keys: ``LoRA_type``, ``max_resolution``, ``epoch``, percent warmup, ...,
turned into the sd-scripts options the GUI would pass, with the GUI's rules: ``""``, ``0`` and ``false`` mean
"not given"). Every option is then mapped through the one name table (train/kohya_names.py); what kohya
leaves at its default is written with kohya's default, so the run trains as kohya would. Each key kiln cannot
honour is reported with the reason and what kiln does instead; values kiln refuses are reported too.

Pure Python (no torch); the CLI prints :meth:`KohyaImport.to_toml` or writes it.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from train.kohya_names import (
    KOHYA_CONTEXTUAL,
    KOHYA_DEFAULTS,
    KOHYA_NOT_APPLICABLE,
    KOHYA_OPTIONS,
    KOHYA_UNSUPPORTED,
    KOHYA_UNSUPPORTED_DEFAULTS,
    known,
)

Form = Literal["sd-scripts TOML", "bmaltais GUI JSON"]
PLACEHOLDER_MODEL = "/path/to/base-model.safetensors"
PLACEHOLDER_DATASET = "/path/to/dataset"
_HF_REPO = re.compile(r"^[\w.-]+/[\w.-]+$")
_MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


class KohyaImportError(ValueError):
    """The file is not a kohya config kiln can read (the message says why)."""


@dataclass(frozen=True)
class Skipped:
    """A kohya key kiln did not take over: ``reason`` says why and what kiln does instead."""

    key: str
    value: object
    reason: str


@dataclass
class KohyaImport:
    """The kiln config built from a kohya file: ``raw`` (sections of kiln keys), where each key came from
    (``origin``: "section.field" -> the kohya key or "kohya default"), what was skipped, and notes on keys
    that were mapped with a difference worth knowing. ``dataset_toml``: a kohya dataset TOML kiln needs
    (training and regularization folders apart), to be written at ``dataset_toml_path``."""

    source: Path
    form: Form
    raw: dict[str, dict[str, Any]] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    dataset_toml: str | None = None
    dataset_toml_path: Path | None = None

    def set(self, dotted: str, value: object, origin: str) -> None:
        section, key = dotted.split(".", 1)
        self.raw.setdefault(section, {})[key] = value
        self.origin[dotted] = origin

    def get(self, dotted: str) -> object:
        section, key = dotted.split(".", 1)
        return self.raw.get(section, {}).get(key)

    def has(self, dotted: str) -> bool:
        section, key = dotted.split(".", 1)
        return key in self.raw.get(section, {})

    def drop(self, dotted: str) -> None:
        section, key = dotted.split(".", 1)
        self.raw.get(section, {}).pop(key, None)
        self.origin.pop(dotted, None)

    def skip(self, key: str, value: object, reason: str) -> None:
        self.skipped.append(Skipped(key, value, reason))

    @property
    def complete(self) -> bool:
        """True when the config names a model and a dataset (it can train as it is)."""
        return self.get("model.path") not in (None, PLACEHOLDER_MODEL) and \
            self.get("dataset.path") not in (None, PLACEHOLDER_DATASET)

    def to_toml(self) -> str:
        """The kiln config as TOML: every key with the kohya key it came from, then what was not mapped."""
        from train.config import TrainConfig, toml_value

        out = [f"# kiln training config imported from {self.source} ({self.form})",
               "# Check it with `kiln train --check FILE`, train it with `kiln train FILE`."]
        for note in self.notes:
            out.append(f"# note: {note}")
        for problem in self.problems:
            out.append(f"# kiln refuses: {problem}")
        for section in TrainConfig.model_fields:
            table = self.raw.get(section)
            if not table:
                continue
            out += ["", f"[{section}]"]
            for key, value in _ordered(section, table):
                origin = self.origin.get(f"{section}.{key}", "")
                origin = "" if origin == key else origin
                line = f"{key} = {toml_value(value)}" if value is not None else f"# {key} ="
                out.append(f"{line}  # {origin}" if origin else line)
        if self.skipped:
            out += ["", f"# ---- {len(self.skipped)} kohya key(s) not mapped ----"]
            for s in self.skipped:
                out.append(f"# {s.key} = {_short(s.value)}: {s.reason}")
        return "\n".join(out) + "\n"


def _ordered(section: str, table: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """A section's keys in the order kiln's model declares them."""
    from train.config import _section_model

    model = _section_model(section)
    order = {name: i for i, name in enumerate(model.model_fields)} if model else {}
    return sorted(table.items(), key=lambda kv: order.get(kv[0], len(order)))


def _short(value: object) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------------------------------------------------------
# Reading the file
# ---------------------------------------------------------------------------------------------------------------


def read_kohya_file(path: Path) -> tuple[dict[str, Any], Form]:
    """The options of a kohya file: a TOML's sections flattened into one table (kohya's
    ``read_config_from_file``), or the GUI JSON's object."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KohyaImportError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise KohyaImportError(f"{path}: not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise KohyaImportError(f"{path}: a bmaltais GUI config is a JSON object")
        return data, "bmaltais GUI JSON"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise KohyaImportError(f"{path}: neither TOML nor JSON: {exc}") from None
    if isinstance(data.get("datasets"), list):
        raise KohyaImportError(f"{path}: this is a kohya dataset config ([[datasets]]), not a training config; "
                               "set it as dataset.path in a kiln config (or as dataset_config in the kohya one)")
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(value)  # kohya: [model_arguments] etc. are only grouping
        else:
            flat[key] = value
    return flat, "sd-scripts TOML"


def import_kohya(path: Path, *, cwd: Path | None = None) -> KohyaImport:
    """Read a kohya config and build the kiln config (see the module docstring). Relative paths are taken
    relative to ``cwd`` (kohya runs from the folder it was started in)."""
    path = Path(path)
    options, form = read_kohya_file(path)
    result = KohyaImport(source=path.resolve(), form=form)
    base = Path(cwd) if cwd is not None else Path.cwd()
    if form == "bmaltais GUI JSON":
        options, origins = gui_to_kohya(options, result)
    else:
        origins = {k: k for k in options}
    _map_options(options, origins, result, base)
    _validate(result)
    return result


# ---------------------------------------------------------------------------------------------------------------
# bmaltais' GUI JSON -> sd-scripts options
# ---------------------------------------------------------------------------------------------------------------

# GUI keys that only steer the GUI itself or accelerate's launcher.
_GUI_ONLY = {
    "model_list": "the GUI's model picker (pretrained_model_name_or_path is used)",
    "save_as_bool": "the GUI's save-as switch",
    "use_wandb": "kiln does not upload to wandb",
    "multi_gpu": "use `kiln train --num-processes N`",
    "num_processes": "use `kiln train --num-processes N`",
    "num_machines": "kiln trains on one machine",
    "gpu_ids": "choose GPUs with CUDA_VISIBLE_DEVICES",
    "main_process_port": "kiln launches its processes itself",
    "num_cpu_threads_per_process": "kiln leaves the thread count to torch (set OMP_NUM_THREADS)",
    "extra_accelerate_launch_args": "kiln launches its processes itself",
    "dynamo_backend": "kiln does not compile the model",
    "dynamo_mode": "kiln does not compile the model",
    "dynamo_use_fullgraph": "kiln does not compile the model",
    "dynamo_use_dynamic": "kiln does not compile the model",
    "mixed_precision_accelerate": "the training's mixed_precision is used",
    "stop_text_encoder_training": "the GUI does not pass it to sd-scripts either",
    "noise_offset_type": "read together with noise_offset / multires_noise_*",
    "sdxl_checkbox": "the architecture is detected from the checkpoint",
    "LyCORIS_preset": "read into network_args",
}
_LORA_ARG_KEYS = ("down_lr_weight", "mid_lr_weight", "up_lr_weight", "block_lr_zero_threshold", "block_dims",
                  "block_alphas", "conv_block_dims", "conv_block_alphas", "rank_dropout", "module_dropout")
_LYCORIS_ALGOS = {
    "LoCon": "locon", "LyCORIS/LoCon": "locon", "LyCORIS/LoHa": "loha", "LyCORIS/LoKr": "lokr",
    "LyCORIS/iA3": "ia3", "LyCORIS/DyLoRA": "dylora", "LyCORIS/GLoRA": "glora", "LyCORIS/BOFT": "boft",
    "LyCORIS/Diag-OFT": "diag-oft", "LyCORIS/Native Fine-Tuning": "full",
}
_LYCORIS_ARGS = {
    "locon": ("conv_dim", "conv_alpha", "use_tucker", "rank_dropout", "bypass_mode", "dora_wd", "module_dropout",
              "use_scalar", "rank_dropout_scale", "train_norm"),
    "loha": ("conv_dim", "conv_alpha", "use_tucker", "rank_dropout", "bypass_mode", "dora_wd", "module_dropout",
             "use_scalar", "rank_dropout_scale", "train_norm"),
    "lokr": ("conv_dim", "conv_alpha", "use_tucker", "rank_dropout", "bypass_mode", "dora_wd", "module_dropout",
             "factor", "use_cp", "use_scalar", "decompose_both", "rank_dropout_scale", "train_norm"),
    "ia3": ("conv_dim", "conv_alpha", "train_on_input"),
    "dylora": ("conv_dim", "conv_alpha", "use_tucker", "unit", "rank_dropout", "module_dropout", "train_norm"),
    "glora": ("conv_dim", "conv_alpha", "use_tucker", "rank_dropout", "module_dropout", "rank_dropout_scale",
              "train_norm"),
    "boft": ("conv_dim", "conv_alpha", "module_dropout", "use_tucker", "rank_dropout", "rank_dropout_scale",
             "train_norm"),
    "diag-oft": ("conv_dim", "conv_alpha", "module_dropout", "use_tucker", "rank_dropout", "rank_dropout_scale",
                 "constrain", "rescaled", "train_norm"),
    "full": ("rank_dropout", "module_dropout", "rank_dropout_scale", "train_norm"),
}
_GUI_NETWORK_KEYS = {"LoRA_type", "conv_dim", "conv_alpha", "factor", "use_tucker", "use_scalar", "use_cp",
                     "rank_dropout_scale", "constrain", "rescaled", "train_norm", "decompose_both", "dora_wd",
                     "bypass_mode", "unit", "train_on_input", "loraplus_lr_ratio", "loraplus_unet_lr_ratio",
                     "loraplus_text_encoder_lr_ratio", *_LORA_ARG_KEYS}


def _given(value: object) -> bool:
    """The GUI drops "", 0, 0.0, false and None before calling sd-scripts (``value not in ["", False, None]``)."""
    return not (value is None or value == "" or (not isinstance(value, str) and value == 0) or value is False)


# GUI keys whose text stays text even when it looks like a number.
_GUI_TEXT_KEYS = ("output_name", "training_comment", "caption_prefix", "caption_suffix", "keep_tokens_separator",
                  "sample_prompts", "pretrained_model_name_or_path", "train_data_dir", "reg_data_dir", "output_dir",
                  "logging_dir", "vae", "dataset_config", "additional_parameters", "optimizer_args",
                  "lr_scheduler_args", "caption_extension", "secondary_separator")


def _gui_value(key: str, value: object) -> object:
    """The GUI saves many numbers as text ("75", "1234"); sd-scripts gets them as numbers (``int(seed)``)."""
    if isinstance(value, str) and key not in _GUI_TEXT_KEYS and re.fullmatch(r"\s*-?\d+(\.\d*)?([eE]-?\d+)?\s*", value):
        return _typed(value.strip())
    return value


def _num(value: object) -> float:
    try:
        return float(value) if value not in (None, "") else 0.0  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0


def gui_to_kohya(data: Mapping[str, Any], result: KohyaImport) -> tuple[dict[str, Any], dict[str, str]]:
    """The sd-scripts options bmaltais' GUI would run for its saved JSON (kohya_gui/lora_gui.py train_model),
    and for each option the GUI key it came from."""
    opts: dict[str, Any] = {}
    origins: dict[str, str] = {}

    def put(name: str, value: object, origin: str) -> None:
        opts[name] = value
        origins[name] = origin

    data = {key: _gui_value(key, value) for key, value in data.items()}
    for key, value in data.items():
        if key in _GUI_ONLY or key in _GUI_NETWORK_KEYS or key in (
            "max_resolution", "epoch", "optimizer", "lr_warmup", "lr_warmup_steps", "xformers", "sdxl",
            "lora_network_weights", "sample_prompts", "additional_parameters", "optimizer_args",
            "lr_scheduler_args", "text_encoder_lr", "unet_lr", "learning_rate", "sdxl_cache_text_encoder_outputs",
            "sdxl_no_half_vae", "max_data_loader_n_workers", "lr_scheduler_num_cycles", "noise_offset",
            "adaptive_noise_scale", "multires_noise_iterations", "multires_noise_discount",
            "noise_offset_random_strength", "network_args",
        ):
            continue
        if key.startswith(("metadata_", "sd3_", "flux1_", "t5xxl", "clip_l", "clip_g", "hunyuan", "anima",
                           "lumina")) or key.endswith("_checkbox"):
            if _given(value):
                result.skip(key, value, "kiln trains SD1.x, SD2.x and SDXL LoRAs; this GUI option is for other models"
                            if not key.startswith("metadata_") else "kiln writes kohya's ss_* metadata only")
            continue
        if _given(value):
            put(key, value, key)
    for key, reason in _GUI_ONLY.items():
        value = data.get(key)
        if key in ("LyCORIS_preset", "noise_offset_type") or not _given(value):
            continue
        if key == "num_processes" and _num(value) <= 1:
            continue
        result.skip(key, value, reason)

    # resolution, length, optimizer, warmup, attention, architecture
    if _given(data.get("max_resolution")):
        put("resolution", data["max_resolution"], "max_resolution")
    epochs = int(_num(data.get("epoch")))
    if not _given(data.get("max_train_epochs")) and not _given(data.get("max_train_steps")) and epochs \
            and not _given(data.get("dataset_config")):
        put("max_train_epochs", epochs, "epoch")
        result.notes.append("epoch: bmaltais' GUI turns it into max_train_steps (images x repeats / batch x epochs); "
                            "kiln trains the same number of whole epochs")
    if _given(data.get("optimizer")):
        put("optimizer_type", data["optimizer"], "optimizer")
    for gui_key in ("optimizer_args", "lr_scheduler_args"):
        text = str(data.get(gui_key) or "").replace('"', "").split()
        if text:
            put(gui_key, text, gui_key)
    warmup_steps = _num(data.get("lr_warmup_steps"))
    warmup_pct = _num(data.get("lr_warmup"))
    if warmup_steps > 0:
        put("lr_warmup_steps", int(warmup_steps), "lr_warmup_steps")
    elif warmup_pct:
        put("lr_warmup_steps", warmup_pct / 100, "lr_warmup")  # a ratio of the total steps
    attention = str(data.get("xformers") or "")
    if attention == "xformers":
        put("xformers", True, "xformers")
    elif attention == "sdpa":
        put("sdpa", True, "xformers")
    if data.get("sdxl"):
        put("sdxl", True, "sdxl")
        if data.get("sdxl_cache_text_encoder_outputs"):
            put("cache_text_encoder_outputs", True, "sdxl_cache_text_encoder_outputs")
        if data.get("sdxl_no_half_vae"):
            put("no_half_vae", True, "sdxl_no_half_vae")
    if _given(data.get("lora_network_weights")):
        put("network_weights", data["lora_network_weights"], "lora_network_weights")
    put("max_data_loader_n_workers", int(_num(data.get("max_data_loader_n_workers"))), "max_data_loader_n_workers")
    if _given(data.get("sample_prompts")):
        put("sample_prompts", {"text": str(data["sample_prompts"])}, "sample_prompts")
    if _given(data.get("lr_scheduler_num_cycles")):
        put("lr_scheduler_num_cycles", int(_num(data["lr_scheduler_num_cycles"])), "lr_scheduler_num_cycles")
    elif epochs:
        put("lr_scheduler_num_cycles", epochs, "epoch")  # the GUI's default: one cycle per epoch

    # noise: the GUI passes one family, by noise_offset_type
    multires = str(data.get("noise_offset_type") or "Original") == "Multires"
    family = ("multires_noise_iterations", "multires_noise_discount") if multires else (
        "noise_offset", "adaptive_noise_scale", "noise_offset_random_strength")
    for key in family:
        if _given(data.get(key)):
            put(key, data[key], key)

    # learning rates: 0 means "use learning_rate"; a 0 on one side trains only the other
    lr, te_lr, unet_lr = _num(data.get("learning_rate")), _num(data.get("text_encoder_lr")), _num(data.get("unet_lr"))
    if lr:
        put("learning_rate", lr, "learning_rate")
    if unet_lr:
        put("unet_lr", unet_lr, "unet_lr")
    if te_lr:
        put("text_encoder_lr", [te_lr], "text_encoder_lr")
    if te_lr == 0 and unet_lr != 0:
        put("network_train_unet_only", True, "text_encoder_lr = 0")
    elif te_lr != 0 and unet_lr == 0:
        put("network_train_text_encoder_only", True, "unet_lr = 0")

    # the network: network_module + network_args as the GUI builds them
    lora_type = str(data.get("LoRA_type") or "Standard")
    args: list[str] = []
    if lora_type in ("Standard", "Kohya LoCon"):
        put("network_module", "networks.lora", "LoRA_type")
        if lora_type == "Kohya LoCon":
            args += [f"conv_dim={data.get('conv_dim')}", f"conv_alpha={data.get('conv_alpha')}"]
        args += [f"{k}={data[k]}" for k in _LORA_ARG_KEYS if data.get(k)]
    elif lora_type in _LYCORIS_ALGOS:
        algo = _LYCORIS_ALGOS[lora_type]
        put("network_module", "lycoris.kohya", "LoRA_type")
        args.append(f"preset={data.get('LyCORIS_preset') or 'full'}")
        args += [f"{'block_size' if k == 'unit' else k}={data.get(k)}" for k in _LYCORIS_ARGS[algo]
                 if k in data and data.get(k) != ""]
        args.append(f"algo={algo}")
    elif lora_type in ("Kohya LoHa", "Kohya LoKr"):
        put("network_module", "networks.loha" if lora_type == "Kohya LoHa" else "networks.lokr", "LoRA_type")
        args += [f"{k}={data[k]}" for k in ("conv_dim", "conv_alpha", "factor", "rank_dropout", "module_dropout")
                 if _given(data.get(k))]
    elif lora_type == "Kohya DyLoRA":
        put("network_module", "networks.dylora", "LoRA_type")
        args += [f"unit={data.get('unit')}"] + ([f"conv_dim={data.get('conv_dim')}",
                                                 f"conv_alpha={data.get('conv_alpha')}"] if _given(data.get("conv_dim")) else [])
    else:
        put("network_module", f"<{lora_type}>", "LoRA_type")
    for k in ("loraplus_lr_ratio", "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio"):
        if _given(data.get(k)):
            args.append(f"{k}={data[k]}")
    if args:
        put("network_args", args, "LoRA_type")

    # extra sd-scripts arguments typed into the GUI
    extra = str(data.get("additional_parameters") or "").strip()
    if extra:
        try:
            parsed = parse_cli_args(extra)
        except ValueError as exc:
            result.skip("additional_parameters", extra, f"cannot read these arguments: {exc}")
        else:
            for k, v in parsed.items():
                put(k, v, f"additional_parameters --{k}")
    return opts, origins


def parse_cli_args(text: str) -> dict[str, object]:
    """``--name=value --name value --flag`` as sd-scripts would read them (values typed where they look like
    numbers or booleans; repeated names collect into a list, as ``nargs='*'`` options do)."""
    out: dict[str, object] = {}
    tokens = shlex.split(text)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--"):
            raise ValueError(f"{token!r} is not an --option")
        name, eq, value = token[2:].partition("=")
        values: list[str] = [value] if eq else []
        while not eq and i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
            i += 1
            values.append(tokens[i])
        i += 1
        if not values:
            out[name] = True
        elif len(values) == 1 and name not in ("network_args", "optimizer_args", "lr_scheduler_args"):
            out[name] = _typed(values[0])
        else:
            out[name] = [v for v in values]
    return out


def _typed(text: str) -> object:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


# ---------------------------------------------------------------------------------------------------------------
# sd-scripts options -> kiln
# ---------------------------------------------------------------------------------------------------------------


def _map_options(options: dict[str, Any], origins: dict[str, str], result: KohyaImport, cwd: Path) -> None:
    from train.config import TrainConfig

    opts = dict(options)
    for name, default in KOHYA_DEFAULTS.items():
        if name not in opts or opts[name] is None:
            if name == "caption_extension" and "caption_extention" in opts:
                continue
            if name == "max_train_steps" and _meaningful(opts.get("max_train_epochs")):
                continue  # the epochs decide
            opts[name] = default
            origins[name] = "kohya default"
    if _meaningful(opts.get("validation_split")) and opts.get("validation_seed") is None \
            and isinstance(opts.get("seed"), int):
        opts["validation_seed"] = opts["seed"]  # kohya: the training seed when validation_seed is unset
        origins["validation_seed"] = "kohya default (seed)"

    _model(opts, origins, result, cwd)
    _dataset(opts, origins, result, cwd)
    _network(opts, origins, result, cwd)
    _optimizer(opts, origins, result)
    _schedule(opts, origins, result)
    _saves_and_samples(opts, origins, result, cwd)

    sections = {name: TrainConfig.model_fields[name].annotation for name in TrainConfig.model_fields}
    for name, value in opts.items():
        if name in KOHYA_CONTEXTUAL or name in _HANDLED:
            continue
        origin = origins.get(name, name)
        option = KOHYA_OPTIONS.get(name)
        if option is not None:
            model = sections.get(option.section)
            fields = getattr(model, "model_fields", {})
            if option.field not in fields:
                if _meaningful(value):
                    result.skip(origin, value, f"kiln has no {name} option yet; trained without it")
                continue
            converted = option.convert(value) if option.convert else value
            if converted is None:
                continue
            result.set(option.dotted, converted, origin)
        elif name in KOHYA_NOT_APPLICABLE:
            if _meaningful(value):
                result.skip(origin, value, KOHYA_NOT_APPLICABLE[name])
        elif name in KOHYA_UNSUPPORTED:
            if _meaningful(value) and KOHYA_UNSUPPORTED_DEFAULTS.get(name, object()) != value:
                result.skip(origin, value, f"kiln does not offer {name}: {KOHYA_UNSUPPORTED[name]}")
        elif not known(name) and _meaningful(value):
            result.skip(origin, value, "not a kohya sd-scripts option kiln knows; ignored")
    _after_mapping(result, cwd)


def _after_mapping(result: KohyaImport, cwd: Path) -> None:
    """Values that need the whole picture: paths kohya reads relative to where it runs, LoKr's full-matrix
    dims, where the LoRA files land."""
    if isinstance(result.get("output.dir"), str):
        result.set("output.dir", str(_path(result.get("output.dir"), cwd)), result.origin.get("output.dir", ""))
        result.notes.append("kohya writes the LoRA files into output_dir; kiln writes them into its run directory "
                            "<output.dir>/<output.name>/ (with events, state and samples)")
    if result.get("network.type") == "lokr" and result.get("network.lokr_factor") != 1:
        for key in ("network.dim", "network.conv_dim"):
            value = result.get(key)
            if isinstance(value, int | float) and value > 4096:
                result.set(key, 4096, f"{result.origin.get(key, key)} {int(value)}")
                result.notes.append(f"{key} {int(value)}: LyCORIS LoKr keeps full matrices once the dim is at least "
                                    "half the factored size; 4096 (kiln's largest) does the same for SD models")


_HANDLED = {"sdxl"}


def _meaningful(value: object) -> bool:
    """A value that asks for something (not empty, zero, false or an empty list)."""
    return not (value is None or value is False or value == "" or value == [] or value == {}
                or (not isinstance(value, bool) and isinstance(value, int | float) and value == 0))


def _path(value: object, cwd: Path) -> Path:
    path = Path(str(value)).expanduser()
    return path if path.is_absolute() else (cwd / path).resolve()


def _model(opts: dict[str, Any], origins: dict[str, str], result: KohyaImport, cwd: Path) -> None:
    model = opts.pop("pretrained_model_name_or_path", None)
    if not _meaningful(model):
        result.set("model.path", PLACEHOLDER_MODEL, "required: the kohya config names no model")
    else:
        path = _path(model, cwd)
        if not path.exists() and _HF_REPO.match(str(model)) and path.suffix.lower() not in _MODEL_SUFFIXES:
            result.set("model.path", PLACEHOLDER_MODEL, "required")
            result.skip(origins.get("pretrained_model_name_or_path", "pretrained_model_name_or_path"), model,
                        "a Hugging Face repo id: kiln loads local files only; download it and set model.path")
        else:
            result.set("model.path", str(path), origins.get("pretrained_model_name_or_path", ""))
            if path.suffix.lower() in (".ckpt", ".pt", ".bin", ".pth"):
                result.set("model.allow_pickle", True, "a pickled checkpoint (kohya loads them)")
                result.notes.append(f"{path.name} is a pickled checkpoint: model.allow_pickle = true lets kiln load "
                                    "it (it can run code; convert it to .safetensors if you can)")
    if _meaningful(opts.get("vae")):
        result.set("model.vae", str(_path(opts.pop("vae"), cwd)), origins.get("vae", "vae"))
    else:
        opts.pop("vae", None)
    v2, vpred = bool(opts.pop("v2", False)), bool(opts.pop("v_parameterization", False))
    if v2:
        result.set("model.architecture", "sd2-v" if vpred else "sd2", "v2" + (" + v_parameterization" if vpred else ""))
    elif vpred:
        result.set("model.v_prediction", True, origins.get("v_parameterization", "v_parameterization"))
    if opts.get("sdxl"):
        result.set("model.architecture", "sdxl", origins.get("sdxl", "sdxl"))


def _dataset(opts: dict[str, Any], origins: dict[str, str], result: KohyaImport, cwd: Path) -> None:
    config, train_dir, reg_dir = (opts.pop(k, None) for k in ("dataset_config", "train_data_dir", "reg_data_dir"))
    if _meaningful(config):
        toml_path = _path(config, cwd)
        result.set("dataset.path", str(toml_path), origins.get("dataset_config", "dataset_config"))
        for name in ("train_data_dir", "reg_data_dir"):
            value = train_dir if name == "train_data_dir" else reg_dir
            if _meaningful(value):
                result.skip(name, value, "kohya ignores it when dataset_config is given; so does kiln")
        _dataset_toml_settings(toml_path, opts, origins, result)
        return
    if not _meaningful(train_dir):
        result.set("dataset.path", PLACEHOLDER_DATASET, "required: the kohya config names no train_data_dir")
        return
    train_path = _path(train_dir, cwd)
    if not _meaningful(reg_dir):
        result.set("dataset.path", str(train_path), origins.get("train_data_dir", "train_data_dir"))
        return
    reg_path = _path(reg_dir, cwd)
    # bmaltais' layout ROOT/img + ROOT/reg: kiln reads ROOT as it is.
    if train_path.name == "img" and reg_path.parent == train_path.parent and reg_path.name in ("reg", "reg_data",
                                                                                              "regularization"):
        result.set("dataset.path", str(train_path.parent), "train_data_dir + reg_data_dir (img/ + reg/)")
        return
    subsets = []
    for folder, is_reg in ((train_path, False), (reg_path, True)):
        if not folder.is_dir():
            result.set("dataset.path", str(train_path), origins.get("train_data_dir", "train_data_dir"))
            result.skip("reg_data_dir", reg_dir, f"{folder} is not a folder here, so kiln cannot list its subsets; "
                        "trained without regularization images")
            return
        subsets += _kohya_subsets(folder, is_reg)
    lines = ["# kohya dataset config written by `kiln train --from-kohya`: the training and regularization",
             f"# folders of {result.source.name} (train_data_dir and reg_data_dir), one subset per <repeats>_<name>/.",
             "", "[[datasets]]"]
    for image_dir, repeats, tokens, is_reg in subsets:
        lines += ["", "[[datasets.subsets]]", f"image_dir = {json.dumps(str(image_dir))}",
                  f"num_repeats = {repeats}", f"class_tokens = {json.dumps(tokens)}"]
        if is_reg:
            lines.append("is_reg = true")
    result.dataset_toml = "\n".join(lines) + "\n"
    result.set("dataset.path", "<dataset TOML>", "train_data_dir + reg_data_dir")


def _kohya_subsets(folder: Path, is_reg: bool) -> list[tuple[Path, int, str, bool]]:
    from curator.layout import KOHYA_FOLDER

    out = []
    for child in sorted(folder.iterdir()):
        match = KOHYA_FOLDER.match(child.name)
        if child.is_dir() and match:
            out.append((child.resolve(), int(match.group(1)), match.group(2), is_reg))
    return out


def _dataset_toml_settings(toml_path: Path, opts: dict[str, Any], origins: dict[str, str],
                           result: KohyaImport) -> None:
    """With a dataset TOML, kohya takes resolution, buckets and batch size from it, not from the arguments."""
    try:
        data = tomllib.loads(toml_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        result.notes.append(f"dataset_config {toml_path} could not be read here; its settings were not copied")
        return
    general_raw, datasets_raw = data.get("general"), data.get("datasets")
    general: dict[str, Any] = general_raw if isinstance(general_raw, dict) else {}
    datasets: list[Any] = datasets_raw if isinstance(datasets_raw, list) else []
    first: dict[str, Any] = datasets[0] if datasets and isinstance(datasets[0], dict) else {}
    for key in ("resolution", "enable_bucket", "min_bucket_reso", "max_bucket_reso", "bucket_reso_steps",
                "bucket_no_upscale", "batch_size"):
        value = first.get(key, general.get(key))
        target = "train_batch_size" if key == "batch_size" else key
        if value is not None:
            opts[target] = value
            origins[target] = f"dataset_config {key}"
        elif origins.get(target) == "kohya default":
            opts.pop(target, None)  # kohya's argument default does not apply to a TOML's datasets
    if "enable_bucket" not in first and "enable_bucket" not in general:
        opts["enable_bucket"] = False  # kohya's dataset default
        origins["enable_bucket"] = "kohya dataset default"


# ---- network -------------------------------------------------------------------------------------------------

_LYCORIS_TYPES = {"lora": "locon", "locon": "locon", "loha": "loha", "lokr": "lokr", "ia3": "ia3"}
_OFF_SWITCHES = ("use_tucker", "use_scalar", "use_cp", "decompose_both", "bypass_mode", "train_norm",
                 "rank_dropout_scale", "rescaled", "train_on_input")


def parse_network_args(value: object) -> dict[str, str]:
    """kohya's ``network_args`` (a list of ``key=value`` strings, or one string of them) as a dict of strings."""
    items: list[str] = []
    if isinstance(value, str):
        items = shlex.split(value)
    elif isinstance(value, list | tuple):
        items = [str(v) for v in value]
    elif isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    out = {}
    for item in items:
        key, sep, val = item.partition("=")
        if sep:
            out[key.strip()] = val.strip().strip('"').strip("'")
    return out


def _network(opts: dict[str, Any], origins: dict[str, str], result: KohyaImport, cwd: Path) -> None:
    from train.network.config import NetworkConfig

    module = str(opts.pop("network_module", None) or "networks.lora")
    where = origins.get("network_module", "network_module")
    args = parse_network_args(opts.pop("network_args", None))
    arg_origin = origins.get("network_args", "network_args")
    types: tuple[str, ...] = get_args(NetworkConfig.model_fields["type"].annotation)
    kind: str | None
    if module == "networks.lora":
        conv = args.pop("conv_dim", None)
        kind = "locon" if conv not in (None, "", "0", "None") else "lora"
        if kind == "locon":
            result.set("network.conv_dim", int(float(conv or 0)), f"{arg_origin} conv_dim")
        conv_alpha = args.pop("conv_alpha", None)
        if kind == "locon" and conv_alpha not in (None, "", "None"):
            result.set("network.conv_alpha", float(conv_alpha or 1), f"{arg_origin} conv_alpha")
    elif module in ("lycoris.kohya", "networks.loha", "networks.lokr"):
        algo = {"networks.loha": "loha", "networks.lokr": "lokr"}.get(module) or args.pop("algo", "lora").lower()
        kind = _LYCORIS_TYPES.get(algo)
        if args.pop("dora_wd", "false").lower() == "true":
            if algo in ("lora", "locon"):
                kind = "dora"
            else:
                result.skip(f"{arg_origin} dora_wd", True, f"kiln trains DoRA only as LoCon (algo=locon); {algo} "
                            "is trained without weight decomposition")
        if kind is None:
            result.skip(where, f"{module} algo={algo}", f"kiln trains {', '.join(types)}; algo {algo!r} is not "
                        "one of them, so kiln would train a plain LoRA instead: pick one in [network] type")
        preset = args.pop("preset", "full")
        if preset not in ("full", "attn-mlp"):
            result.skip(f"{arg_origin} preset", preset, "kiln targets kohya's modules (attention/MLP, convs with "
                        "conv_dim); other LyCORIS presets are not available")
        elif preset == "full" and module == "lycoris.kohya":
            result.notes.append("LyCORIS preset 'full': kiln targets kohya's modules (attention and MLP linears, "
                                "ResNet/sampler convs when conv_dim is set)")
        conv = args.pop("conv_dim", None)
        if conv not in (None, "", "0", "None") and kind not in (None, "ia3"):
            result.set("network.conv_dim", int(float(conv or 0)), f"{arg_origin} conv_dim")
            if args.get("conv_alpha") not in (None, "", "None"):
                result.set("network.conv_alpha", float(args["conv_alpha"]), f"{arg_origin} conv_alpha")
        args.pop("conv_alpha", None)
        if "factor" in args:
            result.set("network.lokr_factor", int(float(args.pop("factor"))), f"{arg_origin} factor")
        if "dropout" in args:
            dropout = _none_or_float(args.pop("dropout"))
            if dropout:
                result.set("network.dropout", dropout, f"{arg_origin} dropout")
        for switch in _OFF_SWITCHES:
            value = args.pop(switch, None)
            if value is not None and value.lower() not in ("false", "0", "none", ""):
                result.skip(f"{arg_origin} {switch}", value, "this LyCORIS switch is not available in kiln; "
                            "trained without it")
        for name in ("constrain", "constraint", "block_size"):
            args.pop(name, None)
    elif module == "networks.dylora":
        kind = "dylora" if "dylora" in types else None
        if kind is None:
            result.skip(where, module, "kiln does not train DyLoRA yet; a plain LoRA would be trained instead")
    else:
        kind = None
        result.skip(where, module, f"kiln trains {', '.join(types)} (kohya networks.lora, LyCORIS); this network "
                    "module is not one of them")
    if kind is not None:
        result.set("network.type", kind, where)
    for name in ("rank_dropout", "module_dropout"):
        if name in args:
            rate = _none_or_float(args.pop(name))
            if rate:
                result.set(f"network.{name}", rate, f"{arg_origin} {name}")
    for name in ("down_lr_weight", "up_lr_weight", "mid_lr_weight"):
        if name in args:
            result.set(f"network.{name}", _block_weights(args.pop(name), name), f"{arg_origin} {name}")
    if "block_lr_zero_threshold" in args:
        result.set("network.block_lr_zero_threshold", float(args.pop("block_lr_zero_threshold") or 0),
                   f"{arg_origin} block_lr_zero_threshold")
    # Everything else goes to a kiln field of the same name where there is one ([network], then [train]).
    from train.config import TrainSection

    for name, value in args.items():
        typed = _list_or_value(value)
        if name in NetworkConfig.model_fields:
            result.set(f"network.{name}", typed, f"{arg_origin} {name}")
        elif name in TrainSection.model_fields:
            result.set(f"train.{name}", typed, f"{arg_origin} {name}")
        else:
            result.skip(f"{arg_origin} {name}", value, f"kiln does not support the network argument {name} yet; "
                        "trained without it")

    unet_only = bool(opts.pop("network_train_unet_only", False))
    te_only = bool(opts.pop("network_train_text_encoder_only", False))
    if unet_only:
        result.set("network.train_text_encoder", False, origins.get("network_train_unet_only", ""))
    if te_only:
        result.set("network.train_unet", False, origins.get("network_train_text_encoder_only", ""))
    for name in ("network_weights",):
        if _meaningful(opts.get(name)):
            opts[name] = str(_path(opts[name], cwd))


def _none_or_float(text: str) -> float | None:
    return None if text in ("", "None", "none") else float(text)


def _list_or_value(text: str) -> object:
    if "," in text:
        return [_typed(part.strip()) for part in text.split(",") if part.strip()]
    return _typed(text)


def _block_weights(text: str, name: str) -> object:
    """kohya's block weights: ``"1,1,0.5,..."`` (empty parts are 0) or a preset name like ``sine+.5``."""
    if "," in text or name == "mid_lr_weight":
        return [float(s) if s.strip() else 0.0 for s in text.split(",")]
    return text


# ---- optimizer -----------------------------------------------------------------------------------------------

# kohya's optimizer_type (lower case) -> kiln's optimizer and the arguments kohya adds itself: every name of
# kiln's optimizer table (train.optim.OPTIMIZERS) under its lower-case form, plus kohya's names kiln has no
# short name for (a ``module.Class`` path).
_KOHYA_ONLY_OPTIMIZERS: dict[str, tuple[str, dict[str, object]]] = {
    "sgdnesterov": ("SGD", {"nesterov": True}),
    "sgdnesterov8bit": ("bitsandbytes.optim.SGD8bit", {"nesterov": True}),
    "pagedadamw": ("bitsandbytes.optim.PagedAdamW", {}),
    "pagedadamw32bit": ("bitsandbytes.optim.PagedAdamW32bit", {}),
    "pagedlion8bit": ("bitsandbytes.optim.PagedLion8bit", {}),
    "ademamix8bit": ("bitsandbytes.optim.AdEMAMix8bit", {}),
    "pagedademamix8bit": ("bitsandbytes.optim.PagedAdEMAMix8bit", {}),
    "dadaptation": ("dadaptation.experimental.DAdaptAdamPreprint", {}),
    "dadaptadampreprint": ("dadaptation.experimental.DAdaptAdamPreprint", {}),
    "dadaptadanip": ("dadaptation.experimental.DAdaptAdanIP", {}),
    "radamschedulefree": ("schedulefree.RAdamScheduleFree", {}),
    "adamwschedulefree": ("schedulefree.AdamWScheduleFree", {}),
    "sgdschedulefree": ("schedulefree.SGDScheduleFree", {}),
}


def _kohya_optimizers() -> dict[str, tuple[str, dict[str, object]]]:
    from train.optim import OPTIMIZERS

    return {name.lower(): (name, {}) for name in OPTIMIZERS} | _KOHYA_ONLY_OPTIMIZERS


def parse_optimizer_args(value: object) -> dict[str, object]:
    """kohya's ``optimizer_args`` (``["betas=0.9,0.999", "decouple=True"]``): each value a Python literal
    (kohya uses ``ast.literal_eval``), so ``0.9,0.999`` is a tuple (kiln: a list)."""
    import ast

    items = value.split() if isinstance(value, str) else [str(v) for v in value] if isinstance(value, list) else []
    if isinstance(value, dict):
        return dict(value)
    out: dict[str, object] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"{item!r} is not key=value")
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            parsed = text  # kohya would fail; a bare word is most likely meant as a string
        out[key.strip()] = list(parsed) if isinstance(parsed, tuple) else parsed
    return out


def _optimizer(opts: dict[str, Any], origins: dict[str, str], result: KohyaImport) -> None:
    name = str(opts.pop("optimizer_type", None) or "")
    where = origins.get("optimizer_type", "optimizer_type")
    if opts.pop("use_8bit_adam", False):
        name, where = "AdamW8bit", origins.get("use_8bit_adam", "use_8bit_adam")
    if opts.pop("use_lion_optimizer", False):
        name, where = "Lion", origins.get("use_lion_optimizer", "use_lion_optimizer")
    raw_args = opts.pop("optimizer_args", None)
    try:
        args = parse_optimizer_args(raw_args) if raw_args else {}
    except ValueError as exc:
        result.skip(origins.get("optimizer_args", "optimizer_args"), raw_args, f"cannot read it ({exc}); "
                    "trained with the optimizer's defaults")
        args = {}
    if not name:
        name = "AdamW"
    known = _kohya_optimizers()
    kiln_name, extra = known.get(name.lower(), (name, {}))
    if "." not in kiln_name and name.lower() not in known:
        result.skip(where, name, "not an optimizer kohya or kiln knows; AdamW is used")
        kiln_name = "AdamW"
    args = {**extra, **args}
    if extra.get("nesterov"):
        args.setdefault("momentum", 0.9)  # kohya: Nesterov needs momentum, 0.9 when not given
    if kiln_name == "Adafactor":
        args.setdefault("relative_step", True)  # kohya's default for Adafactor
        if args.get("relative_step"):
            result.notes.append("Adafactor with relative_step (kohya's default): the optimizer sets its own step "
                                "size; kohya also switches to its adafactor schedule")
    result.set("train.optimizer", kiln_name, where)
    if args:
        result.set("train.optimizer_args", args, origins.get("optimizer_args", "optimizer_args"))


# ---- schedule, length, learning rates --------------------------------------------------------------------------


def _schedule(opts: dict[str, Any], origins: dict[str, str], result: KohyaImport) -> None:
    from train.config import SCHEDULERS

    warmup = opts.pop("lr_warmup_steps", None)
    if _meaningful(warmup):
        result.set("train.lr_warmup", warmup, origins.get("lr_warmup_steps", "lr_warmup_steps"))
    scheduler = opts.get("lr_scheduler")
    if isinstance(scheduler, str) and scheduler not in SCHEDULERS:
        opts.pop("lr_scheduler")
        result.skip(origins.get("lr_scheduler", "lr_scheduler"), scheduler,
                    f"kiln's schedulers are {', '.join(SCHEDULERS)}; constant is used")
    if scheduler != "cosine_with_restarts" and origins.get("lr_scheduler_num_cycles") in ("epoch",):
        opts.pop("lr_scheduler_num_cycles", None)
    if scheduler != "polynomial" and not _meaningful(opts.get("lr_scheduler_power")):
        opts.pop("lr_scheduler_power", None)
    te = opts.pop("text_encoder_lr", None)
    if isinstance(te, list | tuple):
        values = [float(v) for v in te]
        if len(set(values)) > 1:
            result.skip(origins.get("text_encoder_lr", "text_encoder_lr"), values,
                        f"kiln has one text-encoder learning rate; {values[0]} is used for both encoders")
        te = values[0] if values else None
    if te is not None:
        result.set("train.text_encoder_lr", float(te), origins.get("text_encoder_lr", "text_encoder_lr"))
    if opts.get("max_train_epochs") and _meaningful(opts.get("max_train_steps")) \
            and origins.get("max_train_steps") != "kohya default":
        result.notes.append("max_train_epochs wins over max_train_steps (kohya and kiln alike)")
    if not _meaningful(opts.get("seed")) and opts.get("seed") != 0:
        opts.pop("seed", None)
        result.notes.append("kohya picks a random seed when none is given; kiln uses train.seed = 42 (runs repeat)")
    attention = [k for k in ("xformers", "sdpa", "mem_eff_attn") if opts.pop(k, False)]
    if attention:
        result.set("train.attention", "sdpa", origins.get(attention[0], attention[0]))
        if "xformers" in attention or "mem_eff_attn" in attention:
            result.notes.append("xformers / mem_eff_attn: kiln uses PyTorch's scaled-dot-product attention, "
                                "which is as memory-efficient")


def _saves_and_samples(opts: dict[str, Any], origins: dict[str, str], result: KohyaImport, cwd: Path) -> None:
    fmt = opts.pop("save_model_as", None)
    if fmt not in (None, "", "safetensors"):
        result.skip(origins.get("save_model_as", "save_model_as"), fmt, "kiln saves .safetensors (they load "
                    "wherever kohya's files do)")
    keep: list[int] = []
    n_epochs = opts.pop("save_last_n_epochs", None)
    if _meaningful(n_epochs):
        keep.append(int(n_epochs))
    n_steps = opts.pop("save_last_n_steps", None)
    every = opts.get("save_every_n_steps")
    if _meaningful(n_steps):
        if every is not None and _meaningful(every):
            # kohya keeps the step saves of the last N steps: N // every + 1 files
            keep.append(int(n_steps) // int(every) + 1)
        else:
            result.skip(origins.get("save_last_n_steps", "save_last_n_steps"), n_steps,
                        "it only applies with save_every_n_steps")
    if keep:
        result.set("output.save_last_n", max(keep), origins.get("save_last_n_epochs") or origins.get(
            "save_last_n_steps", "save_last_n"))
        if len(keep) == 2 and keep[0] != keep[1]:
            result.notes.append("kiln keeps one count of saves for epoch and step saves alike; the larger is used")
    prompts = opts.pop("sample_prompts", None)
    if _meaningful(prompts):
        where = origins.get("sample_prompts", "sample_prompts")
        if isinstance(prompts, dict):
            lines = str(prompts.get("text", "")).splitlines()
        else:
            path = _path(prompts, cwd)
            try:
                lines = read_prompt_file(path)
            except (OSError, ValueError) as exc:
                result.skip(where, prompts, f"cannot read the prompt file here ({exc}); no samples")
                return
        parsed = [parse_prompt_line(line) for line in lines]
        parsed = [p for p in parsed if p.prompt]
        if parsed:
            result.set("sample.prompts", [p.prompt for p in parsed], where)
            result.set("sample.enabled", True, where)
            for attr, key in (("negative", "negative_prompt"), ("width", "width"), ("height", "height"),
                              ("steps", "steps"), ("cfg", "cfg_scale"), ("seed", "seed")):
                values = {getattr(p, attr) for p in parsed if getattr(p, attr) is not None}
                if len(values) == 1:
                    result.set(f"sample.{key}", values.pop(), f"{where} --{_PROMPT_FLAGS[attr]}")
                elif len(values) > 1:
                    result.skip(f"{where} --{_PROMPT_FLAGS[attr]}", sorted(values, key=str),
                                f"kiln's [sample] has one {key} for every prompt; the first prompt's is used")
                    first = next(getattr(p, attr) for p in parsed if getattr(p, attr) is not None)
                    result.set(f"sample.{key}", first, f"{where} --{_PROMPT_FLAGS[attr]} (first prompt)")


_PROMPT_FLAGS = {"negative": "n", "width": "w", "height": "h", "steps": "s", "cfg": "l", "seed": "d"}


@dataclass(frozen=True)
class PromptLine:
    """One kohya sample prompt: the text and its ``--n --w --h --s --l --d`` options."""

    prompt: str
    negative: str | None = None
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    cfg: float | None = None
    seed: int | None = None


def parse_prompt_line(line: str) -> PromptLine:
    """A line of a kohya prompt file: ``text --n negative --w 512 --h 768 --s 28 --l 7 --d 42``
    (comments and blank lines give an empty prompt)."""
    line = line.strip()
    if not line or line.startswith("#"):
        return PromptLine("")
    parts = re.split(r"\s--(?=[a-z]\s)", " " + line)
    prompt = parts[0].strip()
    values: dict[str, Any] = {}
    for part in parts[1:]:
        flag, _, value = part.partition(" ")
        value = value.strip()
        try:
            if flag == "n":
                values["negative"] = value
            elif flag in ("w", "h", "s", "d"):
                values[{"w": "width", "h": "height", "s": "steps", "d": "seed"}[flag]] = int(value)
            elif flag == "l":
                values["cfg"] = float(value)
        except ValueError:
            continue  # kohya ignores an option it cannot read as well
    return PromptLine(prompt, **values)


def read_prompt_file(path: Path) -> list[str]:
    """The prompt lines of a kohya prompt file (.txt lines; .toml / .json ``prompt`` entries)."""
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    if suffix in (".toml", ".json"):
        data = tomllib.loads(text) if suffix == ".toml" else json.loads(text)
        entries = data.get("prompt", []) if isinstance(data, dict) else data
        lines = []
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and entry.get("prompt"):
                line = str(entry["prompt"])
                for key, flag in (("negative_prompt", "n"), ("width", "w"), ("height", "h"),
                                  ("sample_steps", "s"), ("scale", "l"), ("seed", "d")):
                    if entry.get(key) is not None:
                        line += f" --{flag} {entry[key]}"
                lines.append(line)
        return lines
    return text.splitlines()


# ---------------------------------------------------------------------------------------------------------------
# Validation: keep what kiln accepts, report the rest
# ---------------------------------------------------------------------------------------------------------------


def _validate(result: KohyaImport) -> None:
    """Validate the mapped keys. A value kiln rejects on its own is skipped with kiln's reason (kiln's default
    applies); a combination kiln refuses is kept and reported as a problem (``kiln train --check`` says it
    again). Kept values are written in kiln's own form (``"512,512"`` -> ``[512, 512]``)."""
    from pydantic import ValidationError

    from train.config import TrainConfig, format_validation_error

    validated: TrainConfig | None = None
    for _ in range(100):
        try:
            validated = TrainConfig.model_validate(_with_placeholders(result.raw))
        except ValidationError as exc:
            bad = _field_errors(exc, result)
            if bad is None:
                result.problems = format_validation_error(exc)
                break
            dotted, line = bad
            origin, value = result.origin.get(dotted, dotted), result.get(dotted)
            result.drop(dotted)
            reason = line.split(":", 1)[1].strip() if ":" in line else line
            result.skip(origin, value, f"kiln refuses it ({reason}); kiln's default is used")
            continue
        break
    dumped: dict[str, Any] = validated.model_dump(mode="json") if validated is not None else {}
    if validated is None:  # a refused combination: each section on its own still gives kiln's forms
        for section, table in result.raw.items():
            try:
                model = TrainConfig.model_fields[section].annotation
                one = TrainConfig.model_validate(_with_placeholders({section: table}))
            except (KeyError, ValidationError):
                continue
            del model
            dumped[section] = one.model_dump(mode="json")[section]
    for section, table in result.raw.items():
        for key in table:
            if key != "path" and key in dumped.get(section, {}):
                table[key] = dumped[section][key]


def _with_placeholders(raw: dict[str, dict[str, Any]]) -> dict[str, Any]:
    copy: dict[str, Any] = json.loads(json.dumps(raw, default=str))
    for section, placeholder in (("model", PLACEHOLDER_MODEL), ("dataset", PLACEHOLDER_DATASET)):
        table = copy.setdefault(section, {})
        if table.get("path") in (None, "<dataset TOML>"):
            table["path"] = placeholder
    return copy


def _field_errors(exc: object, result: KohyaImport) -> tuple[str, str] | None:
    """The first error that is about one imported key on its own (not a cross-field rule), with its line."""
    from pydantic import ValidationError

    from train.config import format_validation_error

    assert isinstance(exc, ValidationError)
    for err in exc.errors(include_url=False):
        loc = [p for p in err["loc"] if isinstance(p, str)]
        if len(loc) < 2 or str(err.get("msg", "")).startswith("Value error, @"):
            continue
        dotted = f"{loc[0]}.{loc[1]}"
        if dotted in ("model.path", "dataset.path") or not result.has(dotted):
            continue
        lines = [line for line in format_validation_error(exc) if line.startswith(dotted + ":")]
        return dotted, lines[0] if lines else f"{dotted}: {err['msg']}"
    return None
