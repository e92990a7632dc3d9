"""Evaluate a model against its own input on seeded synthetic test pairs.

    lpipdiff evaluate --data ../shared/data/utkface/val --output runs/eval

For each preset, clean/degraded pairs are written once (seeded by file name) under
``OUTPUT/pairs/PRESET`` and reused. The degraded input itself (the bicubic baseline: it
is already upsampled back to full size) and the model's restorations are measured side
by side: PSNR, SSIM, ST-LPIPS, FID, dlib identity distance with the fraction of faces
dlib would call the same person (< 0.6), and 68-point landmark distance, over all faces and
in each age band read from UTKFace file names (0-12, 13-19, 20-59, 60+; ``bands`` in the
JSON, :mod:`lpipdiff.age_bands`). Results go to ``OUTPUT/results.json`` and ``OUTPUT/results.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .image_io import save_image
from .metrics import Metrics
from .pairs import ensure_pairs, load_pairs
from .reports import results_table
from .sampling import PRESET_NAMES, add_sampling_arguments, restore_all, sampling_kwargs


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--data", required=True, help="folder of clean aligned faces")
    add("--output", required=True, help="results folder")
    add("--presets", nargs="+", default=list(PRESET_NAMES), choices=PRESET_NAMES)
    add("--limit", type=int, default=None, help="use only the first N faces")
    add("--offset", type=int, default=0, help="skip the first N faces (in sorted order)")
    add("--pairs-dir", default=None, help="where the test pairs live (default: OUTPUT/pairs)")
    add_sampling_arguments(parser)
    add("--batch-size", type=int, default=8, help="faces restored together")
    add("--no-fid", action="store_true", help="skip FID (slow, and biased on small sets)")
    add("--save-images", action="store_true", help="also write the restored faces")
    add("--label", default="LPIP-Diff", help="name of the model's rows in the table")
    return parser


def run(args) -> int:
    from .loading import load_pipeline

    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    pipeline = load_pipeline(args.model, scheduler=args.scheduler, device=args.device)
    pipeline.set_progress_bar_config(disable=True)
    face_size = pipeline.unet.config.face_size
    pairs_root = Path(args.pairs_dir) if args.pairs_dir else output / "pairs"
    metrics = Metrics(fid=not args.no_fid)
    sampling = sampling_kwargs(args)
    settings = {**sampling, "scheduler": args.scheduler, "seed": args.seed, "model": str(args.model)}
    results = {"settings": settings, "presets": {}}
    for preset in args.presets:
        folder = pairs_root / preset
        ensure_pairs(Path(args.data), folder, preset, face_size, seed=0, limit=args.limit, offset=args.offset)
        names, clean, degraded = load_pairs(folder)
        start = time.perf_counter()
        restored = restore_all(pipeline, degraded, args.batch_size, args.seed, **sampling)
        seconds = (time.perf_counter() - start) / len(degraded)
        if args.save_images:
            for name, image in zip(names, restored):
                save_image(image, output / "restored" / preset / name)
        baseline, baseline_bands = metrics.with_bands(names, degraded, clean)  # overall and per age band
        model, model_bands = metrics.with_bands(names, restored, clean)
        model["seconds_per_face"] = seconds
        results["presets"][preset] = {"degraded input": baseline, args.label: model}
        results.setdefault("bands", {})[preset] = {
            band: {"degraded input": baseline_bands[band], args.label: model_bands[band]} for band in baseline_bands
        }
        print(f"{preset}: input {json.dumps(baseline)}\n{preset}: {args.label} {json.dumps(model)}")
    (output / "results.json").write_text(json.dumps(results, indent=2))
    (output / "results.md").write_text(results_table(results))
    print(results_table(results))
    return 0


def main(argv=None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
