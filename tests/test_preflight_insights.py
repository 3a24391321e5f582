"""Pre-flight checks of the validation split and the LR phases, on a real scanned dataset."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from train.config import load_config
from train.preflight import full_preflight


def _dataset(root: Path, images: int) -> Path:
    folder = root / "2_cat"
    folder.mkdir(parents=True)
    for k in range(images):
        Image.new("RGB", (64, 64), (k * 40 % 255, 90, 30)).save(folder / f"{k}.png")
        (folder / f"{k}.txt").write_text("cat")
    return root


def _findings(tmp_path: Path, images: int, *sets: str) -> dict[str, list[str]]:
    cfg = load_config(overrides=[f"model.path={tmp_path / 'm.safetensors'}",
                                 f"dataset.path={_dataset(tmp_path / 'd', images)}", "dataset.resolution=64",
                                 "dataset.min_bucket_reso=64", "dataset.max_bucket_reso=64",
                                 f"output.dir={tmp_path / 'runs'}", *sets])
    report, data = full_preflight(cfg)
    assert data is not None
    found: dict[str, list[str]] = {}
    for f in report:
        found.setdefault(f.check, []).append(f"{f.severity}: {f.field}: {f.problem} | {f.fix}")
    return found


def test_a_split_that_holds_out_nothing_is_a_warning(tmp_path: Path) -> None:
    found = _findings(tmp_path, 3, "dataset.validation_split=0.1")
    assert found["validation split"] == [
        "warning: dataset.validation_split: 0.1 of each folder rounds to no image (a folder keeps at least one "
        "image for training): no validation loss is computed | --set dataset.validation_split=0.2"]
    ok = _findings(tmp_path / "b", 5, "dataset.validation_split=0.2")
    assert "validation split" not in ok


def test_a_validation_interval_without_a_split_is_a_warning(tmp_path: Path) -> None:
    found = _findings(tmp_path, 3, "train.validate_every_n_steps=10")
    assert found["validation split"][0].startswith("warning: train.validate_every_n_steps: is set but")


def test_phases_that_leave_nothing_for_the_open_one_are_an_error(tmp_path: Path) -> None:
    found = _findings(tmp_path, 4, "train.max_steps=10", "train.batch_size=1",
                      'train.phases=[{ lr_scheduler = "linear", steps = 10 }, { lr_scheduler = "cosine" }]')
    assert len(found["lr phases"]) == 1 and found["lr phases"][0].startswith("error: train.phases: the phases "
                                                                             "with a length take 10 steps")
    fine = _findings(tmp_path / "b", 4, "train.max_steps=10", "train.batch_size=1",
                     'train.phases=[{ lr_scheduler = "linear", steps = 6 }, { lr_scheduler = "cosine" }]')
    assert "lr phases" not in fine
