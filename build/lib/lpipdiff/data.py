"""Training data: random patches of clean faces with their degraded twins, made on the fly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .degradation import Degradation
from .image_io import list_images, load_image_file, resize_array
from .unet import coordinate_channels


def to_model_range(image: np.ndarray) -> torch.Tensor:
    """HxWx3 float [0, 1] -> 3xHxW tensor in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1) * 2 - 1


class FacePatchDataset(Dataset):
    """Random ``patch_size`` crops of clean faces, degraded on the fly.

    Each item is a dict of ``(C, P, P)`` tensors in [-1, 1]: ``clean``, ``degraded`` (the same
    crop of the degraded face), ``coordinates`` (where the crop lies in the face) and
    ``context`` (the whole degraded face resized to ``P``). Crops start at any pixel, not only
    at grid positions, so the model learns every location the sampler may ask about.

    Randomness is drawn from torch's generator, which DataLoader seeds differently in every
    worker and every epoch, so workers never repeat each other and ``torch.manual_seed``
    makes a run reproducible.

    Args:
        folder: a folder of clean, aligned face images of any size.
        face_size, patch_size: model geometry.
        presets, preset_weights: the degradation mixture (names from ``degradation.PRESETS``).
        flip: random horizontal flips (faces are symmetric enough; the coordinates stay true).
    """

    def __init__(
        self,
        folder: str | Path,
        face_size: int = 128,
        patch_size: int = 64,
        presets: tuple[str, ...] = ("moderate", "severe"),
        preset_weights: tuple[float, ...] = (0.5, 0.5),
        flip: bool = True,
    ):
        self.files = list_images(folder)
        if not self.files:
            raise ValueError(f"no images found in {folder}")
        self.face_size, self.patch_size, self.flip = face_size, patch_size, flip
        self.degradations = [Degradation(name, face_size=face_size) for name in presets]
        self.preset_weights = np.asarray(preset_weights, dtype=np.float64) / np.sum(preset_weights)
        self.coordinates = coordinate_channels(face_size)[0]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
        clean = resize_array(load_image_file(self.files[index]), self.face_size)
        if self.flip and rng.uniform() < 0.5:
            clean = clean[:, ::-1]
        degradation = self.degradations[rng.choice(len(self.degradations), p=self.preset_weights)]
        degraded = degradation(np.ascontiguousarray(clean), rng)
        top, left = rng.integers(0, self.face_size - self.patch_size + 1, size=2)
        return make_example(to_model_range(clean), to_model_range(degraded), self.coordinates, top, left, self.patch_size)


def make_example(clean, degraded, coordinates, top: int, left: int, patch_size: int) -> dict[str, torch.Tensor]:
    """The crop at (top, left) of clean/degraded/coordinates, plus the global context."""
    window = (slice(None), slice(top, top + patch_size), slice(left, left + patch_size))
    context = F.interpolate(degraded[None], size=(patch_size, patch_size), mode="area")[0]
    return {
        "clean": clean[window],
        "degraded": degraded[window],
        "coordinates": coordinates[window],
        "context": context,
    }
