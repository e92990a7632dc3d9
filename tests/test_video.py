"""Videos: the clip's frames, timing, size and sound kept; faces tracked, smoothed and sampled with one
seed per face; every bad clip one clear line or the documented behaviour. The tests make their own
short clips (benchmarks/clips.py, from the repository's example photo)."""

from __future__ import annotations

import json
import os
import re

import av
import numpy as np
import pytest

from lpipdiff.cli.commands import main
from lpipdiff.faces.face_helper import box_iou
from lpipdiff.faces.tracks import FaceTracker, OneEuroFilter
from lpipdiff.io.safe_files import OutputExistsError
from lpipdiff.io.video import InvalidVideoError, VideoReader, rewrite_video
from lpipdiff.model.sampling import SamplingOptions

from clips import clip_frames, write_clip
from conftest import face_restorer, skip_without_shared, tiny_pipeline

FAST = SamplingOptions(fidelity=None, steps=1)


def decoded(path) -> tuple[list[np.ndarray], list[float], av.container.InputContainer]:
    """A clip's frames (RGB, as stored), their times, and its container (for the streams)."""
    container = av.open(str(path))
    frames, times = [], []
    for frame in container.decode(video=0):
        frames.append(frame.to_ndarray(format="rgb24"))
        times.append(float(frame.time))
    return frames, times, container


def audio_payload(path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(packet) for packet in container.demux(audio=0) if packet.size]


@pytest.fixture(scope="module")
def frames():
    return clip_frames(6, height=180)  # 320x180, her face about 35 pixels wide


@pytest.fixture(scope="module")
def clip(tmp_path_factory, frames):
    return write_clip(tmp_path_factory.mktemp("clips") / "clip.mp4", frames)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    tiny_pipeline(face_size=32, patch_size=16).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def restorer():
    return face_restorer(tiny_pipeline(face_size=32, patch_size=16))


def restore(clip, out, model, *extra):
    skip_without_shared()
    return main(["restore", str(clip), "-o", str(out), "--model", str(model), "--backend", "torch", "--fidelity",
                 "none", "--steps", "1", *extra])


# ---------------------------------------------------------------- the file: frames, timing, size, sound
@pytest.mark.shared
def test_cli_restores_a_clip_keeping_its_frames_timing_and_sound(clip, frames, model, tmp_path, capsys):
    assert restore(clip, tmp_path, model, "--upscale", "2") == 0
    output = tmp_path / "clip_restored.mp4"
    captured = capsys.readouterr()
    assert "restored 1 of 1 inputs" in captured.out
    # the clip's own progress bar: frames done of the clip's, elapsed<left, frames a second
    assert re.search(r"clip\.mp4: .*6/6 \[[\d:]+<[\d:]+, +[\d.]+(frame/s|s/frame)\]", captured.err), captured.err
    restored, times, container = decoded(output)
    _, input_times, source = decoded(clip)
    assert len(restored) == len(frames) and times == pytest.approx(input_times)
    assert restored[0].shape == (360, 640, 3)
    assert container.streams.video[0].average_rate == source.streams.video[0].average_rate
    assert container.duration == pytest.approx(source.duration, abs=50_000)  # microseconds: within a frame
    assert audio_payload(output) == audio_payload(clip)  # the sound, packet for packet
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


@pytest.mark.shared
def test_api_restores_the_face_and_leaves_the_rest(clip, frames, restorer, tmp_path):
    from lpipdiff.faces.video import restore_video

    result = restore_video(clip, tmp_path / "out.mp4", restorer, FAST, batch=4)
    assert result.faces == 1 and result.frames_with_faces == len(frames)
    assert (result.report.frames, result.report.size, result.report.audio) == (6, (320, 180), "copied")
    restored, _, _ = decoded(tmp_path / "out.mp4")
    change = np.abs(restored[2].astype(float) - frames[2]).mean(axis=2)
    face = change[25:60, 135:165].mean()  # her face, restored by a random tiny model
    assert face > 10 and np.median(change) < 6  # the background only went through H.264


@pytest.mark.shared
def test_one_seed_per_face_keeps_a_still_face_steady(tmp_path, restorer):
    """A still clip (no noise, no motion): the same face with the same noise in every frame comes out
    the same in every frame; a new seed per frame (what frame-by-frame restoration does) does not."""
    from lpipdiff.faces.video import restore_video

    still = write_clip(tmp_path / "still.mp4", clip_frames(4, height=180, noise=0, drift=0), audio=False)
    restore_video(still, tmp_path / "steady.mp4", restorer, FAST)
    steady, _, _ = decoded(tmp_path / "steady.mp4")
    independent = [restorer.restore(frame.astype(np.float32) / 255, SamplingOptions(fidelity=None, steps=1, seed=i))
                   .image for i, frame in enumerate(decoded(still)[0])]
    face = (slice(25, 60), slice(135, 165))

    def flicker(images):
        return np.mean([np.abs(a[face].astype(float) - b[face]).mean() for a, b in zip(images, images[1:])])

    assert flicker(steady) < 2  # H.264 alone
    assert flicker([(image * 255).round() for image in independent]) > 4 * max(flicker(steady), 0.5)


# ---------------------------------------------------------------- tracks
def test_one_euro_filter_holds_a_jittering_point_and_follows_a_moving_one():
    rng = np.random.default_rng(0)
    steady, moving = OneEuroFilter(), OneEuroFilter()
    jitter = [steady(np.array([0.5 + rng.normal(0, 0.02)]), t / 30)[0] for t in range(60)]
    assert np.std(jitter[10:]) < 0.5 * 0.02  # at least halved
    path = [moving(np.array([t / 30 * 2.0]), t / 30)[0] for t in range(60)]  # two face sides a second
    assert abs(path[-1] - 59 / 30 * 2.0) < 0.15  # follows within a few frames' travel


def test_tracker_links_faces_holds_a_missed_one_and_numbers_new_ones():
    tracker = FaceTracker(hold=2)
    box, landmarks = np.array([100, 100, 200, 200, 0.99]), np.tile([[150.0, 150.0]], (5, 1))
    other = np.array([300, 100, 400, 200, 0.99])
    first = tracker.update([box], [landmarks], 0.0)
    assert [t.number for t in first] == [0]
    moved = tracker.update([other, box + [3, 0, 3, 0, 0]], [landmarks + [200, 0], landmarks + [3, 0]], 0.04)
    assert sorted(t.number for t in moved) == [0, 1]  # the moved face kept its number; the new one is 1
    held = tracker.update([other], [landmarks + [200, 0]], 0.08)
    assert sorted(t.number for t in held) == [0, 1]  # missed once: held at its last landmarks
    tracker.update([other], [landmarks + [200, 0]], 0.12)
    assert [t.number for t in tracker.update([other], [landmarks + [200, 0]], 0.16)] == [1]  # missed 3 times: gone
    assert [t.number for t in tracker.update([other, box], [landmarks + [200, 0], landmarks], 0.2)] == [1, 2]


@pytest.mark.shared
def test_a_followed_face_is_found_again_around_where_it_was(restorer):
    """Between full-frame searches the detector looks only around a followed face: the same face,
    its landmarks within a few pixels of a full search's; nothing where there is no face."""
    frame = np.ascontiguousarray(clip_frames(1, height=480)[0][..., ::-1])
    full = restorer.face_helper()
    full.read_image(frame)
    restorer.find_faces(full)
    (track,) = FaceTracker().update(full.det_faces, full.all_landmarks_5, 0.0)
    around = restorer.face_helper()
    around.read_image(frame)
    restorer.find_faces(around, regions=[track.region()])
    assert len(around.det_faces) == 1
    assert np.abs(around.all_landmarks_5[0] - full.all_landmarks_5[0]).max() < 4
    assert box_iou(around.det_faces[0], full.det_faces[0]) > 0.8
    elsewhere = restorer.face_helper()
    elsewhere.read_image(frame)
    assert restorer.find_faces(elsewhere, regions=[(0, 300, 150, 450)]) == 0


# ---------------------------------------------------------------- bad input, and the behaviour documented for it
def make_zero_frames(folder):
    """A Matroska clip with a video stream that holds no frame (and some sound)."""
    path = folder / "zero.mkv"
    output = av.open(str(path), "w")
    video = output.add_stream("libx264", rate=24)
    video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
    write_silence(output, blocks=4, start_encoding=True)  # the empty video stream is written too
    return path


def write_silence(output, blocks: int, start_encoding: bool = False) -> None:
    """Add a mono AAC stream of ``blocks`` silent 1024-sample frames to ``output``, and close it."""
    sound = output.add_stream("aac", rate=16000)
    sound.layout = "mono"
    if start_encoding:
        output.start_encoding()
    for block in range(blocks):
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, block * 1024
        output.mux(sound.encode(frame))
    output.mux(sound.encode(None))
    output.close()


def make_sound_only(folder):
    path = folder / "sound.mp4"
    write_silence(av.open(str(path), "w"), blocks=1)
    return path


def make_letter(folder):
    path = folder / "letter.mp4"
    path.write_text("Dear Sir, this is not a video.")
    return path


def make_empty(folder):
    path = folder / "empty.mov"
    path.touch()
    return path


VIDEO_CASES = {
    "a text file named .mp4": (make_letter, [], "not a readable video"),
    "an empty file": (make_empty, [], "the file is empty"),
    "sound without a video stream": (make_sound_only, [], "has no video stream"),
    "a video stream without frames": (make_zero_frames, [], "the video has no frames"),
    "a clip longer than --max-seconds": (lambda folder: write_clip(folder / "long.mp4", clip_frames(6, height=48)),
                                         ["--max-seconds", "0.1"], r"longer than the limit of 0\.1 s"),
}


@pytest.mark.shared
@pytest.mark.parametrize("case", VIDEO_CASES)
def test_bad_clip_is_one_line_and_leaves_no_file(case, model, tmp_path, capsys):
    make, extra, message = VIDEO_CASES[case]
    source = tmp_path / "in"
    source.mkdir()
    clip = make(source)
    out = tmp_path / "out"
    assert restore(clip, out, model, *extra) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(clip) in errors[0]
    assert re.search(message, errors[0]), errors[0]
    assert list(out.iterdir()) == []  # nothing, not even a temporary file


@pytest.mark.shared
def test_rotated_phone_clip_comes_out_upright(frames, restorer, tmp_path):
    from lpipdiff.faces.video import restore_video

    phone = write_clip(tmp_path / "phone.mp4", frames, rotation=90)  # stored sideways, displayed upright
    with av.open(str(phone)) as container:
        assert container.streams.video[0].codec_context.width == 180  # sideways as stored
    result = restore_video(phone, tmp_path / "upright.mp4", restorer, FAST)
    restored, _, _ = decoded(tmp_path / "upright.mp4")
    assert result.report.rotation == 90 and restored[0].shape == (180, 320, 3)
    with av.open(str(tmp_path / "upright.mp4")) as container:
        assert next(container.decode(video=0)).rotation == 0  # no display matrix left to apply
    away = np.abs(restored[0].astype(float) - frames[0]).mean(axis=2)
    assert np.median(away) < 6  # the picture as displayed, not turned


@pytest.mark.shared
def test_variable_frame_rate_keeps_every_frame_at_its_time(frames, restorer, tmp_path):
    from lpipdiff.faces.video import restore_video

    times = [0, 0.04, 0.1, 0.3, 0.32, 0.5]
    clip = write_clip(tmp_path / "vfr.mkv", frames, times=times)
    result = restore_video(clip, tmp_path / "vfr.mp4", restorer, FAST)
    _, written, _ = decoded(tmp_path / "vfr.mp4")
    assert result.report.frames == 6 and written == pytest.approx(times, abs=1e-3)
    assert audio_payload(tmp_path / "vfr.mp4") == audio_payload(clip)


@pytest.mark.shared
def test_unreadable_frame_is_replaced_by_the_one_before(frames, model, tmp_path, capsys):
    clip = write_clip(tmp_path / "broken.avi", frames, codec="mjpeg", audio=False, broken={3})
    assert restore(clip, tmp_path / "out", model) == 0
    assert "1 unreadable frame(s), each replaced by the frame before" in capsys.readouterr().err
    restored, times, _ = decoded(tmp_path / "out" / "broken_restored.mp4")
    assert len(restored) == 6 and times[3] == pytest.approx(3 / 24, abs=1e-3)
    assert np.abs(restored[3].astype(float) - restored[2]).mean() < 1  # frame 2 again, at frame 3's time


@pytest.mark.shared
def test_clip_without_faces_is_copied_through(tmp_path, model, capsys):
    grey = [np.full((96, 128, 3), 60 + 20 * i, np.uint8) for i in range(4)]
    clip = write_clip(tmp_path / "wall.mp4", grey)
    assert restore(clip, tmp_path / "out", model) == 0
    assert "no face in any frame; its frames were copied through" in capsys.readouterr().err
    restored, _, _ = decoded(tmp_path / "out" / "wall_restored.mp4")
    grey = decoded(clip)[0]  # as stored
    assert len(restored) == 4
    assert [np.abs(r.astype(float) - g).mean() for r, g in zip(restored, grey)] == pytest.approx([0] * 4, abs=1)


@pytest.mark.shared
def test_existing_output_is_kept_and_an_interrupted_one_never_appears(clip, restorer, tmp_path):
    from lpipdiff.faces.video import restore_video

    target = tmp_path / "out.mp4"
    target.write_bytes(b"theirs")
    with pytest.raises(OutputExistsError, match="exists and was kept"):
        restore_video(clip, target, restorer, FAST)
    assert target.read_bytes() == b"theirs"

    def fail_midway(batch):
        if batch[0].pts > 0:
            raise KeyboardInterrupt
        return [frame.image for frame in batch]

    with pytest.raises(KeyboardInterrupt):
        rewrite_video(clip, tmp_path / "half.mp4", fail_midway, batch=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]  # no half-written file, not even hidden
    restore_video(clip, target, restorer, FAST, overwrite=True)
    assert len(decoded(target)[0]) == 6


def test_frames_stream_through_a_few_at_a_time(tmp_path):
    """Memory holds a batch of frames, not the clip: frames handed over earlier are freed."""
    import gc
    import weakref

    clip = write_clip(tmp_path / "long.mp4", clip_frames(40, height=48), audio=False)
    seen, alive = [], []

    def process(batch):
        gc.collect()
        alive.append(sum(ref() is not None for ref in seen))
        seen.extend(weakref.ref(frame) for frame in batch)
        return [frame.image for frame in batch]

    report = rewrite_video(clip, tmp_path / "out.mp4", process, batch=4)
    assert report.frames == 40 and len(alive) == 10
    assert max(alive) <= 4  # at most the batch before, however long the clip


def test_sound_mp4_cannot_hold_is_encoded_to_aac(tmp_path):
    """A camera's MOV with PCM sound: MP4 cannot hold PCM, so the sound is encoded to AAC, same length."""
    frames = clip_frames(12, height=48)
    clip = tmp_path / "camera.mov"
    output = av.open(str(clip), "w")
    video = output.add_stream("libx264", rate=24)
    video.width, video.height, video.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
    sound = output.add_stream("pcm_s16le", rate=22050)
    sound.layout = "stereo"
    for index, frame in enumerate(frames):
        picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
        picture.pts = index
        output.mux(video.encode(picture))
    output.mux(video.encode(None))
    tone = (np.sin(np.arange(11025) / 10) * 8000).astype(np.int16)  # half a second
    for start in range(0, len(tone), 1000):
        chunk = np.repeat(tone[None, start : start + 1000], 2, axis=0).T.reshape(1, -1).copy()
        samples = av.AudioFrame.from_ndarray(chunk, format="s16", layout="stereo")
        samples.sample_rate, samples.pts = 22050, start
        output.mux(sound.encode(samples))
    output.mux(sound.encode(None))
    output.close()
    report = rewrite_video(clip, tmp_path / "out.mp4", lambda batch: [frame.image for frame in batch])
    assert report.audio == "encoded to AAC" and report.frames == 12
    with av.open(str(tmp_path / "out.mp4")) as written:
        stream = written.streams.audio[0]
        assert (stream.codec_context.name, stream.rate) == ("aac", 22050)
        assert sum(frame.samples for frame in written.decode(audio=0)) == pytest.approx(11025, abs=1100)


def test_reader_refuses_a_long_clip_before_decoding(tmp_path):
    clip = write_clip(tmp_path / "long.mp4", clip_frames(6, height=48), audio=False)
    with pytest.raises(InvalidVideoError, match=r"longer than the limit of 0\.1 s \(0\.25 s\)"):
        VideoReader(clip, max_seconds=0.1)


# ---------------------------------------------------------------- archives
@pytest.mark.shared
def test_a_folder_of_videos_and_photos_is_one_resumable_archive(clip, model, tmp_path, capsys):
    from conftest import EXAMPLES

    source = tmp_path / "in"
    (source / "trip").mkdir(parents=True)
    os.link(clip, source / "trip" / "clip.mp4")
    (source / "face.png").write_bytes((EXAMPLES / "astronaut_face_moderate.png").read_bytes())
    out = tmp_path / "out"
    assert restore(source, out, model, "--recursive") == 0
    assert (out / "trip" / "clip_restored.mp4").is_file() and (out / "face_restored.png").is_file()
    records = [json.loads(line) for line in (out / "lpipdiff-manifest.jsonl").read_text().splitlines()]
    done = {os.path.basename(r["input"]): r for r in records if r.get("status") == "done"}
    assert set(done) == {"clip.mp4", "face.png"} and done["clip.mp4"]["faces"] == 1
    capsys.readouterr()
    assert restore(source, out, model, "--recursive") == 0
    assert "2 of 2 inputs were restored by an earlier run" in capsys.readouterr().err


# ---------------------------------------------------------------- the demo
@pytest.fixture(scope="module")
def service():
    from lpipdiff.serving.service import RestorationService
    from lpipdiff.serving.settings import ServingSettings

    from conftest import FACE_WEIGHTS

    skip_without_shared()
    settings = ServingSettings(face_weights=str(FACE_WEIGHTS), max_video_seconds=1.0)
    return RestorationService(settings, pipeline=tiny_pipeline(face_size=32, patch_size=16))


@pytest.mark.shared
def test_demo_restores_a_clip_in_its_heavy_lane(service, clip):
    job = service.submit(service.video_request(str(clip), fidelity=None, steps=1), progress=None)
    while not job.finished(timeout=0.5):
        pass
    result = job.result()
    assert result.status.startswith("Restored 1 face(s) in 6 of 6 frames, 320x180, sound copied")
    assert len(decoded(result.video)[0]) == 6 and audio_payload(result.video) == audio_payload(clip)


@pytest.mark.shared
def test_demo_refuses_a_clip_over_its_limit_in_one_line(service, tmp_path):
    import gradio as gr

    from app import restore_video_function

    long = write_clip(tmp_path / "long.mp4", clip_frames(30, height=48), audio=False)  # 1.25 s
    with pytest.raises(gr.Error) as error:
        list(restore_video_function(service)(str(long)))
    message = str(error.value.message)
    assert "long.mp4: the clip is longer than the limit of 1 s (1.25 s)" in message
    assert str(tmp_path) not in message and "\n" not in message  # the upload's name, never the server's path


@pytest.mark.shared
def test_demo_watchdog_stops_a_clip_and_leaves_no_file(service, clip):
    from lpipdiff.serving.service import RequestStopped, Watchdog

    request = service.video_request(str(clip), fidelity=None, steps=1)
    stopped = service.tally.stopped
    with pytest.raises(RequestStopped, match="stopped after 0 s"):
        service.restore_clip(request, Watchdog(seconds=0.0, abandoned_after=60))
    assert service.tally.stopped == stopped + 1
