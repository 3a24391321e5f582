"""The training loop. Read it top to bottom: set up, load data, load the model, cache, build the network and
optimizer, (resume), then train step by step, saving and sampling as configured.

Randomness: the data order comes from ``(seed, epoch)`` and each sample's noise, timestep, flip and caption
shuffle from ``(seed, epoch, position)``, so a resumed run continues exactly where it stopped, and the same
samples see the same noise however a batch is split over processes.
"""

from __future__ import annotations

import math
import os
import random
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from train.config import TrainConfig, dump_config
from train.data.captions import CaptionSettings, process_caption
from train.data.dataset import batches_per_epoch, build_items, mix_seed, plan_epoch
from train.rundir import RunDir, StopSignal
from train.state import Progress, has_state, load_state, save_state

NAN_HELP = (
    "the loss became {value} at step {step}. Likely causes: an fp16 VAE overflowing (use the bf16/fp32 VAE or "
    "the fp16-fix VAE via model.vae, or train.mixed_precision = \"bf16\"), or a learning rate too high "
    "(lower train.learning_rate / unet_lr / text_encoder_lr, or add warmup with train.lr_warmup)."
)
OOM_HELP = (
    "out of GPU memory. Options that cut memory: lower train.batch_size (use gradient_accumulation_steps to "
    "keep the effective batch), train.gradient_checkpointing = true, dataset.cache_latents = true, an 8-bit "
    "optimizer (train.optimizer = \"AdamW8bit\") or Adafactor, a lower dataset.resolution / max_bucket_reso, "
    "and training the UNet only (network.train_text_encoder = false, with dataset.cache_text_encoder_outputs)."
)


class TrainingError(RuntimeError):
    """Training stopped with a problem the user can fix; the message says how."""


class StoppedEarly(Exception):
    """A stop was requested before the first step (while scanning, loading or caching): nothing to save."""


@dataclass
class TrainResult:
    reason: str  # finished | stopped | error
    run_dir: Path
    step: int
    outputs: list[str] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    message: str = ""


class _Quiet:
    """Stand-in for the run directory on non-main processes: events go nowhere."""

    listeners: list[Any] = []

    def emit(self, type: str, **fields: Any) -> dict[str, Any]:
        return {"type": type, **fields}

    def update_status(self, **fields: Any) -> None:
        pass

    def stop_requested(self) -> bool:
        return False

    def take_save_request(self) -> bool:
        return False


def train(
    cfg: TrainConfig,
    *,
    resume: Path | None = None,
    listeners: list[Callable[[dict[str, Any]], None]] | None = None,
    install_signals: bool = True,
    base: Any = None,
) -> TrainResult:
    """Train a LoRA as ``cfg`` says. ``resume``: a run directory with ``state/`` to continue from.
    ``listeners`` get every event (the display). ``base``: already loaded components (a
    ``train.models.BaseModel``, e.g. random full-size weights in bench/) instead of loading ``cfg.model``."""
    import torch
    from accelerate import Accelerator

    from train.models.loading import load_base_model
    from train.network import create_network
    from train.optim import create_optimizer
    from train.precision import compute_dtype, resolve_mixed_precision
    from train.schedulers import create_scheduler

    # ---------------------------------------------------------------- 1. processes, devices, run directory
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    device = accelerator.device
    main = accelerator.is_main_process
    world = accelerator.num_processes
    mixed = resolve_mixed_precision(cfg.train.mixed_precision, device)
    dtype = compute_dtype(mixed)
    t = cfg.train

    from accelerate.utils import set_seed

    set_seed(t.seed)  # python, numpy and torch RNGs: the network's initial weights depend on it
    run_path = Path(resume) if resume else cfg.run_dir
    run: Any = RunDir(run_path) if main else _Quiet()
    if main:
        run.create(dump_config(cfg))
        run.clear_requests()
        run.listeners.extend(listeners or [])
    stop = StopSignal()
    if install_signals:
        stop.install()
    result = TrainResult(reason="error", run_dir=run_path, step=0)
    started = time.time()
    try:
        # ------------------------------------------------------------ 2. data: items, buckets, step count
        run.update_status(state="starting", phase="scanning dataset")
        run.emit("phase", phase="scanning dataset")
        with accelerator.main_process_first():  # one process updates the dataset index, the others read it
            items, dataset = build_items(cfg.dataset, lambda msg, path: run.emit("warning", message=msg, path=path),
                                         progress=False)
        global_batch = t.batch_size * world
        n_batches = batches_per_epoch(items, global_batch)
        steps_per_epoch = math.ceil(n_batches / t.gradient_accumulation_steps)
        if t.max_epochs:
            total_steps, epochs = t.max_epochs * steps_per_epoch, t.max_epochs
        else:
            total_steps = t.max_steps or 1600
            epochs = math.ceil(total_steps / steps_per_epoch)

        # ------------------------------------------------------------ 3. base model, frozen
        run.emit("phase", phase="loading model")
        # Frozen weights in the compute dtype (bf16/fp16): no float32 copy of the UNet; only the network is fp32.
        weight_dtype = dtype if mixed != "no" else torch.float32
        latents_cached = cfg.dataset.cache_latents or cfg.dataset.cache_latents_to_disk
        te_cached = cfg.dataset.cache_text_encoder_outputs
        # Low-VRAM order (kohya): with caches on a GPU, everything is loaded to the CPU, the VAE and the text
        # encoders visit the GPU one at a time to fill the caches, and only then does the UNet move in, so
        # the peak is max(caching, training) rather than their sum.
        staged = device.type == "cuda" and (latents_cached or te_cached)
        home = torch.device("cpu") if staged else device
        if base is None:
            base = load_base_model(cfg.model, dtype=weight_dtype, device=home)
        is_xl = base.arch.value == "sdxl"
        unet, vae, text_encoders = base.unet, base.vae, base.text_encoders
        if staged:  # a base handed in already on the GPU (bench/) goes back to the CPU until needed
            for module in (unet, vae, *text_encoders):
                module.to(home)
            release_gpu_memory(device)
        vae.to(torch.float32)  # the VAE runs in fp32: fp16 VAEs overflow to NaN
        if t.attention == "eager":
            from diffusers.models.attention_processor import AttnProcessor

            unet.set_attn_processor(AttnProcessor())
        if t.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
            unet.train()  # diffusers checkpoints only in train mode; no dropout layers are active in SD UNets
            if cfg.trains_text_encoder:
                for te in text_encoders:
                    enable_checkpointing(te)
                    te.train()
        noise_scheduler = base.noise_scheduler
        v_prediction = base.v_prediction
        from train.loss import diffusion_loss, sample_noise, snr_table

        snr = snr_table(noise_scheduler).to(device) if t.min_snr_gamma else None

        # ------------------------------------------------------------ 4. caches (latents, text encoder outputs)
        caption_settings = CaptionSettings(
            shuffle=cfg.dataset.shuffle_caption, keep_tokens=cfg.dataset.keep_tokens,
            keep_tokens_separator=cfg.dataset.keep_tokens_separator, prefix=cfg.dataset.caption_prefix,
            suffix=cfg.dataset.caption_suffix, dropout_rate=cfg.dataset.caption_dropout_rate,
            dropout_every_n_epochs=cfg.dataset.caption_dropout_every_n_epochs,
            tag_dropout_rate=cfg.dataset.caption_tag_dropout_rate,
        )
        from train.data.loader import BatchBuilder, EpochBatches

        builder = BatchBuilder(
            items=items, captions=caption_settings, seed=t.seed, flip_aug=cfg.dataset.flip_aug,
            random_crop=cfg.dataset.random_crop, prior_loss_weight=t.prior_loss_weight,
        )
        scaling = vae.config.scaling_factor
        if cfg.dataset.cache_latents or cfg.dataset.cache_latents_to_disk:
            from train.data.cache import LatentCache, vae_identity

            folder = Path(dataset.index.kiln_dir) / "latents" if cfg.dataset.cache_latents_to_disk else None
            builder.latents = LatentCache(folder)
            builder.vae_id = vae_identity(vae)
            vae.to(device)
            if folder is not None:  # on disk: the main process encodes, the others then read its files
                with accelerator.main_process_first():
                    cache_latents(builder, vae, device, scaling, cfg.dataset.vae_batch_size, run, stop)
            else:
                cache_latents(builder, vae, device, scaling, cfg.dataset.vae_batch_size, run, stop)
            vae.to("cpu")  # not needed for training any more (samples bring it back for a moment)
            release_gpu_memory(device)
        text_cache = None
        if cfg.dataset.cache_text_encoder_outputs:
            from train.data.cache import TextCache

            text_cache = TextCache()
            for te in text_encoders:
                te.to(device)
            captions = sorted({process_caption(i.caption, caption_settings, epoch=1, rng=random.Random(0),
                                               subset_keep_tokens=i.keep_tokens) for i in items})
            run.emit("phase", phase="caching text encoder outputs", done=0, total=len(captions))
            with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=mixed != "no"):
                for start in range(0, len(captions), 32):
                    chunk = captions[start:start + 32]
                    hidden, pooled = encode_text(base, chunk, cfg, device)
                    for i, caption in enumerate(chunk):
                        text_cache.put(caption, hidden[i], None if pooled is None else pooled[i])
                    run.emit("phase", phase="caching text encoder outputs", done=start + len(chunk),
                             total=len(captions))
            for te in text_encoders:  # not needed for training any more (samples bring them back for a moment)
                te.to("cpu")
            release_gpu_memory(device)

        # The training modules move in now; the peak so far (loading + caching) is reported apart from the
        # training peak (the step events' mem_mb).
        setup_mem_mb = memory_mb(device)
        if staged:
            unet.to(device)
            if not te_cached:
                for te in text_encoders:
                    te.to(device)
            if not latents_cached:
                vae.to(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

        # ------------------------------------------------------------ 5. network, optimizer, LR schedule
        network = create_network(base.arch.value, unet, text_encoders if cfg.trains_text_encoder else None,
                                 cfg.network, device=device)
        network.apply()
        network.to(device=device, dtype=torch.float32)
        network.train()
        param_groups = network.trainable_params(cfg.unet_lr, cfg.text_encoder_lr)
        if not param_groups:
            raise TrainingError("nothing to train: every network group has learning rate 0")
        params = [p for g in param_groups for p in g["params"]]
        optimizer = create_optimizer(t.optimizer, param_groups, t.learning_rate, t.optimizer_args)
        scheduler = create_scheduler(t.lr_scheduler, optimizer, total_steps=total_steps, lr_warmup=t.lr_warmup,
                                     num_cycles=t.lr_scheduler_num_cycles, power=t.lr_scheduler_power)
        scaler = torch.amp.GradScaler(device.type) if mixed == "fp16" and device.type == "cuda" else None

        # ------------------------------------------------------------ 6. resume
        progress = Progress(total_steps=total_steps, seed=t.seed)
        if resume is not None:
            if not has_state(run_path / "state"):
                raise TrainingError(f"{run_path}: no resumable state/ in this run directory")
            progress = load_state(run_path / "state", network=network, optimizer=optimizer, scheduler=scheduler,
                                  scaler=scaler)
            progress.total_steps = total_steps
        resumed_step = progress.step
        if stop.requested or run.stop_requested():  # asked to stop while loading or caching
            raise StoppedEarly(stop.requested or "stop.request")

        run.emit("start", name=cfg.output.name, run_dir=str(run_path), total_steps=total_steps, epochs=epochs,
                 pid=os.getpid(), resumed_step=resumed_step, images=len(items), batch_size=t.batch_size,
                 num_processes=world, steps_per_epoch=steps_per_epoch, device=str(device), mixed_precision=mixed,
                 setup_mem_mb=setup_mem_mb,
                 config=config_summary(cfg, base.arch.value))
        run.update_status(state="running", phase="training", step=progress.step, total_steps=total_steps,
                          epoch=progress.epoch, epochs=epochs)

        # ------------------------------------------------------------ 7. the loop
        def save_lora(path: Path) -> str:
            from train.outputs import training_metadata
            from train.precision import save_dtype

            meta = training_metadata(cfg, base=base, items=items, step=progress.step, epoch=progress.epoch,
                                     total_steps=total_steps, epochs=epochs, started=started,
                                     batches_per_epoch=n_batches, num_processes=world)
            network.save(path, dtype=save_dtype(cfg.output.save_precision), metadata=meta,
                         v_prediction=v_prediction)
            return str(path)

        def save_everything(kind: str, with_state: bool) -> None:
            """Save the LoRA named for ``kind`` (epoch | step | request | final) and, if asked, the state."""
            if not main:
                return
            from train.outputs import epoch_file, final_file, prune, step_file

            name = cfg.output.name
            filename = {"epoch": epoch_file(name, progress.epoch), "final": final_file(name)}.get(
                kind, step_file(name, progress.step))
            path = save_lora(run_path / filename)
            if kind in ("epoch", "step"):
                kept = progress.saves.setdefault(kind, [])
                if path not in kept:
                    kept.append(path)
                progress.saves[kind] = prune(kept, cfg.output.save_last_n)
            run.emit("save", path=path, step=progress.step, epoch=progress.epoch, kind=kind)
            result.outputs.append(path)
            if with_state:
                save_state(run_path / "state", network=network, optimizer=optimizer, scheduler=scheduler,
                           scaler=scaler, progress=progress)
                run.emit("save", path=str(run_path / "state"), step=progress.step, epoch=progress.epoch,
                         kind="state")

        def render(stem: str) -> None:
            if not main or not cfg.sample.enabled or not cfg.sample.prompts:
                return
            from train.sample import render_samples

            visitors = ([vae] if latents_cached else []) + (list(text_encoders) if te_cached else [])
            vae.to(device)
            for te in text_encoders:
                te.to(device)
            network.eval()
            try:
                paths = render_samples(base, cfg.sample, resolution=cfg.dataset.resolution_wh,
                                       out_dir=run.samples_dir, stem=stem, device=device, dtype=dtype)
            finally:
                network.train()
                for module in visitors:  # cached: back off the GPU until the next samples
                    module.to("cpu")
                release_gpu_memory(device)
            for p in paths:
                run.emit("sample", path=str(p), step=progress.step, epoch=progress.epoch)

        def encode(batch: dict[str, Any]) -> tuple[Any, Any]:
            if text_cache is not None:
                entries = [text_cache.get(c) for c in batch["captions"]]
                hidden = torch.stack([e[0] for e in entries]).to(device)
                pooled = torch.stack([e[1] for e in entries]).to(device) if is_xl else None
                return hidden, pooled
            if cfg.trains_text_encoder:
                return encode_text(base, batch["captions"], cfg, device)
            with torch.no_grad():
                return encode_text(base, batch["captions"], cfg, device)

        def to_latents(batch: dict[str, Any]) -> Any:
            if "latents" in batch:
                return batch["latents"].to(device, dtype=torch.float32)
            with torch.no_grad():
                pixels = batch["pixels"].to(device, dtype=torch.float32)
                dist = vae.encode(pixels).latent_dist
                eps = torch.stack([torch.randn(dist.mean.shape[1:], generator=torch.Generator().manual_seed(
                    mix_seed(s, 1))) for s in batch["seeds"]]).to(device)
                return (dist.mean + dist.std * eps) * scaling

        losses_window: list[float] = []
        step_times: list[float] = []
        last_time = time.monotonic()
        stopping: str | None = None
        optimizer.zero_grad(set_to_none=True)
        while progress.step < total_steps and not stopping:
            epoch = progress.epoch
            plan = plan_epoch(items, global_batch, t.seed, epoch, pad=world > 1)
            batches = EpochBatches(builder, plan, epoch, accelerator.process_index, t.batch_size)
            loader = torch.utils.data.DataLoader(
                batches, batch_size=None, sampler=range(progress.batch_in_epoch, len(plan)),
                num_workers=cfg.dataset.num_workers, persistent_workers=False,
                generator=torch.Generator().manual_seed(mix_seed(t.seed, epoch)),  # leaves the global RNG alone
            )
            accumulated = 0
            for batch_index, batch in enumerate(loader, start=progress.batch_in_epoch):
                # ---- forward: latents + noise at a random timestep; predict the noise (or v)
                latents = to_latents(batch)
                noise, timesteps = sample_noise(tuple(latents.shape[1:]), batch["seeds"], t.noise_offset,
                                                (t.min_timestep, t.max_timestep), device)
                noisy = noise_scheduler.add_noise(latents, noise, timesteps)
                with torch.autocast(device.type, dtype=dtype, enabled=mixed != "no"):
                    hidden, pooled = encode(batch)
                    extra = None
                    if is_xl:
                        time_ids = torch.cat([batch["original_sizes"], batch["crop_top_lefts"],
                                              batch["target_sizes"]], dim=1).to(device, dtype=hidden.dtype)
                        extra = {"text_embeds": pooled.to(hidden.dtype), "time_ids": time_ids}
                    pred = unet(noisy.to(weight_dtype), timesteps, hidden.to(weight_dtype),
                                added_cond_kwargs=extra).sample
                target = noise_scheduler.get_velocity(latents, noise, timesteps) if v_prediction else noise
                loss = diffusion_loss(pred, target, timesteps, loss_weights=batch["loss_weights"],
                                      loss_type=t.loss_type, huber_c=t.huber_c, min_snr_gamma=t.min_snr_gamma,
                                      snr=snr, v_prediction=v_prediction)
                if not torch.isfinite(loss):
                    raise TrainingError(NAN_HELP.format(value=loss.item(), step=progress.step + 1))

                # ---- backward, accumulated over gradient_accumulation_steps batches
                scaled = loss / t.gradient_accumulation_steps
                (scaler.scale(scaled) if scaler else scaled).backward()
                accumulated += 1
                progress.batch_in_epoch = batch_index + 1
                losses_window.append(average_across_processes(loss.detach(), world))
                if accumulated < t.gradient_accumulation_steps and progress.batch_in_epoch < len(plan):
                    continue

                # ---- optimizer step (gradients averaged over processes, clipped)
                sync_gradients(params, world)
                if scaler:
                    scaler.unscale_(optimizer)
                if t.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm)
                if scaler:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                if cfg.network.scale_weight_norms:
                    network.apply_max_norm(cfg.network.scale_weight_norms, device)
                accumulated = 0
                progress.step += 1
                step_loss = sum(losses_window) / len(losses_window)
                losses_window.clear()
                progress.epoch_loss_sum += step_loss
                progress.epoch_loss_count += 1
                result.losses.append(step_loss)

                # ---- report
                now = time.monotonic()
                step_times.append(now - last_time)
                last_time = now
                recent = step_times[-20:]
                it_s = len(recent) / sum(recent) if sum(recent) > 0 else 0.0
                run.emit("step", step=progress.step, total_steps=total_steps, epoch=epoch, loss=step_loss,
                         avg_loss=progress.epoch_loss_sum / progress.epoch_loss_count,
                         lr=current_lrs(optimizer), it_s=round(it_s, 4),
                         eta_s=round((total_steps - progress.step) / it_s, 1) if it_s else None,
                         mem_mb=memory_mb(device))
                run.update_status(step=progress.step, epoch=epoch, loss=step_loss)

                # ---- saves, samples, stop and save requests
                finished = progress.step >= total_steps
                if cfg.output.save_every_n_steps and progress.step % cfg.output.save_every_n_steps == 0 \
                        and not finished:
                    save_everything("step", cfg.output.save_state)
                if cfg.sample.every_n_steps and progress.step % cfg.sample.every_n_steps == 0:
                    render(f"{cfg.output.name}-step{progress.step:08d}")
                stopping, save_now = poll_requests(run, stop, world)
                if save_now and not stopping:
                    save_everything("request", True)
                if finished or stopping:
                    break

            # ---- end of epoch (a completed plan)
            if progress.batch_in_epoch >= len(plan):
                run.emit("epoch", epoch=epoch, step=progress.step,
                         avg_loss=progress.epoch_loss_sum / max(progress.epoch_loss_count, 1))
                if progress.step < total_steps:
                    if cfg.output.save_every_n_epochs and epoch % cfg.output.save_every_n_epochs == 0:
                        save_everything("epoch", cfg.output.save_state)
                    if cfg.sample.every_n_epochs and epoch % cfg.sample.every_n_epochs == 0:
                        render(f"{cfg.output.name}-{epoch:06d}")
                    progress.epoch, progress.batch_in_epoch = epoch + 1, 0
                    progress.epoch_loss_sum, progress.epoch_loss_count = 0.0, 0
                    if not stopping:
                        stopping, _ = poll_requests(run, stop, world)

        # ------------------------------------------------------------ 8. finish: final LoRA (+ state if stopped)
        if stopping and progress.step < total_steps:
            save_everything("step", True)
            result.reason = "stopped"
            result.message = f"stopped by {stopping}; resume with: kiln train --resume {run_path}"
        else:
            save_everything("final", False)
            if cfg.sample.prompts and not (cfg.sample.every_n_steps or cfg.sample.every_n_epochs):
                render(f"{cfg.output.name}-final")
            result.reason = "finished"
        result.step = progress.step
        accelerator.wait_for_everyone()
    except user_errors() as exc:  # a problem the message explains: no traceback needed
        result.message = str(exc)
    except StoppedEarly as exc:
        result.reason = "stopped"
        result.message = f"stopped by {exc} before training started; nothing was saved"
    except KeyboardInterrupt:
        result.message = "interrupted twice: stopped without saving"
    except Exception as exc:  # noqa: BLE001 - every failure ends as an error event with its cause
        result.message = explain_failure(exc)
        if main and not is_oom(exc):
            run.emit("error", message="".join(traceback.format_exception(exc))[-4000:], kind="traceback")
    finally:
        stop.restore()
    result.outputs = [p for p in dict.fromkeys(result.outputs) if Path(p).exists()]  # pruned saves are gone
    if result.reason == "error":
        run.emit("error", message=result.message)
    run.emit("end", reason=result.reason, outputs=result.outputs, step=result.step, message=result.message,
             duration_s=round(time.time() - started, 1))
    run.update_status(state={"finished": "finished", "stopped": "stopped"}.get(result.reason, "failed"),
                      step=result.step, outputs=result.outputs, message=result.message)
    return result


# -------------------------------------------------------------------------------------------------------------
# Helpers used by the loop above
# -------------------------------------------------------------------------------------------------------------


def encode_text(base: Any, captions: list[str], cfg: TrainConfig, device: Any) -> tuple[Any, Any]:
    """Conditioning for ``captions``: (hidden states, pooled or None)."""
    from train.data.tokens import encode_sd, encode_sdxl, tokenize

    length = cfg.dataset.max_token_length
    if base.arch.value == "sdxl":
        ids1 = tokenize(base.tokenizers[0], captions, length)
        ids2 = tokenize(base.tokenizers[1], captions, length)
        return encode_sdxl(base.text_encoders, base.tokenizers, ids1, ids2, length)
    ids = tokenize(base.tokenizers[0], captions, length)
    return encode_sd(base.text_encoders[0], ids, length, cfg.train.clip_skip), None


def cache_latents(builder: Any, vae: Any, device: Any, scaling: float, vae_batch: int, run: Any,
                  stop: StopSignal) -> None:
    """Encode every (image, flip) the training will see and store the latents (skipping cached ones)."""
    import torch

    from train.data.cache import latent_key
    from train.data.images import load_rgb, place, render, to_tensor

    todo: list[tuple[str, Any, Any]] = []
    for item in builder.items:
        for flip in ((False, True) if builder.flip_aug else (False,)):
            a = item.assignment
            placement = place(item.size, a.resized, a.crop, a.bucket, random_crop=False, flip=flip,
                              rng=random.Random(0))
            key = latent_key(item.sha256, a.bucket, a.resized, a.crop, flip, builder.vae_id)
            if not builder.latents.has(key):  # entries are written atomically: present = complete
                todo.append((key, item, placement))
    total = len(todo)
    run.emit("phase", phase="caching latents", done=0, total=total)
    if total == 0:
        return
    # Group by bucket so images of one size are encoded together; each process does its share (disk cache).
    todo.sort(key=lambda entry: entry[2].bucket)
    done = 0
    for start in range(0, total, vae_batch):
        if stop.requested or run.stop_requested():
            raise StoppedEarly(stop.requested or "stop.request")
        chunk = todo[start:start + vae_batch]
        groups: dict[tuple[int, int], list[tuple[str, Any, Any]]] = {}
        for entry in chunk:
            groups.setdefault(entry[2].bucket, []).append(entry)
        for group in groups.values():
            pixels = torch.stack([to_tensor(render(load_rgb(item.abs_path), pl)) for _, item, pl in group])
            with torch.no_grad():
                dist = vae.encode(pixels.to(device, dtype=torch.float32)).latent_dist
                for (key, _, _), mean, std in zip(group, dist.mean, dist.std, strict=True):
                    g = torch.Generator().manual_seed(int(key[:15], 16))
                    eps = torch.randn(mean.shape, generator=g).to(device)
                    builder.latents.put(key, (mean + std * eps) * scaling)
        done += len(chunk)
        run.emit("phase", phase="caching latents", done=done, total=total)


def enable_checkpointing(text_encoder: Any) -> None:
    """Activation checkpointing for a transformers model (non-reentrant: the inputs need no grad)."""
    kwargs = {"use_reentrant": False}
    if hasattr(text_encoder, "activation_checkpointing_enable"):  # transformers >= 5
        text_encoder.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        text_encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def sync_gradients(params: list[Any], world: int) -> None:
    """Average gradients over processes (one flat all-reduce)."""
    if world <= 1:
        return
    import torch
    import torch.distributed as dist

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


def average_across_processes(value: Any, world: int) -> float:
    if world <= 1:
        return float(value.item())
    import torch.distributed as dist

    tensor = value.detach().float().clone()
    dist.all_reduce(tensor)
    return float(tensor.item() / world)


def poll_requests(run: Any, stop: StopSignal, world: int) -> tuple[str | None, bool]:
    """Stop (signal or stop.request) and save (save.request) requests, agreed by all processes."""
    stop_reason = stop.requested or ("stop.request" if run.stop_requested() else None)
    save_now = run.take_save_request()
    if world > 1:
        import torch
        import torch.distributed as dist

        flags = torch.tensor([1.0 if stop_reason else 0.0, 1.0 if save_now else 0.0])
        dist.all_reduce(flags)
        stop_reason = stop_reason or ("another process" if flags[0] > 0 else None)
        save_now = bool(flags[1] > 0)
    return stop_reason, save_now


def current_lrs(optimizer: Any) -> list[float]:
    """The effective learning rate per group (d * lr for DAdaptation / Prodigy)."""
    lrs = []
    for group in optimizer.param_groups:
        lr = group["lr"]
        if "d" in group:
            lr = group["d"] * lr
        lrs.append(float(lr))
    return lrs


def release_gpu_memory(device: Any) -> None:
    """Give the CUDA caching allocator's free blocks back after modules left the GPU (no-op elsewhere)."""
    import gc

    import torch

    if getattr(device, "type", str(device)) == "cuda":
        gc.collect()
        torch.cuda.empty_cache()


def memory_mb(device: Any) -> float | None:
    import torch

    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return None


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors whose message already says what to change (bad dataset, model file, optimizer, state)."""
    from curator.layout import LayoutError
    from train.data.dataset import DatasetError
    from train.models.arch import ModelLoadError
    from train.optim import OptimizerError

    return (TrainingError, DatasetError, LayoutError, ModelLoadError, OptimizerError)


def explain_failure(exc: BaseException) -> str:
    """The message for an unexpected failure: out-of-memory gets the options that cut memory."""
    if is_oom(exc):
        return OOM_HELP
    return f"{type(exc).__name__}: {exc}"


def is_oom(exc: BaseException) -> bool:
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom is not None and isinstance(exc, oom)) or "out of memory" in str(exc).lower() and "CUDA" in str(exc)


def config_summary(cfg: TrainConfig, arch: str) -> dict[str, Any]:
    """The few values a run list shows."""
    return {
        "arch": arch, "model": str(cfg.model.path), "dataset": str(cfg.dataset.path),
        "network": f"{cfg.network.type} dim {cfg.network.dim} alpha {cfg.network.alpha}",
        "optimizer": cfg.train.optimizer, "learning_rate": cfg.train.learning_rate, "unet_lr": cfg.unet_lr,
        "text_encoder_lr": cfg.text_encoder_lr, "resolution": list(cfg.dataset.resolution_wh),
        "batch_size": cfg.train.batch_size, "scheduler": cfg.train.lr_scheduler,
        "mixed_precision": cfg.train.mixed_precision,
    }
