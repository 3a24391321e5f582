"""Multi-phase LR schedules (``[[train.phases]]``): one run, linear then cosine, the rates as each phase's
scheduler gives them, and a resume exactly at and just after the phase boundary that continues bit for bit."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_train_loop import make_dataset, models, one_thread, tiny_config  # noqa: F401 (fixtures)
from train.config import TrainSection
from train.rundir import read_events, request_stop

pytestmark = pytest.mark.slow  # trains tiny models on the CPU

PHASES = ('train.phases=[{ lr_scheduler = "linear", steps = 3 }, '
          '{ lr_scheduler = "cosine", lr_warmup = 1, lr_scale = 0.5 }]')
EXTRA = ("train.max_steps=6", "train.batch_size=2", "dataset.shuffle_caption=true", "dataset.flip_aug=true",
         PHASES)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"))


def test_phase_spans_and_lengths() -> None:
    t = TrainSection(max_epochs=10, phases=[{"lr_scheduler": "linear"}, {"lr_scheduler": "cosine", "epochs": 2}])
    assert [(a, b, p.lr_scheduler) for a, b, p in t.phase_spans(50, 5)] == [(0, 40, "linear"), (40, 50, "cosine")]
    fixed = TrainSection(phases=[{"lr_scheduler": "linear", "epochs": 3}, {"lr_scheduler": "cosine", "steps": 4}])
    assert fixed.step_math({(64, 64): 10}, 1).total_steps == 34  # 3 epochs x 10 steps + 4
    with pytest.raises(ValueError, match="nothing is left"):
        TrainSection(phases=[{"lr_scheduler": "linear", "steps": 9}, {"lr_scheduler": "cosine"}]).phase_spans(8, 4)
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="only one phase"):
        TrainSection(phases=[{"lr_scheduler": "linear"}, {"lr_scheduler": "cosine"}])
    with pytest.raises(ValidationError, match="not both"):
        TrainSection(phases=[{"lr_scheduler": "linear", "steps": 2, "epochs": 1}])


def _lrs(run: Path) -> list[float]:
    return [e["lr"][0] for e in read_events(run) if e["type"] == "step"]


@pytest.mark.parametrize("stop_at", [3, 4])  # exactly at the boundary (an epoch end too), and just across it
def test_resume_at_and_across_the_phase_boundary_is_exact(models, dataset, tmp_path, stop_at: int) -> None:
    from safetensors.torch import load_file

    from train.loop import train

    straight = train(tiny_config(models["sd1"] / "diffusers", dataset, tmp_path, "straight", *EXTRA))
    assert straight.reason == "finished", straight.message
    lrs = _lrs(tmp_path / "straight")
    lr = 1e-3
    # a step event reports the rate of the next step: steps 1-3 linear from lr down (lr x 2/3, x 1/3 next);
    # step 4 is the cosine phase's warmup step (0), then half the rate, decaying to 0
    assert lrs == pytest.approx([lr * 2 / 3, lr / 3, 0.0, lr * 0.5, lr * 0.25, 0.0])
    schedule = [e for e in read_events(tmp_path / "straight") if e["type"] == "schedule"]
    assert [(e["phase"], e["lr_scheduler"], e["first_step"], e["last_step"]) for e in schedule] == \
        [(1, "linear", 1, 3), (2, "cosine", 4, 6)]

    run = tmp_path / "resumed"
    cfg = tiny_config(models["sd1"] / "diffusers", dataset, tmp_path, "resumed", *EXTRA)

    def stop(event: dict) -> None:
        if event["type"] == "step" and event["step"] == stop_at:
            request_stop(run)

    first = train(cfg, listeners=[stop])
    assert first.reason == "stopped" and first.step == stop_at
    second = train(cfg, resume=run)
    assert second.reason == "finished", second.message
    assert first.losses + second.losses == straight.losses  # bit for bit
    assert _lrs(run)[-6:] == lrs
    a, b = load_file(str(tmp_path / "straight" / "straight.safetensors")), load_file(str(run / "resumed.safetensors"))
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)
    phases_after_resume = [e["phase"] for e in read_events(run) if e["type"] == "schedule"]
    assert phases_after_resume == [1, 2, 2] if stop_at == 4 else [1, 2]
