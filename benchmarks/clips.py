"""Short test clips made from the repository's example photos: a face drifting slowly across the
frame with fresh sensor noise in every frame (what makes frame-by-frame restoration flicker), and
a tone for sound. The tests and the video benchmarks make their clips here, so neither needs data.

    python benchmarks/clips.py out.mp4 --frames 48 --height 480
"""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import PIL.Image

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PHOTO = EXAMPLES / "astronaut_photo_moderate.png"  # one face of about 160 of its 512 pixels


def clip_frames(count: int, height: int = 480, width: int | None = None, photo: Path = PHOTO,
                noise: float = 4.0, drift: float = 0.5, seed: int = 0) -> list[np.ndarray]:
    """``count`` RGB uint8 frames: ``photo`` scaled to the frame's height, panning ``drift`` pixels a
    frame to the right on a grey ground, with Gaussian noise of ``noise`` levels drawn anew each frame."""
    width = width or (height * 16 // 9) // 2 * 2
    image = np.asarray(PIL.Image.open(photo).convert("RGB"), dtype=np.float32)
    side = height
    image = cv2.resize(image, (side * image.shape[1] // image.shape[0], side), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(seed)
    frames = []
    for index in range(count):
        shift = np.float32([[1, 0, (width - image.shape[1]) / 2 - drift * count / 2 + drift * index], [0, 1, 0]])
        frame = cv2.warpAffine(image, shift, (width, height), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=(128, 128, 128))
        frame = frame + rng.normal(0, noise, frame.shape)
        frames.append(np.clip(frame + 0.5, 0, 255).astype(np.uint8))
    return frames


def write_clip(path: Path, frames: list[np.ndarray], rate: int = 24, codec: str = "libx264", audio: bool = True,
               rotation: int = 0, times: list[float] | None = None, container: str | None = None,
               broken: set[int] = frozenset(), lossless: bool = False) -> Path:
    """Write RGB ``frames`` as a clip: ``rotation`` stores them turned back by that many degrees with a
    display matrix that turns them upright again (as phones do), ``times`` gives each frame its own
    time (a variable frame rate), ``broken`` replaces those frames' packets with garbage (an
    unreadable frame; use an intra-only codec such as mjpeg), ``audio`` adds a 440 Hz tone;
    ``lossless`` (libx264) keeps every frame's noise, which a lossy encoder smooths away on a still shot."""
    output = av.open(str(path), "w", format=container)
    stream = output.add_stream(codec, rate=rate, options={"qp": "0"} if lossless else None)
    stored = [np.ascontiguousarray(np.rot90(frame, -(rotation // 90))) for frame in frames]
    stream.height, stream.width = stored[0].shape[:2]
    stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
    time_base = Fraction(1, 1000) if times is not None else Fraction(1, rate)
    stream.time_base = stream.codec_context.time_base = time_base
    if rotation:
        stream.set_display_rotation(rotation)
    sound = None
    if audio:
        sound = output.add_stream("aac", rate=16000)
        sound.layout = "mono"
    rng = np.random.default_rng(0)
    for index, frame in enumerate(stored):
        video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
        video_frame.pts = round(times[index] * 1000) if times is not None else index
        for packet in stream.encode(video_frame):
            if index in broken or (packet.pts is not None and int(packet.pts) in broken):
                packet = av.Packet(rng.integers(0, 256, packet.size, dtype=np.uint8).tobytes()
                                   if packet.size else b"")
                packet.pts = packet.dts = video_frame.pts
                packet.stream = stream
            output.mux(packet)
    output.mux(stream.encode(None))
    if sound is not None:
        seconds = (times[-1] if times is not None else len(frames) / rate) + 1 / rate
        samples = np.sin(2 * np.pi * 440 * np.arange(int(seconds * 16000)) / 16000).astype(np.float32) * 0.2
        for start in range(0, len(samples), 1024):
            chunk = samples[None, start : start + 1024]
            audio_frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="mono")
            audio_frame.sample_rate, audio_frame.pts = 16000, start
            output.mux(sound.encode(audio_frame))
        output.mux(sound.encode(None))
    output.close()
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--rate", type=int, default=24)
    args = parser.parse_args()
    write_clip(args.output, clip_frames(args.frames, args.height), rate=args.rate)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
