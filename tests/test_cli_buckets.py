"""`kiln buckets` on the real sample dataset (a copy in tmp_path, so the repository stays clean)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from curator.cli import buckets as buckets_cli
from tests.conftest import SAMPLE, copy_sample

REPO = Path(__file__).resolve().parent.parent
PHOTO = "10_kilnsample photo"
TEXTURE = "5_kilnsample texture"


def run_kiln(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="kiln")
    buckets_cli.register(parser.add_subparsers())
    args = parser.parse_args(["buckets", *argv])
    return args.func(args)


@pytest.fixture()
def sample(tmp_path: Path) -> Path:
    return copy_sample(tmp_path / "sample")


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes())
        for p in root.rglob("*")
        if p.is_file() and ".kiln" not in p.relative_to(root).parts
    }


def json_report(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert run_kiln(*argv, "--json") == 0
    return json.loads(capsys.readouterr().out)


def test_json_on_the_sample_dataset(sample: Path, capsys: pytest.CaptureFixture[str]):
    before = snapshot(sample)
    data = json_report(capsys, str(sample), "--resolution", "512", "--batch-size", "4", "--epochs", "10")
    # 17 photos x 10 + 6 textures x 5 = 200 images x repeats, in 8 buckets (worked out in docs/BUCKETS.md):
    buckets = {(b["width"], b["height"]): (b["images"], b["with_repeats"]) for b in data["buckets"]}
    assert buckets == {
        (320, 704): (1, 5),  # grass_tall 256x512 (ar .5 -> 320/704 = .4545), texture x5
        (384, 640): (3, 30),  # cameraman_side, deep_field_tall, rocket_tower
        (448, 576): (1, 10),  # astronaut_portrait
        (512, 512): (9, 70),  # 5 square photos x 10 + 4 square textures x 5
        (576, 448): (2, 20),  # clock 240x180 (ar 1.333) and deep_field 1000x872 (ar 1.147)
        (640, 384): (5, 50),  # cat, cat_2, coffee, retina_optic_disc, rocket_launch
        (704, 320): (1, 5),  # brick_wide 512x256 (ar 2 -> 704/320 = 2.2)
        (832, 256): (1, 10),  # deep_field_wide 1000x312
    }
    images = {i["path"]: i for i in data["images"]}
    assert len(images) == 23
    assert images[f"{PHOTO}/deep_field.jpg"]["bucket"] == [576, 448]
    # 1000x872 -> scale 576/1000, height int(872*.576 + .5) = 502, crop top (502 - 448) // 2 = 27
    assert images[f"{PHOTO}/deep_field.jpg"]["resized"] == [576, 502]
    assert images[f"{PHOTO}/deep_field.jpg"]["crop"] == [0, 27]
    assert images[f"{TEXTURE}/grass.webp"]["repeats"] == 5
    # batches per bucket at 4: 2 + 8 + 3 + 18 + 5 + 13 + 2 + 3 = 54; 10 epochs = 540
    steps = data["steps"]
    assert (steps["batches_per_epoch"], steps["steps_per_epoch"], steps["total_steps"]) == (54, 54, 540)
    assert steps["with_repeats"] == 200 and steps["partial_batches"] == 7
    # the planted low-res clock is upscaled; 13 of the 23 sample images are smaller than their bucket
    assert f"{PHOTO}/clock.png" in data["upscaled"] and len(data["upscaled"]) == 13
    assert sorted(map(tuple, data["thin_buckets"])) == [
        (320, 704),
        (448, 576),
        (576, 448),
        (704, 320),
        (832, 256),
    ]
    assert snapshot(sample) == before  # nothing outside .kiln/ was touched


def test_max_steps_gives_epochs_and_no_upscale(sample: Path, capsys: pytest.CaptureFixture[str]):
    data = json_report(capsys, str(sample), "--resolution", "512", "--batch-size", "4", "--max-steps", "1500")
    # ceil(1500 / 54) = 28 epochs
    assert (data["steps"]["epochs"], data["steps"]["total_steps"]) == (28, 1500)
    data = json_report(capsys, str(sample), "--resolution", "512", "--no-upscale")
    images = {i["path"]: i for i in data["images"]}
    # no upscale: the 240x180 clock keeps its size; bucket 192x128 (240 - 48, 180 - 52), crop (24, 26)
    clock = images[f"{PHOTO}/clock.png"]
    assert (clock["bucket"], clock["resized"], clock["crop"]) == ([192, 128], [240, 180], [24, 26])
    assert data["upscaled"] == []
    assert data["settings"]["no_upscale"] is True


def test_num_processes_counts_batches_over_all_processes(sample: Path, capsys: pytest.CaptureFixture[str]):
    # batch 2 on 2 processes holds 4 samples, as batch 4 on one: the same 54 batches per epoch
    data = json_report(capsys, str(sample), "--resolution", "512", "--batch-size", "2", "--num-processes", "2")
    steps = data["steps"]
    assert (steps["num_processes"], steps["batches_per_epoch"], steps["total_steps"]) == (2, 54, 540)
    assert run_kiln(str(sample), "--resolution", "512", "--batch-size", "2", "--num-processes", "2") == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["batches", "per", "epoch", "54"] in [row[:4] for row in rows]
    assert ["processes", "2", "4", "samples", "per", "batch"] in rows
    assert run_kiln(str(sample), "--num-processes", "0") == 1
    assert "--num-processes must be a whole number >= 1" in capsys.readouterr().err


def test_human_tables(sample: Path, capsys: pytest.CaptureFixture[str]):
    assert run_kiln(str(sample), "--resolution", "512", "--batch-size", "4", "--epochs", "10") == 0
    out = capsys.readouterr().out
    assert "512x512" in out and "832x256" in out
    assert "8 buckets" in out
    assert "13 image(s) will be upscaled" in out
    assert "clock.png" in out and "x2.49" in out  # 240 -> 597 wide
    assert "5 thin bucket(s)" in out
    rows = [line.split() for line in out.splitlines()]
    assert ["batches", "per", "epoch", "54"] in [row[:4] for row in rows]  # per bucket, not 200 / 4 = 50
    assert ["total", "steps", "540"] in [row[:3] for row in rows]
    assert "\u2588" in out  # share bars


def test_regularization_images_are_matched_to_train(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    root = tmp_path / "withreg"
    (root / "10_kiln photo").mkdir(parents=True)
    (root / "reg" / "1_photo").mkdir(parents=True)
    for name in ("astronaut.jpg", "coffee.jpg", "cat.jpg"):
        shutil.copy(SAMPLE / PHOTO / name, root / "10_kiln photo" / name)
    for name in ("brick.png", "brick_wide.jpg", "grass.webp", "gravel.png"):
        shutil.copy(SAMPLE / TEXTURE / name, root / "reg" / "1_photo" / name)
    data = json_report(capsys, str(root), "--resolution", "512", "--batch-size", "4")
    # train 3 x 10 = 30; 4 reg x 1 = 4, kohya fills to 30: 4 passes of +1 -> 28, then brick, brick_wide +1
    repeats = {i["path"]: i["repeats"] for i in data["images"] if i["is_reg"]}
    assert repeats == {
        "reg/1_photo/brick.png": 8,
        "reg/1_photo/brick_wide.jpg": 8,
        "reg/1_photo/grass.webp": 7,
        "reg/1_photo/gravel.png": 7,
    }
    steps = data["steps"]
    assert (steps["train_with_repeats"], steps["reg_with_repeats"], steps["reg_used_with_repeats"]) == (
        30,
        4,
        30,
    )
    # buckets: 512x512 = astronaut 10 + brick 8 + grass 7 + gravel 7 = 32 -> 8 batches;
    # 640x384 = cat + coffee = 20 -> 5; 704x320 = brick_wide 8 -> 2. Total 15.
    assert steps["batches_per_epoch"] == 15


def test_bad_input_is_explained(sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    before = snapshot(sample)
    assert run_kiln(str(sample), "--resolution", "1000") == 1
    err = capsys.readouterr().err
    assert "not a multiple of step 64" in err and "960,960" in err
    assert run_kiln(str(sample), "--min-bucket", "1100", "--max-bucket", "1024") == 1
    assert "--min-bucket 1100 (1088 after kohya's rounding" in capsys.readouterr().err
    assert run_kiln(str(sample), "--resolution", "big") == 1
    assert "--resolution" in capsys.readouterr().err
    assert run_kiln(str(sample), "--batch-size", "0") == 1
    assert "--batch-size must be a whole number >= 1" in capsys.readouterr().err
    assert run_kiln(str(tmp_path / "missing")) == 1
    assert "no such dataset" in capsys.readouterr().err
    assert snapshot(sample) == before
    assert not (sample / ".kiln").exists()  # settings are checked before the dataset is indexed


def test_file_names_are_data_not_markup_or_escapes(sample: Path, capsys: pytest.CaptureFixture[str]):
    odd = sample / PHOTO / "[bold red]x\x1b[2J.png"
    shutil.copy(SAMPLE / PHOTO / "clock.png", odd)
    assert run_kiln(str(sample), "--resolution", "512", "--images") == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert "[bold red]x" in out  # shown literally, not interpreted


def test_registration_is_light():
    code = (
        "import sys, curator.cli.buckets as b, argparse;"
        "p = argparse.ArgumentParser(); b.register(p.add_subparsers());"
        "print(sorted(m for m in ('rich', 'pydantic', 'curator.dataset', 'curator.buckets', 'PIL') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
