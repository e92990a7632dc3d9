"""Best of K: keep, of K samples of a face, the one the posterior mean agrees with most.

    python benchmarks/candidates.py --pairs runs/sweep22_severe/pairs/severe \
        --mean runs/sweep22_severe/restored/severe/fidelity_1_window \
        --candidates runs/sweep22_severe/restored/severe/fidelity_0.7_window \
                     runs/cand1000_severe/restored/severe/fidelity_0.7_window ... --output runs/best_of_3_severe

The samples are restorations of the same faces at one fidelity with other seeds (written by
``benchmarks/results.py --save-images --seed S``); the posterior mean is the fidelity-1
restoration, which the sampler computes anyway. Agreement is the distance between dlib face
embeddings, so the choice needs no ground truth: it favours the sample whose *identity* the
model's own mean estimate supports. Reports the first candidate (the product's output) and
the chosen one with every metric but FID, over all faces and per age band, from the saved
PNGs (so both are measured after the same 8-bit rounding).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from lpipdiff.evaluation.age_bands import per_band
from lpipdiff.evaluation.metrics import Metrics
from lpipdiff.evaluation.reports import markdown_table
from lpipdiff.io.images import list_images, load_image_file


def choose(geometry, mean: np.ndarray, candidates: list[np.ndarray]) -> int:
    """Index of the candidate whose embedding is closest to the posterior mean's."""
    target = geometry.embedding(mean)
    return int(np.argmin([np.linalg.norm(geometry.embedding(c) - target) for c in candidates]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", required=True, help="folder with clean/ (the ground truth, for measuring only)")
    parser.add_argument("--mean", required=True, help="the posterior means (fidelity 1), one PNG per face")
    parser.add_argument("--candidates", nargs="+", required=True, help="folders of samples, same names")
    parser.add_argument("--output", required=True)
    parser.add_argument("--label", default=None)
    args = parser.parse_args()

    names = [p.name for p in list_images(Path(args.pairs) / "clean")]
    clean = [load_image_file(Path(args.pairs) / "clean" / n) for n in names]
    metrics = Metrics(fid=False)
    chosen, first, picks = [], [], []
    for name in names:
        samples = [load_image_file(Path(folder) / name) for folder in args.candidates]
        pick = choose(metrics.geometry, load_image_file(Path(args.mean) / name), samples)
        chosen.append(samples[pick])
        first.append(samples[0])
        picks.append(pick)
    label = args.label or f"best of {len(args.candidates)}"
    rows, bands = [], []
    for setting, images in (("first sample (seed = face index)", first), (label, chosen)):
        faces = metrics.per_face(images, clean)
        rows.append({"setting": setting, "n": len(names), **{m: float(np.mean(v)) for m, v in faces.items()}})
        bands += [{"age band": band, "setting": setting, **values}
                  for band, values in per_band(names, faces).items() if values["n"]]
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    picked = {str(k): picks.count(k) for k in range(len(args.candidates))}
    (output / "candidates.json").write_text(json.dumps({"rows": rows, "bands": bands, "picks": picked}, indent=2))
    table = markdown_table(rows, ["setting", "n"]) + "\n" + markdown_table(bands, ["age band", "setting", "n"])
    (output / "candidates.md").write_text(table)
    print(f"picks per candidate: {picked}\n{table}")


if __name__ == "__main__":
    main()
