"""Measuring restored faces where they sit in the output photo: their region, their detail.

Used by ``real_photos.py`` beside it and the whole-photo tests to compare a restored photo
with an upscale of its input on the same face pixels.
"""

from __future__ import annotations

import cv2
import numpy as np

from lpipdiff.faces.detail import crop_transform

# Non-local means strength (0..255 units) that clears the degradation presets' noise (sigma up
# to 20) before fine detail is measured (:func:`structure_energy`).
DENOISE_STRENGTH = 10


def output_to_crop(affine: np.ndarray, upscale: float, face_size: int, size: int) -> np.ndarray:
    """Output photo -> aligned ``size`` crop, for a face whose photo -> ``face_size`` crop map is ``affine``.

    Follows facexlib's paste-back, which puts input pixel ``x`` at ``upscale * x + upscale / 2``
    (no offset without upscaling).
    """
    offset = upscale / 2 if upscale > 1 else 0.0
    output_to_input = np.array([[1 / upscale, 0, -offset / upscale], [0, 1 / upscale, -offset / upscale], [0, 0, 1]])
    return (np.vstack([crop_transform(affine, size / face_size), [0, 0, 1]]) @ output_to_input)[:2]


def aligned_crop(photo: np.ndarray, affine: np.ndarray, upscale: float, face_size: int, size: int) -> np.ndarray:
    """The face of an output photo cut out as an aligned ``size`` crop (Lanczos resampling)."""
    to_crop = output_to_crop(affine, upscale, face_size, size)
    return cv2.warpAffine(photo, to_crop, (size, size), flags=cv2.INTER_LANCZOS4, borderMode=cv2.BORDER_REFLECT101)


def face_mask(affine: np.ndarray, upscale: float, face_size: int, shape: tuple[int, ...],
              inner: float = 0.8) -> np.ndarray:
    """Output pixels inside the central ``inner`` part of the aligned face crop (boolean ``HxW``).

    The default 0.8 stays clear of facexlib's seam, which blends over the outer tenth of each side.
    """
    border = (1 - inner) / 2 * face_size
    crop = np.zeros((face_size, face_size), np.uint8)
    crop[round(border) : round(face_size - border), round(border) : round(face_size - border)] = 1
    to_crop = output_to_crop(affine, upscale, face_size, face_size)
    flags = cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP  # the matrix maps output pixels to crop pixels
    return cv2.warpAffine(crop, to_crop, (shape[1], shape[0]), flags=flags).astype(bool)


def laplacian_energy(image: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute Laplacian of the luma (``[0, 1]`` units) over ``mask``: how much fine detail
    an ``HxWx3`` float RGB image has there. It counts noise as detail too."""
    luma = cv2.cvtColor(np.clip(image, 0, 1).astype(np.float32), cv2.COLOR_RGB2GRAY)
    return float(np.abs(cv2.Laplacian(luma, cv2.CV_32F, ksize=1))[mask].mean())


def structure_energy(image: np.ndarray, mask: np.ndarray) -> float:
    """:func:`laplacian_energy` of an RGB float image after non-local means denoising: edges and
    features stay, sensor noise and JPEG speckle go, so it measures fine detail that is not noise
    (and some of a clean photo's finest texture goes with the noise)."""
    bgr = np.ascontiguousarray(np.clip(image, 0, 1)[..., ::-1] * 255).round().astype(np.uint8)
    clean = cv2.fastNlMeansDenoisingColored(bgr, None, DENOISE_STRENGTH, DENOISE_STRENGTH)
    return laplacian_energy(clean[..., ::-1].astype(np.float32) / 255, mask)
