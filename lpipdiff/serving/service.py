"""Serving restorations to many visitors on a small machine: the demo's work, without its UI.

:class:`RestorationService` turns a request (an uploaded file and the form's values) into a
restoration under limits: a request's work is counted in UNet patch evaluations and refused (or
cut to the largest faces) beyond ``max_work``; light requests run in a lane of their own so they
never wait behind heavy ones; a watchdog interrupts the pipeline (diffusers' ``interrupt``) when a
request runs too long or its client went away. ``app.py`` only builds the page and wires it here.
"""

from __future__ import annotations

import contextvars
import logging
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as StillRunning
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..checks import check_number, check_whole_number
from ..config.defaults import DEFAULT_DETAIL, MAX_DETAIL, default_stride
from ..faces.restorer import FaceRestorer, NoFaceError
from ..io.images import MAX_PIXELS, InvalidImageError, load_image_file, save_image
from ..io.video import InvalidVideoError
from ..model.loading import ModelLoadError, load_pipeline
from ..model.patches import PatchGrid
from ..model.sampling import SamplingOptions, restore_faces
from .settings import ServingSettings

MODES = ("Auto", "Whole photo", "Aligned face")
LANES = ("light", "heavy")
logger = logging.getLogger(__name__)


class RequestStopped(Exception):
    """The request ran out of time, or its client went away."""


class DetectorUnavailable(RuntimeError):
    """The face detector cannot be loaded on this server (no weights offline, damaged weights)."""


NO_DETECTOR = ("no face detector is available on this server, so faces cannot be found in a photo; upload an "
               "aligned face (a square crop of one face) and choose 'Aligned face'")
# What a visitor is told in one line; anything else is a bug and keeps its traceback in the log.
USER_ERRORS = (InvalidImageError, InvalidVideoError, NoFaceError, ModelLoadError, ValueError, RequestStopped,
               DetectorUnavailable)


class Tally:
    """How many restorations are running, and how many were stopped (for logs, tests, benchmarks)."""

    def __init__(self):
        self.running = self.stopped = 0
        self._lock = threading.Lock()

    def add(self, name: str, amount: int) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)


class Watchdog:
    """Decides when a restoration must stop: past its deadline, or once nobody is listening (the
    request's waiting loop calls :meth:`beat` while its client is still there)."""

    def __init__(self, seconds: float, abandoned_after: float):
        self.started = self.last_beat = time.monotonic()
        self.seconds, self.abandoned_after = seconds, abandoned_after
        self.reason: str | None = None

    def start(self) -> None:
        """The work begins (after waiting for its lane): the time limit counts from here."""
        self.started = time.monotonic()

    def beat(self) -> None:
        self.last_beat = time.monotonic()

    def expired(self) -> bool:
        """Whether the work must stop now; the first time it must, :attr:`reason` says why."""
        now = time.monotonic()
        if self.reason is None and now - self.last_beat > self.abandoned_after:
            self.reason = "the client went away"
        elif self.reason is None and now - self.started > self.seconds:
            self.reason = f"stopped after {self.seconds:.0f} s: the server is busy; try fewer steps or samples"
        return self.reason is not None


@dataclass(frozen=True)
class RestoreRequest:
    """One visitor's request, validated."""

    image_path: str
    mode: str
    sampling: SamplingOptions
    samples: int = 1
    detail: float = DEFAULT_DETAIL
    upscale: int = 1
    background: bool = False  # whole photos: upscale the background with the settings' upscaler


@dataclass(frozen=True)
class VideoRequest:
    """One visitor's clip, validated: every face of every frame, restored as ``sampling`` says."""

    video_path: str
    sampling: SamplingOptions
    samples: int = 1  # one restoration of the clip (the work of a frame is counted as a photo's)


@dataclass
class ClipRestoration:
    """The restored clip (an MP4 file to show and download) and a status line."""

    video: str
    status: str


@dataclass
class Restoration:
    """What the page shows: the input at the output's size and the restored photo (float RGB),
    every face before and after each sample, the first sample's uncertainty as a heat map, the PNG
    to download, and a status line."""

    before: np.ndarray
    restored: np.ndarray
    gallery: list[tuple[np.ndarray, str]] = field(default_factory=list)
    uncertainty: np.ndarray | None = None
    download: str = ""
    status: str = ""


class Job:
    """A submitted request: poll :meth:`finished` (which tells the watchdog the client is still
    listening), then take :meth:`result`."""

    def __init__(self, future: Future, watchdog: Watchdog):
        self.future, self.watchdog = future, watchdog

    def finished(self, timeout: float) -> bool:
        try:
            self.future.result(timeout=timeout)
        except StillRunning:
            self.watchdog.beat()
            return False
        except Exception:  # noqa: BLE001 - the error is raised again by result()
            pass
        return True

    def result(self) -> Restoration:
        return self.future.result()


class RestorationService:
    """Restores uploads under :class:`~lpipdiff.serving.settings.ServingSettings`' limits.

    Args:
        settings: the model and the limits.
        pipeline: a loaded pipeline to serve (tests pass a tiny one); ``None``: ``settings.model``
            is loaded on first use.
    """

    def __init__(self, settings: ServingSettings, pipeline=None):
        self.settings = settings
        self.tally = Tally()
        self.lanes = {lane: ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"restore-{lane}") for lane in LANES}
        self._pipeline, self._face_restorer = pipeline, None
        self._upscaler, self.upscaler_problem = None, None
        self.detector_problem: str | None = None
        self._loading = threading.Lock()

    @property
    def pipeline(self):
        with self._loading:
            if self._pipeline is None:
                self._pipeline = load_pipeline(self.settings.model, device=self.settings.device,
                                               backend=self.settings.backend)
            return self._pipeline

    @property
    def face_restorer(self) -> FaceRestorer:
        """The whole-photo restorer, loaded on first use. Without its detector (offline without the
        weights, or damaged ones) a :class:`DetectorUnavailable` says so to the visitor, and
        :attr:`detector_problem` keeps why for the log; the load is not tried again."""
        pipeline = self.pipeline
        with self._loading:
            if self._face_restorer is None and self.detector_problem is None:
                try:
                    self._face_restorer = FaceRestorer(pipeline, weights_dir=self.settings.face_weights)
                except OSError as error:
                    self.detector_problem = str(error)
                    logger.error("the face detector cannot be loaded: %s", error)
            if self._face_restorer is None:
                raise DetectorUnavailable(NO_DETECTOR)
            return self._face_restorer

    def background_upscaler(self):
        """The settings' background upscaler, loaded on first use; ``None`` when there is none or it
        cannot be loaded (then :attr:`upscaler_problem` says why, and backgrounds are resized)."""
        if not self.settings.bg_upsampler:
            return None
        pipeline = self.pipeline  # loaded first: it takes the same lock
        with self._loading:
            if self._upscaler is None and self.upscaler_problem is None:
                from ..faces.upscaler import UpscalerError, load_upscaler

                try:
                    self._upscaler = load_upscaler(self.settings.bg_upsampler, device=pipeline.device,
                                                   tile=self.settings.bg_tile)
                except UpscalerError as error:
                    self.upscaler_problem = str(error)
            return self._upscaler

    def paste_work(self, request: RestoreRequest, height: int, width: int) -> int:
        """Pasting faces back into one sample's output photo (``upscale`` times the input's side), in
        ``max_work``'s units: whole-photo work at the output's size, once and again for every face."""
        if request.mode == "Aligned face":
            return 0
        megapixels = height * width * request.upscale**2 / 1e6
        return int(np.ceil(megapixels * self.settings.paste_work_per_megapixel))

    def background_work(self, upscaler, height: int, width: int) -> int:
        """The upscaler's work on one photo, in ``max_work``'s units (its tiles' input megapixels)."""
        megapixels = upscaler.tiles(height, width) * min(upscaler.tile, height) * min(upscaler.tile, width) / 1e6
        return int(np.ceil(megapixels * self.settings.bg_work_per_megapixel))

    @property
    def patch_size(self) -> int:
        return self.pipeline.unet.config.patch_size

    def limits_text(self) -> str:
        s = self.settings
        return (
            f"Limits: images up to {MAX_PIXELS // 1_000_000} megapixels and {s.max_upload_mb} MB; up to "
            f"{s.max_steps} steps and {s.max_samples} samples, and {s.max_work} patch restorations a request "
            "(faces x samples x steps x patches per step; the largest faces are kept; pasting faces back into a "
            f"whole photo counts {s.paste_work_per_megapixel} an output megapixel, background upscaling "
            f"{s.bg_work_per_megapixel} a megapixel). Grayscale, RGBA (alpha is "
            f"dropped) and 16-bit images are accepted. Videos up to {s.max_video_seconds:g} s, each frame within the "
            "same work limit, the whole clip within the time limit."
        )

    def request(self, image_path, mode: str = "Auto", samples=1, detail=DEFAULT_DETAIL, upscale=1, background=False,
                **sampling) -> RestoreRequest:
        """A request from the form's (or the API's) values, validated: a ValueError says what is wrong.
        ``sampling`` are :class:`SamplingOptions`' fields."""
        if not image_path:
            raise InvalidImageError("upload an image first")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        sampling = {name: whole_if_integral(value) for name, value in sampling.items()}
        options = SamplingOptions(**sampling)
        check_whole_number("steps", options.steps, 1, self.settings.max_steps)  # this server's limit
        samples = check_whole_number("samples", whole_if_integral(samples), 1, self.settings.max_samples)
        detail = check_number("detail", detail, 0, MAX_DETAIL)
        upscale = check_whole_number("upscale", whole_if_integral(upscale), 1, self.settings.max_upscale)
        if not isinstance(background, bool):
            raise ValueError(f"background must be true or false, got {background!r}")
        return RestoreRequest(str(image_path), mode, options, samples, detail, upscale, background)

    def video_request(self, video_path, **sampling) -> VideoRequest:
        """A clip's request from the form's (or the API's) values, validated like a photo's."""
        if not video_path:
            raise InvalidVideoError("upload a video first")
        sampling = {name: whole_if_integral(value) for name, value in sampling.items()}
        options = SamplingOptions(**sampling)
        check_whole_number("steps", options.steps, 1, self.settings.max_steps)
        return VideoRequest(str(video_path), options)

    def work_per_face(self, request: RestoreRequest | VideoRequest) -> int:
        """UNet patch evaluations to restore one face: samples x steps x patches a step."""
        config = self.pipeline.unet.config
        stride = request.sampling.stride or default_stride(config.patch_size)
        patches = PatchGrid(config.face_size, config.face_size, config.patch_size, stride).num_patches
        return request.samples * request.sampling.unet_steps() * patches

    def affordable_faces(self, request: RestoreRequest, background_work: int = 0, paste_work: int = 0) -> int:
        """How many faces the request may restore within ``max_work`` less the photo's own work (the
        background upscaler's, and ``paste_work`` for the page's images and download, for every sample
        and again for each face of it); a clear error when not one."""
        per_face = self.work_per_face(request) + request.samples * paste_work
        fixed = background_work + (request.samples + 1) * paste_work
        if fixed and per_face + fixed > self.settings.max_work:
            parts = [f"upscaling its background: {background_work}"] * bool(background_work)
            parts += [f"pasting faces back at {request.upscale}x: {paste_work} a sample, again a face and once "
                      "for the result"] * bool(paste_work)
            advice = ["turn background upscaling off"] * bool(background_work) + [
                "use a smaller upscale or photo, or fewer samples or steps"]
            raise ValueError(
                f"this photo needs {fixed} units of work besides its faces ({'; '.join(parts)}) and {per_face} for "
                f"each face, more than the {self.settings.max_work} allowed: {', or '.join(advice)}"
            )
        if per_face > self.settings.max_work:
            raise ValueError(
                f"this request needs {per_face} patch restorations a face ({request.samples} sample(s) x "
                f"{request.sampling.unet_steps()} steps x patches), more than the {self.settings.max_work} allowed: "
                "use fewer steps or samples, a higher fidelity or a larger patch stride"
            )
        return (self.settings.max_work - fixed) // per_face

    def submit(self, request: RestoreRequest, progress: Callable | None = None) -> Job:
        """Queue the request in its lane; ``progress((done, total), desc=...)`` is called as it goes."""
        try:
            # A clip is many requests' work; upscaling makes whole-photo work at the output's size,
            # whatever the faces' work.
            light = (isinstance(request, RestoreRequest)
                     and not (request.background or (request.upscale > 1 and request.mode != "Aligned face"))
                     and self.work_per_face(request) <= self.settings.light_work)
            lane = "light" if light else "heavy"
        except ValueError:
            lane = "heavy"  # a stride the model refuses: the restoration explains it, in either lane
        watchdog = Watchdog(self.settings.max_seconds, self.settings.abandoned_after)
        # copy_context: Gradio's progress tracker finds its request through context variables.
        context = contextvars.copy_context()
        future = self.lanes[lane].submit(context.run, self._counted, request, watchdog, progress)
        return Job(future, watchdog)

    def _counted(self, request: RestoreRequest, watchdog: Watchdog, progress) -> Restoration:
        self.tally.add("running", 1)
        try:
            work = self.restore_clip if isinstance(request, VideoRequest) else self.restore
            return work(request, watchdog, progress)
        finally:
            self.tally.add("running", -1)

    def restore(self, request: RestoreRequest, watchdog: Watchdog, progress=None) -> Restoration:
        """The work of one request (in a lane's thread)."""
        watchdog.start()
        started = time.perf_counter()
        image = load_image_file(request.image_path)
        whole_photo, note, outputs = request.mode != "Aligned face", "", []
        if whole_photo:
            try:
                restorer = self.face_restorer
            except DetectorUnavailable:
                if request.mode == "Whole photo" or not self.looks_aligned(image):
                    raise
                whole_photo, note = False, "No face detector is available here: restored the image as an aligned face. "
        upscaler = self.background_upscaler() if request.background and whole_photo else None
        paste_work = self.paste_work(request, *image.shape[:2]) if whole_photo else 0
        background_work = 0
        if upscaler is not None:  # its tiles, and blending them into a photo at the output's size
            background_work = self.background_work(upscaler, *image.shape[:2]) + paste_work
        max_faces = self.affordable_faces(request, background_work, paste_work)
        done = [0]

        def on_step(pipe, step, timestep, callback_kwargs):
            if watchdog.expired():
                pipe._interrupt = True  # diffusers' way to stop a pipeline from its step callback
            elif progress is not None:
                done[0] += 1
                progress((done[0], request.samples * pipe.num_timesteps), desc="denoising")
            return {}

        background = False
        if request.background and whole_photo:
            if upscaler is None:
                problem = self.upscaler_problem or "no upscaler is configured (LPIPDIFF_BG_UPSAMPLER)"
                note = f"Background upscaling is unavailable ({problem}): the background was resized plainly. "
            else:
                if progress is not None:
                    progress((0, 1), desc="upscaling the background")
                background = upscaler(image, request.upscale)
        for sample in range(request.samples):
            options = request.sampling
            sampling = SamplingOptions(**{**options.as_dict(), "seed": options.seed + sample})
            if whole_photo:
                try:
                    result = restorer.restore(image, sampling, detail=request.detail, max_faces=max_faces,
                                              callback_on_step_end=on_step, background=background,
                                              upscale=request.upscale)
                    outputs.append((result.image, result.faces, result.restored_faces, result.uncertainty))
                    if result.faces_found > len(result.faces):
                        note += (f"Restored the {len(result.faces)} largest of {result.faces_found} faces "
                                "(the limit of one request). ")
                except NoFaceError:
                    if request.mode == "Whole photo" or not self.looks_aligned(image):
                        raise
                    whole_photo, note = False, "No face detected: restored the image as an aligned face. "
            if not whole_photo:
                result = restore_faces(self.pipeline, image, sampling, callback_on_step_end=on_step)
                outputs.append((result.images[0], [image], [result.images[0]], [result.uncertainty[0]]))
            if watchdog.expired():
                self.tally.add("stopped", 1)
                raise RequestStopped(watchdog.reason)
        return self.present(image, request, outputs, note, time.perf_counter() - started)

    def restore_clip(self, request: VideoRequest, watchdog: Watchdog, progress=None) -> ClipRestoration:
        """The work of one clip (in the heavy lane's thread): refused beyond ``max_video_seconds``,
        each frame's faces held to ``max_work``, stopped by the watchdog like a photo."""
        from ..faces.video import restore_video

        watchdog.start()
        started = time.perf_counter()
        max_faces = self.affordable_faces(request)
        restorer = self.face_restorer

        def on_step(pipe, step, timestep, callback_kwargs):
            if watchdog.expired():
                pipe._interrupt = True
            return {}

        def on_frames(done: int, total: int) -> None:
            if watchdog.expired():
                raise RequestStopped(watchdog.reason)
            if progress is not None:
                progress((done, total or done), desc="frames")

        output = Path(tempfile.mkdtemp(prefix="lpipdiff-")) / f"{Path(request.video_path).stem}_restored.mp4"
        try:
            result = restore_video(request.video_path, output, restorer, request.sampling,
                                   max_seconds=self.settings.max_video_seconds, max_faces=max_faces,
                                   on_frames=on_frames, callback_on_step_end=on_step)
        except RequestStopped:
            self.tally.add("stopped", 1)
            raise
        report = result.report
        found = (f"Restored {result.faces} face(s) in {result.frames_with_faces} of {report.frames} frames"
                 if result.faces else f"No face in any of the {report.frames} frames: the clip was copied through")
        sound = {"copied": "sound copied", "encoded to AAC": "sound encoded to AAC", "none": "no sound"}[report.audio]
        seconds = time.perf_counter() - started
        status = (f"{found}, {report.size[0]}x{report.size[1]}, {sound}, in {seconds:.1f} s "
                  f"({report.frames / max(seconds, 1e-9):.1f} frames a second).")
        return ClipRestoration(str(output), status)

    def looks_aligned(self, image: np.ndarray) -> bool:
        height, width = image.shape[:2]
        longest, shortest = max(height, width), min(height, width)
        return longest <= self.settings.aligned_max_side and longest / shortest <= self.settings.aligned_max_aspect

    @staticmethod
    def present(image, request: RestoreRequest, outputs, note: str, seconds: float) -> Restoration:
        restored, faces_before, _, uncertainty = outputs[0]
        gallery = [(face, f"face {i + 1}: input") for i, face in enumerate(faces_before)]
        for s, (_, _, after, _) in enumerate(outputs):
            gallery += [(face, f"face {i + 1}: sample {s + 1}") for i, face in enumerate(after)]
        download = Path(tempfile.mkdtemp(prefix="lpipdiff-")) / f"{Path(request.image_path).stem}_restored.png"
        save_image(restored, download)
        before = cv2.resize(image, (restored.shape[1], restored.shape[0]), interpolation=cv2.INTER_LANCZOS4)
        status = (
            f"{note}Restored {len(faces_before)} face(s), {request.samples} sample(s), in {seconds:.1f} s. "
            f"Uncertainty maximum {float(uncertainty[0].max()):.3f} (0..1 image units)."
        )
        return Restoration(np.clip(before, 0, 1), restored, gallery, heat_map(uncertainty[0]), str(download), status)


def whole_if_integral(value):
    """A form's number as an int when it is one (sliders and JSON clients send 10.0 for 10)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def heat_map(uncertainty: np.ndarray) -> np.ndarray:
    """Uncertainty as an RGB heat map, scaled to its own maximum (the status line gives the maximum)."""
    scaled = np.clip(uncertainty / max(float(uncertainty.max()), 1e-6), 0, 1)
    heat = cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)
    heat = cv2.resize(heat, (256, 256), interpolation=cv2.INTER_NEAREST)  # tiny maps are unreadable
    return heat[..., ::-1]
