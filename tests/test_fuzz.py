"""Hostile input, fuzzed with hypothesis (bounded: a fixed number of examples per property, no deadline).

* the caption parser/formatter: any bytes parse; the file comes back byte-exact; an edit keeps everything
  but the tags byte-exact, and the formatter's output is a fixed point of parse + format;
* the tag query language: any text parses or raises ``QueryError`` with a position inside the text, and a
  parsed query matches any item without raising;
* the kohya dataset TOML and kiln's training config TOML: any document loads or is refused with an error that
  names the field, never a traceback;
* safetensors headers (random, truncated, lying about their size): a clear error, no huge allocation;
* image files mutated from real photos (truncated anywhere, bytes flipped, declared sizes changed): the probe
  turns every one into flags, never an exception.

Every crash these found was a bug, fixed; each is kept below as an explicit regression example.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from pathlib import Path

import pytest
import tomli_w
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from curator.captions.caption import BOM, Caption
from curator.tags.query import QueryError, QueryItem, parse_query
from tests.conftest import photo

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
FUZZ_SLOW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# ---- captions ----------------------------------------------------------------------------------------------

TAG_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters=",\r\n")
tag_text = st.text(TAG_CHARS, min_size=1, max_size=12).map(str.strip).filter(bool)


@FUZZ
@given(st.binary(max_size=200))
@example(b"\xef\xbb\xbf")
@example(b"\r")
@example(b"a,\xff,b\r\n\xfe")
def test_any_bytes_parse_and_come_back_exactly(raw: bytes) -> None:
    cap = Caption.parse(raw)
    assert cap.to_bytes() == raw
    assert cap.with_tags(list(cap.tags)).to_bytes() == raw  # the same tags: the same bytes
    _ = (cap.first_line, cap.keys, cap.style, cap.extra_lines)


@st.composite
def caption_files(draw: st.DrawFn) -> bytes:
    tags = draw(st.lists(tag_text, max_size=6))
    joiner = draw(st.sampled_from([", ", ",", " , ", ",  "]))
    line = joiner.join(tags)
    if draw(st.booleans()) and tags:
        line += ","
    line = draw(st.sampled_from(["", " ", "\t"])) + line + draw(st.sampled_from(["", " "]))
    eol = draw(st.sampled_from(["", "\n", "\r\n", "\r"]))
    rest = draw(st.text(max_size=20)) if eol in ("\n", "\r\n") else ""
    data = (line + eol + rest).encode("utf-8", "surrogatepass") if "\ud800" not in rest else b""
    return (BOM if draw(st.booleans()) else b"") + data


@FUZZ
@given(caption_files(), tag_text)
@example(b"a, b\n", "c")
@example(b"\xef\xbb\xbfa,b,\r\nsecond line\n", "new_tag")
def test_an_edit_keeps_everything_but_the_tags(raw: bytes, new: str) -> None:
    cap = Caption.parse(raw)
    edited = cap.with_tags([*cap.tags, new])
    out = edited.to_bytes()
    again = Caption.parse(out)
    assert again.tags[: len(cap.tags)] == cap.tags  # the old tags, exactly as written
    added = new.strip() if new.strip() in cap.tags else cap.conform(new.strip())  # new tags in the file's style
    assert again.tags[len(cap.tags):] == ([added] if added else [])
    assert again.bom == cap.bom and again.eol == cap.eol and again.rest == cap.rest  # the rest, byte-exact
    # the formatter's output is a fixed point: parsing and formatting it again changes nothing
    assert again.with_tags(list(again.tags)).to_bytes() == out
    assert again._copy(list(again.tags)).to_bytes() == out
    # and taking the edit back gives the original tags
    assert Caption.parse(again.with_tags(cap.tags).to_bytes()).tags == cap.tags


# ---- the query language ------------------------------------------------------------------------------------

QUERY_ALPHABET = st.sampled_from(list("abc xyz*?!()\"'\\:<>=,-_.0123456789[]{}|&") + ["AND", "OR", "NOT", "tag:",
                                 "flag:", "folder:", "bucket:", "tokens>", "width>=", "name:", "\u00e9", "\x1b"])
query_text = st.lists(QUERY_ALPHABET, max_size=14).map("".join) | st.text(max_size=30)


def _items() -> list[QueryItem]:
    return [
        QueryItem(path="10_x/a.png", name="a.png", folder="10_x", tags=frozenset({"long hair", "smile"}), n_tags=2,
                  flags=frozenset({"low-res"}), width=512, height=768, bucket=(512, 768), token_count=7),
        QueryItem(path="b.png", name="b.png", folder="", tags=frozenset(), token_count=lambda: 0),
    ]


@FUZZ
@given(query_text)
@example('tag:"unterminated')
@example("(a OR")
@example("tokens>")
@example("width>=abc")
@example("bucket:12x")
def test_any_query_parses_or_says_where_it_is_wrong(text: str) -> None:
    try:
        query = parse_query(text)
    except QueryError as exc:
        assert 0 <= exc.position <= len(text), (text, exc.position)
        assert exc.message and exc.text == text
        exc.pointer()
        return
    for item in _items():
        assert query.matches(item) in (True, False)
    str(query)
    assert isinstance(query.fields, set)


# ---- the kohya dataset TOML --------------------------------------------------------------------------------

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6), st.floats(allow_nan=False, width=32),
                    st.text(max_size=8), st.lists(st.integers(-5, 2048), max_size=3))
SUBSET_KEYS = ["image_dir", "num_repeats", "keep_tokens", "caption_extension", "class_tokens", "is_reg",
               "shuffle_caption"]
DATASET_KEYS = ["resolution", "min_bucket_reso", "max_bucket_reso", "bucket_reso_steps", "enable_bucket",
                "bucket_no_upscale", "batch_size"]


def _value(draw: st.DrawFn, key: str, image_dir: str) -> object:
    if key == "image_dir":
        return draw(st.sampled_from([image_dir, "missing-folder", "", 7, [image_dir]]))
    return draw(SCALARS)


@st.composite
def kohya_tomls(draw: st.DrawFn, image_dir: str) -> dict[str, object]:
    doc: dict[str, object] = {}
    if draw(st.booleans()):
        doc["general"] = {k: _value(draw, k, image_dir) for k in draw(st.lists(st.sampled_from(DATASET_KEYS + SUBSET_KEYS), max_size=3))} \
            if draw(st.integers(0, 5)) else draw(SCALARS)
    datasets: list[object] = []
    for _ in range(draw(st.integers(0, 2))):
        if draw(st.integers(0, 6)) == 0:
            datasets.append(draw(SCALARS))
            continue
        dataset: dict[str, object] = {k: _value(draw, k, image_dir) for k in draw(st.lists(st.sampled_from(DATASET_KEYS), max_size=3))}
        subsets: list[object] = []
        for _ in range(draw(st.integers(0, 2))):
            if draw(st.integers(0, 6)) == 0:
                subsets.append(draw(SCALARS))
            else:
                keys = draw(st.lists(st.sampled_from(SUBSET_KEYS), max_size=4))
                subsets.append({"image_dir": image_dir, **{k: _value(draw, k, image_dir) for k in keys}})
        dataset["subsets"] = subsets if draw(st.integers(0, 6)) else draw(SCALARS)
        datasets.append(dataset)
    if datasets or draw(st.booleans()):
        doc["datasets"] = datasets
    return doc


def _clean(value: object) -> object:
    """TOML has no null: drop None values (and lists holding them)."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_clean(v) for v in value if v is not None]
    return value


FIELD_WORDS = ("image_dir", "num_repeats", "keep_tokens", "caption_extension", "resolution", "bucket", "general",
               "datasets", "subsets", "class_tokens", "TOML", "toml")


@pytest.fixture(scope="module")
def toml_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("toml")
    images = home / "images"
    images.mkdir()
    photo("astronaut.png", (64, 64)).save(images / "a.png")
    (images / "a.caption").write_text("a photo\n")
    return home


@FUZZ_SLOW
@given(data=st.data())
def test_any_kohya_dataset_toml_opens_or_names_the_field(toml_home: Path, data: st.DataObject) -> None:
    from curator.dataset import Dataset
    from curator.layout import LayoutError
    from curator.tags.items import ScopeError, load_items

    doc = _clean(data.draw(kohya_tomls(str(toml_home / "images"))))
    path = toml_home / "dataset.toml"
    path.write_text(tomli_w.dumps(doc))  # type: ignore[arg-type]
    try:
        with Dataset.open(path, quiet=True) as ds:
            assert ds.layout.subsets
            load_items(ds, where="bucket:512x512")  # the bucket options, used
    except (LayoutError, ScopeError) as exc:
        message = str(exc)
        assert any(word in message for word in FIELD_WORDS), message
        assert "Traceback" not in message


@pytest.mark.parametrize(
    ("doc", "field"),
    [  # what the fuzzer found: each was a traceback (AttributeError, TypeError, ValueError, pydantic's)
        ({"general": 1, "datasets": [{"subsets": [{"image_dir": "IMG"}]}]}, "general"),
        ({"datasets": [{"subsets": 3}]}, "datasets[0].subsets"),
        ({"datasets": [True]}, "datasets[0]"),
        ({"datasets": [{"subsets": ["x"]}]}, "datasets[0].subsets[0]"),
        ({"datasets": [{"subsets": [{"image_dir": "IMG", "num_repeats": [1]}]}]}, "num_repeats"),
        ({"datasets": [{"subsets": [{"image_dir": "IMG", "keep_tokens": ""}]}]}, "keep_tokens"),
        ({"datasets": [{"resolution": "", "subsets": [{"image_dir": "IMG"}]}]}, "resolution"),
        ({"datasets": [{"resolution": [512], "subsets": [{"image_dir": "IMG"}]}]}, "resolution"),
        ({"datasets": [{"resolution": 0, "subsets": [{"image_dir": "IMG"}]}]}, "resolution"),
        ({"general": {"min_bucket_reso": -3}, "datasets": [{"subsets": [{"image_dir": "IMG"}]}]}, "min_bucket_reso"),
        ({"datasets": [{"subsets": [{"image_dir": 7}]}]}, "image_dir"),
    ],
)
def test_dataset_toml_regressions(toml_home: Path, doc: dict[str, object], field: str) -> None:
    from curator.dataset import Dataset
    from curator.layout import LayoutError
    from curator.tags.items import ScopeError, load_items

    text = tomli_w.dumps(doc).replace('"IMG"', repr(str(toml_home / "images")).replace("'", '"'))
    path = toml_home / "regression.toml"
    path.write_text(text)
    try:  # refused when the dataset opens, or (a bucket option kohya refuses) by the queries that use buckets
        with Dataset.open(path, quiet=True) as ds:
            load_items(ds, where="bucket:512x512")
    except (LayoutError, ScopeError) as exc:
        message = str(exc)
    else:
        pytest.fail(f"{doc} was accepted")
    assert field in message and path.name in message, message


def test_dataset_toml_bucket_options_kohya_refuses_stop_bucket_queries_only(toml_home: Path) -> None:
    from curator.dataset import Dataset
    from curator.tags.items import ScopeError, load_items

    path = toml_home / "buckets.toml"
    path.write_text(tomli_w.dumps({"general": {"resolution": 512, "min_bucket_reso": 1024},
                                   "datasets": [{"subsets": [{"image_dir": str(toml_home / "images")}]}]}))
    with Dataset.open(path, quiet=True) as ds:
        assert len(load_items(ds)) == 1  # browsing and editing work
        with pytest.raises(ScopeError, match="kohya refuses this"):
            load_items(ds, where="bucket:512x512")


@FUZZ
@given(st.binary(max_size=120))
@example(b"[[datasets]]\nsubsets = 3\n")
@example(b"general = 1\n[[datasets]]\n")
def test_any_bytes_as_a_dataset_toml_are_refused_clearly(toml_home: Path, raw: bytes) -> None:
    from curator.layout import LayoutError, load_layout

    path = toml_home / "raw.toml"
    path.write_bytes(raw)
    try:
        load_layout(path)
    except LayoutError as exc:
        assert str(path) in str(exc)


# ---- kiln's training config TOML ---------------------------------------------------------------------------

TRAIN_FIELDS = {
    "model": ["path", "architecture", "v_prediction", "allow_pickle", "vae"],
    "dataset": ["path", "resolution", "batch_size", "caption_extension", "keep_tokens", "shuffle_caption",
                "enable_bucket", "min_bucket_reso", "max_bucket_reso", "caption_dropout_rate", "flip_aug"],
    "network": ["type", "dim", "alpha", "dropout", "conv_dim", "init_from"],
    "train": ["learning_rate", "max_train_steps", "max_train_epochs", "optimizer", "lr_scheduler", "seed",
              "mixed_precision", "gradient_accumulation_steps", "min_snr_gamma", "noise_offset"],
    "output": ["dir", "name", "save_every_n_epochs", "save_precision", "keep_last"],
    "sample": ["prompts", "every_n_steps"],
}


@st.composite
def train_configs(draw: st.DrawFn) -> dict[str, object]:
    """A valid config with a few fields (or whole sections) replaced by anything: the fuzz reaches every
    field validator and the cross-field checks, not only "required field missing"."""
    doc: dict[str, object] = {"model": {"path": "base.safetensors"}, "dataset": {"path": "images"}}
    if draw(st.integers(0, 9)) == 0:
        doc = {}
    for section in draw(st.lists(st.sampled_from([*TRAIN_FIELDS, "bogus"]), max_size=4, unique=True)):
        if draw(st.integers(0, 8)) == 0:
            doc[section] = draw(SCALARS)
            continue
        keys = TRAIN_FIELDS.get(section, ["x"]) + ["unknown_key"]
        table = dict(doc.get(section) or {})  # type: ignore[call-overload]
        table.update({k: draw(SCALARS) for k in draw(st.lists(st.sampled_from(keys), max_size=3))})
        doc[section] = table
    return doc


@FUZZ_SLOW
@given(train_configs())
def test_any_training_config_loads_or_names_the_field(tmp_path_factory: pytest.TempPathFactory,
                                                      doc: dict[str, object]) -> None:
    from train.config import ConfigError, load_config

    home = tmp_path_factory.getbasetemp()
    (home / "images").mkdir(exist_ok=True)
    (home / "base.safetensors").write_bytes(b"")
    path = home / "train-fuzz.toml"
    path.write_text(tomli_w.dumps(_clean(doc)))  # type: ignore[arg-type]
    try:
        load_config(path)
    except ConfigError as exc:
        assert exc.lines
        for line in exc.lines:
            field = line.split(":", 1)[0]
            assert field and (field in TRAIN_FIELDS or "." in field or field in ("config", "bogus") or
                              str(path) in line or field.split(".")[0] in TRAIN_FIELDS), line


@FUZZ
@given(st.binary(max_size=200))
@example(b"\x80")  # found by the fuzzer: a UnicodeDecodeError traceback
def test_any_bytes_as_a_training_config_are_refused_clearly(tmp_path_factory: pytest.TempPathFactory,
                                                           raw: bytes) -> None:
    from train.config import ConfigError, load_config

    path = tmp_path_factory.getbasetemp() / "train-raw.toml"
    path.write_bytes(raw)
    with pytest.raises(ConfigError):
        load_config(path)


# ---- safetensors headers -----------------------------------------------------------------------------------


def _safetensors(header: dict[str, object], body: bytes = b"") -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + body


@st.composite
def safetensors_files(draw: st.DrawFn) -> bytes:
    good = _safetensors({"__metadata__": {"ss_network_dim": "4"},
                         "lora_unet_x.lora_down.weight": {"dtype": "F32", "shape": [4, 8], "data_offsets": [0, 128]}},
                        bytes(128))
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return draw(st.binary(max_size=64))
    if kind == 1:  # truncated anywhere
        return good[: draw(st.integers(0, len(good) - 1))]
    if kind == 2:  # a header size that lies (up to absurd)
        n = draw(st.one_of(st.integers(0, 400), st.integers(2**20, 2**64 - 1)))
        return struct.pack("<Q", n) + good[8:]
    if kind == 3:  # bytes flipped
        data = bytearray(good)
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
        return bytes(data)
    if kind == 4:  # a header of the wrong shape
        header = draw(st.one_of(st.lists(st.integers()), st.dictionaries(st.text(max_size=4), SCALARS, max_size=3)))
        return _safetensors(header)  # type: ignore[arg-type]
    offsets = draw(st.lists(st.integers(-5, 10**12), min_size=2, max_size=2))
    shape = draw(st.lists(st.integers(-1, 10**9), max_size=3))
    return _safetensors({"w": {"dtype": draw(st.sampled_from(["F32", "F16", "XX", 3])), "shape": shape,
                               "data_offsets": offsets}}, bytes(128))


@FUZZ
@given(safetensors_files())
@example(struct.pack("<Q", 2**64 - 1) + b"{}")
@example(struct.pack("<Q", 99 * 2**20) + b"{" + b" " * 100)
def test_any_safetensors_header_is_read_or_refused_clearly(tmp_path_factory: pytest.TempPathFactory,
                                                          data: bytes) -> None:
    from train.models.arch import ModelLoadError
    from train.models.probe import read_safetensors_header
    from train.network.load import NetworkLoadError, read_kohya_file

    path = tmp_path_factory.getbasetemp() / "fuzz.safetensors"
    path.write_bytes(data)
    try:
        header = read_safetensors_header(path)
        assert isinstance(header.shapes, dict)
    except ModelLoadError as exc:
        assert "model.path" in str(exc) and str(path) in str(exc)
    try:
        read_kohya_file(path)
    except NetworkLoadError as exc:
        assert "network.init_from" in str(exc)



@FUZZ_SLOW
@given(safetensors_files())
@example(struct.pack("<Q", 2**64 - 1) + b"{}")
def test_kiln_lora_info_on_any_file_reports_or_says_why(tmp_path_factory: pytest.TempPathFactory,
                                                        data: bytes) -> None:
    import contextlib
    import io

    from tui.cli import main

    path = tmp_path_factory.getbasetemp() / "info-fuzz.safetensors"
    path.write_bytes(data)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["lora", "info", str(path)])  # a report, or one clear line
    assert code in (0, 1) and "Traceback" not in err.getvalue()
    if code:
        assert err.getvalue().count("\n") <= 2 and "kiln lora" in err.getvalue(), err.getvalue()


# ---- image files -------------------------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


@pytest.fixture(scope="module")
def image_bytes() -> dict[str, bytes]:
    """Real photos in the formats and modes kiln meets (as bytes, mutated by the fuzzer)."""
    import numpy as np

    base = photo("coffee.png", (96, 64))
    out: dict[str, bytes] = {}

    def save(name: str, image: object, fmt: str, **params: object) -> None:
        buf = io.BytesIO()
        image.save(buf, fmt, **params)  # type: ignore[attr-defined]
        out[name] = buf.getvalue()

    save("jpeg", base, "JPEG", quality=85)
    save("png", base, "PNG")
    save("webp", base, "WEBP", quality=80)
    save("cmyk.jpg", base.convert("CMYK"), "JPEG")
    from PIL import Image

    save("grey16.png", Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 257), "PNG")
    palette = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    save("palette-alpha.png", palette, "PNG", transparency=0)
    frames = [base, base.rotate(90), base.rotate(180)]
    save("animated.gif", frames[0], "GIF", save_all=True, append_images=frames[1:], duration=80, loop=0)
    save("rgba.webp", base.convert("RGBA"), "WEBP", lossless=True)
    return out


def _mutate(draw: st.DrawFn, data: bytes) -> bytes:
    kind = draw(st.integers(0, 3))
    if kind == 0:  # truncated anywhere (zero bytes included)
        return data[: draw(st.integers(0, len(data)))]
    if kind == 1:  # bytes flipped (the header more often)
        out = bytearray(data)
        for _ in range(draw(st.integers(1, 6))):
            limit = 64 if draw(st.booleans()) else len(out) - 1
            out[draw(st.integers(0, min(limit, len(out) - 1)))] ^= draw(st.integers(1, 255))
        return bytes(out)
    if kind == 2:  # garbage appended or spliced in
        at = draw(st.integers(0, len(data)))
        return data[:at] + draw(st.binary(min_size=1, max_size=64)) + data[at:]
    return data


@FUZZ_SLOW
@given(data=st.data())
def test_any_mutated_image_is_probed_into_flags(image_bytes: dict[str, bytes], tmp_path_factory: pytest.TempPathFactory,
                                                data: st.DataObject) -> None:
    from curator.scan.probe import probe_file

    name = data.draw(st.sampled_from(sorted(image_bytes)))
    raw = _mutate(data.draw, image_bytes[name])
    path = tmp_path_factory.getbasetemp() / f"fuzz-{name}"
    path.write_bytes(raw)
    result = probe_file(str(path), path.name, len(raw), 0, 100_000_000)
    assert result.sha256
    if not result.flags or all(kind in ("cmyk", "high-bit-depth", "alpha", "animated", "exif-rotated", "low-res",
                                        "tiny") for kind, _d in result.flags):
        assert result.width > 0 and result.height > 0
        assert result.phash is not None


@pytest.mark.parametrize("size", [(40_000, 40_000), (2**31 - 1, 1), (1, 2**31 - 1), (20_000, 6_000)])
def test_huge_declared_sizes_are_refused_without_decoding(tmp_path: Path, size: tuple[int, int]) -> None:
    import tracemalloc

    from curator.scan.probe import probe_file

    ihdr = struct.pack(">IIBBBBB", *size, 8, 2, 0, 0, 0)
    raw = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        _png_chunk(b"IEND", b"")
    path = tmp_path / "bomb.png"
    path.write_bytes(raw)
    tracemalloc.start()
    result = probe_file(str(path), "bomb.png", len(raw), 0, 100_000_000)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    kinds = [k for k, _d in result.flags]
    assert kinds and kinds[0] in ("too-large", "unreadable", "truncated"), result.flags
    if size[0] * size[1] > 100_000_000:
        assert "too-large" in kinds
    assert peak < 50 * 2**20  # no pixel buffer of the declared size


@pytest.mark.parametrize("name", ["jpeg", "png", "webp", "cmyk.jpg", "grey16.png", "palette-alpha.png",
                                  "animated.gif", "rgba.webp"])
def test_every_mode_loads_for_training_and_probes(image_bytes: dict[str, bytes], tmp_path: Path, name: str) -> None:
    from curator.scan.probe import probe_file
    from train.data.images import load_rgb

    path = tmp_path / f"x-{name}"
    path.write_bytes(image_bytes[name])
    result = probe_file(str(path), path.name, path.stat().st_size, 0, 100_000_000)
    assert result.width == 96 and result.height == 64 and result.phash is not None
    rgb = load_rgb(path)
    assert rgb.mode == "RGB" and rgb.size == (96, 64)
    assert os.path.getsize(path) > 0


@FUZZ_SLOW
@given(data=st.data())
def test_any_mutated_image_previews_or_raises_oserror(image_bytes: dict[str, bytes],
                                                      tmp_path_factory: pytest.TempPathFactory,
                                                      data: st.DataObject) -> None:
    """The TUI's thumbnail decoder: an image, at most THUMB_MAX a side, or an OSError (its documented contract),
    whatever the bytes."""
    from tui.imaging import THUMB_MAX, decode_thumbnail

    name = data.draw(st.sampled_from(sorted(image_bytes)))
    path = tmp_path_factory.getbasetemp() / f"thumb-{name}"
    path.write_bytes(_mutate(data.draw, image_bytes[name]))
    try:
        thumb = decode_thumbnail(path)
    except OSError:
        return
    assert thumb.mode == "RGB" and max(thumb.size) <= THUMB_MAX


def test_a_decompression_bomb_is_not_decoded_for_a_preview(tmp_path: Path) -> None:
    import tracemalloc

    from PIL import Image

    from tui.imaging import decode_thumbnail

    ihdr = struct.pack(">IIBBBBB", 15_000, 10_000, 8, 2, 0, 0, 0)  # 150 MP: under Pillow's error limit
    raw = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        _png_chunk(b"IEND", b"")
    path = tmp_path / "bomb.png"
    path.write_bytes(raw)
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # what the scan sets for a moment while it probes, in another thread
    tracemalloc.start()
    try:
        with pytest.raises(OSError, match="not decoded for a preview"):
            decode_thumbnail(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        Image.MAX_IMAGE_PIXELS = saved
    assert peak < 20 * 2**20
