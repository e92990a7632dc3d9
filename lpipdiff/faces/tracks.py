"""Faces followed from frame to frame, so that a restored video does not flicker.

A detector finds every face anew in each frame, and its landmarks wobble by a pixel or two even on
a face that does not move: aligned on them, the crop (and so the restored face) shifts from frame
to frame. :class:`FaceTracker` links each frame's detections to the faces of the frames before
(by the overlap of their boxes), smooths each face's landmarks along time with a One-Euro filter
(Casiez et al., CHI 2012: a low-pass filter whose cutoff rises with speed, so a still face is held
steady and a moving one is followed without lag), gives each face one number for its whole life
(its noise seed), and holds a face for a few frames when the detector misses it, so that its
restoration does not blink out and back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .face_helper import box_iou

# A face whose box overlaps a detection of the next frame this much or more is the same face.
MATCH_IOU = 0.3
# Frames a face is kept (at its last landmarks) after the detector last saw it.
HOLD_FRAMES = 2
# One-Euro settings on landmarks measured in face sides (so they suit any resolution): a still face
# is smoothed below 1 Hz; every face side a second of speed raises the cutoff by 2 Hz.
MIN_CUTOFF_HZ = 1.0
BETA = 2.0
DERIVATIVE_CUTOFF_HZ = 1.0


def _alpha(cutoff: float, period: float) -> float:
    tau = 1.0 / (2 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / period)


class OneEuroFilter:
    """The One-Euro filter over an array of values (all filtered together, one cutoff for the array,
    from its fastest-moving value)."""

    def __init__(self, min_cutoff: float = MIN_CUTOFF_HZ, beta: float = BETA,
                 derivative_cutoff: float = DERIVATIVE_CUTOFF_HZ):
        self.min_cutoff, self.beta, self.derivative_cutoff = min_cutoff, beta, derivative_cutoff
        self.value = self.speed = self.time = None

    def __call__(self, value: np.ndarray, time: float) -> np.ndarray:
        value = np.asarray(value, dtype=np.float64)
        if self.value is None:
            self.value, self.speed, self.time = value, np.zeros_like(value), time
            return value
        period = time - self.time
        if period <= 0:  # a repeated timestamp: nothing has moved
            return self.value
        speed = (value - self.value) / period
        self.speed = self.speed + _alpha(self.derivative_cutoff, period) * (speed - self.speed)
        cutoff = self.min_cutoff + self.beta * float(np.abs(self.speed).max())
        self.value = self.value + _alpha(cutoff, period) * (value - self.value)
        self.time = time
        return self.value


@dataclass
class Track:
    """One face followed through the clip."""

    number: int  # 0, 1, 2, ... in order of appearance: its noise seed is the run's seed plus this
    box: np.ndarray  # the last detection box (x0, y0, x1, y1)
    landmarks: np.ndarray  # smoothed 5x2 landmarks, in frame pixels
    missed: int = 0  # frames since the detector last saw it
    filter: OneEuroFilter = field(default_factory=OneEuroFilter)
    scale: float = 0.0  # the face's side when first seen: the filter's unit

    def side(self) -> float:
        return float(min(self.box[2] - self.box[0], self.box[3] - self.box[1]))

    def region(self) -> tuple[float, float, float, float]:
        """Where to look for the face in the next frame: a square twice its box's longer side, on its
        centre (room for a frame's motion, and the context the detector needs)."""
        (x0, y0, x1, y1), half = self.box, float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))
        x, y = (x0 + x1) / 2, (y0 + y1) / 2
        return x - half, y - half, x + half, y + half

    def update(self, box: np.ndarray, landmarks: np.ndarray, time: float) -> None:
        self.box, self.missed = np.asarray(box[:4], dtype=np.float64), 0
        self.scale = self.scale or max(self.side(), 1.0)
        self.landmarks = self.filter(np.asarray(landmarks, dtype=np.float64) / self.scale, time) * self.scale


class FaceTracker:
    """Links each frame's detections into :class:`Track` s; :meth:`update` returns the faces to
    restore in that frame (those seen, and those held). ``min_cutoff`` and ``beta`` are the One-Euro
    filter's (a ``min_cutoff`` of ``math.inf`` turns smoothing off)."""

    def __init__(self, hold: int = HOLD_FRAMES, match_iou: float = MATCH_IOU, min_cutoff: float = MIN_CUTOFF_HZ,
                 beta: float = BETA):
        self.hold, self.match_iou = hold, match_iou
        self.min_cutoff, self.beta = min_cutoff, beta
        self.tracks: list[Track] = []
        self.started = 0

    def update(self, boxes, landmarks, time: float) -> list[Track]:
        """``boxes`` (x0, y0, x1, y1, ...) and ``landmarks`` (5x2) of one frame's detections, at
        ``time`` seconds."""
        pairs = sorted(((box_iou(track.box, box), t, d) for t, track in enumerate(self.tracks)
                        for d, box in enumerate(boxes)), key=lambda pair: -pair[0])
        matched_tracks, matched_detections = set(), set()
        for overlap, t, d in pairs:
            if overlap < self.match_iou:
                break
            if t in matched_tracks or d in matched_detections:
                continue
            matched_tracks.add(t)
            matched_detections.add(d)
            self.tracks[t].update(boxes[d], landmarks[d], time)
        for t, track in enumerate(self.tracks):
            if t not in matched_tracks:
                track.missed += 1
        self.tracks = [track for track in self.tracks if track.missed <= self.hold]
        for d, box in enumerate(boxes):
            if d not in matched_detections:
                track = Track(self.started, np.asarray(box[:4], dtype=np.float64), np.zeros((5, 2)),
                              filter=OneEuroFilter(self.min_cutoff, self.beta))
                track.update(box, landmarks[d], time)
                self.tracks.append(track)
                self.started += 1
        return list(self.tracks)
