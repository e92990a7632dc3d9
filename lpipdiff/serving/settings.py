"""How the demo serves restorations: the model and the limits of one request, read once from the
environment at the demo's edge."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from ..checks import check_device
from ..config.defaults import BACKEND_NAMES, DEFAULT_BACKEND
from ..config.environment import (
    BACKEND_ENV,
    BG_UPSAMPLER_ENV,
    DEVICE_ENV,
    FACE_WEIGHTS_ENV,
    MAX_SECONDS_ENV,
    MAX_WORK_ENV,
    MODEL_ENV,
    from_environment,
)

KIND_NAMES = {str: "text", int: "whole number", float: "number"}


@dataclass(frozen=True)
class ServingSettings:
    """How the demo serves restorations: the model, and the limits that keep one visitor's request
    from blocking the others on a small machine (a free Space has 2 CPU cores).

    Args:
        model: pipeline folder or Hub repo id; ``None``: the bundled model.
        device: ``None``: CUDA when available, else the CPU.
        face_weights: facexlib's detector weights folder; ``None``: facexlib downloads them.
        backend: how the UNet runs (:mod:`lpipdiff.model.backends`); ``"auto"``: the fastest this machine
            supports (torch on a GPU).
        max_work: the work of one request, in UNet patch evaluations (faces x samples x steps x
            patches a step). The bundled model does about 40 a second with torch fp32 and about 80
            with OpenVINO bf16 on the project's 2-core CPU (one evaluation of 9 patches: 0.22 s and
            0.11 s, docs/BENCHMARKS.md), so the heaviest request allowed takes 15-30 s there.
        max_seconds: a request still running after this long is stopped (a busy machine).
        abandoned_after: a request whose client stopped listening this long ago is stopped at its
            next step.
        light_work: requests of at most this much work a face (a step or two of one sample) run in
            a lane of their own, so they never wait behind heavy ones.
        accepted: how many requests Gradio hands over at once (the rest wait in its queue).
        queue_size: beyond this many waiting, requests are refused with "Queue is full".
        max_steps, max_samples: the largest values the controls and the API accept.
        max_upload_mb: the largest upload accepted.
        bg_upsampler: the background upscaler of whole photos (a weights file or folder, or a short
            name such as ``realesrgan-x4``); ``None``: backgrounds are resized plainly. Unavailable
            weights (offline) do not stop the demo: it resizes plainly and says so.
        bg_tile: the upscaler's tile side in pixels (its memory grows with the square).
        bg_work_per_megapixel: the upscaler's work per input megapixel, in the units of
            ``max_work`` (UNet patch evaluations of the same time); counted once per request.
            Real-ESRGAN x4 on 2 CPU cores: about 2500 s a megapixel x 45 patch evaluations a
            second (docs/BENCHMARKS.md), so a CPU Space refuses it under the default ``max_work``;
            on a GPU lower this and raise ``max_work`` to match the GPU's speed.
        paste_work_per_megapixel: whole-photo work at the output's size (the photo upscaled), per
            output megapixel, in the units of ``max_work``: counted for every sample and again for
            every face of it (pasting back), and once for the result (the page's images and PNG).
            About 0.2 s a megapixel on the project's 2-core CPU, 8 patch evaluations' time: a
            1500-pixel photo upscaled 4x (36 megapixels) counts 288 each time, so one sample of it
            fits the default ``max_work`` (about 30 s there) and more are refused.
        max_upscale: the largest output upscale factor a visitor may ask for.
        max_video_seconds: a longer clip is refused before any frame is restored; each frame's
            faces are held to ``max_work`` (the largest kept), and the whole clip to ``max_seconds``.
        aligned_max_side, aligned_max_aspect: in Auto mode an image without a detected face is
            restored as an aligned face only when it looks like one (this small and this square).
    """

    model: str | None = None
    device: str | None = None
    face_weights: str | None = None
    backend: str = DEFAULT_BACKEND
    max_work: int = 1200
    max_seconds: float = 90.0
    abandoned_after: float = 5.0
    light_work: int = 100
    accepted: int = 8
    queue_size: int = 8
    max_steps: int = 50
    max_samples: int = 4
    max_upload_mb: int = 20
    aligned_max_side: int = 512
    aligned_max_aspect: float = 1.5
    bg_upsampler: str | None = None
    bg_tile: int = 256
    bg_work_per_megapixel: int = 115_000
    paste_work_per_megapixel: int = 8
    max_upscale: int = 4
    max_video_seconds: float = 10.0

    def __post_init__(self):
        # Checked at start-up: a wrong device fails only at the first visitor's request otherwise, and
        # facexlib would download its weights into a folder that is not there.
        if self.device is not None:
            try:
                check_device(self.device)
            except ValueError as error:
                raise ValueError(f"ServingSettings.device: {error}") from None
        if self.face_weights is not None and not Path(self.face_weights).expanduser().is_dir():
            raise ValueError(f"ServingSettings.face_weights: {self.face_weights}: no such folder")
        if self.backend not in BACKEND_NAMES:
            raise ValueError(f"ServingSettings.backend must be one of {BACKEND_NAMES}, got {self.backend!r}")
        for field in fields(self):
            value = getattr(self, field.name)
            if field.type in ("int", "float") and (isinstance(value, bool) or not 0 < value < float("inf")):
                raise ValueError(f"ServingSettings.{field.name} must be a positive number, got {value!r}")

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> ServingSettings:
        """Settings from ``LPIPDIFF_*`` variables (unset ones keep their defaults)."""
        read = {
            "model": (MODEL_ENV, str),
            "device": (DEVICE_ENV, str),
            "face_weights": (FACE_WEIGHTS_ENV, str),
            "bg_upsampler": (BG_UPSAMPLER_ENV, str),
            "backend": (BACKEND_ENV, str),
            "max_work": (MAX_WORK_ENV, int),
            "max_seconds": (MAX_SECONDS_ENV, float),
        }
        values = {}
        for name, (variable, kind) in read.items():
            text = from_environment(variable, environ)
            if text is None:
                continue
            try:
                values[name] = kind(text)
            except ValueError:
                raise ValueError(f"${variable} must be a {KIND_NAMES[kind]}, got {text!r}") from None
        return cls(**values)
