"""Hostile and unlucky conditions around the restore commands: links where the tool keeps its own
files, a manifest tampered with, two runs on one folder, a full disk, changed inputs, tampered
model folders and caches, environment variables that conflict with flags. Each case ends in one
clear line and loses no file that is not the tool's own. docs/BAD_INPUT.md lists them."""

from __future__ import annotations

import errno
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from lpipdiff.cli.archive import MANIFEST, PARTS, Manifest, OutputLock, read_records
from lpipdiff.cli.commands import main
from lpipdiff.cli.restore import plan_inputs


def faces(folder: Path, count: int, side: int = 32, seed: int = 0) -> Path:
    """``count`` random 'faces' in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        PIL.Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(folder / f"face{i}.png")
    return folder


def restore(inputs, output, model, *extra) -> int:
    return main(["restore", *map(str, inputs if isinstance(inputs, list) else [inputs]), "-o", str(output),
                 "--model", str(model), "--steps", "1", *extra])


# ---------------------------------------------------------------- files lost or replaced


def test_archive_never_follows_a_manifest_folder_that_is_a_link(tmp_path, saved_pipeline, capsys):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    theirs = elsewhere / "part-00000.jsonl"
    theirs.write_text("their own notes\n")
    (out / PARTS).symlink_to(elsewhere)
    assert restore(faces(tmp_path / "in", 2), out, saved_pipeline, "--archive") == 2
    assert "a symbolic link where lpipdiff keeps its manifest" in capsys.readouterr().err
    assert theirs.read_text() == "their own notes\n" and sorted(elsewhere.iterdir()) == [theirs]
    assert not list(out.glob("*.png"))


def test_archive_never_follows_a_part_file_that_is_a_link(tmp_path, saved_pipeline, capsys):
    out = tmp_path / "out"
    (out / PARTS).mkdir(parents=True)
    theirs = tmp_path / "notes.jsonl"
    theirs.write_text("their own notes\n")
    (out / PARTS / "part-00000.jsonl").symlink_to(theirs)
    assert restore(faces(tmp_path / "in", 2), out, saved_pipeline, "--archive") == 2
    assert "a symbolic link where lpipdiff keeps its manifest" in capsys.readouterr().err
    assert theirs.read_text() == "their own notes\n"


def test_a_failed_record_does_not_own_a_file_placed_there_later(tmp_path, saved_pipeline, capsys):
    inputs, out = faces(tmp_path / "in", 2), tmp_path / "out"
    out.mkdir()
    first = plan_inputs([inputs], out, skip_output_tree=True).items[0]
    Manifest(out, 0).write(first, "failed", error="not a readable image")
    first.output.write_bytes(b"the user's own file")
    assert restore(inputs, out, saved_pipeline, "--archive") == 1
    assert f"{first.output} exists; pass --overwrite" in capsys.readouterr().err
    assert first.output.read_bytes() == b"the user's own file"


def test_a_changed_input_is_restored_again(tmp_path, saved_pipeline, capsys):
    inputs, out = faces(tmp_path / "in", 2), tmp_path / "out"
    assert restore(inputs, out, saved_pipeline, "--archive") == 0
    before = (out / "face0_restored.png").read_bytes()
    faces(inputs, 1, seed=5)  # face0.png replaced by another picture
    stat = (inputs / "face0.png").stat()
    os.utime(inputs / "face0.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    capsys.readouterr()
    assert restore(inputs, out, saved_pipeline, "--archive") == 0
    assert "1 of 2 inputs were restored by an earlier run" in capsys.readouterr().err
    assert (out / "face0_restored.png").read_bytes() != before


@pytest.mark.parametrize("mode", [[], ["--archive"]])
def test_a_second_run_on_the_same_output_folder_is_refused(tmp_path, saved_pipeline, capsys, mode):
    inputs, out = faces(tmp_path / "in", 1), tmp_path / "out"
    out.mkdir()
    other = OutputLock(out)
    assert other.acquire() is None  # another run holds the folder
    assert restore(inputs, out, saved_pipeline, *mode) == 2
    assert f"{out}: another lpipdiff run is writing here (process {os.getpid()})" in capsys.readouterr().err
    assert not list(out.glob("*.png"))
    other.release()
    assert restore(inputs, out, saved_pipeline, *mode) == 0


def test_a_damaged_manifest_record_is_skipped_with_a_warning(tmp_path, saved_pipeline, capsys):
    inputs, out = faces(tmp_path / "in", 2), tmp_path / "out"
    assert restore(inputs, out, saved_pipeline, "--archive") == 0
    with open(out / MANIFEST, "a") as file:
        file.write(json.dumps({"input": "x", "status": "done", "time": "yesterday"}) + "\n")
        file.write(json.dumps({"input": 7, "status": "done", "time": 1.0}) + "\n")
    capsys.readouterr()
    assert restore(inputs, out, saved_pipeline, "--archive") == 0
    err = capsys.readouterr().err
    assert "2 damaged manifest record(s) skipped" in err and "2 of 2 inputs were restored by an earlier run" in err


def test_a_full_disk_stops_the_run_and_the_next_run_resumes(tmp_path, saved_pipeline, monkeypatch, capsys):
    from lpipdiff.io import images

    inputs, out = faces(tmp_path / "in", 3), tmp_path / "out"
    real, saved = images.save_image, []

    def disk_fills(image, path, overwrite=False):
        if saved:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        saved.append(path)
        return real(image, path, overwrite)

    monkeypatch.setattr(images, "save_image", disk_fills)
    assert restore(inputs, out, saved_pipeline, "--archive") == 1
    err = capsys.readouterr().err
    assert f"no space left on {out}" in err and err.count("No space left") == 0  # once, not once per file
    assert (out / MANIFEST).is_file() and not (out / PARTS).exists()  # merged, parts cleaned
    assert len(list(out.glob("*.png"))) == 1 and not list(out.glob("*.partial"))
    monkeypatch.undo()
    assert restore(inputs, out, saved_pipeline, "--archive") == 0
    assert "1 of 3 inputs were restored by an earlier run" in capsys.readouterr().err
    assert len(list(out.glob("*.png"))) == 3


def test_a_full_disk_in_a_plain_run_is_one_line(tmp_path, saved_pipeline, monkeypatch, capsys):
    from lpipdiff.io import images

    def full(image, path, overwrite=False):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(images, "save_image", full)
    out = tmp_path / "out"
    assert restore(faces(tmp_path / "in", 3), out, saved_pipeline) == 1
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and f"no space left on {out}" in err


def test_a_link_leaving_the_input_tree_is_said_not_skipped_silently(tmp_path, saved_pipeline, capsys):
    inputs, out = faces(tmp_path / "in", 1), tmp_path / "out"
    faces(tmp_path / "outside", 1)
    (inputs / "holiday").symlink_to(tmp_path / "outside")
    assert restore(inputs, out, saved_pipeline, "--recursive") == 0
    captured = capsys.readouterr()
    assert f"warning: {inputs / 'holiday'}: a link to a folder outside {inputs}" in captured.err
    assert "1 folder(s) skipped" in captured.out
    skipped = [r for r in read_records(out / MANIFEST)[0] if r["status"] == "skipped"]
    assert [Path(r["input"]).name for r in skipped] == ["holiday"]


def test_an_unreadable_subfolder_is_said_not_skipped_silently(tmp_path, saved_pipeline, monkeypatch, capsys):
    inputs, out = faces(tmp_path / "in", 1), tmp_path / "out"
    locked = faces(inputs / "locked", 1)
    real = os.scandir

    def scandir(path="."):
        if Path(path) == locked:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)  # as a folder of another user, unreadable to us, is
    assert restore(inputs, out, saved_pipeline, "--recursive") == 0
    captured = capsys.readouterr()
    assert f"warning: {locked}: cannot read this folder (Permission denied)" in captured.err
    assert "1 folder(s) skipped" in captured.out


# ---------------------------------------------------------------- tampered model folders and ONNX caches


def other_graph(path: Path) -> Path:
    """An ONNX graph of another tiny UNet (other weights, same shapes) at ``path``."""
    import torch

    from lpipdiff.model.backends import export_onnx

    from conftest import tiny_unet

    unet = tiny_unet()
    with torch.no_grad():
        for parameter in unet.parameters():
            parameter.add_(0.05)
    return export_onnx(unet, path)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "auto"])
def test_a_model_folder_graph_of_other_weights_is_refused(saved_pipeline, tmp_path, backend):
    pytest.importorskip("onnxruntime" if backend != "openvino" else "openvino")
    from lpipdiff.model.backends import choose_backend
    from lpipdiff.model.loading import ModelLoadError, load_pipeline

    if choose_backend(backend, "cpu") not in ("onnxruntime", "openvino"):
        pytest.skip(f"auto runs {choose_backend(backend, 'cpu')} on this CPU, which reads no ONNX graph")
    graph = other_graph(saved_pipeline / "unet" / "model.onnx")
    with pytest.raises(ModelLoadError, match="this ONNX graph was made from other weights than the UNet beside it"):
        load_pipeline(saved_pipeline, device="cpu", backend=backend, cache_dir=tmp_path / "cache")
    assert graph.is_file()  # the user's file is refused, not deleted


def test_a_model_folder_graph_of_other_weights_is_one_cli_line(saved_pipeline, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    other_graph(saved_pipeline / "unet" / "model.onnx")
    assert restore(faces(tmp_path / "in", 1), tmp_path / "out", saved_pipeline, "--backend", "onnxruntime") == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "model.onnx: this ONNX graph was made from other weights" in err


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_a_damaged_model_folder_graph_is_refused_naming_the_file(saved_pipeline, tmp_path, damage):
    pytest.importorskip("onnxruntime")
    from lpipdiff.model.backends import export_onnx
    from lpipdiff.model.loading import ModelLoadError, load_pipeline

    from conftest import tiny_unet

    graph = export_onnx(tiny_unet(), saved_pipeline / "unet" / "model.onnx")
    data = graph.read_bytes()
    graph.write_bytes({"garbage": b"\x08\xff" * 300, "truncated": data[: len(data) // 2], "empty": b""}[damage])
    with pytest.raises(ModelLoadError, match=r"model\.onnx: not a readable ONNX graph"):
        load_pipeline(saved_pipeline, device="cpu", backend="onnxruntime", cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("damage", ["other weights", "truncated", "garbage"])
def test_a_bad_cached_graph_is_exported_again(saved_pipeline, tmp_path, damage):
    pytest.importorskip("onnxruntime")
    import torch
    from test_backends import FP32_TOLERANCE, torch_prediction, unet_inputs

    from lpipdiff.model.backends import graph_weights, weights_hash
    from lpipdiff.model.loading import load_pipeline

    reference = load_pipeline(saved_pipeline, device="cpu", backend="torch")
    cache = tmp_path / "cache"
    cached = cache / f"unet-{weights_hash(reference.unet)}.onnx"
    cache.mkdir()
    if damage == "other weights":
        other_graph(cached)
    else:
        other_graph(tmp_path / "x.onnx")
        data = (tmp_path / "x.onnx").read_bytes()
        cached.write_bytes(data[: len(data) // 3] if damage == "truncated" else b"\x08\xff" * 300)
    fast = load_pipeline(saved_pipeline, device="cpu", backend="onnxruntime", cache_dir=cache)
    assert graph_weights(cached) == weights_hash(reference.unet)
    inputs = unet_inputs(reference.unet, 2)
    with torch.no_grad():
        expected = torch_prediction(reference.unet, inputs)
    assert (fast.unet(inputs[0], torch.tensor(321), *inputs[1:]) - expected).abs().max() < FP32_TOLERANCE
    assert sorted(p.name for p in cache.iterdir()) == [cached.name]  # no partial file left


# ---------------------------------------------------------------- the Python API: objects that are not what they seem
def restore_all_with(batch_size):
    def call(pipeline):
        from lpipdiff.model.sampling import SamplingOptions, restore_all

        return restore_all(pipeline, [np.full((32, 32, 3), 0.5, np.float32)] * 3, SamplingOptions(steps=1),
                           batch_size=batch_size)
    return call


def pipeline_on(image):
    return lambda pipeline: pipeline(image, num_inference_steps=1)


HOSTILE_API_CASES = {
    "restore_all batch_size -1": (restore_all_with(-1), r"batch_size must be a whole number of at least 1, got -1"),
    "restore_all batch_size 0": (restore_all_with(0), r"batch_size must be a whole number of at least 1, got 0"),
    "restore_all batch_size 2.5": (restore_all_with(2.5), r"batch_size must be a whole number of at least 1, got 2\.5"),
    "restore_all batch_size True": (restore_all_with(True), r"batch_size must be a whole number"),
    "an image tensor on the meta device": (lambda p: p(meta_tensor(), num_inference_steps=1),
                                           "the tensor is on the meta device: it has a shape but no pixels"),
    "a sparse image tensor": (lambda p: p(dense(3, 32, 32).to_sparse(), num_inference_steps=1),
                              r"a sparse_coo tensor; pass a plain one"),
    "an int16 image tensor": (lambda p: p((dense(3, 32, 32) * 100).short(), num_inference_steps=1),
                              "unsupported pixel type int16"),
    "a complex image tensor": (lambda p: p(dense(3, 32, 32).to(complex_dtype()), num_inference_steps=1),
                               "unsupported pixel type complex64"),
    "a bool image tensor": (lambda p: p(dense(3, 32, 32) > 0.5, num_inference_steps=1), "unsupported pixel type bool"),
}


def meta_tensor():
    import torch

    return torch.zeros(3, 32, 32, device="meta")


def dense(*shape):
    import torch

    return torch.rand(*shape, generator=torch.Generator().manual_seed(0))


def complex_dtype():
    import torch

    return torch.complex64


@pytest.mark.parametrize("case", HOSTILE_API_CASES)
def test_hostile_api_values(case, pipeline):
    call, message = HOSTILE_API_CASES[case]
    with pytest.raises((ValueError, TypeError)) as raised:  # InvalidImageError is a ValueError
        call(pipeline)
    assert re.search(message, str(raised.value)) and "\n" not in str(raised.value)


def test_a_uint8_tensor_means_what_a_uint8_array_means(pipeline):
    """Once read as floats of 0..255 and refused as out of range; now 0..255 as for an array."""
    import torch

    from lpipdiff.io.images import to_rgb_array

    array = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(to_rgb_array(torch.from_numpy(array).permute(2, 0, 1)), to_rgb_array(array))


def test_an_interrupted_pipeline_says_so(pipeline):
    def stop_at_first_step(pipe, step, timestep, callback_kwargs):
        pipe._interrupt = True
        return {}

    face = np.full((32, 32, 3), 0.5, np.float32)
    stopped = pipeline(face, fidelity=None, num_inference_steps=4, callback_on_step_end=stop_at_first_step)
    assert stopped.interrupted
    assert not pipeline(face, fidelity=None, num_inference_steps=4).interrupted  # reset for the next call
    last = pipeline(face, fidelity=None, num_inference_steps=1, callback_on_step_end=stop_at_first_step)
    assert not last.interrupted  # stopped after its last step: nothing was left out


def test_restore_all_stops_at_an_interrupted_batch(pipeline):
    from lpipdiff.model.sampling import SamplingOptions, restore_all

    calls = []

    def stop_in_the_second_batch(pipe, step, timestep, callback_kwargs):
        calls.append(step)
        if len(calls) > 2:  # two steps a batch: the first batch runs whole
            pipe._interrupt = True
        return {}

    rng = np.random.default_rng(0)
    faces = [rng.random((32, 32, 3)).astype(np.float32) for _ in range(5)]
    options = SamplingOptions(fidelity=None, steps=2)
    whole = restore_all(pipeline, faces, options, batch_size=2)
    stopped = restore_all(pipeline, faces, options, batch_size=2, callback_on_step_end=stop_in_the_second_batch)
    assert len(whole) == 5 and len(stopped) == 2  # once 5, three of them unfinished samples
    for one, other in zip(whole, stopped):
        np.testing.assert_allclose(one, other, atol=1e-6)


@pytest.mark.slow
def test_an_interrupted_whole_photo_says_so():
    from skimage import data

    from lpipdiff.model.sampling import SamplingOptions

    from conftest import face_restorer, tiny_pipeline

    def stop(pipe, step, timestep, callback_kwargs):
        pipe._interrupt = True
        return {}

    restorer = face_restorer(tiny_pipeline(face_size=32, patch_size=16))
    options = SamplingOptions(fidelity=None, steps=3)
    assert restorer.restore(data.astronaut(), options, callback_on_step_end=stop).interrupted
    assert not restorer.restore(data.astronaut(), options).interrupted


# ---------------------------------------------------------------- a whole photo's background given as an array
def photo_background(change):
    def make():
        background = np.full((512, 512, 3), 0.5, np.float32)
        return change(background)
    return make


HOSTILE_BACKGROUND_CASES = {
    "a background holding NaN": (photo_background(lambda b: np.where(b > 0, np.nan, b)),
                                 "the upscaled background holds NaN or infinite values"),
    "a background holding infinity": (photo_background(lambda b: np.full_like(b, np.inf)), "NaN or infinite"),
    "a background of uint8": (photo_background(lambda b: (b * 255).astype(np.uint8)),
                              r"must be float RGB in \[0, 1\], got dtype uint8"),
    "a background of int64": (photo_background(lambda b: b.astype(np.int64)), "got dtype int64"),
    "a background of 0..255 floats": (photo_background(lambda b: b * 255), r"must lie in \[0, 1\]"),
    "a background of another size": (photo_background(lambda b: b[:100]),
                                     r"the upscaled background is \(100, 512, 3\)"),
    "a background as a tensor": (photo_background(lambda b: __import__("torch").from_numpy(b)),
                                 "background must be True, False or the upscaled photo as a numpy array, got Tensor"),
    "a background as text": (photo_background(lambda b: "yes"), "background must be True, False or the upscaled photo"),
}


@pytest.fixture(scope="module")
def photo_restorer():
    from conftest import face_restorer, tiny_pipeline

    return face_restorer(tiny_pipeline(face_size=32, patch_size=16))


@pytest.mark.parametrize("case", HOSTILE_BACKGROUND_CASES)
def test_hostile_backgrounds(case, photo_restorer, monkeypatch):
    from skimage import data

    from lpipdiff.model import sampling

    make, message = HOSTILE_BACKGROUND_CASES[case]
    monkeypatch.setattr(sampling, "restore_faces", None)  # refused before any face is restored
    with pytest.raises((ValueError, TypeError), match=message):
        photo_restorer.restore(data.astronaut(), background=make())


# ---------------------------------------------------------------- background upscalers: tampered weights and caches
def compact_state():
    import torch
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(0)
    return Compact(num_feat=8, num_conv=2, upscale=2).state_dict()


def upscaler_file(name: str, change=lambda state: None) -> Callable:
    def make(folder: Path) -> Path:
        import torch
        from safetensors.torch import save_file

        state = compact_state()
        change(state)
        path = folder / name
        save_file(state, path) if name.endswith(".safetensors") else torch.save(state, path)
        return path
    return make


def fill_first(value):
    return lambda state: state[sorted(k for k in state if state[k].dtype.is_floating_point)[0]].fill_(value)


def a_fifo(name: str) -> Callable:
    def make(folder: Path) -> Path:
        os.mkfifo(folder / name)
        return folder / name
    return make


HOSTILE_UPSCALER_CASES = {
    "NaN upscaler weights (safetensors)": (upscaler_file("up.safetensors", fill_first(float("nan"))),
                                           "holds NaN or infinite values"),
    "infinite upscaler weights (weights-only .pth)": (upscaler_file("up.pth", fill_first(float("inf"))),
                                                      "holds NaN or infinite values"),
    "NaN in the last upscaler tensor": (upscaler_file("up.safetensors", lambda s: s[sorted(s)[-1]].fill_(float("nan"))),
                                        "holds NaN or infinite values"),
    "upscaler weights that are a named pipe": (a_fifo("up.safetensors"), "not a regular file"),
}


@pytest.mark.parametrize("case", HOSTILE_UPSCALER_CASES)
def test_hostile_upscaler_weights(case, tmp_path):
    from lpipdiff.faces.upscaler import UpscalerError, load_upscaler

    make, message = HOSTILE_UPSCALER_CASES[case]
    with pytest.raises(UpscalerError, match=message) as raised:
        load_upscaler(make(tmp_path))
    assert "\n" not in str(raised.value)


@pytest.fixture
def served_upscaler(tmp_path, monkeypatch):
    """A short name whose 'release' is a local file, with its true size and checksum."""
    from lpipdiff.faces import upscaler

    source = upscaler_file("release.pth")(tmp_path)
    known = upscaler.KnownUpscaler("up.pth", source.as_uri(), upscaler.sha256_of(source), source.stat().st_size, 2,
                                   "test")
    monkeypatch.setitem(upscaler.KNOWN_UPSCALERS, "test-x2", known)
    return known


@pytest.mark.parametrize("online", [True, False])
def test_a_tampered_upscaler_in_the_cache_is_never_loaded(served_upscaler, tmp_path, monkeypatch, online):
    import urllib.error

    from lpipdiff.faces import upscaler

    cache = tmp_path / "cache"
    assert upscaler.load_upscaler("test-x2", cache_dir=cache).scale == 2
    cached = cache / served_upscaler.sha256[:16] / served_upscaler.filename
    upscaler_file("x.pth", fill_first(0.5))(tmp_path)
    cached.write_bytes((tmp_path / "x.pth").read_bytes())  # same size, other weights
    if not online:
        def offline(*args, **kwargs):
            raise urllib.error.URLError("Name or service not known")

        monkeypatch.setattr(upscaler.urllib.request, "urlopen", offline)
        with pytest.raises(upscaler.UpscalerError, match="the cached copy of 'test-x2' .* is not the pinned file"):
            upscaler.load_upscaler("test-x2", cache_dir=cache)
        return
    assert upscaler.load_upscaler("test-x2", cache_dir=cache).scale == 2
    assert upscaler.sha256_of(cached) == served_upscaler.sha256  # downloaded again over the tool's own copy


# ---------------------------------------------------------------- environment variables that conflict with flags
def face_folder(tmp_path: Path) -> Path:
    return faces(tmp_path / "in", 1)


NO_MODEL = "(no --model)"
HOSTILE_ENV_CASES = {
    "LPIPDIFF_BG_UPSAMPLER set, aligned faces restored": (
        {"LPIPDIFF_BG_UPSAMPLER": "realesrgan-x4"}, [], 0, r"restored 1 of 1 inputs"),
    "LPIPDIFF_BG_UPSAMPLER a missing file, --whole-photo": (
        {"LPIPDIFF_BG_UPSAMPLER": "/nowhere/up.pth"}, ["--whole-photo"], 2, r"/nowhere/up\.pth: no such weights file"),
    "--bg-upsampler wins over LPIPDIFF_BG_UPSAMPLER": (
        {"LPIPDIFF_BG_UPSAMPLER": "/nowhere/env.pth"}, ["--whole-photo", "--bg-upsampler", "/nowhere/flag.pth"], 2,
        r"/nowhere/flag\.pth: no such weights file"),
    "LPIPDIFF_MODEL a missing folder": ({"LPIPDIFF_MODEL": "/nowhere/model"}, [NO_MODEL], 2,
                                        "no such model folder"),
    "--model wins over LPIPDIFF_MODEL": ({"LPIPDIFF_MODEL": "/nowhere/model"}, [], 0, r"restored 1 of 1 inputs"),
    "LPIPDIFF_BACKEND unknown": ({"LPIPDIFF_BACKEND": "tensorrt"}, [], 2,
                                r"\$LPIPDIFF_BACKEND: must be one of .*, got 'tensorrt'"),
    "--backend wins over LPIPDIFF_BACKEND": ({"LPIPDIFF_BACKEND": "tensorrt"}, ["--backend", "torch"], 0,
                                             r"restored 1 of 1 inputs"),
    "LPIPDIFF_DEVICE unknown": ({"LPIPDIFF_DEVICE": "gpu0"}, [], 2, r"\$LPIPDIFF_DEVICE: unknown device 'gpu0'"),
    "--device wins over LPIPDIFF_DEVICE": ({"LPIPDIFF_DEVICE": "gpu0"}, ["--device", "cpu"], 0,
                                           r"restored 1 of 1 inputs"),
    "LPIPDIFF_FACEXLIB_WEIGHTS a missing folder": ({"LPIPDIFF_FACEXLIB_WEIGHTS": "/nowhere/weights"},
                                                   ["--whole-photo"], 2,
                                                   r"\$LPIPDIFF_FACEXLIB_WEIGHTS: \S*/nowhere/weights: no such folder"),
    "WORLD_SIZE not a number": ({"WORLD_SIZE": "two"}, [], 2, r"\$WORLD_SIZE must be a whole number, got 'two'"),
    "WORLD_SIZE 2 without a launcher": ({"WORLD_SIZE": "2"}, [], 2,
                                        r"\$WORLD_SIZE is 2, but the processes cannot be joined"),
}


@pytest.mark.parametrize("case", HOSTILE_ENV_CASES)
def test_environment_against_flags(case, tmp_path, saved_pipeline, monkeypatch, capsys, request):
    environment, extra, code, message = HOSTILE_ENV_CASES[case]
    for name in ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK"):  # no launcher here
        monkeypatch.delenv(name, raising=False)
    if "WORLD_SIZE" in environment:
        from accelerate.state import PartialState

        # accelerate keeps one state a process, and a failed start leaves its launcher variables set:
        # begin as a fresh command does, and leave nothing for the next test.
        PartialState._reset_state()
        saved = dict(os.environ)

        def fresh_again():
            PartialState._reset_state()
            for name in set(os.environ) - set(saved):
                del os.environ[name]
        request.addfinalizer(fresh_again)
    for name, value in environment.items():
        monkeypatch.setenv(name, value.replace("/nowhere", str(tmp_path / "nowhere")))
    extra = [a.replace("/nowhere", str(tmp_path / "nowhere")) for a in extra]
    args = ["restore", str(face_folder(tmp_path)), "-o", str(tmp_path / "out"), "--steps", "1"]
    args += [] if NO_MODEL in extra else ["--model", str(saved_pipeline)]
    try:
        got = main(args + [a for a in extra if a != NO_MODEL])
    except SystemExit as exit_info:  # argparse's own refusal
        got = exit_info.code
    captured = capsys.readouterr()
    shown = captured.out + captured.err
    assert got == code and re.search(message, shown), shown
    assert "Traceback" not in shown and captured.err.count("error:") == (code != 0)
    assert not (tmp_path / "nowhere").exists()  # nothing is created where a variable points


HOSTILE_SETTINGS_CASES = {
    "LPIPDIFF_MAX_WORK 0": ({"LPIPDIFF_MAX_WORK": "0"}, r"ServingSettings\.max_work must be a positive number"),
    "LPIPDIFF_MAX_WORK as a word": ({"LPIPDIFF_MAX_WORK": "lots"},
                                    r"\$LPIPDIFF_MAX_WORK must be a whole number, got 'lots'"),
    "LPIPDIFF_MAX_WORK 1e3": ({"LPIPDIFF_MAX_WORK": "1e3"}, r"\$LPIPDIFF_MAX_WORK must be a whole number, got '1e3'"),
    "LPIPDIFF_MAX_SECONDS nan": ({"LPIPDIFF_MAX_SECONDS": "nan"}, "max_seconds must be a positive number"),
    "LPIPDIFF_BACKEND unknown (demo)": ({"LPIPDIFF_BACKEND": "tensorrt"}, "backend must be one of"),
    "LPIPDIFF_MAX_SECONDS inf": ({"LPIPDIFF_MAX_SECONDS": "inf"}, "max_seconds must be a positive number"),
    "LPIPDIFF_MAX_SECONDS -5": ({"LPIPDIFF_MAX_SECONDS": "-5"}, "max_seconds must be a positive number"),
    "LPIPDIFF_MAX_WORK -1": ({"LPIPDIFF_MAX_WORK": "-1"}, "max_work must be a positive number"),
    "LPIPDIFF_DEVICE unknown (demo)": ({"LPIPDIFF_DEVICE": "gpu0"}, r"ServingSettings\.device: unknown device 'gpu0'"),
    "LPIPDIFF_FACEXLIB_WEIGHTS a missing folder (demo)": ({"LPIPDIFF_FACEXLIB_WEIGHTS": "/nowhere/weights"},
                                                          r"ServingSettings\.face_weights: /nowhere/weights: no such"),
}


@pytest.mark.parametrize("case", HOSTILE_SETTINGS_CASES)
def test_demo_settings_from_a_hostile_environment(case):
    from lpipdiff.serving.settings import ServingSettings

    environment, message = HOSTILE_SETTINGS_CASES[case]
    with pytest.raises(ValueError, match=message):
        ServingSettings.from_environment(environment)


# ---------------------------------------------------------------- the demo without its detector, and its work limit
def broken_detector_weights(folder: Path) -> Path:
    """What an offline Space without facexlib's weights (or with damaged ones) has: a detector that cannot load."""
    folder.mkdir(exist_ok=True)
    (folder / "detection_mobilenet0.25_Final.pth").write_bytes(b"not downloaded")
    return folder


def picture(folder: Path, name: str, side: tuple[int, int]) -> Path:
    from skimage import data

    image = PIL.Image.fromarray(data.astronaut()).resize(side, PIL.Image.LANCZOS)
    image.save(folder / name)
    return folder / name


NO_DETECTOR = "no face detector is available on this server"
HOSTILE_DEMO_CASES = {
    "Whole photo without a face detector": ("broken", dict(mode="Whole photo"), "error", NO_DETECTOR),
    "Auto, an aligned face, without a face detector": (
        "broken", dict(image="face"), "status",
        "No face detector is available here: restored the image as an aligned face"),
    "Auto, a wide photo, without a face detector": ("broken", dict(image="wide"), "error", NO_DETECTOR),
    "Aligned face without a face detector": ("broken", dict(image="face", mode="Aligned face"), "status",
                                             r"Restored 1 face\(s\)"),
    "upscale 4 of a 1500-pixel photo, 2 samples": (
        "shared", dict(image="large", upscale=4, samples=2), "error",
        r"this photo needs 864 units of work besides its faces \(pasting faces back at 4x: 288 a sample"),
    "upscale 4 of a 1500-pixel photo with the background upscaler": (
        "shared", dict(image="large", upscale=4, background=True), "error",
        r"upscaling its background: 292; pasting faces back at 4x: 288"),
    "upscale 4 of a 1500-pixel photo, 2 samples of 30 steps": (
        "shared", dict(image="large", upscale=4, samples=2, fidelity=0.0, steps=30), "error",
        "pasting faces back at 4x: 288 a sample"),
}


@pytest.mark.parametrize("case", HOSTILE_DEMO_CASES)
def test_hostile_demo_requests(case, tmp_path):
    import gradio as gr

    import app
    from lpipdiff.serving.service import RestorationService
    from lpipdiff.serving.settings import ServingSettings

    from conftest import FACE_WEIGHTS, skip_without_shared, tiny_pipeline

    weights, changes, kind, message = HOSTILE_DEMO_CASES[case]
    if weights == "shared":
        skip_without_shared()
    folder = FACE_WEIGHTS if weights == "shared" else broken_detector_weights(tmp_path / "weights")
    upscaler = upscaler_file("compact.safetensors")(tmp_path)  # its tiles count 1 a megapixel here
    settings = ServingSettings(face_weights=str(folder), bg_upsampler=str(upscaler), bg_work_per_megapixel=1,
                               max_work=1000)
    service = RestorationService(settings, tiny_pipeline(face_size=32, patch_size=16))
    images = {"face": (128, 128), "wide": (1200, 400), "large": (1500, 1500), "photo": (512, 512)}
    request = dict(image_path=str(picture(tmp_path, "upload.png", images[changes.pop("image", "photo")])),
                   mode="Auto", steps=1, fidelity=1.0, samples=1, upscale=1)
    request.update(changes)
    endpoint = app.restore_function(service, 5)
    if kind == "error":
        with pytest.raises(gr.Error, match=message) as raised:
            list(endpoint(**request, progress=lambda *args, **kwargs: None))
        assert str(tmp_path) not in str(raised.value)  # no server path on the page
        return
    *_, status = list(endpoint(**request, progress=lambda *args, **kwargs: None))[-1]
    assert re.search(message, status), status


# ---------------------------------------------------------------- train --resume from a damaged checkpoint
TINY_TRAINING = ["--face-size", "32", "--patch-size", "16", "--channels", "8,16", "--attention-levels", "1",
                 "--batch-size", "2", "--num-workers", "0", "--validate-every", "0"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, example_faces) -> Path:
    """One training step's checkpoint of a tiny model."""
    run = tmp_path_factory.mktemp("run")
    assert main(["train", "--data", str(example_faces), "--output", str(run / "out"), "--max-steps", "1",
                 *TINY_TRAINING]) == 0
    return run / "out" / "checkpoints" / "checkpoint-1"


class RunsCode:
    def __reduce__(self):
        return (print, ("this ran",))


def truncate(name: str):
    def damage(folder: Path) -> None:
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[: len(data) // 2])
    return damage


def replace_with(name: str, content):
    def damage(folder: Path) -> None:
        import torch

        path = folder / name
        path.write_bytes(content) if isinstance(content, bytes) else torch.save(content, path)
    return damage


HOSTILE_CHECKPOINT_CASES = {
    "a truncated model.safetensors": (truncate("model.safetensors"), r"the checkpoint cannot be loaded"),
    "a truncated optimizer.bin": (truncate("optimizer.bin"), r"the checkpoint cannot be loaded"),
    "garbage in place of the EMA": (replace_with("ema.pt", b"\x80\x04garbage"), "the checkpoint cannot be loaded"),
    "an EMA file holding code": (replace_with("ema.pt", {"shadow_params": RunsCode()}),
                                 r"the checkpoint cannot be loaded \(UnpicklingError"),
    "train_state.json not JSON": (replace_with("train_state.json", b"{step: 1"),
                                  r"the checkpoint cannot be loaded \(JSONDecodeError"),
    "train_state.json with a negative step": (replace_with("train_state.json", b'{"step": -3}'),
                                              "train_state.json holds the step -3"),
}


@pytest.mark.parametrize("case", HOSTILE_CHECKPOINT_CASES)
def test_train_resume_from_a_damaged_checkpoint(case, checkpoint, tmp_path, example_faces, capfd):
    import shutil

    damage, message = HOSTILE_CHECKPOINT_CASES[case]
    copy = tmp_path / "checkpoint-1"
    shutil.copytree(checkpoint, copy)
    damage(copy)
    code = main(["train", "--data", str(example_faces), "--output", str(tmp_path / "out"), "--max-steps", "2",
                 "--resume", str(copy), *TINY_TRAINING])
    err = capfd.readouterr()
    assert code == 2 and re.search(message, err.err), err.err
    assert err.err.count("error:") == 1 and "Traceback" not in err.err and "this ran" not in err.out
    assert f"--resume {copy}" in err.err


# ---------------------------------------------------------------- a full disk and a Ctrl-C, every command
def fails_on_second_save(error: BaseException):
    """``save_image`` that writes the first output and then raises ``error`` (a disk that fills up, a Ctrl-C)."""
    import lpipdiff.evaluation.pairs  # noqa: F401 - imported first by degrade, it would keep the failing one
    from lpipdiff.io import images

    real, calls = images.save_image, []

    def save(image, path, overwrite=False):
        calls.append(path)
        if len(calls) > 1:
            raise error
        return real(image, path, overwrite)
    return save


def no_space() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device")


HOSTILE_STOP_CASES = {
    "degrade: the disk fills up": (["degrade"], no_space(), 1, r"no space left on \S+; free some and rerun"),
    "restore: the disk quota is exceeded": (["restore"], OSError(errno.EDQUOT, "Disk quota exceeded"), 1,
                                            r"no space left on \S+"),
    "archive restore: the disk fills up": (["restore", "--archive"], no_space(), 1, r"no space left on \S+"),
    "restore: Ctrl-C": (["restore"], KeyboardInterrupt(), 130, r"interrupted; the files written so far are kept"),
    "archive restore: Ctrl-C": (["restore", "--archive"], KeyboardInterrupt(), 130, r"interrupted; the files written"),
    "degrade: Ctrl-C": (["degrade"], KeyboardInterrupt(), 130, r"interrupted; the files written so far are kept"),
}


@pytest.mark.parametrize("case", HOSTILE_STOP_CASES)
def test_a_run_stopped_half_way(case, tmp_path, saved_pipeline, monkeypatch, capsys):
    from lpipdiff.io import images

    command, error, code, message = HOSTILE_STOP_CASES[case]
    inputs, out = faces(tmp_path / "in", 3), tmp_path / "out"
    monkeypatch.setattr(images, "save_image", fails_on_second_save(error))
    args = [command[0], str(inputs), "-o", str(out), *command[1:]]
    args += ["--model", str(saved_pipeline), "--steps", "1"] if command[0] == "restore" else []
    assert main(args) == code
    err = capsys.readouterr().err
    assert re.search(message, err) and err.count("error:") == 1 and "Traceback" not in err, err
    assert len(list(out.glob("*.png"))) == 1 and not [p for p in out.iterdir() if p.name.endswith(".partial")]
    monkeypatch.undo()
    assert main(args) == (0 if "--archive" in command else 1)  # a plain rerun keeps the file it wrote
    assert len(list(out.glob("*.png"))) == 3


def test_a_manifest_part_cut_by_a_kill_resumes(tmp_path, saved_pipeline, capsys):
    inputs, out = faces(tmp_path / "in", 2), tmp_path / "out"
    (out / PARTS).mkdir(parents=True)
    (out / PARTS / "part-00000.jsonl").write_text('{"input": "' + str((inputs / "face0.png").resolve()) + '", "sta')
    assert restore(inputs, out, saved_pipeline, "--archive") == 0
    assert "damaged" not in capsys.readouterr().err  # an unfinished last line is a kill, not damage
    assert len(list(out.glob("*.png"))) == 2


def test_a_lock_file_left_by_a_killed_run_is_no_lock(tmp_path, saved_pipeline):
    from lpipdiff.cli.archive import LOCK

    inputs, out = faces(tmp_path / "in", 1), tmp_path / "out"
    out.mkdir()
    (out / LOCK).write_text("99999999\n")  # the process is gone, and with it its flock
    assert restore(inputs, out, saved_pipeline) == 0


# ---------------------------------------------------------------- named pipes and links where files are expected
def fifo_at(relative: str):
    def make(folder: Path) -> Path:
        path = folder / relative
        path.unlink(missing_ok=True)
        os.mkfifo(path)
        return folder
    return make


HOSTILE_FILE_CASES = {
    "model weights that are a named pipe": (fifo_at("unet/diffusion_pytorch_model.safetensors"),
                                            r"diffusion_pytorch_model\.safetensors: not a regular file"),
    "model_index.json a named pipe": (fifo_at("model_index.json"), r"model_index\.json: not a regular file"),
    "unet/config.json a named pipe": (fifo_at("unet/config.json"), r"config\.json: not a regular file"),
    "unet/model.onnx a named pipe": (fifo_at("unet/model.onnx"), r"model\.onnx: not a regular file"),
}


@pytest.mark.parametrize("case", HOSTILE_FILE_CASES)
def test_named_pipes_in_a_model_folder(case, saved_pipeline, tmp_path):
    import threading

    from lpipdiff.model.loading import ModelLoadError, load_pipeline

    make, message = HOSTILE_FILE_CASES[case]
    folder = make(saved_pipeline)
    outcome = []

    def load():
        try:
            load_pipeline(folder, device="cpu", backend="onnxruntime" if "onnx" in case else "torch",
                          cache_dir=tmp_path / "cache")
        except (ModelLoadError, ValueError) as error:
            outcome.append(error)

    if "onnx" in case:
        pytest.importorskip("onnxruntime")
    loader = threading.Thread(target=load, daemon=True)  # a read of a pipe would block for ever
    loader.start()
    loader.join(60)
    assert outcome and re.search(message, str(outcome[0])), outcome or "still waiting on the pipe"


def test_an_input_that_is_a_named_pipe_is_refused_and_the_rest_restored(tmp_path, saved_pipeline, capsys):
    inputs = faces(tmp_path / "in", 1)
    os.mkfifo(tmp_path / "pipe.png")
    assert restore([tmp_path / "pipe.png", inputs / "face0.png"], tmp_path / "out", saved_pipeline) == 1
    assert f"{tmp_path / 'pipe.png'}: not a regular file" in capsys.readouterr().err
    assert (tmp_path / "out" / "face0_restored.png").is_file()


def test_an_image_path_that_is_a_named_pipe(pipeline, tmp_path):
    from lpipdiff.io.images import InvalidImageError

    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(InvalidImageError, match="not a regular file"):
        pipeline(str(tmp_path / "pipe.png"), num_inference_steps=1)


def test_an_onnx_cache_folder_that_is_a_file_is_one_line(tmp_path, saved_pipeline, capsys):
    pytest.importorskip("onnxruntime")
    from lpipdiff.model.loading import ModelLoadError, load_pipeline

    (tmp_path / "cache").write_text("not a folder")
    with pytest.raises(ModelLoadError, match=r"cache: cannot keep the ONNX graph there"):
        load_pipeline(saved_pipeline, device="cpu", backend="onnxruntime", cache_dir=tmp_path / "cache")
    assert (tmp_path / "cache").read_text() == "not a folder"


def test_a_cached_graph_that_is_a_link_is_replaced_not_followed(tmp_path, saved_pipeline):
    pytest.importorskip("onnxruntime")
    from lpipdiff.model.backends import weights_hash
    from lpipdiff.model.loading import load_pipeline

    reference = load_pipeline(saved_pipeline, device="cpu", backend="torch")
    cache = tmp_path / "cache"
    cache.mkdir()
    theirs = tmp_path / "theirs.onnx"
    theirs.write_bytes(b"their own file")
    (cache / f"unet-{weights_hash(reference.unet)}.onnx").symlink_to(theirs)
    load_pipeline(saved_pipeline, device="cpu", backend="onnxruntime", cache_dir=cache)
    assert theirs.read_bytes() == b"their own file"
    assert not (cache / f"unet-{weights_hash(reference.unet)}.onnx").is_symlink()


# ---------------------------------------------------------------- links to devices, folders where files are expected
def link_to(relative: str, target: str):
    def make(folder: Path) -> Path:
        path = folder / relative
        path.unlink(missing_ok=True)
        path.symlink_to(target)
        return folder
    return make


def folder_at(relative: str):
    def make(folder: Path) -> Path:
        (folder / relative).unlink()
        (folder / relative).mkdir()
        return folder
    return make


HOSTILE_LINK_CASES = {
    "model weights a link to /dev/zero": (link_to("unet/diffusion_pytorch_model.safetensors", "/dev/zero"),
                                          r"diffusion_pytorch_model\.safetensors: not a regular file"),
    "model_index.json a link to /dev/urandom": (link_to("model_index.json", "/dev/urandom"),
                                                r"model_index\.json: not a regular file"),
    "scheduler config a link to /dev/zero": (link_to("scheduler/scheduler_config.json", "/dev/zero"),
                                             r"scheduler_config\.json: not a regular file"),
    "unet/config.json a folder": (folder_at("unet/config.json"), r"config\.json: a folder, not a file"),
}


@pytest.mark.parametrize("case", HOSTILE_LINK_CASES)
def test_links_and_folders_in_a_model_folder(case, saved_pipeline):
    from lpipdiff.model.loading import ModelLoadError, load_pipeline

    make, message = HOSTILE_LINK_CASES[case]
    with pytest.raises(ModelLoadError, match=message) as raised:
        load_pipeline(make(saved_pipeline), device="cpu", backend="torch")
    assert "\n" not in str(raised.value)


def test_an_input_linked_to_a_device_is_refused(tmp_path, saved_pipeline, capsys):
    (tmp_path / "zero.png").symlink_to("/dev/zero")
    assert restore([tmp_path / "zero.png"], tmp_path / "out", saved_pipeline) == 1
    assert f"{tmp_path / 'zero.png'}: not a regular file" in capsys.readouterr().err


def test_an_upscaler_linked_to_a_device_is_refused(tmp_path):
    from lpipdiff.faces.upscaler import UpscalerError, load_upscaler

    (tmp_path / "up.pth").symlink_to("/dev/zero")
    with pytest.raises(UpscalerError, match="up.pth: not a regular file"):
        load_upscaler(tmp_path / "up.pth")


# ---------------------------------------------------------------- concurrency: one model, many threads
def test_threads_sharing_one_pipeline_get_what_one_thread_gets(pipeline):
    from concurrent.futures import ThreadPoolExecutor

    from lpipdiff.model.sampling import SamplingOptions, restore_faces

    rng = np.random.default_rng(0)
    inputs = [rng.random((32, 32, 3)).astype(np.float32) for _ in range(4)]
    settings = [SamplingOptions(fidelity=0.5, steps=4, scheduler=name, seed=i)
                for i, name in enumerate(["ddim", "dpm", "unipc", "ddim"])]
    alone = [restore_faces(pipeline, face, options).images[0] for face, options in zip(inputs, settings)]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda pair: restore_faces(pipeline, *pair).images[0], zip(inputs, settings)))
    for one, other in zip(alone, together):
        np.testing.assert_allclose(one, other, atol=1e-5)


@pytest.mark.slow
def test_threads_sharing_one_face_restorer_get_what_one_thread_gets(photo_restorer):
    from concurrent.futures import ThreadPoolExecutor

    from skimage import data

    from lpipdiff.model.sampling import SamplingOptions

    photos = [data.astronaut(), np.ascontiguousarray(data.astronaut()[:, ::-1])]
    options = SamplingOptions(fidelity=None, steps=2)
    alone = [photo_restorer.restore(photo, options).image for photo in photos]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda photo: photo_restorer.restore(photo, options).image, photos))
    for one, other in zip(alone, together):
        np.testing.assert_allclose(one, other, atol=1 / 255)


# ---------------------------------------------------------------- a manifest tampered with between runs
def manifest_holding(content: bytes):
    def make(out: Path) -> None:
        with open(out / MANIFEST, "ab") as file:
            file.write(content)
    return make


def manifest_replaced(make_thing):
    def make(out: Path) -> None:
        (out / MANIFEST).unlink()
        make_thing(out / MANIFEST)
    return make


HOSTILE_MANIFEST_CASES = {
    "a manifest line nested 100000 deep": (manifest_holding(b"[" * 100000 + b"]" * 100000 + b"\n"), 0,
                                           r"1 damaged manifest record\(s\) skipped"),
    "a manifest of binary garbage": (manifest_holding(bytes(range(256)) * 4 + b"\n"), 0,
                                     r"damaged manifest record\(s\) skipped"),
    "a manifest record of another kind": (manifest_holding(b'{"input": {"a": 1}, "status": "done"}\n'), 0,
                                          r"1 damaged manifest record\(s\) skipped"),
    "a manifest that is a named pipe": (manifest_replaced(os.mkfifo), 2,
                                        "not a regular file where lpipdiff keeps its manifest"),
    "a manifest that is a folder": (manifest_replaced(Path.mkdir), 2,
                                    "not a regular file where lpipdiff keeps its manifest"),
}


@pytest.mark.parametrize("case", HOSTILE_MANIFEST_CASES)
def test_a_tampered_manifest(case, tmp_path, saved_pipeline, capsys):
    import threading

    make, code, message = HOSTILE_MANIFEST_CASES[case]
    inputs, out = faces(tmp_path / "in", 2), tmp_path / "out"
    assert restore(inputs, out, saved_pipeline, "--archive") == 0
    make(out)
    capsys.readouterr()
    result = []
    rerun = threading.Thread(target=lambda: result.append(restore(inputs, out, saved_pipeline, "--archive")),
                             daemon=True)  # reading a pipe would wait for ever
    rerun.start()
    rerun.join(120)
    err = capsys.readouterr().err
    assert result == [code] and re.search(message, err) and "Traceback" not in err, (result, err)


def test_a_full_disk_in_any_command_is_one_line(tmp_path, monkeypatch, capsys):
    from lpipdiff.evaluation import pairs

    def full(image, path, overwrite=False):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(pairs, "save_image", full)
    assert main(["degrade", str(faces(tmp_path / "in", 2)), "-o", str(tmp_path / "set"), "--test-set",
                 "--face-size", "32"]) == 1
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "no space left on the disk" in err and "Traceback" not in err


@pytest.mark.parametrize("upscale, lane", [(1, "light"), (2, "heavy")])
def test_an_upscaled_photo_never_holds_up_the_light_lane(tmp_path, upscale, lane):
    from lpipdiff.serving.service import RestorationService
    from lpipdiff.serving.settings import ServingSettings

    from conftest import FACE_WEIGHTS, skip_without_shared, tiny_pipeline

    skip_without_shared()
    service = RestorationService(ServingSettings(face_weights=str(FACE_WEIGHTS)),
                                 tiny_pipeline(face_size=32, patch_size=16))
    photo = picture(tmp_path, "photo.png", (256, 256))
    service.submit(service.request(str(photo), "Whole photo", steps=1, upscale=upscale)).result()
    assert [name for name, pool in service.lanes.items() if pool._threads] == [lane]


# ---------------------------------------------------------------- named pipes given as folders
HOSTILE_ARGUMENT_CASES = {
    "train --data a named pipe": (lambda pipe, out: ["train", "--data", pipe, "--output", out],
                                  r"argument --data: \S+: not a regular file \(a named pipe, device or socket\), "
                                  "not a folder"),
    "restore --face-weights a named pipe": (lambda pipe, out: ["restore", pipe, "-o", out, "--face-weights", pipe],
                                            r"argument --face-weights: \S+: not a regular file"),
    "evaluate --data a named pipe": (lambda pipe, out: ["evaluate", "--data", pipe, "--output", out],
                                     r"argument --data: \S+: not a regular file"),
}


@pytest.mark.parametrize("case", HOSTILE_ARGUMENT_CASES)
def test_named_pipes_as_folders(case, tmp_path, capsys):
    make, message = HOSTILE_ARGUMENT_CASES[case]
    os.mkfifo(tmp_path / "pipe.npz")
    with pytest.raises(SystemExit) as exit_info:
        main(make(str(tmp_path / "pipe.npz"), str(tmp_path / "out")))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and re.search(message, err), err
    assert not (tmp_path / "out").exists()


def test_threads_exporting_one_cached_graph_at_once_each_get_a_whole_one(tmp_path):
    pytest.importorskip("onnxruntime")
    from concurrent.futures import ThreadPoolExecutor

    from lpipdiff.model.backends import export_onnx_cached, graph_weights, weights_hash

    from conftest import tiny_unet

    unets = [tiny_unet() for _ in range(3)]  # the same weights (seeded), exported three times at once
    with ThreadPoolExecutor(3) as pool:
        paths = list(pool.map(lambda unet: export_onnx_cached(unet, tmp_path / "cache"), unets))
    assert len(set(paths)) == 1 and graph_weights(paths[0]) == weights_hash(unets[0])
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [paths[0].name]  # no part file left


def test_threads_downloading_one_upscaler_at_once_each_get_it(served_upscaler, tmp_path, monkeypatch):
    import io
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from lpipdiff.faces import upscaler

    release = Path(served_upscaler.url.removeprefix("file://")).read_bytes()
    barrier = threading.Barrier(2)

    class SlowDownload(io.BytesIO):
        """The release, read in two halves with a pause between: both threads are mid-download at once."""

        def __enter__(self):
            return self

        def read(self, size=-1):
            if self.tell() == 0:
                barrier.wait(5)
                return super().read(len(release) // 2)
            time.sleep(0.2)
            return super().read(size)

    monkeypatch.setattr(upscaler.urllib.request, "urlopen", lambda url, timeout=None: SlowDownload(release))
    with ThreadPoolExecutor(2) as pool:
        loaded = list(pool.map(lambda _: upscaler.load_upscaler("test-x2", cache_dir=tmp_path / "cache"), range(2)))
    assert [up.scale for up in loaded] == [2, 2]
    cached = tmp_path / "cache" / served_upscaler.sha256[:16]
    assert [p.name for p in cached.iterdir()] == [served_upscaler.filename]  # no partial download left


def test_the_hostile_tables_hold_at_least_40_cases():
    tables = [value for name, value in globals().items() if name.startswith("HOSTILE_") and name.endswith("_CASES")]
    assert sum(len(table) for table in tables) >= 40
