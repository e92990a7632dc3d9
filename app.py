"""LPIP-Diff demo: restore a degraded face photo in the browser (locally or as a Space).

    python app.py                                   # http://127.0.0.1:7860, bundled model
    LPIPDIFF_MODEL=org/lpipdiff-... python app.py   # another model folder or Hub id

The page only: the work, its limits and the model live in :mod:`lpipdiff.serving.service`, configured by
:class:`lpipdiff.serving.settings.ServingSettings` (read from ``LPIPDIFF_*`` variables here, at the edge).
The restore function is served as the API endpoint ``restore`` (README: gradio_client), the video's as
``restore_video``.
"""

from __future__ import annotations

import os
from pathlib import Path

import gradio as gr
import PIL.Image

from lpipdiff.config.defaults import (
    DEFAULT_DETAIL,
    DEFAULT_FIDELITY,
    DEFAULT_SCHEDULER,
    DEFAULT_STEPS,
    DEFAULT_STRENGTH,
    SCHEDULER_NAMES,
    default_stride,
)
from lpipdiff.io.images import MAX_PIXELS, array_to_pil
from lpipdiff.serving.requests import guard_number_inputs, public_message
from lpipdiff.serving.service import MODES, USER_ERRORS, RestorationService
from lpipdiff.serving.settings import ServingSettings

EXAMPLES = Path(__file__).resolve().parent / "examples"


class ImageUpload(gr.Image):
    """gr.Image that hands the uploaded file over untouched (16-bit stays 16-bit) and turns an
    unreadable upload into a message instead of a server error. Overrides ``preprocess`` only."""

    def get_block_name(self) -> str:
        return "image"  # the browser side is gr.Image's own

    def preprocess(self, payload):
        name = getattr(payload, "orig_name", None) or "the upload"
        try:
            return super().preprocess(payload)
        except PIL.Image.DecompressionBombError:
            message = f"{name}: too large (limit {MAX_PIXELS // 1_000_000} megapixels); downscale it first"
            raise gr.Error(message, print_exception=False) from None
        except (PIL.UnidentifiedImageError, OSError, ValueError, SyntaxError):
            raise gr.Error(f"{name}: not a readable image", print_exception=False) from None


def restore_function(service: RestorationService, outputs: int):
    """The endpoint: restore the faces of one image, yielding the ``outputs`` values (before/after,
    faces, uncertainty, PNG, status). Its arguments are the API's, in the order API calls have always
    used (``fidelity``, then ``upscale`` and ``background``, last).

    The work runs in the service's lanes; this generator wakes Gradio twice a second so that the
    request stays stoppable: when its client goes away Gradio stops pulling from it, the service's
    watchdog stops hearing from it, and the pipeline is interrupted at its next step.
    """

    def restore(image_path, mode="Auto", steps=DEFAULT_STEPS, scheduler=DEFAULT_SCHEDULER, strength=DEFAULT_STRENGTH,
                stride=None, seed=0, samples=1, detail=DEFAULT_DETAIL, fidelity=DEFAULT_FIDELITY, upscale=1,
                background=False, progress=gr.Progress()):
        try:
            request = service.request(image_path, mode, samples, detail, upscale, background, steps=steps,
                                      scheduler=scheduler, strength=strength, stride=stride, seed=seed,
                                      fidelity=fidelity)
            job = service.submit(request, progress)
            while not job.finished(timeout=0.5):
                yield tuple(gr.skip() for _ in range(outputs))
            result = job.result()
        except USER_ERRORS as error:
            raise gr.Error(public_message(error, image_path), print_exception=False) from None
        gallery = [(array_to_pil(face), caption) for face, caption in result.gallery]
        yield (array_to_pil(result.before), array_to_pil(result.restored)), gallery, result.uncertainty, \
            result.download, result.status

    return restore


def restore_video_function(service: RestorationService):
    """The video endpoint: restore the faces of one clip, yielding (the restored MP4, status). The
    clip runs in the service's heavy lane, under the same watchdog as a photo."""

    def restore_video(video_path, seed=0, progress=gr.Progress()):
        try:
            request = service.video_request(video_path, seed=seed)
            job = service.submit(request, progress)
            while not job.finished(timeout=0.5):
                yield gr.skip(), gr.skip()
            result = job.result()
        except USER_ERRORS as error:
            raise gr.Error(public_message(error, video_path), print_exception=False) from None
        yield result.video, result.status

    return restore_video


def build_demo(service: RestorationService) -> gr.Blocks:
    patch = service.patch_size
    settings = service.settings
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
                mode = gr.Radio(list(MODES), value=MODES[0], label="Input kind")
                fidelity = gr.Slider(0, 1, value=DEFAULT_FIDELITY, step=0.05, elem_id="fidelity",
                                     label="Fidelity (1: the model's mean estimate, most faithful but smooth; "
                                           "lower: sharper, sampled detail that drifts from the person)")
                with gr.Row():
                    upscale = gr.Radio([1, 2, 4][: max(1, settings.max_upscale.bit_length())], value=1,
                                       label="Whole photo: upscale")
                    background = gr.Checkbox(
                        value=False, interactive=bool(settings.bg_upsampler),
                        label=f"Upscale the background with {settings.bg_upsampler}" if settings.bg_upsampler
                        else "Background upscaler (not configured: LPIPDIFF_BG_UPSAMPLER)")
                with gr.Accordion("Sampling (experts)", open=False):
                    steps = gr.Slider(1, settings.max_steps, value=DEFAULT_STEPS, step=1,
                                      label="Steps of the schedule (about (1 - fidelity) x steps of them run)")
                    strength = gr.Slider(0.1, 1.0, value=DEFAULT_STRENGTH, step=0.05,
                                         label="Strength (below 1: start from the noised input instead; "
                                               "fidelity then does not apply)")
                    stride = gr.Slider(max(1, patch // 4), patch, value=default_stride(patch), step=max(1, patch // 8),
                                       label=f"Patch stride (patches are {patch} px; smaller: more overlap, slower)")
                    scheduler = gr.Dropdown(list(SCHEDULER_NAMES), value=DEFAULT_SCHEDULER, label="Scheduler")
                    seed = gr.Number(0, precision=0, label="Seed")
                    samples = gr.Slider(1, settings.max_samples, value=1, step=1, label="Samples")
                    detail = gr.Slider(0, 1, value=DEFAULT_DETAIL, step=0.25,
                                       label="Input detail kept on faces larger than the model (1: all of it above "
                                             "the model's resolution; 0: none, softer than the input)")
                guard_number_inputs(fidelity=fidelity, steps=steps, strength=strength, stride=stride, seed=seed,
                                    samples=samples, detail=detail)
                button = gr.Button("Restore", variant="primary", elem_id="restore-button")
                gr.Markdown(service.limits_text())
            with gr.Column():
                slider = gr.ImageSlider(label="Before / after", type="pil", elem_id="result-slider")
                status = gr.Markdown(elem_id="status")
                faces = gr.Gallery(label="Faces: input and restored", columns=4, height=220)
                uncertainty = gr.Image(label="Uncertainty (patch disagreement)", height=220)
                download = gr.File(label="Download PNG")
        examples = sorted(str(p) for p in EXAMPLES.glob("*.png"))
        if examples:
            gr.Examples(examples, inputs=[image], label="Examples (degraded: the astronaut; Grace Hopper, older adult)")
        with gr.Accordion("Video", open=False):
            gr.Markdown("Restore every face of a clip, steady from frame to frame, with its sound "
                        f"(up to {settings.max_video_seconds:g} s; MP4, MOV, MKV, WebM, AVI).")
            with gr.Row():
                with gr.Column():
                    clip = gr.Video(label="Clip", sources=["upload"], include_audio=True, height=300)
                    clip_seed = gr.Number(0, precision=0, label="Seed")
                    clip_button = gr.Button("Restore video", variant="primary", elem_id="restore-video-button")
                with gr.Column():
                    clip_result = gr.Video(label="Restored", height=300, interactive=False)
                    clip_status = gr.Markdown(elem_id="video-status")
        clip_button.click(lambda: "", outputs=[clip_status], queue=False, api_name=False).then(
            restore_video_function(service), inputs=[clip, clip_seed], outputs=[clip_result, clip_status],
            api_name="restore_video",
        )
        # A new request first clears the last one's status and file, so an error never sits
        # under a stale "Restored ..." line.
        outputs = [slider, faces, uncertainty, download, status]
        button.click(lambda: ("", None), outputs=[status, download], queue=False, api_name=False).then(
            restore_function(service, len(outputs)),
            inputs=[image, mode, steps, scheduler, strength, stride, seed, samples, detail, fidelity, upscale,
                    background],
            outputs=outputs,
            api_name="restore",
        )
    return demo.queue(max_size=settings.queue_size, default_concurrency_limit=settings.accepted)


if __name__ == "__main__":
    service = RestorationService(ServingSettings.from_environment())
    build_demo(service).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        max_file_size=f"{service.settings.max_upload_mb}mb",
    )
