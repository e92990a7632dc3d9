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
``face_size / detail`` pixels across the face. Faces at or below the model's size keep facexlib's paste-back untouched.
"""

from __future__ import annotations

import cv2
import numpy as np

# The input supplies every band finer than ``face_size / detail`` pixels across the face.
# 1: all of its detail above the model's resolution, the only setting with nothing softer
# than the input there; between 0 and 1 only its finest bands; 0: none (the restoration
# alone, scaled up: softer than the input). Above 1 (input bands inside the model's own) was
# measured and rejected: less detail and more of the input's damage (docs/RESULTS.md).
DEFAULT_DETAIL = 1.0
MAX_DETAIL = 1.0


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


def paste_faces(helper, restored_faces: list[np.ndarray], detail: float = DEFAULT_DETAIL) -> np.ndarray:
    """Paste restored faces back into the upscaled photo with facexlib's seam mask.

    ``helper`` is a ``FaceRestoreHelper`` after ``align_warp_face``; ``restored_faces`` are
    its crops restored (BGR uint8, ``face_size``). Faces at or below the model's size in the
    output (and every face when ``detail`` is 0) go through one ``paste_faces_to_input_image``
    call exactly as before; each larger face is then pasted at its own output size with the
    input's detail finer than ``face_size / detail`` pixels across the face.
    Returns the BGR uint8 photo.
    """
    model_size = helper.face_size[0]
    scales = [output_scale(affine, helper.upscale_factor) for affine in helper.affine_matrices]
    larger = [detail > 0 and scale > 1 for scale in scales]
    helper.get_inverse_affine()
    helper.restored_faces = [face for face, large in zip(restored_faces, larger) if not large]
    helper.inverse_affine_matrices = [m for m, large in zip(helper.inverse_affine_matrices, larger) if not large]
    photo = helper.paste_faces_to_input_image()
    try:
        for face, affine, scale, large in zip(restored_faces, helper.affine_matrices, scales, larger):
            if not large:
                continue
            size = round(model_size * scale)
            to_crop = crop_transform(affine, size / model_size)
            # One Lanczos resampling of the input, as for facexlib's background; reflected
            # borders keep the image edge from leaking a step into the detail band.
            input_crop = cv2.warpAffine(helper.input_img, to_crop, (size, size), flags=cv2.INTER_LANCZOS4,
                                        borderMode=cv2.BORDER_REFLECT101)
            helper.face_size = (size, size)  # the paste's seam mask is built at this size
            helper.restored_faces = [np.clip(keep_input_detail(face, input_crop, detail), 0, 255)]
            helper.inverse_affine_matrices = [cv2.invertAffineTransform(to_crop) * helper.upscale_factor]
            # The photo so far is already at the output size, where facexlib's resize is a copy.
            photo = helper.paste_faces_to_input_image(upsample_img=photo)
    finally:
        helper.face_size = (model_size, model_size)
    return photo
