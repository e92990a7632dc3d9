"""How to sample, carried as one object from every edge (CLI, demo, evaluation, training
validation, benchmarks) to the pipeline; the schedulers; the seeded batch loop.

Every command builds a :class:`SamplingOptions` once at its edge (it validates on construction)
and hands it down; below the commands nothing reads argparse or form values.
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass

import numpy as np
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler

from ..config.defaults import (
    DEFAULT_FIDELITY,
    DEFAULT_FUSION,
    DEFAULT_SCHEDULER,
    DEFAULT_STEPS,
    DEFAULT_STRENGTH,
    FUSION_MODES,
    MAX_SEED,
    SCHEDULER_NAMES,
)
from .pipeline_lpipdiff import LPIPDiffPipeline, is_whole_number

SCHEDULERS = dict(zip(SCHEDULER_NAMES, (DDIMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler)))


def check_seed(seed) -> int:
    """``seed`` as an int, or a ValueError that says what a seed may be."""
    try:
        value = int(seed)
    except (TypeError, ValueError, OverflowError):
        value = None
    if isinstance(seed, bool) or value is None or value != seed or not 0 <= value <= MAX_SEED:
        raise ValueError(f"a seed is a whole number from 0 to 2**62, got {seed!r}")
    return value


def _real(name: str, value, low: float, high: float, low_open: bool = False) -> float:
    """``value`` as a float in [low, high] (or (low, high]), else a ValueError naming ``name``."""
    inside = isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)
    inside = inside and (low < value if low_open else low <= value) and value <= high
    if not inside:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class SamplingOptions:
    """The sampler's settings, validated on construction.

    Args:
        fidelity: 0..1 between realism and faithfulness (see :meth:`LPIPDiffPipeline.__call__`), or
            ``None`` for the experts' path (``steps`` from noise, or from the noised input).
        steps: steps of the schedule, 1..1000.
        strength: in (0, 1]. Below 1 sampling starts from the noised input, where a fidelity does
            not apply: such options carry ``fidelity=None`` (this is the one place of that rule).
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
        strength = _real("strength", self.strength, 0.0, 1.0, low_open=True)
        fidelity = None if self.fidelity is None or strength < 1.0 else _real("fidelity", self.fidelity, 0.0, 1.0)
        if not is_whole_number(self.steps) or not 1 <= self.steps <= 1000:
            raise ValueError(f"steps must be a whole number from 1 to 1000, got {self.steps!r}")
        if self.stride is not None and (not is_whole_number(self.stride) or self.stride < 1):
            raise ValueError(f"stride must be a whole number of pixels (at least 1) or None, got {self.stride!r}")
        if self.fusion not in FUSION_MODES:
            raise ValueError(f"fusion must be one of {FUSION_MODES}, got {self.fusion!r}")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULER_NAMES}, got {self.scheduler!r}")
        for name, value in (("strength", strength), ("fidelity", fidelity), ("steps", int(self.steps)),
                            ("stride", None if self.stride is None else int(self.stride)),
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


def restore_all(pipeline, degraded: list[np.ndarray], options: SamplingOptions, batch_size: int = 8,
                callback_on_step_end=None) -> list[np.ndarray]:
    """Restore aligned faces in batches; face ``i`` is always sampled with ``options.seed + i``."""
    pipeline = sampling_pipeline(pipeline, options.scheduler)
    restored = []
    for start in range(0, len(degraded), batch_size):
        chunk = degraded[start : start + batch_size]
        result = pipeline(chunk, generator=options.generators(len(chunk), offset=start), output_type="np",
                          callback_on_step_end=callback_on_step_end, **options.pipeline_kwargs())
        restored.extend(result.images)
    return restored
