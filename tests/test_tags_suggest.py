"""Tags that consolidate themselves: suggestions from co-occurrence, suspects (low confidence, contradictions,
rare tags), applied and removed through the journal and undone byte for byte; autotag keeps its confidences."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from curator.autotag.scores import load, store
from curator.dataset import Dataset
from curator.tags.consolidate import load_rules
from curator.tags.items import load_items
from curator.tags.suggest import choose, suggest, suggestion_changes
from curator.tags.suspects import find_suspects, load_conflicts, removal_changes
from tests.conftest import photo, save_photo, skimage_data_dir
from tui.cli import main as kiln

PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "retina.jpg",
          "ihc.png", "camera.png", "moon.png", "coins.png", "brick.png", "grass.png")  # fmt: skip


def _dataset(root: Path, captions: list[str]) -> Path:
    folder = root / "10_laetitia"
    for n, caption in enumerate(captions):
        save_photo(photo(PHOTOS[n % len(PHOTOS)], (96, 96)), folder / f"img{n:02d}.jpg", quality=90)
        (folder / f"img{n:02d}.txt").write_bytes(caption.encode("utf-8"))
    return root


def _captions(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.rglob("*.txt")) if ".kiln" not in p.parts}


SEED = [  # the guide's example: an interrogator says "boots, red footwear, red boots" for Laetitia's boots
    "laetitia, 1girl, solo, red boots, boots, red footwear, long hair, smile\n",
    "laetitia, 1girl, solo, boots, red boots, red footwear, long hair, outdoors\n",
    "laetitia, 1girl, solo, red footwear, red boots, boots, footwear, long hair\n",
    "laetitia, 1girl, solo, long hair, boots, black boots, indoors\n",  # other boots: only 'boots' goes here
    "laetitia, 1girl, solo, long hair, red scarf, scarf, smile\n",
    "laetitia, 1girl, solo, long hair, red scarf, smile, outdoors\n",
    "laetitia, 1girl, solo, long hair, red scarf, outdoors, sky\n",
    "laetitia, 1girl, solo, long hair, sky, outdoors, cloud\n",
    "laetitia, 1girl, solo, long hair, indoors, chair\n",
    "laetitia, 1girl, 1boy, solo, short hair, long hair, indoors, weird_tag\n",
    "laetitia, 1girl, solo, long hair, indoors, chair, window\n",
    "laetitia, 1girl, solo, long hair, indoors, window\n",
]


@pytest.fixture
def seed(tmp_path: Path) -> Path:
    return _dataset(tmp_path / "ds", SEED)


def _items(root: Path) -> list:
    with Dataset.open(root) as ds:
        return load_items(ds)


def test_the_seed_example_keeps_red_boots(seed: Path) -> None:
    found = suggest(_items(seed), load_rules())
    by_id = {s.id: s for s in found}
    boots = by_id["consolidate:red boots"]
    assert boots.kind == "consolidate" and boots.keep_count == 3 and boots.files == 3
    assert {d.tag: (d.together, d.count) for d in boots.drop} == {
        "boots": (3, 4), "red footwear": (3, 3), "footwear": (1, 1),
    }  # fmt: skip
    reasons = {d.tag: d.reason for d in boots.drop}
    assert "head of 'red boots'" in reasons["boots"] and "boots -> footwear" in reasons["red footwear"]
    assert "consolidate:black boots" in by_id and by_id["consolidate:black boots"].files == 1
    assert "consolidate:boots" not in by_id  # red boots already covers boots wherever both are
    assert boots.example is not None and "red footwear" not in boots.example[2]


def test_implications_come_from_the_data(tmp_path: Path) -> None:
    captions = ["ohwx, hat, outdoors, sky\n"] * 3 + ["ohwx, outdoors, tree\n"] * 2 + ["ohwx, indoors, sky\n"] * 5
    items = _items(_dataset(tmp_path / "ds", captions))
    found = {s.id: s for s in suggest(items, load_rules(), min_implication=3)}
    hat = found["implication:hat>outdoors"]
    assert (hat.keep_count, hat.files) == (3, 3) and (hat.drop[0].together, hat.drop[0].count) == (3, 5)
    assert "in all 3 captions with 'hat' (and in 2 others)" in hat.drop[0].reason
    assert "implication:hat>sky" in found  # sky: 8 captions, in all 3 with hat
    assert not [s for s in found.values() if s.drop[0].tag == "ohwx"]  # in every caption: absorb's job
    assert not [s for s in found.values() if s.keep == "tree"]  # 2 captions: under min_implication
    assert "implication:hat>outdoors" not in {s.id for s in suggest(items, load_rules(), min_implication=4)}


def test_apply_one_several_all_and_undo(seed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _captions(seed)
    assert kiln(["tags", "suggest", str(seed), "--apply", "consolidate:red boots", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["entry_id"] is not None and len(out["applied"]) == 3
    after = _captions(seed)
    assert after["img00.txt"] == b"laetitia, 1girl, solo, red boots, long hair, smile\n"
    assert after["img03.txt"] == before["img03.txt"]  # black boots: red boots' suggestion does not touch it
    assert kiln(["tags", "undo", str(seed)]) == 0
    assert _captions(seed) == before
    capsys.readouterr()
    assert kiln(["tags", "suggest", str(seed), "--apply", "all", "--dry-run", "--json"]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert dry["dry_run"] and dry["files"] >= 5 and _captions(seed) == before
    assert kiln(["tags", "suggest", str(seed), "--apply", "1", "2"]) == 0
    assert _captions(seed) != before
    assert kiln(["tags", "undo", str(seed)]) == 0 and _captions(seed) == before


def test_unknown_suggestion_is_refused(seed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert kiln(["tags", "suggest", str(seed), "--apply", "99"]) == 1
    assert "no suggestion '99'" in capsys.readouterr().err


def test_save_rules_then_consolidate(seed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "mine.toml"
    assert kiln(["tags", "suggest", str(seed), "--apply", "consolidate:red boots", "--save-rules", str(rules)]) == 0
    assert "red boots" in rules.read_text() and _captions(seed)["img00.txt"] == SEED[0].encode()
    assert kiln(["tags", "consolidate", str(seed), "--rules", str(rules), "--no-builtin", "--json"]) == 0
    assert _captions(seed)["img00.txt"] == b"laetitia, 1girl, solo, red boots, long hair, smile\n"


def test_suspects_low_confidence_contradictions_rare(seed: Path) -> None:
    with Dataset.open(seed) as ds:
        store(ds.index, {"10_laetitia/img04.jpg": {"scarf": 0.38, "red scarf": 0.91, "smile": 0.52},
                         "10_laetitia/img09.jpg": {"short hair": 0.41, "long hair": 0.83}}, "wd-test")  # fmt: skip
        items = load_items(ds)
        confidences = load(ds.index)
    found = find_suspects(items, confidences, load_conflicts(), min_confidence=0.5, rare=1)
    by = {(s.kind, s.tag): s for s in found}
    low = by[("low-confidence", "scarf")]
    assert low.paths == ["10_laetitia/img04.jpg"] and low.score == pytest.approx(0.38)
    assert ("low-confidence", "smile") not in by  # 0.52 is above 0.5
    hair = by[("contradiction", "short hair")]  # the weaker of short/long hair: lower probability
    assert hair.paths == ["10_laetitia/img09.jpg"] and "long hair" in hair.detail
    assert by[("contradiction", "1boy")].paths == ["10_laetitia/img09.jpg"]  # a single-character set
    assert by[("rare", "weird tag")].paths == ["10_laetitia/img09.jpg"]
    changes = removal_changes(items, [low, hair])
    assert len(changes) == 2 and all(c.before != c.after for c in changes)


def test_two_characters_are_no_contradiction_in_a_group_set(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "group", [f"2girls, 1boy, {'1girl, ' if n % 2 else ''}group\n" for n in range(10)])
    found = find_suspects(_items(root), {}, load_conflicts(), kinds=["contradiction"])
    assert not [s for s in found if s.tag in ("1boy", "1girl")]


def test_remove_suspects_in_bulk_and_undo(seed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _captions(seed)
    assert kiln(["tags", "suspects", str(seed), "--json", "--rare", "1"]) == 0
    listed = json.loads(capsys.readouterr().out)["suspects"]
    assert {"kind": "rare", "tag": "weird tag"}.items() <= next(s for s in listed if s["tag"] == "weird tag").items()
    assert kiln(["tags", "suspects", str(seed), "--remove", "contradiction", "--json"]) == 0
    after = _captions(seed)
    assert b"short hair" not in after["img09.txt"] and b"1boy" not in after["img09.txt"]
    assert b"long hair" in after["img09.txt"] and after["img00.txt"] == before["img00.txt"]
    assert kiln(["tags", "undo", str(seed)]) == 0 and _captions(seed) == before
    assert kiln(["tags", "suspects", str(seed), "--remove", "no such tag"]) == 1
    assert "not a suspect here" in capsys.readouterr().err


def test_autotag_keeps_its_confidences(tmp_path: Path) -> None:
    from tests.onnx_models import make_tagger

    model = make_tagger(tmp_path / "wd-tiny", [("general", 9, 0.2), ("long_hair", 0, 0.8), ("solo", 0, 0.42),
                                               ("1girl", 0, 0.3)], size=32, probes=False)  # fmt: skip
    root = tmp_path / "ds"
    (root / "10_x").mkdir(parents=True)
    for name in ("chelsea.png", "coffee.png"):
        shutil.copy(skimage_data_dir() / name, root / "10_x" / name)
    assert kiln(["autotag", str(root), "--model", str(model), "--json", "--workers", "1"]) == 0
    with Dataset.open(root) as ds:
        scores = load(ds.index)
    assert set(scores) == {"10_x/chelsea.png", "10_x/coffee.png"}
    assert scores["10_x/chelsea.png"] == {"long hair": pytest.approx(0.8, abs=1e-3), "solo": pytest.approx(0.42, abs=1e-3)}
    found = find_suspects(_items(root), scores, load_conflicts(), min_confidence=0.5, kinds=["low-confidence"])
    assert [(s.tag, len(s.paths)) for s in found] == [("solo", 2)]


def test_choose_by_number_id_and_all(seed: Path) -> None:
    items = _items(seed)
    found = suggest(items, load_rules())
    assert choose(found, ["1"]) == [found[0]] and choose(found, ["all"]) == found
    assert choose(found, ["red boots"]) == [next(s for s in found if s.id == "consolidate:red boots")]
    changes = suggestion_changes(items, choose(found, ["all"]))
    assert len({c.caption_path for c in changes}) == len(changes)  # one change per caption file
