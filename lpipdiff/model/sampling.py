"""How to sample, carried as one object from every edge (CLI, demo, evaluation, training
validation, benchmarks) to the pipeline; the schedulers; the seeded batch loop.

Every command builds a :class:`SamplingOptions` once at its edge (it validates on construction)
and hands it down; below the commands nothing reads argparse or form values.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler

from ..checks import check_seed, check_whole_number, sampling_path
from ..config.defaults import (
    DEFAULT_FIDELITY,
    DEFAULT_FUSION,
    DEFAULT_SCHEDULER,
    DEFAULT_STEPS,
    DEFAULT_STRENGTH,
    FUSION_MODES,
    SCHEDULER_NAMES,
)
from .pipeline_lpipdiff import LPIPDiffPipeline, split_batch

SCHEDULERS = dict(zip(SCHEDULER_NAMES, (DDIMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler)))


@dataclass(frozen=True)
class SamplingOptions:
    """The sampler's settings, validated on construction.

    Args:
        fidelity: 0..1 between realism and faithfulness (see :meth:`LPIPDiffPipeline.__call__`), or
            ``None`` for the experts' path (``steps`` from noise, or from the noised input).
        steps: steps of the schedule, 1..1000.
        strength: in (0, 1]. Below 1 sampling starts from the noised input, where a fidelity does
            not apply: such options carry ``fidelity=None`` (:func:`lpipdiff.checks.sampling_path`,
            the pipeline's rule too).
        stride: patch stride in pixels, or ``None`` for half the patch (checked against the
            model's patch size by the pipeline).
        fusion: how overlapping patches are weighted, one of ``FUSION_MODES``.
        scheduler: one of ``SCHEDULER_NAMES``.
        seed: face ``i`` of a call is sampled with ``seed + i``.
    """

    fidelity: float | None = DEFAULT_FIDELITY
    steps: int = DEFAULT_STEPS
    strength: float = DEFAULT_STRENGTH
    stride: int | None = None
    fusion: str = DEFAULT_FUSION
    scheduler: str = DEFAULT_SCHEDULER
    seed: int = 0

    def __post_init__(self):
        fidelity, strength = sampling_path(self.fidelity, self.strength)
        steps = check_whole_number("steps", self.steps, 1, 1000)
        stride = None if self.stride is None else check_whole_number("stride", self.stride, 1)
        if self.fusion not in FUSION_MODES:
            raise ValueError(f"fusion must be one of {FUSION_MODES}, got {self.fusion!r}")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULER_NAMES}, got {self.scheduler!r}")
        for name, value in (("strength", strength), ("fidelity", fidelity), ("steps", steps), ("stride", stride),
                            ("seed", check_seed(self.seed))):
            object.__setattr__(self, name, value)  # plain Python numbers, whatever the caller passed

    def pipeline_kwargs(self) -> dict:
        """The keywords of :meth:`LPIPDiffPipeline.__call__` these options stand for."""
        return dict(fidelity=self.fidelity, num_inference_steps=self.steps, strength=self.strength,
                    patch_stride=self.stride, fusion=self.fusion)

    def unet_steps(self) -> int:
        """UNet evaluations of every patch of one face."""
        return LPIPDiffPipeline.count_steps(self.steps, self.strength, self.fidelity)

    def generators(self, count: int, offset: int = 0) -> list[torch.Generator]:
        """One generator per face: face ``i`` gets ``seed + offset + i``, whatever the batching."""
        return [torch.Generator().manual_seed(self.seed + offset + i) for i in range(count)]

    def as_dict(self) -> dict:
        return asdict(self)


def build_scheduler(name: str = DEFAULT_SCHEDULER, prediction_type: str = "v_prediction"):
    """A new scheduler of the named kind over the model's cosine schedule. Trailing spacing makes even
    a few steps start at the last (pure-noise) timestep, and clipping is off because residual samples
    exceed [-1, 1]."""
    ddim = DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type=prediction_type,
        clip_sample=False,
        timestep_spacing="trailing",
    )
    return ddim if name == "ddim" else SCHEDULERS[name].from_config(ddim.config)


def sampling_pipeline(pipeline: LPIPDiffPipeline, scheduler: str = DEFAULT_SCHEDULER) -> LPIPDiffPipeline:
    """The same UNet with a new scheduler of the named kind, built from the pipeline's scheduler config.

    A call of the pipeline sets its scheduler's timesteps, so concurrent calls each need a pipeline of
    their own: this is cheap (the UNet is shared) and is how every restoring path gets one. Its progress
    bar is off: those paths report progress through the step callback.
    """
    if scheduler not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {SCHEDULER_NAMES}, got {scheduler!r}")
    fresh = LPIPDiffPipeline(unet=pipeline.unet, scheduler=SCHEDULERS[scheduler].from_config(pipeline.scheduler.config))
    fresh.set_progress_bar_config(disable=True)
    return fresh


def restore_faces(pipeline: LPIPDiffPipeline, faces, options: SamplingOptions, generator=None,
                  callback_on_step_end=None):
    """Restore aligned faces as ``options`` say: the product's one call of the pipeline (the CLI, the
    whole-photo restorer, the demo's service, evaluation and training validation all come here).

    Args:
        pipeline: a loaded pipeline; the call runs on a :func:`sampling_pipeline` of it (so it is safe
            from several threads at once).
        faces: one face or a list of them, anything the pipeline accepts.
        generator: one ``torch.Generator`` per face; ``None``: face ``i`` gets ``options.seed + i``.
        callback_on_step_end: the pipeline's step callback (progress, interruption).

    Returns:
        The pipeline's output, as numpy arrays (``images`` and ``uncertainty``).
    """
    if generator is None:
        generator = options.generators(len(split_batch(faces)))
    return sampling_pipeline(pipeline, options.scheduler)(
        faces, generator=generator, output_type="np", callback_on_step_end=callback_on_step_end,
        **options.pipeline_kwargs()
    )


def restore_all(pipeline, degraded: list[np.ndarray], options: SamplingOptions, batch_size: int = 8,
                callback_on_step_end=None) -> list[np.ndarray]:
    """Restore aligned faces in batches; face ``i`` is always sampled with ``options.seed + i``.

    A step callback that interrupts the pipeline (``pipe._interrupt = True``) stops the batches: the
    list then holds the faces restored before the interrupted batch, never its unfinished samples.
    """
    batch_size = check_whole_number("batch_size", batch_size, 1)
    restored = []
    for start in range(0, len(degraded), batch_size):
        chunk = degraded[start : start + batch_size]
        result = restore_faces(pipeline, chunk, options, generator=options.generators(len(chunk), offset=start),
                               callback_on_step_end=callback_on_step_end)
        if result.interrupted:
            break
        restored.extend(result.images)
    return restored
