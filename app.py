"""LPIP-Diff demo: restore a degraded face photo in the browser (locally or as a Space).

    python app.py                                   # http://127.0.0.1:7860, bundled model
    LPIPDIFF_MODEL=org/lpipdiff-... python app.py   # another model folder or Hub id

The same function is served as the API endpoint ``restore`` (see README for gradio_client).
"""

from __future__ import annotations

import os
import tempfile
import time
from functools import lru_cache
from pathlib import Path

import cv2
import gradio as gr
import numpy as np
import PIL.Image
import torch

from lpipdiff.detail import DEFAULT_DETAIL
from lpipdiff.faces import FaceRestorer, NoFaceError
from lpipdiff.image_io import MAX_PIXELS, InvalidImageError, array_to_pil, load_image_file, save_image
from lpipdiff.loading import ModelLoadError, load_pipeline
from lpipdiff.pipeline_lpipdiff import LPIPDiffPipeline
from lpipdiff.sampling import DEFAULT_FIDELITY, DEFAULT_SCHEDULER, DEFAULT_STEPS, DEFAULT_STRENGTH, SCHEDULERS

EXAMPLES = Path(__file__).resolve().parent / "examples"
# A development checkout has the face detector's weights beside it (offline); elsewhere facexlib
# downloads them on first use.
DEV_DETECTOR_WEIGHTS = Path(__file__).resolve().parent.parent / "shared" / "weights" / "facexlib"
if DEV_DETECTOR_WEIGHTS.is_dir():
    os.environ.setdefault("LPIPDIFF_FACEXLIB_WEIGHTS", str(DEV_DETECTOR_WEIGHTS))
MODES = ["Auto", "Whole photo", "Aligned face"]
MAX_STEPS, MAX_SAMPLES = 50, 4
LIMITS = (
    f"Limits: images up to {MAX_PIXELS // 1_000_000} megapixels and 20 MB; up to {MAX_STEPS} steps and "
    f"{MAX_SAMPLES} samples. Grayscale, RGBA (alpha is dropped) and 16-bit images are accepted."
)


@lru_cache(maxsize=1)
def base_pipeline() -> LPIPDiffPipeline:
    pipeline = load_pipeline(os.environ.get("LPIPDIFF_MODEL"), device=os.environ.get("LPIPDIFF_DEVICE"))
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@lru_cache(maxsize=1)
def face_restorer() -> FaceRestorer:
    return FaceRestorer(base_pipeline())


def pipeline_with(scheduler: str) -> LPIPDiffPipeline:
    """The shared UNet with a fresh scheduler of the requested kind (no shared state mutated)."""
    base = base_pipeline()
    pipeline = LPIPDiffPipeline(unet=base.unet, scheduler=SCHEDULERS[scheduler].from_config(base.scheduler.config))
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def colour_map(uncertainty: np.ndarray) -> np.ndarray:
    """Uncertainty as a heat map, scaled to its own maximum (the caption gives the maximum)."""
    scaled = np.clip(uncertainty / max(float(uncertainty.max()), 1e-6), 0, 1)
    heat = cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)
    heat = cv2.resize(heat, (256, 256), interpolation=cv2.INTER_NEAREST)  # tiny maps are unreadable
    return heat[..., ::-1]


def restore(image_path, mode="Auto", steps=DEFAULT_STEPS, scheduler=DEFAULT_SCHEDULER, strength=DEFAULT_STRENGTH,
            stride=32, seed=0, samples=1, detail=DEFAULT_DETAIL, fidelity=DEFAULT_FIDELITY, progress=gr.Progress()):
    """Restore the faces of one image. Returns (before/after, faces, uncertainty, PNG file, status).

    ``fidelity`` comes last so that API calls written before it existed keep their meaning; a
    ``strength`` below 1 is the experts' start from the noised input, where fidelity does not apply.
    """
    started = time.perf_counter()
    try:
        if not image_path:
            raise InvalidImageError("upload an image first")
        image = load_image_file(image_path)
        steps, samples, seed = int(steps), int(samples), int(seed)
        if not 1 <= steps <= MAX_STEPS or not 1 <= samples <= MAX_SAMPLES:
            raise ValueError(f"steps must be 1..{MAX_STEPS} and samples 1..{MAX_SAMPLES}")
        pipeline = pipeline_with(scheduler)
        sample_index = [0]

        def advance(pipe, step, timestep, callback_kwargs):
            total = samples * pipe.num_timesteps
            progress((sample_index[0] * pipe.num_timesteps + step + 1, total), desc="denoising")
            return {}

        sampling = dict(fidelity=None if float(strength) < 1 else float(fidelity), num_inference_steps=steps,
                        strength=float(strength), patch_stride=int(stride), callback_on_step_end=advance)
        whole_photo, note = mode != "Aligned face", ""
        outputs = []
        for sample in range(samples):
            sample_index[0] = sample
            generator = torch.Generator().manual_seed(seed + sample)
            if whole_photo:
                try:
                    result = face_restorer().restore(image, generator=generator, pipeline=pipeline,
                                                     detail=float(detail), **sampling)
                    outputs.append((result.image, result.faces, result.restored_faces, result.uncertainty))
                    continue
                except NoFaceError:
                    if mode == "Whole photo":
                        raise
                    whole_photo, note = False, "No face detected: restored the image as an aligned face. "
            result = pipeline(image, generator=generator, output_type="np", **sampling)
            outputs.append((result.images[0], [image], [result.images[0]], [result.uncertainty[0]]))
    except (InvalidImageError, NoFaceError, ModelLoadError, ValueError) as error:
        raise gr.Error(str(error), print_exception=False) from None

    restored, faces_before, _, uncertainty = outputs[0]
    gallery = [(array_to_pil(f), f"face {i + 1}: input") for i, f in enumerate(faces_before)]
    for s, (_, _, after, _) in enumerate(outputs):
        gallery += [(array_to_pil(f), f"face {i + 1}: sample {s + 1}") for i, f in enumerate(after)]
    download = Path(tempfile.mkdtemp(prefix="lpipdiff-")) / f"{Path(image_path).stem}_restored.png"
    save_image(restored, download)
    before = cv2.resize(image, (restored.shape[1], restored.shape[0]), interpolation=cv2.INTER_LANCZOS4)
    seconds = time.perf_counter() - started
    status = (
        f"{note}Restored {len(faces_before)} face(s), {samples} sample(s), in {seconds:.1f} s. "
        f"Uncertainty maximum {float(uncertainty[0].max()):.3f} (0..1 image units)."
    )
    return (
        (array_to_pil(np.clip(before, 0, 1)), array_to_pil(restored)),
        gallery,
        colour_map(uncertainty[0]),
        str(download),
        status,
    )


class ImageUpload(gr.Image):
    """gr.Image that hands the uploaded file over untouched (16-bit stays 16-bit) and turns an
    unreadable upload into a message instead of a server error."""

    def get_block_name(self) -> str:
        return "image"  # the browser side is gr.Image's own

    def preprocess(self, payload):
        try:
            return super().preprocess(payload)
        except (PIL.UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
            raise gr.Error(f"{getattr(payload, 'orig_name', 'the upload')}: not a readable image ({error})",
                           print_exception=False) from None


def build_demo() -> gr.Blocks:
    patch = base_pipeline().unet.config.patch_size
    with gr.Blocks(title="LPIP-Diff face restoration") as demo:
        gr.Markdown(
            "# LPIP-Diff: identity-preserving face restoration\n"
            "Upload a degraded photo. Faces are found, aligned and restored patch by patch by a conditional "
            "diffusion model, then pasted back. The uncertainty map shows where overlapping patches disagreed."
        )
        with gr.Row():
            with gr.Column():
                image = ImageUpload(type="filepath", image_mode=None, label="Degraded photo or aligned face",
                                    height=360)
                mode = gr.Radio(MODES, value="Auto", label="Input kind")
                fidelity = gr.Slider(0, 1, value=DEFAULT_FIDELITY, step=0.05, elem_id="fidelity",
                                     label="Fidelity (1: the model's mean estimate, most faithful but smooth; "
                                           "lower: sharper, sampled detail that drifts from the person)")
                with gr.Accordion("Sampling (experts)", open=False):
                    steps = gr.Slider(1, MAX_STEPS, value=DEFAULT_STEPS, step=1,
                                      label="Steps of the schedule (about (1 - fidelity) x steps of them run)")
                    strength = gr.Slider(0.1, 1.0, value=DEFAULT_STRENGTH, step=0.05,
                                         label="Strength (below 1: start from the noised input instead; "
                                               "fidelity then does not apply)")
                    stride = gr.Slider(max(1, patch // 4), patch, value=patch // 2, step=max(1, patch // 8),
                                       label=f"Patch stride (patches are {patch} px; smaller: more overlap, slower)")
                    scheduler = gr.Dropdown(sorted(SCHEDULERS), value=DEFAULT_SCHEDULER, label="Scheduler")
                    seed = gr.Number(0, precision=0, label="Seed")
                    samples = gr.Slider(1, MAX_SAMPLES, value=1, step=1, label="Samples")
                    detail = gr.Slider(0, 1, value=DEFAULT_DETAIL, step=0.25,
                                       label="Input detail kept on faces larger than the model (1: all of it above "
                                             "the model's resolution; 0: none, softer than the input)")
                button = gr.Button("Restore", variant="primary", elem_id="restore-button")
                gr.Markdown(LIMITS)
            with gr.Column():
                slider = gr.ImageSlider(label="Before / after", type="pil", elem_id="result-slider")
                status = gr.Markdown(elem_id="status")
                faces = gr.Gallery(label="Faces: input and restored", columns=4, height=220)
                uncertainty = gr.Image(label="Uncertainty (patch disagreement)", height=220)
                download = gr.File(label="Download PNG")
        examples = sorted(str(p) for p in EXAMPLES.glob("*.png"))
        if examples:
            gr.Examples(examples, inputs=[image], label="Examples (the astronaut photo, degraded)")
        button.click(
            restore,
            inputs=[image, mode, steps, scheduler, strength, stride, seed, samples, detail, fidelity],
            outputs=[slider, faces, uncertainty, download, status],
            api_name="restore",
        )
    return demo.queue(max_size=16, default_concurrency_limit=1)


if __name__ == "__main__":
    build_demo().launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        max_file_size="20mb",
    )
