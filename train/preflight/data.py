"""Dataset checks: the dataset folder is there, and the batch size fits the buckets (kohya's batches never mix
buckets, so a bucket smaller than the batch gives short batches)."""

from __future__ import annotations

from collections.abc import Iterator

from train.preflight.core import Context, Finding, check, error, warning


@check("dataset folder")
def dataset_folder(ctx: Context) -> Iterator[Finding]:
    """dataset.path exists and is a folder (or a kohya dataset .toml) this user can list."""
    path = ctx.cfg.dataset.path.expanduser()
    if not path.exists():
        yield error("dataset.path", f"{path} does not exist", fix="--set dataset.path=<your dataset folder>")
    elif path.is_file() and path.suffix.lower() != ".toml":
        yield error("dataset.path", f"{path} is a file; give the dataset folder (or a kohya dataset .toml)",
                    fix=f"--set dataset.path={path.parent}")
    elif path.is_dir():
        try:
            next(iter(path.iterdir()), None)
        except OSError as exc:
            yield error("dataset.path", f"{path} cannot be listed: {exc.strerror or exc}",
                        fix="check the folder's permissions")


@check("batch size and buckets", stage="dataset")
def batch_size_and_buckets(ctx: Context) -> Iterator[Finding]:
    """The batch fits the buckets: an error when no bucket holds a full batch (every batch would be short),
    a warning naming the buckets whose batches are short. Each ``[[datasets]]`` block of a dataset TOML is
    judged with its own batch size."""
    from train.data.dataset import group_counts

    if ctx.data is None or not ctx.data.items:
        return
    sizes = ctx.data.batch_sizes()
    groups = group_counts(ctx.data.items)
    several = len(sizes) > 1
    for index, size in sorted(sizes.items()):
        counts = {bucket: n for (d, bucket), n in groups.items() if d == index}
        if not counts:
            continue
        yield from _batch_findings(ctx, counts, size, f"[[datasets]] block {index + 1}: " if several else "",
                                   toml_batch=ctx.data.run.datasets[index].batch_from_toml)


def _batch_findings(ctx: Context, counts: dict[tuple[int, int], int], size: int, where: str,
                    toml_batch: bool) -> Iterator[Finding]:
    batch = size * ctx.num_processes
    name = "the dataset TOML's batch_size" if toml_batch else "train.batch_size"
    who = f"{where}{name} = {size}" + (f" x {ctx.num_processes} processes" if ctx.num_processes > 1 else "")
    largest_bucket, largest = max(counts.items(), key=lambda kv: kv[1])
    if largest < batch:
        per_process = max(1, largest // ctx.num_processes)
        fix = (f"set batch_size = {per_process} in that [[datasets]] block" if toml_batch else
               f"--set train.batch_size={per_process}")
        yield error("train.batch_size",
                    f"{who} is larger than every bucket: the largest, {largest_bucket[0]}x{largest_bucket[1]}, "
                    f"holds {largest} samples (images x repeats), so no batch would ever be full. A batch never "
                    "mixes buckets (kohya's rule; kohya then trains every batch short without a word, kiln "
                    "refuses)", fix=f"{fix} (or raise the repeats, or use gradient_accumulation_steps for a "
                    "larger effective batch)")
        return
    short = {b: n for b, n in counts.items() if n % batch and n < batch}
    if short:
        listed = ", ".join(f"{w}x{h}:{n}" for (w, h), n in sorted(short.items())[:6])
        more = f" (+{len(short) - 6} more)" if len(short) > 6 else ""
        yield warning("train.batch_size",
                      f"{where}{len(short)} of {len(counts)} buckets hold fewer samples than the batch of {batch} "
                      f"({listed}{more}): their batches are short. kohya and kiln do the same (a batch never "
                      "mixes buckets); with several processes kiln fills them by repeating the bucket's samples")


@check("validation split", stage="dataset")
def validation_split(ctx: Context) -> Iterator[Finding]:
    """The held-out split holds images: a warning when ``validation_split`` holds out none (every folder
    too small), or when a validation interval is set without a split."""
    d, t = ctx.cfg.dataset, ctx.cfg.train
    interval = "train.validate_every_n_steps" if t.validate_every_n_steps else (
        "train.validate_every_n_epochs" if t.validate_every_n_epochs else None)
    if d.validation_split <= 0:
        if interval:
            yield warning(interval, "is set but dataset.validation_split is 0: no images are held out, so no "
                          "validation loss is computed", fix="--set dataset.validation_split=0.1")
        return
    if ctx.held_out is not None and not ctx.held_out:
        yield warning("dataset.validation_split",
                      f"{d.validation_split:g} of each folder rounds to no image (a folder keeps at least one "
                      "image for training): no validation loss is computed",
                      fix=f"--set dataset.validation_split={min(0.5, max(0.2, d.validation_split * 2)):g}")


@check("loss masks", stage="dataset")
def loss_masks(ctx: Context) -> Iterator[Finding]:
    """Subsets trained with a loss mask (``masked_loss``, a subset's ``alpha_mask`` or ``conditioning_data_dir``)
    have one: an error for images without a same-named mask in the conditioning folder (the run would stop
    when it reaches them); a warning for alpha-mask subsets where no image has an alpha channel (every mask
    would be all ones: the loss is not masked)."""
    from train.data.images import MASK_EXTENSIONS

    if ctx.data is None or ctx.dataset is None:
        return
    alpha = {r.path for r in ctx.dataset.images() if any(f.kind == "alpha" for f in r.flags)}
    for spec in ctx.data.run.subsets:
        if not spec.masks:
            continue
        items = {i.path: i for i in ctx.data.items + ctx.data.held_out if i.subset == spec.index}
        if not items:
            continue
        name = spec.subset.image_dir.name
        if spec.conditioning_dir is not None:
            folder = spec.conditioning_dir
            missing = sorted(p for p, i in items.items()
                             if not any((folder / (i.abs_path.stem + ext)).is_file() for ext in MASK_EXTENSIONS))
            if missing:
                shown = ", ".join(missing[:3]) + (f" (+{len(missing) - 3} more)" if len(missing) > 3 else "")
                yield error("dataset.path", f"subset {name!r}: {len(missing)} of {len(items)} images have no mask "
                            f"image of the same name in {folder} ({shown})",
                            fix=f"add <image name>.png masks to {folder} (white = trained, black = ignored)")
        elif not spec.subset.is_reg and not any(path in alpha for path in items):  # reg images: unmasked is usual
            yield warning("train.masked_loss" if ctx.cfg.train.masked_loss else "dataset.path",
                          f"subset {name!r}: loss masks come from the alpha channel, and none of its {len(items)} "
                          "images has one: every mask is all ones, the loss is not masked",
                          fix="save the images as RGBA PNG/WebP with the background transparent, or give the "
                              "subset a conditioning_data_dir of masks")
