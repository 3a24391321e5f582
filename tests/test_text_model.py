"""The optional ONNX text detector of the text-heavy check: wiring, input preprocessing, score mapping, the
cache, and a clear message for each bad --text-model (tiny detectors built in the test, tests/onnx_models.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from pydantic import ValidationError

from curator.dataset import Dataset
from curator.scan.config import ScanConfig
from curator.textdetect.check import text_areas
from curator.textdetect.config import TextModelConfig
from curator.textdetect.model import TextDetector, TextModelError
from tests.conftest import photo, save_photo
from tests.onnx_models import build_tagger_onnx, build_text_detector_onnx
from tui.cli import main as kiln


def _banner(size: tuple[int, int], share: float) -> Image.Image:
    """Black, with the top ``share`` of the rows pure red."""
    image = Image.new("RGB", size, (0, 0, 0))
    image.paste((255, 0, 0), (0, 0, size[0], round(size[1] * share)))
    return image


def _lines(size: tuple[int, int], starts: tuple[float, ...], height: float) -> Image.Image:
    """Black, with red full-width lines (text lines for the test detector) at ``starts`` (shares of the height)."""
    image = Image.new("RGB", size, (0, 0, 0))
    for start in starts:
        image.paste((255, 0, 0), (0, round(size[1] * start), size[0], round(size[1] * (start + height))))
    return image


def _raw(path: Path, **fields: object) -> TextModelConfig:
    """The detector's thresholded map as it is: no region dropped, none grown (geometry of the input and map)."""
    return TextModelConfig.model_validate({"path": path, "unclip_ratio": 0.0, "min_elongation": 1.0, **fields})


@pytest.mark.parametrize(
    ("preset", "channel", "mean", "std"),
    [("db", 2, 0.406, 0.225), ("doctr", 0, 0.798, 0.264), ("east", 0, 123.68 / 255, 1 / 255)],
)
def test_each_preset_feeds_the_channels_and_normalisation_of_its_family(
    tmp_path: Path, preset: str, channel: int, mean: float, std: float
) -> None:
    # the model reads red back only if kiln put red in `channel` and normalised it as the family does
    model = build_text_detector_onnx(tmp_path / "det.onnx", channel=channel, mean=mean, std=std)
    detector = TextDetector.load(_raw(model, preset=preset, side=96))
    assert detector.text_area(_banner((200, 100), 0.3)) == pytest.approx(0.3, abs=0.05)
    assert detector.text_area(_banner((200, 100), 0.0)) == 0.0  # the padding (the mean colour) is not text
    assert detector.text_area(Image.new("RGB", (200, 100), (0, 0, 255))) == 0.0  # blue is not red


@pytest.mark.parametrize(("size", "logits", "rank"), [(64, False, 4), (None, True, 4), (None, False, 3)])
def test_fixed_or_free_input_size_logits_and_rank_3_maps(
    tmp_path: Path, size: int | None, logits: bool, rank: int
) -> None:
    model = build_text_detector_onnx(tmp_path / "det.onnx", size=size, logits=logits, rank=rank)
    detector = TextDetector.load(_raw(model, side=128))
    tensor, cover = detector.prepare(_banner((300, 150), 0.5))
    assert tensor.shape[:2] == (1, 3) and tensor.shape[2] % 32 == 0 and tensor.shape[3] % 32 == 0
    if size:
        assert tensor.shape[2:] == (64, 64) and cover == pytest.approx((32 / 64, 1.0))  # 64x32, padded below
    else:
        assert tensor.shape[2:] == (64, 128) and cover == pytest.approx((1.0, 1.0))  # 128x64 fits
        assert detector.prepare(_banner((300, 100), 0.5))[1] == pytest.approx((43 / 64, 1.0))  # 128x43, padded
    assert detector.text_area(_banner((300, 150), 0.5)) == pytest.approx(0.5, abs=0.05)
    assert detector.text_area(_banner((300, 100), 0.5)) == pytest.approx(0.5, abs=0.12)
    assert detector.text_area(_banner((100, 300), 0.25)) == pytest.approx(0.25, abs=0.1)  # tall: padded at the right


@pytest.fixture
def poster_set(tmp_path: Path) -> Path:
    folder = tmp_path / "ds" / "4_posters"
    save_photo(_lines((400, 300), (0.1, 0.3, 0.5, 0.7), 0.1), folder / "poster.png")  # four lines: 40 %
    save_photo(_lines((300, 400), (0.85,), 0.08), folder / "caption_strip.png")  # one caption line: 8 %
    save_photo(_banner((400, 300), 0.6), folder / "red_block.png")  # a compact region: not a text line
    save_photo(photo("coffee.png", (320, 240)).point(lambda v: v // 3), folder / "dim_coffee.jpg", quality=90)
    return tmp_path / "ds"


def test_check_flags_text_heavy_images_sorted_by_score(poster_set: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = build_text_detector_onnx(poster_set.parent / "det.onnx")
    code = kiln(["check", str(poster_set), "--json", "--kind", "text-heavy", "--sort", "score", "--text-model",
                 str(model), "--text-model-side", "128", "--no-progress"])  # fmt: skip
    flags = json.loads(capsys.readouterr().out)["flags"]
    assert code == 0
    assert [f["path"] for f in flags] == ["4_posters/poster.png", "4_posters/caption_strip.png"]
    assert flags[0]["score"] > flags[1]["score"] > 0
    assert "text lines cover 8" in flags[0]["detail"] and "det.onnx" in flags[0]["detail"]  # 4 lines grown back
    code = kiln(["check", str(poster_set), "--json", "--kind", "text-heavy", "--text-model", str(model),
                 "--text-model-side", "128", "--quality", "text-heavy=0.3", "--no-progress"])  # fmt: skip
    assert [f["path"] for f in json.loads(capsys.readouterr().out)["flags"]] == ["4_posters/poster.png"]
    code = kiln(["check", str(poster_set), "--json", "--kind", "text-heavy", "--no-progress"])
    assert json.loads(capsys.readouterr().out)["flags"] == []  # no model: the check is not run


def test_scores_are_cached_per_file_and_model(poster_set: Path, tmp_path: Path) -> None:
    model = build_text_detector_onnx(tmp_path / "det.onnx")
    config = _raw(model, side=128)
    loads: list[TextModelConfig] = []

    def load(cfg: TextModelConfig) -> TextDetector:
        loads.append(cfg)
        return TextDetector.load(cfg)

    with Dataset.open(poster_set, config=ScanConfig(workers=1)) as ds:
        records = ds.images()
        first = text_areas(ds.index, records, config, ds.config.pixel_limit, load)
        assert len(loads) == 1 and set(first) == {r.path for r in records}
        assert text_areas(ds.index, records, config, ds.config.pixel_limit, load) == first and len(loads) == 1
        other = _raw(model, side=64)  # other preprocessing: scored again
        text_areas(ds.index, records, other, ds.config.pixel_limit, load)
        assert len(loads) == 2
    with Dataset.open(poster_set, config=ScanConfig(workers=1, text_model=_raw(model))) as ds:
        shown = ds.text_areas(progress=True)  # a progress bar on stderr while the detector runs
        assert set(shown) == set(first) and shown["4_posters/poster.png"] == pytest.approx(0.4, abs=0.06)
    save_photo(_lines((400, 300), (0.5,), 0.1), poster_set / "4_posters" / "poster.png")  # the file changes
    with Dataset.open(poster_set, config=ScanConfig(workers=1)) as ds:
        again = text_areas(ds.index, ds.images(), config, ds.config.pixel_limit, load)
        assert len(loads) == 3 and again["4_posters/poster.png"] == pytest.approx(0.1, abs=0.06)


def test_bad_text_models_are_refused_with_the_option_and_the_fix(
    poster_set: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def refused(*extra: str) -> str:
        assert kiln(["check", str(poster_set), "--no-progress", *extra]) == 1
        return capsys.readouterr().err

    err = refused("--text-model", str(tmp_path / "missing.onnx"))
    assert "--text-model" in err and "no file at" in err and "docs/DATASET.md" in err
    tagger = build_tagger_onnx(tmp_path / "tagger.onnx")  # NHWC input, a vector output: not a detector
    err = refused("--text-model", str(tagger))
    assert "--text-model" in err and "its inputs are [['batch', 32, 32, 3]]" in err and "[batch, 3, height, width]" in err
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model at all")
    err = refused("--text-model", str(junk))
    assert "onnxruntime cannot load it" in err
    err = refused("--text-model", str(build_text_detector_onnx(tmp_path / "det.onnx")), "--text-model-side", "100")
    assert "side" in err and "multiple of 32" in err and "--text-model-side" in err
    with pytest.raises(ValidationError, match="preset"):
        TextModelConfig(path=junk, preset="yolo")  # type: ignore[arg-type]
    with pytest.raises(TextModelError, match="outputs"):
        TextDetector.load(TextModelConfig(path=build_tagger_onnx(tmp_path / "t2.onnx", size=3)))


def test_the_hints_name_options_kiln_check_has() -> None:
    import re

    import curator.cli.health
    from curator.textdetect.config import FIELD_HINTS
    from tests.test_config_hints import visible_options

    options = visible_options(curator.cli.health.register, "check")
    assert "--text-model" in options
    for field, hint in FIELD_HINTS.items():
        assert field in TextModelConfig.model_fields
        assert all(option in options for option in re.findall(r"--[a-z][a-z0-9-]*", hint)), hint


def test_the_tui_health_pass_runs_the_text_model_given_to_kiln_curate(
    poster_set: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``kiln DATASET --text-model PATH`` reaches the TUI's health pass through the same TextModelConfig as
    ``kiln check``: the poster is flagged text-heavy with it, nothing is without it; a bad path stops the TUI."""
    from tui.model import DatasetModel

    model_file = build_text_detector_onnx(tmp_path / "det.onnx")

    def text_heavy(text_model: TextModelConfig | None) -> list[str]:
        model = DatasetModel(poster_set, text_model=text_model)
        model.open()
        model.scan()
        model.load_rows(model.scanned_records(), captions=False)
        flags = model.all_flags(refresh=False)
        return sorted(path for path, found in flags.items() if any(f.kind == "text-heavy" for f in found))

    assert text_heavy(TextModelConfig(path=model_file, side=128)) == ["4_posters/caption_strip.png", "4_posters/poster.png"]
    assert text_heavy(None) == []
    assert kiln([str(poster_set), "--text-model", str(tmp_path / "missing.onnx")]) == 1
    err = capsys.readouterr().err
    assert "curate --text-model" in err and "no file at" in err
    assert kiln([str(poster_set), "--text-model", str(model_file), "--text-model-side", "100"]) == 1
    assert "multiple of 32" in capsys.readouterr().err


def test_the_options_pass_only_what_the_user_gave_and_name_the_configs_defaults(tmp_path: Path) -> None:
    import argparse

    from curator.cli import options

    fields = TextModelConfig.model_fields
    assert (fields["preset"].default, fields["side"].default) == (options.TEXT_MODEL_PRESET, options.TEXT_MODEL_SIDE)
    parser = argparse.ArgumentParser()
    options.add_text_model(parser)
    model = build_text_detector_onnx(tmp_path / "det.onnx")
    plain = options.text_model_config(parser.parse_args(["--text-model", str(model)]), "check")
    assert plain == TextModelConfig(path=model)
    given = options.text_model_config(
        parser.parse_args(["--text-model", str(model), "--text-model-side", "960", "--text-model-preset", "east"]),
        "check",
    )
    assert given is not None and (given.side, given.preset) == (960, "east")
    assert options.text_model_config(parser.parse_args([]), "check") is None
