"""Training data: faces decoded once, degraded on the training device, many patches per face.

    python -m lpipdiff.training.data pack ../shared/data/utkface/train faces.npz   # one compact file

A source of clean faces is a folder of images or a pack made by the command above: the
files' own bytes in one ``.npz`` (names, offsets, bytes; no pickle), so it is no bigger
than the folder and decodes to exactly what the folder does. Sources that fit in
``memory_budget`` bytes once decoded (uint8, ``face_size`` square) are decoded once into a
tensor on the training device; larger ones are decoded file by file in DataLoader workers,
endlessly and with prefetch, and everything after decoding is the same.
"""

from __future__ import annotations

import argparse
import io
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, RandomSampler, WeightedRandomSampler

from ..io.images import list_images, load_image_file, pil_to_array, resize_array
from ..model.unet import coordinate_channels
from .degradation_torch import BatchDegradation

DEFAULT_MEMORY_BUDGET = 8 * 2**30  # bytes of decoded faces held in memory (8,910 faces of 128 px take 0.44 GB)


class EncodedFaces(Dataset):
    """Faces as files or encoded bytes; item ``i`` is face ``i`` decoded to a ``(3, S, S)`` uint8 tensor."""

    def __init__(self, items: list[Path | bytes], face_size: int, names: list[str] | None = None):
        if not items:
            raise ValueError("no faces to train on")
        self.items, self.face_size = items, face_size
        self.names = names if names is not None else [item.name for item in items if isinstance(item, Path)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> torch.Tensor:
        item = self.items[index]
        if isinstance(item, Path):
            image = load_image_file(item)
        else:
            with PIL.Image.open(io.BytesIO(item)) as opened:
                image = pil_to_array(opened)
        face = np.round(resize_array(image, self.face_size) * 255).astype(np.uint8)
        return torch.from_numpy(face).permute(2, 0, 1).contiguous()

    @property
    def decoded_bytes(self) -> int:
        return len(self) * 3 * self.face_size**2


def open_faces(source: str | Path, face_size: int) -> EncodedFaces:
    """The faces of a folder or of a pack written by :func:`pack_faces`."""
    source = Path(source)
    if source.is_dir():
        files = list_images(source)
        if not files:
            raise ValueError(f"no images found in {source}")
        return EncodedFaces(files, face_size)
    with np.load(source, allow_pickle=False) as pack:
        data, offsets, names = pack["data"].tobytes(), pack["offsets"], [str(n) for n in pack["names"]]
    return EncodedFaces([data[start:end] for start, end in zip(offsets[:-1], offsets[1:])], face_size, names)


def pack_faces(folder: str | Path, output: str | Path) -> int:
    """Write the image files of ``folder`` into one ``.npz`` (their bytes, unchanged); returns its size."""
    files = list_images(folder)
    if not files:
        raise ValueError(f"no images found in {folder}")
    blobs = [path.read_bytes() for path in files]
    offsets = np.cumsum([0] + [len(blob) for blob in blobs], dtype=np.int64)
    names = np.array([path.name for path in files])
    with open(output, "wb") as handle:  # a file handle: np.savez would append .npz to other names
        np.savez(handle, names=names, offsets=offsets, data=np.frombuffer(b"".join(blobs), dtype=np.uint8))
    return Path(output).stat().st_size


class FacesInMemory:
    """All faces decoded once into one uint8 tensor on ``device``; batches are random draws from it."""

    def __init__(self, faces: EncodedFaces, device, threads: int | None = None, weights=None):
        with ThreadPoolExecutor(threads or min(16, os.cpu_count() or 1)) as pool:  # decoders release the GIL
            self.faces = torch.stack(list(pool.map(faces.__getitem__, range(len(faces))))).to(device)
        # Optional per-face draw probabilities (lpipdiff.evaluation.age_bands.sampling_weights); uniform when None.
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64).to(device)

    def next(self, count: int) -> torch.Tensor:
        if self.weights is not None:
            return self.faces[torch.multinomial(self.weights, count, replacement=True)]
        index = torch.randint(0, len(self.faces), (count,), device=self.faces.device)
        return self.faces[index]


class FacesFromFiles:
    """Faces decoded in DataLoader workers, drawn with replacement from an endless sampler.

    An endless sampler never ends an epoch, so the workers' prefetch never restarts.
    """

    def __init__(self, faces: EncodedFaces, device, num_workers: int, weights=None):
        self.device = torch.device(device)
        sampler = (RandomSampler(faces, replacement=True, num_samples=2**62) if weights is None
                   else WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.float64), 2**62, replacement=True))
        loader = DataLoader(
            faces, batch_size=None, sampler=sampler, num_workers=num_workers, pin_memory=self.device.type == "cuda",
            persistent_workers=num_workers > 0, prefetch_factor=64 if num_workers > 0 else None,
        )
        self.faces = iter(loader)

    def next(self, count: int) -> torch.Tensor:
        return torch.stack([next(self.faces) for _ in range(count)]).to(self.device, non_blocking=True)


def face_source(faces: EncodedFaces, device, memory_budget: int = DEFAULT_MEMORY_BUDGET, num_workers: int = 2,
                weights=None):
    """Faces in memory when they fit in ``memory_budget`` bytes, else decoded from the files as needed;
    drawn uniformly, or with the per-face probabilities ``weights``."""
    if faces.decoded_bytes <= memory_budget:
        return FacesInMemory(faces, device, weights=weights)
    return FacesFromFiles(faces, device, num_workers, weights=weights)


def crop_examples(clean, degraded, coordinates, tops, lefts, patch_size: int) -> dict[str, torch.Tensor]:
    """Crops at ``(B, K)`` corners of ``(B, C, H, W)`` faces: ``(B * K, C, P, P)`` tensors, face-major.

    ``coordinates`` is ``(1, 2, H, W)`` (see :func:`coordinate_channels`); ``context`` is the
    whole degraded face resized to ``P``, the same for every crop of a face.
    """
    batch, _, height, width = clean.shape
    per_face = tops.shape[1]
    offsets = torch.arange(patch_size, device=clean.device)
    rows = (tops[..., None] + offsets)[..., :, None]  # (B, K, P, 1)
    cols = (lefts[..., None] + offsets)[..., None, :]  # (B, K, 1, P)
    index = (rows * width + cols).reshape(batch, 1, -1)

    def crop(images):
        channels = images.shape[1]
        flat = images.reshape(images.shape[0], channels, height * width).expand(batch, -1, -1)
        patches = flat.gather(2, index.expand(-1, channels, -1))
        patches = patches.reshape(batch, channels, per_face, patch_size, patch_size).transpose(1, 2)
        return patches.reshape(batch * per_face, channels, patch_size, patch_size)

    context = F.interpolate(degraded, size=(patch_size, patch_size), mode="area")
    return {
        "clean": crop(clean),
        "degraded": crop(degraded),
        "coordinates": crop(coordinates),
        "context": context.repeat_interleave(per_face, dim=0),
    }


class PatchBatches:
    """Endless training batches of ``batch_size`` patches, ``patches_per_face`` from each degraded face.

    Each step draws ``ceil(batch_size / patches_per_face)`` faces, flips half of them (faces
    are symmetric enough, and coordinates stay true), degrades them on their device with
    per-face parameters and crops patches at any pixel, not only grid positions, so the
    model learns every location the sampler may ask about. Items are dicts of
    ``(N, C, P, P)`` tensors in [-1, 1]: ``clean``, ``degraded``, ``coordinates``, ``context``.
    Randomness comes from torch's global generators (seeded per process by accelerate).
    """

    def __init__(self, faces, degradation: BatchDegradation, patch_size: int, batch_size: int, patches_per_face: int):
        self.faces, self.degradation = faces, degradation
        self.patch_size, self.batch_size = patch_size, batch_size
        self.per_face = max(1, min(patches_per_face, batch_size))
        self.face_count = math.ceil(batch_size / self.per_face)
        self.coordinates = {}

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        clean = self.faces.next(self.face_count)
        device, face_size = clean.device, clean.shape[-1]
        flip = torch.rand(len(clean), device=device) < 0.5
        clean = torch.where(flip[:, None, None, None], clean.flip(-1), clean).float() / 255
        degraded = self.degradation(clean)
        if device not in self.coordinates:
            self.coordinates[device] = coordinate_channels(face_size, device=device)
        corners = torch.randint(0, face_size - self.patch_size + 1, (2, len(clean), self.per_face), device=device)
        batch = crop_examples(clean * 2 - 1, degraded * 2 - 1, self.coordinates[device], *corners, self.patch_size)
        return {name: value[: self.batch_size] for name, value in batch.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Training-data tools.")
    commands = parser.add_subparsers(dest="command", required=True)
    pack = commands.add_parser("pack", help="write a folder's images into one compact .npz file")
    pack.add_argument("folder")
    pack.add_argument("output")
    args = parser.parse_args(argv)
    size = pack_faces(args.folder, args.output)
    print(f"{args.output}: {len(list_images(args.folder))} faces, {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
