"""Digests of fixed-seed outputs of a model: run before and after a refactor; equal digests
mean bit-identical behaviour (aligned faces at three sampler settings, and a whole photo).

    python scripts/fixed_seed_digest.py                 # the bundled model
    python scripts/fixed_seed_digest.py --model FOLDER
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def digest(*arrays) -> str:
    return hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)).hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--faces", default=str(SHARED / "data" / "utkface" / "val"))
    parser.add_argument("--threads", type=int, default=2, help="compare digests taken with the same count: "
                        "torch's reductions, hence the last bits of a whole photo, depend on it")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from lpipdiff.faces.restorer import FaceRestorer
    from lpipdiff.io.images import list_images, load_image_file
    from lpipdiff.model.loading import load_pipeline
    from lpipdiff.model.sampling import SamplingOptions

    pipeline = load_pipeline(args.model, device="cpu")
    pipeline.set_progress_bar_config(disable=True)
    weights = SHARED / "weights" / "facexlib"
    faces = [load_image_file(p) for p in list_images(args.faces)[:3]]
    # The expert path (fidelity None: steps from noise, or from the noised input), then the
    # default path from the posterior mean at two fidelities and both fusions.
    settings = [dict(fidelity=None, num_inference_steps=1), dict(fidelity=None, num_inference_steps=20),
                dict(fidelity=None, num_inference_steps=10, strength=0.5), dict(fidelity=0.3),
                dict(fidelity=1.0), dict(fidelity=0.5, fusion="uniform")]
    for sampling in settings:
        generators = [torch.Generator().manual_seed(i) for i in range(len(faces))]
        result = pipeline(faces, generator=generators, output_type="np", **sampling)
        print(f"{sampling}: {digest(np.stack(result.images), np.stack(result.uncertainty))}")
    photo = load_image_file(ROOT / "examples" / "astronaut_photo_severe.png")
    restored = FaceRestorer(pipeline, weights_dir=weights).restore(photo, SamplingOptions(fidelity=None, steps=4))
    print(f"whole photo, 4 steps: {digest(restored.image)}")
    restored = FaceRestorer(pipeline, weights_dir=weights, upscale=2).restore(photo, SamplingOptions())
    print(f"whole photo, upscale 2, default sampling: {digest(restored.image)}")


if __name__ == "__main__":
    main()
