"""The validation loss: a held-out split chosen by its own seed, fixed timesteps and noise, identical across two
runs with the same seed, and shown in `kiln watch`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tests.test_train_loop import make_dataset, models, one_thread, tiny_config  # noqa: F401 (fixtures)
from train.data.dataset import TrainItem, split_validation
from train.rundir import read_events
from train.validation import plan_validation, validation_timesteps


def _items(folders: dict[str, int], reg: int = 0) -> list[TrainItem]:
    from curator.buckets import BucketAssignment

    a = BucketAssignment(bucket=(64, 64), resized=(64, 64), crop=(0, 0), ar_error=0.0, upscaled=False)
    items = []
    for folder, n in folders.items():
        for k in range(n):
            items.append(TrainItem(index=len(items), path=f"{folder}/{k:03d}.png", abs_path=Path("/x"), size=(64, 64),
                                   sha256=f"{folder}{k}", assignment=a, repeats=2, is_reg=False, caption="c",
                                   keep_tokens=0))
    for k in range(reg):
        items.append(replace(items[0], index=len(items), path=f"reg/1_dog/{k}.png", is_reg=True))
    return items


def test_split_is_per_folder_seeded_and_keeps_training_images() -> None:
    items = _items({"10_a": 20, "5_b": 10, "1_c": 1}, reg=3)
    train, val = split_validation(items, 0.2, seed=0)
    assert len(val) == 4 + 2  # round(20 x .2) + round(10 x .2); the single image of 1_c stays in training
    assert {i.path.split("/")[0] for i in val} == {"10_a", "5_b"}
    assert not any(i.is_reg for i in val) and sum(i.is_reg for i in train) == 3
    assert [i.index for i in train] == list(range(len(train))) and [i.index for i in val] == list(range(len(val)))
    assert {i.path for i in train} | {i.path for i in val} == {i.path for i in items}
    again, val2 = split_validation(list(reversed(items)), 0.2, seed=0)
    assert {i.path for i in val2} == {i.path for i in val}  # depends on the images, not their order
    assert {i.path for i in split_validation(items, 0.2, seed=1)[1]} != {i.path for i in val}
    assert split_validation(items, 0.0, seed=0) == (items, [])


def test_timesteps_and_plan_are_kohyas_and_fixed() -> None:
    assert validation_timesteps(0, 1000) == [200, 400, 600, 800]
    assert validation_timesteps(100, 900) == [260, 420, 580, 740]
    plan = plan_validation(_items({"1_a": 5}), batch_size=2)
    assert [[s.position for s in b] for b in plan] == [[0, 1], [2, 3], [4]]


@pytest.mark.slow
def test_validation_loss_is_identical_across_runs_and_shown(models, tmp_path) -> None:
    from train.loop import train
    from train.runs.live import render_run
    from train.runs.track import RunTracker

    data = make_dataset(tmp_path / "data", broken=False)
    folder = data / "2_alice woman"
    from PIL import Image
    from skimage import data as skdata

    for name in ("rocket", "immunohistochemistry"):
        Image.fromarray(getattr(skdata, name)()).resize((64, 64)).save(folder / f"{name}.png")
        (folder / f"{name}.txt").write_text(f"alice woman, {name}")
    extra = ("train.max_steps=4", "train.batch_size=2", "dataset.validation_split=0.4",
             "train.validate_every_n_steps=2", "dataset.flip_aug=true", "dataset.shuffle_caption=true")
    one = train(tiny_config(models["sd1"] / "diffusers", data, tmp_path, "one", *extra))
    two = train(tiny_config(models["sd1"] / "diffusers", data, tmp_path, "two", *extra))
    assert one.reason == two.reason == "finished", (one.message, two.message)
    assert [s for s, _ in one.validation] == [2, 3, 4]  # every 2 steps, and each epoch's end (3 steps), as kohya
    assert one.validation == two.validation  # bit for bit
    events = [e for e in read_events(tmp_path / "one") if e["type"] == "validation"]
    assert [e["images"] for e in events] == [2, 2, 2] and events[0]["timesteps"] == [200, 400, 600, 800]
    start = next(e for e in read_events(tmp_path / "one") if e["type"] == "start")
    assert start["images"] == 3 and start["validation_images"] == 2  # 5 images, 2 held out
    # kiln watch shows it beside the training loss
    tracker = RunTracker()
    tracker.feed_all(list(read_events(tmp_path / "one")))
    assert tracker.val_steps == [2, 3, 4] and tracker.val_loss == pytest.approx(one.validation[-1][1])
    from rich.console import Console

    console = Console(width=120, record=True)
    console.print(render_run(tracker, width=110, state="finished"))
    import re

    assert re.search(rf"val\s+{one.validation[-1][1]:.4f}", console.export_text())
