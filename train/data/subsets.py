"""What each dataset and subset of a run trains with: ``[dataset]``'s options, overridden by a kohya dataset TOML
the way kohya resolves them (``config_util.BlueprintGenerator``: a subset's own key, else its
``[[datasets]]`` block's, else ``[general]``'s, else the training config's).

Each ``[[datasets]]`` block keeps its own resolution, buckets and batch size; each subset its own caption
processing (shuffle, keep tokens, separator, prefix/suffix, dropouts), augmentation (flip, color, random crop)
and alpha masks. Nothing written in the TOML is dropped silently: keys kiln does not know are an error (kohya's
schema refuses them too), kohya keys kiln does not implement are a warning naming the key when their value
would change training.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from curator.buckets import BucketSettings
from train.data.captions import CaptionSettings
from train.data.dataset import DatasetError, bucket_settings

if TYPE_CHECKING:
    from curator.layout import DatasetLayout, Subset
    from train.config import DatasetConfig

# Keys of a kohya dataset TOML kiln honours, by where kohya accepts them.
SUBSET_ONLY_KEYS = ("image_dir", "metadata_file", "is_reg", "alpha_mask", "conditioning_data_dir")
SUBSET_KEYS = (  # kohya's "ascendable" subset keys: a dataset or [general] may set them for its subsets
    "num_repeats", "class_tokens", "caption_extension", "keep_tokens", "keep_tokens_separator",
    "caption_separator", "shuffle_caption", "caption_prefix", "caption_suffix", "caption_dropout_rate",
    "caption_dropout_every_n_epochs", "caption_tag_dropout_rate", "flip_aug", "color_aug", "random_crop",
)
DATASET_KEYS = ("resolution", "enable_bucket", "min_bucket_reso", "max_bucket_reso", "bucket_reso_steps",
                "bucket_no_upscale", "batch_size")
# kohya keys kiln does not implement, with the value that makes them a no-op (None: any value is one).
UNSUPPORTED: dict[str, object] = {
    "face_crop_aug_range": None, "secondary_separator": None, "enable_wildcard": False, "token_warmup_min": 1,
    "token_warmup_step": 0, "custom_attributes": None, "resize_interpolation": None, "network_multiplier": 1.0,
    "validation_split": 0.0, "validation_seed": "any", "cache_info": "any", "debug_dataset": False,
}
NO_EFFECT = ("validation_seed", "cache_info", "debug_dataset")  # change nothing kiln trains
KNOWN_KEYS = frozenset((*SUBSET_ONLY_KEYS, *SUBSET_KEYS, *DATASET_KEYS, *UNSUPPORTED, "subsets"))
# subset keys that are [dataset] fields of the same name (the rest are read by hand)
_CONFIG_SUBSET_KEYS = ("keep_tokens", "keep_tokens_separator", "caption_separator", "shuffle_caption",
                       "caption_prefix", "caption_suffix", "caption_dropout_rate", "caption_dropout_every_n_epochs",
                       "caption_tag_dropout_rate", "flip_aug", "color_aug", "random_crop", "alpha_mask")
_CONFIG_DATASET_KEYS = ("resolution", "enable_bucket", "min_bucket_reso", "max_bucket_reso", "bucket_reso_steps",
                        "bucket_no_upscale")


class SubsetError(DatasetError):
    """A dataset TOML kiln cannot train from as written; the message names the key and the fix."""


@dataclass(frozen=True)
class DatasetSpec:
    """One ``[[datasets]]`` block (a folder dataset is one): its resolution, buckets and batch size."""

    index: int
    config: DatasetConfig
    """``[dataset]`` with this block's resolution and bucket keys applied."""
    batch_size: int
    batch_from_toml: bool = False
    """The batch size is the TOML's own (else ``train.batch_size``)."""

    @property
    def buckets(self) -> BucketSettings:
        return bucket_settings(self.config)


@dataclass(frozen=True)
class SubsetSpec:
    """One subset as training reads it: its folder in the curator's index, repeats and options."""

    index: int
    dataset: int
    subset: Subset
    config: DatasetConfig
    """``[dataset]`` with this subset's caption, augmentation and mask keys applied."""
    masks: bool
    """Train with a loss mask: the alpha channel, or the same-named image in ``conditioning_dir``."""
    conditioning_dir: Path | None

    @property
    def name(self) -> str:
        """kohya's key for the subset in ss_tag_frequency / ss_dataset_dirs: the folder's (or the metadata
        file's) base name."""
        source = self.subset.metadata_file or self.subset.image_dir
        return source.name

    @property
    def captions(self) -> CaptionSettings:
        return self.config.caption_settings()

    @property
    def keep_tokens(self) -> int:
        return self.config.keep_tokens or 0


@dataclass(frozen=True)
class RunData:
    """The datasets and subsets of a run, in the TOML's order."""

    datasets: list[DatasetSpec]
    subsets: list[SubsetSpec]


Warn = Callable[[str, "str | None"], object]


def resolve(cfg: DatasetConfig, layout: DatasetLayout, *, batch_size: int, masked_loss: bool,
            warn: Warn) -> RunData:
    """The datasets and subsets of ``layout`` with their options resolved (see the module docstring).
    ``batch_size`` is ``train.batch_size`` (kohya's ``--train_batch_size``, what a TOML without its own
    falls back to); ``masked_loss`` turns loss masks on for every subset."""
    toml = layout.source == "toml"
    where = layout.toml_path or layout.root
    if toml:
        _check_keys(layout, where, warn)
    datasets: list[DatasetSpec] = []
    for index, options in enumerate(layout.dataset_options or [{}]):
        config = _apply(cfg, {k: options[k] for k in _CONFIG_DATASET_KEYS if options.get(k) is not None},
                        f"{where}: datasets[{index}]")
        size = options.get("batch_size")
        own = size if isinstance(size, int) and size >= 1 else None
        datasets.append(DatasetSpec(index=index, config=config, batch_size=own or batch_size,
                                    batch_from_toml=own is not None))
    subsets: list[SubsetSpec] = []
    for index, subset in enumerate(layout.training_subsets):
        options = dict(subset.options)
        updates: dict[str, object] = {k: options[k] for k in _CONFIG_SUBSET_KEYS if options.get(k) is not None}
        if toml and "keep_tokens" not in updates:  # the layout's keep_tokens (0 unless the TOML says)
            updates["keep_tokens"] = cfg.keep_tokens if cfg.keep_tokens is not None else subset.keep_tokens
        config = _apply(datasets[subset.dataset].config if subset.dataset < len(datasets) else cfg, updates,
                        f"{where}: subset {subset.image_dir}")
        label = f"{where}: subset {subset.image_dir.name!r}"
        if (cfg.cache_latents or cfg.cache_latents_to_disk) and (config.random_crop or config.color_aug):
            raise SubsetError(f"{label}: {'random_crop' if config.random_crop else 'color_aug'} cannot be used "
                              "with cached latents (kohya refuses it too); turn it off or turn latent caching off")
        if cfg.caches_text_encoder_outputs and not config.static_captions:
            raise SubsetError(f"{label}: its captions change every epoch (shuffle_caption / caption dropout / tag "
                              "dropout), so text-encoder outputs cannot be cached; turn those off or the cache off")
        conditioning = options.get("conditioning_data_dir")
        conditioning_dir = None
        if conditioning:
            conditioning_dir = Path(str(conditioning)).expanduser()
            if not conditioning_dir.is_absolute() and layout.toml_path is not None:
                conditioning_dir = (layout.toml_path.parent / conditioning_dir).resolve()
            if not conditioning_dir.is_dir():
                raise SubsetError(f"{where}: conditioning_data_dir {str(conditioning)!r} is not a folder")
            if not masked_loss:
                warn(f"{where}: conditioning_data_dir of subset {subset.image_dir.name!r} is read as loss masks "
                     "only with train.masked_loss = true (kohya's masked loss); it is not used", None)
        masks = config.alpha_mask or masked_loss
        subsets.append(SubsetSpec(index=index, dataset=subset.dataset, subset=subset, config=config,
                                  masks=masks, conditioning_dir=conditioning_dir if masked_loss else None))
    return RunData(datasets=datasets, subsets=subsets)


def _apply(cfg: DatasetConfig, updates: Mapping[str, object], where: str) -> DatasetConfig:
    """``cfg`` with the TOML's values for some of its keys, validated as ``[dataset]`` is."""
    from train.config import DatasetConfig, format_validation_error

    if not updates:
        return cfg
    try:
        return DatasetConfig.model_validate({**cfg.model_dump(), **updates})
    except ValidationError as exc:
        lines = [line.replace("dataset.", "", 1) for line in format_validation_error(exc)]
        raise SubsetError(f"{where}: " + "; ".join(lines)) from None


def _check_keys(layout: DatasetLayout, where: Path, warn: Warn) -> None:
    """Unknown keys are refused (with a close match); kohya keys kiln does not implement are a warning when
    their value is not kohya's no-op default."""
    tables: list[tuple[str, Mapping[str, object]]] = []
    for d_index, dataset_options in enumerate(layout.dataset_options):
        tables.append((f"datasets[{d_index}]", dataset_options))
    for subset in layout.training_subsets:
        tables.append((f"datasets[{subset.dataset}] subset {subset.image_dir.name!r}", subset.options))
    unknown: dict[str, str] = {}
    unsupported: dict[str, list[str]] = {}
    for label, options in tables:
        for key, value in options.items():
            if key not in KNOWN_KEYS:
                unknown.setdefault(key, label)
            elif key in UNSUPPORTED and key not in NO_EFFECT and value is not None \
                    and value != UNSUPPORTED[key] and value not in ({}, []):
                unsupported.setdefault(key, []).append(label)
    if unknown:
        lines = []
        for key, label in unknown.items():
            close = difflib.get_close_matches(key, sorted(KNOWN_KEYS), n=1)
            lines.append(f"{key!r} ({label}) is not a kohya dataset key" +
                         (f"; did you mean {close[0]!r}?" if close else ""))
        raise SubsetError(f"{where}: " + "; ".join(lines) + " (kohya refuses unknown keys too)")
    for key, labels in unsupported.items():
        warn(f"{where}: kiln does not implement kohya's {key} and trains without it ({', '.join(labels[:3])}"
             f"{' ...' if len(labels) > 3 else ''})", None)
    for key in NO_EFFECT:
        if any(key in options for _, options in tables):
            warn(f"{where}: {key} changes nothing in kiln (ignored)", None)
