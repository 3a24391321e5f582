"""A LoRA file's modules, whatever wrote it: kohya sd-scripts and LyCORIS (``lora_unet_<name>.<weight>``),
PEFT / diffusers (``unet.<module path>.lora_A.weight``, ``text_encoder.…``), and the older diffusers
attention-processor layout (``….processor.to_q_lora.down.weight``).

Every module gets its kohya name (PEFT paths are renamed the way kohya names the same layer: SGM-style
``input_blocks_…`` for SDXL), its algorithm, its tensors under LyCORIS' suffixes, and its alpha. Keys that fit
no known layout are kept in ``unknown`` so the caller can say what it could not read.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from train.lora.errors import LoraToolError
from train.lora.files import StateFile, load_state_file

if TYPE_CHECKING:
    import torch

Algo = Literal["lora", "loha", "lokr", "ia3", "full", "norm", "glora", "oft", "boft"]
Part = Literal["unet", "te", "te1", "te2"]

ALGO_SUFFIXES: dict[str, frozenset[str]] = {
    "lora": frozenset({"lora_down.weight", "lora_up.weight", "lora_mid.weight"}),
    "loha": frozenset({"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2"}),
    "lokr": frozenset({"lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t1",
                       "lokr_t2"}),
    "ia3": frozenset({"weight", "on_input"}),
    "full": frozenset({"diff", "diff_b"}),
    "norm": frozenset({"w_norm", "b_norm"}),
    "glora": frozenset({"a1.weight", "a2.weight", "b1.weight", "b2.weight", "bm.weight"}),
    "oft": frozenset({"oft_blocks", "rescale", "oft_diag"}),
}
COMMON_SUFFIXES = frozenset({"alpha", "dora_scale", "scalar"})
ALGO_LABELS = {"lora": "LoRA", "locon": "LoCon", "loha": "LoHa", "lokr": "LoKr", "ia3": "IA³", "full": "full diff",
               "norm": "norm", "glora": "GLoRA", "oft": "OFT", "boft": "BOFT"}
KOHYA_PREFIXES = ("lora_unet_", "lora_te1_", "lora_te2_", "lora_te_")
EMBEDDING_PREFIX = "bundle_emb."
SDXL_UP_BLOCKS_WITH_ATTENTION = {0, 1}

_PEFT = re.compile(r"^(?P<path>.+?)\.(?P<kind>lora_A|lora_B|lora_magnitude_vector)(?:\.[A-Za-z_]\w*)??(?:\.weight)?$")
_DIFFUSERS_OLD = re.compile(r"^(?P<path>.+?)\.(?:lora|lora_linear_layer)\.(?P<kind>down|up)\.weight$")
_ATTN_PROC = re.compile(r"^(?P<path>.+?)\.processor\.(?P<proj>to_q|to_k|to_v|to_out)_lora\.(?P<kind>down|up)\.weight$")
_PEFT_ALPHA = re.compile(r"^(?P<path>.+?)\.alpha$")
_FLAT_TE = re.compile(r"^(lora_te[12]?)_encoder_layers_")
_UNET_HEADS = ("down_blocks.", "mid_block.", "up_blocks.", "conv_in.", "conv_out.", "time_embedding.",
               "add_embedding.")


@dataclass
class AdapterModule:
    """One adapted layer: kohya name, algorithm, tensors by LyCORIS suffix, alpha."""

    name: str
    algo: Algo
    tensors: dict[str, torch.Tensor]
    alpha: float | None = None

    @property
    def part(self) -> Part:
        for prefix, part in (("lora_te1_", "te1"), ("lora_te2_", "te2"), ("lora_te_", "te")):
            if self.name.startswith(prefix):
                return part  # type: ignore[return-value]
        return "unet"

    @property
    def dora(self) -> bool:
        return "dora_scale" in self.tensors

    @property
    def rank(self) -> int | None:
        t = self.tensors
        if self.algo == "lora" and "lora_down.weight" in t:
            return int(t["lora_down.weight"].shape[0])
        if self.algo == "loha" and "hada_w1_b" in t:
            return int(t["hada_w1_b"].shape[0])
        if self.algo == "lokr":
            if "lokr_w1_b" in t:
                return int(t["lokr_w1_b"].shape[0])
            if "lokr_w2_b" in t:
                return int(t["lokr_w2_b"].shape[0])
        return None

    @property
    def effective_alpha(self) -> float | None:
        """alpha as loaders use it: a missing (or 0) alpha means alpha = rank (scale 1), as in kohya."""
        rank = self.rank
        if rank is None:
            return self.alpha
        return float(rank) if not self.alpha else float(self.alpha)

    @property
    def scale(self) -> float:
        """The factor loaders multiply the low-rank product by (alpha / rank; LoKr: 1 unless factorised)."""
        rank = self.rank
        if self.algo == "lokr":
            return float(self.alpha) / rank if rank and self.alpha else 1.0
        if rank is None:
            return 1.0
        return float(self.effective_alpha or rank) / rank

    @property
    def is_conv(self) -> bool:
        for key in ("lora_down.weight", "hada_w1_b", "diff", "lokr_w2", "lokr_w2_b"):
            if key in self.tensors:
                return self.tensors[key].dim() == 4
        return False

    @property
    def kernel(self) -> tuple[int, int] | None:
        down = self.tensors.get("lora_down.weight")
        if down is not None and down.dim() == 4:
            return int(down.shape[2]), int(down.shape[3])
        return None

    @property
    def kind_label(self) -> str:
        """LoRA / LoCon / LoHa / ... for this module (LoCon: a LoRA on a ResNet/sampler layer or a 3x3 conv)."""
        if self.algo == "lora":
            kernel = self.kernel
            locon = (kernel is not None and kernel != (1, 1)) or any(
                part in self.name for part in ("_resnets_", "_downsamplers_", "_upsamplers_", "_in_layers_",
                                               "_out_layers_", "_emb_layers_", "_skip_connection", "_op"))
            label = "LoCon" if locon else "LoRA"
        else:
            label = ALGO_LABELS[self.algo]
        return label + (" + DoRA" if self.dora else "")


@dataclass
class LoraFile:
    """A parsed LoRA file."""

    path: Path
    modules: dict[str, AdapterModule]
    metadata: dict[str, str]
    layout: str  # "kohya" | "peft" | "diffusers" | "mixed"
    unknown: list[str] = field(default_factory=list)
    embeddings: list[str] = field(default_factory=list)
    pickled: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def format_label(self) -> str:
        """'LoRA', 'LoCon', 'LoHa', 'DoRA', ... or 'mixed: LoRA 120, LoHa 20'."""
        counts = Counter(m.kind_label for m in self.modules.values())
        if not counts:
            return "none"
        if set(counts) <= {"LoRA", "LoCon"}:
            return "LoCon" if "LoCon" in counts else "LoRA"
        if set(counts) <= {"LoRA + DoRA", "LoCon + DoRA"}:
            return "DoRA"
        if len(counts) == 1:
            return next(iter(counts))
        return "mixed: " + ", ".join(f"{k} {v}" for k, v in counts.most_common())

    def algos(self) -> set[str]:
        return {m.algo for m in self.modules.values()}


def _scalar(value: torch.Tensor) -> float:
    return float(value.detach().float().reshape(-1)[0]) if value.numel() else 0.0


def _peft_alphas(metadata: dict[str, str], config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per component ('unet', 'text_encoder', 'text_encoder_2', '' for a bare PEFT folder): its LoraConfig."""
    out: dict[str, dict[str, Any]] = {}
    raw = metadata.get("lora_adapter_metadata")
    if raw:
        try:
            packed = json.loads(raw)
        except json.JSONDecodeError:
            packed = {}
        if isinstance(packed, dict):
            for key, value in packed.items():
                component, _, name = str(key).rpartition(".")
                out.setdefault(component, {})[name] = value
    if config:
        out.setdefault("", {}).update(config)
    return out


def _pattern_value(patterns: object, path: str) -> object:
    if isinstance(patterns, dict):
        for pattern, value in patterns.items():
            if re.search(rf"(^|\.){pattern}$", path):
                return value
    return None


def _peft_scale_alpha(configs: dict[str, dict[str, Any]], component: str, path: str, rank: int) -> float | None:
    """The kohya alpha (= scale * rank) PEFT's config gives a module; None when nothing says."""
    cfg = configs.get(component) or configs.get("")
    if not cfg:
        return None
    alpha = _pattern_value(cfg.get("alpha_pattern"), path)
    if alpha is None:
        alpha = cfg.get("lora_alpha")
    if alpha is None:
        return None
    scale = float(alpha) / (rank ** 0.5 if cfg.get("use_rslora") else rank)  # type: ignore[arg-type]
    return scale * rank


def _split_peft_prefix(key: str) -> tuple[str, str]:
    """('unet' | 'text_encoder' | 'text_encoder_2' | '', rest of the key)."""
    for prefix in ("base_model.model.",):
        key = key.removeprefix(prefix)
    for component in ("text_encoder_2", "text_encoder", "unet"):
        if key.startswith(component + "."):
            return component, key[len(component) + 1 :]
    return "", key


def _component_of(component: str, path: str) -> str | None:
    if component:
        return component
    if path.startswith(_UNET_HEADS):
        return "unet"
    if path.startswith(("text_model.", "encoder.layers.")):
        return "text_encoder"
    return None


def kohya_name(component: str, path: str, sdxl: bool) -> str:
    """kohya's module name for a diffusers / transformers module path."""
    from train.network.targets import diffusers_to_sgm, text_encoder_path

    if component == "unet":
        if sdxl:
            path = diffusers_to_sgm(path, 2, SDXL_UP_BLOCKS_WITH_ATTENTION)
        return "lora_unet_" + path.replace(".", "_")
    prefix = {"text_encoder": "lora_te1" if sdxl else "lora_te", "text_encoder_2": "lora_te2"}[component]
    return f"{prefix}_{text_encoder_path(path).replace('.', '_')}"


def _classify(suffixes: set[str]) -> Algo | None:
    specific = suffixes - COMMON_SUFFIXES
    for algo, known in ALGO_SUFFIXES.items():
        if specific and specific <= known:
            if algo == "oft" and "oft_blocks" in specific:
                return "oft"
            return algo  # type: ignore[return-value]
    return None


def parse_state(state: StateFile) -> LoraFile:
    """Sort a file's keys into modules."""
    kohya: dict[str, dict[str, torch.Tensor]] = {}
    peft: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    unknown: list[str] = []
    embeddings: list[str] = []
    renamed: set[str] = set()
    for key, value in state.tensors.items():
        if key.startswith(EMBEDDING_PREFIX):
            embeddings.append(key)
            continue
        if key.startswith(KOHYA_PREFIXES):
            name, _, suffix = key.partition(".")
            fixed = _FLAT_TE.sub(r"\1_text_model_encoder_layers_", name)
            if fixed != name:
                renamed.add(name)
            kohya.setdefault(fixed, {})[suffix] = value
            continue
        component, rest = _split_peft_prefix(key)
        m = _ATTN_PROC.match(rest)
        if m:
            path = f"{m['path']}.{m['proj']}" + (".0" if m["proj"] == "to_out" else "")
            kind = {"down": "lora_down.weight", "up": "lora_up.weight"}[m["kind"]]
        else:
            m = _PEFT.match(rest) or _DIFFUSERS_OLD.match(rest)
            if m:
                path = m["path"]
                kind = {"lora_A": "lora_down.weight", "lora_B": "lora_up.weight", "down": "lora_down.weight",
                        "up": "lora_up.weight", "lora_magnitude_vector": "dora_scale"}[m["kind"]]
            else:
                m = _PEFT_ALPHA.match(rest)
                if not m:
                    unknown.append(key)
                    continue
                path, kind = m["path"], "alpha"
        resolved = _component_of(component, path)
        if resolved is None:
            unknown.append(key)
            continue
        peft.setdefault((resolved, path), {})[kind] = value

    modules: dict[str, AdapterModule] = {}
    for name, tensors in kohya.items():
        algo = _classify(set(tensors))
        if algo is None:
            unknown.extend(f"{name}.{s}" for s in sorted(tensors))
            continue
        alpha_t = tensors.pop("alpha", None)
        modules[name] = AdapterModule(name, algo, tensors, None if alpha_t is None else _scalar(alpha_t))

    if peft:
        sdxl = any(component == "text_encoder_2" for component, _ in peft) or _peft_looks_sdxl(peft)
        configs = _peft_alphas(state.metadata, state.peft_config)
        for (component, path), tensors in peft.items():
            try:
                name = kohya_name(component, path, sdxl)
            except (ValueError, KeyError):
                unknown.extend(f"{component}.{path}.{s}" for s in sorted(tensors))
                continue
            if "lora_down.weight" not in tensors or "lora_up.weight" not in tensors:
                unknown.extend(f"{component}.{path}.{s}" for s in sorted(tensors))
                continue
            alpha_t = tensors.pop("alpha", None)
            rank = int(tensors["lora_down.weight"].shape[0])
            alpha = _scalar(alpha_t) if alpha_t is not None else _peft_scale_alpha(configs, component, path, rank)
            if "dora_scale" in tensors:
                magnitude = tensors["dora_scale"]
                tensors["dora_scale"] = magnitude.reshape(magnitude.shape[0], *([1] * (tensors["lora_up.weight"].dim() - 1)))
            modules[name] = AdapterModule(name, "lora", tensors, alpha)
    layout = "mixed" if kohya and peft else ("peft" if peft else "kohya")
    notes = []
    if renamed:
        notes.append(f"{len(renamed)} text-encoder modules are named without 'text_model_' (as LyCORIS names them "
                     "under transformers 5), which A1111/Forge and ComfyUI do not match; kiln reads them under "
                     "kohya's names, and files kiln writes use those")
    return LoraFile(state.path, modules, state.metadata, layout, sorted(unknown), sorted(embeddings), state.pickled,
                    notes)


def _peft_looks_sdxl(peft: dict[tuple[str, str], dict[str, torch.Tensor]]) -> bool:
    """SDXL UNets have add_embedding and 2048-wide cross attention."""
    for (component, path), tensors in peft.items():
        if component != "unet":
            continue
        if path.startswith("add_embedding."):
            return True
        down = tensors.get("lora_down.weight")
        if path.endswith("attn2.to_k") and down is not None and down.shape[-1] == 2048:
            return True
    return False


def looks_like_lora(keys: list[str]) -> bool:
    """Whether any key has a LoRA / LyCORIS / PEFT layout (checked on the header, before loading tensors)."""
    for key in keys:
        if key.startswith(KOHYA_PREFIXES) or key.startswith(EMBEDDING_PREFIX):
            return True
        rest = _split_peft_prefix(key)[1]
        if _PEFT.match(rest) or _DIFFUSERS_OLD.match(rest) or _ATTN_PROC.match(rest):
            return True
    return False


def read_lora(path: Path, *, allow_pickle: bool = False, flag: str = "LoRA") -> LoraFile:
    """Read and parse a LoRA file (or PEFT folder); a file with no module kiln can read is an error that says
    what the file seems to be instead."""
    state = load_state_file(path, allow_pickle=allow_pickle, flag=flag)
    lora = parse_state(state)
    if not lora.modules:
        raise LoraToolError(f"{flag}: {path} holds no LoRA / LyCORIS module kiln can read. " + describe_non_lora(
            list(state.tensors), {k: tuple(v.shape) for k, v in state.tensors.items()}))
    return lora


def describe_non_lora(keys: list[str], shapes: dict[str, tuple[int, ...]]) -> str:
    """What a file that is not a LoRA seems to be, for error messages."""
    from train.models.arch import ArchitectureError, detect_architecture

    if not keys:
        return "It holds no tensors."
    try:
        arch = detect_architecture(keys, shapes, where="file")
    except ArchitectureError as exc:
        text = str(exc).removeprefix("file: ")
        if "LoRA/LyCORIS file" not in text:
            return text
        return f"Its keys look like no layout kiln knows (first: {', '.join(sorted(keys)[:3])})."
    return f"It is an {arch.value.upper()} base checkpoint, not a LoRA."


@dataclass
class ArchGuess:
    """Which base model family a LoRA is for, and why."""

    arch: str | None  # 'sd1' | 'sd2' | 'sdxl' | None (cannot tell)
    evidence: list[str]
    conflicts: list[str]


_CROSS_ATTENTION = {768: "sd1", 1024: "sd2", 2048: "sdxl"}
_SECOND_TRANSFORMER = re.compile(r"_transformer_blocks_[1-9]\d*_")
_TE_WIDTH = {768: "sd1", 1024: "sd2"}


def _metadata_arch(metadata: dict[str, str]) -> tuple[str | None, str]:
    version = metadata.get("ss_base_model_version", "")
    if version.startswith("sdxl"):
        return "sdxl", f"ss_base_model_version {version}"
    if version.startswith("sd_v2"):
        return "sd2", f"ss_base_model_version {version}"
    if version.startswith("sd_v1"):
        return "sd1", f"ss_base_model_version {version}"
    spec = metadata.get("modelspec.architecture", "")
    for needle, arch in (("stable-diffusion-xl", "sdxl"), ("stable-diffusion-v2", "sd2"), ("stable-diffusion-v1", "sd1")):
        if spec.startswith(needle):
            return arch, f"modelspec.architecture {spec}"
    if metadata.get("ss_v2") == "True":
        return "sd2", "ss_v2 True"
    return None, ""


def _input_width(module: AdapterModule) -> int | None:
    for key in ("lora_down.weight", "hada_w1_b", "diff"):
        if key in module.tensors and module.tensors[key].dim() >= 2:
            return int(module.tensors[key].shape[1])
    return None


def guess_arch(lora: LoraFile) -> ArchGuess:
    """Structure first (names, cross-attention and text-encoder widths, 1x1-conv vs linear ``proj_in``), then
    the metadata; disagreements are reported as conflicts."""
    found: list[tuple[str, str]] = []
    names = list(lora.modules)
    if any(n.startswith(("lora_te1_", "lora_te2_")) for n in names):
        found.append(("sdxl", "two text encoders (lora_te1_/lora_te2_)"))
    if any(n.startswith(("lora_unet_input_blocks_", "lora_unet_output_blocks_", "lora_unet_middle_block_",
                         "lora_unet_label_emb")) for n in names):
        found.append(("sdxl", "SGM-style UNet names (input_blocks_…), which kohya writes for SDXL"))
    if any(_SECOND_TRANSFORMER.search(n) for n in names):
        found.append(("sdxl", "attention blocks with several transformer layers (SD1/SD2 have one)"))
    for name, module in lora.modules.items():
        width = _input_width(module)
        if width is None:
            continue
        if name.endswith(("attn2_to_k", "attn2_to_v")) and width in _CROSS_ATTENTION:
            found.append((_CROSS_ATTENTION[width], f"cross-attention width {width}"))
            break
    for name, module in lora.modules.items():
        width = _input_width(module)
        if name.startswith("lora_te_") and name.endswith("q_proj") and width in _TE_WIDTH:
            found.append((_TE_WIDTH[width], f"text encoder width {width}"))
            break
    if not any(a == "sdxl" for a, _ in found):
        for name, module in lora.modules.items():
            down = module.tensors.get("lora_down.weight")
            if name.endswith("_proj_in") and down is not None:
                found.append(("sd1", "1x1-conv proj_in (SD1.x)") if down.dim() == 4 else
                             ("sd2", "linear proj_in without SDXL's text encoders (SD2.x)"))
                break
    meta_arch, meta_why = _metadata_arch(lora.metadata)
    structural = {a for a, _ in found}
    conflicts: list[str] = []
    if len(structural) > 1:
        conflicts.append("the modules disagree: " + "; ".join(f"{w} -> {a}" for a, w in found))
    arch = next(iter(structural)) if len(structural) == 1 else None
    if arch is None and not structural and meta_arch:
        arch = meta_arch
    elif meta_arch and arch and meta_arch != arch:
        conflicts.append(f"the metadata says {meta_arch} ({meta_why}) but the modules say {arch}")
    evidence = [f"{w} -> {a}" for a, w in found] + ([f"{meta_why} -> {meta_arch}"] if meta_arch else [])
    return ArchGuess(arch, evidence, conflicts)
