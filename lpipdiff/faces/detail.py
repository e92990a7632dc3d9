"""Faces larger than the model: keep the input's own detail above the model's resolution.

The model restores every face at its ``face_size`` (128 px for the bundled model). Pasted
back as it is, a face that covers more pixels than that in the output photo is the
restoration scaled up: it has nothing above the model's resolution, so it comes back softer
than a plain upscale of the input whenever the input had finer detail (eyes, lashes, lips).

Such a face is therefore rebuilt at its own output size as a two-band Laplacian pyramid:
the band a ``face_size`` image can hold comes from the restoration, the band above it from
the same aligned crop of the input, resampled with the Lanczos filter facexlib uses for the
background. The split is ``image = up(down(image)) + (image - up(down(image)))``, so a model
that returned its input unchanged would give back exactly that crop of the upscaled input,
and above the model's resolution the face matches the background it is blended into.
``detail`` (0..1) moves the split up: the input supplies everything finer than
``face_size / detail`` pixels across the face. Faces at or below the model's size keep facexlib's
paste-back untouched (:meth:`lpipdiff.faces.face_helper.FaceHelper.paste`).
"""

from __future__ import annotations

import cv2
import numpy as np

from ..config.defaults import DEFAULT_DETAIL


def output_scale(affine: np.ndarray, upscale: float) -> float:
    """Output-photo pixels per pixel of the model's face crop (``affine``: photo -> crop)."""
    return float(upscale / np.sqrt(abs(np.linalg.det(affine[:, :2]))))


def crop_transform(affine: np.ndarray, ratio: float) -> np.ndarray:
    """``affine`` (photo -> face crop) for a crop ``ratio`` times as large.

    Pixel centres follow ``cv2.resize``, so ``cv2.resize(crop, larger_size)`` lands on the
    larger crop pixel for pixel.
    """
    offset = (ratio - 1) / 2
    scaling = np.array([[ratio, 0, offset], [0, ratio, offset], [0, 0, 1]])
    return (scaling @ np.vstack([affine, [0, 0, 1]]))[:2]


def low_band(image: np.ndarray, model_size: int) -> np.ndarray:
    """What a ``model_size`` image holds of ``image``, brought back to ``image``'s size."""
    height, width = image.shape[:2]
    small = cv2.resize(image, (model_size, model_size), interpolation=cv2.INTER_AREA)  # averages: no aliasing
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LANCZOS4)


def keep_input_detail(restored: np.ndarray, input_crop: np.ndarray, detail: float = DEFAULT_DETAIL) -> np.ndarray:
    """The restored face at ``input_crop``'s (larger) size plus the crop's bands finer than
    ``face_size / detail`` pixels across the face (``detail`` in 0..1). Float arrays in the
    inputs' value range; not clipped."""
    model_size = restored.shape[0]
    size = input_crop.shape[1], input_crop.shape[0]
    restored, input_crop = restored.astype(np.float32), input_crop.astype(np.float32)
    cutoff = model_size / detail if detail > 0 else np.inf
    upscaled = cv2.resize(restored, size, interpolation=cv2.INTER_LANCZOS4)
    if cutoff >= min(size):
        return upscaled
    return upscaled + input_crop - low_band(input_crop, round(cutoff))
