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
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from .degradation import make_test_set
from .image_io import list_images, load_image_file, save_image
from .metrics import SAME_PERSON_THRESHOLD, psnr, ssim

METRIC_LABELS = {
    "psnr": "PSNR ↑",
    "ssim": "SSIM ↑",
    "lpips": "ST-LPIPS ↓",
    "fid": "FID ↓",
    "identity": "ID dist ↓",
    "same_person": "same person ↑",
    "landmarks": "LMD (px) ↓",
    "seconds_per_face": "s / face",
}


def load_pairs(folder: Path) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    names = [p.name for p in list_images(folder / "clean")]
    clean = [load_image_file(folder / "clean" / n) for n in names]
    degraded = [load_image_file(folder / "degraded" / n) for n in names]
    return names, clean, degraded


def ensure_pairs(
    data: Path, folder: Path, preset: str, face_size: int, seed: int, limit: int | None, offset: int = 0
) -> None:
    """Write the test pairs unless the same ones (same arguments) are already there."""
    recipe = {"data": str(Path(data).resolve()), "preset": preset, "face_size": face_size, "seed": seed,
              "limit": limit, "offset": offset}
    stamp = folder / "pairs.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == recipe:
        return
    for stale in ("clean", "degraded"):  # written for other arguments: other files
        shutil.rmtree(folder / stale, ignore_errors=True)
    make_test_set(data, folder, preset=preset, face_size=face_size, seed=seed, limit=limit, offset=offset)
    stamp.write_text(json.dumps(recipe))


def restore_all(pipeline, degraded: list[np.ndarray], batch_size: int, seed: int, **sampling) -> list[np.ndarray]:
    """Restore faces in batches; face i always gets seed + i, whatever the batching."""
    restored = []
    for start in range(0, len(degraded), batch_size):
        chunk = degraded[start : start + batch_size]
        generators = [torch.Generator().manual_seed(seed + start + i) for i in range(len(chunk))]
        restored.extend(pipeline(chunk, generator=generators, output_type="np", **sampling).images)
    return restored


class Metrics:
    """All metrics, with the heavy models loaded once and the missing ones skipped."""

    def __init__(self, fid: bool = True):
        self.fid = fid
        try:
            from .metrics import FaceGeometry, PerceptualDistance

            self.geometry, self.lpips = FaceGeometry(), PerceptualDistance()
        except ImportError as error:
            raise SystemExit(
                f"evaluation needs its extra packages: pip install -r requirements-eval.txt ({error})"
            ) from None

    def __call__(self, images: list[np.ndarray], references: list[np.ndarray]) -> dict[str, float]:
        identity = [self.geometry.identity_distance(i, r) for i, r in zip(images, references)]
        result = {
            "psnr": float(np.mean([psnr(i, r) for i, r in zip(images, references)])),
            "ssim": float(np.mean([ssim(i, r) for i, r in zip(images, references)])),
            "lpips": float(np.mean([self.lpips(i, r) for i, r in zip(images, references)])),
            "identity": float(np.mean(identity)),
            "same_person": float(np.mean(np.asarray(identity) < SAME_PERSON_THRESHOLD)),
            "landmarks": float(np.mean([self.geometry.landmark_distance(i, r) for i, r in zip(images, references)])),
        }
        if self.fid:
            from .metrics import frechet_inception_distance

            result["fid"] = frechet_inception_distance(images, references)
        return result


def markdown_table(results: dict) -> str:
    columns = [k for k in METRIC_LABELS if any(k in row for rows in results["presets"].values() for row in rows.values())]
    lines = [
        "| preset | method | n | " + " | ".join(METRIC_LABELS[c] for c in columns) + " |",
        "|---|---|---|" + "---|" * len(columns),
    ]
    for preset, rows in results["presets"].items():
        for method, row in rows.items():
            cells = [f"{row[c]:.4g}" if c in row else "" for c in columns]
            lines.append(f"| {preset} | {method} | {row['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    from .cli import add_sampling_arguments

    parser = parser or argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--data", required=True, help="folder of clean aligned faces")
    add("--output", required=True, help="results folder")
    add("--presets", nargs="+", default=["moderate", "severe"], choices=["moderate", "severe"])
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
    sampling = dict(num_inference_steps=args.steps, patch_stride=args.stride, fusion=args.fusion, strength=args.strength)
    results = {"settings": {**sampling, "scheduler": args.scheduler, "seed": args.seed, "model": str(args.model)}, "presets": {}}
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
        baseline = {"n": len(names), **metrics(degraded, clean)}
        model = {"n": len(names), **metrics(restored, clean), "seconds_per_face": seconds}
        results["presets"][preset] = {"degraded input": baseline, args.label: model}
        print(f"{preset}: input {json.dumps(baseline)}\n{preset}: {args.label} {json.dumps(model)}")
    (output / "results.json").write_text(json.dumps(results, indent=2))
    (output / "results.md").write_text(markdown_table(results))
    print(markdown_table(results))
    return 0


def main(argv=None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
