"""LR schedules kohya users pick (cosine_with_min_lr, warmup_stable_decay with lr_scheduler_min_lr_ratio and
lr_decay_steps) and the schedule-free optimizers' train / evaluation modes."""

from __future__ import annotations

import math

import pytest
import torch

from train.config import ConfigError, load_config
from train.optim import create_optimizer, evaluation_weights, is_schedule_free
from train.schedulers import create_scheduler

BASE = ["model.path=/m.safetensors", "dataset.path=/d"]


def lrs(name: str, total: int, **kw: object) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = create_scheduler(name, opt, total_steps=total, **kw)  # type: ignore[arg-type]
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_cosine_with_min_lr_ends_at_the_floor() -> None:
    got = lrs("cosine_with_min_lr", 100, lr_warmup=10, min_lr_ratio=0.1)
    assert got[0] == 0 and got[5] == pytest.approx(0.5) and got[10] == pytest.approx(1.0)  # linear warmup
    for step in (10, 40, 70, 99):  # 0.1 + 0.9 * half cosine over the steps after warmup
        progress = (step - 10) / 90
        assert got[step] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)), rel=1e-6)
    assert min(got[10:]) >= 0.1


def test_warmup_stable_decay_has_three_phases() -> None:
    got = lrs("warmup_stable_decay", 100, lr_warmup=0.1, lr_decay=0.2, min_lr_ratio=0.05)
    assert got[0] == pytest.approx(0.05) and got[10] == pytest.approx(1.0)  # warmup from the floor
    assert all(v == pytest.approx(1.0) for v in got[10:80])  # stable
    assert got[80] == pytest.approx(1.0) and got[99] < 0.06 and got[99] >= 0.05  # cosine decay to the floor
    with pytest.raises(ValueError, match="do not fit the run's 100 steps"):
        lrs("warmup_stable_decay", 100, lr_warmup=60, lr_decay=50)


@pytest.mark.parametrize(("overrides", "expected"), [
    (["train.lr_scheduler=cosine_with_min_lr"],
     "train.lr_scheduler: 'cosine_with_min_lr' is not allowed: cosine_with_min_lr needs train.lr_scheduler_min_lr_ratio"),
    (["train.optimizer=AdamWScheduleFree", "train.lr_scheduler=cosine"],
     "train.lr_scheduler: 'cosine' is not allowed: AdamWScheduleFree schedules itself"),
    (["train.lr_scheduler_min_lr_ratio=1"], "train.lr_scheduler_min_lr_ratio: 1 is not allowed: must be < 1"),
])
def test_schedule_options_are_validated(overrides: list[str], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(overrides=BASE + overrides)
    assert any(line.startswith(expected) for line in info.value.lines), info.value.lines


def test_schedule_free_optimizer_evaluates_with_its_averaged_weights() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = create_optimizer("AdamWScheduleFree", [{"params": list(model.parameters())}], 0.05, {})
    assert is_schedule_free(opt) and opt.param_groups[0]["train_mode"]  # ready to step
    assert not is_schedule_free(torch.optim.AdamW(model.parameters()))
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    for _ in range(20):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    training = model.weight.detach().clone()
    with evaluation_weights(opt):
        assert not opt.param_groups[0]["train_mode"]
        evaluated = model.weight.detach().clone()
    assert not torch.allclose(training, evaluated)  # the sampled/saved weights are the averaged ones
    assert torch.allclose(model.weight, training, atol=1e-6) and opt.param_groups[0]["train_mode"]
    with evaluation_weights(torch.optim.AdamW(model.parameters())):  # others: nothing happens
        assert torch.allclose(model.weight, training, atol=1e-6)
