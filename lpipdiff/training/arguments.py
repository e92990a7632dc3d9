"""Checks of ``lpipdiff train``'s arguments that argparse cannot make one argument at a time."""

from __future__ import annotations

from pathlib import Path

from ..checks import UsageError
from ..io.safe_files import OutputExistsError
from .perceptual import MIN_IMAGE_SIZE as PERCEPTUAL_MIN_SIZE


def check_training_arguments(args) -> None:
    """What argparse cannot check one argument at a time, and a run folder that is not this run's."""
    if args.patch_size > args.face_size:
        raise UsageError(f"--patch-size {args.patch_size} must not exceed --face-size {args.face_size}")
    try:
        channels = [int(c) for c in args.channels.split(",")]
        attention = [int(i) for i in args.attention_levels.split(",") if i.strip() != ""]
    except ValueError:
        raise UsageError("--channels and --attention-levels are comma-separated whole numbers") from None
    if not channels or min(channels) < 1:
        raise UsageError(f"--channels must be positive whole numbers, got {args.channels}")
    if any(not 0 <= level < len(channels) for level in attention):
        raise UsageError(f"--attention-levels must lie in 0..{len(channels) - 1}, got {args.attention_levels}")
    if args.patch_size % 2 ** (len(channels) - 1):
        raise UsageError(f"--patch-size {args.patch_size} must be divisible by 2**{len(channels) - 1} "
                         f"(the UNet halves it once per level after the first of {len(channels)})")
    if getattr(args, "anchor_weight", 0) > 0 and not args.init_from:
        raise UsageError("--anchor-weight keeps the one-step estimate near the --init-from model's; name that model")
    if getattr(args, "perceptual_weight", 0) > 0 and args.patch_size < PERCEPTUAL_MIN_SIZE:
        raise UsageError(f"--perceptual-weight needs --patch-size of at least {PERCEPTUAL_MIN_SIZE} pixels "
                         f"(the VGG network's depth), got {args.patch_size}")
    if args.init_from:
        from ..model.folder_checks import check_model_folder

        check_model_folder(args.init_from)
    resume = args.resume
    if resume and resume != "latest" and not (Path(resume) / "train_state.json").is_file():
        raise UsageError(f"--resume {resume}: not a checkpoint folder (no train_state.json); use 'latest' or one")
    output = Path(args.output)
    if not resume and not getattr(args, "overwrite", False) and output.is_dir() and any(output.iterdir()):
        kept = sorted(p.name for p in output.iterdir())
        raise OutputExistsError(
            f"{output} holds files of another run ({', '.join(kept[:3])}{' ...' if len(kept) > 3 else ''}); "
            "they were kept: pass --resume latest to continue it, --overwrite to start over in it, or another --output"
        )
