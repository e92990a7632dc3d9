"""The patch denoiser: a diffusers ``UNet2DModel`` that also sees where its patch lies in the face."""

from __future__ import annotations

import torch
from diffusers import UNet2DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin


def coordinate_channels(size: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """``(1, 2, size, size)``: the normalised (row, column) of every pixel of the face, in [-1, 1]."""
    axis = (torch.arange(size, device=device, dtype=torch.float64) + 0.5) / size * 2 - 1
    rows, cols = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([rows, cols])[None].to(dtype)


class PatchFusionUNet(ModelMixin, ConfigMixin):
    """Predicts the diffusion target of one ``patch_size`` patch of a ``face_size`` aligned face.

    Input channels, in order: the noisy patch (3), the degraded patch (3), then optionally the
    coordinate channels (2, see :func:`coordinate_channels`) and the global context (3: the whole
    degraded face resized to ``patch_size``).

    Args:
        face_size: side of the aligned faces the model restores.
        patch_size: side of the square patches it sees.
        use_coordinates: feed the two coordinate channels.
        use_global_context: feed the whole degraded face at patch resolution.
        residual: the model diffuses ``residual_scale * (clean - degraded)`` instead of the clean
            face, so that predicting zero returns the degraded input.
        residual_scale: the factor above; it brings the small residuals to unit-ish variance.
        block_out_channels, layers_per_block, down_block_types, up_block_types, norm_num_groups,
        attention_head_dim: passed to :class:`diffusers.UNet2DModel`.
    """

    @register_to_config
    def __init__(
        self,
        face_size: int = 128,
        patch_size: int = 64,
        use_coordinates: bool = True,
        use_global_context: bool = True,
        residual: bool = True,
        residual_scale: float = 2.0,
        block_out_channels: tuple[int, ...] = (32, 64, 128, 128),
        layers_per_block: int = 1,
        down_block_types: tuple[str, ...] = ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types: tuple[str, ...] = ("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        norm_num_groups: int = 8,
        attention_head_dim: int = 32,
    ):
        super().__init__()
        if patch_size > face_size:
            raise ValueError(f"patch_size ({patch_size}) must not exceed face_size ({face_size})")
        in_channels = 6 + 2 * use_coordinates + 3 * use_global_context
        self.unet = UNet2DModel(
            sample_size=patch_size,
            in_channels=in_channels,
            out_channels=3,
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            down_block_types=tuple(down_block_types),
            up_block_types=tuple(up_block_types),
            norm_num_groups=norm_num_groups,
            attention_head_dim=attention_head_dim,
        )

    def forward(
        self,
        noisy: torch.Tensor,
        timestep: torch.Tensor | int,
        degraded: torch.Tensor,
        coordinates: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """All inputs are ``(N, C, P, P)`` patches; returns the ``(N, 3, P, P)`` prediction."""
        inputs = [noisy, degraded]
        if self.config.use_coordinates:
            if coordinates is None:
                raise ValueError("this model was configured with use_coordinates=True; pass coordinates")
            inputs.append(coordinates)
        if self.config.use_global_context:
            if context is None:
                raise ValueError("this model was configured with use_global_context=True; pass context")
            inputs.append(context)
        sample = torch.cat([x.to(noisy.dtype) for x in inputs], dim=1)
        if not torch.is_tensor(timestep) or timestep.ndim == 0:
            timestep = torch.full((sample.shape[0],), int(timestep), device=sample.device, dtype=torch.long)
        return self.unet(sample, timestep).sample

    def encode(self, clean: torch.Tensor, degraded: torch.Tensor) -> torch.Tensor:
        """What is diffused for a clean face (or patch): the face itself, or in residual mode the
        scaled residual over the degraded input (so that the input itself encodes to zero)."""
        if self.config.residual:
            return self.config.residual_scale * (clean - degraded)
        return clean

    def decode(self, sample: torch.Tensor, degraded: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`encode`: the clean face a diffused sample stands for."""
        if self.config.residual:
            return degraded + sample / self.config.residual_scale
        return sample

    @property
    def image_units(self) -> float:
        """How far the decoded face moves, in [0, 1] image units, per unit of the diffused sample."""
        return 0.5 / (self.config.residual_scale if self.config.residual else 1.0)
