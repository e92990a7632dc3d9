"""A whole photo as a visitor sees it: the input enlarged (bicubic), today's output (faces restored,
background resized), and, given a background upscaler, the output with it.

    LPIPDIFF_FACEXLIB_WEIGHTS=../shared/weights/facexlib python benchmarks/whole_photo_figure.py \
        --photo examples/astronaut_photo_severe.png --upscale 2 --output docs/whole_photo.png
    python benchmarks/whole_photo_figure.py ... --bg-upsampler realesrgan-x2   # on a connected machine

A background upscaler with random weights would make a meaningless picture, so the third panel is
drawn only for real weights (a file, a folder or a short name that resolves).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from lpipdiff.arguments.options import add_bg_upsampler_arguments, add_face_weights_argument, bg_upsampler, face_weights
from lpipdiff.faces.restorer import FaceRestorer
from lpipdiff.io.images import load_image_file, save_image
from lpipdiff.model.loading import load_pipeline
from lpipdiff.model.sampling import SamplingOptions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photo", default="examples/astronaut_photo_severe.png")
    parser.add_argument("--upscale", type=float, default=2.0)
    parser.add_argument("--output", required=True, help="the figure (PNG); replaced if it exists")
    add_face_weights_argument(parser)
    add_bg_upsampler_arguments(parser)
    args = parser.parse_args()

    photo = load_image_file(args.photo)
    pipeline = load_pipeline(device="cpu")
    restorer = FaceRestorer(pipeline, weights_dir=face_weights(args), upscale=args.upscale)
    today = restorer.restore(photo, SamplingOptions()).image
    height, width = today.shape[:2]
    panels = [np.clip(cv2.resize(photo, (width, height), interpolation=cv2.INTER_CUBIC), 0, 1), today]
    if bg_upsampler(args):
        from lpipdiff.faces.upscaler import load_upscaler

        upscaler = load_upscaler(bg_upsampler(args), device="cpu", tile=args.bg_tile)
        with_background = FaceRestorer(pipeline, weights_dir=face_weights(args), upscale=args.upscale,
                                       bg_upsampler=upscaler)
        panels.append(with_background.restore(photo, SamplingOptions()).image)
    save_image(np.concatenate(panels, axis=1), Path(args.output), overwrite=True)
    names = ["bicubic", "faces restored", "with the background upscaler"][: len(panels)]
    print(f"wrote {args.output}: {' | '.join(names)}")


if __name__ == "__main__":
    main()
