"""Caption processing, kohya 75-token chunking, image preparation, epoch plans, schedulers, run directory."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from train.data.captions import CaptionSettings, first_line, process_caption
from train.data.dataset import Sample, TrainItem, mix_seed, plan_epoch
from train.rundir import RunDir, read_events, read_status, request_save, request_stop

CAPTION = "alice, 1girl, red hair, smile, outdoors, sky"


def proc(caption: str, epoch: int = 1, seed: int = 0, subset_keep: int = 0, **kw) -> str:
    return process_caption(caption, CaptionSettings(**kw), epoch=epoch, rng=random.Random(seed),
                           subset_keep_tokens=subset_keep)


def test_static_caption_is_unchanged_apart_from_prefix_and_suffix() -> None:
    assert proc(CAPTION) == CAPTION
    assert proc(CAPTION, prefix="masterpiece,", suffix=", best") == f"masterpiece, {CAPTION} , best"


def test_shuffle_keeps_the_first_tokens_and_every_tag() -> None:
    outs = {proc(CAPTION, seed=s, shuffle=True, keep_tokens=2) for s in range(20)}
    assert len(outs) > 5
    for out in outs:
        tags = out.split(", ")
        assert tags[:2] == ["alice", "1girl"] and sorted(tags) == sorted(CAPTION.split(", "))
    # the dataset subset's keep_tokens applies when the config leaves keep_tokens unset
    assert all(proc(CAPTION, seed=s, shuffle=True, subset_keep=1).startswith("alice, ") for s in range(10))
    assert proc(CAPTION, seed=3, shuffle=True) == proc(CAPTION, seed=3, shuffle=True)  # seeded


def test_keep_tokens_separator_keeps_prefix_and_suffix_blocks() -> None:
    caption = "alice, 1girl ||| red hair, smile, sky ||| by artist"
    for s in range(10):
        out = proc(caption, seed=s, shuffle=True, keep_tokens_separator="|||")
        assert out.startswith("alice, 1girl, ") and out.endswith(", by artist") and "|||" not in out
    assert "|||" not in proc(caption, keep_tokens_separator="|||")


def test_caption_dropout_rate_and_every_n_epochs() -> None:
    assert proc(CAPTION, dropout_rate=1.0) == ""
    drops = sum(proc(CAPTION, seed=s, dropout_rate=0.3) == "" for s in range(400))
    assert 80 < drops < 160
    assert proc(CAPTION, epoch=3, dropout_every_n_epochs=3) == ""
    assert proc(CAPTION, epoch=4, dropout_every_n_epochs=3) == CAPTION


def test_tag_dropout_never_drops_kept_tokens() -> None:
    outs = [proc(CAPTION, seed=s, tag_dropout_rate=0.5, keep_tokens=1) for s in range(50)]
    assert all(o.startswith("alice") for o in outs)
    assert min(len(o.split(", ")) for o in outs) < 6 and max(len(o.split(", ")) for o in outs) > 1


def test_first_line_of_caption_file() -> None:
    assert first_line(b"\xef\xbb\xbfa, b\r\nsecond line\n") == "a, b"
    assert first_line(b"\n\n  x  \n") == "x"
    assert first_line(b"") == ""


def _tokenizers():
    from transformers import CLIPTokenizer

    from train.models.assemble import assemble_config_dir, shipped_config_name

    folder = assemble_config_dir(shipped_config_name("sdxl", False))
    return (CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True),
            CLIPTokenizer.from_pretrained(folder / "tokenizer_2", local_files_only=True))


def test_kohya_chunking_of_long_captions() -> None:
    from train.data.tokens import tokenize

    tok1, tok2 = _tokenizers()
    n = 10
    while len(tok1(" ".join(f"word{i}" for i in range(n)), truncation=False).input_ids) < 2 + 100:
        n += 5
    words = " ".join(f"word{i}" for i in range(n))  # about 100 tokens: two chunks
    ids = tokenize(tok1, [words], 225)
    assert ids.shape == (1, 3, 77)
    full = tok1(words, truncation=False).input_ids[1:-1]
    assert 75 < len(full) < 150
    bos, eos = tok1.bos_token_id, tok1.eos_token_id
    assert (ids[0, :, 0] == bos).all() and (ids[0, :, -1] == eos).all()
    assert ids[0, 0, 1:76].tolist() == full[:75]
    assert ids[0, 1, 1:1 + len(full) - 75].tolist() == full[75:]
    # encoder 2 pads with '!' (not EOS): an empty chunk becomes <BOS> <EOS> <PAD>...
    ids2 = tokenize(tok2, ["a short caption"], 150)
    assert ids2.shape == (1, 2, 77)
    assert ids2[0, 1, 1] == tok2.eos_token_id and ids2[0, 1, 2] == tok2.pad_token_id
    assert tokenize(tok1, ["x"], 75).shape == (1, 1, 77)


def test_chunked_encoding_matches_separate_chunk_encodings() -> None:
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    from train.data.tokens import encode_sd, tokenize

    tok1, _ = _tokenizers()
    torch.manual_seed(0)
    te = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                      num_attention_heads=4, max_position_embeddings=77)).eval()
    ids = tokenize(tok1, [" ".join(f"tag{i}" for i in range(80))], 225)
    with torch.no_grad():
        states = encode_sd(te, ids, 225)
        chunks = [te(ids[:, i])[0] for i in range(3)]
        skip2 = encode_sd(te, ids, 225, clip_skip=2)
        pen = te(ids[:, 0], output_hidden_states=True).hidden_states[-2]
    assert states.shape == (1, 227, 32)
    assert torch.allclose(states[:, 0], chunks[0][:, 0], atol=1e-6)
    assert torch.allclose(states[:, 1:76], chunks[0][:, 1:76], atol=1e-6)
    assert torch.allclose(states[:, 76:151], chunks[1][:, 1:76], atol=1e-6)
    assert torch.allclose(states[:, 151:226], chunks[2][:, 1:76], atol=1e-6)
    assert torch.allclose(states[:, 226], chunks[2][:, 76], atol=1e-6)
    assert torch.allclose(skip2[:, 1:76], getattr(te, 'text_model', te).final_layer_norm(pen)[:, 1:76], atol=1e-5)


def test_images_are_normalised_rgb(tmp_path: Path) -> None:
    from PIL import Image

    from train.data.images import load_rgb, place, render, to_tensor

    rgba = Image.new("RGBA", (40, 20), (255, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (0, 0, 20, 20))
    rgba.save(tmp_path / "a.png")
    img = load_rgb(tmp_path / "a.png")
    assert img.mode == "RGB" and img.getpixel((30, 10)) == (255, 255, 255) and img.getpixel((5, 5)) == (0, 0, 255)
    Image.new("CMYK", (16, 16), (0, 255, 0, 0)).save(tmp_path / "c.jpg")
    assert load_rgb(tmp_path / "c.jpg").mode == "RGB"
    rotated = Image.new("RGB", (30, 10), (0, 200, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90
    rotated.save(tmp_path / "r.jpg", exif=exif)
    assert load_rgb(tmp_path / "r.jpg").size == (10, 30)
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(tmp_path / "g.gif", save_all=True, append_images=frames[1:])
    assert load_rgb(tmp_path / "g.gif").getpixel((1, 1))[0] > 200
    p = place((40, 20), (40, 20), (4, 0), (32, 16), random_crop=False, flip=True, rng=random.Random(0))
    assert p.crop_top_left == (0, 4)  # (40 - 4 - 32) mirrored
    t = to_tensor(render(img, p))
    assert t.shape == (3, 16, 32) and t.min() >= -1 and t.max() <= 1


def _item(i: int, bucket: tuple[int, int], repeats: int = 1) -> TrainItem:
    from curator.buckets import BucketAssignment

    a = BucketAssignment(bucket=bucket, resized=bucket, crop=(0, 0), ar_error=0.0, upscaled=False)
    return TrainItem(index=i, path=f"{i}.png", abs_path=Path(f"/x/{i}.png"), size=bucket, sha256="0" * 64,
                     assignment=a, repeats=repeats, is_reg=False, caption="", keep_tokens=0)


def test_epoch_plan_is_seeded_one_bucket_per_batch_and_complete() -> None:
    items = [_item(i, (64, 64) if i < 5 else (64, 128), repeats=2) for i in range(8)]
    plan = plan_epoch(items, 3, seed=1, epoch=1)
    assert plan == plan_epoch(items, 3, seed=1, epoch=1)
    assert plan != plan_epoch(items, 3, seed=1, epoch=2)
    drawn = [s.item for batch in plan for s in batch]
    assert sorted(drawn) == sorted([i for i in range(8) for _ in range(2)])
    assert all(len({items[s.item].bucket for s in batch}) == 1 for batch in plan)
    assert [s.position for batch in plan for s in batch] == list(range(16))
    padded = plan_epoch(items, 4, seed=1, epoch=1, pad=True)
    assert all(len(b) == 4 for b in padded)
    assert mix_seed(1, 2, 3) == mix_seed(1, 2, 3) != mix_seed(1, 2, 4)
    assert isinstance(plan[0][0], Sample)


def test_warmup_ratio_and_schedulers() -> None:
    import torch

    from train.schedulers import create_scheduler, warmup_steps

    assert warmup_steps(0.1, 200) == 20 and warmup_steps(15, 200) == 15 and warmup_steps(0, 10) == 0
    lrs = {}
    for name in ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial"):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = create_scheduler(name, opt, total_steps=100, lr_warmup=0.1, num_cycles=2)
        seen = []
        for _ in range(100):
            seen.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        lrs[name] = seen
    assert lrs["constant"][0] == 0.0 and lrs["constant"][10] == 1.0  # warmup on a constant schedule
    assert lrs["linear"][55] == pytest.approx(0.5, abs=0.02)
    assert lrs["cosine"][55] == pytest.approx(0.5, abs=0.02)
    assert lrs["cosine_with_restarts"][56] > lrs["cosine_with_restarts"][54]  # restarted


def test_optimizer_errors_are_clear() -> None:
    import torch

    from train.optim import OptimizerError, create_optimizer

    params = [{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": 1e-3}]
    if not torch.cuda.is_available():
        with pytest.raises(OptimizerError, match="CUDA GPUs only.*use optimizer = \"AdamW\""):
            create_optimizer("AdamW8bit", params, 1e-3, {})
    with pytest.raises(OptimizerError, match="pip install nosuchpkg"):
        create_optimizer("nosuchpkg.Opt", params, 1e-3, {})
    opt = create_optimizer("torch.optim.Adam", params, 1e-3, {"betas": [0.8, 0.9]})
    assert opt.param_groups[0]["betas"] == (0.8, 0.9)
    for name in ("Lion", "Prodigy", "DAdaptAdam", "Adafactor"):
        assert create_optimizer(name, params, 1.0, {}) is not None


def test_run_dir_events_status_and_requests(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.create("[train]\n")
    seen = []
    run.listeners.append(seen.append)
    run.emit("start", total_steps=10, epochs=1, pid=1, config={})
    run.emit("step", step=1, loss=0.5, lr=[1e-4], path=Path("/x"))
    run.update_status(state="running", step=1, total_steps=10)
    with open(run.events_path, "a", encoding="utf-8") as fh:
        fh.write('{"t": 1, "type": "st')  # a torn write by a crashed writer
    events = list(read_events(run.path))
    assert [e["type"] for e in events] == ["start", "step"] and all("t" in e for e in events)
    assert events[1]["path"] == "/x" and seen == events
    status = read_status(run.path)
    assert status["state"] == "running" and status["step"] == 1 and status["updated_at"] > 0
    assert json.loads(run.status_path.read_text())["total_steps"] == 10
    assert not run.stop_requested() and not run.take_save_request()
    request_stop(run.path)
    request_save(run.path)
    assert run.stop_requested() and run.take_save_request() and not run.take_save_request()
    run.clear_requests()
    assert not run.stop_requested()


def test_loss_weighting_min_snr_huber_and_per_sample_noise() -> None:
    import torch
    from diffusers import DDPMScheduler

    from train.config import TrainSection
    from train.loss import DiffusionLoss, min_snr_weight, snr_table
    from train.noise import NoiseSettings, draw_noise

    sched = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
    snr = snr_table(sched)
    t = torch.tensor([10, 500, 990])
    eps_w = min_snr_weight(snr, t, 5.0, v_prediction=False)
    v_w = min_snr_weight(snr, t, 5.0, v_prediction=True)
    s = snr[t]
    assert torch.allclose(eps_w, torch.minimum(s, torch.tensor(5.0)) / s)
    assert torch.allclose(v_w, torch.minimum(s, torch.tensor(5.0)) / (s + 1))
    assert eps_w[0] < 1 and eps_w[2] == pytest.approx(1.0)  # low-noise steps are down-weighted
    pred, target = torch.zeros(2, 4, 8, 8), torch.ones(2, 4, 8, 8)
    l2 = DiffusionLoss.from_config(TrainSection(), sched, v_prediction=False)
    assert l2(pred, target, t[:2], torch.tensor([1.0, 0.5])).item() == pytest.approx(0.75)  # reg weighted 0.5
    huber = DiffusionLoss.from_config(TrainSection(loss_type="huber", huber_schedule="constant", huber_c=0.1),
                                      sched, v_prediction=False)
    assert huber(pred, target, t[:2], torch.ones(2)).item() == pytest.approx(2 * 0.1 * ((1 + 0.01) ** 0.5 - 0.1))
    latents = torch.zeros(2, 4, 8, 8)
    both = draw_noise(latents, [11, 22], NoiseSettings(offset=0.1), (0, 1000))
    one = draw_noise(latents[:1], [22], NoiseSettings(offset=0.1), (0, 1000))
    assert torch.equal(both.noise[1], one.noise[0]) and both.timesteps[1] == one.timesteps[0]  # batch-independent


def test_failure_messages_and_rich_display() -> None:
    import io

    import torch
    from rich.console import Console

    from train.display import RichDisplay
    from train.errors import OOM_HELP, explain_failure

    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert explain_failure(oom) == OOM_HELP.format(memory="GPU", where=" before the first step")
    assert explain_failure(oom, step=7).startswith("out of GPU memory at step 7. Options that cut memory")
    for option in ("batch_size", "gradient_checkpointing", "cache_latents", "AdamW8bit", "resolution",
                   "train_text_encoder = false"):
        assert option in OOM_HELP
    assert explain_failure(ValueError("bad")) == "ValueError: bad"
    out = io.StringIO()
    display = RichDisplay(Console(file=out, force_terminal=True, width=120))
    display({"t": 0, "type": "phase", "phase": "caching latents", "done": 1, "total": 4})
    display({"t": 0, "type": "start", "name": "x[bold]", "run_dir": "/r", "total_steps": 10, "epochs": 1})
    display({"t": 0, "type": "step", "step": 3, "total_steps": 10, "epoch": 1, "loss": 0.1, "avg_loss": 0.2,
             "lr": [1e-4], "it_s": 2.0, "eta_s": 3.5, "mem_mb": None})
    display({"t": 0, "type": "warning", "message": "skipped \x1b[31mevil.png"})
    display({"t": 0, "type": "end", "reason": "finished", "outputs": ["/r/x.safetensors"], "step": 10})
    display.close()
    text = out.getvalue()
    assert "x[bold]" in text and "skipped" in text and "\x1b[31mevil" not in text and "finished at step 10" in text


def test_build_items_repeats_reg_images_kohya_style_and_weights_them(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from train.config import load_config
    from train.data.dataset import build_items
    from train.data.loader import BatchBuilder

    rng = np.random.default_rng(0)
    for folder, count in (("2_alice woman", 2), ("reg/1_woman", 3)):
        (tmp_path / folder).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(tmp_path / folder / f"{i}.png")
    (tmp_path / "2_alice woman" / "0.txt").write_text("alice woman, smiling\nsecond line ignored\n")
    (tmp_path / "2_alice woman" / "bad.jpg").write_bytes(b"")
    cfg = load_config(overrides=["model.path=/m", f"dataset.path={tmp_path}", "dataset.resolution=64",
                                 "dataset.min_bucket_reso=64", "dataset.max_bucket_reso=128",
                                 "dataset.bucket_reso_steps=32"]).dataset
    warnings: list[tuple[str, str | None]] = []
    items = build_items(cfg, lambda m, p: warnings.append((m, p))).items
    assert any(p == "2_alice woman/bad.jpg" for _, p in warnings)
    train = [i for i in items if not i.is_reg]
    reg = [i for i in items if i.is_reg]
    assert [i.repeats for i in train] == [2, 2] and sum(i.repeats for i in reg) == 4  # matches 2 x 2
    assert sorted(i.repeats for i in reg) == [1, 1, 2]
    by_name = {i.path: i for i in items}
    assert by_name["2_alice woman/0.png"].caption == "alice woman, smiling"
    assert by_name["2_alice woman/1.png"].caption == "alice woman"  # no caption file: the class tokens
    assert by_name["reg/1_woman/0.png"].caption == "woman"
    assert all(i.bucket == (64, 64) or i.bucket[0] > i.bucket[1] for i in items)
    builder = BatchBuilder(items=items, captions=CaptionSettings(), seed=0, prior_loss_weight=0.25)
    batch = builder.build([Sample(item=train[0].index, position=0), Sample(item=reg[0].index, position=1)], epoch=1)
    assert batch["loss_weights"].tolist() == [1.0, 0.25]
    assert batch["pixels"].shape[0] == 2 and batch["target_sizes"][0].tolist() == [train[0].bucket[1], train[0].bucket[0]]
    assert batch["original_sizes"][0].tolist() == [48, 64]


def test_latent_cache_keys_follow_content_and_placement(tmp_path: Path) -> None:
    import torch

    from train.data.cache import LatentCache, latent_key

    key = latent_key("a" * 64, (64, 64), (96, 64), (16, 0), False, "vae1")
    assert key == latent_key("a" * 64, (64, 64), (96, 64), (16, 0), False, "vae1")
    others = [latent_key("b" * 64, (64, 64), (96, 64), (16, 0), False, "vae1"),  # image content changed
              latent_key("a" * 64, (64, 64), (96, 64), (16, 0), True, "vae1"),  # flipped
              latent_key("a" * 64, (64, 64), (96, 64), (0, 0), False, "vae1"),  # other crop
              latent_key("a" * 64, (64, 64), (96, 64), (16, 0), False, "vae2")]  # other VAE
    assert key not in others and len(set(others)) == 4
    disk = LatentCache(tmp_path / "latents")
    disk.put(key, torch.ones(4, 8, 8))
    assert disk.memory == {}  # on-disk caches keep RAM flat
    again = LatentCache(tmp_path / "latents")
    assert again.has(key) and torch.equal(again.get(key), torch.ones(4, 8, 8))
    assert not again.has(others[0]) and again.get(others[0]) is None
    assert not list((tmp_path / "latents").rglob("*.tmp"))
