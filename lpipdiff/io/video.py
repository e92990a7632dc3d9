"""Video files in and out, frame by frame, through PyAV (FFmpeg's libraries ship in its wheels: no
system ffmpeg is needed).

:func:`rewrite_video` streams a clip through a function of its frames and writes an H.264 MP4:
frames are decoded in order, handed over a few at a time, encoded as they come back, so memory
holds a few frames whatever the clip's length. The output keeps every frame's timestamp (so the
frame count, a variable frame rate and the duration are the input's, and the sound stays in sync)
and the first audio stream, copied packet for packet when MP4 can hold its codec, else encoded to
AAC. Frames are handed over upright: a phone's display matrix (a portrait clip stored sideways)
is applied, and the output needs none. The output is written under a hidden temporary name and
moved into place at the end (never replacing a file without ``overwrite``), so an interrupted run
leaves nothing that looks complete.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from .images import MIN_SIDE
from .safe_files import OutputExistsError, kept_message, partial_name, place_file, taken

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
# Codecs the MP4 muxer takes as they are; any other audio (PCM from a camera's MOV or AVI, Vorbis from
# WebM) is encoded to AAC.
MP4_AUDIO = {"aac", "mp3", "ac3", "eac3", "opus", "alac", "flac"}
VIDEO_CODEC = "libx264"
# Visually lossless for H.264, and the fastest preset that still compresses well: encoding stays a
# small part of the work next to restoring faces.
VIDEO_OPTIONS = {"crf": "18", "preset": "veryfast"}


class InvalidVideoError(ValueError):
    """The input cannot be used as a video; the message says why."""


@dataclass
class Frame:
    """One decoded frame: ``image`` is BGR uint8 (OpenCV's order) and upright; ``pts`` counts the
    stream's time base; ``time`` is in seconds from the clip's start."""

    image: np.ndarray
    pts: int
    time: float


@dataclass
class VideoReport:
    """What :func:`rewrite_video` wrote."""

    output: Path
    frames: int
    seconds: float
    rate: Fraction
    size: tuple[int, int]  # output (width, height)
    audio: str  # "copied", "encoded to AAC" or "none"
    rotation: int  # degrees the input was turned to stand upright
    unreadable: int  # frames that could not be decoded, replaced by the frame before


def _av():
    import av

    return av


class VideoReader:
    """A clip's frames, upright, in order; its first audio stream's packets go to ``on_audio``.

    Raises :class:`InvalidVideoError` for a missing, empty or unreadable file, a file with no video
    stream, or (with ``max_seconds``) a clip longer than that.
    """

    def __init__(self, path: str | os.PathLike, max_seconds: float | None = None):
        av = _av()
        self.path = path = Path(path)
        if path.is_dir():
            raise InvalidVideoError(f"{path}: is a folder, not a video file")
        if not path.is_file():
            raise InvalidVideoError(f"{path}: no such file")
        if path.stat().st_size == 0:
            raise InvalidVideoError(f"{path}: the file is empty")
        try:
            self.container = av.open(str(path), "r")
        except (av.error.FFmpegError, UnicodeDecodeError) as error:
            raise InvalidVideoError(f"{path}: not a readable video ({_reason(error)})") from None
        if not self.container.streams.video:
            self.container.close()
            raise InvalidVideoError(f"{path}: has no video stream")
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        audio = self.container.streams.audio
        self.audio = audio[0] if audio else None
        self.time_base = self.stream.time_base or Fraction(1, 90000)
        self.rate = self.stream.average_rate or self.stream.guessed_rate or Fraction(25)
        self.seconds = self._duration()
        self.unreadable = self.rotation = 0
        self.max_seconds = max_seconds
        if max_seconds is not None and self.seconds > max_seconds:
            self.close()
            raise too_long(path, self.seconds, max_seconds)

    def _duration(self) -> float:
        """The clip's length in seconds as its headers tell it (0 when they do not)."""
        if self.stream.duration is not None:
            return float(self.stream.duration * self.time_base)
        if self.container.duration is not None:
            return self.container.duration / 1_000_000
        return self.stream.frames / float(self.rate) if self.stream.frames else 0.0

    @property
    def frame_count(self) -> int:
        """The frame count the headers give, or an estimate from the duration (0: unknown)."""
        return self.stream.frames or round(self.seconds * float(self.rate))

    def frames(self, on_audio: Callable | None = None) -> Iterator[Frame]:
        """Decode every frame. A frame that cannot be decoded is replaced by the one before it (by
        the first readable one at the start), so the count and timing stay the clip's."""
        av = _av()
        streams = [self.stream] + ([self.audio] if self.audio is not None else [])
        start = self.stream.start_time or 0
        previous, missing, last_pts = None, [], None
        try:
            packets = self.container.demux(*streams)
            for packet in packets:
                if packet.stream is not self.stream:
                    if on_audio is not None and packet.size:
                        on_audio(packet)
                    continue
                try:
                    decoded = packet.decode()
                except av.error.FFmpegError:
                    if packet.size:
                        self.unreadable += 1
                        missing.append(packet.pts)
                    continue
                for frame in decoded:
                    pts = frame.pts if frame.pts is not None else _next_pts(last_pts, self.rate, self.time_base)
                    image = self._upright(frame)
                    for lost in missing:
                        copy = image if previous is None else previous.image
                        lost = _next_pts(last_pts, self.rate, self.time_base) if lost is None else lost
                        last_pts = lost
                        yield Frame(copy, lost, float((lost - start) * self.time_base))
                    missing = []
                    if last_pts is not None and pts <= last_pts:
                        pts = last_pts + 1  # an encoder takes only rising timestamps
                    last_pts = pts
                    previous = Frame(image, pts, float((pts - start) * self.time_base))
                    if self.max_seconds is not None and previous.time > self.max_seconds:
                        raise too_long(self.path, previous.time, self.max_seconds, at_least=True)
                    yield previous
        except av.error.FFmpegError as error:
            raise InvalidVideoError(f"{self.path}: the video cannot be read ({_reason(error)})") from None
        for lost in missing if previous is not None else []:
            lost = _next_pts(last_pts, self.rate, self.time_base) if lost is None else lost
            last_pts = lost
            yield Frame(previous.image, lost, float((lost - start) * self.time_base))
        if previous is None:
            raise InvalidVideoError(f"{self.path}: the video has no frames" if not self.unreadable
                                    else f"{self.path}: none of its {self.unreadable} frames can be decoded")

    def _upright(self, frame) -> np.ndarray:
        # Through rgb24: swscale's bgr24 conversions are off by up to 4 levels, and tinted.
        image = frame.to_ndarray(format="rgb24")[..., ::-1]
        # The display matrix's rotation is counter-clockwise, as np.rot90 turns.
        self.rotation = int(round((frame.rotation or 0) / 90)) % 4 * 90
        if min(image.shape[:2]) < MIN_SIDE:
            raise InvalidVideoError(f"{self.path}: {image.shape[1]}x{image.shape[0]} frames are too small "
                                    f"(at least {MIN_SIDE} pixels a side)")
        return np.ascontiguousarray(np.rot90(image, self.rotation // 90))

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def too_long(path: Path, seconds: float, limit: float, at_least: bool = False) -> InvalidVideoError:
    """``at_least``: found while decoding a clip whose headers did not tell its length."""
    return InvalidVideoError(f"{path}: the clip is longer than the limit of {limit:g} s "
                             f"({'at least ' if at_least else ''}{seconds:.3g} s); cut it or raise the limit "
                             "(--max-seconds)")


def _next_pts(last_pts: int | None, rate: Fraction, time_base: Fraction) -> int:
    """A frame without a timestamp comes one frame period after the one before."""
    return 0 if last_pts is None else last_pts + max(1, round(1 / (rate * time_base)))


def _reason(error: Exception) -> str:
    text = getattr(error, "strerror", None) or str(error)
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__


class VideoWriter:
    """An H.264 MP4 under a temporary name beside ``output``, placed at ``output`` by :meth:`finish`.

    The container opens at the first frame (its size is the first frame's); audio packets that
    come before it wait.
    """

    def __init__(self, output: str | os.PathLike, reader: VideoReader, overwrite: bool = False):
        self.output, self.reader, self.overwrite = Path(output), reader, overwrite
        if not overwrite and taken(self.output):
            raise OutputExistsError(kept_message(self.output))
        self.partial = partial_name(self.output)
        self.container = self.stream = self.audio = self.resampler = None
        self.waiting, self.frames, self.last_time = [], 0, 0.0
        self.audio_mode = "none" if reader.audio is None else (
            "copied" if reader.audio.codec_context.name in MP4_AUDIO else "encoded to AAC")

    def _open(self, width: int, height: int) -> None:
        av = _av()
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(self.partial), "w", format="mp4")
        stream = self.container.add_stream(VIDEO_CODEC, rate=self.reader.rate, options=dict(VIDEO_OPTIONS))
        stream.width, stream.height = width, height
        # 4:2:0 needs even sides; an odd-sized clip keeps its size in 4:4:4 instead of losing a pixel.
        stream.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        stream.time_base = self.reader.time_base
        stream.codec_context.time_base = self.reader.time_base
        self.stream = stream
        if self.reader.audio is not None:
            if self.audio_mode == "copied":
                self.audio = self.container.add_stream_from_template(self.reader.audio)
            else:
                rate = self.reader.audio.codec_context.sample_rate or 48000
                self.audio = self.container.add_stream("aac", rate=rate)
                self.resampler = av.AudioResampler(format="fltp", layout=self.audio.codec_context.layout,
                                                   rate=rate)
        for packet in self.waiting:
            self._mux_audio(packet)
        self.waiting = []

    def add_audio(self, packet) -> None:
        """One packet of the input's audio stream, in the order read."""
        if self.container is None:
            self.waiting.append(packet)
        else:
            self._mux_audio(packet)

    def _mux_audio(self, packet) -> None:
        if self.resampler is None:
            packet.stream = self.audio
            self.container.mux(packet)
            return
        for frame in packet.decode():
            for resampled in self.resampler.resample(frame):
                self.container.mux(self.audio.encode(resampled))

    def write(self, image: np.ndarray, frame: Frame) -> None:
        """The output ``image`` (BGR uint8) of the input ``frame``, at the input frame's time."""
        av = _av()
        if self.container is None:
            self._open(image.shape[1], image.shape[0])
        out = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[..., ::-1]), format="rgb24")
        out.pts, out.time_base = frame.pts, self.reader.time_base
        self.container.mux(self.stream.encode(out))
        self.frames, self.last_time = self.frames + 1, frame.time

    def finish(self) -> Path:
        """Flush the encoders, close the file and move it to ``output``."""
        self.container.mux(self.stream.encode(None))
        if self.resampler is not None:
            for resampled in self.resampler.resample(None):
                self.container.mux(self.audio.encode(resampled))
            self.container.mux(self.audio.encode(None))
        self.container.close()
        self.container = None
        return place_file(self.partial, self.output, self.overwrite)

    def abort(self) -> None:
        """Close and delete the unfinished file."""
        if self.container is not None:
            try:
                self.container.close()
            except Exception:  # closing a broken file may fail too; it is deleted either way
                pass
        self.partial.unlink(missing_ok=True)


def rewrite_video(
    source: str | os.PathLike,
    output: str | os.PathLike,
    process: Callable[[list[Frame]], list[np.ndarray]],
    batch: int = 8,
    overwrite: bool = False,
    max_seconds: float | None = None,
    on_frames: Callable[[int, int], None] | None = None,
) -> VideoReport:
    """Write ``output`` (H.264 MP4) with ``process`` applied to the frames of ``source``.

    Args:
        process: gets up to ``batch`` consecutive :class:`Frame` s, in order, and returns their output
            images (BGR uint8, all of one size).
        overwrite: replace a file at ``output``; without it an existing file is kept
            (:class:`~lpipdiff.io.safe_files.OutputExistsError`, before any work).
        max_seconds: refuse a longer clip (:class:`InvalidVideoError`).
        on_frames: ``on_frames(done, total)`` after every batch (``total``: the headers' count, 0
            when unknown).
    """
    with VideoReader(source, max_seconds) as reader:
        writer = VideoWriter(output, reader, overwrite)
        total, pending = reader.frame_count, []
        try:

            def flush():
                images = process(pending)
                if len(images) != len(pending):
                    raise RuntimeError(f"process returned {len(images)} images for {len(pending)} frames")
                for image, frame in zip(images, pending):
                    writer.write(image, frame)
                pending.clear()
                if on_frames is not None:
                    on_frames(writer.frames, max(total, writer.frames))

            for frame in reader.frames(on_audio=writer.add_audio):
                pending.append(frame)
                if len(pending) >= batch:
                    flush()
            if pending:
                flush()
            size = (writer.stream.width, writer.stream.height)
            placed = writer.finish()
        except BaseException as error:
            writer.abort()
            if isinstance(error, _av().error.FFmpegError):  # reading errors are already InvalidVideoError
                raise InvalidVideoError(f"{source}: the restored clip cannot be written ({_reason(error)})") from None
            raise
    frame_time = float(1 / reader.rate) if reader.rate else 0.0
    return VideoReport(output=placed, frames=writer.frames, seconds=writer.last_time + frame_time,
                       rate=reader.rate, size=size, audio=writer.audio_mode, rotation=reader.rotation,
                       unreadable=reader.unreadable)
