"""Videos: how much restored faces flicker, and how fast a clip is restored, against frame-by-frame.

    OMP_NUM_THREADS=2 python benchmarks/video.py --face-weights ../shared/weights/facexlib \
        --frames 48 --height 480 --figure docs/video_strip.png

Makes a clip with one face (benchmarks/clips.py: the moderate astronaut example, still or
drifting ``--drift`` pixels a frame, fresh sensor noise in every frame, stored losslessly so that
the noise stays), then restores it three ways, each written through the same H.264 writer
(lpipdiff.io.video.rewrite_video) and read back:

- ``tracked``: ``restore_video`` (the product: faces tracked, landmarks smoothed, one seed a face,
  ``--batch`` frames restored together), and the same without smoothing the landmarks;
- ``frame by frame, new seed``: ``FaceRestorer.restore`` on each frame alone, frame ``i`` with seed
  ``i`` (an independent restorer whose random state moves on, as CodeFormer's video mode does);
- ``frame by frame, same seed``: the same with seed 0 for every frame (detection and alignment still
  per frame).

Flicker is the mean absolute difference (0-255 levels) of the restored face region between
consecutive frames, averaged over the clip; the region is the face's detection box in the input
frame (scaled by the upscale), the same for every method. The input's own flicker (noise and
motion) is the reference. On a moving shot the plain difference is mostly the motion itself, so
each figure is also given motion-compensated: the frame before moved along the input's optical
flow first (the warping error used in video work).

Speed is frames a second over the whole run (decode, detect, restore, paste, encode), wall clock,
with the load average before and after, and the CPU seconds a frame of all this process's threads
(what the work costs, whatever else runs): the machine may be shared, so compare the methods'
ratios, which load hits alike. ``--figure`` writes a strip: input, frame-by-frame and tracked face
crops for a few frames, and each method's difference from the frame before (x32).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import cv2
import numpy as np
import PIL.Image
from speed import machine

from lpipdiff.faces.restorer import FaceRestorer, to_bgr_uint8, to_rgb_float
from lpipdiff.faces.tracks import FaceTracker
from lpipdiff.faces.video import restore_video
from lpipdiff.io.video import VideoReader, rewrite_video
from lpipdiff.model.loading import load_pipeline
from lpipdiff.model.sampling import SamplingOptions

from clips import clip_frames, write_clip


def read_frames(path: Path) -> list[np.ndarray]:
    """A clip's frames, BGR uint8, as the product reads them."""
    with VideoReader(path) as reader:
        return [frame.image for frame in reader.frames()]


def face_boxes(restorer: FaceRestorer, frames: list[np.ndarray]) -> list[np.ndarray | None]:
    """The largest face's box in each input frame (None where none is found)."""
    boxes = []
    for frame in frames:
        helper = restorer.face_helper(1.0)
        helper.read_image(frame)
        restorer.find_faces(helper, max_faces=1)
        boxes.append(np.asarray(helper.det_faces[0][:4]) if helper.det_faces else None)
    return boxes


def input_motion(frames: list[np.ndarray]) -> list[np.ndarray]:
    """For each frame after the first, where each of its pixels was in the frame before (Farneback
    optical flow of the input, as cv2.remap maps)."""
    grey = [cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) for frame in frames]
    height, width = grey[0].shape
    grid = np.stack(np.meshgrid(np.arange(width), np.arange(height)), axis=-1).astype(np.float32)
    return [grid + cv2.calcOpticalFlowFarneback(after, before, None, 0.5, 3, 15, 3, 5, 1.2, 0)
            for before, after in zip(grey, grey[1:])]


def flicker(frames: list[np.ndarray], boxes, scale: float, motion: list[np.ndarray] | None = None) -> float:
    """Mean absolute difference of the face region between consecutive frames (0-255 levels); with
    ``motion`` (:func:`input_motion`), the frame before is first moved along the input's own motion,
    so that what remains is what changed beyond the motion (the warping error of video work)."""
    differences = []
    for index in range(1, len(frames)):
        box = boxes[index - 1]
        if box is None:
            continue
        before = frames[index - 1]
        if motion is not None:
            where = motion[index - 1]
            if scale != 1:
                where = cv2.resize(where, (frames[index].shape[1], frames[index].shape[0])) * scale
            before = cv2.remap(before, where, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        left, top, right, bottom = (box * scale).round().astype(int)
        differences.append(np.abs(frames[index][top:bottom, left:right].astype(np.float32)
                                  - before[top:bottom, left:right]).mean())
    return float(np.mean(differences))


def frame_by_frame(restorer: FaceRestorer, sampling: SamplingOptions, new_seed: bool):
    """``rewrite_video``'s process: every frame restored alone by ``FaceRestorer.restore``."""
    count = {"frames": 0}

    def process(frames):
        images = []
        for frame in frames:
            seed = sampling.seed + count["frames"] if new_seed else sampling.seed
            options = SamplingOptions(**{**sampling.as_dict(), "seed": seed})
            result = restorer.restore(to_rgb_float(frame.image), options)
            images.append(to_bgr_uint8(result.image))
            count["frames"] += 1
        return images

    return process


def timed(run) -> tuple[float, float, float, float]:
    """(wall seconds, CPU seconds of this process's threads, load average before, after) of ``run()``."""
    before = os.getloadavg()[0]
    start, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - start, time.process_time() - cpu, before, os.getloadavg()[0]


def strip(inputs, methods: dict[str, list[np.ndarray]], boxes, scale: float, picks: list[int]) -> np.ndarray:
    """Rows of face crops (input, each method) and each method's difference from the frame before (x32)."""
    box = boxes[picks[0]]
    centre, side = (box[:2] + box[2:]) / 2, (box[2:] - box[:2]).max() * 1.6

    def crop(image, factor):
        x0, y0 = ((centre - side / 2) * factor).round().astype(int)
        size = int(round(side * factor))
        return cv2.resize(image[max(y0, 0) : y0 + size, max(x0, 0) : x0 + size], (160, 160),
                          interpolation=cv2.INTER_AREA)

    rows = [[crop(inputs[i], 1) for i in picks]]
    rows += [[crop(frames[i], scale) for i in picks] for frames in methods.values()]
    for frames in methods.values():
        rows.append([np.clip(32 * np.abs(crop(frames[i], scale).astype(np.float32) - crop(frames[i - 1], scale)),
                             0, 255).astype(np.uint8) for i in picks])
    return np.concatenate([np.concatenate(row, axis=1) for row in rows], axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--face-weights", default=None)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--drift", type=float, default=0.0, help="pixels a frame the face moves (0: a still shot)")
    parser.add_argument("--upscale", type=float, default=1.0)
    parser.add_argument("--batch", type=int, nargs="+", default=[8])
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--device", default=None)
    parser.add_argument("--work", type=Path, default=Path("/tmp/lpipdiff-video-benchmark"))
    parser.add_argument("--figure", type=Path, default=None)
    args = parser.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    clip = write_clip(args.work / "clip.mp4", clip_frames(args.frames, args.height, drift=args.drift), lossless=True)
    pipeline = load_pipeline(backend=args.backend, device=args.device)
    restorer = FaceRestorer(pipeline, weights_dir=args.face_weights, upscale=args.upscale)
    sampling = SamplingOptions()
    inputs = read_frames(clip)
    boxes = face_boxes(restorer, inputs)
    print(f"machine: {machine()}; torch threads {__import__('torch').get_num_threads()}; backend "
          f"{args.backend}; clip {inputs[0].shape[1]}x{inputs[0].shape[0]}, {len(inputs)} frames, face found in "
          f"{sum(b is not None for b in boxes)}")
    restore_video(clip, args.work / "warm.mp4", restorer, sampling, overwrite=True, batch=max(args.batch))  # warm-up

    runs = {}
    for batch in args.batch:
        runs[f"tracked, batch {batch}"] = lambda out, batch=batch: restore_video(clip, out, restorer, sampling,
                                                                               overwrite=True, batch=batch)
    runs["tracked, no smoothing"] = lambda out: restore_video(clip, out, restorer, sampling, overwrite=True,
                                                              batch=max(args.batch),
                                                              tracker=FaceTracker(min_cutoff=math.inf))
    runs["frame by frame, new seed"] = lambda out: rewrite_video(clip, out, frame_by_frame(restorer, sampling, True),
                                                                 overwrite=True)
    runs["frame by frame, same seed"] = lambda out: rewrite_video(clip, out, frame_by_frame(restorer, sampling, False),
                                                                  overwrite=True)
    outputs, results = {}, []
    motion = input_motion(inputs)
    results.append({"method": "input", "flicker": round(flicker(inputs, boxes, 1.0), 2),
                    "flicker_moved": round(flicker(inputs, boxes, 1.0, motion), 2)})
    for index, (name, run) in enumerate(runs.items()):
        out = args.work / f"out{index}.mp4"
        seconds, cpu, load_before, load_after = timed(lambda run=run, out=out: run(out))
        outputs[name] = read_frames(out)
        results.append({"method": name, "flicker": round(flicker(outputs[name], boxes, args.upscale), 2),
                        "flicker_moved": round(flicker(outputs[name], boxes, args.upscale, motion), 2),
                        "fps": round(len(inputs) / seconds, 2), "cpu_per_frame": round(cpu / len(inputs), 3),
                        "seconds": round(seconds, 1), "load": f"{load_before:.1f}-{load_after:.1f}"})
        print(json.dumps(results[-1]), flush=True)
    baseline = next(r for r in results if r["method"] == "frame by frame, new seed")
    print("\n| method | flicker (levels) | vs frame by frame | motion-compensated | vs frame by frame | "
          "frames/s (wall) | CPU s a frame | load |\n|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['method']} | {r['flicker']:.2f} | {r['flicker'] / baseline['flicker']:.2f}x | "
              f"{r['flicker_moved']:.2f} | {r['flicker_moved'] / baseline['flicker_moved']:.2f}x | "
              f"{r.get('fps', '')} | {r.get('cpu_per_frame', '')} | {r.get('load', '')} |")
    if args.figure:
        tracked = next(name for name in outputs if name.startswith("tracked"))
        shown = {"frame by frame": outputs["frame by frame, new seed"], "tracked": outputs[tracked]}
        picks = [len(inputs) // 4, len(inputs) // 4 + 1, len(inputs) // 2, len(inputs) // 2 + 1]
        image = strip(inputs, shown, boxes, args.upscale, picks)
        PIL.Image.fromarray(image[..., ::-1]).save(args.figure)
        print(f"wrote {args.figure}: rows input, frame by frame, tracked, then |frame - frame before| x32 for "
              f"frame by frame and tracked; frames {picks}")


if __name__ == "__main__":
    main()
