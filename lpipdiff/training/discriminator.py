"""A small patch discriminator for the one-step estimate (hinge loss, spectral norm), as one-step
face restorers use to make a sharp estimate from a smooth one."""

from __future__ import annotations

from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class PatchDiscriminator(nn.Module):
    """Strided convolutions to a map of real/fake logits, one per receptive field of the patch.

    Args:
        channels: width of the first layer; each of the ``layers`` downsampling layers doubles it
            (up to 8 times the first).
        layers: downsampling layers (each halves the side).
    """

    def __init__(self, channels: int = 32, layers: int = 3):
        super().__init__()
        blocks, width = [spectral_norm(nn.Conv2d(3, channels, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)], channels
        for _ in range(layers - 1):
            wider = min(width * 2, channels * 8)
            blocks += [spectral_norm(nn.Conv2d(width, wider, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            width = wider
        blocks.append(spectral_norm(nn.Conv2d(width, 1, 3, padding=1)))
        self.layers = nn.Sequential(*blocks)

    def forward(self, images):
        """``(N, 3, P, P)`` images in [-1, 1] -> ``(N, 1, P / 2**layers, P / 2**layers)`` logits."""
        return self.layers(images)
