"""The opt-in speed settings (train.channels_last, train.sdpa_backend, train.compile, dataset.pin_memory) run
and train the same LoRA as the defaults: same losses step by step and the same saved weights, on tiny SD1
models on the CPU. bench/bench_vs_kohya.py --lever measures each of them on a GPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.test_train_loop import one_thread, tiny_config, tiny_models  # noqa: F401 - fixture
from train.config import ConfigError, load_config

pytestmark = pytest.mark.slow  # trains tiny models on the CPU


@pytest.fixture(scope="module")
def model(request: pytest.FixtureRequest) -> Path:
    return tiny_models(Path(request.config.cache.mkdir("kiln-tiny-models")), ("sd1",))["sd1"] / "tiny-sd1.safetensors"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three real photographs in one 64x64 bucket (one shape: the compiled UNet compiles once)."""
    from tests.conftest import photo, save_photo, write_caption

    folder = tmp_path_factory.mktemp("data") / "ds" / "2_alice woman"
    for name in ("astronaut", "coffee", "chelsea"):
        save_photo(photo(f"{name}.png", (64, 64)), folder / f"{name}.png")
        write_caption(folder / f"{name}.txt", f"alice woman, {name}, photo")
    return folder.parent


def run(model: Path, dataset: Path, out: Path, name: str, *extra: str) -> tuple[list[float], dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    from train.loop import train

    cfg = tiny_config(model, dataset, out, name, "dataset.cache_latents=true", "output.save_precision=float", *extra)
    result = train(cfg, install_signals=False)
    assert result.reason == "finished", result.message
    return result.losses, load_file(str(out / name / f"{name}.safetensors"))


@pytest.fixture(scope="module")
def baseline(model: Path, dataset: Path, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[list[float], dict[str, torch.Tensor]]:
    return run(model, dataset, tmp_path_factory.mktemp("runs"), "base")


def assert_same_training(got: tuple[list[float], dict[str, torch.Tensor]],
                         want: tuple[list[float], dict[str, torch.Tensor]], tol: float) -> None:
    losses, weights = got
    base_losses, base_weights = want
    assert len(losses) == len(base_losses) == 3
    assert losses == pytest.approx(base_losses, rel=tol, abs=tol)
    assert weights.keys() == base_weights.keys()
    for key, value in weights.items():
        torch.testing.assert_close(value, base_weights[key], rtol=tol, atol=tol, msg=key)


@pytest.mark.parametrize("extra", [
    ("train.channels_last=true",),
    ("train.sdpa_backend=math",),
    ("dataset.pin_memory=true",),  # CUDA only: on a CPU the loader simply does not pin
])
def test_lever_trains_the_same_lora(model, dataset, tmp_path, baseline, extra) -> None:
    assert_same_training(run(model, dataset, tmp_path, "lever", *extra), baseline, tol=1e-4)


def test_compiled_unet_trains_the_same_lora(model, dataset, tmp_path, baseline, monkeypatch) -> None:
    """train.compile goes through nn.Module.compile after the network's hooks are in; the graph dynamo traces
    (forward and backward through AOTAutograd, the LoRA hooks inside) must compute what eager mode does.
    Inductor's code generation is left out (minutes on a CPU): the aot_eager backend runs the traced graphs."""
    calls: list[dict[str, object]] = []
    original = torch.nn.Module.compile

    def traced(self: torch.nn.Module, *args: object, **kwargs: object) -> None:
        calls.append(dict(kwargs))
        kwargs.pop("mode", None)
        original(self, *args, backend="aot_eager", **kwargs)

    monkeypatch.setattr(torch.nn.Module, "compile", traced)
    got = run(model, dataset, tmp_path, "compiled", "train.compile=max-autotune")
    assert calls == [{"mode": "max-autotune"}]
    assert_same_training(got, baseline, tol=1e-4)


def test_gpu_attention_kernel_on_cpu_is_refused_before_loading(model, dataset, tmp_path) -> None:
    from train.loop import train

    cfg = tiny_config(model, dataset, tmp_path, "flash", "train.sdpa_backend=flash")
    result = train(cfg, install_signals=False)
    assert result.reason == "error" and result.step == 0
    assert "train.sdpa_backend: 'flash' is a CUDA kernel" in result.message and "sdpa_backend=auto" in result.message


def test_lever_settings_are_validated() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(overrides=["model.path=x", "dataset.path=.", "train.compile=fast"])
    assert "train.compile" in str(err.value) and "max-autotune" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config(overrides=["model.path=x", "dataset.path=.", "train.sdpa_backend=xformers"])
    assert "train.sdpa_backend" in str(err.value)
