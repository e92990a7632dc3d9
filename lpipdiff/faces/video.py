"""Whole videos: the faces of every frame restored, steady from frame to frame, with the clip's sound.

Each frame goes through the photo's steps (:class:`~lpipdiff.faces.restorer.FaceRestorer`'s
detector, alignment and paste-back; between full-frame searches the detector looks only around
the faces it follows), with three differences that keep faces from flickering:
the faces are followed from frame to frame and aligned on landmarks smoothed along time
(:mod:`lpipdiff.faces.tracks`); each face keeps one noise seed for the whole clip (the run's seed
plus its track number), so the sampler starts every frame of a face from the same noise; and a
face the detector misses for a frame or two is still restored and pasted, at its last place.
The faces of several frames are restored as one batch. Files, sound and timing are
:func:`lpipdiff.io.video.rewrite_video`'s.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..checks import check_number, check_whole_number
from ..config.defaults import DEFAULT_VIDEO_BATCH
from ..io.video import Frame, InvalidVideoError, VideoReport, rewrite_video
from ..model.sampling import SamplingOptions, restore_faces
from .restorer import MAX_OUTPUT_PIXELS, FaceRestorer, to_bgr_uint8, to_rgb_float
from .tracks import FaceTracker

# The whole frame is searched for faces every this many frames (a face entering the shot is found
# within a third of a second at 24 fps) and whenever a followed face was missed; in between, each
# followed face is looked for around where it was, at a fraction of the work.
FULL_SEARCH_FRAMES = 8


@dataclass
class VideoRestoration:
    """What :func:`restore_video` wrote (``report``: the file, frames, size, sound) and found."""

    report: VideoReport
    faces: int  # faces followed through the clip (tracks)
    frames_with_faces: int


def restore_video(
    path: str | os.PathLike,
    output: str | os.PathLike,
    restorer: FaceRestorer,
    sampling: SamplingOptions | None = None,
    overwrite: bool = False,
    max_seconds: float | None = None,
    max_faces: int | None = None,
    batch: int = DEFAULT_VIDEO_BATCH,
    tracker: FaceTracker | None = None,
    on_frames: Callable[[int, int], None] | None = None,
    callback_on_step_end=None,
) -> VideoRestoration:
    """Restore the faces of the clip at ``path`` into ``output`` (an H.264 MP4; see
    :mod:`lpipdiff.io.video` for what is kept: frames, timing, size times the restorer's
    ``upscale``, sound, an upright picture).

    Args:
        restorer: the :class:`FaceRestorer` whose detector, template, upscale, detail, face choice
            and background upscaler every frame uses.
        sampling: the sampler's settings; face ``k`` of the clip (in order of appearance) is sampled
            with ``sampling.seed + k`` in every frame.
        overwrite: replace a file at ``output`` (else it is kept: ``OutputExistsError``, before any work).
        max_seconds: refuse a longer clip (``InvalidVideoError``).
        max_faces: restore only this many of the largest faces of each frame.
        batch: frames whose faces are restored together (memory holds this many frames).
        tracker: a :class:`FaceTracker` (default: a new one with the default hold and smoothing).
        on_frames: ``on_frames(done, total)`` as frames are written (``total`` 0: unknown).
        callback_on_step_end: the pipeline's step callback (to interrupt a long clip).

    Returns a :class:`VideoRestoration`; a clip without a face is written all the same, its frames
    only resized (``faces == 0``).
    """
    sampling = SamplingOptions() if sampling is None else sampling
    if not isinstance(sampling, SamplingOptions):
        raise TypeError(f"sampling must be a SamplingOptions or None (the defaults), got {type(sampling).__name__}")
    batch = check_whole_number("batch", batch, 1, 256)
    max_seconds = None if max_seconds is None else check_number("max_seconds", max_seconds, 0, low_open=True)
    tracker = FaceTracker() if tracker is None else tracker
    seen = {"frames": 0, "searched": 0}

    def process(frames: list[Frame]):
        height, width = frames[0].image.shape[:2]
        if height * width * restorer.upscale**2 > MAX_OUTPUT_PIXELS:
            raise InvalidVideoError(f"{path}: {width}x{height} frames upscaled {restorer.upscale:g}x would exceed "
                                    f"{MAX_OUTPUT_PIXELS / 1e6:.0f} megapixels; use a smaller upscale")
        helpers, crops, generators = [], [], []
        for frame in frames:
            helper = restorer.face_helper()
            helper.read_image(frame.image)
            tracks = tracker.tracks
            full = seen["searched"] % FULL_SEARCH_FRAMES == 0 or not tracks or any(t.missed for t in tracks)
            restorer.find_faces(helper, max_faces, regions=None if full else [t.region() for t in tracks])
            seen["searched"] += 1
            tracks = tracker.update(helper.det_faces, helper.all_landmarks_5, frame.time)
            helper.det_faces = [track.box for track in tracks]
            helper.all_landmarks_5 = [track.landmarks for track in tracks]
            crops += [to_rgb_float(face) for face in helper.align()] if tracks else []
            # A fresh generator with the face's seed in every frame: the same noise for the same face.
            generators += [torch.Generator().manual_seed(sampling.seed + track.number) for track in tracks]
            seen["frames"] += bool(tracks)
            helpers.append(helper)
        restored = []
        if crops:
            result = restore_faces(restorer.pipeline, crops, sampling, generator=generators,
                                   callback_on_step_end=callback_on_step_end)
            restored = [to_bgr_uint8(face) for face in result.images]
        images = []
        for frame, helper in zip(frames, helpers):
            count = len(helper.det_faces)
            background = None if restorer.bg_upsampler is None else restorer.upscaled_background(
                to_rgb_float(frame.image), restorer.upscale)
            images.append(helper.paste(restored[:count], restorer.detail, background))
            restored = restored[count:]
        return images

    report = rewrite_video(path, output, process, batch=batch, overwrite=overwrite, max_seconds=max_seconds,
                           on_frames=on_frames)
    return VideoRestoration(report=report, faces=tracker.started, frames_with_faces=seen["frames"])
