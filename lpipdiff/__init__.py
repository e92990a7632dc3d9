"""LPIP-Diff: identity-preserving blind face restoration by patch-fusion diffusion.

The classes load on first use, so that the command line starts without importing torch.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "LPIPDiffPipeline": ".model.pipeline_lpipdiff",
    "LPIPDiffPipelineOutput": ".model.pipeline_lpipdiff",
    "PatchFusionUNet": ".model.unet",
    "coordinate_channels": ".model.unet",
    "SamplingOptions": ".model.sampling",
    "FaceRestorer": ".faces.restorer",
    "restore_video": ".faces.video",
    "load_pipeline": ".model.loading",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module 'lpipdiff' has no attribute {name!r}")
