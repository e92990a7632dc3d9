"""Sampler-settings sweeps of a model on seeded val pairs (the tables in docs/RESULTS.md).

    python benchmarks/results.py --data ../shared/data/utkface/val --output runs/results \
        --offset 200 --limit 24 --sweep fidelity

For each preset and each setting of the sweep it restores the same faces with the same seeds
and reports the metrics of `lpipdiff evaluate` (without FID, which is meaningless on a few
dozen faces) next to the degraded input's. Every setting is a change from the reference: 20
DDIM steps from noise (``fidelity=None``), stride 32, uniform fusion, strength 1.0.

- ``--sweep sampler``: one change at a time from the reference, plus step/strength pairs.
- ``--sweep fidelity``: the posterior-mean start at fidelity 1 ... 0 over a 10-step schedule,
  next to today's expert modes (1 step, 20 steps from noise, 10 steps at strength 0.5).
- ``--sweep fusion``: uniform against window fusion at the default fidelity and at fidelity 1.
- ``--sweep default``: the product's sampler (window fusion, ``--schedule-steps``, 10 in the per-age-band
  sweep that chose fidelity 1) at ``--fidelities``.
- ``--sweep speed``: the default fidelity over shorter schedules and other solvers (fewer UNet
  evaluations a face; the sweep that chose the 5-step schedule).

Every setting is also reported in each age band of the UTKFace file names.

Every table also has a ``seam`` column (:func:`seam_contrast`): the step of the error against
the clean face between neighbouring pixels across the patch grid's borders, over the steps
just beside them (1: no seam).

The pipeline's defaults are chosen from these tables, so run them on faces the headline
evaluation does not use (``--offset``). Writes OUTPUT/sweep.json and OUTPUT/sweep.md.
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path

import numpy as np

from lpipdiff.config.defaults import BACKEND_NAMES, DEFAULT_BACKEND, DEFAULT_FIDELITY, DEFAULT_STEPS, PRESET_NAMES
from lpipdiff.evaluation.age_bands import per_band
from lpipdiff.evaluation.metrics import Metrics, seam_contrast
from lpipdiff.evaluation.pairs import ensure_pairs, load_pairs
from lpipdiff.evaluation.reports import markdown_table
from lpipdiff.io.images import save_image
from lpipdiff.model.loading import load_pipeline
from lpipdiff.model.sampling import SamplingOptions, restore_all

# Each setting changes these SamplingOptions fields of the reference.
REFERENCE = {"fidelity": None, "steps": 20, "stride": 32, "fusion": "uniform", "strength": 1.0}
SAMPLER_SETTINGS = {
    "reference (20 steps, stride 32, uniform, strength 1.0)": {},
    "10 steps": {"steps": 10},
    "50 steps": {"steps": 50},
    "stride 16": {"stride": 16},
    "stride 64 (no overlap)": {"stride": 64},
    "window fusion": {"fusion": "window"},
    "strength 0.5": {"strength": 0.5},
    "10 steps, strength 0.7": {"steps": 10, "strength": 0.7},
    "10 steps, strength 0.5": {"steps": 10, "strength": 0.5},
    "5 steps": {"steps": 5},
    "3 steps": {"steps": 3},
    "2 steps": {"steps": 2},
    "1 step (the model's mean estimate)": {"steps": 1},
}
FIDELITY_SCHEDULE = 10  # steps of the schedule the posterior mean re-enters (the pipeline's DEFAULT_STEPS)
FIDELITY_SETTINGS = {  # the decision's rows first (fidelity falling), then today's modes for comparison
    **{f"fidelity {f:g}": {"fidelity": f, "steps": FIDELITY_SCHEDULE}
       for f in (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.3, 0.0)},
    "1 step (the model's mean estimate)": {"steps": 1},
    "10 steps, strength 0.5": {"steps": 10, "strength": 0.5},
    "20 steps from noise": {},
}
FUSION_SETTINGS = {
    f"fidelity {fidelity:g}, {fusion}": {"fidelity": fidelity, "steps": DEFAULT_STEPS, "fusion": fusion}
    for fidelity in (DEFAULT_FIDELITY, 1.0)
    for fusion in ("uniform", "window")
}
DEFAULT_FIDELITIES = (1.0, 0.9, 0.7, 0.5, 0.3)


def default_settings(fidelities=DEFAULT_FIDELITIES, steps: int = DEFAULT_STEPS) -> dict:
    """The product's sampler (window fusion; the per-age-band sweep used the 10-step schedule) at each fidelity."""
    return {f"fidelity {f:g}, window": {"fidelity": f, "steps": steps, "fusion": "window"}
            for f in fidelities}


# Fewer UNet evaluations at fidelity 0.3 (the default then) with window fusion; the schedule the
# posterior mean re-enters, and the solver, vary. The rule that chose among them is in docs/RESULTS.md
# ("Speed: fewer UNet evaluations"), written before this sweep was run.
SPEED_SETTINGS = {
    f"{scheduler} {steps}-step schedule": {"fidelity": 0.3, "steps": steps, "fusion": "window", "scheduler": scheduler}
    for scheduler, steps in (("ddim", 10), ("ddim", 5), ("ddim", 4), ("ddim", 3), ("unipc", 4), ("unipc", 3),
                             ("dpm", 3))
}
SWEEPS = {"sampler": SAMPLER_SETTINGS, "fidelity": FIDELITY_SETTINGS, "fusion": FUSION_SETTINGS,
          "default": default_settings(), "speed": SPEED_SETTINGS}
COLUMNS = ["unet_evaluations", "psnr", "ssim", "lpips", "identity", "same_person", "landmarks", "seam",
           "seconds_per_face"]


def band_rows(row: dict, names: list[str], faces: dict[str, list[float]]) -> list[dict]:
    """``row`` (preset, setting) repeated for every age band with the band's means."""
    return [{**{k: row[k] for k in ("preset", "setting")}, "age band": band, **values}
            for band, values in per_band(names, faces).items() if values["n"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--model", default=None)
    parser.add_argument("--limit", type=int, default=24)
    parser.add_argument("--offset", type=int, default=200, help="skip the first N faces (the headline's)")
    parser.add_argument("--presets", nargs="+", default=list(PRESET_NAMES), choices=PRESET_NAMES)
    parser.add_argument("--sweep", default="sampler", choices=sorted(SWEEPS))
    parser.add_argument("--backend", default=DEFAULT_BACKEND, choices=BACKEND_NAMES,
                        help="how the UNet runs (lpipdiff.model.backends)")
    parser.add_argument("--settings", nargs="*", default=None, help="subset of the sweep's setting names")
    parser.add_argument("--schedule-steps", type=int, default=None,
                        help=f"with --sweep default: the schedule below fidelity 1 (default {DEFAULT_STEPS})")
    parser.add_argument("--fidelities", type=float, nargs="+", default=None,
                        help=f"with --sweep default: the fidelities (default {' '.join(map(str, DEFAULT_FIDELITIES))})")
    parser.add_argument("--model-label", default="", help="prefix of every setting's name (comparing weights)")
    parser.add_argument("--seed", type=int, default=0, help="face i gets seed + i")
    parser.add_argument("--save-images", action="store_true", help="write OUTPUT/restored/PRESET/SETTING/NAME")
    args = parser.parse_args()
    if args.fidelities or args.schedule_steps:
        steps = args.schedule_steps or DEFAULT_STEPS
        SWEEPS["default"] = default_settings(args.fidelities or DEFAULT_FIDELITIES, steps)

    output = Path(args.output)
    pipeline = load_pipeline(args.model, device="cpu", backend=args.backend)
    metrics = Metrics(fid=False)
    rows, bands = [], []

    def measure(preset, setting, images, clean, names, seam, **extra):
        faces = metrics.per_face(images, clean)
        row = {"preset": preset, "setting": setting, **{m: float(np.mean(v)) for m, v in faces.items()},
               "seam": seam(images), **extra}
        rows.append(row)
        new_bands = band_rows(row, names, faces)
        bands.extend(new_bands)
        for line in [row, *new_bands]:
            print(json.dumps(line), flush=True)
        output.mkdir(parents=True, exist_ok=True)
        (output / "partial.json").write_text(json.dumps({"rows": rows, "bands": bands}, indent=2))  # as it goes

    for preset in args.presets:
        folder = output / "pairs" / preset
        face_size = pipeline.unet.config.face_size
        ensure_pairs(Path(args.data), folder, preset, face_size, seed=0, limit=args.limit, offset=args.offset)
        names, clean, degraded = load_pairs(folder)
        seam = partial(seam_contrast, references=clean, patch_size=pipeline.unet.config.patch_size,
                       stride=REFERENCE["stride"])
        measure(preset, "degraded input", degraded, clean, names, seam)
        for name, change in SWEEPS[args.sweep].items():
            if args.settings and name not in args.settings:
                continue
            start = time.perf_counter()
            restored = restore_all(pipeline, degraded, SamplingOptions(**{**REFERENCE, **change, "seed": args.seed}))
            seconds = (time.perf_counter() - start) / len(degraded)
            if args.save_images:
                for face, image in zip(names, restored):
                    save_image(image, output / "restored" / preset / name.replace(" ", "_").replace(",", "") / face)
            options = SamplingOptions(**{**REFERENCE, **change})
            measure(preset, args.model_label + name, restored, clean, names, seam, seconds_per_face=seconds,
                    unet_evaluations=options.unet_steps())
    output.mkdir(parents=True, exist_ok=True)
    summary = {"faces_per_preset": len(clean), "offset": args.offset, "rows": rows, "bands": bands}
    (output / "sweep.json").write_text(json.dumps(summary, indent=2))
    table = markdown_table(rows, ["preset", "setting"], COLUMNS)
    table += "\n" + markdown_table(bands, ["preset", "age band", "setting", "n"], COLUMNS[:-2])
    (output / "sweep.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
