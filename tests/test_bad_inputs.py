"""Bad input, table-driven, through every door: the Python API (the pipeline), ``FaceRestorer``,
the CLI and the demo's request function. Each case gets one clear message (a typed error in
Python, one ``error:`` line and exit status in the CLI, a ``gr.Error`` in the demo), never a
crash, a hang or a silently wrong result."""

from __future__ import annotations

import io
import json
import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from skimage import data

from lpipdiff.cli.commands import main
from lpipdiff.faces.restorer import FaceRestorer, NoFaceError
from lpipdiff.io.images import InvalidImageError, load_image_file, to_rgb_array
from lpipdiff.model.loading import ModelLoadError, load_pipeline
from lpipdiff.model.sampling import SamplingOptions
from lpipdiff.serving.service import RestorationService
from lpipdiff.serving.settings import ServingSettings

from conftest import EXAMPLES, FACE_WEIGHTS, face_restorer, skip_without_shared, tiny_pipeline

ROOT = Path(__file__).resolve().parents[1]
FACE = ROOT / "examples" / "astronaut_face_moderate.png"


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A tiny PNG file that claims ``width`` x ``height`` pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Bad files of every kind, made once."""
    folder = tmp_path_factory.mktemp("bad")
    text = folder / "letter.png"
    text.write_text("Dear Sir, this is not an image.")
    empty = folder / "empty.jpg"
    empty.touch()
    truncated = folder / "truncated.jpg"
    whole = io.BytesIO()
    PIL.Image.open(EXAMPLES / "astronaut_face_severe.png").convert("RGB").save(whole, "JPEG")
    truncated.write_bytes(whole.getvalue()[:900])
    (folder / "a_folder.png").mkdir()
    return {
        "text": text,
        "empty": empty,
        "truncated": truncated,
        "bomb": png_header_only(folder / "bomb.png", 20000, 20000),
        "folder": folder / "a_folder.png",
        "missing": folder / "missing.png",
    }


# ---------------------------------------------------------------- the Python API
API_CASES = {
    "text file": (lambda f: f["text"], {}, InvalidImageError, "not a readable image"),
    "empty file": (lambda f: f["empty"], {}, InvalidImageError, "empty"),
    "truncated JPEG": (lambda f: f["truncated"], {}, InvalidImageError, "not a readable image"),
    "20000x20000 PNG": (lambda f: f["bomb"], {}, InvalidImageError, "too large"),
    "folder as image": (lambda f: str(f["folder"]), {}, InvalidImageError, "is a folder"),
    "missing path": (lambda f: str(f["missing"]), {}, InvalidImageError, "no such file"),
    "None": (lambda f: None, {}, InvalidImageError, "no image"),
    "empty list": (lambda f: [], {}, InvalidImageError, "empty list"),
    "empty batch tensor": (lambda f: torch.zeros(0, 3, 32, 32), {}, InvalidImageError, "empty batch"),
    "NaN array": (lambda f: np.full((32, 32, 3), np.nan, np.float32), {}, InvalidImageError, "NaN"),
    "float out of range": (lambda f: np.full((32, 32, 3), 2.0, np.float32), {}, InvalidImageError, r"\[0, 1\]"),
    "CHW numpy array": (lambda f: np.zeros((3, 32, 32), np.float32), {}, InvalidImageError, "HxW"),
    "int64 pixels": (lambda f: np.zeros((32, 32, 3), np.int64), {}, InvalidImageError, "pixel type"),
    "2-channel tensor": (lambda f: torch.zeros(2, 32, 32), {}, InvalidImageError, "channels"),
    "a dict": (lambda f: {"image": 1}, {}, InvalidImageError, "expected a file path"),
    "steps 1.5": (lambda f: FACE, {"num_inference_steps": 1.5}, ValueError, "whole number"),
    "steps 0": (lambda f: FACE, {"num_inference_steps": 0}, ValueError, "num_inference_steps"),
    "steps 10**6": (lambda f: FACE, {"num_inference_steps": 10**6}, ValueError, "from 1 to 1000"),
    "strength 0": (lambda f: FACE, {"strength": 0.0}, ValueError, "strength"),
    "strength text": (lambda f: FACE, {"strength": "high"}, ValueError, "strength"),
    "stride 0": (lambda f: FACE, {"patch_stride": 0}, ValueError, "patch_stride"),
    "stride 1 (hours of work)": (lambda f: FACE, {"patch_stride": 1}, ValueError, "from 2 to the patch size"),
    "stride beyond the patch": (lambda f: FACE, {"patch_stride": 40}, ValueError, "patch_stride"),
    "unet_batch_size 0": (lambda f: FACE, {"unet_batch_size": 0}, ValueError, "unet_batch_size"),
    "unet_batch_size -1": (lambda f: FACE, {"unet_batch_size": -1}, ValueError, "unet_batch_size"),
    "unknown fusion": (lambda f: FACE, {"fusion": "median"}, ValueError, "fusion"),
    "unknown output_type": (lambda f: FACE, {"output_type": "jpg"}, ValueError, "output_type"),
    "generators for another batch": (lambda f: FACE, {"generator": [torch.Generator()] * 2}, ValueError, "generators"),
    "unknown callback tensor": (lambda f: FACE, {"callback_on_step_end_tensor_inputs": ["latents"]}, ValueError,
                                "callback_on_step_end_tensor_inputs"),
}


@pytest.mark.parametrize("case", API_CASES)
def test_api(case, files, pipeline):
    make, kwargs, error, message = API_CASES[case]
    with pytest.raises(error, match=message):
        pipeline(make(files), **kwargs)


MODEL_CASES = {
    "missing folder": (lambda tmp, saved: tmp / "nowhere", "no such model folder"),
    "a file": (lambda tmp, saved: FACE, "is a file"),
    "folder without model_index.json": (lambda tmp, saved: tmp, "no model_index.json"),
    "pickled weights only": (lambda tmp, saved: pickled_only(saved), r"only pickled weights \(diffusion_pytorch_model"
                                                                   r"\.bin\), which are refused on purpose"),
}


def pickled_only(folder: Path) -> Path:
    from safetensors.torch import load_file

    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(weights), folder / "unet" / "diffusion_pytorch_model.bin")
    weights.unlink()
    return folder


@pytest.mark.parametrize("case", MODEL_CASES)
def test_wrong_model_folder(case, tmp_path, saved_pipeline):
    make, message = MODEL_CASES[case]
    with pytest.raises(ModelLoadError, match=message):
        load_pipeline(make(tmp_path, saved_pipeline))


# ---------------------------------------------------------------- FaceRestorer
@pytest.fixture(scope="module")
def restorer():
    return face_restorer(tiny_pipeline(face_size=32, patch_size=16))


@pytest.fixture(scope="module")
def photo():
    return data.astronaut()  # uint8 RGB, one face of about 110 px


def restore(restorer, image, **kwargs):
    return restorer.restore(image, sampling=SamplingOptions(fidelity=None, steps=1), **kwargs).image


@pytest.fixture(scope="module")
def reference(restorer, photo):
    return restore(restorer, photo.astype(np.float32) / 255)


SAME_AS_FLOAT_RGB = {
    "uint8 array": lambda p: p,
    "RGBA array": lambda p: np.dstack([p, np.full(p.shape[:2], 255, np.uint8)]),
    "uint16 array": lambda p: p.astype(np.uint16) * 257,
    "PIL image": lambda p: PIL.Image.fromarray(p),
    "CHW tensor": lambda p: torch.from_numpy(p).permute(2, 0, 1).float() / 255,
}


@pytest.mark.slow
@pytest.mark.parametrize("case", SAME_AS_FLOAT_RGB)
def test_face_restorer_takes_what_the_pipeline_takes(case, restorer, photo, reference):
    """Once scrambled colours (RGBA), 'no face found' (uint8, PIL) or a crash (tensors): now the same result."""
    np.testing.assert_allclose(restore(restorer, SAME_AS_FLOAT_RGB[case](photo)), reference, atol=2 / 255)


@pytest.mark.slow
def test_face_restorer_keeps_grayscale_the_right_way_round(restorer, photo):
    gray = np.asarray(PIL.Image.fromarray(photo).convert("L"))
    restored = restore(restorer, gray)
    as_rgb = restore(restorer, np.repeat(gray[..., None], 3, axis=2))
    np.testing.assert_allclose(restored, as_rgb, atol=1 / 255)  # once mirrored left-right


@pytest.mark.slow
def test_face_restorer_takes_a_path(restorer, photo, reference, tmp_path):
    PIL.Image.fromarray(photo).save(tmp_path / "photo.png")
    np.testing.assert_allclose(restore(restorer, str(tmp_path / "photo.png")), reference, atol=2 / 255)


RESTORER_ERRORS = {
    "NaN photo": (lambda p: np.full((64, 64, 3), np.nan, np.float32), {}, InvalidImageError, "NaN"),
    "a list of photos": (lambda p: [p, p], {}, InvalidImageError, "one photo at a time"),
    "no face": (lambda p: np.full((200, 300, 3), 128, np.uint8), {}, NoFaceError, "no face found"),
    "sampling settings as a dict": (lambda p: p, {"sampling": {"steps": 2}}, TypeError, "SamplingOptions"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", RESTORER_ERRORS)
def test_face_restorer_errors(case, restorer, photo):
    make, kwargs, error, message = RESTORER_ERRORS[case]
    with pytest.raises(error, match=message):
        restorer.restore(make(photo), **kwargs)


@pytest.mark.slow
def test_face_restorer_bounds_the_output_size():
    big = face_restorer(tiny_pipeline(face_size=32, patch_size=16), upscale=8)
    with pytest.raises(InvalidImageError, match="megapixels"):
        big.restore(np.zeros((1200, 1200, 3), np.uint8))


@pytest.mark.slow
def test_one_face_is_found_once_in_a_large_photo(restorer, photo):
    """A 3000-pixel version of the photo: detection runs downscaled, and overlapping detections merge."""
    large = np.asarray(PIL.Image.fromarray(photo).resize((3000, 3000), PIL.Image.LANCZOS))
    result = restorer.restore(large, SamplingOptions(fidelity=None, steps=1))
    assert result.faces_found == len(result.faces) == 1


# ---------------------------------------------------------------- the CLI
CLI_CASES = {
    "text file": (lambda f: [f["text"]], "not a readable image"),
    "truncated JPEG": (lambda f: [f["truncated"]], "not a readable image"),
    "20000x20000 PNG": (lambda f: [f["bomb"]], "too large"),
    "missing file": (lambda f: [f["missing"]], "no such file or folder"),
    "empty file": (lambda f: [f["empty"]], "empty"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_reports_a_bad_file_and_restores_the_rest(case, files, saved_pipeline, tmp_path, capsys):
    """The good face after the bad file is restored (a bomb once dropped the rest of the batch)."""
    make, message = CLI_CASES[case]
    inputs = [str(p) for p in make(files)] + [str(FACE)]
    assert main(["restore", *inputs, "-o", str(tmp_path / "out"), "--model", str(saved_pipeline)]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert (tmp_path / "out" / "astronaut_face_moderate_restored.png").is_file()


CLI_ARGUMENT_CASES = {
    "seed 2**70": (["--seed", str(2**70)], "2**62"),
    "negative seed": (["--seed", "-1"], "2**62"),
    "steps 1.5": (["--steps", "1.5"], "invalid int value"),
    "unknown fusion": (["--fusion", "median"], "invalid choice"),
    "unknown scheduler": (["--scheduler", "euler"], "invalid choice"),
}


@pytest.mark.parametrize("case", CLI_ARGUMENT_CASES)
def test_cli_refuses_bad_arguments(case, tmp_path, capsys):
    extra, message = CLI_ARGUMENT_CASES[case]
    with pytest.raises(SystemExit) as exit_info:
        main(["restore", str(FACE), "-o", str(tmp_path), *extra])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.slow
def test_cli_stride_of_zero_is_an_error_not_the_default(tmp_path, saved_pipeline, capsys):
    # Refused with the arguments (exit 2), before any model loads or file is read.
    assert main(["restore", str(FACE), "-o", str(tmp_path), "--model", str(saved_pipeline), "--stride", "0"]) == 2
    assert "stride must be a whole number of at least 1, got 0" in capsys.readouterr().err


def test_cli_checks_the_output_folder_before_any_model_runs(tmp_path, capsys):
    a_file = tmp_path / "taken.txt"
    a_file.write_text("mine")
    # --model names nothing loadable: the folder check must come first to be seen at all.
    assert main(["restore", str(FACE), "-o", str(a_file), "--model", str(tmp_path / "no-model")]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
    assert main(["restore", str(FACE), "-o", str(a_file / "below"), "--model", str(tmp_path / "no-model")]) == 2
    assert "cannot create the output folder" in capsys.readouterr().err
    assert a_file.read_text() == "mine"


@pytest.mark.slow
def test_cli_never_overwrites_without_being_asked(tmp_path, saved_pipeline, capsys):
    out = tmp_path / "out"
    out.mkdir()
    mine = out / "astronaut_face_moderate_restored.png"
    mine.write_bytes(b"my own file")
    assert main(["restore", str(FACE), "-o", str(out), "--model", str(saved_pipeline)]) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err and mine.read_bytes() == b"my own file"
    assert main(["restore", str(FACE), "-o", str(out), "--model", str(saved_pipeline), "--overwrite"]) == 0
    assert PIL.Image.open(mine).size == (128, 128)


def test_degrade_never_overwrites_without_being_asked(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["degrade", str(FACE), "-o", str(out)]) == 0
    first = (out / "astronaut_face_moderate_moderate.png").read_bytes()
    assert main(["degrade", str(FACE), "-o", str(out), "--seed", "1"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "astronaut_face_moderate_moderate.png").read_bytes() == first


# ---------------------------------------------------------------- the demo
@pytest.fixture(scope="module")
def demo_restore():
    """The demo's endpoint function, on a tiny model (no server: the function is called directly)."""
    import app

    skip_without_shared()  # Auto mode looks for faces first: facexlib's detector weights
    settings = ServingSettings(face_weights=str(FACE_WEIGHTS))
    service = RestorationService(settings, pipeline=tiny_pipeline(face_size=32, patch_size=16))

    def restore(**request):
        return list(app.restore_function(service, 5)(**request, progress=lambda *args, **kwargs: None))

    return restore


DEMO_CASES = {
    "no upload": (dict(image_path=None), "upload an image first"),
    "an empty upload": (dict(image_path="empty"), r"empty\.jpg: the file is empty"),
    "not an image, without the server's path": (dict(image_path="text"), r"letter\.png: not a readable image"),
    "20000x20000 PNG": (dict(image_path="bomb"), "too large"),
    "51 steps": (dict(steps=51), "steps must be"),
    "5 samples": (dict(samples=5), "samples"),
    "seed 2**70": (dict(seed=2**70), "2\\*\\*62"),
    "seed 1.5": (dict(seed=1.5), "2\\*\\*62"),
    "unknown scheduler": (dict(scheduler="euler"), "scheduler must be one of"),
    "stride 1": (dict(stride=1), "patch_stride"),
    "over the work limit": (dict(steps=50, samples=4, stride=4), "more than the .* allowed"),
    "no face in a wide photo (Auto)": (dict(image_path="wide"), "no face found"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", DEMO_CASES)
def test_demo(case, demo_restore, files, tmp_path):
    import gradio as gr

    wide = tmp_path / "wide.png"
    PIL.Image.fromarray(np.full((400, 1200, 3), 90, np.uint8)).save(wide)
    request = dict(image_path=str(FACE), mode="Auto", steps=1, scheduler="ddim", strength=1.0, stride=8, seed=0,
                   samples=1, detail=1.0, fidelity=0.3)
    changes, message = DEMO_CASES[case]
    request.update(changes)
    if request["image_path"] in ("text", "bomb", "empty"):
        request["image_path"] = str(files[request["image_path"]])
    elif request["image_path"] == "wide":
        request["image_path"] = str(wide)
    with pytest.raises(gr.Error, match=message) as raised:
        demo_restore(**request)
    assert str(files["text"].parent) not in str(raised.value)  # no server paths in the page


# ================================================================ inputs that once failed
# Each dict below is part of one table of cases that were a traceback, a silently wrong result
# or a lost file before; NEW_CASE_TABLES counts them (at least 40).
def rgb_profile(red, green, blue, gamma=2.2, name=b"test RGB") -> bytes:
    """A minimal ICC v2 matrix/TRC RGB display profile with the given D50 primaries (XYZ) and gamma."""
    def s15(value):
        return struct.pack(">i", round(value * 65536))

    def xyz(values):
        return b"XYZ " + b"\0" * 4 + b"".join(s15(v) for v in values)

    curve = b"curv" + b"\0" * 4 + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"
    desc = b"desc" + b"\0" * 4 + struct.pack(">I", len(name) + 1) + name + b"\0" + b"\0" * 78
    desc += b"\0" * (-len(desc) % 4)
    tags = [(b"desc", desc), (b"wtpt", xyz((0.9642, 1.0, 0.8249))), (b"rXYZ", xyz(red)), (b"gXYZ", xyz(green)),
            (b"bXYZ", xyz(blue)), (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    offset = 128 + 4 + 12 * len(tags)
    table, body = struct.pack(">I", len(tags)), b""
    for signature, content in tags:
        table += signature + struct.pack(">II", offset + len(body), len(content))
        body += content
    header = (struct.pack(">I", offset + len(body)) + b"\0" * 4 + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ "
              + b"\0" * 12 + b"acsp" + b"\0" * 28 + s15(0.9642) + s15(1.0) + s15(0.8249) + b"\0" * 48)
    return header + table + body


# sRGB's primaries adapted to D50, and the same with red and green swapped.
SRGB_PRIMARIES = ((0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141))
SWAPPED_PRIMARIES = (SRGB_PRIMARIES[1], SRGB_PRIMARIES[0], SRGB_PRIMARIES[2])


def red_over_blue_stored_sideways(path: Path) -> Path:
    """A JPEG stored 40 wide and 20 high, left half red and right half blue, whose EXIF Orientation
    (6: rotate 90 degrees clockwise to view) makes it 20 wide and 40 high, red on top."""
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = (220, 20, 20)
    stored[:, 20:] = (20, 20, 220)
    image = PIL.Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(path, quality=95, exif=exif)
    return path


def assert_upright(array: np.ndarray) -> None:
    assert array.shape[:2] == (40, 20)
    top, bottom = array[:16].mean(axis=(0, 1)), array[24:].mean(axis=(0, 1))
    assert top[0] > 0.6 > top[2] and bottom[2] > 0.6 > bottom[0]


@pytest.fixture(scope="module")
def odd_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("odd")
    frames = [PIL.Image.fromarray(np.full((32, 32, 3), value, np.uint8)) for value in (0, 128, 255)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    frames[0].save(folder / "animated.webp", save_all=True, append_images=frames[1:], duration=100)
    PIL.Image.fromarray(np.full((32, 32, 3), 100, np.uint8)).save(folder / "bad_profile.png", icc_profile=b"nonsense")
    return {"gif": folder / "animated.gif", "webp": folder / "animated.webp",
            "bad_profile": folder / "bad_profile.png", "sideways": red_over_blue_stored_sideways(folder / "side.jpg")}


def callback_returning(value):
    return lambda pipe, step, timestep, kwargs: value(kwargs) if callable(value) else value


NEW_API_CASES = {
    "an int as generator": ({"generator": 0}, TypeError, r"torch\.Generator\(\)\.manual_seed\(0\)"),
    "a string as generator": ({"generator": "seed"}, TypeError, "must be a torch.Generator"),
    "a list holding an int generator": ({"generator": [7]}, TypeError, "torch.Generator objects only"),
    "a step callback returning None": ({"callback_on_step_end": callback_returning(None)}, TypeError,
                                       "must return a dict"),
    "a step callback returning a wrong-shaped sample": (
        {"callback_on_step_end": callback_returning({"sample": torch.zeros(1, 3, 8, 8)})}, ValueError,
        r"'sample' of \(1, 3, 8, 8\); it must be a tensor of shape \(1, 3, 32, 32\)"),
    "a step callback returning a number as sample": (
        {"callback_on_step_end": callback_returning({"sample": 0.5})}, ValueError, "'sample' of float"),
    "a step callback returning an integer sample": (
        {"callback_on_step_end": callback_returning(lambda kw: {"sample": kw["sample"].long()})}, ValueError,
        "dtype torch.int64"),
    "fidelity NaN": ({"fidelity": float("nan")}, ValueError, r"fidelity must be a number in \[0, 1\]"),
    "fidelity 1.5": ({"fidelity": 1.5}, ValueError, r"fidelity must be a number in \[0, 1\]"),
    "fidelity as text": ({"fidelity": "0.3"}, ValueError, "fidelity must be a number"),
    "strength NaN": ({"fidelity": None, "strength": float("nan")}, ValueError, "strength"),
    "steps as text": ({"num_inference_steps": "10"}, ValueError, "whole number"),
    "steps True": ({"num_inference_steps": True}, ValueError, "whole number"),
    "stride 8.0 (a float)": ({"patch_stride": 8.0}, ValueError, "patch_stride"),
    "unet_batch_size 2.5": ({"unet_batch_size": 2.5}, ValueError, "unet_batch_size"),
}


@pytest.mark.parametrize("case", NEW_API_CASES)
def test_new_api_arguments(case, pipeline):
    kwargs, error, message = NEW_API_CASES[case]
    with pytest.raises(error, match=message):
        pipeline(np.full((32, 32, 3), 0.5, np.float32), num_inference_steps=kwargs.pop("num_inference_steps", 2),
                 **kwargs)


NEW_IMAGE_CASES = {
    "an animated GIF": (lambda f: f["gif"], "animated or multi-page image \\(3 frames\\)"),
    "an animated WebP": (lambda f: f["webp"], "animated or multi-page image \\(3 frames\\)"),
    "an animated GIF opened with PIL": (lambda f: PIL.Image.open(f["gif"]), "animated"),
    "an unusable colour profile": (lambda f: f["bad_profile"], "embedded colour profile cannot be used"),
    "a bool array": (lambda f: np.zeros((32, 32, 3), bool), "pixel type"),
    "a complex array": (lambda f: np.zeros((32, 32, 3), np.complex64), "pixel type"),
    "a 4x4 image": (lambda f: np.zeros((4, 4, 3), np.uint8), "too small"),
    "a 5-channel array": (lambda f: np.zeros((32, 32, 5), np.float32), "HxW"),
    "a 0-d tensor": (lambda f: torch.tensor(1.0), "CxHxW"),
    "an infinite tensor": (lambda f: torch.full((3, 32, 32), float("inf")), "NaN or infinite"),
    "a tensor with no pixels": (lambda f: torch.zeros(3, 0, 32), "empty"),
    "bytes": (lambda f: b"\x89PNG", "expected a file path"),
}


@pytest.mark.parametrize("case", NEW_IMAGE_CASES)
def test_new_images(case, pipeline, odd_files):
    make, message = NEW_IMAGE_CASES[case]
    with pytest.raises(InvalidImageError, match=message):
        pipeline(make(odd_files), num_inference_steps=1)


FFHQ_TEMPLATE_IN_PIXELS = np.array([[193.0, 240.0], [319.0, 240.0], [257.0, 314.0], [201.0, 371.0], [313.0, 371.0]])
NEW_RESTORER_CASES = {
    "template of 4 points": ({"template": np.zeros((4, 2))}, "5x2 array"),
    "template of an unknown name": ({"template": "celeba"}, "template must be one of"),
    "template with NaN": ({"template": np.full((5, 2), np.nan)}, "finite numbers in \\[0, 1\\]"),
    "template in pixels": ({"template": FFHQ_TEMPLATE_IN_PIXELS}, "finite numbers in \\[0, 1\\]"),
    "template of one point repeated": ({"template": [[0.5, 0.5]] * 5}, "one line"),
    "template a dict": ({"template": {"eyes": 1}}, "5x2"),
    "upscale as text": ({"upscale": "2"}, "upscale must be a number"),
    "upscale 0.5": ({"upscale": 0.5}, "upscale must be a number in \\[1, 8\\]"),
    "upscale NaN": ({"upscale": float("nan")}, "upscale must be a number"),
    "detail -1": ({"detail": -1}, "detail must be a number in"),
    "min_face_size -5": ({"min_face_size": -5}, "min_face_size must be a number in"),
    "unknown detector": ({"detector": "yolo"}, "detector must be one of"),
    "only_largest as text": ({"only_largest": "yes"}, "only_largest must be True or False"),
}


@pytest.mark.parametrize("case", NEW_RESTORER_CASES)
def test_new_face_restorer_settings(case, pipeline):
    kwargs, message = NEW_RESTORER_CASES[case]
    with pytest.raises(ValueError, match=message):
        FaceRestorer(pipeline, **kwargs)


def test_face_restorer_detail_of_a_call_is_checked(restorer, photo):
    with pytest.raises(ValueError, match="detail must be a number in"):
        restorer.restore(photo, detail=5)


class NotATensor:
    pass


def detector_weights(folder: Path, payload) -> Path:
    folder.mkdir()
    target = folder / "detection_mobilenet0.25_Final.pth"
    if isinstance(payload, bytes):
        target.write_bytes(payload)
    else:
        torch.save(payload, target)
    return folder


NEW_DETECTOR_CASES = {
    "a pickle holding code, not tensors": {"weights": NotATensor()},
    "an empty weights file": b"",
    "a text file as weights": b"these are not weights",
    "tensors of another network": {"conv.weight": torch.zeros(3, 3)},
}


DETECTOR_MESSAGE = "mobilenet face detector's weights in .* cannot be used"


@pytest.mark.parametrize("case", NEW_DETECTOR_CASES)
def test_new_detector_weights(case, pipeline, tmp_path):
    folder = detector_weights(tmp_path / "weights", NEW_DETECTOR_CASES[case])
    with pytest.raises(OSError, match=DETECTOR_MESSAGE) as raised:
        FaceRestorer(pipeline, weights_dir=folder)
    assert "\n" not in str(raised.value)


def break_weights(change):
    def apply(folder: Path) -> Path:
        from safetensors.torch import load_file, save_file

        path = folder / "unet" / "diffusion_pytorch_model.safetensors"
        state = load_file(path)
        change(state)
        save_file(state, path)
        return folder
    return apply


def edit_json(relative: str, change):
    def apply(folder: Path) -> Path:
        path = folder / relative
        config = json.loads(path.read_text())
        result = change(config)
        path.write_text(result if isinstance(result, str) else json.dumps(config))
        return folder
    return apply


def replace_file(relative: str, content: bytes):
    def apply(folder: Path) -> Path:
        (folder / relative).write_bytes(content)
        return folder
    return apply


def first_key(state):
    return sorted(state)[0]


def set_value(key, value):
    def change(config):
        config[key] = value
    return change


NEW_MODEL_CASES = {
    "NaN weights": (break_weights(lambda s: s[first_key(s)].fill_(float("nan"))), "NaN or infinite"),
    "infinite weights": (break_weights(lambda s: s[first_key(s)].fill_(float("inf"))), "NaN or infinite"),
    "a missing tensor": (break_weights(lambda s: s.pop(first_key(s))), r"missing 1 tensor\(s\)"),
    "an extra tensor": (break_weights(lambda s: s.update(extra=torch.zeros(2))), r"1 unexpected tensor\(s\) \(extra\)"),
    "a tensor of the wrong shape": (break_weights(lambda s: s.update({first_key(s): torch.zeros(1, 2, 3)})),
                                    r"has shape \(1, 2, 3\); the config needs"),
    "integer weights": (break_weights(lambda s: s.update({first_key(s): s[first_key(s)].long()})), "torch.int64"),
    "safetensors header claiming 2**60 bytes": (
        replace_file("unet/diffusion_pytorch_model.safetensors", struct.pack("<Q", 2**60) + b"{}"),
        "not a safetensors file"),
    "face_size as text": (edit_json("unet/config.json", set_value("face_size", "128")), "'face_size' must be"),
    "face_size 0": (edit_json("unet/config.json", set_value("face_size", 0)), "'face_size' must be"),
    "face_size 10**9": (edit_json("unet/config.json", set_value("face_size", 10**9)), "from 8 to 4096"),
    "face_size 32.5": (edit_json("unet/config.json", set_value("face_size", 32.5)), "'face_size' must be"),
    "face_size true": (edit_json("unet/config.json", set_value("face_size", True)), "'face_size' must be"),
    "no face_size": (edit_json("unet/config.json", lambda c: c.pop("face_size")), "'face_size' is missing"),
    "patch_size beyond face_size": (edit_json("unet/config.json", set_value("patch_size", 64)), "'patch_size'"),
    "patch_size the UNet cannot halve": (edit_json("unet/config.json", set_value("patch_size", 15)), "divisible"),
    "residual as text": (edit_json("unet/config.json", set_value("residual", "yes")), "'residual' must be true"),
    "residual_scale NaN": (edit_json("unet/config.json", set_value("residual_scale", float("nan"))),
                           "'residual_scale' must be a positive number"),
    "a block type of another model": (edit_json("unet/config.json", set_value("down_block_types",
                                                                             ["CrossAttnDownBlock2D", "DownBlock2D"])),
                                      "'down_block_types' must be"),
    "a UNet of another class": (edit_json("model_index.json", set_value("unet", ["diffusers", "UNet2DModel"])),
                                "'unet' is diffusers.UNet2DModel"),
    "a scheduler of another library": (edit_json("model_index.json", set_value("scheduler", ["evil", "Loader"])),
                                       "'scheduler' is evil.Loader"),
    "an extra component": (edit_json("model_index.json", set_value("vae", ["diffusers", "AutoencoderKL"])),
                           "components an LPIP-Diff pipeline does not have: vae"),
    "a pipeline of another class": (edit_json("model_index.json", set_value("_class_name", "StableDiffusionPipeline")),
                                    "not LPIPDiffPipeline"),
    "model_index.json not closed": (edit_json("model_index.json", lambda c: '{"unet": ["lpipdiff.model.unet", '),
                                    "model_index.json: not valid JSON"),
    "model_index.json nested 100000 deep": (edit_json("model_index.json", lambda c: "[" * 100000 + "]" * 100000),
                                            "nested too deeply"),
    "model_index.json a list": (edit_json("model_index.json", lambda c: "[]"), "expected a JSON object, got list"),
    "model_index.json of 2 MB": (edit_json("model_index.json", lambda c: json.dumps({**c, "_pad": "x" * 2_000_000})),
                                 "far too large"),
    "unet config not UTF-8": (replace_file("unet/config.json", b"\xff\xfe{"), "not UTF-8"),
    "scheduler prediction_type x0": (edit_json("scheduler/scheduler_config.json", set_value("prediction_type", "x0")),
                                     "'prediction_type' must be one of"),
    "scheduler with -1 timesteps": (edit_json("scheduler/scheduler_config.json",
                                              set_value("num_train_timesteps", -1)), "'num_train_timesteps' must be"),
}


@pytest.mark.parametrize("case", NEW_MODEL_CASES)
def test_new_broken_models(case, saved_pipeline):
    make, message = NEW_MODEL_CASES[case]
    with pytest.raises(ModelLoadError, match=message) as raised:
        load_pipeline(make(saved_pipeline))
    assert str(saved_pipeline) in str(raised.value)  # the message names the file


@pytest.fixture(scope="module")
def folders(tmp_path_factory, example_faces) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("cli")
    (folder / "empty").mkdir()
    (folder / "a_file.txt").write_text("mine")
    return {"empty": folder / "empty", "file": folder / "a_file.txt", "missing": folder / "missing",
            "out": folder / "out", "val": example_faces}


def restore_args(f, *extra):
    return ["restore", str(FACE), "-o", str(f["out"]), *extra]


def degrade_args(f, *extra):
    return ["degrade", str(FACE), "-o", str(f["out"]), *extra]


def train_args(f, *extra, data=None):
    return ["train", "--data", str(data or f["val"]), "--output", str(f["out"]), *extra]


def evaluate_args(f, *extra, data=None):
    return ["evaluate", "--data", str(data or f["val"]), "--output", str(f["out"]), *extra]


NEW_CLI_CASES = {
    "restore --device bogus": (lambda f: restore_args(f, "--device", "bogus"), "unknown device 'bogus'"),
    "restore --device cuda:99": (lambda f: restore_args(f, "--device", "cuda:99"), "CUDA GPU"),
    "restore --device tpu": (lambda f: restore_args(f, "--device", "xla"), "unsupported device"),
    "restore --upscale 0": (lambda f: restore_args(f, "--upscale", "0"), r"must be a number in \[1, 8\]"),
    "restore --upscale nan": (lambda f: restore_args(f, "--upscale", "nan"), r"must be a number in \[1, 8\]"),
    "restore --detail 2": (lambda f: restore_args(f, "--detail", "2"), r"must be a number in \[0, 1\]"),
    "restore --min-face-size -1": (lambda f: restore_args(f, "--min-face-size", "-1"), "of at least 0"),
    "restore --face-weights missing": (lambda f: restore_args(f, "--face-weights", str(f["missing"])),
                                       "no such folder"),
    "degrade --face-size 0": (lambda f: degrade_args(f, "--test-set", "--face-size", "0"), "from 8 to 4096"),
    "degrade --face-size big": (lambda f: degrade_args(f, "--face-size", "big"), "expected a whole number"),
    "degrade --limit 0": (lambda f: degrade_args(f, "--limit", "0"), "of at least 1"),
    "degrade --limit -1": (lambda f: degrade_args(f, "--limit", "-1"), "of at least 1"),
    "degrade --offset -1": (lambda f: degrade_args(f, "--offset", "-1"), "of at least 0"),
    "train --batch-size 0": (lambda f: train_args(f, "--batch-size", "0"), "of at least 1"),
    "train --data an empty folder": (lambda f: train_args(f, data=f["empty"]), "the folder has no images"),
    "train --data missing": (lambda f: train_args(f, data=f["missing"]), "no such folder"),
    "train --data a text file": (lambda f: train_args(f, data=f["file"]), "a folder of faces or a .npz pack"),
    "train --learning-rate 0": (lambda f: train_args(f, "--learning-rate", "0"), r"\(0, 1\]"),
    "train --face-size 0": (lambda f: train_args(f, "--face-size", "0"), "from 8 to 4096"),
    "train --output a file": (lambda f: ["train", "--data", str(f["val"]), "--output", str(f["file"])],
                              "exists and is not a folder"),
    "evaluate --data missing": (lambda f: evaluate_args(f, data=f["missing"]), "no such folder"),
    "evaluate --data an empty folder": (lambda f: evaluate_args(f, data=f["empty"]), "the folder has no images"),
    "evaluate --limit 0": (lambda f: evaluate_args(f, "--limit", "0"), "of at least 1"),
    "evaluate --batch-size 0": (lambda f: evaluate_args(f, "--batch-size", "0"), "of at least 1"),
    "evaluate --device bogus": (lambda f: evaluate_args(f, "--device", "bogus"), "unknown device"),
    "evaluate --output a file": (lambda f: ["evaluate", "--data", str(f["val"]), "--output", str(f["file"])],
                                 "exists and is not a folder"),
    "export --output a file": (lambda f: ["export", "--output", str(f["file"])], "exists and is not a folder"),
    "export --output below a file": (lambda f: ["export", "--output", str(f["file"] / "x")], "is a file"),
}


@pytest.mark.parametrize("case", NEW_CLI_CASES)
def test_new_cli_arguments(case, folders, capsys):
    make, message = NEW_CLI_CASES[case]
    if case == "restore --device cuda:99" and torch.cuda.device_count() > 99:
        pytest.skip("a machine with 100 GPUs")
    with pytest.raises(SystemExit) as exit_info:
        main(make(folders))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and re.search(message, err) and "Traceback" not in err
    assert err.count("error:") == 1
    assert not folders["out"].exists()  # refused before anything was written


def test_train_refuses_arguments_that_do_not_fit_together(tmp_path, capsys, example_faces):
    out = tmp_path / "run"
    code = main(["train", "--data", str(example_faces), "--output", str(out), "--face-size", "32",
                 "--patch-size", "64"])
    assert code == 2 and "--patch-size 64 must not exceed --face-size 32" in capsys.readouterr().err
    code = main(["train", "--data", str(example_faces), "--output", str(out), "--resume", str(tmp_path)])
    assert code == 2 and "not a checkpoint folder" in capsys.readouterr().err
    assert not out.exists()


NEW_DEMO_CASES = {
    "steps as a word": ("steps", "many", "steps must be a number, got 'many'"),
    "seed None": ("seed", None, "seed must be a number, got None"),
    "fidelity NaN as text": ("fidelity", "nan", "fidelity must be a number"),
    "strength a list": ("strength", [1], "strength must be a number"),
    "samples True": ("samples", True, "samples must be a number"),
}


@pytest.mark.parametrize("case", NEW_DEMO_CASES)
def test_new_demo_api_values(case):
    """What the API hands Gradio's preprocessing, which compared text with the slider's bounds (a
    TypeError the client saw as 'the upstream app raised an exception')."""
    import gradio as gr

    from lpipdiff.serving.requests import guard_number_inputs

    name, payload, message = NEW_DEMO_CASES[case]
    component = gr.Number(0, precision=0) if name == "seed" else gr.Slider(0, 50)
    guard_number_inputs(**{name: component})
    with pytest.raises(gr.Error, match=re.escape(message)):
        component.preprocess(payload)
    assert component.preprocess("7") == 7  # a number given as text is still a number


def test_demo_whole_numbers_and_paths():
    from lpipdiff.serving.requests import public_message

    service = RestorationService(ServingSettings(), pipeline=tiny_pipeline(face_size=32, patch_size=16))
    request = service.request("face.png", samples=2.0, steps=10.0, seed=3.0, stride=8.0)  # what sliders send
    assert (request.sampling.steps, request.samples, request.sampling.seed, request.sampling.stride) == (10, 2, 3, 8)
    with pytest.raises(ValueError, match="steps must be a whole number from 1 to 1000, got 2.5"):
        service.request("face.png", steps=2.5)
    with pytest.raises(ValueError, match="stride must be a whole number"):
        service.request("face.png", stride="wide")
    message = public_message("cannot identify image file '/tmp/gradio/abc123/photo.png' (in /srv/app/x.py)")
    assert message == "cannot identify image file 'photo.png' (in x.py)"


NEW_CASE_TABLES = [NEW_API_CASES, NEW_IMAGE_CASES, NEW_RESTORER_CASES, NEW_DETECTOR_CASES, NEW_MODEL_CASES,
                   NEW_CLI_CASES, NEW_DEMO_CASES]


def test_the_new_table_has_at_least_40_cases():
    assert sum(len(table) for table in NEW_CASE_TABLES) >= 40


# ---------------------------------------------------------------- nothing lost
def appears_while_running(monkeypatch, target: Path, content: bytes):
    """Another program writes ``target`` after the command planned its outputs, before it writes them."""
    import lpipdiff.io.images as image_io

    real = image_io.load_image_file

    def load_and_race(path):
        if not os.path.lexists(target):
            target.write_bytes(content)
        return real(path)

    monkeypatch.setattr(image_io, "load_image_file", load_and_race)


def test_restore_keeps_a_file_that_appears_during_the_batch(tmp_path, saved_pipeline, monkeypatch, capsys):
    out = tmp_path / "out"
    target = out / "astronaut_face_moderate_restored.png"
    appears_while_running(monkeypatch, target, b"written meanwhile")
    assert main(["restore", str(FACE), "-o", str(out), "--model", str(saved_pipeline), "--steps", "1"]) == 1
    assert target.read_bytes() == b"written meanwhile"
    assert f"{target} exists and was kept" in capsys.readouterr().err


def test_restore_never_writes_through_a_symlink(tmp_path, saved_pipeline, capsys):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere.png"
    out.mkdir()
    link = out / "astronaut_face_moderate_restored.png"
    link.symlink_to(elsewhere)  # dangling: Path.exists() says no
    assert main(["restore", str(FACE), "-o", str(out), "--model", str(saved_pipeline), "--steps", "1"]) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert not elsewhere.exists() and link.is_symlink()
    elsewhere.write_bytes(b"theirs")
    assert main(["restore", str(FACE), "-o", str(out), "--model", str(saved_pipeline), "--steps", "1",
                 "--overwrite"]) == 0
    assert elsewhere.read_bytes() == b"theirs"  # the link was replaced by the file, its target left alone
    assert not link.is_symlink() and PIL.Image.open(link).size == (128, 128)


def test_degrade_keeps_a_file_that_appears_during_the_batch(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    target = out / "astronaut_face_moderate_moderate.png"
    appears_while_running(monkeypatch, target, b"written meanwhile")
    assert main(["degrade", str(FACE), "-o", str(out)]) == 1
    assert target.read_bytes() == b"written meanwhile" and "was kept" in capsys.readouterr().err


def test_degrade_test_set_keeps_two_inputs_of_one_stem_apart(tmp_path, capsys):
    source = tmp_path / "faces"
    source.mkdir()
    face = PIL.Image.open(FACE)
    face.save(source / "x.png")
    face.rotate(90).save(source / "x.jpg")
    assert main(["degrade", str(source), "-o", str(tmp_path / "set"), "--test-set", "--face-size", "32"]) == 0
    assert "wrote 2 clean/degraded pairs" in capsys.readouterr().out
    written = sorted(p.name for p in (tmp_path / "set" / "clean").iterdir())
    assert written == ["x_jpg.png", "x_png.png"]
    assert not np.array_equal(*(load_image_file(tmp_path / "set" / "clean" / name) for name in written))


def test_export_keeps_files_already_in_the_folder(tmp_path, saved_pipeline, capsys):
    out = tmp_path / "export"
    out.mkdir()
    (out / "README.md").write_text("my notes")
    (out / "model_index.json").write_text("{}")
    assert main(["export", "--model", str(saved_pipeline), "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert "README.md" in err and "model_index.json" in err and "kept" in err
    assert (out / "README.md").read_text() == "my notes" and sorted(p.name for p in out.iterdir()) == [
        "README.md", "model_index.json"]  # nothing half-written beside them
    assert main(["export", "--model", str(saved_pipeline), "--output", str(out), "--overwrite"]) == 0
    assert "LPIP-Diff" in (out / "README.md").read_text()


def test_export_into_a_new_folder_is_complete(tmp_path, saved_pipeline):
    assert main(["export", "--model", str(saved_pipeline), "--output", str(tmp_path / "new")]) == 0
    assert load_pipeline(tmp_path / "new", device="cpu").unet.config.face_size == 32
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # the staging folder is gone


def test_space_folder_keeps_files_already_there(tmp_path):
    from lpipdiff.hub.publish import space_folder
    from lpipdiff.io.safe_files import OutputExistsError

    out = tmp_path / "space"
    out.mkdir()
    (out / "app.py").write_text("my own demo")
    with pytest.raises(OutputExistsError, match="app.py exists and was kept"):
        space_folder(out, model_repo="org/name")
    assert (out / "app.py").read_text() == "my own demo" and [p.name for p in out.iterdir()] == ["app.py"]


def test_evaluate_never_deletes_files_it_did_not_write(tmp_path, example_faces):
    from lpipdiff.evaluation.pairs import ensure_pairs
    from lpipdiff.io.safe_files import OutputExistsError

    folder = tmp_path / "pairs" / "moderate"
    ensure_pairs(example_faces, folder, "moderate", 32, seed=0, limit=2)
    ours = sorted(p.name for p in (folder / "clean").iterdir())
    mine = folder / "clean" / "my_photo.png"
    mine.write_bytes(b"mine")
    with pytest.raises(OutputExistsError, match="clean/my_photo.png"):
        ensure_pairs(example_faces, folder, "moderate", 32, seed=0, limit=3)  # other arguments: a rebuild
    assert mine.read_bytes() == b"mine" and len(list((folder / "degraded").iterdir())) == 2
    mine.unlink()
    ensure_pairs(example_faces, folder, "moderate", 32, seed=0, limit=3)  # its own files: replaced
    assert len(list((folder / "clean").iterdir())) == 3 and set(ours) < {p.name for p in (folder / "clean").iterdir()}


def test_evaluate_keeps_earlier_results(tmp_path, capsys, example_faces):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "results.json").write_text("my results")
    # --model names nothing loadable: the results check must come before the model to be seen at all.
    code = main(["evaluate", "--data", str(example_faces), "--output", str(out), "--model", str(tmp_path / "none")])
    assert code == 1 and "results.json exists and was kept" in capsys.readouterr().err
    assert (out / "results.json").read_text() == "my results"


def test_train_keeps_another_runs_folder(tmp_path, capsys, example_faces):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["train", "--data", str(example_faces), "--output", str(out), "--max-steps", "1"]) == 1
    assert "notes.txt" in capsys.readouterr().err and (out / "notes.txt").read_text() == "mine"


def test_a_nan_model_is_refused_before_any_restoration(tmp_path, saved_pipeline, capsys):
    break_weights(lambda s: s[first_key(s)].fill_(float("nan")))(saved_pipeline)
    out = tmp_path / "out"
    assert main(["restore", str(FACE), "-o", str(out), "--model", str(saved_pipeline)]) == 2
    assert "NaN or infinite" in capsys.readouterr().err and list(out.iterdir()) == []


# ---------------------------------------------------------------- phone photos, colours
def test_exif_orientation_on_every_path(odd_files, pipeline, tmp_path, saved_pipeline):
    sideways = odd_files["sideways"]
    assert PIL.Image.open(sideways).size == (40, 20)  # stored sideways
    assert_upright(load_image_file(sideways))  # CLI and demo
    assert_upright(to_rgb_array(str(sideways)))  # API, FaceRestorer: a path
    assert_upright(to_rgb_array(PIL.Image.open(sideways)))  # API, FaceRestorer: a PIL image
    assert pipeline(sideways, num_inference_steps=1, output_type="np").images[0].shape == (40, 20, 3)
    assert main(["restore", str(sideways), "-o", str(tmp_path), "--model", str(saved_pipeline), "--steps", "1"]) == 0
    assert PIL.Image.open(tmp_path / "side_restored.png").size == (20, 40)


def test_colour_profiles_are_converted_to_srgb(tmp_path):
    colour = np.full((16, 16, 3), (200, 100, 50), np.uint8)
    for name, primaries in (("srgb", SRGB_PRIMARIES), ("swapped", SWAPPED_PRIMARIES)):
        PIL.Image.fromarray(colour).save(tmp_path / f"{name}.png", icc_profile=rgb_profile(*primaries))
    plain = np.asarray(colour, np.float32) / 255
    np.testing.assert_allclose(load_image_file(tmp_path / "srgb.png"), plain, atol=6 / 255)
    # A profile whose red and green primaries are swapped: what is stored as red is shown as green.
    np.testing.assert_allclose(load_image_file(tmp_path / "swapped.png"), plain[..., [1, 0, 2]], atol=6 / 255)
    rgba = PIL.Image.fromarray(np.dstack([colour, np.full((16, 16), 255, np.uint8)]))
    rgba.info["icc_profile"] = rgb_profile(*SWAPPED_PRIMARIES)
    np.testing.assert_allclose(to_rgb_array(rgba), plain[..., [1, 0, 2]], atol=6 / 255)


def test_float32_strength_is_accepted_like_float32_fidelity(pipeline):
    face = np.full((32, 32, 3), 0.5, np.float32)
    common = dict(num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(0))
    as_numpy = pipeline(face, fidelity=None, strength=np.float32(0.5), **common).images
    common["generator"] = torch.Generator().manual_seed(0)
    np.testing.assert_array_equal(as_numpy, pipeline(face, fidelity=None, strength=0.5, **common).images)


# ---------------------------------------------------------------- work bounded by pixels
def test_degrade_a_long_strip_in_seconds_not_minutes(tmp_path, capsys):
    import time

    strip = tmp_path / "strip.png"
    PIL.Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 60000, 3), dtype=np.uint8)).save(strip)
    started = time.perf_counter()
    assert main(["degrade", str(strip), "-o", str(tmp_path / "out"), "--preset", "severe"]) == 0
    # 0.2 s on the 2-core Xeon (AMX) dev machine; it took 91 s before the fix. The bound is loose so that a
    # busy machine does not fail it, and still catches a return of the old cost.
    assert time.perf_counter() - started < 20
    assert load_image_file(tmp_path / "out" / "strip_severe.png").shape == (8, 60000, 3)


def test_bad_input_doc_matches_the_tests():
    """docs/BAD_INPUT.md names a case of these tables (or a test) on every row, and the message it
    shows matches what that case asserts: the doc cannot drift from the behaviour."""
    rows = [line for line in (ROOT / "docs" / "BAD_INPUT.md").read_text().splitlines()
            if line.startswith("| ") and not line.startswith("| Input")]
    assert len(rows) >= 25
    import test_hostile_inputs  # the hostile conditions' and the videos' rows name cases of those modules
    import test_video

    names = {**vars(test_hostile_inputs), **vars(test_video), **globals()}
    tables = {name: value for name, value in names.items() if name.endswith("_CASES")}
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split(" | ")]
        assert len(cells) == 4, row
        reference = cells[3].strip("`")
        if ": " not in reference:
            assert callable(names.get(reference)), f"{reference}: no such test"
            continue
        table, case = reference.split(": ", 1)
        assert case in tables[table], f"{reference}: no such case"
        value = tables[table][case]
        pattern = DETECTOR_MESSAGE if table == "NEW_DETECTOR_CASES" else value[-1]
        shown = re.findall(r"`([^`]+)`", cells[2])
        assert any(re.search(pattern, text) for text in shown), f"{reference}: {shown} do not match {pattern!r}"
