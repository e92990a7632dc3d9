"""The perceptual distance the one-step estimate is trained on: shift-tolerant LPIPS over VGG.

``stlpips-pytorch`` ships both its networks' weights in the package. Training uses the VGG
variant; the AlexNet variant stays the evaluation metric (:mod:`lpipdiff.evaluation.metrics`),
so the model is never trained on the number it is judged by.
"""

from __future__ import annotations

import torch
from torch import nn

# Its deepest layer pads reflectively by 2, which smaller images cannot hold.
MIN_IMAGE_SIZE = 18


class PerceptualDistance(nn.Module):
    """Shift-tolerant LPIPS (VGG) between two batches of images in [-1, 1], one value per image.

    Frozen: its weights never train, and it is kept in eval mode whatever the caller's mode.
    """

    def __init__(self):
        super().__init__()
        try:
            from stlpips_pytorch import stlpips
        except ImportError as error:
            raise ImportError(
                "the perceptual loss needs stlpips-pytorch: pip install -r requirements-eval.txt"
            ) from error
        self.network = stlpips.LPIPS(net="vgg", variant="shift_tolerant", verbose=False)
        self.network.requires_grad_(False)
        self.network.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        self.network.eval()  # dropout in its linear heads would make the loss noisy
        return self

    def forward(self, images: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        return self.network(images, references).flatten()
