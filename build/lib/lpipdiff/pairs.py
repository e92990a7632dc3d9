"""Seeded clean/degraded test pairs: written once from a folder of clean faces, then reused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from .degradation import Degradation, image_seed
from .image_io import list_images, load_image_file, resize_array, save_image


def make_test_set(
    source: str | Path,
    output: str | Path,
    preset: str = "moderate",
    face_size: int = 128,
    seed: int = 0,
    limit: int | None = None,
    offset: int = 0,
) -> list[str]:
    """Write a fixed, seeded set of clean/degraded pairs from a folder of clean faces.

    Writes ``output/clean/NAME.png`` (the face resized to ``face_size``) and
    ``output/degraded/NAME.png``. The same arguments always give the same files, whatever
    the order in which the file system lists the source folder. ``offset`` and ``limit``
    select files ``offset .. offset + limit`` of the sorted folder (disjoint tuning and test
    sets). Returns the names written.
    """
    source, output = Path(source), Path(output)
    files = list_images(source)
    if not files:
        raise ValueError(f"No images found in {source}")
    files = files[offset : offset + limit] if limit else files[offset:]
    degradation = Degradation(preset, face_size=face_size, color=False)
    names = []
    for path in files:
        clean = resize_array(load_image_file(path), face_size)
        degraded = degradation(clean, image_seed(seed, path.name))
        name = path.name.split(".")[0] + ".png"
        save_image(clean, output / "clean" / name)
        save_image(degraded, output / "degraded" / name)
        names.append(name)
    return names


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
