"""A kohya dataset TOML trains as kohya would: .caption by default, each subset's caption and augmentation
options, each [[datasets]] block's resolution, buckets and batch size, metadata_file subsets, alpha masks, and
nothing the user wrote dropped silently."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from train.config import load_config
from train.data.dataset import DatasetError, Sample, build_items, plan_epoch
from train.data.loader import BatchBuilder


def image(path: Path, size: tuple[int, int] = (64, 64), caption: str | None = None, ext: str = ".caption",
          rgba: bool = False) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    if rgba:
        img = Image.new("RGBA", size, (200, 30, 30, 255))
        img.paste((0, 0, 0, 0), (0, 0, size[0] // 2, size[1]))  # left half transparent
    else:
        rng = random.Random(str(path))
        img = Image.new("RGB", size)
        img.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(size[0] * size[1])])
    img.save(path)
    if caption is not None:
        path.with_suffix(ext).write_text(caption, encoding="utf-8")


def load(tmp_path: Path, toml: str, *extra: str):
    (tmp_path / "ds.toml").write_text(toml, encoding="utf-8")
    cfg = load_config(overrides=["model.path=/m.safetensors", f"dataset.path={tmp_path / 'ds.toml'}",
                                 "dataset.resolution=64", "dataset.min_bucket_reso=64", "dataset.max_bucket_reso=128",
                                 *extra])
    warnings: list[str] = []
    data = build_items(cfg.dataset, lambda m, p: warnings.append(m), batch_size=cfg.train.batch_size,
                       masked_loss=cfg.train.masked_loss)
    return cfg, data, warnings


def captions_of(data, cfg, subset: int, epoch: int = 1, n: int = 6) -> list[str]:
    builder = BatchBuilder(items=data.items, captions=cfg.dataset.caption_settings(), seed=1,
                           subsets=data.run.subsets)
    mine = [i for i in data.items if i.subset == subset]
    return [builder.build([Sample(item=mine[0].index, position=p)], epoch)["captions"][0] for p in range(n)]


def test_caption_extension_defaults_to_kohyas_caption(tmp_path: Path) -> None:
    image(tmp_path / "a" / "x.png", caption="from caption file")
    (tmp_path / "a" / "x.txt").write_text("from txt file", encoding="utf-8")
    cfg, data, _ = load(tmp_path, "[[datasets]]\n[[datasets.subsets]]\nimage_dir = 'a'\n")
    assert data.items[0].caption == "from caption file"
    # a TOML's own extension wins, and [dataset].caption_extension is the fallback for subsets that name none
    cfg, data, _ = load(tmp_path, "[[datasets]]\n[[datasets.subsets]]\nimage_dir = 'a'\ncaption_extension = '.txt'\n")
    assert data.items[0].caption == "from txt file"
    cfg, data, _ = load(tmp_path, "[[datasets]]\n[[datasets.subsets]]\nimage_dir = 'a'\n",
                        "dataset.caption_extension=.txt")
    assert data.items[0].caption == "from txt file"


def test_each_subset_keeps_its_own_caption_options(tmp_path: Path) -> None:
    image(tmp_path / "a" / "x.png", caption="alice, red hair, smile, sky")
    image(tmp_path / "b" / "y.png", caption="bob ||| blue hair, frown, night ||| by artist")
    image(tmp_path / "c" / "z.png", caption="carol, hat")
    toml = ("[general]\nshuffle_caption = true\n[[datasets]]\n"
            "[[datasets.subsets]]\nimage_dir = 'a'\nkeep_tokens = 1\ncaption_prefix = 'sks'\ncaption_suffix = 'x'\n"
            "[[datasets.subsets]]\nimage_dir = 'b'\nkeep_tokens_separator = '|||'\n"
            "[[datasets.subsets]]\nimage_dir = 'c'\nshuffle_caption = false\ncaption_dropout_rate = 1.0\n")
    cfg, data, warnings = load(tmp_path, toml)
    assert not warnings
    a = captions_of(data, cfg, 0)
    # kohya adds prefix and suffix before shuffling: the prefix joins the kept first tag, the suffix a tag
    assert all(c.startswith("sks alice, ") and " x" in c for c in a) and len(set(a)) > 1
    b = captions_of(data, cfg, 1)
    assert all(c.startswith("bob, ") and c.endswith(", by artist") and "|||" not in c for c in b) and len(set(b)) > 1
    assert set(captions_of(data, cfg, 2)) == {""}  # its own dropout; shuffle off for it only


def test_flip_and_color_aug_per_subset(tmp_path: Path) -> None:
    image(tmp_path / "a" / "x.png", caption="a")
    image(tmp_path / "b" / "y.png", caption="b")
    toml = ("[[datasets]]\n[[datasets.subsets]]\nimage_dir = 'a'\nflip_aug = true\ncolor_aug = true\n"
            "[[datasets.subsets]]\nimage_dir = 'b'\n")
    cfg, data, _ = load(tmp_path, toml)
    builder = BatchBuilder(items=data.items, captions=cfg.dataset.caption_settings(), seed=3,
                           subsets=data.run.subsets)
    plain = BatchBuilder(items=data.items, captions=cfg.dataset.caption_settings(), seed=3)
    a = next(i for i in data.items if i.subset == 0)
    b = next(i for i in data.items if i.subset == 1)
    changed = [not torch.equal(builder.build([Sample(a.index, p)], 1)["pixels"],
                               plain.build([Sample(a.index, p)], 1)["pixels"]) for p in range(40)]
    assert 15 < sum(changed) < 40  # flips (half) and color changes (a third) for subset a
    assert all(torch.equal(builder.build([Sample(b.index, p)], 1)["pixels"], plain.build([Sample(b.index, p)], 1)
                           ["pixels"]) for p in range(10))  # subset b: untouched


def test_each_dataset_has_its_own_resolution_buckets_and_batch_size(tmp_path: Path) -> None:
    for i in range(5):
        image(tmp_path / "a" / f"{i}.png", (96, 64), caption="a")
    toml = ("[[datasets]]\nresolution = 64\nbatch_size = 2\n[[datasets.subsets]]\nimage_dir = 'a'\n"
            "[[datasets]]\nresolution = 128\nmin_bucket_reso = 64\nmax_bucket_reso = 256\nbatch_size = 3\n"
            "[[datasets.subsets]]\nimage_dir = 'a'\nnum_repeats = 2\n")
    cfg, data, _ = load(tmp_path, toml, "train.batch_size=1")
    first = {i.bucket for i in data.items if i.dataset == 0}
    second = {i.bucket for i in data.items if i.dataset == 1}
    assert all(w * h <= 64 * 64 for w, h in first) and all(w * h > 64 * 64 for w, h in second)
    assert data.batch_sizes() == {0: 2, 1: 3}
    steps = data.step_math(cfg.train)
    assert steps.batches_per_epoch == 3 + 4  # ceil(5 / 2) + ceil(10 / 3): kohya's count per dataset
    plan = plan_epoch(data.items, data.batch_sizes(), seed=0, epoch=1)
    assert len(plan) == 7 and all(len({data.items[s.item].group for s in b}) == 1 for b in plan)
    assert sorted(len(b) for b in plan) == [1, 1, 2, 2, 3, 3, 3]


def test_metadata_file_subsets_use_kohyas_json_captions(tmp_path: Path) -> None:
    image(tmp_path / "ft" / "one.png")
    image(tmp_path / "ft" / "two.png")
    image(tmp_path / "ft" / "unlisted.png")
    (tmp_path / "meta.json").write_text(json.dumps({
        "one": {"caption": "a cat", "tags": "cat, sitting"},  # kohya's default key: the stem
        str(tmp_path / "ft" / "two.png"): {"tags": "dog"},  # or the full path
        "gone": {"caption": "not there"},
    }), encoding="utf-8")
    cfg, data, warnings = load(tmp_path, "[[datasets]]\n[[datasets.subsets]]\nimage_dir = 'ft'\n"
                                         "metadata_file = 'meta.json'\n")
    by_path = {Path(i.path).name: i for i in data.items}
    assert set(by_path) == {"one.png", "two.png"}  # only what the file lists
    assert by_path["one.png"].caption == "a cat,cat, sitting" and by_path["two.png"].caption == "dog"
    assert any("meta.json" in w and "gone" in w for w in warnings)


def test_alpha_masks_follow_the_image(tmp_path: Path) -> None:
    image(tmp_path / "a" / "x.png", caption="a", rgba=True)
    image(tmp_path / "a" / "y.png", caption="b")  # no alpha: counts fully
    cfg, data, _ = load(tmp_path, "[[datasets]]\n[[datasets.subsets]]\nimage_dir = 'a'\nalpha_mask = true\n")
    builder = BatchBuilder(items=data.items, captions=cfg.dataset.caption_settings(), seed=0,
                           subsets=data.run.subsets)
    x = next(i for i in data.items if i.path.endswith("x.png"))
    y = next(i for i in data.items if i.path.endswith("y.png"))
    batch = builder.build([Sample(x.index, 0), Sample(y.index, 1)], 1)
    masks = batch["masks"]
    assert masks.shape == (2, 64, 64) and masks[1].min() == 1.0
    assert masks[0, :, :32].max() == 0.0 and masks[0, :, 32:].min() == 1.0  # the transparent left half
    # the masked loss then learns the opaque half only (train.loss.masked)
    cfg, data, _ = load(tmp_path, "[[datasets]]\n[[datasets.subsets]]\nimage_dir = 'a'\n", "train.masked_loss=true")
    assert all(s.masks for s in data.run.subsets)


def test_nothing_written_is_dropped_silently(tmp_path: Path) -> None:
    image(tmp_path / "a" / "x.png", caption="a")
    with pytest.raises(DatasetError, match=r"'shufle_caption' .* is not a kohya dataset key; did you mean "
                                           r"'shuffle_caption'\?"):
        load(tmp_path, "[[datasets]]\n[[datasets.subsets]]\nimage_dir = 'a'\nshufle_caption = true\n")
    _, _, warnings = load(tmp_path, "[[datasets]]\nnetwork_multiplier = 0.5\n[[datasets.subsets]]\n"
                                    "image_dir = 'a'\nenable_wildcard = true\ncache_info = true\n")
    assert any("enable_wildcard" in w and "trains without it" in w for w in warnings)
    assert any("network_multiplier" in w for w in warnings) and any("cache_info changes nothing" in w
                                                                    for w in warnings)
    _, _, warnings = load(tmp_path, "[[datasets]]\n[[datasets.subsets]]\nimage_dir = 'a'\nenable_wildcard = false\n")
    assert not warnings  # kohya's no-op value: nothing to say
    with pytest.raises(DatasetError, match="caption_dropout_rate: 2 is not allowed: must be <= 1"):
        load(tmp_path, "[[datasets]]\n[[datasets.subsets]]\nimage_dir = 'a'\ncaption_dropout_rate = 2\n")
    with pytest.raises(DatasetError, match="random_crop cannot be used with cached latents"):
        load(tmp_path, "[[datasets]]\n[[datasets.subsets]]\nimage_dir = 'a'\nrandom_crop = true\n",
             "dataset.cache_latents=true")
