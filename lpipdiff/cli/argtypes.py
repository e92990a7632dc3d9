"""argparse ``type=`` functions for the CLI: a bad value is one ``error:`` line and exit status 2
from argparse itself, before any model loads or file is written, never a traceback from deep code."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

Invalid = argparse.ArgumentTypeError


def whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise Invalid(f"expected a whole number, got {text!r}") from None


def int_range(low: int, high: int | None = None):
    """A whole number in ``[low, high]`` (no upper bound when ``high`` is None)."""

    def parse(text: str) -> int:
        value = whole_number(text)
        if value < low or (high is not None and value > high):
            bound = f"from {low} to {high}" if high is not None else f"of at least {low}"
            raise Invalid(f"must be a whole number {bound}, got {text}")
        return value

    parse.__name__ = "whole number"  # argparse names the type in its own messages
    return parse


positive_int = int_range(1)
non_negative_int = int_range(0)


def float_range(low: float, high: float | None = None, low_open: bool = False):
    """A finite number in ``[low, high]`` (``(low, high]`` with ``low_open``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise Invalid(f"expected a number, got {text!r}") from None
        too_low = value <= low if low_open else value < low
        if not math.isfinite(value) or too_low or (high is not None and value > high):
            left = "(" if low_open else "["
            raise Invalid(f"must be a number in {left}{low:g}, {high:g}], got {text}" if high is not None
                          else f"must be a finite number {'above' if low_open else 'of at least'} {low:g}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


def device_argument(text: str) -> str:
    """``cpu``, ``cuda``, ``cuda:N`` or ``mps``, and only one this machine has."""
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise Invalid(f"unknown device {text!r}; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cpu":
        return text
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise Invalid(f"{text}: this machine has no CUDA GPU (or torch was built without CUDA); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise Invalid(f"{text}: this machine has {torch.cuda.device_count()} CUDA GPU(s), numbered from 0")
        return text
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise Invalid(f"{text}: Apple's MPS is not available on this machine; use --device cpu")
        return text
    raise Invalid(f"unsupported device {text!r}; use cpu, cuda, cuda:N or mps")


def existing_folder(text: str) -> str:
    path = Path(text).expanduser()
    if not path.exists():
        raise Invalid(f"{text}: no such folder")
    if not path.is_dir():
        raise Invalid(f"{text}: is a file, not a folder")
    return text


def image_folder(text: str) -> str:
    """A folder with at least one image directly inside it."""
    from ..io.images import IMAGE_EXTENSIONS, list_images

    existing_folder(text)
    if not list_images(Path(text).expanduser()):
        raise Invalid(f"{text}: the folder has no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return text


def training_data(text: str) -> str:
    """``train --data``: a folder of images, or a pack file written by ``python -m lpipdiff.training.data pack``."""
    path = Path(text).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".npz":
            raise Invalid(f"{text}: expected a folder of faces or a .npz pack (python -m lpipdiff.training.data pack)")
        return text
    return image_folder(text)


def output_folder(text: str) -> str:
    """A folder that is or can become an output folder: not an existing file."""
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise Invalid(f"{text}: exists and is not a folder")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise Invalid(f"{text}: {parent} is a file, so the folder cannot be created")
            break
    return text


def report_errors(handler, args) -> int:
    """Run a command; the errors a user caused and can fix become one ``error:`` line (status 1 when
    outputs were kept, 2 for a model that cannot be used), never a traceback."""
    from ..io.images import InvalidImageError
    from ..io.safe_files import OutputExistsError
    from ..model.loading import ModelLoadError

    try:
        return handler(args)
    except OutputExistsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (ModelLoadError, InvalidImageError, UsageError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


class UsageError(ValueError):
    """Arguments that are fine one by one but not together; the message says which."""


def check_training_arguments(args) -> None:
    """What argparse cannot check one argument at a time, and a run folder that is not this run's."""
    from ..io.safe_files import OutputExistsError

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
