"""The picture in the README: degraded / restored / ground truth for 8 val faces.

    python benchmarks/val_figure.py --data ../shared/data/utkface/val --output docs/val_faces.png

Rows are faces (the first 8 val files; the first four at the moderate preset, the last four
at severe). Columns: degraded input, LPIP-Diff with each of ``--steps`` (default: the
pipeline's default, then 20 sampled steps; seed = row), ground truth.
"""

import argparse
from pathlib import Path

import numpy as np

from lpipdiff.degradation import Degradation, image_seed
from lpipdiff.image_io import list_images, load_image_file, resize_array, save_image
from lpipdiff.loading import load_pipeline
from lpipdiff.pipeline_lpipdiff import DEFAULT_STEPS
from lpipdiff.sampling import restore_all


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--model", default=None)
    parser.add_argument("--steps", type=int, nargs="+", default=[DEFAULT_STEPS, 20], help="one column each")
    args = parser.parse_args()
    pipeline = load_pipeline(args.model, device="cpu")
    pipeline.set_progress_bar_config(disable=True)
    size = pipeline.unet.config.face_size
    files = list_images(args.data)[:8]
    clean = [resize_array(load_image_file(f), size) for f in files]
    degraded = [Degradation("moderate" if i < 4 else "severe", size, color=False)(c, image_seed(0, f.name))
                for i, (c, f) in enumerate(zip(clean, files))]
    restored = [restore_all(pipeline, degraded, batch_size=len(degraded), seed=0, num_inference_steps=steps)
                for steps in args.steps]
    rows = [np.concatenate([degraded[i], *(r[i] for r in restored), clean[i]], axis=1) for i in range(len(files))]
    grid = np.concatenate([np.concatenate(rows[:4], axis=0), np.concatenate(rows[4:], axis=0)], axis=1)
    save_image(grid, Path(args.output))


if __name__ == "__main__":
    main()
