"""facexlib behind one door: detection, alignment and paste-back of one photo's faces.

:class:`FaceHelper` is facexlib's ``FaceRestoreHelper`` with one override, ``__init__``: facexlib's
own loads a detector for every helper and always builds ParseNet (an 85 MB download, even with
``use_parse=False``), while here one detector is shared by every photo and the paste-back uses
facexlib's square soft mask, which needs no parser. Everything else is facexlib's public API
(``read_image``, ``get_face_landmarks_5``, ``align_warp_face``, ``add_restored_face``,
``get_inverse_affine``, ``paste_faces_to_input_image``); a helper holds one photo's state, so each
photo gets its own (cheap: no model is loaded) and photos can be restored in parallel threads.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from facexlib.utils.face_restoration_helper import FaceRestoreHelper

from .detail import crop_transform, keep_input_detail, output_scale

# Detection runs on a copy whose shorter side is at most this: RetinaFace finds faces down to
# about 1% of that side, and a 36-megapixel photo at full size took 42 s and 4 GB to search.
DETECTION_SIDE = 1024
# A region searched for a known face is scaled to at most this side (the face then spans about half
# of it: RetinaFace's landmarks are as steady as at full size after smoothing, at a fraction of the work).
REGION_SIDE = 192
# Two detections of one face (seen on large photos) overlap this much or more; distinct faces do not.
DUPLICATE_IOU = 0.5


class FaceHelper(FaceRestoreHelper):
    """One photo's faces, found by a shared RetinaFace ``detector``, aligned to ``template`` (5x2
    landmark positions as fractions of the face side) in ``face_size`` crops, and pasted back into
    the photo upscaled ``upscale`` times.

    Use: :meth:`read_image` (BGR uint8), :meth:`detect`, :meth:`align` (returns the crops), then
    :meth:`paste` with the restored crops.
    """

    def __init__(self, detector, face_size: int, template: np.ndarray, upscale: float = 1.0):
        # The attributes facexlib's methods read, as its own __init__ sets them for a square crop
        # with a 5-point template and no padding or parser (see the module docstring for why).
        self.upscale_factor, self.face_size, self.crop_ratio = upscale, (face_size, face_size), (1, 1)
        self.template_3points, self.pad_blur, self.save_ext = False, False, "png"
        self.use_parse, self.face_parse = False, None
        self.face_det = detector
        self.device = next(detector.parameters()).device if detector is not None else None
        self.template = np.asarray(template, dtype=np.float64)
        self.face_template = self.template * face_size
        self.clean_all()

    def detect(self, regions=None) -> int:
        """Find the faces of the photo read; returns how many distinct faces were found. ``regions``
        ((x0, y0, x1, y1) boxes): look only there, each region at most ``REGION_SIDE`` pixels
        across (a video's faces, where the frame before had them)."""
        height, width = self.input_img.shape[:2]
        if regions is None:
            self.get_face_landmarks_5(resize=DETECTION_SIDE if min(height, width) > DETECTION_SIDE else None)
        for region in regions or []:
            x0, y0, x1, y1 = (int(round(v)) for v in region)
            x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
            if min(x1 - x0, y1 - y0) < 8:
                continue
            scale = min(1.0, REGION_SIDE / max(x1 - x0, y1 - y0))
            crop = cv2.resize(self.input_img[y0:y1, x0:x1], None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            with torch.no_grad():
                found = self.face_det.detect_faces(crop, 0.97)  # facexlib's own threshold
            for row in found:
                points = row[[0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]].reshape(-1, 2) / scale + (x0, y0)
                self.det_faces.append(np.concatenate([points[:2].ravel(), row[4:5]]))
                self.all_landmarks_5.append(points[2:])
        self.keep(distinct_faces(self.det_faces))
        return len(self.det_faces)

    def face_sides(self) -> list[float]:
        """The shorter side of every detection box, in photo pixels."""
        return [float(min(box[2] - box[0], box[3] - box[1])) for box in self.det_faces]

    def keep(self, indices: list[int]) -> None:
        """Keep only these detections (in this order)."""
        self.det_faces = [self.det_faces[i] for i in indices]
        self.all_landmarks_5 = [self.all_landmarks_5[i] for i in indices]

    def align(self) -> list[np.ndarray]:
        """The aligned ``face_size`` crops (BGR uint8) of the faces kept."""
        self.align_warp_face()
        return self.cropped_faces

    def paste(self, restored_faces: list[np.ndarray], detail: float,
              background: np.ndarray | None = None) -> np.ndarray:
        """The upscaled photo with the restored crops (BGR uint8, ``face_size``) pasted back with
        facexlib's soft square mask, onto ``background`` (BGR uint8 at the output size, e.g. from a
        background upscaler) or else the input resized with Lanczos. Faces at or below the model's
        size in the output (and every face when ``detail`` is 0) are pasted as facexlib pastes
        them; each larger face is pasted at its own output size with the input's detail finer than
        ``face_size / detail`` pixels across the face (:func:`lpipdiff.faces.detail.keep_input_detail`),
        taken from ``background`` when there is one, so that the face's fine detail is the
        background's own where the two meet. Returns the BGR uint8 photo."""
        model_size = self.face_size[0]
        scales = [output_scale(affine, self.upscale_factor) for affine in self.affine_matrices]
        larger = [detail > 0 and scale > 1 for scale in scales]
        pairs = list(zip(restored_faces, self.affine_matrices))
        small = [pair for pair, large in zip(pairs, larger) if not large]
        photo = self._sibling(model_size).paste_crops(self.input_img, small, background=background)
        for face, affine, scale, large in zip(restored_faces, self.affine_matrices, scales, larger):
            if not large:
                continue
            size = round(model_size * scale)
            to_crop = crop_transform(affine, size / model_size)
            # One Lanczos resampling of the input, as for facexlib's background; reflected
            # borders keep the image edge from leaking a step into the detail band.
            source, warp = self.input_img, to_crop
            if background is not None:
                source, warp = background, from_output_grid(to_crop, self.upscale_factor)
            input_crop = cv2.warpAffine(source, warp, (size, size), flags=cv2.INTER_LANCZOS4,
                                        borderMode=cv2.BORDER_REFLECT101)
            detailed = np.clip(keep_input_detail(face, input_crop, detail), 0, 255)
            photo = self._sibling(size).paste_crops(self.input_img, [(detailed, to_crop)], background=photo)
        return photo

    def paste_crops(self, photo: np.ndarray, crops, background: np.ndarray | None = None) -> np.ndarray:
        """Paste ``(crop, photo -> crop affine)`` pairs, all of this helper's ``face_size``, into
        ``background`` (already at the output size), or into ``photo`` upscaled when there is none."""
        self.read_image(photo)
        for crop, affine in crops:
            self.affine_matrices.append(affine)
            self.add_restored_face(crop)
        self.get_inverse_affine()
        return self.paste_faces_to_input_image(upsample_img=background)

    def _sibling(self, face_size: int) -> FaceHelper:
        """An empty helper like this one but for crops of another size (the paste's mask is built at it)."""
        return FaceHelper(self.face_det, face_size, self.template, self.upscale_factor)


def from_output_grid(affine: np.ndarray, upscale: float) -> np.ndarray:
    """``affine`` (input photo -> crop) as a map from the photo upscaled ``upscale`` times (pixel
    centres as cv2.resize places them: input x sits at ``upscale * x + (upscale - 1) / 2``)."""
    linear = affine[:, :2] / upscale
    offset = (upscale - 1) / 2
    return np.concatenate([linear, (affine[:, 2] - linear.sum(axis=1) * offset)[:, None]], axis=1)


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
