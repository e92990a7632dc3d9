"""LPIP-Diff: identity-preserving face restoration by patch-wise diffusion with fusion."""

from __future__ import annotations

import inspect
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from .image_io import InvalidImageError, array_to_pil, resize_array, to_rgb_array
from .patches import FUSION_MODES, PatchGrid
from .unet import coordinate_channels

# Sampler defaults, chosen by measurement on val faces the headline evaluation does not use
# (docs/RESULTS.md): one step, the model's fused estimate of the clean face, kept the person
# best on average over the two presets, and alone beat the input on identity at the severe
# one; more steps add sharper, sampled detail that drifts from the person at heavy damage. The CLI, the demo,
# training validation and the evaluation all start from these.
DEFAULT_STEPS = 1
DEFAULT_STRENGTH = 1.0


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
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    uncertainty: np.ndarray | torch.Tensor | list


class LPIPDiffPipeline(DiffusionPipeline):
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

    def __init__(self, unet, scheduler):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """As ``DiffusionPipeline.from_pretrained``; where this class is imported from the installed
        ``lpipdiff`` package it also loads Hub-layout folders and repo ids without remote code."""
        if not cls.__module__.startswith("lpipdiff."):
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        folder = Path(pretrained_model_name_or_path)
        if not folder.is_dir():
            from huggingface_hub import snapshot_download

            hub_kwargs = {k: kwargs[k] for k in ("revision", "cache_dir", "token", "local_files_only") if k in kwargs}
            folder = Path(snapshot_download(str(pretrained_model_name_or_path), **hub_kwargs,
                                            allow_patterns=["*.json", "unet/*.safetensors", "scheduler/*"]))
        index_file = folder / "model_index.json"
        index = json.loads(index_file.read_text()) if index_file.is_file() else {}
        if not isinstance(index.get("_class_name"), list):
            return super().from_pretrained(folder, **kwargs)
        import diffusers

        from .unet import PatchFusionUNet

        model_kwargs = {k: kwargs[k] for k in ("dtype", "torch_dtype", "use_safetensors") if k in kwargs}
        unet = kwargs.get("unet") or PatchFusionUNet.from_pretrained(folder, subfolder="unet", **model_kwargs)
        scheduler = kwargs.get("scheduler") or getattr(diffusers, index["scheduler"][1]).from_pretrained(
            folder, subfolder="scheduler"
        )
        return cls(unet=unet, scheduler=scheduler)

    def save_pretrained(self, save_directory, **kwargs):
        super().save_pretrained(save_directory, **kwargs)
        if not type(self).__module__.startswith("lpipdiff."):
            # Loaded as Hub remote code: diffusers just wrote module paths of its own module
            # cache into model_index.json; write the code and the Hub layout again.
            make_self_contained(save_directory, inspect.getfile(type(self)), inspect.getfile(type(self.unet)))

    @torch.no_grad()
    def __call__(
        self,
        image,
        num_inference_steps: int = DEFAULT_STEPS,
        strength: float = DEFAULT_STRENGTH,
        patch_stride: int | None = None,
        fusion: str = "uniform",
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        unet_batch_size: int = 64,
        callback_on_step_end: Callable[[int, int], None] | None = None,
    ) -> LPIPDiffPipelineOutput | tuple:
        r"""Restore one face or a list of faces.

        Args:
            image (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor`, path, or a list of them):
                aligned degraded faces. Arrays are ``HxW``, ``HxWx1/3/4`` (uint8, uint16 or
                float in [0, 1]); tensors are ``CxHxW`` or ``BxCxHxW`` in [0, 1]. Grayscale is
                replicated to RGB, alpha is dropped. Each face is resized to the model's
                ``face_size`` and the result back to the input's size.
            num_inference_steps (`int`, defaults to ``DEFAULT_STEPS``, 1):
                denoising steps over the full schedule; with ``strength < 1`` only the last
                ``round(num_inference_steps * strength)`` of them run. One step returns the
                model's fused estimate of the clean face (most faithful); more steps sample
                sharper detail (more realism, less fidelity: docs/RESULTS.md).
            strength (`float`, defaults to ``DEFAULT_STRENGTH``, 1.0):
                in (0, 1]. 1.0 starts from pure noise (most realism); lower values start from
                the degraded input noised to an intermediate timestep (more fidelity, fewer steps).
            patch_stride (`int`, *optional*):
                distance between neighbouring patches; defaults to half the patch size. Smaller
                strides restore each pixel more times (better fusion, more UNet evaluations).
            fusion (`str`, defaults to ``"uniform"``):
                how overlapping patch predictions are weighted: ``"uniform"`` (plain mean) or
                ``"window"`` (weights falling towards patch borders, against seams).
            generator (`torch.Generator` or list of them, *optional*):
                for reproducible sampling; pass one generator per image to make each image's
                result independent of the batch it is in.
            output_type (`str`, defaults to ``"pil"``): ``"pil"``, ``"np"`` or ``"pt"``.
            return_dict (`bool`, defaults to True):
                return a [`LPIPDiffPipelineOutput`] instead of a tuple ``(images, uncertainty)``.
            unet_batch_size (`int`, defaults to 64):
                how many patches go through the UNet at once (memory versus speed).
            callback_on_step_end (`Callable[[int, int], None]`, *optional*):
                called as ``callback(step_index, total_steps)`` after every denoising step,
                for progress bars in user interfaces.

        Returns:
            [`LPIPDiffPipelineOutput`] or `tuple`. ``uncertainty`` is, per pixel, the weighted
            standard deviation between the clean-face estimates (x0) of the overlapping patches,
            averaged over channels and over the denoising steps with each step weighted by its
            signal fraction ``alpha_bar_t`` (so the noise-dominated first steps count little),
            in image units (0..1). It is zero where a single patch covers a pixel.
        """
        config = self.unet.config
        face_size, patch_size = config.face_size, config.patch_size
        patch_stride = patch_stride or max(1, patch_size // 2)
        if fusion not in FUSION_MODES:
            raise ValueError(f"fusion must be one of {FUSION_MODES}, got {fusion!r}")
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be at least 1, got {num_inference_steps}")
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")

        # 1. Inputs: RGB in [-1, 1] at face_size.
        faces = split_batch(image)
        arrays = [to_rgb_array(face) for face in faces]
        sizes = [(array.shape[1], array.shape[0]) for array in arrays]
        batch = len(arrays)
        if isinstance(generator, list) and len(generator) != batch:
            raise ValueError(f"got {len(generator)} generators for {batch} images")
        device, dtype = self._execution_device, self.unet.dtype
        degraded = torch.stack([torch.from_numpy(resize_array(a, face_size)).permute(2, 0, 1) for a in arrays])
        degraded = (degraded * 2 - 1).to(device=device, dtype=dtype)

        # 2. The conditioning patches do not change over the steps: crop them once.
        grid = PatchGrid(face_size, face_size, patch_size, patch_stride, fusion)
        degraded_patches = grid.crop(degraded)
        coordinates = grid.crop(coordinate_channels(face_size, device, dtype)).repeat(batch, 1, 1, 1)
        context = F.interpolate(degraded, size=(patch_size, patch_size), mode="area")
        context = context.repeat_interleave(grid.num_patches, dim=0)

        # 3. Timesteps; strength < 1 skips the first, noisiest ones.
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        steps_run = min(num_inference_steps, max(1, round(num_inference_steps * strength)))
        begin = (num_inference_steps - steps_run) * self.scheduler.order
        timesteps = self.scheduler.timesteps[begin:]
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(begin)

        # 4. Starting sample. In residual mode the diffused quantity of the input itself is zero.
        clean_start = torch.zeros_like(degraded) if config.residual else degraded
        noise = randn_tensor(degraded.shape, generator=generator, device=device, dtype=dtype)
        if strength < 1.0:
            sample = self.scheduler.add_noise(clean_start, noise, timesteps[:1].repeat(batch))
        else:
            sample = noise * self.scheduler.init_noise_sigma

        # 5. Denoising loop: crop, predict every patch, fuse, one scheduler step on the whole face.
        step_kwargs = {"generator": generator} if accepts(self.scheduler.step, "generator") else {}
        spread_sum = torch.zeros(batch, 1, face_size, face_size, device=device, dtype=torch.float32)
        weight_sum = 0.0
        for i, t in enumerate(self.progress_bar(timesteps)):
            noisy_patches = grid.crop(self.scheduler.scale_model_input(sample, t))
            prediction = torch.cat(
                [
                    self.unet(
                        noisy_patches[j : j + unet_batch_size],
                        t,
                        degraded_patches[j : j + unet_batch_size],
                        coordinates[j : j + unet_batch_size],
                        context[j : j + unet_batch_size],
                    )
                    for j in range(0, noisy_patches.shape[0], unet_batch_size)
                ]
            )
            fused, spread = grid.fuse(prediction, return_spread=True)
            signal = self._signal_fraction(t)
            spread_sum += signal * self._x0_scale(signal) * spread.float().mean(dim=1, keepdim=True)
            weight_sum += signal
            sample = self.scheduler.step(fused, t, sample, **step_kwargs).prev_sample
            if callback_on_step_end is not None:
                callback_on_step_end(i, len(timesteps))

        # 6. Back to images at the input sizes.
        restored = degraded + sample / config.residual_scale if config.residual else sample
        restored = ((restored.float() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
        to_image_units = 0.5 / (config.residual_scale if config.residual else 1.0)
        uncertainty = (spread_sum / max(weight_sum, 1e-12) * to_image_units)[:, 0].cpu().numpy()
        images = [resize_array(face, size) for face, size in zip(restored, sizes)]
        maps = [resize_array(m[..., None], size)[..., 0] for m, size in zip(uncertainty, sizes)]
        images, maps = format_output(images, output_type), format_output(maps, output_type, is_map=True)

        self.maybe_free_model_hooks()
        if not return_dict:
            return images, maps
        return LPIPDiffPipelineOutput(images=images, uncertainty=maps)

    def _signal_fraction(self, timestep) -> float:
        return float(self.scheduler.alphas_cumprod[int(timestep)])

    def _x0_scale(self, alpha_bar: float) -> float:
        """How a spread in the model's prediction maps to a spread in its x0 estimate."""
        prediction_type = self.scheduler.config.prediction_type
        if prediction_type == "epsilon":
            return ((1 - alpha_bar) / max(alpha_bar, 1e-8)) ** 0.5
        if prediction_type == "v_prediction":
            return (1 - alpha_bar) ** 0.5
        return 1.0


def split_batch(image) -> list:
    """The list of single images behind any accepted ``image`` argument."""
    if isinstance(image, (list, tuple)):
        if not image:
            raise InvalidImageError("got an empty list of images")
        return list(image)
    if isinstance(image, torch.Tensor) and image.ndim == 4:
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


REMOTE_UNET_MODULE = "lpipdiff_unet"
REMOTE_CODE_FILES = ("image_io.py", "patches.py", "unet.py")


def make_self_contained(folder, pipeline_file=None, unet_file=None) -> None:
    """Give a saved pipeline folder diffusers' custom-code layout, so that
    ``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`` needs no ``lpipdiff``:
    this file and the modules it imports at the root, the UNet's module in ``unet/``."""
    folder = Path(folder)
    pipeline_file = Path(pipeline_file or __file__)
    unet_file = Path(unet_file or pipeline_file.parent / "unet.py")
    shutil.copy(pipeline_file, folder / "pipeline_lpipdiff.py")
    for name in REMOTE_CODE_FILES:
        shutil.copy(pipeline_file.parent / name, folder / name)
    (folder / "unet").mkdir(exist_ok=True)
    shutil.copy(unet_file, folder / "unet" / f"{REMOTE_UNET_MODULE}.py")
    index_file = folder / "model_index.json"
    index = json.loads(index_file.read_text())
    index["_class_name"] = ["pipeline_lpipdiff", "LPIPDiffPipeline"]
    index["unet"] = [REMOTE_UNET_MODULE, "PatchFusionUNet"]
    index_file.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
