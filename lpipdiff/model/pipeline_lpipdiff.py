"""LPIP-Diff: identity-preserving face restoration by patch-wise diffusion with fusion."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from ..checks import (
    check_generators,
    check_whole_number,
    checked_callback_result,
    is_whole_number,
    sampling_path,
)
from ..config.defaults import (
    DEFAULT_FIDELITY,
    DEFAULT_FUSION,
    DEFAULT_STEPS,
    DEFAULT_STRENGTH,
    FUSION_MODES,
    default_stride,
)
from ..io.images import InvalidImageError, array_to_pil, resize_array, to_rgb_array
from .hub_layout import HubLayoutMixin
from .patches import PatchGrid
from .unet import coordinate_channels


@dataclass
class LPIPDiffPipelineOutput(BaseOutput):
    """Output of :class:`LPIPDiffPipeline`.

    Args:
        images: the restored faces at the size of the inputs: a list of PIL images, a
            ``(B, H, W, 3)`` numpy array in [0, 1] or a ``(B, 3, H, W)`` tensor in [0, 1],
            as ``output_type`` asked (a list of arrays/tensors when the inputs differ in size).
        uncertainty: per-pixel disagreement between overlapping patches, in image units
            (0..1), as ``(B, H, W)`` float arrays (tensors for ``output_type="pt"``; a list when
            the inputs differ in size). See :meth:`LPIPDiffPipeline.__call__`.
        interrupted: a step callback stopped the call (``pipeline._interrupt = True``) before its
            last step: the images are the unfinished sample of the step it stopped at, not a
            restoration.
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    uncertainty: np.ndarray | torch.Tensor | list
    interrupted: bool = False


class UncertaintyAccumulator:
    """Per-pixel disagreement between overlapping patches, averaged over the denoising steps.

    Each step's spread of the fused prediction is turned into a spread of its clean-face (x0)
    estimate and weighted by the step's signal fraction ``alpha_bar_t``, so the noise-dominated
    first steps count little.
    """

    def __init__(self, scheduler, batch: int, size: int, image_units: float, device):
        self.scheduler, self.image_units = scheduler, image_units
        self.spread_sum = torch.zeros(batch, 1, size, size, device=device, dtype=torch.float32)
        self.weight_sum = 0.0

    def add(self, spread: torch.Tensor, timestep) -> None:
        signal = float(self.scheduler.alphas_cumprod[int(timestep)])
        self.spread_sum += signal * self._x0_scale(signal) * spread.float().mean(dim=1, keepdim=True)
        self.weight_sum += signal

    def result(self) -> torch.Tensor:
        """``(B, H, W)`` in image units (0..1)."""
        return (self.spread_sum / max(self.weight_sum, 1e-12) * self.image_units)[:, 0]

    def _x0_scale(self, alpha_bar: float) -> float:
        """How a spread in the model's prediction maps to a spread in its x0 estimate."""
        prediction_type = self.scheduler.config.prediction_type
        if prediction_type == "epsilon":
            return ((1 - alpha_bar) / max(alpha_bar, 1e-8)) ** 0.5
        if prediction_type == "v_prediction":
            return (1 - alpha_bar) ** 0.5
        return 1.0


class LPIPDiffPipeline(HubLayoutMixin, DiffusionPipeline):
    r"""Restores aligned faces with a patch-fusion conditional diffusion model (LPIP-Diff).

    At every denoising step the face is cut into overlapping patches; the UNet predicts
    each patch from the noisy patch, the degraded patch and where the patch lies in the
    face; the overlapping predictions are fused into one estimate for the whole face and
    the scheduler takes one step on the whole image.

    Args:
        unet ([`PatchFusionUNet`]): the patch denoiser; its config holds ``face_size``,
            ``patch_size`` and which conditioning inputs it uses.
        scheduler ([`SchedulerMixin`]): any diffusers scheduler, DDIM by default;
            ``DPMSolverMultistepScheduler`` and ``UniPCMultistepScheduler`` work through
            ``from_config``.
    """

    model_cpu_offload_seq = "unet"
    _callback_tensor_inputs = ["sample"]

    def __init__(self, unet, scheduler):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    @property
    def num_timesteps(self) -> int:
        """How many denoising steps the current (or last) call runs."""
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        """Set ``pipeline._interrupt = True`` from a step callback to skip the remaining steps (diffusers'
        convention); the call then returns what it has, marked ``interrupted``. Reset at the start of
        every call."""
        return getattr(self, "_interrupt", False)

    @torch.no_grad()
    def __call__(
        self,
        image,
        fidelity: float | None = DEFAULT_FIDELITY,
        num_inference_steps: int = DEFAULT_STEPS,
        strength: float = DEFAULT_STRENGTH,
        patch_stride: int | None = None,
        fusion: str = DEFAULT_FUSION,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        unet_batch_size: int = 64,
        callback_on_step_end: Callable | PipelineCallback | MultiPipelineCallbacks | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ("sample",),
    ) -> LPIPDiffPipelineOutput | tuple:
        r"""Restore one face or a list of faces.

        Args:
            image (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor`, path, or a list of them):
                aligned degraded faces. Arrays are ``HxW``, ``HxWx1/3/4`` (uint8, uint16 or
                float in [0, 1]); tensors are ``CxHxW`` or ``BxCxHxW`` of the same pixel types, on
                any device that holds data (not ``meta``). Grayscale is
                replicated to RGB, alpha is dropped. Each face is resized to the model's
                ``face_size`` and the result back to the input's size.
            fidelity (`float` or `None`, defaults to ``DEFAULT_FIDELITY``):
                the one knob between fidelity to the person and realism, in [0, 1]. Sampling
                starts from the posterior mean: the model's fused estimate of the clean face from
                pure noise at the last timestep (one UNet evaluation per patch). With
                ``fidelity=1`` that estimate is the result (exactly what ``fidelity=None,
                num_inference_steps=1`` returns): faithful, smooth. Below 1 it is noised with
                fresh noise to the timestep where the last ``k = round(num_inference_steps *
                (1 - fidelity))`` steps of the ``num_inference_steps``-step schedule begin (about
                ``(1 - fidelity) * 1000`` of the 1000 training timesteps with trailing spacing) and
                those ``k`` steps sample detail from there: lower is sharper and drifts further
                from the person; 0 is close to sampling from pure noise. ``None`` is the expert
                path: ``num_inference_steps`` steps from pure noise, or from the noised input
                when ``strength < 1``. A fidelity does not apply when ``strength < 1`` (see
                ``strength``).
            num_inference_steps (`int`, defaults to ``DEFAULT_STEPS``, 5):
                steps of the full schedule. With a ``fidelity``, the schedule the posterior mean
                re-enters (``1 + k`` UNet evaluations in all; more steps: finer steps, same start
                time). With ``fidelity=None``, denoising steps from pure noise (one step: the
                posterior mean); with ``strength < 1`` only the last
                ``round(num_inference_steps * strength)`` of them run.
            strength (`float`, defaults to ``DEFAULT_STRENGTH``, 1.0):
                in (0, 1]. 1.0 starts from pure noise (or from the posterior mean, with a
                ``fidelity``); lower values start from the degraded input noised to an intermediate
                timestep (image to image), where ``fidelity`` does not apply: the call runs as with
                ``fidelity=None`` (the rule of :func:`lpipdiff.checks.sampling_path`).
            patch_stride (`int`, *optional*):
                distance between neighbouring patches, from ``patch_size // 8`` to ``patch_size``;
                defaults to half the patch size. Smaller strides restore each pixel more times
                (better fusion, more UNet evaluations: about ``(face_size / stride) ** 2`` a step).
            fusion (`str`, defaults to ``"window"``):
                how overlapping patch predictions are weighted: ``"window"`` (weights falling
                towards patch borders, so no seam shows where the set of patches changes) or
                ``"uniform"`` (plain mean).
            generator (`torch.Generator` or list of them, *optional*):
                for reproducible sampling; pass one generator per image to make each image's
                result independent of the batch it is in.
            output_type (`str`, defaults to ``"pil"``): ``"pil"``, ``"np"`` or ``"pt"``.
            return_dict (`bool`, defaults to True):
                return a [`LPIPDiffPipelineOutput`] instead of a tuple ``(images, uncertainty)``.
            unet_batch_size (`int`, defaults to 64):
                how many patches go through the UNet at once (memory versus speed).
            callback_on_step_end (`Callable`, `PipelineCallback` or `MultiPipelineCallbacks`, *optional*):
                diffusers' step callback, called after every denoising step as
                ``callback_on_step_end(pipeline, step_index, timestep, callback_kwargs)``;
                ``callback_kwargs`` holds the tensors named in ``callback_on_step_end_tensor_inputs``
                and the callback returns a dict, whose ``"sample"`` (if any) replaces the sample.
                ``pipeline.num_timesteps`` is the number of steps of the call (for progress bars);
                setting ``pipeline._interrupt = True`` skips the remaining steps (see :attr:`interrupt`).
            callback_on_step_end_tensor_inputs (`list[str]`, defaults to ``["sample"]``):
                which tensors the callback receives; only ``"sample"`` (the whole-face diffused
                sample after the step) is available.

        Returns:
            [`LPIPDiffPipelineOutput`] or `tuple`. ``uncertainty`` is, per pixel, the weighted
            standard deviation between the clean-face estimates (x0) of the overlapping patches,
            averaged over channels and over the denoising steps with each step weighted by its
            signal fraction ``alpha_bar_t`` (so the noise-dominated first steps count little),
            in image units (0..1). It is zero where a single patch covers a pixel.
        """
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        config = self.unet.config
        patch_stride = default_stride(config.patch_size) if patch_stride is None else patch_stride
        # 0. Check inputs. Raise an error if not correct. Below strength 1 the fidelity comes back None.
        fidelity, strength = sampling_path(fidelity, strength)
        self.check_inputs(num_inference_steps, patch_stride, fusion, output_type, unet_batch_size,
                          callback_on_step_end_tensor_inputs)
        self._interrupt = False

        # 1. Encode the inputs: RGB in [-1, 1] at face_size, and the sizes to restore them to.
        degraded, sizes = self.preprocess(image)
        batch, device = degraded.shape[0], degraded.device
        check_generators(generator, batch)

        # 2. The patch grid, and the conditioning patches, which do not change over the steps.
        grid = PatchGrid(config.face_size, config.face_size, config.patch_size, patch_stride, fusion)
        condition = self.patch_conditioning(degraded, grid)

        # 3. Timesteps, in passes: with a fidelity, first the posterior mean (one step over a one-step
        #    schedule from pure noise), then the last steps of the full schedule from the posterior
        #    mean noised back to where they begin; without, the last steps from pure noise or, when
        #    strength < 1, from the noised input.
        steps_run = self.steps_to_run(num_inference_steps, strength, fidelity)
        passes = [(1, 1)] if fidelity is not None else []
        passes.append((num_inference_steps, steps_run))
        start = self.unet.encode(degraded, degraded) if fidelity is None and strength < 1.0 else None
        self._num_timesteps = self.count_steps(num_inference_steps, strength, fidelity)

        # 4. Denoising loop: crop, predict every patch, fuse, one scheduler step on the whole face.
        extra_step_kwargs = {"generator": generator} if accepts(self.scheduler.step, "generator") else {}
        uncertainty = UncertaintyAccumulator(self.scheduler, batch, config.face_size, self.unet.image_units, device)
        step_index = 0
        with self.progress_bar(total=self._num_timesteps) as progress_bar:
            for schedule_steps, steps in passes:
                timesteps = self.get_timesteps(schedule_steps, steps, device)
                sample = self.prepare_sample(degraded, start, timesteps[:1], generator)
                for t in timesteps:
                    if self.interrupt:
                        continue
                    noisy_patches = grid.crop(self.scheduler.scale_model_input(sample, t))
                    prediction = self.predict_patches(noisy_patches, t, condition, unet_batch_size)
                    fused, spread = grid.fuse(prediction, return_spread=True)
                    uncertainty.add(spread, t)
                    sample = self.scheduler.step(fused, t, sample, **extra_step_kwargs).prev_sample
                    if callback_on_step_end is not None:
                        # check_inputs allows only "sample" among the tensor inputs.
                        callback_kwargs = {name: sample for name in callback_on_step_end_tensor_inputs}
                        callback_outputs = callback_on_step_end(self, step_index, t, callback_kwargs)
                        sample = checked_callback_result(callback_outputs, sample)
                    step_index += 1
                    progress_bar.update()
                start = sample

        # 5. Decode: back to images at the input sizes.
        restored = ((self.unet.decode(sample, degraded).float() + 1) / 2).clamp(0, 1)
        images = self.postprocess(restored.permute(0, 2, 3, 1), sizes, output_type)
        maps = self.postprocess(uncertainty.result()[..., None], sizes, output_type, is_map=True)

        # 6. Offload all models.
        self.maybe_free_model_hooks()
        if not return_dict:
            return images, maps
        return LPIPDiffPipelineOutput(images=images, uncertainty=maps, interrupted=step_index < self._num_timesteps)

    def check_inputs(self, num_inference_steps, patch_stride, fusion, output_type, unet_batch_size, tensor_inputs):
        """The arguments besides ``fidelity`` and ``strength``, which :func:`~lpipdiff.checks.sampling_path` checks."""
        check_whole_number("num_inference_steps", num_inference_steps, 1, self.scheduler.config.num_train_timesteps)
        patch_size = self.unet.config.patch_size
        smallest = min_stride(patch_size)
        if not is_whole_number(patch_stride) or not smallest <= patch_stride <= patch_size:
            raise ValueError(
                f"patch_stride must be a whole number from {smallest} to the patch size {patch_size} "
                f"(smaller strides multiply the work without adding overlap that helps), got {patch_stride!r}"
            )
        if fusion not in FUSION_MODES:
            raise ValueError(f"fusion must be one of {FUSION_MODES}, got {fusion!r}")
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")
        check_whole_number("unet_batch_size", unet_batch_size, 1)
        unknown = [name for name in tensor_inputs if name not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(f"callback_on_step_end_tensor_inputs: {unknown} not in {self._callback_tensor_inputs}")

    def preprocess(self, image) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Any accepted ``image`` argument -> ``(B, 3, F, F)`` in [-1, 1] on the execution device, and
        the (width, height) of every input."""
        arrays = [to_rgb_array(face) for face in split_batch(image)]
        face_size = self.unet.config.face_size
        degraded = torch.stack([torch.from_numpy(resize_array(a, face_size)).permute(2, 0, 1) for a in arrays])
        degraded = (degraded * 2 - 1).to(device=self._execution_device, dtype=self.unet.dtype)
        return degraded, [(array.shape[1], array.shape[0]) for array in arrays]

    def patch_conditioning(self, degraded: torch.Tensor, grid: PatchGrid) -> dict[str, torch.Tensor]:
        """The UNet's inputs besides the noisy patch, one row per patch: the degraded patch, where
        the patch lies in the face, and the whole degraded face at patch resolution."""
        patch_size = self.unet.config.patch_size
        coordinates = coordinate_channels(self.unet.config.face_size, degraded.device, degraded.dtype)
        context = F.interpolate(degraded, size=(patch_size, patch_size), mode="area")
        return {
            "degraded": grid.crop(degraded),
            "coordinates": grid.crop(coordinates).repeat(degraded.shape[0], 1, 1, 1),
            "context": context.repeat_interleave(grid.num_patches, dim=0),
        }

    @staticmethod
    def steps_to_run(num_inference_steps: int, strength: float, fidelity: float | None) -> int:
        """How many of the schedule's last steps run: ``round(num_inference_steps * strength)`` (at
        least one) from noise or the input; ``round(num_inference_steps * (1 - fidelity))`` after the
        posterior mean (none at fidelity 1, where the posterior mean is the result)."""
        if fidelity is None:
            return min(num_inference_steps, max(1, round(num_inference_steps * strength)))
        return round(num_inference_steps * (1.0 - fidelity))

    @classmethod
    def count_steps(cls, num_inference_steps: int, strength: float, fidelity: float | None) -> int:
        """How many denoising steps (UNet evaluations per patch) a call runs: the steps run, plus the
        posterior mean's own step when there is a ``fidelity``."""
        return cls.steps_to_run(num_inference_steps, strength, fidelity) + (fidelity is not None)

    def get_timesteps(self, num_inference_steps: int, steps_run: int, device) -> torch.Tensor:
        """The last ``steps_run`` of the scheduler's timesteps for ``num_inference_steps``."""
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        begin = (num_inference_steps - steps_run) * self.scheduler.order
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(begin)
        return self.scheduler.timesteps[begin:]

    def prepare_sample(self, degraded, start, first_timestep, generator) -> torch.Tensor:
        """The sample the loop starts from: ``start`` (diffused units) noised to ``first_timestep``,
        pure noise when there is no ``start``, or ``start`` itself when no step is left to run."""
        if start is not None and len(first_timestep) == 0:
            return start
        noise = randn_tensor(degraded.shape, generator=generator, device=degraded.device, dtype=degraded.dtype)
        if start is None:
            return noise * self.scheduler.init_noise_sigma
        return self.scheduler.add_noise(start, noise, first_timestep.repeat(degraded.shape[0]))

    def predict_patches(self, noisy_patches, timestep, condition: dict, batch_size: int) -> torch.Tensor:
        """The UNet's prediction for every patch, ``batch_size`` patches at a time."""
        predictions = []
        for start in range(0, noisy_patches.shape[0], batch_size):
            rows = slice(start, start + batch_size)
            inputs = {name: patches[rows] for name, patches in condition.items()}
            predictions.append(self.unet(noisy_patches[rows], timestep, **inputs))
        return torch.cat(predictions)

    @staticmethod
    def postprocess(images: torch.Tensor, sizes, output_type: str, is_map: bool = False):
        """``(B, F, F, C)`` results in [0, 1] -> each at its input's size, as ``output_type`` asks."""
        resized = [resize_array(image, size) for image, size in zip(images.cpu().numpy(), sizes)]
        if is_map:
            resized = [m[..., 0] for m in resized]
        return format_output(resized, output_type, is_map=is_map)


def min_stride(patch_size: int) -> int:
    """The smallest patch stride accepted: every pixel is then covered by up to 64 patches."""
    return max(1, patch_size // 8)


def split_batch(image) -> list:
    """The list of single images behind any accepted ``image`` argument."""
    if isinstance(image, (list, tuple)):
        if not image:
            raise InvalidImageError("got an empty list of images")
        return list(image)
    if isinstance(image, torch.Tensor) and image.ndim == 4:
        if image.shape[0] == 0:
            raise InvalidImageError(f"got an empty batch of images (shape {tuple(image.shape)})")
        return list(image)
    if image is None:
        raise InvalidImageError("no image given")
    return [image]


def accepts(function, argument: str) -> bool:
    return argument in inspect.signature(function).parameters


def format_output(arrays: list[np.ndarray], output_type: str, is_map: bool = False):
    """Stack same-sized results into one array/tensor, or keep a list when sizes differ."""
    if output_type == "pil" and not is_map:
        return [array_to_pil(a) for a in arrays]
    same_size = len({a.shape for a in arrays}) == 1
    if output_type == "pt":
        tensors = [torch.from_numpy(a) if is_map else torch.from_numpy(a).permute(2, 0, 1) for a in arrays]
        return torch.stack(tensors) if same_size else tensors
    return np.stack(arrays) if same_size else arrays
