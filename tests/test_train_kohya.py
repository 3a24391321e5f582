"""kohya options in the training loop on tiny models (CPU, 64 px, a few steps): each shows its effect."""

from __future__ import annotations

import pytest

from tests.test_train_loop import dataset, models, one_thread, tiny_config  # noqa: F401 - fixtures
from train.rundir import read_events

pytestmark = pytest.mark.slow  # trains tiny models on the CPU


def test_schedule_free_optimizer_samples_and_saves_its_evaluation_weights(models, dataset, tmp_path,
                                                                          monkeypatch) -> None:
    from train.loop import train
    from train.network.network import Network

    modes: list[tuple[str, bool]] = []
    original = Network.save

    def save(self, path, *args, **kwargs):  # the optimizer's mode at the moment a LoRA file is written
        modes.append(("save", optimizer_mode()))
        return original(self, path, *args, **kwargs)

    import train.optim as optim

    created = []
    make = optim.create_optimizer

    def create(*args, **kwargs):
        opt = make(*args, **kwargs)
        created.append(opt)
        return opt

    def optimizer_mode() -> bool:
        return bool(created[0].param_groups[0]["train_mode"])

    monkeypatch.setattr(Network, "save", save)
    monkeypatch.setattr(optim, "create_optimizer", create)
    cfg = tiny_config(models["sd1"] / "diffusers", dataset, tmp_path, "sf", "train.optimizer=AdamWScheduleFree",
                      "output.save_every_n_steps=1", "train.max_steps=2")
    result = train(cfg)
    assert result.reason == "finished", result.message
    assert modes == [("save", False), ("save", False)]  # step 1 and the final file: evaluation weights
    assert optimizer_mode()  # back in train mode after each save
    assert len([e for e in read_events(tmp_path / "sf") if e["type"] == "step"]) == 2
