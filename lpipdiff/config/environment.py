"""Configuration from the environment, read in one place and only at the edges (the CLI's defaults
and the demo's :class:`~lpipdiff.serving.settings.ServingSettings`); everything below them receives
plain arguments."""

from __future__ import annotations

import os
from collections.abc import Mapping

MODEL_ENV = "LPIPDIFF_MODEL"  # a pipeline folder or Hub repo id instead of the bundled model
DEVICE_ENV = "LPIPDIFF_DEVICE"  # cpu, cuda, ...
FACE_WEIGHTS_ENV = "LPIPDIFF_FACEXLIB_WEIGHTS"  # facexlib's detector weights folder (offline machines)
BG_UPSAMPLER_ENV = "LPIPDIFF_BG_UPSAMPLER"  # whole photos: the background upscaler (file, folder or short name)
BACKEND_ENV = "LPIPDIFF_BACKEND"  # how the UNet runs: auto, torch, torch-bf16, onnxruntime, openvino
MAX_WORK_ENV = "LPIPDIFF_MAX_WORK"
MAX_SECONDS_ENV = "LPIPDIFF_MAX_SECONDS"


def from_environment(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The variable's value, or None when it is unset or empty."""
    value = (os.environ if environ is None else environ).get(name, "")
    return value or None


class EnvironmentValue(str):
    """A command-line default read from the environment variable ``variable``: when it is wrong the
    message names the variable, not an option the user never typed."""

    variable: str

    def __new__(cls, value: str, variable: str):
        text = super().__new__(cls, value)
        text.variable = variable
        return text


def environment_default(name: str, environ: Mapping[str, str] | None = None) -> EnvironmentValue | None:
    """:func:`from_environment`'s value, marked with the variable it came from."""
    value = from_environment(name, environ)
    return None if value is None else EnvironmentValue(value, name)
