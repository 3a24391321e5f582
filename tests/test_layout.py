"""Dataset layouts: kohya folders, bmaltais img/reg, flat folders, kohya dataset TOML, and bad paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from curator.layout import IMAGE_EXTENSIONS, LayoutError, is_image_name, load_layout
from tests.conftest import photo, save_photo


def _img(path: Path) -> None:
    save_photo(photo("chelsea.png", (320, 256)), path)


def test_kohya_folders_with_repeats_class_tokens_and_reg(kohya_dataset: Path) -> None:
    (kohya_dataset / "notes").mkdir()
    _img(kohya_dataset / "notes" / "x.png")
    layout = load_layout(kohya_dataset)
    assert layout.source == "kohya"
    by_dir = {s.rel_dir: s for s in layout.subsets}
    assert set(by_dir) == {"10_sks dog", "reg/1_dog"}
    train, reg = by_dir["10_sks dog"], by_dir["reg/1_dog"]
    assert (train.repeats, train.class_tokens, train.is_reg) == (10, "sks dog", False)
    assert (reg.repeats, reg.class_tokens, reg.is_reg) == (1, "dog", True)
    assert train.caption_extension == ".txt" and train.image_dir == kohya_dataset / "10_sks dog"
    assert any("notes/" in w for w in layout.warnings)


def test_class_tokens_keep_underscores_after_the_first(tmp_path: Path) -> None:
    _img(tmp_path / "3_my_char_name" / "a.png")
    (subset,) = load_layout(tmp_path).subsets
    assert (subset.repeats, subset.class_tokens) == (3, "my_char_name")


def test_bmaltais_img_and_reg_folders(tmp_path: Path) -> None:
    _img(tmp_path / "img" / "20_ohwx woman" / "a.png")
    _img(tmp_path / "reg" / "1_woman" / "b.png")
    (tmp_path / "log").mkdir()
    (tmp_path / "model").mkdir()
    layout = load_layout(tmp_path)
    assert [(s.rel_dir, s.repeats, s.is_reg) for s in layout.subsets] == [
        ("img/20_ohwx woman", 20, False),
        ("reg/1_woman", 1, True),
    ]


def test_flat_folder_is_one_subset_with_repeats_1(flat_dataset: Path) -> None:
    layout = load_layout(flat_dataset, caption_extension="caption")
    assert layout.source == "flat"
    (subset,) = layout.subsets
    assert (subset.rel_dir, subset.repeats, subset.caption_extension) == ("", 1, ".caption")


def test_kohya_toml(tmp_path: Path) -> None:
    _img(tmp_path / "train" / "a.png")
    _img(tmp_path / "regs" / "b.png")
    config = tmp_path / "dataset.toml"
    config.write_text(
        """
[general]
shuffle_caption = true
caption_extension = ".txt"
keep_tokens = 1

[[datasets]]
resolution = [768, 768]
min_bucket_reso = 320
max_bucket_reso = 1280
bucket_reso_steps = 64

  [[datasets.subsets]]
  image_dir = "train"
  num_repeats = 8
  class_tokens = "sks cat"

  [[datasets.subsets]]
  image_dir = "regs"
  is_reg = true
  caption_extension = ".caption"
  keep_tokens = 0
""",
        encoding="utf-8",
    )
    layout = load_layout(config)
    assert layout.source == "toml" and layout.root == tmp_path.resolve()
    train, reg = layout.subsets
    assert (train.rel_dir, train.repeats, train.class_tokens, train.is_reg) == ("train", 8, "sks cat", False)
    assert (train.caption_extension, train.keep_tokens) == (".txt", 1)
    assert (reg.rel_dir, reg.is_reg, reg.caption_extension, reg.keep_tokens) == ("regs", True, ".caption", 0)
    assert layout.toml_settings["resolution"] == [768, 768] and layout.toml_settings["min_bucket_reso"] == 320


def test_toml_without_caption_extension_uses_kohyas_default(tmp_path: Path) -> None:
    _img(tmp_path / "train" / "a.png")
    config = tmp_path / "d.toml"
    config.write_text('[[datasets]]\n[[datasets.subsets]]\nimage_dir = "train"\n', encoding="utf-8")
    (subset,) = load_layout(config).subsets
    assert subset.caption_extension == ".caption" and subset.repeats == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not = [valid", "not a readable kohya dataset TOML"),
        ("[general]\nx = 1\n", "no [[datasets]] table"),
        ('[[datasets]]\n[[datasets.subsets]]\nimage_dir = "missing"\n', "is not a folder"),
    ],
)
def test_bad_toml_says_why(tmp_path: Path, content: str, message: str) -> None:
    config = tmp_path / "d.toml"
    config.write_text(content, encoding="utf-8")
    with pytest.raises(LayoutError, match=message.replace("[", r"\[")):
        load_layout(config)


def test_missing_path_and_non_dataset_file(tmp_path: Path) -> None:
    with pytest.raises(LayoutError, match="no such dataset"):
        load_layout(tmp_path / "nope")
    other = tmp_path / "a.txt"
    other.write_text("x")
    with pytest.raises(LayoutError, match="folder of images or a kohya dataset .toml"):
        load_layout(other)
    with pytest.raises(LayoutError, match="not a file extension"):
        load_layout(tmp_path, caption_extension="a/b")


_NAME_PIECES = [*"aJ.P-g_ éx", ".jpg", ".JPEG", ".png", ".webp", ".txt", "jpg"]


@given(st.lists(st.sampled_from(_NAME_PIECES), max_size=8).map("".join))
def test_is_image_name_follows_the_splitext_rule(name: str) -> None:
    """The walk's fast image-name test agrees with ``os.path.splitext`` on every name."""
    expected = not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
    assert is_image_name(name) is expected
