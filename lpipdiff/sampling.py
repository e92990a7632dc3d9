"""Sampling choices shared by every command that restores faces (CLI, evaluation, training
validation, demo, benchmarks): defaults, schedulers, choice lists, the CLI options and the
seeded restore loop. One place, so that no command imports another for them."""

from __future__ import annotations

import argparse

import numpy as np
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler

from .argtypes import device_argument
from .degradation import PRESETS
from .patches import FUSION_MODES
from .pipeline_lpipdiff import DEFAULT_FIDELITY, DEFAULT_FUSION, DEFAULT_STEPS, DEFAULT_STRENGTH

SCHEDULERS = {
    "ddim": DDIMScheduler,
    "dpm": DPMSolverMultistepScheduler,
    "unipc": UniPCMultistepScheduler,
}
DEFAULT_SCHEDULER = "ddim"
PRESET_NAMES = tuple(PRESETS)
# torch's generators take 64-bit seeds; the room above this is for ``restore_all``'s seed + i.
MAX_SEED = 2**62

__all__ = [
    "DEFAULT_FIDELITY", "DEFAULT_FUSION", "DEFAULT_SCHEDULER", "DEFAULT_STEPS", "DEFAULT_STRENGTH", "FUSION_MODES",
    "MAX_SEED", "PRESET_NAMES", "SCHEDULERS", "add_sampling_arguments", "check_seed", "default_scheduler",
    "fidelity_argument", "restore_all", "sampling_kwargs", "seed_argument", "swap_scheduler",
]


def check_seed(seed) -> int:
    """``seed`` as an int, or a ValueError that says what a seed may be."""
    try:
        value = int(seed)
    except (TypeError, ValueError, OverflowError):
        value = None
    if value is None or value != seed or not 0 <= value <= MAX_SEED:
        raise ValueError(f"a seed is a whole number from 0 to 2**62, got {seed!r}")
    return value


def seed_argument(text: str) -> int:
    """argparse type of ``--seed``."""
    try:
        return check_seed(int(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def default_scheduler(prediction_type: str = "v_prediction") -> DDIMScheduler:
    """DDIM over a cosine schedule. Trailing spacing makes even a few steps start at the last
    (pure-noise) timestep, and clipping is off because residual samples exceed [-1, 1]."""
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type=prediction_type,
        clip_sample=False,
        timestep_spacing="trailing",
    )


def swap_scheduler(pipeline, name: str):
    """Replace the pipeline's scheduler by another kind built from the same config."""
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {sorted(SCHEDULERS)}")
    pipeline.scheduler = SCHEDULERS[name].from_config(pipeline.scheduler.config)
    return pipeline


def fidelity_argument(text: str) -> float | None:
    """``--fidelity``: a number in [0, 1], or ``none`` for the expert path (steps and strength only)."""
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1] or 'none', got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    """The model and sampler options of every command that restores faces."""
    parser.add_argument("--model", default=None, help="pipeline folder or Hub repo id (default: bundled model)")
    parser.add_argument("--fidelity", type=fidelity_argument, default=DEFAULT_FIDELITY,
                        help=f"0..1 (default {DEFAULT_FIDELITY}): 1 is the model's mean estimate (most faithful, "
                             "smooth); lower samples more detail from it (sharper, drifts from the person); "
                             "'none': experts' path, --steps from noise or --strength from the noised input")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                        help="steps of the schedule (with --fidelity f, about (1 - f) * steps of them run)")
    parser.add_argument("--strength", type=float, default=DEFAULT_STRENGTH,
                        help="with --fidelity none: 1.0 from noise; lower: start from the noised input")
    parser.add_argument("--stride", type=int, default=None, help="patch stride (default: half the patch)")
    parser.add_argument("--fusion", default=DEFAULT_FUSION, choices=FUSION_MODES)
    parser.add_argument("--seed", type=seed_argument, default=0)
    parser.add_argument("--scheduler", default=DEFAULT_SCHEDULER, choices=sorted(SCHEDULERS))
    parser.add_argument("--device", type=device_argument, default=None,
                        help="cpu, cuda, ... (default: cuda when available)")


def sampling_kwargs(args: argparse.Namespace) -> dict:
    """The pipeline keywords that :func:`add_sampling_arguments` options stand for."""
    return dict(fidelity=args.fidelity, num_inference_steps=args.steps, strength=args.strength,
                patch_stride=args.stride, fusion=args.fusion)


def restore_all(pipeline, degraded: list[np.ndarray], batch_size: int, seed: int, **sampling) -> list[np.ndarray]:
    """Restore faces in batches; face i always gets seed + i, whatever the batching."""
    restored = []
    for start in range(0, len(degraded), batch_size):
        chunk = degraded[start : start + batch_size]
        generators = [torch.Generator().manual_seed(seed + start + i) for i in range(len(chunk))]
        restored.extend(pipeline(chunk, generator=generators, output_type="np", **sampling).images)
    return restored
