"""Whole-photo restoration of real photos: does any face come back softer than its input?

    python benchmarks/real_photos.py --output runs/real_photos --figure docs/real_photos.png

Photos: the demo's two examples (scikit-image's astronaut, degraded) and photos made from
public-domain pictures that ship with installed packages: scikit-image's astronaut (NASA)
and cameraman, and matplotlib's Grace Hopper (US Navy), rescaled to several face sizes and
degraded with a fixed seed, or left as they are. Every photo is restored with the
same seed at ``detail`` 0 (the restoration alone, scaled up: the behaviour before
``lpipdiff.faces.detail``) and at the default, 1.

Per face: its size in the output (side of the aligned crop); the detail ratio, mean absolute
Laplacian of the luma over the central 80 % of the aligned face region, restored photo over
the bicubic upscale of the input (>= 1: at least the input's detail); the change, mean
absolute difference from the bicubic upscale over that region (0..255; 0 would mean the
restoration was skipped); the structure ratio, the same ratio after non-local means denoising
of both images (the detail ratio counts noise as detail, so a restoration that removes noise
scores below 1 on it; this one does not); dlib's identity distance between the restored face and the
bicubic upscale's face, both cut out as aligned crops at the output size.
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

import cv2
import numpy as np
from skimage import data

from lpipdiff.arguments.options import add_face_weights_argument, add_sampling_arguments, face_weights, sampling_options
from lpipdiff.config.defaults import DEFAULT_DETAIL
from lpipdiff.evaluation.metrics import FaceGeometry
from lpipdiff.faces.restorer import FaceRestorer
from lpipdiff.io.images import load_image_file, resize_array, save_image
from lpipdiff.model.loading import load_pipeline
from lpipdiff.training.degradation import Degradation

from face_regions import aligned_crop, face_mask, laplacian_energy, structure_energy

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FIGURE_SIDE = 256
DETAILS = (0.0, DEFAULT_DETAIL)


def grace_hopper() -> np.ndarray:
    import matplotlib.cbook

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as file:
        encoded = np.frombuffer(file.read(), np.uint8)
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255.0


SOURCES = {
    "astronaut": lambda: data.astronaut().astype(np.float32) / 255.0,
    "cameraman": lambda: np.repeat(data.camera()[..., None], 3, axis=2).astype(np.float32) / 255.0,
    "hopper": grace_hopper,
}
# Side of the aligned face crop in each source (RetinaFace landmarks, the utkface template):
# the degradation presets are defined relative to the face, as in examples/make_examples.py.
FACE_SIDE = {"astronaut": 110, "cameraman": 77, "hopper": 212}

# (source or example file, rescale factor, degradation preset or None, seed, upscale)
CASES = [
    ("astronaut_photo_moderate.png", 1.0, None, 0, 1),
    ("astronaut_photo_moderate.png", 1.0, None, 0, 2),
    ("astronaut_photo_moderate.png", 1.0, None, 0, 4),
    ("astronaut_photo_severe.png", 1.0, None, 0, 2),
    ("astronaut_photo_severe.png", 1.0, None, 0, 4),
    ("astronaut", 0.27, "moderate", 3, 2),
    ("astronaut", 0.68, "moderate", 4, 2),
    ("cameraman", 1.0, None, 0, 2),
    ("hopper", 1.0, None, 0, 1),
    ("hopper", 1.0, "moderate", 5, 1),
    ("hopper", 1.0, "severe", 6, 1),
    ("hopper", 0.6, "moderate", 7, 2),
]


def make_photo(source: str, scale: float, preset: str | None, seed: int) -> tuple[str, np.ndarray]:
    if source.endswith(".png"):
        return source, load_image_file(EXAMPLES / source)
    photo = SOURCES[source]()
    if scale != 1:
        height, width = photo.shape[:2]
        photo = resize_array(photo, (round(width * scale), round(height * scale)))
    name = f"{source} x{scale:g}" + (f" {preset}" if preset else " as is")
    if preset:
        face_side = round(FACE_SIDE[source] * scale)
        photo = Degradation(preset, face_size=face_side, color=False)(photo, np.random.default_rng(seed))
    return name, photo


def measure(args, details=DETAILS) -> tuple[list[dict], list[np.ndarray]]:
    sampling = sampling_options(args)
    pipeline = load_pipeline(args.model, device=args.device)
    face_size = pipeline.unet.config.face_size
    geometry = FaceGeometry()
    rows, figure_rows = [], []
    for source, scale, preset, seed, upscale in CASES:
        name, photo = make_photo(source, scale, preset, seed)
        outputs = {
            detail: FaceRestorer(pipeline, weights_dir=face_weights(args), upscale=upscale, detail=detail).restore(
                photo, sampling)
            for detail in details
        }
        restored = outputs[details[-1]]  # the faces and their affines are the same at every detail
        height, width = restored.image.shape[:2]
        bicubic = np.clip(cv2.resize(photo, (width, height), interpolation=cv2.INTER_CUBIC), 0, 1)
        for index, affine in enumerate(restored.affines):
            side = round(face_size * upscale / np.sqrt(abs(np.linalg.det(affine[:, :2]))))
            mask = face_mask(affine, upscale, face_size, bicubic.shape)
            reference = laplacian_energy(bicubic, mask)
            structure_reference = structure_energy(bicubic, mask)
            crop = partial(aligned_crop, affine=affine, upscale=upscale, face_size=face_size, size=side)
            row = dict(photo=name, upscale=upscale, face=index + 1, side=side, larger=side > face_size,
                       degraded=preset is not None or "_photo_" in source)
            for detail, output in outputs.items():
                row[("ratio", detail)] = laplacian_energy(output.image, mask) / reference
                row[("structure", detail)] = structure_energy(output.image, mask) / structure_reference
                row[("change", detail)] = float(np.abs(output.image - bicubic)[mask].mean() * 255)
                row[("identity", detail)] = geometry.identity_distance(crop(output.image), crop(bicubic))
            rows.append(row)
            print(format_row(row, details), flush=True)
            images = [bicubic] + [output.image for output in outputs.values()]
            figure_rows.append(np.concatenate([resize_array(crop(image), FIGURE_SIDE) for image in images], axis=1))
            if args.output:
                stem = f"{len(rows):02d}_{name.replace(' ', '_').replace('.png', '')}_u{upscale}"
                save_image(np.concatenate([crop(image) for image in images], axis=1), Path(args.output) / f"{stem}.png",
                           overwrite=True)
    return rows, figure_rows


def header(details=DETAILS) -> str:
    columns = [f"{kind}: detail {d:g}" for kind in ("detail ratio", "structure ratio") for d in details]
    columns += [f"change, detail {details[-1]:g}"] + [f"ID dist to input: detail {d:g}" for d in details]
    return ("| photo | upscale | face px in output | path | " + " | ".join(columns) + " |\n"
            + "|---" * (4 + len(columns)) + "|")


def format_row(row: dict, details=DETAILS) -> str:
    path = "input detail above model" if row["larger"] else "model size (unchanged)"
    ratios = " | ".join(f"{row[(kind, d)]:.3f}" for kind in ("ratio", "structure") for d in details)
    identities = " | ".join(f"{row[('identity', d)]:.3f}" for d in details)
    return (f"| {row['photo']} | {row['upscale']} | {row['side']} | {path} | {ratios} | "
            f"{row[('change', details[-1])]:.2f} | {identities} |")


def adult_summary(rows: list[dict], details=DETAILS) -> list[str]:
    """Identity to the input face and structure ratio over the degraded adult faces
    larger than the model (every face here is an adult's: Eileen Collins (astronaut, about 40), the
    cameraman, Grace Hopper (about 75))."""
    larger = [row for row in rows if row["larger"] and row["degraded"]]
    lines = []
    for detail in details:
        identity = np.mean([row[("identity", detail)] for row in larger])
        structure = [row[("structure", detail)] for row in larger]
        lines.append(f"detail {detail:g}, {len(larger)} degraded adult faces larger than the model: "
                     f"mean ID dist to the input face {identity:.3f}, structure ratio lowest {min(structure):.3f}, "
                     f"mean {np.mean(structure):.3f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_sampling_arguments(parser)  # --model, --fidelity, ...: the defaults are the product's
    add_face_weights_argument(parser)
    parser.add_argument("--output", default=None, help="folder for per-face crops: bicubic | detail 0 | detail 1")
    parser.add_argument("--figure", default=None, help="PNG of every face: bicubic | detail 0 | detail 1")
    parser.add_argument("--details", type=float, nargs="+", default=list(DETAILS),
                        help="detail values to compare, the product's default last (default: 0 and the default)")
    args = parser.parse_args()
    details = tuple(args.details)
    print(f"sampling: {sampling_options(args)}")
    print(header(details))
    rows, figure_rows = measure(args, details)
    print(header(details))
    print("\n".join(format_row(row, details) for row in rows))
    larger = [row for row in rows if row["larger"]]
    if larger:
        print("\n".join(adult_summary(rows, details)))
        for kind, label in (("ratio", "detail"), ("structure", "structure")):
            for detail in details:
                worst = min(larger, key=lambda row: row[(kind, detail)])
                print(f"detail {detail:g}: lowest {label} ratio of a face larger than the model "
                      f"{worst[(kind, detail)]:.3f} ({worst['photo']}, upscale {worst['upscale']})")
    if args.figure:
        save_image(np.concatenate(figure_rows, axis=0), Path(args.figure), overwrite=True)


if __name__ == "__main__":
    main()
