"""Train an LPIP-Diff patch denoiser with accelerate (CPU, one GPU, several GPUs or nodes).

    lpipdiff train --data ../shared/data/utkface/train --output runs/x
    python -m lpipdiff.training.data pack ../shared/data/utkface/train faces.npz && lpipdiff train --data faces.npz ...
    accelerate launch -m lpipdiff.training.train --data /path/to/ffhq --output runs/ffhq \
        --face-size 512 --patch-size 128

Checkpoints (``OUTPUT/checkpoints/checkpoint-STEP``) hold the model, EMA, optimizer, LR
schedule and RNG states; each is written under a temporary name and renamed when
complete, so a kill during a save never damages the last good one. ``--resume latest``
continues from the newest. Faces are decoded once and held on the training device, where
they are degraded in batches and cut into ``--patches-per-face`` patches each (see
:mod:`lpipdiff.training.data`), so the device does not wait for data. Validation samples real faces
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
from dataclasses import dataclass
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

from ..arguments.argtypes import (
    float_range,
    int_range,
    non_negative_int,
    output_folder,
    positive_int,
    training_data,
)
from ..arguments.options import HelpFormatter
from ..checks import UsageError, is_whole_number
from ..config.defaults import DEFAULT_STEPS
from ..model.pipeline_lpipdiff import LPIPDiffPipeline
from ..model.sampling import SamplingOptions, build_scheduler
from ..model.unet import PatchFusionUNet
from .arguments import check_training_arguments
from .data import DEFAULT_MEMORY_BUDGET, PatchBatches, face_source, open_faces
from .degradation_torch import BatchDegradation
from .discriminator import PatchDiscriminator
from .losses import (
    OneStepWeights,
    clean_estimate,
    diffusion_target,
    hinge_discriminator_loss,
    one_step_loss,
)

CHECKPOINT_PREFIX = "checkpoint-"
EMA_FILE = "ema.pt"  # the EMA weights of a checkpoint; earlier versions had accelerate write custom_checkpoint_0.pkl
# The UNet's own defaults are the training defaults: one source for the architecture.
UNET_DEFAULTS = {
    name: parameter.default
    for name, parameter in inspect.signature(PatchFusionUNet.__init__).parameters.items()
    if parameter.default is not inspect.Parameter.empty
}


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=HelpFormatter)
    add = parser.add_argument
    add("--data", required=True, type=training_data,
        help="folder of clean aligned faces, or a pack of them (python -m lpipdiff.training.data pack)")
    add("--output", required=True, type=output_folder,
        help="run folder (checkpoints, logs, samples, final pipeline)")
    add("--overwrite", action="store_true", help="start a new run in an OUTPUT that holds another run's files")
    add("--val-data", default=None, help="clean faces for validation (default: DATA/../val when it exists)")
    add("--init-from", default=None, help="pipeline folder whose weights start training (e.g. the bundled model)")
    unet = UNET_DEFAULTS
    attention = [i for i, block in enumerate(unet["down_block_types"]) if block.startswith("Attn")]
    add("--face-size", type=int_range(8, 4096), default=unet["face_size"],
        help="side of the aligned faces the model restores")
    add("--patch-size", type=int_range(4, 4096), default=unet["patch_size"], help="side of the patches the UNet sees")
    add("--channels", default=",".join(map(str, unet["block_out_channels"])), help="UNet block widths")
    add("--attention-levels", default=",".join(map(str, attention)),
        help="which down levels (0-based) use attention, comma separated")
    add("--layers-per-block", type=int_range(1, 16), default=unet["layers_per_block"],
        help="ResNet layers in each UNet block")
    add("--prediction-type", default="v_prediction", choices=["epsilon", "v_prediction", "sample"],
        help="what the UNet predicts (docs/TRAINING.md: epsilon fails with this schedule)")
    add("--residual", action=argparse.BooleanOptionalAction, default=True, help="diffuse clean minus degraded")
    add("--global-context", action=argparse.BooleanOptionalAction, default=True,
        help="give the UNet the whole degraded face at patch resolution")
    add("--coordinates", action=argparse.BooleanOptionalAction, default=True,
        help="give the UNet where the patch lies in the face")
    add("--batch-size", type=positive_int, default=16, help="patches per device per step")
    add("--learning-rate", type=float_range(0, 1, low_open=True), default=3e-4, help="AdamW learning rate")
    add("--warmup-steps", type=non_negative_int, default=100, help="learning-rate warm-up steps")
    add("--lr-schedule", default="constant_with_warmup", help="any diffusers.optimization schedule name")
    add("--weight-decay", type=float, default=1e-4, help="AdamW weight decay")
    add("--max-grad-norm", type=float, default=1.0, help="gradient clipping norm")
    add("--ema-decay", type=float, default=0.999, help="decay of the exponential moving average of the weights")
    add("--max-steps", type=positive_int, default=100_000, help="stop (and export) after this many steps")
    add("--max-minutes", type=float_range(0, low_open=True), default=None,
        help="stop (and export) after this much wall time")
    add("--checkpoint-every", type=positive_int, default=500, help="steps between checkpoints")
    add("--checkpoints-kept", type=positive_int, default=2, help="how many of the newest checkpoints to keep")
    add("--validate-every", type=non_negative_int, default=1000, help="steps between validations (0: never)")
    add("--val-faces", type=positive_int, default=8, help="val faces restored at each validation")
    add("--val-steps", type=int_range(1, 1000), default=DEFAULT_STEPS,
        help="sampler steps of the validation restorations")
    add("--mixed-precision", default="no", choices=["no", "fp16", "bf16"], help="accelerate's mixed precision")
    add("--patches-per-face", type=positive_int, default=4, help="patches cropped from each degraded face")
    add("--memory-budget-gb", type=float_range(0), default=DEFAULT_MEMORY_BUDGET / 2**30,
        help="decoded faces up to this size are held on the device; beyond it they are decoded by workers")
    add("--num-workers", type=non_negative_int, default=2, help="decoding workers, used only beyond the memory budget")
    add("--band-weights", default=None,
        help="age-aware mix: relative draw weight of a face by UTKFace age band, e.g. '0-12=1,13-19=1,20-59=2,60+=2' "
             "(bands not named: 0) or '0,0,1,1' (adults only); default: every face equally")
    one_step = parser.add_argument_group(
        "one-step estimate",
        "train what the pipeline returns at fidelity 1 (the clean estimate in one step from pure noise) to be "
        "sharp, besides the diffusion loss; all weights default to 0 (off)")
    one_step.add_argument("--perceptual-weight", type=float_range(0), default=0.0,
                          help="shift-tolerant LPIPS (VGG) between the one-step estimate and the clean patch")
    one_step.add_argument("--l1-weight", type=float_range(0), default=0.0,
                          help="mean absolute difference between the one-step estimate and the clean patch")
    one_step.add_argument("--anchor-weight", type=float_range(0), default=0.0,
                          help="keep the one-step estimate's low frequencies on the --init-from model's own "
                               "(a frozen copy), so that detail may change but not the person")
    one_step.add_argument("--anchor-factor", type=int_range(1, 64), default=OneStepWeights.anchor_factor,
                          help="pooling factor that defines the anchored low frequencies")
    one_step.add_argument("--adversarial-weight", type=float_range(0), default=0.0,
                          help="hinge loss of a small patch discriminator (spectral norm) on the one-step estimate")
    one_step.add_argument("--discriminator-lr", type=float_range(0, 1, low_open=True), default=1e-4,
                          help="the discriminator's AdamW learning rate")
    add("--seed", type=non_negative_int, default=0, help="random seed (each process adds its rank)")
    add("--resume", default=None, help="'latest' or a checkpoint folder")
    add("--export-fp16", action="store_true", help="export the final pipeline with fp16 weights")
    return parser


def build_unet(face_size: int, patch_size: int, channels: str, attention_levels: str, layers_per_block: int,
               coordinates: bool = True, global_context: bool = True, residual: bool = True) -> PatchFusionUNet:
    """A new UNet; ``channels`` and ``attention_levels`` are comma-separated, as on the command line."""
    channels = tuple(int(c) for c in channels.split(","))
    attention = {int(i) for i in attention_levels.split(",") if i != ""}
    down = tuple("AttnDownBlock2D" if i in attention else "DownBlock2D" for i in range(len(channels)))
    up = tuple("AttnUpBlock2D" if i in attention else "UpBlock2D" for i in reversed(range(len(channels))))
    return PatchFusionUNet(
        face_size=face_size,
        patch_size=patch_size,
        use_coordinates=coordinates,
        use_global_context=global_context,
        residual=residual,
        block_out_channels=channels,
        layers_per_block=layers_per_block,
        down_block_types=down,
        up_block_types=up,
        norm_num_groups=min(UNET_DEFAULTS["norm_num_groups"], channels[0]),
        attention_head_dim=min(UNET_DEFAULTS["attention_head_dim"], min(channels)),
    )


@dataclass
class OneStepObjective:
    """What trains the one-step estimate besides the diffusion loss (see :mod:`lpipdiff.training.losses`):
    the terms' weights and the frozen networks they need (``None`` where a term is off)."""

    weights: OneStepWeights
    teacher: torch.nn.Module | None = None
    perceptual: torch.nn.Module | None = None
    discriminator: torch.nn.Module | None = None


@dataclass
class StepLoss:
    """One batch's loss to back-propagate, its terms for the log, and the one-step estimate (for the
    discriminator's own step; ``None`` when no one-step term is on)."""

    total: torch.Tensor
    terms: dict[str, float]
    estimate: torch.Tensor | None = None


def training_loss(model, noise_scheduler, batch, generator=None, objective: OneStepObjective | None = None) -> StepLoss:
    """The denoising loss of one batch at random timesteps and, with an active ``objective``, the
    one-step loss of the same patches from pure noise at the last timestep.

    Both go through the model in one forward pass (the batch twice over), which multi-GPU training
    needs: distributed data parallel expects one forward per backward.
    """
    unet = model.module if hasattr(model, "module") else model  # DDP-wrapped or not
    x0 = unet.encode(batch["clean"], batch["degraded"])
    size = x0.shape[0]
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    timesteps = torch.randint(
        0, noise_scheduler.config.num_train_timesteps, (size,), generator=generator, device=x0.device
    )
    noisy = noise_scheduler.add_noise(x0, noise, timesteps)
    conditioning = [batch["degraded"], batch["coordinates"], batch["context"]]
    one_step = objective is not None and objective.weights.active
    if one_step:
        pure_noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        last = torch.full_like(timesteps, noise_scheduler.config.num_train_timesteps - 1)
        noisy, timesteps = torch.cat([noisy, pure_noise]), torch.cat([timesteps, last])
        conditioning = [torch.cat([c, c]) for c in conditioning]
    prediction = model(noisy, timesteps, *conditioning).float()
    target = diffusion_target(x0, noise, timesteps[:size], noise_scheduler)
    diffusion = F.mse_loss(prediction[:size], target.float())
    if not one_step:
        return StepLoss(diffusion, {"diffusion": float(diffusion.detach())})

    estimate = estimate_to_image(unet, noise_scheduler, pure_noise, prediction[size:], batch["degraded"])
    teacher_estimate = None
    if objective.teacher is not None:
        with torch.no_grad():
            teacher_estimate = one_step_estimate(objective.teacher, noise_scheduler, batch, pure_noise)
    fake_logits = objective.discriminator(estimate) if objective.weights.adversarial > 0 else None
    extra, terms = one_step_loss(estimate, batch["clean"], teacher_estimate, objective.weights,
                                 objective.perceptual, fake_logits)
    return StepLoss(diffusion + extra, {"diffusion": float(diffusion.detach()), **terms}, estimate)


def estimate_to_image(unet, noise_scheduler, noise: torch.Tensor, prediction: torch.Tensor, degraded: torch.Tensor):
    """The clean patches, in [-1, 1] image units, that ``prediction`` from ``noise`` at the last timestep implies."""
    last = noise_scheduler.config.num_train_timesteps - 1
    alpha_bar = noise_scheduler.alphas_cumprod[last].to(noise.device).expand(noise.shape[0])
    sample = clean_estimate(noise.float(), prediction.float(), alpha_bar, noise_scheduler.config.prediction_type)
    return unet.decode(sample, degraded.float())


def one_step_estimate(model, noise_scheduler, batch, noise: torch.Tensor) -> torch.Tensor:
    """The clean patches ``model`` estimates in one step from the pure noise ``noise`` at the last
    timestep: per patch, what the pipeline fuses at ``fidelity=1``."""
    unet = model.module if hasattr(model, "module") else model
    last = torch.full((noise.shape[0],), noise_scheduler.config.num_train_timesteps - 1, device=noise.device)
    prediction = model(noise, last, batch["degraded"], batch["coordinates"], batch["context"])
    return estimate_to_image(unet, noise_scheduler, noise, prediction, batch["degraded"])


def build_objective(args, device) -> OneStepObjective | None:
    """The one-step objective the arguments ask for, its networks on ``device``; ``None`` when all
    its weights are 0."""
    weights = OneStepWeights(perceptual=args.perceptual_weight, l1=args.l1_weight, anchor=args.anchor_weight,
                             anchor_factor=args.anchor_factor, adversarial=args.adversarial_weight)
    if not weights.active:
        return None
    objective = OneStepObjective(weights)
    if weights.anchor > 0:
        teacher = PatchFusionUNet.from_pretrained(args.init_from, subfolder="unet", dtype=torch.float32)
        objective.teacher = teacher.requires_grad_(False).eval().to(device)
    if weights.perceptual > 0:
        from .perceptual import PerceptualDistance

        objective.perceptual = PerceptualDistance().to(device)
    if weights.adversarial > 0:
        objective.discriminator = PatchDiscriminator()
    return objective


def training_batches(data, unet_config, device, batch_size: int, patches_per_face: int, memory_budget: int,
                     num_workers: int, band_weights: str | None = None) -> PatchBatches:
    """Endless batches on ``device``; every process of a multi-GPU run draws its own. ``band_weights``
    (``--band-weights``) weighs each face's draws by its UTKFace age band."""
    faces = open_faces(data, unet_config.face_size)
    weights = None
    if band_weights:
        from ..evaluation.age_bands import band_shares, parse_band_weights, sampling_weights

        weights = sampling_weights(faces.names, parse_band_weights(band_weights))
        print("age-band shares of draws:", {b: round(s, 3) for b, s in band_shares(faces.names, weights).items()})
    source = face_source(faces, device, memory_budget, num_workers, weights=weights)
    degradation = BatchDegradation(face_size=unet_config.face_size)
    return PatchBatches(source, degradation, unet_config.patch_size, batch_size, patches_per_face)


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary folders of interrupted saves are ignored)."""
    prefix = len(CHECKPOINT_PREFIX)
    found = [p for p in folder.glob(CHECKPOINT_PREFIX + "*") if p.is_dir() and p.name[prefix:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]))


def save_checkpoint(accelerator, ema, folder: Path, step: int, kept: int) -> Path:
    final = folder / f"{CHECKPOINT_PREFIX}{step}"
    partial = folder / f".partial-{CHECKPOINT_PREFIX}{step}"
    if accelerator.is_main_process and partial.exists():
        shutil.rmtree(partial)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    if accelerator.is_main_process:
        torch.save(ema.state_dict(), partial / EMA_FILE)
        (partial / "train_state.json").write_text(json.dumps({"step": step}))
        if final.exists():
            shutil.rmtree(final)
        partial.rename(final)  # atomic: a checkpoint folder is either complete or absent
        for old in list_checkpoints(folder)[:-kept]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, ema, checkpoint: Path) -> int:
    """Load a checkpoint's states into the run and return its step. Only tensors and plain values are
    read (the EMA too, which accelerate would unpickle whole: a checkpoint folder may come from
    anywhere); a damaged or foreign checkpoint is one UsageError naming it."""
    try:
        accelerator.load_state(str(checkpoint))
        ema_file = checkpoint / EMA_FILE
        if not ema_file.is_file():
            ema_file = checkpoint / "custom_checkpoint_0.pkl"
        ema.load_state_dict(torch.load(ema_file, map_location="cpu", weights_only=True))
        step = json.loads((checkpoint / "train_state.json").read_text())["step"]
        if not is_whole_number(step) or step < 0:
            raise ValueError(f"train_state.json holds the step {step!r}")
    except Exception as error:  # noqa: BLE001 - torch, safetensors and pickle fail in many ways; all mean one thing
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        raise UsageError(
            f"--resume {checkpoint}: the checkpoint cannot be loaded ({type(error).__name__}: {reason}); resume from "
            "another one (--resume PATH) or start over with --overwrite"
        ) from None
    ema.to(accelerator.device)
    return step


class Validator:
    """Restores a fixed set of degraded val faces through the pipeline and measures them."""

    def __init__(self, folder: Path, face_size: int, count: int, steps: int, output: Path, prediction_type: str):
        from ..io.images import list_images, load_image_file, resize_array
        from .degradation import Degradation, image_seed

        files = list_images(folder)[:count]
        # Half moderate, half severe, seeded by file name: the same inputs at every validation.
        self.clean = [resize_array(load_image_file(f), face_size) for f in files]
        presets = [Degradation("moderate", face_size, color=False), Degradation("severe", face_size, color=False)]
        pairs = enumerate(zip(self.clean, files))
        self.degraded = [presets[i % 2](clean, image_seed(i % 2, file.name)) for i, (clean, file) in pairs]
        self.steps, self.output, self.prediction_type = steps, output, prediction_type
        try:
            from ..evaluation.metrics import FaceGeometry

            self.geometry = FaceGeometry()
        except ImportError:
            self.geometry = None

    def __call__(self, unet, step: int) -> dict:
        from ..evaluation.metrics import psnr
        from ..io.images import save_image
        from ..model.sampling import restore_all

        pipeline = LPIPDiffPipeline(unet=unet, scheduler=build_scheduler(prediction_type=self.prediction_type))
        restored = restore_all(pipeline, self.degraded, SamplingOptions(steps=self.steps), len(self.degraded))
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
        save_image(np.concatenate(rows, axis=0), self.output / "samples" / f"step-{step:07d}.png", overwrite=True)
        with open(self.output / "validation.jsonl", "a") as log:
            log.write(json.dumps(result) + "\n")
        return result


def main(argv=None, prog: str | None = None) -> int:
    from ..arguments.errors import report_errors

    return report_errors(run, build_parser(prog).parse_args(argv))


def run(args) -> int:
    check_training_arguments(args)
    output = Path(args.output)
    accelerator = Accelerator(mixed_precision=args.mixed_precision, project_dir=str(output))
    set_seed(args.seed, device_specific=True)
    checkpoints = output / "checkpoints"
    if accelerator.is_main_process:
        checkpoints.mkdir(parents=True, exist_ok=True)
        (output / "training_args.json").write_text(json.dumps(vars(args), indent=2))

    if args.init_from:
        model = PatchFusionUNet.from_pretrained(args.init_from, subfolder="unet", dtype=torch.float32)
    else:
        model = build_unet(args.face_size, args.patch_size, args.channels, args.attention_levels,
                           args.layers_per_block, args.coordinates, args.global_context, args.residual)
    noise_scheduler = DDPMScheduler.from_config(build_scheduler(prediction_type=args.prediction_type).config)
    ema = EMAModel(model.parameters(), decay=args.ema_decay, model_cls=PatchFusionUNet, model_config=model.config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    lr_scheduler = get_scheduler(
        args.lr_schedule,
        optimizer,
        num_warmup_steps=args.warmup_steps * accelerator.num_processes,
        num_training_steps=args.max_steps * accelerator.num_processes,
    )
    batches = training_batches(args.data, model.config, accelerator.device, args.batch_size, args.patches_per_face,
                               int(args.memory_budget_gb * 2**30), args.num_workers, args.band_weights)
    objective = build_objective(args, accelerator.device)
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    discriminator_optimizer = None
    if objective is not None and objective.discriminator is not None:
        discriminator_optimizer = torch.optim.AdamW(objective.discriminator.parameters(), lr=args.discriminator_lr,
                                                    betas=(0.5, 0.999))
        objective.discriminator, discriminator_optimizer = accelerator.prepare(
            objective.discriminator, discriminator_optimizer)
    ema.to(accelerator.device)

    step = 0
    if args.resume:
        resume_from = list_checkpoints(checkpoints)[-1:] if args.resume == "latest" else [Path(args.resume)]
        if resume_from:
            step = load_checkpoint(accelerator, ema, resume_from[0])
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
    loss_log = LossLog(output / "losses.jsonl" if accelerator.is_main_process else None)
    model.train()
    while step < args.max_steps:
        batch = next(batches)
        with accelerator.autocast():
            loss = training_loss(model, noise_scheduler, batch, objective=objective)
        accelerator.backward(loss.total)
        accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if discriminator_optimizer is not None:
            loss.terms["discriminator"] = discriminator_step(objective.discriminator, discriminator_optimizer,
                                                             batch["clean"], loss.estimate, accelerator)
        ema.step(model.parameters())
        step += 1
        progress.update(1)
        progress.set_postfix(loss=f"{loss.total.item():.4f}", lr=f"{lr_scheduler.get_last_lr()[0]:.1e}")
        loss_log.add(step, loss.terms)
        if step % args.checkpoint_every == 0:
            save_checkpoint(accelerator, ema, checkpoints, step, args.checkpoints_kept)
        if args.validate_every > 0 and step % args.validate_every == 0:
            validate()
        if args.max_minutes is not None and step % 10 == 0:
            over = torch.tensor(float(time.monotonic() - start > 60 * args.max_minutes), device=accelerator.device)
            if accelerator.reduce(over, reduction="max").item() > 0:
                break
    progress.close()

    save_checkpoint(accelerator, ema, checkpoints, step, args.checkpoints_kept)
    if args.validate_every > 0 and step % args.validate_every != 0:
        validate()
    if accelerator.is_main_process:
        record = {"args": vars(args), "steps": step, "wall_seconds": round(time.monotonic() - start, 1)}
        export_pipeline(accelerator.unwrap_model(model), ema, output / "pipeline", args.prediction_type,
                        args.export_fp16, record)
    accelerator.end_training()
    return 0


def discriminator_step(discriminator, optimizer, clean: torch.Tensor, estimate: torch.Tensor, accelerator) -> float:
    """One hinge-loss step of the patch discriminator: clean patches real, one-step estimates fake.
    Its gradients from the generator's loss are dropped first: they belong to the other player."""
    optimizer.zero_grad(set_to_none=True)
    with accelerator.autocast():
        loss = hinge_discriminator_loss(discriminator(clean), discriminator(estimate.detach()))
    accelerator.backward(loss)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


class LossLog:
    """Means of the loss terms over every ``every`` steps, one JSON line each (``None``: keep nothing)."""

    def __init__(self, path: Path | None, every: int = 50):
        self.path, self.every, self.sums, self.count = path, every, {}, 0

    def add(self, step: int, terms: dict[str, float]) -> None:
        for name, value in terms.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.count += 1
        if step % self.every == 0 and self.path is not None:
            means = {name: round(total / self.count, 5) for name, total in self.sums.items()}
            with open(self.path, "a") as log:
                log.write(json.dumps({"step": step, **means}) + "\n")
            self.sums, self.count = {}, 0


def export_pipeline(model, ema, folder: Path, prediction_type: str, fp16: bool, record: dict) -> None:
    """Save the EMA weights as a ``save_pretrained`` pipeline folder (fp16 on request), with ``record``
    (the run's arguments, steps and time) as ``training_config.json``."""
    final = PatchFusionUNet.from_config(model.config)
    ema.copy_to(final.parameters())
    if fp16:
        final = final.to(torch.float16)
    pipeline = LPIPDiffPipeline(unet=final, scheduler=build_scheduler(prediction_type=prediction_type))
    pipeline.save_pretrained(folder)
    (folder / "training_config.json").write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
