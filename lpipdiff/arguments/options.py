"""The command-line options every restoring command shares (restore, evaluate, the benchmarks),
and their conversion into a :class:`~lpipdiff.model.sampling.SamplingOptions` at the command's edge.

Imports nothing heavy, so that ``lpipdiff --help`` answers at once.
"""

from __future__ import annotations

import argparse

from ..config import defaults
from ..config.environment import (
    BACKEND_ENV,
    BG_UPSAMPLER_ENV,
    DEVICE_ENV,
    FACE_WEIGHTS_ENV,
    MODEL_ENV,
    environment_default,
    from_environment,
)
from .argtypes import (
    Invalid,
    device_argument,
    existing_folder,
    fidelity_argument,
    int_range,
    naming_the_variable,
    one_of,
    seed_argument,
)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's help shows its default (unless the help already says it, or the option is a flag
    or required); descriptions keep their line breaks."""

    def _get_help_string(self, action):
        help = action.help or ""
        silent = "default" in help or action.required or action.nargs == 0 or action.default is argparse.SUPPRESS
        return help if silent or not action.option_strings else f"{help} (default: %(default)s)"


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Which model, on which device (defaults from the environment, read here at the edge)."""
    parser.add_argument("--model", default=from_environment(MODEL_ENV),
                        help=f"pipeline folder or Hub repo id (default: ${MODEL_ENV}, else the bundled model)")
    parser.add_argument("--device", type=naming_the_variable(device_argument), default=environment_default(DEVICE_ENV),
                        help=f"cpu, cuda, cuda:1, ... (default: ${DEVICE_ENV}, else cuda when available)")
    parser.add_argument("--backend", default=environment_default(BACKEND_ENV) or defaults.DEFAULT_BACKEND,
                        type=naming_the_variable(one_of(defaults.BACKEND_NAMES)), choices=defaults.BACKEND_NAMES,
                        help=f"how the UNet runs; auto: the fastest this machine supports, torch on a GPU "
                             f"(default: ${BACKEND_ENV}, else auto)")


def add_face_weights_argument(parser: argparse.ArgumentParser) -> None:
    """Where facexlib's detector weights are (whole photos)."""
    parser.add_argument("--face-weights", type=existing_folder, default=None,
                        help=f"whole photos: facexlib's weights folder (default: ${FACE_WEIGHTS_ENV}, else facexlib "
                             "downloads them)")


def add_bg_upsampler_arguments(parser: argparse.ArgumentParser) -> None:
    """The background upscaler of whole photos (lpipdiff.faces.upscaler)."""
    parser.add_argument("--bg-upsampler", default=None, metavar="MODEL",
                        help="whole-photo: upscale the background with this model: a weights file or folder spandrel "
                             "loads (safetensors, or a weights-only .pth), or realesrgan-x4 / realesrgan-x2 "
                             f"(downloaded once into the Hugging Face cache) (default: ${BG_UPSAMPLER_ENV} for whole "
                             "photos, else plain Lanczos resizing)")
    parser.add_argument("--bg-tile", type=int_range(32, 4096), default=defaults.DEFAULT_BG_TILE,
                        help="whole-photo: the background upscaler's tile side in pixels (memory grows with its "
                             "square)")


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    """The model and sampler options of every command that restores faces."""
    add_model_arguments(parser)
    parser.add_argument("--fidelity", type=fidelity_argument, default=defaults.DEFAULT_FIDELITY,
                        help="0..1: 1 is the model's mean estimate (most faithful, smooth); lower samples more "
                             "detail from it (sharper, drifts from the person); 'none': the experts' path, --steps "
                             "from noise or --strength from the noised input")
    parser.add_argument("--steps", type=int, default=defaults.DEFAULT_STEPS,
                        help="steps of the schedule (with --fidelity f, about (1 - f) * steps of them run)")
    parser.add_argument("--strength", type=float, default=defaults.DEFAULT_STRENGTH,
                        help="below 1: start from the noised input instead (the experts' path; --fidelity then "
                             "does not apply)")
    parser.add_argument("--stride", type=int, default=None,
                        help="patch stride in pixels; smaller: more overlap, slower (default: half the patch)")
    parser.add_argument("--fusion", default=defaults.DEFAULT_FUSION, choices=defaults.FUSION_MODES,
                        help="how overlapping patches are weighted: window (no seams) or uniform (plain mean)")
    parser.add_argument("--scheduler", default=defaults.DEFAULT_SCHEDULER, choices=defaults.SCHEDULER_NAMES,
                        help="the diffusers scheduler that takes the denoising steps")
    parser.add_argument("--seed", type=seed_argument, default=0,
                        help="random seed; face i of a run is sampled with SEED + i (each file of restore: SEED)")


def face_weights(args: argparse.Namespace) -> str | None:
    """``--face-weights``, else ``$LPIPDIFF_FACEXLIB_WEIGHTS`` (read here, at the command's edge, when
    a whole photo needs it, and checked as the option is: a missing folder would have facexlib
    download into it)."""
    from ..checks import UsageError

    if args.face_weights:
        return args.face_weights
    folder = environment_default(FACE_WEIGHTS_ENV)
    try:
        return folder and naming_the_variable(existing_folder)(folder)
    except Invalid as error:
        raise UsageError(str(error)) from None


def bg_upsampler(args: argparse.Namespace) -> str | None:
    """``--bg-upsampler``, else ``$LPIPDIFF_BG_UPSAMPLER`` for whole photos: the variable configures
    every whole-photo run of a machine and has no say over aligned faces, which have no background."""
    if args.bg_upsampler or not getattr(args, "whole_photo", True):
        return args.bg_upsampler
    return from_environment(BG_UPSAMPLER_ENV)


def sampling_options(args: argparse.Namespace):
    """The :class:`SamplingOptions` the :func:`add_sampling_arguments` options stand for (a
    ValueError says which value is wrong)."""
    from ..model.sampling import SamplingOptions

    return SamplingOptions(fidelity=args.fidelity, steps=args.steps, strength=args.strength, stride=args.stride,
                           fusion=args.fusion, scheduler=args.scheduler, seed=args.seed)
