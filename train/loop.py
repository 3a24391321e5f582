"""The training loop. Read it top to bottom: set up, load data, load the model, cache, build the network and
optimizer, (resume), then train step by step, saving and sampling as configured. Its pieces live beside it:
train.staging (which device each model is on), train.caching (latents and text-encoder outputs), train.denoiser
(the trained model's forward), train.optim (the optimizer step), train.processes (accelerate, what processes
agree on), train.meter (throughput), train.saving (when and what to save and sample).

Randomness: the data order comes from ``(seed, epoch)`` and each sample's noise, timestep, flip and caption
shuffle from ``(seed, epoch, position)``, so a resumed run continues exactly where it stopped, and the same
samples see the same noise however a batch is split over processes.
"""

from __future__ import annotations

import contextlib
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from train.config import TrainConfig, dump_config
from train.data.dataset import build_items, plan_epoch
from train.errors import StoppedEarly, TrainingError, explain_failure, is_oom, non_finite_stop, user_errors
from train.rundir import Listener, QuietRun, RunDir, RunLog, StopSignal
from train.state import Progress, latest_state, load_extra_state, load_progress, load_state

if TYPE_CHECKING:
    import torch
    from accelerate import Accelerator

    from train.models.loading import BaseModel
    from train.saving import Saver


@dataclass
class TrainResult:
    reason: Literal["finished", "stopped", "error"]
    run_dir: Path
    step: int
    outputs: list[str] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    validation: list[tuple[int, float]] = field(default_factory=list)
    message: str = ""


def train(
    cfg: TrainConfig,
    *,
    resume: Path | None = None,
    listeners: list[Listener] | None = None,
    install_signals: bool = True,
    base: BaseModel | None = None,
    checked: bool = False,
) -> TrainResult:
    """Train a LoRA as ``cfg`` says. ``resume``: a run directory with ``state/`` to continue from.
    ``listeners`` get every event (the display). ``base``: already loaded components (e.g. random full-size
    weights in bench/) instead of loading ``cfg.model``. ``checked``: the caller ran the config stage of the
    pre-flight (``kiln train`` does, before it makes the run directory); the dataset stage always runs here."""
    import torch
    from accelerate.utils import set_seed

    from train.caching import cache_latents, cache_text_outputs
    from train.data.cache import LatentCache, text_encoder_identity, vae_identity
    from train.data.loader import BatchBuilder, epoch_loader
    from train.denoiser import (
        Denoiser,
        TextConditioning,
        batch_latents,
        compile_unet,
        prepare_for_training,
    )
    from train.finetune.extract import extract_lora
    from train.finetune.model import FullModel
    from train.image_losses import ImageLosses
    from train.loss import DiffusionLoss, add_noise, diffusion_target
    from train.meter import Throughput
    from train.models.loading import load_base_model, make_noise_scheduler
    from train.network import create_network
    from train.network.network import Network
    from train.noise import NoiseSettings, draw_noise, zero_terminal_snr
    from train.optim import create_optimizer, current_lrs, optimizer_label, optimizer_step
    from train.outputs import final_file, training_metadata
    from train.precision import compute_dtype, fp8_store_unet_and_text_encoders, network_dtype
    from train.preflight import run_preflight
    from train.processes import allow_fp16_gradients, make_accelerator, mean_loss, poll_requests
    from train.sample import sample_prompts
    from train.saving import Sampler, Saver, SaveSchedule
    from train.schedulers import create_schedule, phase_at, rebase_learning_rates
    from train.staging import DeviceStaging, memory_mb
    from train.validation import Validator, validation_captions, validation_timesteps

    # ---------------------------------------------------------------- 1. processes, devices, run directory
    t, d = cfg.train, cfg.dataset
    accelerator = make_accelerator(t)
    device, main, world = accelerator.device, accelerator.is_main_process, accelerator.num_processes
    mixed: str = accelerator.mixed_precision
    dtype = compute_dtype(mixed)  # autocast dtype; the frozen weights are kept in it too (no fp32 copy)
    set_seed(t.seed)  # python, numpy and torch RNGs: the network's initial weights depend on it
    run_path = Path(resume) if resume else cfg.run_dir
    run: RunLog = RunDir.start(run_path, dump_config(cfg), listeners or []) if main else QuietRun()
    stop = StopSignal()
    if install_signals:
        stop.install()

    def should_stop() -> str | None:
        return stop.requested or ("stop.request" if run.stop_requested() else None)

    def phase(name: str, done: int, total: int) -> None:
        run.emit("phase", phase=name, done=done, total=total)

    result = TrainResult(reason="error", run_dir=run_path, step=0)
    started = time.time()
    progress: Progress | None = None
    saver: Saver | None = None
    try:
        # ------------------------------------------------------------ 2. pre-flight, data: items, buckets, steps
        if not checked:
            preflight = run_preflight(cfg, stages=("config",), num_processes=world, check_model_file=base is None)
            for finding in preflight.warnings:
                run.emit("warning", message="\n".join(finding.lines()))
            preflight.raise_errors()
        run.update_status(state="starting", phase="scanning dataset")
        run.emit("phase", phase="scanning dataset")
        prompts = sample_prompts(cfg.sample) if cfg.sample.enabled else []  # a bad prompt file stops us here
        with accelerator.main_process_first():  # one process updates the dataset index, the others read it
            data = build_items(d, lambda msg, path: run.emit("warning", message=msg, path=path), progress=False,
                               should_stop=should_stop, batch_size=t.batch_size, masked_loss=t.masked_loss)
        if reason := should_stop():
            raise StoppedEarly(reason, "scanning the dataset", "the dataset index is complete")
        items, val_items, dataset = data.items, data.held_out, data.dataset
        steps = data.step_math(t, num_processes=world)
        total_steps, epochs = steps.total_steps, steps.epochs
        if total_steps is None or epochs is None:
            raise TrainingError(f"dataset.path: {d.path} gives no batches to train on")
        preflight = run_preflight(cfg, stages=("dataset",), num_processes=world, data=data,
                                  check_model_file=base is None)
        for finding in preflight.warnings:
            run.emit("warning", message="\n".join(finding.lines()))
        preflight.raise_errors()  # before the model loads

        # ------------------------------------------------------------ 3. base model, frozen
        run.emit("phase", phase="loading model")
        latents_cached = d.cache_latents or d.cache_latents_to_disk
        staging = DeviceStaging(device, latents_cached=latents_cached, text_cached=d.caches_text_encoder_outputs)
        if base is None:
            base = load_base_model(cfg.model, dtype=dtype, device=staging.home)
        if reason := should_stop():  # loading cannot be interrupted; stop before caching starts
            raise StoppedEarly(reason, "loading the model")
        staging.park(base)
        prepare_for_training(base, t, trains_text_encoder=cfg.trains_text_encoder)
        fp8_store_unet_and_text_encoders(base, t)
        ztsnr, notes = zero_terminal_snr(t, checkpoint_ztsnr=base.ztsnr, v_prediction=base.v_prediction)
        if ztsnr:  # samples follow: their samplers are built from this schedule's config
            base.noise_scheduler = make_noise_scheduler(base.v_prediction, zero_terminal_snr=True)
        for note in notes:
            run.emit("warning", message=note)
        noise_scheduler = base.noise_scheduler
        loss_fn = DiffusionLoss.from_config(t, noise_scheduler, v_prediction=base.v_prediction)
        noise_settings = NoiseSettings.from_train(t)

        # ------------------------------------------------------------ 4. caches (latents, text encoder outputs)
        builder = BatchBuilder(items=items, captions=d.caption_settings(), seed=t.seed,
                               prior_loss_weight=t.prior_loss_weight, subsets=data.run.subsets)
        conditioning = TextConditioning(base, device=device, dtype=dtype, max_token_length=d.max_token_length,
                                        clip_skip=t.clip_skip, trains_text_encoder=cfg.trains_text_encoder)
        if latents_cached:
            folder = dataset.index.kiln_dir / "latents" if d.cache_latents_to_disk else None
            builder.latents, builder.vae_id = LatentCache(folder), vae_identity(base.vae)
            # on disk: the main process encodes, the others then read its files
            first = accelerator.main_process_first() if folder is not None else contextlib.nullcontext()
            with staging.visit([base.vae]), first:
                cache_latents(items + val_items, builder.latents, base.vae, vae_id=builder.vae_id,
                              options=builder.options, batch_size=d.vae_batch_size, device=device, progress=phase,
                              should_stop=should_stop)
        if d.caches_text_encoder_outputs:
            folder = dataset.index.kiln_dir / "text" / text_encoder_identity(
                base.text_encoders, d.max_token_length, t.clip_skip) if d.cache_text_encoder_outputs_to_disk else None
            first = accelerator.main_process_first() if folder is not None else contextlib.nullcontext()
            with staging.visit(base.text_encoders), first:
                conditioning.cache = cache_text_outputs(items + val_items, builder.options, conditioning,
                                                        progress=phase, folder=folder)
        # The training modules move in now; the peak so far (loading + caching) is reported apart from the
        # training peak (the step events' mem_mb).
        setup_mem_mb = staging.for_training(base)

        # ------------------------------------------------------------ 5. network, optimizer, LR schedule
        network: Network | FullModel
        full: FullModel | None = None
        if cfg.network.type == "full":  # the base model's own weights are trained (train/finetune)
            network = full = FullModel(base, cfg.finetune, train_unet=cfg.network.train_unet,
                                       train_text_encoder=cfg.trains_text_encoder, seed=t.seed, num_processes=world)
            run.emit("phase", phase=full.memory_plan(t.optimizer, t.optimizer_args).summary())
        else:
            network = create_network(base.arch.value, base.unet,
                                     base.text_encoders if cfg.trains_text_encoder else None, cfg.network,
                                     device=device)
            network.apply()
            network.to(device=device, dtype=network_dtype(t, mixed))  # float32 unless full_fp16 / full_bf16
        compile_unet(base, t.compile)  # after the network's hooks are in, so they are traced with the UNet
        network.train()
        if isinstance(network, Network):
            param_groups = network.trainable_params(cfg.unet_lr, cfg.text_encoder_lrs)
        else:  # a full fine-tune: one text-encoder rate (SDXL's TE1/TE2 rates are a LoRA option)
            param_groups = network.trainable_params(cfg.unet_lr, cfg.text_encoder_lr)
        if not param_groups:
            raise TrainingError("nothing to train: every network group has learning rate 0")
        params = [p for g in param_groups for p in g["params"]]
        optimizer = create_optimizer(t.optimizer, param_groups, t.learning_rate, t.optimizer_args)
        if full is not None:
            full.attach(optimizer, t.max_grad_norm)  # bf16 updates, the step in backward
        try:
            scheduler = create_schedule(t, optimizer, total_steps=total_steps, steps_per_epoch=steps.steps_per_epoch)
        except ValueError as exc:
            raise TrainingError(str(exc)) from None
        # DDP (several processes) wraps the denoiser and averages the network's gradients in backward.
        denoiser = Denoiser(network, base, conditioning, t.sdpa_backend)
        model, optimizer = accelerator.prepare(denoiser, optimizer)
        if t.full_fp16:
            allow_fp16_gradients(accelerator)
        # the held-out images, with the training's caption settings less their randomness (train/validation.py)
        validator = Validator(
            val_items, builder=BatchBuilder(items=val_items, captions=validation_captions(d.caption_settings()),
                                            seed=d.validation_seed, latents=builder.latents, vae_id=builder.vae_id),
            base=base, seed=d.validation_seed, timesteps=validation_timesteps(t.min_timestep, t.max_timestep),
            batch_size=t.batch_size, max_batches=t.max_validation_steps, device=device, accelerator=accelerator,
        ) if val_items else None
        # per-image losses, normalised by the expected loss at each timestep (train/image_losses.py)
        image_losses = ImageLosses([(i.path, i.caption, i.is_reg) for i in items],
                                   num_timesteps=int(noise_scheduler.config["num_train_timesteps"])) if main else None

        # ------------------------------------------------------------ 6. resume
        progress = Progress(total_steps=total_steps, seed=t.seed)
        if resume is not None:
            state_dir = latest_state(run_path)  # state/, or state.old/ after a kill mid-save; never a half one
            if state_dir is None:
                raise TrainingError(f"{run_path}: no resumable state/ in this run directory")
            configured = [float(lr) for lr in scheduler.base_lrs]
            progress = load_state(state_dir, network=network, optimizer=optimizer, scheduler=scheduler,
                                  scaler=accelerator.scaler)
            if full is not None:
                full.load_extra_state(load_extra_state(state_dir), state_dir)
            progress.total_steps = total_steps
            changed = rebase_learning_rates(optimizer, scheduler, configured)
            if changed:  # `kiln train --resume` allowed it with --force
                run.emit("warning", message=f"resumed at step {progress.step} with changed learning rates: "
                         + "; ".join(changed))
            if image_losses is not None:
                image_losses.restore(run_path, up_to_step=progress.step)
        if reason := should_stop():  # asked to stop while loading or caching
            raise StoppedEarly(reason)

        run.emit("start", name=cfg.output.name, run_dir=str(run_path), total_steps=total_steps, epochs=epochs,
                 pid=os.getpid(), resumed_step=progress.step, images=len(items), batch_size=t.batch_size,
                 num_processes=world, steps_per_epoch=steps.steps_per_epoch, device=str(device),
                 mixed_precision=mixed, setup_mem_mb=setup_mem_mb, config=cfg.summary(base.arch.value),
                 validation_images=validator.images if validator else 0)
        run.update_status(state="running", phase="training", step=progress.step, total_steps=total_steps,
                          epoch=progress.epoch, epochs=epochs)

        # ------------------------------------------------------------ 7. the loop
        schedule = SaveSchedule(cfg.output, cfg.sample)
        saver = Saver(cfg.output, run=run, run_path=run_path, enabled=main, network=network, optimizer=optimizer,
                      scheduler=scheduler, scaler=accelerator.scaler, progress=progress,
                      metadata=lambda: training_metadata(cfg, base=base, data=data, step=progress.step,
                                                         epoch=progress.epoch, steps=steps, started=started,
                                                         mixed_precision=mixed, optimizer=optimizer_label(optimizer),
                                                         zero_terminal_snr=ztsnr),
                      v_prediction=base.v_prediction, outputs=result.outputs,
                      extra_state=full.extra_state if full is not None else None)
        sample_dtype = full.sample_dtype(dtype) if full is not None else dtype
        sampler = Sampler(cfg.sample, run=run, run_path=run_path, enabled=main, base=base, network=network,
                          staging=staging, resolution=d.resolution_wh, dtype=sample_dtype, progress=progress,
                          optimizer=optimizer, prompts=prompts, clip_skip=t.clip_skip,
                          max_token_length=d.max_token_length)
        name = cfg.output.name
        spans = t.phase_spans(total_steps, steps.steps_per_epoch) if t.phases else []

        def announce_phase(step: int) -> int | None:
            """A ``schedule`` event when optimizer step ``step`` (0-based) opens a phase of the schedule."""
            index = phase_at(t, step, total_steps, steps.steps_per_epoch)
            if index is not None:
                start, end, ph = spans[index]
                run.emit("schedule", phase=index + 1, phases=len(spans), lr_scheduler=ph.lr_scheduler,
                         first_step=start + 1, last_step=end, lr_scale=ph.lr_scale)
            return index

        current_phase = announce_phase(progress.step) if spans and progress.step < total_steps else None
        last_validated = -1

        def validate() -> None:
            """A ``validation`` event with the loss of the held-out images (every process takes part)."""
            nonlocal last_validated
            if validator is None or last_validated == progress.step:
                return
            val = validator.run(denoiser)
            last_validated = progress.step
            result.validation.append((progress.step, val.loss))
            run.emit("validation", step=progress.step, epoch=progress.epoch, loss=val.loss, images=val.images,
                     timesteps=val.timesteps, per_timestep=val.per_timestep)

        def record_image_losses() -> None:
            """The step's per-sample losses into the per-image record (gathered from every process)."""
            if not sample_records:
                return
            stacked = torch.cat(sample_records)
            sample_records.clear()
            if world > 1:
                stacked = accelerator.gather(stacked)
            if image_losses is not None:
                image_losses.add_step(progress.step, [(int(i), int(ts), float(v)) for i, ts, v in stacked.tolist()])

        sample_records: list[torch.Tensor] = []
        meter = Throughput()
        batch_losses: list[torch.Tensor] = []
        stopping: str | None = None
        bad_steps, window_bad, bad_value = 0, False, 0.0  # NaN/inf losses: steps in a row, this step's, its value
        optimizer.zero_grad(set_to_none=True)
        if schedule.sample_at_first(progress.step):
            sampler.render(f"{name}-step{0:08d}")
        while progress.step < total_steps and not stopping:
            epoch = progress.epoch
            plan = plan_epoch(items, {i: b * world for i, b in data.batch_sizes().items()}, t.seed, epoch,
                              pad=world > 1)
            loader = epoch_loader(builder, plan, epoch=epoch, rank=accelerator.process_index, world=world,
                                  start=progress.batch_in_epoch, num_workers=d.num_workers,
                                  pin_memory=d.pin_memory and device.type == "cuda")
            for batch in loader:
                with accelerator.accumulate(model):
                    # ---- forward: latents + noise at a random timestep; predict the noise (or v)
                    latents = batch_latents(batch, base.vae, device)
                    drawn = draw_noise(latents, batch["seeds"], noise_settings, (t.min_timestep, t.max_timestep))
                    noisy = add_noise(noise_scheduler, latents, drawn.noisy_noise, drawn.timesteps)
                    pred = model(noisy, drawn.timesteps, batch)
                    target = diffusion_target(noise_scheduler, latents, drawn.noise, drawn.timesteps,
                                              v_prediction=base.v_prediction)
                    per_sample = loss_fn.unweighted(pred, target, drawn.timesteps, batch.get("masks"))
                    loss = loss_fn.weighted(per_sample, drawn.timesteps, batch["loss_weights"]).mean()
                    if not finite_everywhere(accelerator, loss):  # agreed by every process
                        window_bad, bad_value = True, float(loss.detach().float().item())

                    # ---- backward (DDP averages the gradients); a step once the accumulation is complete
                    if not window_bad:
                        accelerator.backward(loss)
                        optimizer_step(accelerator, optimizer, scheduler, params, t.max_grad_norm)
                progress.batch_in_epoch += 1
                if not window_bad:
                    batch_losses.append(loss.detach())
                    sample_records.append(torch.stack([
                        torch.tensor(batch["items"], dtype=torch.float64, device=per_sample.device),
                        drawn.timesteps.to(torch.float64), per_sample.detach().to(torch.float64)], dim=1))
                if not accelerator.sync_gradients:
                    continue
                if window_bad:  # a NaN/inf loss: no update from this step (the network keeps its good weights)
                    optimizer.zero_grad(set_to_none=True)
                    batch_losses.clear()
                    sample_records.clear()  # the window's per-image losses are not recorded either
                    bad_steps, window_bad = bad_steps + 1, False
                    if bad_steps > t.max_bad_steps:
                        raise non_finite_stop(bad_value, progress.step + 1, bad_steps, t.max_bad_steps)
                    run.emit("warning", message=f"step {progress.step + 1}: the loss is {bad_value}; the step was "
                             f"skipped without an update ({bad_steps} in a row; train.max_bad_steps = "
                             f"{t.max_bad_steps})")
                    continue
                bad_steps = 0

                # ---- one optimizer step done
                if full is not None:
                    full.after_step()  # the EMA
                elif cfg.network.scale_weight_norms:
                    assert isinstance(network, Network), "full fine-tunes refuse scale_weight_norms"
                    network.apply_max_norm(cfg.network.scale_weight_norms, device)
                progress.step += 1
                step_loss = mean_loss(accelerator, batch_losses)
                batch_losses.clear()
                progress.add_step_loss(step_loss)
                result.losses.append(step_loss)
                record_image_losses()
                if spans and progress.step < total_steps \
                        and phase_at(t, progress.step, total_steps, steps.steps_per_epoch) != current_phase:
                    current_phase = announce_phase(progress.step)
                it_s = meter.tick()
                run.emit("step", step=progress.step, total_steps=total_steps, epoch=epoch, loss=step_loss,
                         avg_loss=progress.epoch_avg_loss, lr=current_lrs(optimizer), it_s=round(it_s, 4),
                         eta_s=meter.eta_s(total_steps - progress.step), mem_mb=memory_mb(device))
                run.update_status(step=progress.step, epoch=epoch, loss=step_loss)

                # ---- validation, saves, samples, stop and save requests
                last = progress.step >= total_steps
                if t.validate_every_n_steps and progress.step % t.validate_every_n_steps == 0:
                    validate()
                if schedule.save_at_step(progress.step, last=last):
                    saver.save("step", with_state=cfg.output.save_state)
                if schedule.sample_at_step(progress.step):
                    sampler.render(f"{name}-step{progress.step:08d}")
                stopping, save_now = poll_requests(run, stop, accelerator)
                if save_now and not stopping:
                    saver.save("request", with_state=True)
                if last or stopping:
                    break

            # ---- end of epoch (a completed plan)
            if progress.batch_in_epoch >= len(plan):
                run.emit("epoch", epoch=epoch, step=progress.step, avg_loss=progress.epoch_avg_loss)
                if epoch % (t.validate_every_n_epochs or 1) == 0:  # kohya: every epoch unless told otherwise
                    validate()
                if image_losses is not None:
                    image_losses.write(run_path)
                if progress.step < total_steps:
                    if schedule.save_at_epoch(epoch):
                        saver.save("epoch", with_state=cfg.output.save_state)
                    if schedule.sample_at_epoch(epoch):
                        sampler.render(f"{name}-{epoch:06d}")
                    progress.next_epoch()
                    if not stopping:
                        stopping, _ = poll_requests(run, stop, accelerator)

        # ------------------------------------------------------------ 8. finish: final LoRA (+ state if stopped)
        if validator is not None and last_validated != progress.step:
            validate()  # the loss of what is saved now
        if image_losses is not None:
            image_losses.write(run_path)
        if stopping and progress.step < total_steps:
            saver.save("step", with_state=True)
            result.reason = "stopped"
            result.message = f"stopped by {stopping}; resume with: kiln train --resume {run_path}"
        else:
            saver.save("final", with_state=False)
            if full is not None and cfg.output.extract_dim is not None and main:
                run.emit("phase", phase="extracting a LoRA from the fine-tune")

                def tell(note: str) -> None:
                    run.emit("phase", phase=f"extract: {note}")

                lora = extract_lora(cfg, run_path / final_file(name), device=device, say=tell)
                run.emit("save", path=str(lora), step=progress.step, epoch=progress.epoch, kind="extract")
                result.outputs.append(str(lora))
            if schedule.sample_at_end():
                sampler.render(f"{name}-final")
            result.reason = "finished"
        result.step = progress.step
        accelerator.wait_for_everyone()
    except user_errors() as exc:  # a problem the message explains: no traceback needed
        result.message = str(exc) + _rescue(saver, progress, run_path, exc)
    except StoppedEarly as exc:
        result.reason = "stopped"
        result.message = exc.message()
    except KeyboardInterrupt:
        result.message = "interrupted twice: stopped without saving"
    except Exception as exc:  # noqa: BLE001 - every failure ends as an error event with its cause
        result.message = explain_failure(exc, step=progress.step + 1 if progress is not None else None)
        if main and not is_oom(exc):
            run.emit("error", message="".join(traceback.format_exception(exc))[-4000:], kind="traceback")
        if is_oom(exc):  # let go of the failed step's activations (held by the traceback's frames) before saving
            exc.__traceback__ = None
            _free_memory()
        result.message += _rescue(saver, progress, run_path, exc)
    finally:
        stop.restore()
    result.outputs[:] = [p for p in dict.fromkeys(result.outputs) if Path(p).exists()]  # pruned saves are gone
    if result.reason == "error":
        run.emit("error", message=result.message)
    run.emit("end", reason=result.reason, outputs=result.outputs, step=result.step, message=result.message,
             duration_s=round(time.time() - started, 1))
    run.update_status(state={"finished": "finished", "stopped": "stopped"}.get(result.reason, "failed"),
                      step=result.step, outputs=result.outputs, message=result.message)
    return result


def finite_everywhere(accelerator: Accelerator, loss: torch.Tensor) -> bool:
    """Whether ``loss`` is finite on every process (they skip a step together or not at all)."""
    import torch

    finite = bool(torch.isfinite(loss.detach()).all())
    if accelerator.num_processes > 1:
        flag = torch.tensor([0.0 if finite else 1.0], device=accelerator.device)
        finite = bool(accelerator.reduce(flag, reduction="sum").item() == 0)
    return finite


def _free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _rescue(saver: Saver | None, progress: Progress | None, run_path: Path, exc: BaseException) -> str:
    """After a failure mid-run (out of memory, NaN losses, the dataset gone, a save that failed): save the
    LoRA and the state of the last completed step so the run can be resumed; returns what to add to the
    message. Nothing is tried before the first step, nor when the disk is full (the save would fail too)."""
    from curator.faults import DiskFullError, describe

    if saver is None or progress is None or progress.step == 0 or not saver.enabled:
        return ""
    if not isinstance(exc, DiskFullError):
        try:
            saver.save("step", with_state=True)
            return (f" The LoRA and the training state of step {progress.step} were saved: fix the cause, then "
                    f"continue with: kiln train --resume {run_path}")
        except Exception as failed:  # noqa: BLE001 - the rescue must not hide the first failure
            exc = failed
    last = latest_state(run_path)
    if last is None:
        return f" Saving step {progress.step} failed too ({describe(exc)}); there is no resumable state."
    step = load_progress(last).step
    return (f" The run could not save step {progress.step}; its last complete state is step {step} ({last}): "
            f"kiln train --resume {run_path} continues from there once the cause is fixed.")
