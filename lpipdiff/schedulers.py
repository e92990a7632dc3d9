"""The sampler choices offered by the CLI, the demo and training."""

from __future__ import annotations

from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler

SCHEDULERS = {
    "ddim": DDIMScheduler,
    "dpm": DPMSolverMultistepScheduler,
    "unipc": UniPCMultistepScheduler,
}


def default_scheduler(prediction_type: str = "v_prediction") -> DDIMScheduler:
    """DDIM over a cosine schedule. Trailing spacing makes even a few steps start at the last
    (pure-noise) timestep, and clipping is off because residual samples exceed [-1, 1]."""
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type=prediction_type,
        clip_sample=False,
        timestep_spacing="trailing",
    )


def swap_scheduler(pipeline, name: str):
    """Replace the pipeline's scheduler by another kind built from the same config."""
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {sorted(SCHEDULERS)}")
    pipeline.scheduler = SCHEDULERS[name].from_config(pipeline.scheduler.config)
    return pipeline
