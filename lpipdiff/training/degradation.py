"""The blind-face degradation model used for training and for synthetic test sets.

    y = { [ (x * k_sigma) downsampled by r + n_delta ] JPEG_q } upsampled back

Ranges are written at the 512-pixel reference scale of the literature (GFPGAN for
``moderate``, CodeFormer stage II / DifFace for ``severe``). The blur sigma, kernel size
and downsampling factor are multiplied by ``face_size / 512``: then the low-resolution
image has the same number of pixels (``512 / r``) at every face size, and noise and JPEG
act on the same grid, so degrading a 128-pixel face loses what degrading the same face at
512 and shrinking it to 128 loses (``tests/test_degradation.py`` checks this).
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from ..checks import check_whole_number
from ..io.images import to_uint8

REFERENCE_SIZE = 512


@dataclasses.dataclass(frozen=True)
class DegradationPreset:
    """Parameter ranges of one degradation level, at the 512-pixel reference scale."""

    blur_sigma: tuple[float, float]
    kernel_size: int
    anisotropic_prob: float
    downscale: tuple[float, float]
    noise: tuple[float, float]  # Gaussian noise std, in 0..255 units
    jpeg_quality: tuple[int, int]
    color_jitter_prob: float
    color_jitter_shift: float  # per-channel shift, in 0..255 units
    grayscale_prob: float


PRESETS: dict[str, DegradationPreset] = {
    "moderate": DegradationPreset(
        blur_sigma=(0.1, 10.0),
        kernel_size=41,
        anisotropic_prob=0.5,
        downscale=(0.8, 8.0),
        noise=(0.0, 20.0),
        jpeg_quality=(60, 100),
        color_jitter_prob=0.3,
        color_jitter_shift=20.0,
        grayscale_prob=0.01,
    ),
    "severe": DegradationPreset(
        blur_sigma=(1.0, 15.0),
        kernel_size=41,
        anisotropic_prob=0.5,
        downscale=(4.0, 32.0),
        noise=(0.0, 20.0),
        jpeg_quality=(30, 80),
        color_jitter_prob=0.3,
        color_jitter_shift=20.0,
        grayscale_prob=0.01,
    ),
}


def blur_kernel_size(preset: DegradationPreset, face_size: int) -> int:
    """The preset's blur kernel side at ``face_size``: scaled like sigma, odd, at least 3."""
    return max(3, int(round(preset.kernel_size * face_size / REFERENCE_SIZE)) | 1)


def image_scale_side(height: int, width: int) -> int:
    """The face size to degrade a whole ``height`` x ``width`` image at: the side of the square with
    its pixel count. The longest side would grow the blur kernel (and the time, with its square)
    with the image's length alone: a 60000x8 strip took 91 s."""
    return max(1, round(math.sqrt(height * width)))


def trim_kernel(kernel: np.ndarray, height: int, width: int) -> np.ndarray:
    """The centre of ``kernel``, at most ``2 * side - 1`` along each side of the image: beyond that
    every output pixel already sees the whole (reflected) image along that axis."""
    rows, cols = min(kernel.shape[0], 2 * height - 1), min(kernel.shape[1], 2 * width - 1)
    if (rows, cols) == kernel.shape:
        return kernel
    top, left = (kernel.shape[0] - rows) // 2, (kernel.shape[1] - cols) // 2
    trimmed = kernel[top : top + rows, left : left + cols]
    return trimmed / trimmed.sum()


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float, angle: float) -> np.ndarray:
    """A normalised (an)isotropic Gaussian kernel of odd ``size`` rotated by ``angle`` radians."""
    half = size // 2
    ys, xs = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    cos, sin = math.cos(angle), math.sin(angle)
    u = cos * xs + sin * ys
    v = -sin * xs + cos * ys
    kernel = np.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    return (kernel / kernel.sum()).astype(np.float32)


class Degradation:
    """Random degradation of aligned faces, reproducible from a ``numpy.random.Generator``.

    Args:
        preset: ``"moderate"``, ``"severe"`` or a :class:`DegradationPreset`.
        face_size: side of the faces it will see; blur parameters are scaled by ``face_size / 512``.
        color: whether colour jitter and grayscale conversion may happen (off for test sets
            where colour fidelity is measured separately).

    Call it with an ``HxWx3`` float32 RGB image in ``[0, 1]`` and a generator; it returns an
    image of the same shape and dtype.
    """

    def __init__(self, preset: str | DegradationPreset = "moderate", face_size: int = 512, color: bool = True):
        check_whole_number("face_size", face_size, 1, 2**16)
        if isinstance(preset, str):
            if preset not in PRESETS:
                raise ValueError(f"Unknown degradation preset {preset!r}; choose one of {sorted(PRESETS)}.")
            preset = PRESETS[preset]
        self.preset = preset
        self.face_size = face_size
        self.color = color
        self.scale = face_size / REFERENCE_SIZE
        self.kernel_size = blur_kernel_size(preset, face_size)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        p = self.preset
        height, width = image.shape[:2]
        out = image.astype(np.float32, copy=False)

        sigma = rng.uniform(*p.blur_sigma) * self.scale
        if rng.uniform() < p.anisotropic_prob:
            sigma_y = rng.uniform(*p.blur_sigma) * self.scale
            angle = rng.uniform(0, math.pi)
        else:
            sigma_y, angle = sigma, 0.0
        kernel = gaussian_kernel(self.kernel_size, max(sigma, 1e-3), max(sigma_y, 1e-3), angle)
        kernel = trim_kernel(kernel, height, width)
        out = cv2.filter2D(out, -1, kernel, borderType=cv2.BORDER_REFLECT101)

        factor = rng.uniform(*p.downscale) * self.scale
        small = (max(1, round(width / factor)), max(1, round(height / factor)))
        interpolation = [cv2.INTER_AREA, cv2.INTER_LINEAR, cv2.INTER_CUBIC][rng.integers(3)]
        out = cv2.resize(out, small, interpolation=interpolation)

        noise_std = rng.uniform(*p.noise) / 255.0
        out = out + rng.standard_normal(out.shape).astype(np.float32) * noise_std

        quality = int(rng.integers(p.jpeg_quality[0], p.jpeg_quality[1] + 1))
        out = jpeg_roundtrip(out, quality)

        out = cv2.resize(out, (width, height), interpolation=cv2.INTER_LINEAR)

        # Drawn unconditionally so that the colour switch does not change the other draws.
        jitter = rng.uniform(-1, 1, size=3).astype(np.float32) * p.color_jitter_shift / 255.0
        do_jitter, do_gray = rng.uniform() < p.color_jitter_prob, rng.uniform() < p.grayscale_prob
        if self.color and do_jitter:
            out = out + jitter
        if self.color and do_gray:
            out = np.repeat(cv2.cvtColor(np.clip(out, 0, 1), cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
        return np.clip(out, 0.0, 1.0)


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode an RGB float image in [0, 1] as JPEG at ``quality`` and decode it again."""
    ok, encoded = cv2.imencode(".jpg", to_uint8(image)[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1]
    return decoded.astype(np.float32) / 255.0


def image_seed(seed: int, name: str) -> np.random.Generator:
    """A generator that depends only on ``seed`` and the file name, not on listing order."""
    digest = np.frombuffer(name.encode("utf-8"), dtype=np.uint8)
    return np.random.default_rng([seed, *digest.tolist()])
