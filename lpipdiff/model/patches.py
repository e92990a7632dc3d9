"""The overlapping patch grid: crop a batch of images into patches and fuse patches back.

Fusion is a weighted mean: every pixel's value is the weighted mean of the values that
the patches covering it give. The index tables and the normalising coverage map depend
only on the geometry, so they are built once per :class:`PatchGrid` and reused at every
denoising step.
"""

from __future__ import annotations

import math

import torch

from ..config.defaults import FUSION_MODES


def grid_starts(size: int, patch_size: int, stride: int) -> list[int]:
    """Start offsets along one axis covering all of ``[0, size)``, the last one flush with the edge."""
    if patch_size > size:
        raise ValueError(f"patch size {patch_size} is larger than the image side {size}")
    if stride < 1 or stride > patch_size:
        raise ValueError(f"stride must be in [1, patch size={patch_size}], got {stride}")
    starts = list(range(0, size - patch_size + 1, stride))
    if starts[-1] != size - patch_size:
        starts.append(size - patch_size)
    return starts


def fusion_window(patch_size: int, mode: str) -> torch.Tensor:
    """Per-pixel fusion weights of one patch, ``PxP``.

    ``window`` falls smoothly towards the patch border (a sine bump that stays positive,
    so a border pixel covered by a single patch is still defined), which hides seams.
    """
    if mode == "uniform":
        return torch.ones(patch_size, patch_size)
    if mode == "window":
        ramp = torch.sin(math.pi * (torch.arange(patch_size, dtype=torch.float64) + 0.5) / patch_size)
        return torch.outer(ramp, ramp).float()
    raise ValueError(f"fusion must be one of {FUSION_MODES}, got {mode!r}")


def accumulator_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64  # Apple's MPS has no float64


class PatchGrid:
    """An overlapping ``patch_size`` x ``patch_size`` grid over ``height`` x ``width`` images.

    Example::

        grid = PatchGrid(128, 128, patch_size=64, stride=32)
        patches = grid.crop(images)            # (B * N, C, 64, 64), image-major
        fused = grid.fuse(patches)             # (B, C, 128, 128)
    """

    def __init__(self, height: int, width: int, patch_size: int, stride: int, fusion: str = "uniform"):
        self.height, self.width = height, width
        self.patch_size, self.stride, self.fusion = patch_size, stride, fusion
        self.row_starts = grid_starts(height, patch_size, stride)
        self.col_starts = grid_starts(width, patch_size, stride)
        offsets = torch.arange(patch_size)
        rows = torch.tensor(self.row_starts)[:, None, None] + offsets[None, :, None]  # (R, P, 1)
        cols = torch.tensor(self.col_starts)[:, None, None] + offsets[None, None, :]  # (Q, 1, P)
        # Flat pixel index of every patch pixel, (N, P, P), patches in row-major grid order.
        self.index = (rows[:, None] * width + cols[None, :]).reshape(-1, patch_size, patch_size)
        self.weight = fusion_window(patch_size, fusion)
        coverage = torch.zeros(height * width, dtype=torch.float64)
        coverage.index_add_(0, self.index.flatten(), self.weight.double().expand(self.num_patches, -1, -1).flatten())
        self.coverage = coverage.view(1, 1, height, width)
        self._on_device = {}

    def _tables(self, device: torch.device):
        """Index, weights and coverage on ``device``, moved there once (not at every step)."""
        key = str(device)
        if key not in self._on_device:
            self._on_device[key] = (
                self.index.to(device),
                self.index.flatten().to(device),
                self.weight.to(device, accumulator_dtype(device)).reshape(1, 1, 1, -1),
                self.coverage.to(device, accumulator_dtype(device)),
            )
        return self._on_device[key]

    @property
    def num_patches(self) -> int:
        return len(self.row_starts) * len(self.col_starts)

    @property
    def positions(self) -> list[tuple[int, int]]:
        """(top, left) of every patch in the order used by :meth:`crop` and :meth:`fuse`."""
        return [(r, c) for r in self.row_starts for c in self.col_starts]

    def crop(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B * N, C, P, P)``; the patches of image 0 first."""
        batch, channels = images.shape[:2]
        flat = images.reshape(batch, channels, self.height * self.width)
        patches = flat[:, :, self._tables(images.device)[0]]  # (B, C, N, P, P)
        return patches.transpose(1, 2).reshape(batch * self.num_patches, channels, self.patch_size, self.patch_size)

    def fuse(self, patches: torch.Tensor, return_spread: bool = False):
        """Weighted mean of ``(B * N, C, P, P)`` patches back into ``(B, C, H, W)`` images.

        With ``return_spread=True`` also returns the per-pixel weighted standard deviation
        between the overlapping patch values (zero where a single patch covers a pixel).
        """
        fused = self._weighted_mean(patches)
        if not return_spread:
            return fused
        second_moment = self._weighted_mean(patches.square())
        spread = (second_moment - fused.square()).clamp_min(0).sqrt()
        return fused, spread

    def _weighted_mean(self, patches: torch.Tensor) -> torch.Tensor:
        # Accumulated in float64 (where the device has it) so that fusing identical copies
        # returns them bit for bit.
        channels = patches.shape[1]
        batch = patches.shape[0] // self.num_patches
        _, flat_index, weight, coverage = self._tables(patches.device)
        weighted = patches.to(weight.dtype).reshape(batch, self.num_patches, channels, -1) * weight
        weighted = weighted.transpose(1, 2).reshape(batch, channels, -1)
        total = torch.zeros(batch, channels, self.height * self.width, device=patches.device, dtype=weight.dtype)
        total.index_add_(2, flat_index, weighted)
        mean = total.view(batch, channels, self.height, self.width) / coverage
        return mean.to(patches.dtype)
