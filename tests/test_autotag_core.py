"""Autotag building blocks: labels, thresholds/MCut, underscores, preprocessing and the ONNX model wrapper."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import skimage
from PIL import Image
from pydantic import ValidationError

from curator.autotag.config import FIELD_HINTS, AutotagConfig
from curator.autotag.labels import Labels, LabelsError, load_labels
from curator.autotag.model import ModelError, TaggerModel, choose_providers, resolve_model
from curator.autotag.pipeline import tag_images
from curator.autotag.preprocess import ImageDecodeError, load_image
from curator.autotag.tagtext import KAOMOJI, display_tag
from curator.autotag.thresholds import SelectionRules, mcut_threshold, select_tags
from curator.configerrors import describe_validation_error
from tests.onnx_models import PROBES, build_tagger_onnx, make_tagger, write_selected_tags

DATA = Path(skimage.__file__).parent / "data"
P = {name: i for i, name in enumerate(PROBES)}

# A realistic tag list: ratings (9), characters (4), general (0), with fixed probabilities.
TAGS = [
    ("general", 9, 0.10),
    ("sensitive", 9, 0.70),
    ("questionable", 9, 0.15),
    ("explicit", 9, 0.05),
    ("hatsune_miku", 4, 0.90),
    ("kirisame_marisa", 4, 0.50),
    ("long_hair", 0, 0.80),
    ("blue_eyes", 0, 0.60),
    ("^_^", 0, 0.50),
    ("smile", 0, 0.36),
    ("solo", 0, 0.34),
    ("open_mouth", 0, 0.20),
]
LABELS = Labels.from_names([t[0] for t in TAGS], [t[1] for t in TAGS])
PROBS = np.array([t[2] for t in TAGS], dtype=np.float32)


# ---- thresholds and selection ---------------------------------------------------------------------
def test_default_thresholds_keep_general_above_035_and_character_above_085():
    pred = select_tags(PROBS, LABELS, SelectionRules())
    assert pred.tags == ["long hair", "blue eyes", "^_^", "smile", "hatsune miku"]
    assert pred.rating == "sensitive"
    assert pred.scores["smile"] == pytest.approx(0.36)


def test_threshold_is_strictly_above():
    pred = select_tags(PROBS, LABELS, SelectionRules(general_threshold=0.36, character_threshold=0.5))
    assert "smile" not in pred.tags and "kirisame marisa" not in pred.tags
    pred = select_tags(PROBS, LABELS, SelectionRules(general_threshold=0.2, character_threshold=0.49))
    assert pred.tags == ["long hair", "blue eyes", "^_^", "smile", "solo", "hatsune miku", "kirisame marisa"]


def test_mcut_threshold_is_midpoint_of_largest_gap():
    assert mcut_threshold(np.array([0.8, 0.6, 0.5, 0.36, 0.34, 0.2])) == pytest.approx(0.7)
    assert mcut_threshold(np.array([0.05, 0.9, 0.85, 0.1])) == pytest.approx(0.475)
    assert mcut_threshold(np.array([0.4])) < 0.4
    assert mcut_threshold(np.array([])) == 1.0


def test_mcut_general_and_character_with_floor():
    pred = select_tags(PROBS, LABELS, SelectionRules(general_mcut=True, character_mcut=True))
    assert pred.tags == ["long hair", "hatsune miku"]
    assert pred.general_threshold == pytest.approx(0.7)
    low = PROBS.copy()
    low[4], low[5] = 0.12, 0.05  # character MCut would be 0.085: floored at 0.15, so no character tag
    pred = select_tags(low, LABELS, SelectionRules(character_mcut=True))
    assert pred.character_threshold == pytest.approx(0.15)
    assert not {"hatsune miku", "kirisame marisa"} & set(pred.tags)


def test_ratings_on_adds_the_most_probable_rating_first():
    assert "sensitive" not in select_tags(PROBS, LABELS, SelectionRules()).tags
    pred = select_tags(PROBS, LABELS, SelectionRules(ratings=True))
    assert pred.tags[0] == "sensitive"
    assert not {"general", "questionable", "explicit"} & set(pred.tags)


def test_exclude_matches_any_spelling():
    rules = SelectionRules(exclude=frozenset({"long hair", "hatsune miku"}))
    assert select_tags(PROBS, LABELS, rules).tags == ["blue eyes", "^_^", "smile"]
    cfg = AutotagConfig(model="m", exclude=["Long_Hair, smile"])
    assert select_tags(PROBS, LABELS, cfg.rules()).tags == ["blue eyes", "^_^", "hatsune miku"]


def test_underscores_become_spaces_except_kaomoji():
    for face in ("^_^", "o_o", ">_<", "0_0", "@_@", "=_=", "|_|"):
        assert face in KAOMOJI
        assert display_tag(face) == face
    assert display_tag("long_hair") == "long hair"
    assert display_tag("long_hair", keep_underscores=True) == "long_hair"
    pred = select_tags(PROBS, LABELS, SelectionRules(keep_underscores=True))
    assert pred.tags == ["long_hair", "blue_eyes", "^_^", "smile", "hatsune_miku"]


def test_character_first_and_max_tags():
    pred = select_tags(PROBS, LABELS, SelectionRules(character_first=True, character_threshold=0.4))
    assert pred.tags == ["hatsune miku", "kirisame marisa", "long hair", "blue eyes", "^_^", "smile"]
    pred = select_tags(PROBS, LABELS, SelectionRules(max_tags=2, exclude=frozenset({"long hair"})))
    assert pred.tags == ["blue eyes", "^_^", "hatsune miku"]


def test_wrong_number_of_probabilities_is_an_error():
    with pytest.raises(ValueError, match="12 tags"):
        select_tags(PROBS[:5], LABELS, SelectionRules())


# ---- config ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "value"),
    [("general_threshold", 1.5), ("character_threshold", -0.1), ("batch_size", 0), ("mode", "merge"), ("max_tags", 0)],
)
def test_config_errors_name_the_field_and_value(field, value):
    with pytest.raises(ValidationError) as info:
        AutotagConfig(model="m", **{field: value})
    text = describe_validation_error(info.value, "autotag", FIELD_HINTS)
    assert field in text and repr(value) in text


def test_config_rejects_unknown_fields_and_empty_model():
    with pytest.raises(ValidationError, match="threshold"):
        AutotagConfig(model="m", threshold=0.5)
    with pytest.raises(ValidationError, match="model"):
        AutotagConfig(model="  ")


# ---- labels ---------------------------------------------------------------------------------------
def test_labels_read_smilingwolf_csv(tmp_path):
    csv_path = write_selected_tags(tmp_path / "selected_tags.csv", [(n, c) for n, c, _ in TAGS])
    labels = load_labels(csv_path)
    assert labels.names[4] == "hatsune_miku"
    assert list(labels.rating) == [0, 1, 2, 3] and list(labels.character) == [4, 5]
    assert list(labels.general) == list(range(6, 12))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"id,tag,count\n1,a,3\n", "missing column"),
        (b"tag_id,name,category,count\n", "no tags"),
        (b"tag_id,name,category,count\n1,a,general,3\n", "not an integer"),
        (b"\xff\xfe\x00garbage", "UTF-8"),
    ],
)
def test_bad_csv_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "selected_tags.csv"
    path.write_bytes(content)
    with pytest.raises(LabelsError, match=message):
        load_labels(path)


# ---- model resolution -----------------------------------------------------------------------------
def test_missing_model_folder_and_missing_files(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model(str(tmp_path / "no" / "such" / "model"))
    folder = tmp_path / "tagger"
    folder.mkdir()
    build_tagger_onnx(folder / "model.onnx", constants=[0.5])
    with pytest.raises(ModelError, match="lacks selected_tags.csv"):
        resolve_model(str(folder))
    (folder / "model.onnx").unlink()
    write_selected_tags(folder / "selected_tags.csv", [("a", 0)])
    with pytest.raises(ModelError, match="lacks model.onnx"):
        resolve_model(str(folder))


def test_csv_of_another_model_is_rejected(tmp_path):
    folder = make_tagger(tmp_path / "m", [(n, c, p) for n, c, p in TAGS])
    write_selected_tags(folder / "selected_tags.csv", [("only_one", 0)])
    with pytest.raises(ModelError, match="does not belong to this model"):
        TaggerModel.load(resolve_model(str(folder)))


def test_corrupt_onnx_is_a_clear_error(tmp_path):
    folder = make_tagger(tmp_path / "m", [("a", 0, 0.5)])
    (folder / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="onnxruntime cannot load"):
        TaggerModel.load(resolve_model(str(folder)))


def test_nchw_model_is_rejected(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["input"], ["output"], axes=[2, 3], keepdims=0)],
        "nchw",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, 32, 32])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", 3])],
    )
    folder = tmp_path / "nchw"
    folder.mkdir()
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), folder / "model.onnx")
    write_selected_tags(folder / "selected_tags.csv", [("a", 0), ("b", 0), ("c", 0)])
    with pytest.raises(ModelError, match="NHWC"):
        TaggerModel.load(resolve_model(str(folder)))


def test_model_path_may_name_the_onnx_file(tmp_path):
    folder = make_tagger(tmp_path / "m", [("a", 0, 0.5)])
    files = resolve_model(str(folder / "model.onnx"))
    assert files.csv_path == folder / "selected_tags.csv"


def test_provider_choice():
    assert choose_providers("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers("auto", ["CUDAExecutionProvider", "CPUExecutionProvider"])[0] == "CUDAExecutionProvider"
    assert choose_providers("auto", ["ROCMExecutionProvider", "CPUExecutionProvider"])[0] == "ROCMExecutionProvider"
    assert choose_providers("cpu", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    with pytest.raises(ModelError, match="onnxruntime-gpu"):
        choose_providers("cuda", ["CPUExecutionProvider"])


# ---- preprocessing, checked through the probe model -----------------------------------------------
@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> TaggerModel:
    folder = make_tagger(tmp_path_factory.mktemp("probe"), [("constant", 0, 0.5)], size=32)
    return TaggerModel.load(resolve_model(str(folder)), device="cpu")


def _run(model: TaggerModel, path: Path) -> np.ndarray:
    return model.predict(load_image(path, model.width, model.height)[None])[0]


def test_bgr_channel_order_on_a_real_photo(probe, tmp_path):
    # chelsea (an orange cat) cropped square, so no padding: probes must equal the BGR channel means
    square = tmp_path / "cat.png"
    with Image.open(DATA / "chelsea.png") as im:
        im.crop((0, 0, 300, 300)).save(square)
        ref = np.asarray(im.crop((0, 0, 300, 300)).resize((32, 32), Image.Resampling.BICUBIC), dtype=np.float64)
    out = _run(probe, square)
    assert out[P["probe_b"]] == pytest.approx(ref[..., 2].mean() / 255, abs=1e-4)
    assert out[P["probe_g"]] == pytest.approx(ref[..., 1].mean() / 255, abs=1e-4)
    assert out[P["probe_r"]] == pytest.approx(ref[..., 0].mean() / 255, abs=1e-4)
    assert out[P["probe_r"]] > out[P["probe_b"]] + 0.1  # the cat is orange: a swapped order would fail


def test_wide_photo_is_padded_on_white_and_centred(probe):
    out = _run(probe, DATA / "chelsea.png")  # 451 x 300
    assert out[P["probe_top"]] == pytest.approx(1.0, abs=0.01)
    assert out[P["probe_bottom"]] == pytest.approx(1.0, abs=0.01)
    assert out[P["probe_middle"]] < 0.8
    assert out[P["probe_left"]] < 0.9  # the photo spans the full width


def test_tall_photo_is_padded_left_and_right(probe, tmp_path):
    tall = tmp_path / "tall.png"
    with Image.open(DATA / "astronaut.png") as im:
        im.crop((150, 0, 350, 512)).save(tall)  # 200 x 512
    out = _run(probe, tall)
    assert out[P["probe_left"]] == pytest.approx(1.0, abs=0.01)
    assert out[P["probe_top"]] < 0.95


def test_exif_orientation_is_applied(probe, tmp_path):
    path = tmp_path / "rotated.jpg"
    with Image.open(DATA / "chelsea.png") as im:
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90 on display: the wide photo becomes tall
        im.save(path, exif=exif, quality=95)
    out = _run(probe, path)
    assert out[P["probe_left"]] == pytest.approx(1.0, abs=0.01)
    assert out[P["probe_top"]] < 0.95


def test_alpha_is_composited_on_white(probe, tmp_path):
    clear = tmp_path / "clear.png"
    Image.new("RGBA", (40, 40), (0, 0, 0, 0)).save(clear)
    out = _run(probe, clear)
    assert out[P["probe_b"]] == pytest.approx(1.0) and out[P["probe_r"]] == pytest.approx(1.0)
    out = _run(probe, DATA / "horse.png")  # RGBA with a transparent background
    assert out[P["probe_top"]] > 0.9


def test_greyscale_and_16_bit_images(probe, tmp_path):
    out = _run(probe, DATA / "camera.png")
    assert out[P["probe_b"]] == pytest.approx(out[P["probe_r"]]) == pytest.approx(out[P["probe_g"]])
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((20, 20), 65535, dtype=np.uint16)).save(path)
    assert _run(probe, path)[P["probe_g"]] == pytest.approx(1.0, abs=0.01)


def test_input_size_is_read_from_the_model(tmp_path):
    for size in (24, 40):
        model = TaggerModel.load(resolve_model(str(make_tagger(tmp_path / f"m{size}", [("a", 0, 0.5)], size=size))))
        assert (model.width, model.height) == (size, size)
        assert load_image(DATA / "coffee.png", model.width, model.height).shape == (size, size, 3)
        assert _run(model, DATA / "coffee.png")[P["probe_top"]] == pytest.approx(1.0, abs=0.01)


def test_corrupt_image_raises_decode_error(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ImageDecodeError):
        load_image(bad, 32, 32)
    truncated = tmp_path / "cut.jpg"
    buf = io.BytesIO()
    with Image.open(DATA / "chelsea.png") as im:
        im.save(buf, "JPEG")
    truncated.write_bytes(buf.getvalue()[:2000])
    with pytest.raises(ImageDecodeError):
        load_image(truncated, 32, 32)


# ---- batching -------------------------------------------------------------------------------------
PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "camera.png"]


@pytest.mark.parametrize("batch", ["batch", 1, 3])
def test_batches_give_the_same_result_as_single_images(tmp_path, batch):
    model = TaggerModel.load(resolve_model(str(make_tagger(tmp_path / "m", [("a", 0, 0.5)], batch=batch))))
    paths = [DATA / p for p in PHOTOS]
    singles = [_run(model, p) if batch in ("batch", 1) else None for p in paths]
    results = list(tag_images(model, paths, SelectionRules(), batch_size=2, workers=2, keep_probabilities=True))
    assert [r.index for r in results] == list(range(len(paths)))
    for res, single in zip(results, singles, strict=True):
        assert res.error is None
        if single is not None:
            np.testing.assert_allclose(res.probabilities, single, atol=1e-5)
    if batch == 3:  # fixed batch of 3 fed with 2: padded and trimmed, still one row per image
        np.testing.assert_allclose(results[0].probabilities, _run_padded(model, paths[0]), atol=1e-6)


def _run_padded(model: TaggerModel, path: Path) -> np.ndarray:
    x = load_image(path, model.width, model.height)[None]
    return model.predict(np.repeat(x, 3, axis=0))[0]


def test_bad_image_in_a_batch_is_skipped_not_fatal(tmp_path, probe):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    paths = [DATA / "chelsea.png", bad, DATA / "coffee.png"]
    done: list[int] = []
    results = list(tag_images(probe, paths, SelectionRules(), batch_size=2, workers=2, on_done=done.append))
    assert [r.error is None for r in results] == [True, False, True]
    assert results[1].path == bad and results[1].error
    assert sum(done) == 3
