"""Resuming transparently: `kiln train --resume RUN` prints the step, epoch, LR, optimizer and RNG state it
found, the saved file it continues from and every config change; unsafe changes are refused, an LR change
needs --force, is applied from the resumed step and is written to the run log; `kiln resume` says the same."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_train_loop import make_dataset, models, one_thread, tiny_config  # noqa: F401 (fixtures)
from train.rundir import read_events, request_stop

pytestmark = pytest.mark.slow  # trains tiny models on the CPU


@pytest.fixture(scope="module")
def stopped(models, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A run stopped at step 2 of 6 (AdamW, cosine), and a copy of its folder for each test to spoil."""
    from train.loop import train

    root = tmp_path_factory.mktemp("resume")
    dataset = make_dataset(root, broken=False)
    cfg = tiny_config(models["sd1"] / "diffusers", dataset, root, "run", "train.max_steps=6",
                      "train.lr_scheduler=cosine")
    run = root / "run"

    def stop_at_two(event: dict) -> None:
        if event["type"] == "step" and event["step"] == 2:
            request_stop(run)

    result = train(cfg, listeners=[stop_at_two])
    assert result.reason == "stopped" and result.step == 2, result.message
    return root, run


def fresh_copy(stopped: tuple[Path, Path], tmp_path: Path) -> Path:
    import shutil

    _, run = stopped
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    text = (copy / "config.toml").read_text().replace(f'dir = "{run.parent}"', f'dir = "{tmp_path}"')  # output.dir
    (copy / "config.toml").write_text(text)
    return copy


def resume(run: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    from train.cli import main

    code = main(["--resume", str(run), *extra, "--quiet"])
    out, err = capsys.readouterr()
    return code, out, err


def test_resume_prints_what_it_continues_from(stopped, tmp_path, capsys) -> None:
    run = fresh_copy(stopped, tmp_path)
    code, out, err = resume(run, capsys, "--check")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"resuming {run}"
    assert lines[1] == "  step 2 of 6, epoch 1 (batch 2 of it done)"
    assert lines[2].startswith("  learning rate ") and "(textencoder, unet; scheduler cosine at step 2)" in lines[2]
    assert lines[3].startswith("  optimizer AdamW: state for ") and "tensors" in lines[3]
    assert lines[4] == "  RNG state: torch, numpy, python"
    assert lines[5] == f"  continues from {run / 'run-step00000002.safetensors'}"
    assert lines[6] == "  config: unchanged" and "config OK" in out


def test_unsafe_changes_are_refused_and_nothing_starts(stopped, tmp_path, capsys) -> None:
    run = fresh_copy(stopped, tmp_path)
    before = len(list(read_events(run)))
    code, out, err = resume(run, capsys, "--set", "network.dim=8", "--set", "train.max_steps=10")
    assert code == 1
    assert "network.dim: 4 -> 8 (the saved state does not fit it)  [refused]" in out
    assert "train.max_steps: 6 -> 10 (the LR schedule follows the new length)  [ok]" in out
    assert "cannot resume with network.dim changed" in err
    code, out, err = resume(run, capsys, "--set", "train.max_steps=2")
    assert code == 1 and "train.max_steps: 6 -> 2 (the run is already at step 2)  [refused]" in out
    assert len(list(read_events(run))) == before  # no run was started


def test_learning_rate_change_needs_force_and_is_applied_and_logged(stopped, tmp_path, capsys) -> None:
    run = fresh_copy(stopped, tmp_path)
    code, out, err = resume(run, capsys, "--set", "train.unet_lr=5e-4", "--set", "train.max_steps=3")
    assert code == 1 and "train.unet_lr: unset -> 0.0005 (applied from the resumed step on)  [needs --force]" in out
    assert "changes only with --force" in err
    code, out, err = resume(run, capsys, "--set", "train.unet_lr=5e-4", "--set", "train.max_steps=3", "--force")
    assert code == 0, err
    events = list(read_events(run))
    (warning,) = [e for e in events if e["type"] == "warning" and "changed learning rates" in e["message"]]
    assert warning["message"] == "resumed at step 2 with changed learning rates: unet: 0.001 -> 0.0005"
    step3 = next(e for e in events if e["type"] == "step" and e["step"] == 3)
    te, unet = step3["lr"]  # one cosine factor for both groups: the UNet's base is now half the encoder's
    assert unet == pytest.approx(te * 0.5, rel=1e-6), step3["lr"]
    assert "\nunet_lr = 0.0005\n" in (run / "config.toml").read_text()  # the run's config says it too


def test_kiln_resume_says_the_same(stopped, tmp_path) -> None:
    from train.runs.control import ControlError, resume_run

    run = fresh_copy(stopped, tmp_path)
    with pytest.raises(ControlError, match="cannot resume with network.dim changed"):
        resume_run(run, ["network.dim=8"])
    with pytest.raises(ControlError, match="changes only with --force"):
        resume_run(run, ["train.learning_rate=1e-4"])
