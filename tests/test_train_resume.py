"""Training behaviour on tiny SD1 models (CPU, 64 px): the loss falls, resume is exact, NaN stops with the
likely causes, epoch saves and samples, the plain display."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_train_loop import make_dataset, models, one_thread, tiny_config  # noqa: F401 (fixtures)
from train.rundir import read_events, read_status, request_save, request_stop

pytestmark = pytest.mark.slow  # trains tiny models on the CPU


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"))


def test_loss_falls_when_overfitting_one_image(models, tmp_path) -> None:
    from train.loop import train

    one = make_dataset(tmp_path / "one", broken=False)
    for name in ("coffee", "chelsea"):
        (one / "2_alice woman" / f"{name}.png").unlink()
    cfg = tiny_config(models["sd1"] / "diffusers", one, tmp_path, "fit", "train.max_steps=40",
                      "train.learning_rate=3e-3", "network.dim=8", "train.min_timestep=300",
                      "train.max_timestep=700", "network.train_text_encoder=false", "dataset.cache_latents=true")
    result = train(cfg)
    assert result.reason == "finished", result.message
    first, last = result.losses[:8], result.losses[-8:]
    assert sum(last) / len(last) < 0.8 * (sum(first) / len(first)), result.losses


def test_resume_continues_with_identical_losses(models, dataset, tmp_path) -> None:
    from train.loop import train

    extra = ("train.max_steps=5", "train.batch_size=2", "train.lr_scheduler=cosine", "train.lr_warmup=1",
             "dataset.shuffle_caption=true", "dataset.flip_aug=true", "network.dropout=0.1")
    straight = train(tiny_config(models["sd1"] / "diffusers", dataset, tmp_path, "straight", *extra))
    assert straight.reason == "finished", straight.message

    cfg = tiny_config(models["sd1"] / "diffusers", dataset, tmp_path, "resumed", *extra)
    run = tmp_path / "resumed"

    def stop_after_two(event: dict) -> None:
        if event["type"] == "step" and event["step"] == 2:
            request_stop(run)

    first = train(cfg, listeners=[stop_after_two])
    assert first.reason == "stopped" and first.step == 2
    assert (run / "state" / "trainer.json").is_file() and (run / "resumed-step00000002.safetensors").is_file()
    assert read_status(run)["state"] == "stopped"
    second = train(cfg, resume=run)
    assert second.reason == "finished", second.message
    assert len(first.losses) == 2 and len(second.losses) == 3
    assert first.losses + second.losses == pytest.approx(straight.losses, abs=1e-6)
    from safetensors.torch import load_file

    a, b = load_file(str(tmp_path / "straight" / "straight.safetensors")), load_file(str(run / "resumed.safetensors"))
    assert a.keys() == b.keys() and all((a[k].float() - b[k].float()).abs().max() < 1e-3 for k in a)
    starts = [e for e in read_events(run) if e["type"] == "start"]
    assert [s["resumed_step"] for s in starts] == [0, 2]


def test_non_finite_loss_stops_with_the_likely_causes(models, dataset, tmp_path) -> None:
    from train.loop import train

    cfg = tiny_config(models["sd1"] / "diffusers", dataset, tmp_path, "nan", "train.learning_rate=1e30",
                      "train.allow_unusual_lr=true",  # the pre-flight would refuse it: this is about the NaN
                      "train.max_grad_norm=0", "train.optimizer=SGD", "train.max_steps=4")
    result = train(cfg)
    assert result.reason == "error"
    assert "fp16 VAE" in result.message and "learning rate" in result.message
    events = list(read_events(tmp_path / "nan"))
    assert events[-1]["type"] == "end" and events[-1]["reason"] == "error"
    assert read_status(tmp_path / "nan")["state"] == "failed"


def test_epoch_saves_samples_and_plain_display(models, dataset, tmp_path, capsys) -> None:
    import io

    from train.display import PlainDisplay
    from train.loop import train

    stream = io.StringIO()
    display = PlainDisplay(stream=stream, interval=0)
    run = tmp_path / "ep"

    def ask_for_a_save(event: dict) -> None:
        if event["type"] == "step" and event["step"] == 1:
            request_save(run)
    cfg = tiny_config(models["sd1"] / "diffusers", dataset, tmp_path, "ep", "train.max_epochs=2",
                      "train.batch_size=3", "output.save_every_n_epochs=1", "sample.enabled=true",
                      'sample.prompts=["alice woman, photo"]', "sample.every_n_epochs=1", "sample.steps=2",
                      "sample.sampler=ddim")
    result = train(cfg, listeners=[display, ask_for_a_save])
    assert result.reason == "finished", result.message
    assert (run / "ep-step00000001.safetensors").is_file() and (run / "state" / "trainer.json").is_file()
    assert not (run / "save.request").exists()
    # 3 images x 2 repeats / batch 3 = 2 steps per epoch; the last epoch is the final file, not an epoch save
    assert result.step == 4
    assert (run / "ep-000001.safetensors").is_file() and not (run / "ep-000002.safetensors").exists()
    assert (run / "ep.safetensors").is_file()
    samples = sorted(p.name for p in (run / "samples").glob("*.png"))
    assert samples == ["ep-000001-00.png"]
    events = list(read_events(run))
    assert [e["epoch"] for e in events if e["type"] == "epoch"] == [1, 2]
    assert any(e["type"] == "sample" for e in events)
    text = stream.getvalue()
    assert "training ep: 4 steps, 2 epochs" in text and "step 4/4" in text and "finished at step 4" in text
