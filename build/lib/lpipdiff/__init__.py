"""LPIP-Diff: identity-preserving blind face restoration by patch-fusion diffusion."""

from .pipeline_lpipdiff import LPIPDiffPipeline, LPIPDiffPipelineOutput
from .unet import PatchFusionUNet, coordinate_channels

__version__ = "0.1.0"

__all__ = ["LPIPDiffPipeline", "LPIPDiffPipelineOutput", "PatchFusionUNet", "coordinate_channels", "__version__"]
