"""The model and its sampling: the pipeline, the patch-fusion UNet, the patch grid, schedulers, backends and loading."""
