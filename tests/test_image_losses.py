"""Per-image loss ranking: losses normalised by the expected loss at their timestep (a run-long timestep
profile times a short-term level), `kiln runs RUN --hardest / --easiest`, and a planted noise image that a
tiny model ranks first."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest

from train.image_losses import IMAGE_LOSSES, ImageLosses, rank_images, read_image_losses

ROOT = Path(__file__).resolve().parents[1]


def simulated_run(hard: dict[int, float], *, images: int = 30, epochs: int = 8, batch: int = 2,
                  seed: int = 0) -> ImageLosses:
    """Losses as training makes them: steep in the timestep (x10 from t=0 to t=999), falling over the run
    (x0.4), 15% noise per sample, and a factor per image (1 unless ``hard`` says otherwise)."""
    rng = random.Random(seed)
    losses = ImageLosses([(f"1_a/{i:02d}.png", f"caption {i}", False) for i in range(images)])
    step = 0
    for _epoch in range(epochs):
        order = list(range(images))
        rng.shuffle(order)
        for start in range(0, images, batch):
            step += 1
            progress = step / (epochs * images / batch)
            samples = []
            for index in order[start:start + batch]:
                t = rng.randrange(1000)
                value = 0.05 * 10 ** (1 - t / 1000) * (1 - 0.6 * progress) * hard.get(index, 1.0)
                samples.append((index, t, value * math.exp(rng.gauss(0, 0.15))))
            losses.add_step(step, samples)
    return losses


def test_a_harder_image_ranks_first_despite_timesteps_and_the_falling_loss() -> None:
    losses = simulated_run({7: 1.4, 3: 0.7})
    ranked = rank_images(losses.to_json())
    assert ranked[0].path == "1_a/07.png" and ranked[0].score > 1.25
    assert rank_images(losses.to_json(), easiest=True)[0].path == "1_a/03.png"
    typical = [r.score for r in ranked if r.path not in ("1_a/07.png", "1_a/03.png")]
    assert 0.85 < sorted(typical)[len(typical) // 2] < 1.15  # a typical image scores about 1
    assert ranked[0].draws == 8 and ranked[0].caption == "caption 7"


def test_without_a_hard_image_no_score_stands_out() -> None:
    ranked = rank_images(simulated_run({}, seed=3).to_json())
    assert max(r.score for r in ranked) < 1.25 and min(r.score for r in ranked) > 0.8


def test_restore_drops_draws_after_the_resumed_step(tmp_path: Path) -> None:
    losses = simulated_run({7: 1.4}, epochs=4)
    losses.write(tmp_path)
    data = read_image_losses(tmp_path)
    assert data is not None and data["format"] == 1 and len(data["images"]) == 30
    resumed = ImageLosses([(f"1_a/{i:02d}.png", f"caption {i}", False) for i in range(30)])
    resumed.restore(tmp_path, up_to_step=30)  # 2 of 4 epochs (15 steps each)
    assert resumed.step == 30
    assert all(r[0] <= 30 for e in resumed.entries for r in e.recent)
    assert sum(e.draws for e in resumed.entries) == 60 and resumed.level is not None
    assert read_image_losses(tmp_path / "nowhere") is None
    (tmp_path / IMAGE_LOSSES).write_text("{torn")
    assert read_image_losses(tmp_path) is None


def test_kiln_runs_hardest_and_easiest(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "events.jsonl").write_text('{"t": 1, "type": "phase", "phase": "x"}\n')
    (run / "config.toml").write_text(f'[dataset]\npath = "{tmp_path / "data"}"\n')
    losses = simulated_run({7: 1.5})
    losses.entries[7].caption = "evil \x1b[31mred\x1b[0m [bold]caption[/bold]"
    losses.write(run)

    def kiln(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", "import sys; from tui.cli import main; sys.exit(main())", *args],
                              capture_output=True, text=True, cwd=tmp_path, env={"PYTHONPATH": str(ROOT),
                                                                                 "COLUMNS": "160", "HOME": str(tmp_path)})

    out = kiln("runs", str(run), "--hardest", "3")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "hardest 3 of 30 images" in lines[0]
    row = next(line for line in lines if "07.png" in line)
    assert row.split()[0] == "1" and float(row.split()[1].lstrip("x")) > 1.25
    assert "\x1b" not in out.stdout and "[bold]caption[/bold]" in out.stdout  # data, never markup
    easy = json.loads(kiln("runs", str(run), "--easiest", "2", "--json").stdout)
    assert len(easy) == 2 and easy[0]["score"] <= easy[1]["score"]
    assert easy[0]["abs_path"] == str(tmp_path / "data" / easy[0]["path"])
    bare = tmp_path / "runs" / "r2"
    bare.mkdir()
    (bare / "events.jsonl").write_text("")
    missing = kiln("runs", str(bare), "--hardest")
    assert missing.returncode == 1 and "no image_losses.json yet" in missing.stderr
    two = kiln("runs", str(run), str(bare), "--hardest")
    assert two.returncode == 1 and "one RUN" in two.stderr


# ------------------------------------------------------------------------------------------------- a tiny model
def _photo_dataset(root: Path) -> Path:
    """40 crops of 8 real photographs (captioned by subject) and one image of pure noise with a caption that
    claims otherwise, in one kohya folder."""
    import numpy as np
    from PIL import Image

    from tests.conftest import photo

    folder = root / "1_photo"
    folder.mkdir(parents=True)
    rng = random.Random(0)
    for name in ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "retina.jpg",
                 "ihc.png", "motorcycle_right.png"):
        image = photo(name)
        w, h = image.size
        stem = name.split(".")[0]
        for k in range(5):
            side = rng.randint(min(w, h) // 3, min(w, h))
            x, y = rng.randint(0, w - side), rng.randint(0, h - side)
            image.crop((x, y, x + side, y + side)).resize((64, 64), Image.Resampling.LANCZOS).save(
                folder / f"{stem}_{k}.png")
            (folder / f"{stem}_{k}.txt").write_text(f"photo, {stem.split('_')[0]}")
    # binary colour noise in 2x2 pixel blocks: white noise at the latent resolution
    noise = (np.random.default_rng(1).integers(0, 2, (32, 32, 3), dtype=np.uint8) * 255).repeat(2, 0).repeat(2, 1)
    Image.fromarray(noise).save(folder / "noise.png")
    (folder / "noise.txt").write_text("photo, astronaut")
    return root


def _pixel_latents(cfg: object) -> None:
    """Fill the latent cache with each image's 2x2-pooled pixels (RGB + their mean as the 4th channel).

    The tiny random VAE group-normalises every image into the same latent statistics, which no real VAE does;
    a trained VAE's latent is a compressed image, and the pooled pixels are the simplest one. The trainer reads
    these latents from its own cache (same keys), so everything after the VAE runs as in any run."""
    import torch

    from train.config import TrainConfig
    from train.data.cache import LatentCache, latent_key, vae_identity
    from train.data.dataset import build_items
    from train.data.images import load_rgb, place, render, to_tensor
    from train.models.loading import load_base_model

    assert isinstance(cfg, TrainConfig)
    data = build_items(cfg.dataset, lambda *_: None, progress=False)
    items, dataset = data.items + data.held_out, data.dataset
    base = load_base_model(cfg.model, dtype=torch.float32, device=torch.device("cpu"))
    base.vae.to(torch.float32)
    vae_id = vae_identity(base.vae)
    cache = LatentCache(dataset.index.kiln_dir / "latents")
    for item in items:
        a = item.assignment
        placement = place(item.size, a.resized, a.crop, a.bucket, random_crop=False, flip=False, rng=random.Random(0))
        pooled = torch.nn.functional.avg_pool2d(to_tensor(render(load_rgb(item.abs_path), placement))[None], 2)[0]
        cache.put(latent_key(item.sha256, a.bucket, a.resized, a.crop, False, vae_id),
                  torch.cat([pooled, pooled.mean(0, keepdim=True)]))


@pytest.mark.slow
def test_a_planted_noise_image_ranks_in_the_top_5_percent(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    import torch

    from tests.test_train_loop import tiny_config, tiny_models
    from train.loop import train

    torch.set_num_threads(1)
    model = tiny_models(Path(request.config.cache.mkdir("kiln-tiny-models")), archs=("sd1",))["sd1"] / "diffusers"
    data = _photo_dataset(tmp_path / "ds")
    cfg = tiny_config(model, data, tmp_path, "rank", "train.max_epochs=6", "train.batch_size=4",
                      "train.learning_rate=5e-3", "network.type=locon", "network.dim=16", "network.alpha=16",
                      "network.conv_dim=16", "network.conv_alpha=16", "dataset.cache_latents_to_disk=true")
    _pixel_latents(cfg)
    result = train(cfg, install_signals=False)
    assert result.reason == "finished", result.message
    data_file = read_image_losses(tmp_path / "rank")
    assert data_file is not None
    ranked = rank_images(data_file)
    assert len(ranked) == 41 and all(r.draws == 6 for r in ranked)
    planted = next(r for r in ranked if r.path.endswith("noise.png"))
    print(f"planted noise image: rank {planted.rank} of {len(ranked)}, x{planted.score:.2f} "
          f"(next: x{ranked[1 if planted.rank == 1 else 0].score:.2f})")
    assert planted.rank <= math.floor(0.05 * len(ranked))  # top 5%: rank 1 or 2 of 41
