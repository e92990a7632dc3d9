"""The picture in the README: degraded / restored / ground truth for 8 val faces.

    python benchmarks/val_figure.py --data ../shared/data/utkface/val --output docs/val_faces.png

Rows are faces (8 val files from ``--offset``, default the first 8; the first four at the
moderate preset, the last four at severe; ``--offset 200`` shows tuning faces). Columns:
degraded input, LPIP-Diff at each of ``--fidelity`` (default: 1, the posterior mean; the
pipeline's default; 0, the most realistic; seed = row) for each of ``--model`` (default: the
bundled model; name two to compare weights), ground truth.

    python benchmarks/val_figure.py --data ../shared/data/utkface/val --output docs/val_old_new.png \
        --model ../shared/weights/lpipdiff-utkface-128-gpu lpipdiff/bundled/lpipdiff-utkface-128 --fidelity 1
"""

import argparse
from pathlib import Path

import numpy as np

from lpipdiff.config.defaults import DEFAULT_FIDELITY
from lpipdiff.io.images import list_images, load_image_file, resize_array, save_image
from lpipdiff.model.loading import load_pipeline
from lpipdiff.model.sampling import SamplingOptions, restore_all
from lpipdiff.training.degradation import Degradation, image_seed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--model", nargs="+", default=[None], help="pipeline folders, one block of columns each")
    parser.add_argument("--offset", type=int, default=0, help="first val file (in sorted order)")
    parser.add_argument("--fidelity", type=float, nargs="+", default=[1.0, DEFAULT_FIDELITY, 0.0],
                        help="one column each")
    args = parser.parse_args()
    pipelines = [load_pipeline(model, device="cpu") for model in args.model]
    size = pipelines[0].unet.config.face_size
    files = list_images(args.data)[args.offset : args.offset + 8]
    clean = [resize_array(load_image_file(f), size) for f in files]
    degraded = [Degradation("moderate" if i < 4 else "severe", size, color=False)(c, image_seed(0, f.name))
                for i, (c, f) in enumerate(zip(clean, files))]
    restored = [restore_all(pipeline, degraded, SamplingOptions(fidelity=fidelity), batch_size=len(degraded))
                for pipeline in pipelines for fidelity in args.fidelity]
    rows = [np.concatenate([degraded[i], *(r[i] for r in restored), clean[i]], axis=1) for i in range(len(files))]
    grid = np.concatenate([np.concatenate(rows[:4], axis=0), np.concatenate(rows[4:], axis=0)], axis=1)
    save_image(grid, Path(args.output), overwrite=True)


if __name__ == "__main__":
    main()
