"""Age bands of UTKFace faces: the age in a file name, its band, per-band figures and weights.

UTKFace names its files ``AGE_GENDER_RACE_DATETIME.jpg.chip.jpg`` (the evaluation's pairs
keep the part before the first dot: ``AGE_GENDER_RACE_DATETIME.png``), so the age is the
whole number before the first underscore. The bands are those docs/RESULTS.md reports:
children 0-12, teenagers 13-19, adults 20-59, older adults 60+. A face whose name has no age
belongs to no band; it still counts in the figures over all faces.

    >>> band_of_name("65_1_0_20170110122011555.jpg.chip.jpg")
    '60+'
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

# (label, first age, last age or None for no upper end), in order.
BANDS: tuple[tuple[str, int, int | None], ...] = (
    ("0-12", 0, 12), ("13-19", 13, 19), ("20-59", 20, 59), ("60+", 60, None),
)
BAND_NAMES = tuple(label for label, _, _ in BANDS)
_AGE = re.compile(r"^(\d{1,3})_")


def age_from_name(name: str) -> int | None:
    """The age at the start of a UTKFace file name (any folder part is ignored), or None."""
    match = _AGE.match(str(name).replace("\\", "/").rsplit("/", 1)[-1])
    return int(match.group(1)) if match else None


def band_of_age(age: int) -> str:
    """The label of the band holding ``age`` (0 or more)."""
    if age < 0:
        raise ValueError(f"an age is 0 or more, got {age}")
    for label, first, last in BANDS:
        if first <= age and (last is None or age <= last):
            return label
    raise AssertionError("the bands cover every age")  # pragma: no cover


def band_of_name(name: str) -> str | None:
    """The band of a UTKFace file name, or None when the name has no age."""
    age = age_from_name(name)
    return None if age is None else band_of_age(age)


def band_indices(names: Sequence[str]) -> dict[str, list[int]]:
    """The positions of the faces of each band, every band present (empty where no face is)."""
    groups: dict[str, list[int]] = {label: [] for label in BAND_NAMES}
    for i, name in enumerate(names):
        band = band_of_name(name)
        if band is not None:
            groups[band].append(i)
    return groups


def band_counts(names: Sequence[str]) -> dict[str, int]:
    return {band: len(indices) for band, indices in band_indices(names).items()}


def per_band(
    names: Sequence[str],
    per_face: dict[str, Sequence[float]],
    aggregate: Callable[[Sequence[float]], float] | None = None,
) -> dict[str, dict[str, float]]:
    """Per-face metric lists (``{"identity": [one value a face], ...}``, in the order of
    ``names``) summarised in every band: ``{band: {"n": faces, metric: mean, ...}}``. Bands
    without faces have ``n`` 0 and no metric. ``aggregate`` replaces the mean."""
    aggregate = aggregate or (lambda values: float(np.mean(values)))
    for metric, values in per_face.items():
        if len(values) != len(names):
            raise ValueError(f"{metric}: {len(values)} values for {len(names)} faces")
    result = {}
    for band, indices in band_indices(names).items():
        row: dict[str, float] = {"n": len(indices)}
        if indices:
            row.update({metric: aggregate([values[i] for i in indices]) for metric, values in per_face.items()})
        result[band] = row
    return result


def parse_band_weights(text: str) -> dict[str, float]:
    """``--band-weights``: ``"0-12=1,13-19=1,20-59=2,60+=3"`` (bands not named get 0) or four
    numbers in band order (``"1,1,2,3"``). Weights are relative sampling weights of a face of
    that band; at least one must be positive."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if parts and all("=" in p for p in parts):
        weights = dict.fromkeys(BAND_NAMES, 0.0)
        for part in parts:
            band, value = (s.strip() for s in part.split("=", 1))
            if band not in weights:
                raise ValueError(f"unknown age band {band!r}; bands are {', '.join(BAND_NAMES)}")
            weights[band] = float(value)
    elif len(parts) == len(BAND_NAMES) and not any("=" in p for p in parts):
        weights = {band: float(value) for band, value in zip(BAND_NAMES, parts)}
    else:
        raise ValueError(f"band weights are BAND=WEIGHT pairs or {len(BAND_NAMES)} numbers, got {text!r}")
    if any(w < 0 or not np.isfinite(w) for w in weights.values()) or not any(w > 0 for w in weights.values()):
        raise ValueError(f"band weights must be finite, 0 or more, and not all 0: {text!r}")
    return weights


def sampling_weights(names: Sequence[str], band_weights: dict[str, float], unknown: float = 0.0) -> np.ndarray:
    """A probability for every face (summing to 1): a face of band B is drawn ``band_weights[B]``
    times as often as a face of weight 1, so a band's share of draws is its weight times its
    count, normalised. Faces without an age get ``unknown``."""
    bands = [band_of_name(n) for n in names]
    weights = np.array([unknown if b is None else band_weights.get(b, 0.0) for b in bands], dtype=np.float64)
    total = weights.sum()
    if total <= 0:
        raise ValueError("no face has a positive sampling weight (are these UTKFace file names?)")
    return weights / total


def band_shares(names: Sequence[str], probabilities: np.ndarray) -> dict[str, float]:
    """The share of draws each band gets under ``probabilities`` (for logs and docs)."""
    return {band: float(probabilities[indices].sum()) for band, indices in band_indices(names).items()}
