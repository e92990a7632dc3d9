"""The degradation model of :mod:`lpipdiff.training.degradation`, batched in torch on the training device.

Same steps, same preset ranges (``degradation.PRESETS``), same scaling with the face size;
every face of a batch draws its own parameters. What differs from the CPU implementation:

* resizing multiplies by matrices read off OpenCV itself (``cv2.resize`` of an identity),
  so each interpolation weighs pixels exactly as the CPU path's ``cv2.resize`` does;
* JPEG is :func:`lpipdiff.training.jpeg_torch.jpeg_batch`, an approximation of libjpeg (no entropy
  coding, which loses nothing);
* the random numbers come from torch, not numpy: the same distribution, not the same draws.

``tests/test_degradation_torch.py`` checks that both give the same distribution of damage
on real faces.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .degradation import PRESETS, REFERENCE_SIZE, blur_kernel_size
from .jpeg_torch import MULTIPLE, jpeg_batch

INTERPOLATIONS = (cv2.INTER_AREA, cv2.INTER_LINEAR, cv2.INTER_CUBIC)  # the CPU path's choice, in its order
GRAY = (0.299, 0.587, 0.114)  # cv2.COLOR_RGB2GRAY


def gaussian_kernels(size: int, sigma_x: torch.Tensor, sigma_y: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """``(B, size, size)`` normalised kernels: :func:`degradation.gaussian_kernel` for a batch of parameters."""
    half = size // 2
    axis = torch.arange(-half, half + 1, dtype=torch.float64, device=sigma_x.device)
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    cos, sin = torch.cos(angle.double())[:, None, None], torch.sin(angle.double())[:, None, None]
    u = cos * xs + sin * ys
    v = -sin * xs + cos * ys
    kernel = torch.exp(-0.5 * ((u / sigma_x.double()[:, None, None]) ** 2 + (v / sigma_y.double()[:, None, None]) ** 2))
    return (kernel / kernel.sum(dim=(1, 2), keepdim=True)).float()


def blur(images: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Each image filtered with its own kernel, borders reflected like ``cv2.BORDER_REFLECT101``."""
    batch, channels, height, width = images.shape
    half = kernels.shape[-1] // 2
    padded = F.pad(images.reshape(1, batch * channels, height, width), (half,) * 4, mode="reflect")
    weight = kernels.repeat_interleave(channels, dim=0)[:, None]
    return F.conv2d(padded, weight, groups=batch * channels).reshape(batch, channels, height, width)


def canvas_side(size: int) -> int:
    """The smallest of a few sides (multiples of 16, each at most about 1.5x the last) that holds ``size``."""
    side = MULTIPLE
    while side < size:
        side = max(side + MULTIPLE, int(side * 1.5) // MULTIPLE * MULTIPLE)
    return side


class ResizeMatrices:
    """``(size_out, size_in)`` matrices that resize one axis as ``cv2.resize`` does, kept on the device.

    Resizing is linear and separable, so resizing an identity gives its matrix. With
    ``shape``, the matrix is zero-padded to that shape (rows or columns past the image's
    side on a larger canvas). They are made on first use and kept, so that a step stacks
    them in one copy: at most 4 (3 interpolations down, 1 up) per size drawn, about 0.6 GB
    in all for 128-pixel faces once every size has been drawn.
    """

    def __init__(self, device):
        self.device, self.cache = device, {}

    def __call__(self, size_in: int, size_out: int, interpolation: int, shape=None) -> torch.Tensor:
        key = (size_in, size_out, interpolation, shape)
        if key not in self.cache:
            eye = np.eye(size_in, dtype=np.float32)
            matrix = cv2.resize(eye, (size_in, size_out), interpolation=interpolation).reshape(size_out, size_in)
            if shape is not None:
                matrix = np.pad(matrix, ((0, shape[0] - size_out), (0, shape[1] - size_in)))
            self.cache[key] = torch.from_numpy(matrix).to(self.device)
        return self.cache[key]


class BatchDegradation:
    """Random degradation of batches of aligned faces, each face from a preset drawn by ``weights``.

    Call it with ``(B, 3, H, W)`` float RGB in [0, 1] on any device; it returns the degraded
    batch, same shape. ``color=False`` turns off colour jitter and grayscale, as in
    :class:`degradation.Degradation`. Parameters come from ``params`` (see :meth:`sample`)
    or are drawn from torch's global CPU generator, which accelerate seeds per process and
    saves in checkpoints; the noise comes from ``generator`` (on the faces' device) or the
    global generator of that device.
    """

    def __init__(self, presets=("moderate", "severe"), weights=(0.5, 0.5), face_size: int = 128, color=True):
        unknown = [name for name in presets if name not in PRESETS]
        if unknown:
            raise ValueError(f"Unknown degradation preset {unknown[0]!r}; choose one of {sorted(PRESETS)}.")
        self.presets = [PRESETS[name] for name in presets]
        self.weights = torch.tensor(weights, dtype=torch.float64) / sum(weights)
        self.face_size, self.color = face_size, color
        self.scale = face_size / REFERENCE_SIZE
        sizes = {blur_kernel_size(p, face_size) for p in self.presets}
        if len(sizes) > 1:
            raise ValueError("presets mixed in one batch must share a kernel size")
        self.kernel_size = sizes.pop()
        self.matrices = {}

    def sample(self, batch: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Per-face parameters (CPU tensors), drawn as :class:`degradation.Degradation` draws them.

        Drawn on the CPU, a few numbers a face: the canvas size must be known there anyway,
        and reading it back from a GPU would wait for the GPU's queue to empty.
        """
        which = torch.multinomial(self.weights, batch, replacement=True, generator=generator)

        def field(name, index=None):
            values = [getattr(p, name) if index is None else getattr(p, name)[index] for p in self.presets]
            return torch.tensor(values, dtype=torch.float32)[which]

        def rand(*shape):
            return torch.rand(batch, *shape, generator=generator)

        def uniform(name):
            return field(name, 0) + rand() * (field(name, 1) - field(name, 0))

        sigma_x = uniform("blur_sigma") * self.scale
        anisotropic = rand() < field("anisotropic_prob")
        sigma_y = torch.where(anisotropic, uniform("blur_sigma") * self.scale, sigma_x)
        angle = torch.where(anisotropic, rand() * math.pi, 0.0)
        factor = uniform("downscale") * self.scale
        low_q, high_q = field("jpeg_quality", 0), field("jpeg_quality", 1)
        return {
            "sigma_x": sigma_x.clamp_min(1e-3),
            "sigma_y": sigma_y.clamp_min(1e-3),
            "angle": angle,
            "small": torch.round(self.face_size / factor).clamp_min(1).long(),
            "interpolation": torch.randint(0, len(INTERPOLATIONS), (batch,), generator=generator),
            "noise": uniform("noise") / 255.0,
            "quality": (low_q + torch.floor(rand() * (high_q - low_q + 1))).long(),
            "jitter": (rand(3) * 2 - 1) * field("color_jitter_shift")[:, None] / 255.0,
            "do_jitter": rand() < field("color_jitter_prob"),
            "do_gray": rand() < field("grayscale_prob"),
        }

    def __call__(self, faces: torch.Tensor, generator=None, params: dict | None = None) -> torch.Tensor:
        batch, _, height, width = faces.shape
        if height != width or height != self.face_size:
            raise ValueError(f"expected {self.face_size}-pixel square faces, got {height}x{width}")
        p = params if params is not None else self.sample(batch)
        sizes, modes = p["small"].tolist(), p["interpolation"].tolist()
        p = {k: v.to(faces.device, non_blocking=True) for k, v in p.items()}
        out = blur(faces.float(), gaussian_kernels(self.kernel_size, p["sigma_x"], p["sigma_y"], p["angle"]))
        # Faces go through the low-resolution stage in groups of similar size: the canvas of a
        # group fits its largest face, and one 640-pixel face would otherwise make all pay for 640.
        canvases = [canvas_side(size) for size in sizes]
        resized = torch.empty_like(out)
        for canvas in sorted(set(canvases)):
            group = [i for i, c in enumerate(canvases) if c == canvas]
            index = torch.tensor(group, device=out.device)
            chosen = {k: v[index] for k, v in p.items()}
            shapes = [(sizes[i], modes[i]) for i in group]
            resized[index] = self._resize_compress(out[index], chosen, canvas, shapes, generator)
        out = resized
        if self.color:
            out = out + torch.where(p["do_jitter"][:, None], p["jitter"], 0.0)[:, :, None, None]
            gray = torch.einsum("c,bchw->bhw", torch.tensor(GRAY, device=out.device), out.clamp(0, 1))
            out = torch.where(p["do_gray"][:, None, None, None], gray[:, None].expand_as(out), out)
        return out.clamp(0, 1)

    def _resize_compress(self, images, p: dict, canvas: int, shapes: list[tuple[int, int]], generator):
        """Down to each face's own (size, interpolation), noise, JPEG, back up, on a ``canvas``-pixel square."""
        matrices = self.matrices.setdefault(str(images.device), ResizeMatrices(images.device))
        face = self.face_size
        down = torch.stack([matrices(face, size, INTERPOLATIONS[mode], (canvas, face)) for size, mode in shapes])
        up = torch.stack([matrices(size, face, cv2.INTER_LINEAR, (face, canvas)) for size, _ in shapes])
        small = down[:, None] @ images @ down[:, None].transpose(-1, -2)
        noise = torch.randn(small.shape, generator=generator, device=small.device)
        small = small + noise * p["noise"][:, None, None, None]
        # An encoder fills a partial block by repeating the image's last row and column.
        inside = torch.minimum(torch.arange(canvas, device=small.device)[None], p["small"][:, None] - 1)
        small = small.gather(2, inside[:, None, :, None].expand(-1, 3, -1, canvas))
        small = small.gather(3, inside[:, None, None, :].expand(-1, 3, canvas, -1))
        decoded = jpeg_batch((small.clamp(0, 1) * 255).round(), p["quality"]) / 255
        return up[:, None] @ decoded @ up[:, None].transpose(-1, -2)
