"""`kiln lora info`: what a LoRA file is, what it is for, how it was trained, and how to recognise it.

``inspect_lora(path)`` returns a plain dict (what ``--json`` prints); ``render(report)`` the text form. The
safetensors header is validated (and capped at the format's 100 MB) before any tensor is read. Every string
that comes from the file goes through ``curator.textsafe.printable`` before it reaches a terminal, so a
metadata value cannot move the cursor or change colours; JSON output escapes everything outside ASCII.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections import Counter
from pathlib import Path
from typing import Any

from curator.textsafe import printable, shorten
from train.lora.adapters import AdapterModule, describe_non_lora, guess_arch, looks_like_lora, parse_state
from train.lora.blocks import BLOCK_IDS_26, block_group, block_id
from train.lora.errors import LoraToolError
from train.lora.files import file_hashes, load_state_file, read_header, require_input
from train.models.probe import SAFETENSORS_SUFFIXES

# ss_* keys shown first, with a label (the rest follow in name order)
SS_LABELS: dict[str, str] = {
    "ss_output_name": "output name",
    "ss_sd_model_name": "trained on",
    "ss_base_model_version": "base model version",
    "ss_sd_model_hash": "base model hash",
    "ss_new_sd_model_hash": "base model sha256",
    "ss_vae_name": "VAE",
    "ss_v2": "SD2",
    "ss_v_parameterization": "v-prediction",
    "ss_network_module": "network module",
    "ss_network_dim": "network dim",
    "ss_network_alpha": "network alpha",
    "ss_network_args": "network args",
    "ss_network_dropout": "network dropout",
    "ss_resolution": "resolution",
    "ss_enable_bucket": "buckets enabled",
    "ss_min_bucket_reso": "min bucket",
    "ss_max_bucket_reso": "max bucket",
    "ss_bucket_no_upscale": "no upscale",
    "ss_num_train_images": "train images (with repeats)",
    "ss_num_reg_images": "regularization images",
    "ss_num_batches_per_epoch": "batches per epoch",
    "ss_num_epochs": "epochs",
    "ss_epoch": "saved at epoch",
    "ss_steps": "steps",
    "ss_max_train_steps": "max steps",
    "ss_batch_size_per_device": "batch size",
    "ss_total_batch_size": "total batch size",
    "ss_gradient_accumulation_steps": "gradient accumulation",
    "ss_gradient_checkpointing": "gradient checkpointing",
    "ss_learning_rate": "learning rate",
    "ss_unet_lr": "UNet lr",
    "ss_text_encoder_lr": "text encoder lr",
    "ss_lr_scheduler": "lr scheduler",
    "ss_lr_warmup_steps": "warmup steps",
    "ss_optimizer": "optimizer",
    "ss_mixed_precision": "mixed precision",
    "ss_full_fp16": "full fp16",
    "ss_seed": "seed",
    "ss_max_grad_norm": "max grad norm",
    "ss_noise_offset": "noise offset",
    "ss_min_snr_gamma": "min SNR gamma",
    "ss_loss_type": "loss",
    "ss_clip_skip": "clip skip",
    "ss_max_token_length": "max token length",
    "ss_shuffle_caption": "shuffle captions",
    "ss_keep_tokens": "keep tokens",
    "ss_caption_dropout_rate": "caption dropout",
    "ss_cache_latents": "cached latents",
    "ss_flip_aug": "flip augmentation",
    "ss_training_started_at": "started",
    "ss_training_finished_at": "finished",
    "ss_training_comment": "comment",
}
SUMMARISED = ("ss_tag_frequency", "ss_bucket_info", "ss_dataset_dirs", "ss_datasets")
_TIMES = ("ss_training_started_at", "ss_training_finished_at")

LOADERS = {
    "A1111/Forge": {"lora", "loha", "lokr", "ia3", "full", "norm", "glora", "oft", "boft", "dora"},
    "ComfyUI": {"lora", "loha", "lokr", "ia3", "full", "norm", "glora", "oft", "boft", "dora"},
    "diffusers": {"lora"},
}


def _json(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return None


def tag_frequency(metadata: dict[str, str], top: int | None) -> list[tuple[str, int]]:
    """The most frequent caption tags over every dataset folder (``ss_tag_frequency`` or ``ss_datasets``);
    ``top`` None: every tag."""
    totals: Counter[str] = Counter()
    sources: list[object] = []
    freq = _json(metadata.get("ss_tag_frequency"))
    if isinstance(freq, dict):
        sources.append(freq)
    datasets = _json(metadata.get("ss_datasets"))
    if isinstance(datasets, list):
        sources += [d.get("tag_frequency") for d in datasets if isinstance(d, dict)]
    for source in sources:
        if not isinstance(source, dict):
            continue
        for folder in source.values():
            if isinstance(folder, dict):
                for tag, count in folder.items():
                    if isinstance(count, int | float):
                        totals[str(tag).strip()] += int(count)
    return totals.most_common(top)


def tag_count(metadata: dict[str, str]) -> int:
    """How many distinct tags the training captions held (for "… N more")."""
    return len(tag_frequency(metadata, None))


def bucket_summary(metadata: dict[str, str]) -> dict[str, Any] | None:
    """Buckets as [(w, h, count)] (kohya's ``{"buckets": {"0": {"resolution": [w, h], "count": n}}}``, or
    ``{"WxH": n}``) plus the mean aspect-ratio error when given."""
    infos = []
    single = _json(metadata.get("ss_bucket_info"))
    if isinstance(single, dict):
        infos.append(single)
    datasets = _json(metadata.get("ss_datasets"))
    if isinstance(datasets, list):
        infos += [d["bucket_info"] for d in datasets if isinstance(d, dict) and isinstance(d.get("bucket_info"), dict)]
    buckets: Counter[tuple[int, int]] = Counter()
    errors = []
    for info in infos:
        for key, value in (info.get("buckets") or {}).items():
            try:
                if isinstance(value, dict):
                    w, h = (int(v) for v in value["resolution"])
                    buckets[(w, h)] += int(value["count"])
                else:
                    w, h = (int(v) for v in str(key).lower().split("x"))
                    buckets[(w, h)] += int(value)
            except (KeyError, TypeError, ValueError):
                continue
        if isinstance(info.get("mean_img_ar_error"), int | float):
            errors.append(float(info["mean_img_ar_error"]))
    if not buckets:
        return None
    return {"buckets": [[w, h, n] for (w, h), n in sorted(buckets.items(), key=lambda kv: -kv[1])],
            "mean_img_ar_error": sum(errors) / len(errors) if errors else None}


def _module_row(module: AdapterModule) -> dict[str, Any]:
    return {"name": module.name, "type": module.kind_label, "rank": module.rank, "alpha": module.alpha,
            "block": block_id(module.name), "part": module.part,
            "shape": {k: list(v.shape) for k, v in module.tensors.items()}}


def _when(value: str) -> str:
    try:
        return _dt.datetime.fromtimestamp(float(value), tz=_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (ValueError, OverflowError, OSError):
        return value


def inspect_lora(
    path: Path, *, allow_pickle: bool = False, hashes: bool = True, top_tags: int | None = 20
) -> dict[str, Any]:
    """Everything ``kiln lora info`` shows, as JSON-ready data."""
    path = require_input(path, "FILE")
    report: dict[str, Any] = {"file": str(path), "size": path.stat().st_size if path.is_file() else None}
    if path.is_file() and path.suffix.lower() in SAFETENSORS_SUFFIXES:
        header = read_header(path, "FILE")
        if not looks_like_lora(list(header.shapes)):  # a checkpoint, VAE, ...: said without loading it
            raise LoraToolError(f"FILE {path}: holds no LoRA / LyCORIS module kiln can read. "
                                + describe_non_lora(list(header.shapes), header.shapes))
    state = load_state_file(path, allow_pickle=allow_pickle, flag="FILE")
    lora = parse_state(state)
    if not lora.modules:
        raise LoraToolError(f"FILE {path}: holds no LoRA / LyCORIS module kiln can read. "
                            + describe_non_lora(list(state.tensors), {k: tuple(v.shape) for k, v in state.tensors.items()}))
    guess = guess_arch(lora)
    modules = list(lora.modules.values())
    by_block = Counter(block_id(m.name) or "other" for m in modules)
    by_group = Counter(block_group(block_id(m.name)) for m in modules)
    ranks = Counter((m.kind_label, m.rank, m.alpha) for m in modules)
    dtypes = Counter(str(t.dtype).removeprefix("torch.") for m in modules for t in m.tensors.values())
    algos = {m.algo for m in modules} | ({"dora"} if any(m.dora for m in modules) else set())
    loaders = {}
    for loader, accepted in LOADERS.items():
        refused = sorted(a for a in algos if a not in accepted)
        if loader == "diffusers" and any(m.dora for m in modules):
            refused = sorted(set(refused) | {"dora"})
        loaders[loader] = "yes" if not refused else "no: " + ", ".join(refused)
    if loaders["diffusers"] != "yes" and "dora" in loaders["diffusers"] and len(algos - {"dora"}) == 1 \
            and "lora" in algos:
        loaders["diffusers"] = "partly: loads the LoRA weights but drops dora_scale (DoRA's magnitudes)"
    metadata = dict(lora.metadata)
    ordered = [k for k in SS_LABELS if k in metadata]
    ordered += sorted(k for k in metadata if k.startswith("ss_") and k not in SS_LABELS and k not in SUMMARISED)
    report.update({
        "layout": lora.layout,
        "format": lora.format_label,
        "architecture": guess.arch,
        "architecture_evidence": guess.evidence,
        "architecture_conflicts": guess.conflicts,
        "modules": len(modules),
        "modules_by_part": dict(Counter(m.part for m in modules)),
        "modules_by_group": {g: by_group[g] for g in ("TE", "IN", "MID", "OUT", "other") if by_group[g]},
        "modules_by_block": {b: by_block[b] for b in (*BLOCK_IDS_26, "other") if by_block[b]},
        "ranks": [{"type": t, "rank": r, "alpha": a, "modules": n} for (t, r, a), n in ranks.most_common()],
        "dtypes": dict(dtypes),
        "loads_in": loaders,
        "unknown_keys": lora.unknown,
        "embeddings": lora.embeddings,
        "notes": lora.notes,
        "pickled": lora.pickled,
        "training": {k: metadata[k] for k in ordered},
        "tag_frequency": tag_frequency(metadata, top_tags),
        "tags": tag_count(metadata),
        "buckets": bucket_summary(metadata),
        "dataset_dirs": _json(metadata.get("ss_dataset_dirs")),
        "other_metadata": {k: v for k, v in metadata.items() if not k.startswith("ss_")},
        "module_list": [_module_row(m) for m in modules],
    })
    if hashes and path.is_file():
        h = file_hashes(path)
        report["hashes"] = {
            "sha256": h.sha256, "autov2": h.autov2, "a1111_short": h.a1111_short, "addnet": h.addnet,
            "legacy": h.legacy, "stored_sshs_model_hash": metadata.get("sshs_model_hash"),
            "stored_sshs_legacy_hash": metadata.get("sshs_legacy_hash"),
            "sshs_model_hash_matches": None if "sshs_model_hash" not in metadata or h.addnet is None
            else metadata["sshs_model_hash"] == h.addnet,
        }
    return report


def to_json(report: dict[str, Any]) -> str:
    """JSON with every non-ASCII character escaped (so no control character reaches a terminal raw)."""
    return json.dumps(report, indent=2, ensure_ascii=True, default=str)


def _cell(value: object, limit: int = 100) -> str:
    return shorten(printable(value), limit)


def _table(rows: list[tuple[str, str]], indent: str = "  ") -> list[str]:
    width = max((len(k) for k, _ in rows), default=0)
    return [f"{indent}{k.ljust(width)}  {v}" for k, v in rows]


def render(report: dict[str, Any], *, modules: bool = False) -> str:
    """The text form of ``inspect_lora``'s report (file-derived text made printable)."""
    lines = [f"{_cell(report['file'], 200)}"]
    arch = report["architecture"] or "unknown"
    rows = [
        ("format", f"{report['format']} ({report['layout']} layout)"),
        ("architecture", arch.upper() if arch != "unknown" else "cannot tell (no width or metadata says)"),
        ("modules", f"{report['modules']} ("
                    + ", ".join(f"{g} {n}" for g, n in report["modules_by_group"].items()) + ")"),
        ("dtypes", ", ".join(f"{d} ({n})" for d, n in report["dtypes"].items())),
    ]
    if report["size"] is not None:
        rows.insert(0, ("size", f"{report['size'] / 2**20:.1f} MiB"))
    lines += _table(rows)
    for conflict in report["architecture_conflicts"]:
        lines.append(f"  warning: {_cell(conflict, 200)}")
    if report["architecture_evidence"]:
        lines.append("  evidence: " + "; ".join(_cell(e, 120) for e in report["architecture_evidence"]))
    lines.append("")
    lines.append("blocks (LoRA Block Weight names)")
    lines += _table([(b, str(n)) for b, n in report["modules_by_block"].items()])
    lines.append("")
    lines.append("rank / alpha")
    lines += _table([(f"{r['type']}", f"rank {r['rank'] if r['rank'] is not None else '-'}, alpha "
                      f"{_fmt(r['alpha'])}: {r['modules']} modules") for r in report["ranks"]])
    lines.append("")
    lines.append("loads in")
    lines += _table([(k, v) for k, v in report["loads_in"].items()])
    if report["unknown_keys"]:
        lines.append("")
        lines.append(f"cannot read {len(report['unknown_keys'])} keys (not a layout kiln knows):")
        lines += [f"  {_cell(k, 160)}" for k in report["unknown_keys"][:10]]
        if len(report["unknown_keys"]) > 10:
            lines.append(f"  ... and {len(report['unknown_keys']) - 10} more")
    if report["embeddings"]:
        lines.append(f"bundled embeddings: {len(report['embeddings'])} tensors")
    for note in report["notes"]:
        lines.append(f"note: {_cell(note, 300)}")
    training = report["training"]
    if training:
        lines.append("")
        lines.append("training metadata (ss_*)")
        lines += _table([(SS_LABELS.get(k, k), _when(v) if k in _TIMES else _cell(v)) for k, v in training.items()])
    buckets = report["buckets"]
    if buckets:
        lines.append("")
        error = buckets["mean_img_ar_error"]
        lines.append(f"buckets ({len(buckets['buckets'])}" + (f", mean aspect error {error:.3f}" if error is not None
                                                                 else "") + ")")
        shown = buckets["buckets"][:12]
        lines += _table([(f"{w}x{h}", f"{n} images") for w, h, n in shown])
        if len(buckets["buckets"]) > len(shown):
            lines.append(f"  ... and {len(buckets['buckets']) - len(shown)} more")
    dirs = report["dataset_dirs"]
    if isinstance(dirs, dict) and dirs:
        lines.append("")
        lines.append("dataset folders")
        rows = []
        for name, info in list(dirs.items())[:12]:
            if isinstance(info, dict):
                rows.append((_cell(name, 60), f"{info.get('img_count', '?')} images x {info.get('n_repeats', '?')} "
                                              "repeats"))
        lines += _table(rows)
    if report["tag_frequency"]:
        lines.append("")
        lines.append(f"top tags ({len(report['tag_frequency'])} of {report['tags']})")
        lines += _table([(_cell(tag, 60), str(n)) for tag, n in report["tag_frequency"]])
        if report["tags"] > len(report["tag_frequency"]):
            lines.append(f"  ... {report['tags'] - len(report['tag_frequency'])} more tag(s) not shown "
                         "(--limit 0 lists them all)")
    other = report["other_metadata"]
    if other:
        lines.append("")
        lines.append("other metadata")
        lines += _table([(_cell(k, 60), _cell(v)) for k, v in sorted(other.items()) if not k.startswith("sshs_")])
    hashes = report.get("hashes")
    if hashes:
        lines.append("")
        lines.append("hashes")
        rows = [("sha256 (A1111)", hashes["sha256"]), ("AutoV2 (Civitai)", hashes["autov2"]),
                ("A1111 short", hashes["a1111_short"])]
        if hashes["addnet"]:
            match = hashes["sshs_model_hash_matches"]
            note = "" if match is None else (" (= stored sshs_model_hash)" if match else
                                             " (differs from the stored sshs_model_hash: the tensors were changed)")
            rows.append(("addnet / sshs_model_hash", hashes["addnet"] + note))
        rows.append(("legacy (addnet)", hashes["legacy"]))
        lines += _table(rows)
    if modules:
        lines.append("")
        lines.append("modules")
        lines += _table([(_cell(m["name"], 90), f"{m['type']} rank {m['rank']} alpha {_fmt(m['alpha'])} "
                          f"block {m['block'] or '-'}") for m in report["module_list"]])
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    if value is None:
        return "- (= rank)"
    return f"{value:g}"
