"""Evaluate a model against its own input on seeded synthetic test pairs.

    lpipdiff evaluate --data ../shared/data/utkface/val --output runs/eval

For each preset, clean/degraded pairs are written once (seeded by file name) under
``OUTPUT/pairs/PRESET`` and reused. The degraded input itself (the bicubic baseline: it
is already upsampled back to full size) and the model's restorations are measured side
by side: PSNR, SSIM, ST-LPIPS, FID, dlib identity distance with the fraction of faces
dlib would call the same person (< 0.6), and 68-point landmark distance. Results go to
``OUTPUT/results.json`` and ``OUTPUT/results.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .argtypes import image_folder, non_negative_int, output_folder, positive_int
from .image_io import save_image
from .metrics import Metrics
from .pairs import ensure_pairs, load_pairs
from .reports import results_table
from .safe_files import refuse_existing, write_text
from .sampling import PRESET_NAMES, add_sampling_arguments, restore_all, sampling_kwargs


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--data", required=True, type=image_folder, help="folder of clean aligned faces")
    add("--output", required=True, type=output_folder, help="results folder")
    add("--presets", nargs="+", default=list(PRESET_NAMES), choices=PRESET_NAMES)
    add("--limit", type=positive_int, default=None, help="use only the first N faces")
    add("--offset", type=non_negative_int, default=0, help="skip the first N faces (in sorted order)")
    add("--pairs-dir", type=output_folder, default=None, help="where the test pairs live (default: OUTPUT/pairs)")
    add_sampling_arguments(parser)
    add("--batch-size", type=positive_int, default=8, help="faces restored together")
    add("--no-fid", action="store_true", help="skip FID (slow, and biased on small sets)")
    add("--save-images", action="store_true", help="also write the restored faces")
    add("--label", default="LPIP-Diff", help="name of the model's rows in the table")
    add("--overwrite", action="store_true", help="replace results (and restored faces) of an earlier run in OUTPUT")
    return parser


def run(args) -> int:
    from .loading import load_pipeline

    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    refuse_existing([output / "results.json", output / "results.md"], args.overwrite)  # before hours of work
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
                save_image(image, output / "restored" / preset / name, overwrite=args.overwrite)
        baseline = {"n": len(names), **metrics(degraded, clean)}
        model = {"n": len(names), **metrics(restored, clean), "seconds_per_face": seconds}
        results["presets"][preset] = {"degraded input": baseline, args.label: model}
        print(f"{preset}: input {json.dumps(baseline)}\n{preset}: {args.label} {json.dumps(model)}")
    write_text(output / "results.json", json.dumps(results, indent=2), args.overwrite)
    write_text(output / "results.md", results_table(results), args.overwrite)
    print(results_table(results))
    return 0


def main(argv=None) -> int:
    from .argtypes import report_errors

    return report_errors(run, build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
