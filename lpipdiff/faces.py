"""Whole photos: detect faces, align them, restore them as one batch and paste them back.

Detection (RetinaFace), 5-landmark alignment and the inverse-affine paste-back with a soft
square mask are facexlib's ``FaceRestoreHelper``; no face-parsing model is used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from .detail import DEFAULT_DETAIL, MAX_DETAIL, paste_faces
from .image_io import InvalidImageError, to_rgb_array
from .value_checks import check_number, check_restorer_settings, checked_template

DETECTORS = {"mobilenet": "retinaface_mobile0.25", "resnet50": "retinaface_resnet50"}
WEIGHTS_ENV = "LPIPDIFF_FACEXLIB_WEIGHTS"
# Detection runs on a copy whose shorter side is at most this: RetinaFace finds faces down to
# about 1% of that side, and a 36-megapixel photo at full size took 42 s and 4 GB to search.
DETECTION_SIDE = 1024
# The upscaled output photo is held several times as float32 RGB (12 bytes a pixel a copy).
MAX_OUTPUT_PIXELS = 64_000_000
# Two detections of one face (seen on large photos) overlap this much or more; distinct faces do not.
DUPLICATE_IOU = 0.5

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


def facexlib_weights_dir(weights_dir: str | os.PathLike | None = None) -> str | None:
    """The argument, else ``$LPIPDIFF_FACEXLIB_WEIGHTS``, else ``None``: facexlib then downloads its
    weights into its own folder (on a connected machine)."""
    chosen = weights_dir or os.environ.get(WEIGHTS_ENV)
    return str(chosen) if chosen else None


def load_detector(detector: str, device, weights_dir: str | None):
    """facexlib's RetinaFace detector, loaded once and shared by every photo."""
    from facexlib.detection import init_detection_model

    try:
        return init_detection_model(DETECTORS[detector], half=False, device=device, model_rootpath=weights_dir)
    except OSError as error:  # facexlib downloads missing weights; offline that is a bare URLError
        where = weights_dir or "facexlib's own weights folder"
        raise OSError(
            f"could not load the {detector} face detector ({DETECTORS[detector]}) from {where} nor download it "
            f"({error}); put facexlib's detection weights in a folder and pass it with --face-weights or "
            f"${WEIGHTS_ENV}"
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


def detection_helper(detector_model, upscale: float, face_size: int, template: np.ndarray):
    """A fresh facexlib ``FaceRestoreHelper`` (it keeps per-photo state) around a shared detector.

    The helper's own ``__init__`` always builds ParseNet (an 85 MB download) even with
    ``use_parse=False``, and the paste-back here uses the square soft mask, so this sets up
    what detection, alignment and paste-back read, and loads nothing.
    """
    from facexlib.utils.face_restoration_helper import FaceRestoreHelper

    helper = FaceRestoreHelper.__new__(FaceRestoreHelper)
    helper.upscale_factor, helper.face_size, helper.crop_ratio = upscale, (face_size, face_size), (1, 1)
    helper.template_3points, helper.pad_blur, helper.use_parse, helper.face_parse = False, False, False, None
    helper.save_ext, helper.device, helper.face_det = "png", next(detector_model.parameters()).device, detector_model
    helper.face_template = template * face_size
    helper.clean_all()
    return helper


def box_iou(a, b) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    overlap = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap
    return overlap / union if union > 0 else 0.0


def distinct_faces(boxes) -> list[int]:
    """Indices of the detections to keep: of two that overlap as one face, the more confident."""
    order = sorted(range(len(boxes)), key=lambda i: -float(boxes[i][4]) if len(boxes[i]) > 4 else 0.0)
    kept = []
    for i in order:
        if all(box_iou(boxes[i], boxes[j]) < DUPLICATE_IOU for j in kept):
            kept.append(i)
    return sorted(kept)


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


def _to_bgr_uint8(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)[..., ::-1])


def _to_rgb_float(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image[..., ::-1]).astype(np.float32) / 255.0


class FaceRestorer:
    """Restores every face of a photo with an LPIP-Diff pipeline.

    Args:
        pipeline: an :class:`~lpipdiff.LPIPDiffPipeline`.
        detector: ``"mobilenet"`` (RetinaFace MobileNet-0.25, fast) or ``"resnet50"``.
        weights_dir: where facexlib finds (or downloads) the detector weights; see
            :func:`facexlib_weights_dir`.
        upscale: the output photo is this many times larger than the input.
        only_largest: restore only the largest face.
        min_face_size: ignore faces whose detection box is smaller than this (pixels).
        template: ``"utkface"`` (the framing of the bundled model), ``"ffhq"``, or a 5x2 array
            of landmark positions as fractions of the face side.
        detail: for faces larger in the output than the model's face size: the input's detail
            finer than ``face_size / detail`` pixels across the face is kept (0 to 1; see
            :mod:`lpipdiff.detail`). 1 (default): all of it above the model's resolution, so
            no face loses what the upscaled input had there; 0: the restoration alone, scaled
            up, as before. Faces at or below the model's size are unaffected.
    """

    def __init__(
        self,
        pipeline,
        detector: str = "mobilenet",
        weights_dir: str | os.PathLike | None = None,
        upscale: float = 1.0,
        only_largest: bool = False,
        min_face_size: int = 0,
        template: str | np.ndarray = "utkface",
        detail: float = DEFAULT_DETAIL,
    ):
        check_restorer_settings(detector, DETECTORS, upscale, only_largest, min_face_size, detail, MAX_DETAIL)
        self.pipeline, self.detail, self.upscale = pipeline, detail, upscale
        self.only_largest, self.min_face_size = only_largest, min_face_size
        self.template = checked_template(template, TEMPLATES)
        self.detector = load_detector(detector, pipeline.device, facexlib_weights_dir(weights_dir))

    def restore(
        self, image, generator=None, pipeline=None, detail=None, max_faces=None, **sampling
    ) -> PhotoRestoration:
        """Restore all faces of one photo.

        ``image`` is anything the pipeline accepts as one image (path, PIL image, ``HxW`` or
        ``HxWxC`` array of uint8/uint16/float, ``CxHxW`` tensor), converted the same way.
        ``pipeline`` overrides the restorer's own (same model, another scheduler, say), and
        ``detail`` its ``detail``; ``max_faces`` restores only that many of the largest faces;
        ``sampling`` goes to the pipeline call. Safe to call from several threads at once.
        """
        pipeline = pipeline or self.pipeline
        detail = self.detail if detail is None else check_number("detail", detail, 0, MAX_DETAIL)
        if isinstance(image, (list, tuple)):
            raise InvalidImageError("FaceRestorer.restore takes one photo at a time")
        image = to_rgb_array(image)
        height, width = image.shape[:2]
        if height * width * self.upscale**2 > MAX_OUTPUT_PIXELS:
            raise InvalidImageError(
                f"a {width}x{height} photo upscaled {self.upscale:g}x would exceed {MAX_OUTPUT_PIXELS / 1e6:.0f} "
                "megapixels; use a smaller upscale or photo"
            )
        helper = detection_helper(self.detector, self.upscale, pipeline.unet.config.face_size, self.template)
        helper.read_image(_to_bgr_uint8(image))
        helper.get_face_landmarks_5(resize=DETECTION_SIDE if min(height, width) > DETECTION_SIDE else None)
        found = distinct_faces(helper.det_faces)
        sides = {i: min(box[2] - box[0], box[3] - box[1]) for i, box in enumerate(helper.det_faces)}
        keep = sorted((i for i in found if sides[i] >= self.min_face_size), key=lambda i: -sides[i])
        keep = sorted(keep[: 1 if self.only_largest else max_faces])
        if not keep:
            raise NoFaceError(
                "no face found" + (f" of at least {self.min_face_size} pixels" if self.min_face_size else "")
                + "; for an already aligned face, turn whole-photo mode off"
            )
        helper.det_faces = [helper.det_faces[i] for i in keep]
        helper.all_landmarks_5 = [helper.all_landmarks_5[i] for i in keep]
        helper.align_warp_face()
        faces = [_to_rgb_float(face) for face in helper.cropped_faces]
        if generator is not None and not isinstance(generator, list):
            generator = _split_generator(generator, len(faces))
        result = pipeline(faces, generator=generator, output_type="np", **sampling)
        photo = _to_rgb_float(paste_faces(helper, [_to_bgr_uint8(face) for face in result.images], detail))
        return PhotoRestoration(
            image=photo,
            faces=faces,
            restored_faces=list(result.images),
            uncertainty=list(result.uncertainty),
            boxes=[tuple(float(v) for v in box[:4]) for box in helper.det_faces],
            affines=[affine.copy() for affine in helper.affine_matrices],
            faces_found=len(found),
        )


def _split_generator(generator, count: int) -> list:
    """One independent generator per face, derived from the given one."""
    import torch

    seeds = torch.randint(0, 2**62, (count,), generator=generator).tolist()
    return [torch.Generator(device=generator.device).manual_seed(s) for s in seeds]
