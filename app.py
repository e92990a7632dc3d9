"""LPIP-Diff demo: restore a degraded face photo in the browser (locally or as a Space).

    python app.py                                   # http://127.0.0.1:7860, bundled model
    LPIPDIFF_MODEL=org/lpipdiff-... python app.py   # another model folder or Hub id

The same function is served as the API endpoint ``restore`` (see README for gradio_client).
"""

from __future__ import annotations

import contextvars
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as StillRunning
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
from lpipdiff.patches import PatchGrid
from lpipdiff.pipeline_lpipdiff import LPIPDiffPipeline
from lpipdiff.sampling import (
    DEFAULT_FIDELITY,
    DEFAULT_SCHEDULER,
    DEFAULT_STEPS,
    DEFAULT_STRENGTH,
    SCHEDULERS,
    check_seed,
)

EXAMPLES = Path(__file__).resolve().parent / "examples"
# A development checkout has the face detector's weights beside it (offline); elsewhere facexlib
# downloads them on first use.
DEV_DETECTOR_WEIGHTS = Path(__file__).resolve().parent.parent / "shared" / "weights" / "facexlib"
if DEV_DETECTOR_WEIGHTS.is_dir():
    os.environ.setdefault("LPIPDIFF_FACEXLIB_WEIGHTS", str(DEV_DETECTOR_WEIGHTS))
MODES = ["Auto", "Whole photo", "Aligned face"]
MAX_STEPS, MAX_SAMPLES = 50, 4
# The work of one request, in UNet patch evaluations (faces x samples x steps x patches a step).
# The bundled model does about 45 a second on a free Space's 2 CPU cores, so the heaviest
# request allowed takes about half a minute there (docs/BENCHMARKS.md).
MAX_WORK = int(os.environ.get("LPIPDIFF_MAX_WORK", 1200))
# And its wall time: a request still running after this long is stopped (a busy machine).
MAX_SECONDS = float(os.environ.get("LPIPDIFF_MAX_SECONDS", 90))
# A request whose page or client stopped listening this long ago is stopped at its next step.
ABANDONED_AFTER = 5.0
# Two lanes, one restoration each: light requests (at most this much work a face: a step or two
# of one sample) never wait behind heavy ones. Gradio hands over up to ACCEPTED requests at once
# (the rest wait in its queue, and beyond QUEUE_SIZE are refused with "Queue is full").
LIGHT_WORK = 100
ACCEPTED, QUEUE_SIZE = 8, 8
# Auto mode treats an image without a detected face as an aligned face only when it looks like one.
ALIGNED_MAX_SIDE, ALIGNED_MAX_ASPECT = 512, 1.5
LIMITS = (
    f"Limits: images up to {MAX_PIXELS // 1_000_000} megapixels and 20 MB; up to {MAX_STEPS} steps and "
    f"{MAX_SAMPLES} samples, and {MAX_WORK} patch restorations a request (faces x samples x steps x patches "
    f"per step; the largest faces are kept). Grayscale, RGBA (alpha is dropped) and 16-bit images are accepted."
)
LANES = {lane: ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"restore-{lane}") for lane in ("light", "heavy")}


class Tally:
    """How many restorations are running, and how many were stopped (for logs, tests, benchmarks)."""

    def __init__(self):
        self.running = self.stopped = 0
        self._lock = threading.Lock()

    def add(self, name: str, amount: int) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)


tally = Tally()


class RequestStopped(Exception):
    """The request ran out of time, or its client went away."""


class Watchdog:
    """Stops a restoration (from the pipeline's step callback) past its deadline or once nobody
    is listening: the request's generator calls :meth:`beat` while its client is still there."""

    def __init__(self, seconds: float):
        self.started = self.last_beat = time.monotonic()
        self.seconds = seconds

    def start(self) -> None:
        """The work begins (after waiting for its lane): the time limit counts from here."""
        self.started = time.monotonic()

    def beat(self) -> None:
        self.last_beat = time.monotonic()

    def check(self) -> None:
        now = time.monotonic()
        if now - self.last_beat > ABANDONED_AFTER:
            tally.add("stopped", 1)
            raise RequestStopped("the client went away")
        if now - self.started > self.seconds:
            tally.add("stopped", 1)
            raise RequestStopped(f"stopped after {self.seconds:.0f} s: the server is busy; try fewer steps or samples")


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


def work(pipeline, steps: int, strength: float, stride: int, fidelity) -> tuple[int, int]:
    """(UNet steps, patches a step) of one sample of one face."""
    config = pipeline.unet.config
    patches = PatchGrid(config.face_size, config.face_size, config.patch_size, stride).num_patches
    return pipeline.count_steps(steps, strength, fidelity), patches


def affordable_faces(pipeline, samples: int, steps: int, strength: float, stride: int, fidelity) -> int:
    """How many faces one request may restore within ``MAX_WORK``; a clear error when not one."""
    unet_steps, patches = work(pipeline, steps, strength, stride, fidelity)
    per_face = samples * unet_steps * patches
    if per_face > MAX_WORK:
        raise ValueError(
            f"this request needs {per_face} patch restorations a face ({samples} sample(s) x {unet_steps} steps x "
            f"{patches} patches), more than the {MAX_WORK} allowed: use fewer steps or samples, a higher fidelity "
            "or a larger patch stride"
        )
    return MAX_WORK // per_face


def looks_aligned(image: np.ndarray) -> bool:
    height, width = image.shape[:2]
    return max(height, width) <= ALIGNED_MAX_SIDE and max(height, width) / min(height, width) <= ALIGNED_MAX_ASPECT


def restore_request(
    image_path, mode, steps, scheduler, strength, stride, seed, samples, detail, fidelity, watchdog, progress
):
    """The work of one request (in a worker thread). Returns the five outputs."""
    watchdog.start()
    started = time.perf_counter()
    try:
        if not image_path:
            raise InvalidImageError("upload an image first")
        try:
            image = load_image_file(image_path)
        except InvalidImageError as error:  # name the upload, not the server's temporary path
            raise InvalidImageError(str(error).replace(str(image_path), Path(image_path).name)) from None
        steps, samples, seed, stride = int(steps), int(samples), check_seed(seed), int(stride)
        if not 1 <= steps <= MAX_STEPS or not 1 <= samples <= MAX_SAMPLES:
            raise ValueError(f"steps must be 1..{MAX_STEPS} and samples 1..{MAX_SAMPLES}")
        if scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {sorted(SCHEDULERS)}")
        pipeline = pipeline_with(scheduler)
        # A strength below 1 is the experts' start from the noised input, where fidelity does not apply.
        fidelity = None if float(strength) < 1 else float(fidelity)
        max_faces = affordable_faces(pipeline, samples, steps, float(strength), stride, fidelity)
        sample_index = [0]

        def advance(pipe, step, timestep, callback_kwargs):
            watchdog.check()
            total = samples * pipe.num_timesteps
            progress((sample_index[0] * pipe.num_timesteps + step + 1, total), desc="denoising")
            return {}

        sampling = dict(fidelity=fidelity, num_inference_steps=steps, strength=float(strength), patch_stride=stride,
                        callback_on_step_end=advance)
        whole_photo, note = mode != "Aligned face", ""
        outputs = []
        for sample in range(samples):
            sample_index[0] = sample
            generator = torch.Generator().manual_seed(seed + sample)
            if whole_photo:
                try:
                    result = face_restorer().restore(image, generator=generator, pipeline=pipeline,
                                                     detail=float(detail), max_faces=max_faces, **sampling)
                    outputs.append((result.image, result.faces, result.restored_faces, result.uncertainty))
                    if result.faces_found > len(result.faces):
                        note = (f"Restored the {len(result.faces)} largest of {result.faces_found} faces "
                                "(the limit of one request). ")
                    continue
                except NoFaceError:
                    if mode == "Whole photo" or not looks_aligned(image):
                        raise
                    whole_photo, note = False, "No face detected: restored the image as an aligned face. "
            result = pipeline(image, generator=generator, output_type="np", **sampling)
            outputs.append((result.images[0], [image], [result.images[0]], [result.uncertainty[0]]))
    except (InvalidImageError, NoFaceError, ModelLoadError, ValueError, RequestStopped) as error:
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


def counted(function, *args):
    tally.add("running", 1)
    try:
        return function(*args)
    finally:
        tally.add("running", -1)


def restore(image_path, mode="Auto", steps=DEFAULT_STEPS, scheduler=DEFAULT_SCHEDULER, strength=DEFAULT_STRENGTH,
            stride=32, seed=0, samples=1, detail=DEFAULT_DETAIL, fidelity=DEFAULT_FIDELITY, progress=gr.Progress()):
    """Restore the faces of one image. Yields (before/after, faces, uncertainty, PNG file, status).

    ``fidelity`` comes last so that API calls written before it existed keep their meaning.

    The work runs in a worker thread; this generator wakes Gradio twice a second, so that the
    request stays stoppable: when its client goes away Gradio stops pulling from it, the
    watchdog stops hearing from it, and the work stops at its next denoising step.
    """
    watchdog = Watchdog(MAX_SECONDS)
    arguments = (image_path, mode, steps, scheduler, strength, stride, seed, samples, detail, fidelity, watchdog,
                 progress)
    # copy_context: gr.Progress finds its request through context variables.
    lane = "heavy"
    try:
        unet_steps, patches = work(base_pipeline(), int(steps), float(strength), int(stride),
                                   None if float(strength) < 1 else float(fidelity))
        if int(samples) * unet_steps * patches <= LIGHT_WORK:
            lane = "light"
    except (TypeError, ValueError, OverflowError):
        pass  # a bad argument: restore_request explains it, in either lane
    job = LANES[lane].submit(contextvars.copy_context().run, counted, restore_request, *arguments)
    while True:
        try:
            outputs = job.result(timeout=0.5)
            break
        except StillRunning:
            watchdog.beat()
            yield tuple(gr.skip() for _ in range(5))
    yield outputs


class ImageUpload(gr.Image):
    """gr.Image that hands the uploaded file over untouched (16-bit stays 16-bit) and turns an
    unreadable upload into a message instead of a server error."""

    def get_block_name(self) -> str:
        return "image"  # the browser side is gr.Image's own

    def preprocess(self, payload):
        try:
            return super().preprocess(payload)
        except PIL.Image.DecompressionBombError:
            name = getattr(payload, "orig_name", "the upload")
            message = f"{name}: too large (limit {MAX_PIXELS // 1_000_000} megapixels); downscale it first"
            raise gr.Error(message, print_exception=False) from None
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
            gr.Examples(examples, inputs=[image], label="Examples (degraded: the astronaut; Grace Hopper, older adult)")
        # A new request first clears the last one's status and file, so an error never sits
        # under a stale "Restored ..." line.
        button.click(lambda: ("", None), outputs=[status, download], queue=False, api_name=False).then(
            restore,
            inputs=[image, mode, steps, scheduler, strength, stride, seed, samples, detail, fidelity],
            outputs=[slider, faces, uncertainty, download, status],
            api_name="restore",
        )
    return demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=ACCEPTED)


if __name__ == "__main__":
    build_demo().launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        max_file_size="20mb",
    )
