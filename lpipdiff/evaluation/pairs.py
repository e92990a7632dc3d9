"""Seeded clean/degraded test pairs: written once from a folder of clean faces, then reused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..checks import check_whole_number
from ..io.images import list_images, load_image_file, resize_array, save_image
from ..io.safe_files import OutputExistsError, refuse_existing, write_text
from ..training.degradation import Degradation, image_seed


def pair_names(files: list[Path]) -> list[str]:
    """The PNG name of each source file: its name up to the first dot, or, where two files would
    share that (``x.png`` and ``x.jpg``), the whole name with its dots as underscores, so that no two
    inputs ever merge into one pair."""
    short = [path.name.split(".")[0] + ".png" for path in files]
    long = [path.name.replace(".", "_") + ".png" for path in files]
    names = [s if short.count(s) == 1 else full for s, full in zip(short, long)]
    if len(set(names)) != len(names):  # only with names differing in case on a case-blind system
        raise ValueError(f"two input files map to the same pair name among {sorted(names)}; rename one")
    return names


def check_selection(face_size, limit, offset) -> None:
    """``limit`` may also be None (all faces)."""
    check_whole_number("face_size", face_size, 8, 4096)
    if limit is not None:
        check_whole_number("limit", limit, 1)
    check_whole_number("offset", offset, 0)


def make_test_set(
    source: str | Path,
    output: str | Path,
    preset: str = "moderate",
    face_size: int = 128,
    seed: int = 0,
    limit: int | None = None,
    offset: int = 0,
    overwrite: bool = False,
) -> list[str]:
    """Write a fixed, seeded set of clean/degraded pairs from a folder of clean faces.

    Writes ``output/clean/NAME.png`` (the face resized to ``face_size``) and
    ``output/degraded/NAME.png`` (names: :func:`pair_names`). The same arguments always give
    the same files, whatever the order in which the file system lists the source folder.
    ``offset`` and ``limit`` select files ``offset .. offset + limit`` of the sorted folder
    (disjoint tuning and test sets). A file already at an output path is kept
    (:class:`~lpipdiff.io.safe_files.OutputExistsError`) unless ``overwrite``. Returns the names written.
    """
    check_selection(face_size, limit, offset)
    source, output = Path(source), Path(output)
    files = list_images(source)
    if not files:
        raise ValueError(f"No images found in {source}")
    files = files[offset : offset + limit] if limit is not None else files[offset:]
    if not files:
        raise ValueError(f"{source} has {len(list_images(source))} images; none is left after --offset {offset}")
    degradation = Degradation(preset, face_size=face_size, color=False)
    names = pair_names(files)
    refuse_existing([output / part / name for name in names for part in ("clean", "degraded")], overwrite)
    for path, name in zip(files, names):
        clean = resize_array(load_image_file(path), face_size)
        degraded = degradation(clean, image_seed(seed, path.name))
        save_image(clean, output / "clean" / name, overwrite=overwrite)
        save_image(degraded, output / "degraded" / name, overwrite=overwrite)
    return names


def load_pairs(folder: Path) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    names = [p.name for p in list_images(folder / "clean")]
    clean = [load_image_file(folder / "clean" / n) for n in names]
    degraded = [load_image_file(folder / "degraded" / n) for n in names]
    return names, clean, degraded


STAMP = "pairs.json"


def ensure_pairs(
    data: Path, folder: Path, preset: str, face_size: int, seed: int, limit: int | None, offset: int = 0
) -> None:
    """Write the test pairs unless the same ones (same arguments) are already there.

    The folder is the evaluation's own: ``pairs.json`` lists every file it wrote there. Pairs
    written for other arguments are replaced, file by file as listed; a file that is not on
    the list (someone else's) stops the evaluation with its name, and nothing is deleted.
    """
    recipe = {"data": str(Path(data).resolve()), "preset": preset, "face_size": face_size, "seed": seed,
              "limit": limit, "offset": offset}
    stamp = folder / STAMP
    written = read_stamp(stamp)
    if written is not None and {k: v for k, v in written.items() if k != "files"} == recipe:
        return
    ours = set(written.get("files", [])) if written else set()
    present = {p.relative_to(folder).as_posix() for part in ("clean", "degraded") if (folder / part).is_dir()
               for p in (folder / part).rglob("*")}
    foreign = sorted(present - ours - {"clean", "degraded"})
    if foreign or (folder.is_dir() and any(p.name not in ("clean", "degraded", STAMP) for p in folder.iterdir())):
        others = foreign or sorted(p.name for p in folder.iterdir() if p.name not in ("clean", "degraded", STAMP))
        raise OutputExistsError(
            f"{folder} holds files lpipdiff did not write there ({', '.join(others[:3])}"
            f"{' ...' if len(others) > 3 else ''}); they were kept: choose another --pairs-dir or move them"
        )
    for name in sorted(ours & present):  # ours, written for other arguments
        (folder / name).unlink()
    stamp.unlink(missing_ok=True)
    names = make_test_set(data, folder, preset=preset, face_size=face_size, seed=seed, limit=limit, offset=offset)
    files = [f"{part}/{name}" for name in names for part in ("clean", "degraded")]
    write_text(stamp, json.dumps({**recipe, "files": files}))


def read_stamp(stamp: Path) -> dict | None:
    if not stamp.is_file():
        return None
    try:
        recorded = json.loads(stamp.read_text())
    except (ValueError, UnicodeDecodeError):
        return None
    return recorded if isinstance(recorded, dict) else None
