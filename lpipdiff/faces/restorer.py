"""Whole photos: detect faces, align them, restore them as one batch and paste them back.

Detection (RetinaFace), 5-landmark alignment and the inverse-affine paste-back with a soft
square mask are facexlib's, behind :class:`lpipdiff.faces.face_helper.FaceHelper`; no face-parsing
model is used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch

from ..checks import check_number, check_restorer_settings, checked_background, checked_template
from ..config.defaults import DEFAULT_DETAIL, DEFAULT_DETECTOR, DETECTOR_NAMES, MAX_DETAIL
from ..config.environment import FACE_WEIGHTS_ENV
from ..io.images import InvalidImageError, to_rgb_array, to_uint8
from ..model.sampling import SamplingOptions, restore_faces
from .face_helper import FaceHelper

DETECTOR_MODELS = dict(zip(DETECTOR_NAMES, ("retinaface_mobile0.25", "retinaface_resnet50")))
# The upscaled output photo is held several times as float32 RGB (12 bytes a pixel a copy).
MAX_OUTPUT_PIXELS = 64_000_000

# Where the 5 landmarks (eyes, nose tip, mouth corners) sit, as fractions of the face side.
TEMPLATES = {
    # facexlib's FFHQ template (512-pixel coordinates / 512).
    "ffhq": np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                      [201.26117, 371.41043], [313.08905, 371.15118]]) / 512.0,
    # The tighter framing of the UTKFace crops the bundled model was trained on: median
    # RetinaFace landmarks of 120 val faces: python scripts/measure_template.py ../shared/data/utkface/val
    "utkface": np.array([[0.2922, 0.3010], [0.6828, 0.2957], [0.4775, 0.5303], [0.3273, 0.6896], [0.6669, 0.6756]]),
}


class NoFaceError(ValueError):
    """No face was found in the photo."""


def load_detector(detector: str, device, weights_dir: str | os.PathLike | None):
    """facexlib's RetinaFace detector, loaded once and shared by every photo; facexlib downloads its
    weights into its own folder when ``weights_dir`` is None (on a connected machine)."""
    from facexlib.detection import init_detection_model

    weights_dir = None if weights_dir is None else str(weights_dir)
    try:
        return init_detection_model(DETECTOR_MODELS[detector], half=False, device=device, model_rootpath=weights_dir)
    except OSError as error:  # facexlib downloads missing weights; offline that is a bare URLError
        where = weights_dir or "facexlib's own weights folder"
        raise OSError(
            f"could not load the {detector} face detector ({DETECTOR_MODELS[detector]}) from {where} nor download "
            f"it ({error}); put facexlib's detection weights in a folder and pass it with --face-weights or "
            f"${FACE_WEIGHTS_ENV}"
        ) from error
    except Exception as error:
        # torch.load refuses pickles that hold more than tensors (they could run code), and garbage fails in
        # the unpickler in many ways: all are one line about the file, not a traceback.
        where = weights_dir or "facexlib's own weights folder"
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise OSError(
            f"the {detector} face detector's weights in {where} cannot be used ({type(error).__name__}: {reason}); "
            "replace them with facexlib's own release file"
        ) from None


@dataclass
class PhotoRestoration:
    """The restored photo (float RGB in [0, 1], upscaled) and every face before and after."""

    image: np.ndarray
    faces: list[np.ndarray] = field(default_factory=list)
    restored_faces: list[np.ndarray] = field(default_factory=list)
    uncertainty: list[np.ndarray] = field(default_factory=list)
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    affines: list[np.ndarray] = field(default_factory=list)  # input photo -> model-size face crop, per face
    faces_found: int = 0  # before ``max_faces`` kept the largest
    interrupted: bool = False  # a step callback stopped the pipeline: the faces are unfinished samples


def to_bgr_uint8(image: np.ndarray) -> np.ndarray:
    """Float RGB in [0, 1] as facexlib's BGR uint8."""
    return np.ascontiguousarray(to_uint8(image)[..., ::-1])


def to_rgb_float(image: np.ndarray) -> np.ndarray:
    """facexlib's BGR uint8 as float RGB in [0, 1]."""
    return np.ascontiguousarray(image[..., ::-1]).astype(np.float32) / 255.0


class FaceRestorer:
    """Restores every face of a photo with an LPIP-Diff pipeline.

    Args:
        pipeline: an :class:`~lpipdiff.LPIPDiffPipeline`.
        detector: ``"mobilenet"`` (RetinaFace MobileNet-0.25, fast; the default) or ``"resnet50"``.
        weights_dir: the folder holding facexlib's detector weights; ``None``: facexlib downloads
            them into its own folder on first use (on a connected machine).
        upscale: the output photo is this many times larger than the input (1 to 8).
        only_largest: restore only the largest face.
        min_face_size: ignore faces whose detection box is smaller than this (pixels).
        template: ``"utkface"`` (the framing of the bundled model), ``"ffhq"``, or a 5x2 array
            of landmark positions as fractions of the face side.
        detail: for faces larger in the output than the model's face size: the input's detail
            finer than ``face_size / detail`` pixels across the face is kept (0 to 1; see
            :mod:`lpipdiff.faces.detail`). 1 (default): all of it above the model's resolution, so
            no face loses what the upscaled input had there; 0: the restoration alone, scaled
            up. Faces at or below the model's size are unaffected.
        bg_upsampler: a :class:`~lpipdiff.faces.upscaler.BackgroundUpscaler` (``load_upscaler(...)``) that
            makes the upscaled photo the faces are pasted onto; ``None``: the photo is resized
            (Lanczos).
    """

    def __init__(
        self,
        pipeline,
        detector: str = DEFAULT_DETECTOR,
        weights_dir: str | os.PathLike | None = None,
        upscale: float = 1.0,
        only_largest: bool = False,
        min_face_size: int = 0,
        template: str | np.ndarray = "utkface",
        detail: float = DEFAULT_DETAIL,
        bg_upsampler=None,
    ):
        if bg_upsampler is not None and not callable(bg_upsampler):
            raise TypeError(f"bg_upsampler must be a BackgroundUpscaler or None, got {type(bg_upsampler).__name__}")
        self.bg_upsampler = bg_upsampler
        check_restorer_settings(detector, DETECTOR_MODELS, upscale, only_largest, min_face_size, detail, MAX_DETAIL)
        self.pipeline, self.upscale = pipeline, float(upscale)
        self.detail = float(detail)
        self.only_largest, self.min_face_size = only_largest, min_face_size
        self.template = checked_template(template, TEMPLATES)
        self.detector = load_detector(detector, pipeline.device, weights_dir)

    def restore(
        self,
        image,
        sampling: SamplingOptions | None = None,
        generator: torch.Generator | None = None,
        detail: float | None = None,
        max_faces: int | None = None,
        callback_on_step_end=None,
        background: bool | np.ndarray = True,
        upscale: float | None = None,
    ) -> PhotoRestoration:
        """Restore all faces of one photo. Safe to call from several threads at once.

        Args:
            image: anything the pipeline accepts as one image (path, PIL image, ``HxW`` or ``HxWxC``
                array of uint8/uint16/float, ``CxHxW`` tensor), converted the same way.
            sampling: the sampler's settings (defaults: :class:`SamplingOptions`'s).
            generator: overrides the generator seeded with ``sampling.seed``; each face gets its own
                generator drawn from it.
            detail: overrides the restorer's ``detail`` for this photo.
            max_faces: restore only this many of the largest faces.
            callback_on_step_end: the pipeline's step callback (for progress, or to interrupt).
            background: upscale the background with the restorer's ``bg_upsampler`` (when it has
                one); False: resize it plainly for this photo; an array: the upscaled photo itself
                (float RGB at the output size), made once for several samples of one photo.
            upscale: overrides the restorer's ``upscale`` for this photo.
        """
        sampling = SamplingOptions() if sampling is None else sampling
        if not isinstance(sampling, SamplingOptions):
            raise TypeError(f"sampling must be a SamplingOptions or None (the defaults), got {type(sampling).__name__}")
        detail = self.detail if detail is None else check_number("detail", detail, 0, MAX_DETAIL)
        if isinstance(image, (list, tuple)):
            raise InvalidImageError("FaceRestorer.restore takes one photo at a time")
        upscale = self.upscale if upscale is None else check_number("upscale", upscale, 1, 8)
        image = to_rgb_array(image)
        height, width = image.shape[:2]
        if height * width * upscale**2 > MAX_OUTPUT_PIXELS:
            raise InvalidImageError(
                f"a {width}x{height} photo upscaled {upscale:g}x would exceed {MAX_OUTPUT_PIXELS / 1e6:.0f} "
                "megapixels; use a smaller upscale or photo"
            )
        background = checked_background(background, int(height * upscale), int(width * upscale))
        helper = self.face_helper(upscale)
        helper.read_image(to_bgr_uint8(image))
        found = self.find_faces(helper, max_faces)
        if not helper.det_faces:
            raise NoFaceError(
                "no face found" + (f" of at least {self.min_face_size} pixels" if self.min_face_size else "")
                + "; for an already aligned face, turn whole-photo mode off"
            )
        faces = [to_rgb_float(face) for face in helper.align()]
        generator = generator if generator is not None else torch.Generator().manual_seed(sampling.seed)
        result = restore_faces(self.pipeline, faces, sampling, generator=_split_generator(generator, len(faces)),
                               callback_on_step_end=callback_on_step_end)
        upscaled = None
        if isinstance(background, np.ndarray):
            upscaled = to_bgr_uint8(background)
        elif background:
            upscaled = self.upscaled_background(image, upscale)
        photo = to_rgb_float(helper.paste([to_bgr_uint8(face) for face in result.images], detail, upscaled))
        return PhotoRestoration(
            image=photo,
            faces=faces,
            restored_faces=list(result.images),
            uncertainty=list(result.uncertainty),
            boxes=[tuple(float(v) for v in box[:4]) for box in helper.det_faces],
            affines=[affine.copy() for affine in helper.affine_matrices],
            faces_found=found,
            interrupted=result.interrupted,
        )


    def face_helper(self, upscale: float | None = None) -> FaceHelper:
        """An empty helper for one photo (or frame) with this restorer's detector and template."""
        upscale = self.upscale if upscale is None else upscale
        return FaceHelper(self.detector, self.pipeline.unet.config.face_size, self.template, upscale)

    def find_faces(self, helper: FaceHelper, max_faces: int | None = None, regions=None) -> int:
        """Detect the faces of the photo ``helper`` holds (only in ``regions`` when given, see
        :meth:`FaceHelper.detect`) and keep those this restorer restores (at least ``min_face_size``;
        the largest one or ``max_faces``), in the detector's order. Returns how many were found
        before that choice."""
        found = helper.detect(regions)
        sides = helper.face_sides()
        keep = sorted((i for i in range(found) if sides[i] >= self.min_face_size), key=lambda i: -sides[i])
        helper.keep(sorted(keep[: 1 if self.only_largest else max_faces]))
        return found

    def upscaled_background(self, image: np.ndarray, upscale: float) -> np.ndarray | None:
        """The background upscaler's photo (BGR uint8), or None when the restorer has none (the
        paste-back then resizes the photo itself)."""
        return None if self.bg_upsampler is None else to_bgr_uint8(self.bg_upsampler(image, upscale))


def _split_generator(generator: torch.Generator, count: int) -> list[torch.Generator]:
    """One independent generator per face, derived from the given one."""
    seeds = torch.randint(0, 2**62, (count,), generator=generator).tolist()
    return [torch.Generator(device=generator.device).manual_seed(s) for s in seeds]
