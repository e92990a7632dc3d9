"""Checks of argument values: each wrong value is one ``ValueError`` (``TypeError`` for a wrong kind
of object) naming the argument, raised before any work, instead of a failure deep inside torch or
facexlib. The Python API calls them directly; the command line's argparse types wrap them
(:mod:`lpipdiff.arguments.argtypes`), so both say the same thing about the same value. Imports neither
torch nor numpy until a check needs them, so that ``lpipdiff --help`` answers at once.
"""

from __future__ import annotations

import math
import numbers

from .config.defaults import MAX_SEED


class UsageError(ValueError):
    """Arguments that are fine one by one but not together; the message says which."""


def is_real(value) -> bool:
    """A real number (Python, numpy or a 0-d tensor's item), not a bool (numpy's bool is no number)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_whole_number(value) -> bool:
    """A Python or numpy integer, not a bool (``2.0`` is a float: callers convert form values first)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _bound(value: float) -> str:
    """A bound as people write it: 2**62 rather than its 19 digits."""
    if isinstance(value, int) and value >= 2**32 and value & (value - 1) == 0:
        return f"2**{value.bit_length() - 1}"
    return f"{value:g}"


def _subject(name: str) -> str:
    return f"{name} must" if name else "must"


def _shown(value) -> str:
    """A wrong value as the message shows it: numbers plainly (numpy's as Python's), the rest as repr."""
    if is_whole_number(value):
        return repr(int(value))
    return repr(float(value)) if is_real(value) else repr(value)


def check_number(name: str, value, low: float, high: float | None = None, low_open: bool = False) -> float:
    """``value`` as a float: a finite real number in ``[low, high]`` (``(low, high]`` with
    ``low_open``; no upper bound when ``high`` is None). ``name`` leads the message (an argparse
    type passes ``""``: argparse names the option itself)."""
    inside = is_real(value) and math.isfinite(float(value))
    inside = inside and (low < value if low_open else low <= value) and (high is None or value <= high)
    if not inside:
        if high is None:
            where = f"{'above' if low_open else 'of at least'} {_bound(low)}"
        else:
            where = f"in {'(' if low_open else '['}{_bound(low)}, {_bound(high)}]"
        raise ValueError(f"{_subject(name)} be a number {where}, got {_shown(value)}")
    return float(value)


def check_whole_number(name: str, value, low: int, high: int | None = None) -> int:
    """``value`` as an int: a whole number (see :func:`is_whole_number`) in ``[low, high]`` (no upper
    bound when ``high`` is None)."""
    if not is_whole_number(value) or value < low or (high is not None and value > high):
        where = f"from {_bound(low)} to {_bound(high)}" if high is not None else f"of at least {_bound(low)}"
        raise ValueError(f"{_subject(name)} be a whole number {where}, got {_shown(value)}")
    return int(value)


def check_device(text: str) -> str:
    """A device this machine has: ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (checked before a model is
    loaded onto it, where torch would fail with its own words, or not at all until the first use)."""
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"unknown device {text!r}; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cpu":
        return text
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{text}: this machine has no CUDA GPU (or torch was built without CUDA); use cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"{text}: this machine has {torch.cuda.device_count()} CUDA GPU(s), numbered from 0")
        return text
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"{text}: Apple's MPS is not available on this machine; use cpu")
        return text
    raise ValueError(f"unsupported device {text!r}; use cpu, cuda, cuda:N or mps")


def check_seed(seed) -> int:
    """A seed: a whole number from 0 to ``MAX_SEED`` (the room above is for "seed + face index")."""
    return check_whole_number("seed", seed, 0, MAX_SEED)


def check_strength(strength) -> float:
    """``strength`` in (0, 1]: 1 samples from pure noise, lower from the input noised part of the way."""
    return check_number("strength", strength, 0.0, 1.0, low_open=True)


def check_fidelity(fidelity) -> float | None:
    """``fidelity`` in [0, 1], or None for the experts' path (steps and strength only)."""
    return None if fidelity is None else check_number("fidelity", fidelity, 0.0, 1.0)


def sampling_path(fidelity, strength) -> tuple[float | None, float]:
    """The rule between ``fidelity`` and ``strength``, written only here: ``(fidelity, strength)``
    as a call runs them, each checked.

    A strength below 1 starts from the degraded input noised part of the way (the image-to-image
    path); a fidelity starts from the posterior mean, so it does not apply there and comes back as
    None. Strength 1 keeps the fidelity as given.
    """
    strength, fidelity = check_strength(strength), check_fidelity(fidelity)
    return (None if strength < 1.0 else fidelity), strength


def check_generators(generator, batch: int) -> None:
    """``None``, a ``torch.Generator`` or a list of one per image."""
    import torch

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


def checked_callback_result(result, sample):
    """The sample after diffusers' step callback: it returns a dict, whose ``"sample"`` (if any)
    replaces the sample; anything else is the callback's mistake, said as such."""
    import torch

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


def checked_template(template, templates: dict):
    """FaceRestorer's ``template``: a name, or 5 (x, y) landmark positions as fractions of the face side."""
    import numpy as np

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


def checked_background(background, height: int, width: int):
    """``FaceRestorer.restore``'s ``background``: True or False, or the upscaled photo itself (float
    RGB in [0, 1], ``height`` x ``width``), which goes under the faces as it is, so a wrong one would
    be a wrong photo rather than an error."""
    import numpy as np

    if isinstance(background, (bool, np.bool_)):
        return bool(background)
    if not isinstance(background, np.ndarray):
        raise TypeError(f"background must be True, False or the upscaled photo as a numpy array, got "
                        f"{type(background).__name__}")
    expected = (height, width, 3)
    if background.shape != expected:
        raise ValueError(f"the upscaled background is {background.shape}, expected {expected}")
    if background.dtype.kind != "f":
        raise ValueError(f"the upscaled background must be float RGB in [0, 1], got dtype {background.dtype}")
    if not np.isfinite(background).all():
        raise ValueError("the upscaled background holds NaN or infinite values")
    if background.min() < 0 or background.max() > 1:
        raise ValueError(f"the upscaled background must lie in [0, 1], got values in "
                         f"[{background.min():.3g}, {background.max():.3g}]")
    return background


def check_restorer_settings(detector, detectors, upscale, only_largest, min_face_size, detail, max_detail) -> None:
    import numpy as np

    if not isinstance(detector, str) or detector not in detectors:
        raise ValueError(f"detector must be one of {sorted(detectors)}, got {detector!r}")
    check_number("upscale", upscale, 1, 8)
    check_number("detail", detail, 0, max_detail)
    check_number("min_face_size", min_face_size, 0, 1e6)
    if not isinstance(only_largest, (bool, np.bool_)):
        raise ValueError(f"only_largest must be True or False, got {only_largest!r}")
