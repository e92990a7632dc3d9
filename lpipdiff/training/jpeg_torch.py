"""A batched JPEG round trip in torch, so that training can compress on the GPU.

It does what a baseline JPEG encoder and decoder do to the pixels, and no entropy coding
(that part is lossless): RGB to YCbCr (JFIF), chroma averaged over 2x2 pixels (4:2:0, the
default of OpenCV's encoder), 8x8 block DCT, rounding of each coefficient to a multiple of
the standard (Annex K) quantisation table scaled by the quality as libjpeg scales it, then
the inverse; chroma comes back by bilinear interpolation, which is what libjpeg's "fancy"
upsampling computes. Every image of a batch has its own quality. It is not differentiable
(the rounding) and needs none of that: it makes training inputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LUMA_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
CHROMA_TABLE = (
    (17, 18, 24, 47, 99, 99, 99, 99),
    (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99),
    *((99,) * 8,) * 4,
)
RGB_TO_YCBCR = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))
YCBCR_TO_RGB = ((1.0, 0.0, 1.402), (1.0, -0.344136, -0.714136), (1.0, 1.772, 0.0))
BLOCK = 8
# Chroma is halved, so an image must hold whole 8x8 chroma blocks: sides multiple of 16.
MULTIPLE = 2 * BLOCK


def quantisation_tables(quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Luma and chroma tables ``(B, 8, 8)`` for integer qualities 1..100, as libjpeg scales them."""
    quality = quality.clamp(1, 100).float()
    scale = torch.where(quality < 50, 5000 / quality, 200 - 2 * quality)[:, None, None]
    tables = []
    for base in (LUMA_TABLE, CHROMA_TABLE):
        base = torch.tensor(base, dtype=torch.float32, device=quality.device)
        tables.append(torch.floor((base * scale + 50) / 100).clamp(1, 255))  # 255: baseline JPEG's limit
    return tables[0], tables[1]


def block_dct_matrix(device=None) -> torch.Tensor:
    """``(64, 64)``: JPEG's forward 8x8 DCT of a row-major flattened block, as one matrix product.

    The orthonormal 8-point DCT-II ``C`` acts on rows and columns (``C @ block @ C.T``);
    flattened, that is ``kron(C, C)``, and one large product is much faster than many 8x8 ones.
    """
    n = torch.arange(BLOCK, dtype=torch.float64)
    matrix = torch.cos((2 * n[None, :] + 1) * n[:, None] * math.pi / (2 * BLOCK)) * math.sqrt(2 / BLOCK)
    matrix[0] /= math.sqrt(2)
    return torch.kron(matrix, matrix).float().to(device)


def quantise_blocks(plane: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Round the block DCT of ``(B, H, W)`` level-shifted samples to multiples of ``(B, 8, 8)`` tables."""
    batch, height, width = plane.shape
    blocks = plane.reshape(batch, height // BLOCK, BLOCK, width // BLOCK, BLOCK).transpose(2, 3)
    blocks = blocks.reshape(batch, -1, BLOCK * BLOCK)
    dct = block_dct_matrix(plane.device)
    table = table.reshape(batch, 1, BLOCK * BLOCK)
    coefficients = torch.round(blocks @ dct.T / table) * table
    blocks = (coefficients @ dct).reshape(batch, height // BLOCK, width // BLOCK, BLOCK, BLOCK)
    return blocks.transpose(2, 3).reshape(batch, height, width)


def jpeg_batch(images: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """Compress and decompress ``(B, 3, H, W)`` RGB in 0..255 (H, W multiples of 16) at per-image ``quality``.

    Returns the decoded pixels, rounded to integers in 0..255 like a decoder's uint8 output.
    Images whose sides are not multiples of 16 should be padded by repeating their edge
    first, as encoders pad partial blocks.
    """
    if images.shape[-1] % MULTIPLE or images.shape[-2] % MULTIPLE:
        raise ValueError(f"sides must be multiples of {MULTIPLE}, got {tuple(images.shape[-2:])}")
    to_ycbcr = torch.tensor(RGB_TO_YCBCR, device=images.device)
    ycbcr = torch.einsum("ij,bjhw->bihw", to_ycbcr, images.float())
    luma_table, chroma_table = quantisation_tables(quality.to(images.device))
    luma = quantise_blocks(ycbcr[:, 0] - 128, luma_table) + 128
    chroma = F.avg_pool2d(ycbcr[:, 1:], 2)  # Cb, Cr centred on 0 already
    batch, _, height, width = chroma.shape
    chroma = quantise_blocks(chroma.reshape(batch * 2, height, width), chroma_table.repeat_interleave(2, 0))
    chroma = F.interpolate(chroma.reshape(batch, 2, height, width), scale_factor=2, mode="bilinear")
    ycbcr = torch.cat([luma[:, None], chroma], dim=1)
    rgb = torch.einsum("ij,bjhw->bihw", torch.tensor(YCBCR_TO_RGB, device=images.device), ycbcr)
    return rgb.round().clamp(0, 255)
