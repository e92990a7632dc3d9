"""Train an LPIP-Diff patch denoiser with accelerate (CPU, one GPU, several GPUs or nodes).

    lpipdiff train --data ../shared/data/utkface/train --output runs/x
    python -m lpipdiff.data pack ../shared/data/utkface/train faces.npz && lpipdiff train --data faces.npz ...
    accelerate launch -m lpipdiff.train --data /path/to/ffhq --output runs/ffhq --face-size 512 --patch-size 128

Checkpoints (``OUTPUT/checkpoints/checkpoint-STEP``) hold the model, EMA, optimizer, LR
schedule and RNG states; each is written under a temporary name and renamed when
complete, so a kill during a save never damages the last good one. ``--resume latest``
continues from the newest. Faces are decoded once and held on the training device, where
they are degraded in batches and cut into ``--patches-per-face`` patches each (see
:mod:`lpipdiff.data`), so the device does not wait for data. Validation samples real faces
through the real pipeline (the loss alone says little about samples) and appends PSNR and identity distance to
``OUTPUT/validation.jsonl`` with an image grid in ``OUTPUT/samples/``. The final EMA
weights are exported as a pipeline folder in ``OUTPUT/pipeline``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers import DDPMScheduler
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from .data import DEFAULT_MEMORY_BUDGET, PatchBatches, face_source, open_faces
from .degradation_torch import BatchDegradation
from .pipeline_lpipdiff import DEFAULT_STEPS, LPIPDiffPipeline
from .sampling import default_scheduler
from .unet import PatchFusionUNet

CHECKPOINT_PREFIX = "checkpoint-"
# The UNet's own defaults are the training defaults: one source for the architecture.
UNET_DEFAULTS = {
    name: parameter.default
    for name, parameter in inspect.signature(PatchFusionUNet.__init__).parameters.items()
    if parameter.default is not inspect.Parameter.empty
}


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--data", required=True, help="folder of clean aligned faces, or a pack of them (python -m lpipdiff.data pack)")
    add("--output", required=True, help="run folder (checkpoints, logs, samples, final pipeline)")
    add("--val-data", default=None, help="clean faces for validation (default: DATA/../val when it exists)")
    add("--init-from", default=None, help="pipeline folder whose weights start training (e.g. the bundled model)")
    unet = UNET_DEFAULTS
    attention = [i for i, block in enumerate(unet["down_block_types"]) if block.startswith("Attn")]
    add("--face-size", type=int, default=unet["face_size"])
    add("--patch-size", type=int, default=unet["patch_size"])
    add("--channels", default=",".join(map(str, unet["block_out_channels"])), help="UNet block widths")
    add("--attention-levels", default=",".join(map(str, attention)),
        help="which down levels (0-based) use attention, comma separated")
    add("--layers-per-block", type=int, default=unet["layers_per_block"])
    add("--prediction-type", default="v_prediction", choices=["epsilon", "v_prediction", "sample"])
    add("--residual", action=argparse.BooleanOptionalAction, default=True, help="diffuse clean minus degraded")
    add("--global-context", action=argparse.BooleanOptionalAction, default=True)
    add("--coordinates", action=argparse.BooleanOptionalAction, default=True)
    add("--batch-size", type=int, default=16, help="patches per device per step")
    add("--learning-rate", type=float, default=3e-4)
    add("--warmup-steps", type=int, default=100)
    add("--lr-schedule", default="constant_with_warmup", help="any diffusers.optimization schedule name")
    add("--weight-decay", type=float, default=1e-4)
    add("--max-grad-norm", type=float, default=1.0)
    add("--ema-decay", type=float, default=0.999)
    add("--max-steps", type=int, default=100_000)
    add("--max-minutes", type=float, default=None, help="stop (and export) after this much wall time")
    add("--checkpoint-every", type=int, default=500)
    add("--checkpoints-kept", type=int, default=2)
    add("--validate-every", type=int, default=1000)
    add("--val-faces", type=int, default=8)
    add("--val-steps", type=int, default=DEFAULT_STEPS)
    add("--mixed-precision", default="no", choices=["no", "fp16", "bf16"])
    add("--patches-per-face", type=int, default=4, help="patches cropped from each degraded face")
    add("--memory-budget-gb", type=float, default=DEFAULT_MEMORY_BUDGET / 2**30,
        help="decoded faces up to this size are held on the device; beyond it they are decoded by workers")
    add("--num-workers", type=int, default=2, help="decoding workers, used only beyond the memory budget")
    add("--band-weights", default=None,
        help="age-aware mix: relative draw weight of a face by UTKFace age band, e.g. '0-12=1,13-19=1,20-59=2,60+=2' "
             "(bands not named: 0) or '0,0,1,1' (adults only); default: every face equally")
    add("--seed", type=int, default=0)
    add("--resume", default=None, help="'latest' or a checkpoint folder")
    add("--export-fp16", action="store_true", help="export the final pipeline with fp16 weights")
    return parser


def build_unet(args) -> PatchFusionUNet:
    channels = tuple(int(c) for c in args.channels.split(","))
    attention = {int(i) for i in args.attention_levels.split(",") if i != ""}
    down = tuple("AttnDownBlock2D" if i in attention else "DownBlock2D" for i in range(len(channels)))
    up = tuple("AttnUpBlock2D" if i in attention else "UpBlock2D" for i in reversed(range(len(channels))))
    return PatchFusionUNet(
        face_size=args.face_size,
        patch_size=args.patch_size,
        use_coordinates=args.coordinates,
        use_global_context=args.global_context,
        residual=args.residual,
        block_out_channels=channels,
        layers_per_block=args.layers_per_block,
        down_block_types=down,
        up_block_types=up,
        norm_num_groups=min(UNET_DEFAULTS["norm_num_groups"], channels[0]),
        attention_head_dim=min(UNET_DEFAULTS["attention_head_dim"], min(channels)),
    )


def training_loss(model, noise_scheduler, batch, generator=None):
    """The denoising loss of one batch at random timesteps."""
    unet = model.module if hasattr(model, "module") else model  # DDP-wrapped or not
    x0 = unet.encode(batch["clean"], batch["degraded"])
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    timesteps = torch.randint(
        0, noise_scheduler.config.num_train_timesteps, (x0.shape[0],), generator=generator, device=x0.device
    )
    noisy = noise_scheduler.add_noise(x0, noise, timesteps)
    prediction_type = noise_scheduler.config.prediction_type
    if prediction_type == "epsilon":
        target = noise
    elif prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(x0, noise, timesteps)
    else:
        target = x0
    prediction = model(noisy, timesteps, batch["degraded"], batch["coordinates"], batch["context"])
    return F.mse_loss(prediction.float(), target.float())


def plain_arguments(args) -> dict:
    """The training arguments without what the CLI adds (sub-command, handler)."""
    return {k: v for k, v in vars(args).items() if k not in ("command", "handler")}


def training_batches(args, unet_config, device) -> PatchBatches:
    """Endless batches on ``device``; every process of a multi-GPU run draws its own."""
    faces = open_faces(args.data, unet_config.face_size)
    weights = None
    if getattr(args, "band_weights", None):
        from .age_bands import band_shares, parse_band_weights, sampling_weights

        weights = sampling_weights(faces.names, parse_band_weights(args.band_weights))
        print("age-band shares of draws:", {b: round(s, 3) for b, s in band_shares(faces.names, weights).items()})
    source = face_source(faces, device, int(args.memory_budget_gb * 2**30), args.num_workers, weights=weights)
    degradation = BatchDegradation(face_size=unet_config.face_size)
    return PatchBatches(source, degradation, unet_config.patch_size, args.batch_size, args.patches_per_face)


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary folders of interrupted saves are ignored)."""
    prefix = len(CHECKPOINT_PREFIX)
    found = [p for p in folder.glob(CHECKPOINT_PREFIX + "*") if p.is_dir() and p.name[prefix:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]))


def save_checkpoint(accelerator, folder: Path, step: int, kept: int) -> Path:
    final = folder / f"{CHECKPOINT_PREFIX}{step}"
    partial = folder / f".partial-{CHECKPOINT_PREFIX}{step}"
    if accelerator.is_main_process and partial.exists():
        shutil.rmtree(partial)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    if accelerator.is_main_process:
        (partial / "train_state.json").write_text(json.dumps({"step": step}))
        if final.exists():
            shutil.rmtree(final)
        partial.rename(final)  # atomic: a checkpoint folder is either complete or absent
        for old in list_checkpoints(folder)[:-kept]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


class Validator:
    """Restores a fixed set of degraded val faces through the pipeline and measures them."""

    def __init__(self, folder: Path, face_size: int, count: int, steps: int, output: Path, prediction_type: str):
        from .degradation import Degradation, image_seed
        from .image_io import list_images, load_image_file, resize_array

        files = list_images(folder)[:count]
        # Half moderate, half severe, seeded by file name: the same inputs at every validation.
        self.clean = [resize_array(load_image_file(f), face_size) for f in files]
        presets = [Degradation("moderate", face_size, color=False), Degradation("severe", face_size, color=False)]
        pairs = enumerate(zip(self.clean, files))
        self.degraded = [presets[i % 2](clean, image_seed(i % 2, file.name)) for i, (clean, file) in pairs]
        self.steps, self.output, self.prediction_type = steps, output, prediction_type
        try:
            from .metrics import FaceGeometry

            self.geometry = FaceGeometry()
        except ImportError:
            self.geometry = None

    def __call__(self, unet, step: int) -> dict:
        from .image_io import save_image
        from .metrics import psnr
        from .sampling import restore_all

        pipeline = LPIPDiffPipeline(unet=unet, scheduler=default_scheduler(self.prediction_type))
        pipeline.set_progress_bar_config(disable=True)
        restored = restore_all(pipeline, self.degraded, len(self.degraded), seed=0, num_inference_steps=self.steps)
        result = {
            "step": step,
            "psnr": float(np.mean([psnr(r, c) for r, c in zip(restored, self.clean)])),
            "psnr_input": float(np.mean([psnr(d, c) for d, c in zip(self.degraded, self.clean)])),
        }
        if self.geometry is not None:
            result["identity"] = float(
                np.mean([self.geometry.identity_distance(r, c) for r, c in zip(restored, self.clean)])
            )
            result["identity_input"] = float(
                np.mean([self.geometry.identity_distance(d, c) for d, c in zip(self.degraded, self.clean)])
            )
        rows = [np.concatenate([d, r, c], axis=1) for d, r, c in zip(self.degraded, restored, self.clean)]
        save_image(np.concatenate(rows, axis=0), self.output / "samples" / f"step-{step:07d}.png")
        with open(self.output / "validation.jsonl", "a") as log:
            log.write(json.dumps(result) + "\n")
        return result


def main(argv=None, namespace=None):
    args = namespace if namespace is not None else build_parser().parse_args(argv)
    output = Path(args.output)
    accelerator = Accelerator(mixed_precision=args.mixed_precision, project_dir=str(output))
    set_seed(args.seed, device_specific=True)
    checkpoints = output / "checkpoints"
    if accelerator.is_main_process:
        checkpoints.mkdir(parents=True, exist_ok=True)
        (output / "training_args.json").write_text(json.dumps(plain_arguments(args), indent=2))

    if args.init_from:
        model = PatchFusionUNet.from_pretrained(args.init_from, subfolder="unet", dtype=torch.float32)
    else:
        model = build_unet(args)
    noise_scheduler = DDPMScheduler.from_config(default_scheduler(args.prediction_type).config)
    ema = EMAModel(model.parameters(), decay=args.ema_decay, model_cls=PatchFusionUNet, model_config=model.config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    lr_scheduler = get_scheduler(
        args.lr_schedule,
        optimizer,
        num_warmup_steps=args.warmup_steps * accelerator.num_processes,
        num_training_steps=args.max_steps * accelerator.num_processes,
    )
    batches = training_batches(args, model.config, accelerator.device)
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    ema.to(accelerator.device)
    accelerator.register_for_checkpointing(ema)

    step = 0
    if args.resume:
        resume_from = list_checkpoints(checkpoints)[-1:] if args.resume == "latest" else [Path(args.resume)]
        if resume_from:
            accelerator.load_state(str(resume_from[0]))
            step = json.loads((resume_from[0] / "train_state.json").read_text())["step"]
            accelerator.print(f"resumed from {resume_from[0]} at step {step}")
        else:
            accelerator.print(f"no checkpoint in {checkpoints}; starting from scratch")

    validator = None
    val_folder = Path(args.val_data) if args.val_data else Path(args.data).parent / "val"
    if accelerator.is_main_process and args.validate_every > 0 and val_folder.is_dir():
        face_size = accelerator.unwrap_model(model).config.face_size
        validator = Validator(val_folder, face_size, args.val_faces, args.val_steps, output, args.prediction_type)

    def validate():
        if validator is None:
            return
        unwrapped = accelerator.unwrap_model(model)
        ema.store(unwrapped.parameters())
        ema.copy_to(unwrapped.parameters())
        unwrapped.eval()
        result = validator(unwrapped, step)
        unwrapped.train()
        ema.restore(unwrapped.parameters())
        accelerator.print(json.dumps(result))

    start = time.monotonic()
    progress = tqdm(total=args.max_steps, initial=step, disable=not accelerator.is_local_main_process, desc="train")
    model.train()
    while step < args.max_steps:
        batch = next(batches)
        with accelerator.accumulate(model):
            loss = training_loss(model, noise_scheduler, batch)
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        ema.step(model.parameters())
        step += 1
        progress.update(1)
        progress.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr_scheduler.get_last_lr()[0]:.1e}")
        if step % args.checkpoint_every == 0:
            save_checkpoint(accelerator, checkpoints, step, args.checkpoints_kept)
        if args.validate_every > 0 and step % args.validate_every == 0:
            validate()
        if args.max_minutes is not None and step % 10 == 0:
            over = torch.tensor(float(time.monotonic() - start > 60 * args.max_minutes), device=accelerator.device)
            if accelerator.reduce(over, reduction="max").item() > 0:
                break
    progress.close()

    save_checkpoint(accelerator, checkpoints, step, args.checkpoints_kept)
    if args.validate_every > 0 and step % args.validate_every != 0:
        validate()
    if accelerator.is_main_process:
        export_pipeline(accelerator.unwrap_model(model), ema, args, output / "pipeline", step, time.monotonic() - start)
    accelerator.end_training()


def export_pipeline(model, ema, args, folder: Path, step: int, seconds: float) -> None:
    """Save the EMA weights as a ``save_pretrained`` pipeline folder (fp16 on request)."""
    final = PatchFusionUNet.from_config(model.config)
    ema.copy_to(final.parameters())
    if args.export_fp16:
        final = final.to(torch.float16)
    pipeline = LPIPDiffPipeline(unet=final, scheduler=default_scheduler(args.prediction_type))
    pipeline.save_pretrained(folder)
    record = {"args": plain_arguments(args), "steps": step, "wall_seconds": round(seconds, 1)}
    (folder / "training_config.json").write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
