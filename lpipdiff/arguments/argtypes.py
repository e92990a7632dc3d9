"""argparse ``type=`` functions for the CLI: a bad value is one ``error:`` line and exit status 2
from argparse itself, before any model loads or file is written, never a traceback from deep code.

The values' rules are :mod:`lpipdiff.checks`' (the Python API's too): these only turn text into a
value and a check's ``ValueError`` into argparse's error."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..checks import check_device, check_fidelity, check_number, check_seed, check_whole_number

Invalid = argparse.ArgumentTypeError


def whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise Invalid(f"expected a whole number, got {text!r}") from None


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise Invalid(f"expected a number, got {text!r}") from None


def checked(check, *args):
    """``check(*args)``, its ValueError as argparse's error."""
    try:
        return check(*args)
    except ValueError as error:
        raise Invalid(str(error)) from None


def naming_the_variable(argument_type):
    """``argument_type`` whose message, for a default read from the environment
    (:class:`~lpipdiff.config.environment.EnvironmentValue`), begins with the variable's name."""
    def convert(text: str):
        try:
            return argument_type(text)
        except Invalid as error:
            variable = getattr(text, "variable", None)
            raise Invalid(f"${variable}: {error}" if variable else str(error)) from None

    convert.__name__ = argument_type.__name__  # argparse names the type in some messages
    return convert


def one_of(choices):
    """One of ``choices``, checked by the type too: argparse checks ``choices=`` only for typed values,
    never for a default (which may come from the environment)."""
    def choice(text: str) -> str:
        if text not in choices:
            raise Invalid(f"must be one of {', '.join(choices)}, got {text!r}")
        return text
    return choice


def int_range(low: int, high: int | None = None):
    """A whole number in ``[low, high]`` (no upper bound when ``high`` is None)."""

    def parse(text: str) -> int:
        return checked(check_whole_number, "", whole_number(text), low, high)

    parse.__name__ = "whole number"  # argparse names the type in its own messages
    return parse


positive_int = int_range(1)
non_negative_int = int_range(0)


def float_range(low: float, high: float | None = None, low_open: bool = False):
    """A finite number in ``[low, high]`` (``(low, high]`` with ``low_open``)."""

    def parse(text: str) -> float:
        return checked(check_number, "", number(text), low, high, low_open)

    parse.__name__ = "number"
    return parse


def seed_argument(text: str) -> int:
    """``--seed``."""
    return checked(check_seed, whole_number(text))


def fidelity_argument(text: str) -> float | None:
    """``--fidelity``: a number, or ``none`` for the experts' path (steps and strength only)."""
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise Invalid(f"expected a number or 'none', got {text!r}") from None
    return checked(check_fidelity, value)


def device_argument(text: str) -> str:
    """``cpu``, ``cuda``, ``cuda:N`` or ``mps``, and only one this machine has."""
    return checked(check_device, text)


def existing_folder(text: str) -> str:
    from ..io.images import SPECIAL_FILE, special_file  # torch and OpenCV: not for --help

    path = Path(text).expanduser()
    if not path.exists():
        raise Invalid(f"{text}: no such folder")
    if special_file(path):
        raise Invalid(f"{text}: {SPECIAL_FILE}, not a folder")
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
