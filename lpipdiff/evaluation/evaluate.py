"""Evaluate a model against its own input on seeded synthetic test pairs.

    lpipdiff evaluate --data ../shared/data/utkface/val --output runs/eval

For each preset, clean/degraded pairs are written once (seeded by file name) under
``OUTPUT/pairs/PRESET`` and reused. The degraded input itself (the bicubic baseline: it
is already upsampled back to full size) and the model's restorations are measured side
by side: PSNR, SSIM, ST-LPIPS, FID, dlib identity distance with the fraction of faces
dlib would call the same person (< 0.6), and 68-point landmark distance, over all faces and
in each age band read from UTKFace file names (0-12, 13-19, 20-59, 60+; ``bands`` in the
JSON, :mod:`lpipdiff.evaluation.age_bands`). Results go to ``OUTPUT/results.json`` and ``OUTPUT/results.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..arguments.argtypes import image_folder, non_negative_int, output_folder, positive_int
from ..arguments.options import HelpFormatter, add_sampling_arguments, sampling_options
from ..config.defaults import PRESET_NAMES
from ..io.images import save_image
from ..io.safe_files import refuse_existing, write_text
from ..model.sampling import SamplingOptions, restore_all
from .metrics import Metrics, inception_features
from .pairs import ensure_pairs, load_pairs
from .reports import results_table


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=HelpFormatter)
    add = parser.add_argument
    add("--data", required=True, type=image_folder, help="folder of clean aligned faces")
    add("--output", required=True, type=output_folder, help="results folder")
    add("--presets", nargs="+", default=list(PRESET_NAMES), choices=PRESET_NAMES, help="degradations to measure")
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


def evaluate(
    pipeline,
    data: Path,
    output: Path,
    sampling: SamplingOptions,
    presets=PRESET_NAMES,
    limit: int | None = None,
    offset: int = 0,
    pairs_dir: Path | None = None,
    batch_size: int = 8,
    fid: bool = True,
    save_images: bool = False,
    label: str = "LPIP-Diff",
    model_name: str | None = None,
    overwrite: bool = False,
) -> dict:
    """Measure ``pipeline``'s restorations and the degraded inputs against the clean faces of ``data``,
    for each preset; writes ``output/results.json`` and ``output/results.md`` (an earlier run's are kept
    unless ``overwrite``) and returns the results."""
    output.mkdir(parents=True, exist_ok=True)
    refuse_existing(results_files(output), overwrite)  # before hours of work
    face_size = pipeline.unet.config.face_size
    pairs_root = pairs_dir or output / "pairs"
    metrics = Metrics(fid=fid)
    results = {"settings": {**sampling.as_dict(), "model": str(model_name)}, "presets": {}}
    for preset in presets:
        folder = pairs_root / preset
        ensure_pairs(data, folder, preset, face_size, seed=0, limit=limit, offset=offset)
        names, clean, degraded = load_pairs(folder)
        start = time.perf_counter()
        restored = restore_all(pipeline, degraded, sampling, batch_size=batch_size)
        seconds = (time.perf_counter() - start) / len(degraded)
        if save_images:
            for name, image in zip(names, restored):
                save_image(image, output / "restored" / preset / name, overwrite=overwrite)
        clean_features = inception_features(clean) if fid else None  # once for both rows
        baseline, baseline_bands = metrics.with_bands(names, degraded, clean, clean_features)  # overall and by band
        model, model_bands = metrics.with_bands(names, restored, clean, clean_features)
        model["seconds_per_face"] = seconds
        results["presets"][preset] = {"degraded input": baseline, label: model}
        results.setdefault("bands", {})[preset] = {
            band: {"degraded input": baseline_bands[band], label: model_bands[band]} for band in baseline_bands
        }
        print(f"{preset}: input {json.dumps(baseline)}\n{preset}: {label} {json.dumps(model)}")
    write_text(output / "results.json", json.dumps(results, indent=2), overwrite)
    write_text(output / "results.md", results_table(results), overwrite)
    return results


def results_files(output: Path) -> list[Path]:
    return [output / "results.json", output / "results.md"]


def main(argv=None, prog: str | None = None) -> int:
    from ..arguments.errors import report_errors

    return report_errors(run, build_parser(prog).parse_args(argv))


def run(args) -> int:
    from ..model.loading import load_pipeline

    sampling = sampling_options(args)
    refuse_existing(results_files(Path(args.output)), args.overwrite)  # before loading anything
    pipeline = load_pipeline(args.model, scheduler=sampling.scheduler, device=args.device, backend=args.backend)
    results = evaluate(
        pipeline, Path(args.data), Path(args.output), sampling, presets=args.presets, limit=args.limit,
        offset=args.offset, pairs_dir=Path(args.pairs_dir) if args.pairs_dir else None, batch_size=args.batch_size,
        fid=not args.no_fid, save_images=args.save_images, label=args.label, model_name=args.model,
        overwrite=args.overwrite,
    )
    print(results_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
