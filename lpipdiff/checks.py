"""Checks of the Python API's arguments that are not images (the pipeline's and FaceRestorer's):
each wrong value is one ``ValueError`` (``TypeError`` for a wrong kind of object) naming the
argument, raised before any work, instead of a failure deep inside torch or facexlib."""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch


def is_real(value) -> bool:
    """A real number (Python, numpy or a 0-d tensor's item), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def check_number(name: str, value, low: float, high: float, low_open: bool = False) -> float:
    if not is_real(value) or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if value < low or value > high or (low_open and value == low):
        raise ValueError(f"{name} must be in {'(' if low_open else '['}{low:g}, {high:g}], got {value:g}")
    return value


def check_generators(generator, batch: int) -> None:
    """``None``, a ``torch.Generator`` or a list of one per image."""
    if generator is None or isinstance(generator, torch.Generator):
        return
    if isinstance(generator, list):
        if len(generator) != batch:
            raise ValueError(f"got {len(generator)} generators for {batch} images")
        wrong = [type(g).__name__ for g in generator if not isinstance(g, torch.Generator)]
        if not wrong:
            return
        raise TypeError(f"generator: a list must hold torch.Generator objects only, got {', '.join(wrong)}")
    hint = f"; for a seed use torch.Generator().manual_seed({generator})" if is_real(generator) else ""
    raise TypeError(f"generator must be a torch.Generator or a list of them, got {type(generator).__name__}{hint}")


def checked_callback_result(result, sample: torch.Tensor) -> torch.Tensor:
    """The sample after diffusers' step callback: it returns a dict, whose ``"sample"`` (if any)
    replaces the sample; anything else is the callback's mistake, said as such."""
    if not isinstance(result, dict):
        raise TypeError(
            f"callback_on_step_end must return a dict (empty to change nothing), got {type(result).__name__}"
        )
    replaced = result.pop("sample", sample)
    if not isinstance(replaced, torch.Tensor) or replaced.shape != sample.shape:
        shape = tuple(replaced.shape) if isinstance(replaced, torch.Tensor) else type(replaced).__name__
        raise ValueError(
            f"callback_on_step_end returned a 'sample' of {shape}; it must be a tensor of shape {tuple(sample.shape)}"
        )
    if not replaced.dtype.is_floating_point:
        raise ValueError(f"callback_on_step_end returned a 'sample' of dtype {replaced.dtype}; expected float")
    return replaced.to(device=sample.device, dtype=sample.dtype)


def checked_template(template, templates: dict) -> np.ndarray:
    """FaceRestorer's ``template``: a name, or 5 (x, y) landmark positions as fractions of the face side."""
    if isinstance(template, str):
        if template not in templates:
            raise ValueError(f"template must be one of {sorted(templates)} or a 5x2 array, got {template!r}")
        return templates[template]
    try:
        array = np.asarray(template, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"template must be a name or a 5x2 array of numbers, got {type(template).__name__}") from None
    if array.shape != (5, 2):
        raise ValueError(f"template must be a 5x2 array (eyes, nose tip, mouth corners), got shape {array.shape}")
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
        raise ValueError("template positions are fractions of the face side: finite numbers in [0, 1]")
    if np.ptp(array[:, 0]) < 1e-3 or np.ptp(array[:, 1]) < 1e-3:
        raise ValueError("template landmarks must not all lie on one line")
    return array


def check_restorer_settings(detector, detectors, upscale, only_largest, min_face_size, detail, max_detail) -> None:
    if not isinstance(detector, str) or detector not in detectors:
        raise ValueError(f"detector must be one of {sorted(detectors)}, got {detector!r}")
    check_number("upscale", upscale, 1, 8)
    check_number("detail", detail, 0, max_detail)
    check_number("min_face_size", min_face_size, 0, 1e6)
    if not isinstance(only_largest, (bool, np.bool_)):
        raise ValueError(f"only_largest must be True or False, got {only_largest!r}")
