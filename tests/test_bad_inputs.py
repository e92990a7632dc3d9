"""Bad input, table-driven, through every door: the Python API (the pipeline), ``FaceRestorer``,
the CLI and the demo's request function. Each case gets one clear message (a typed error in
Python, one ``error:`` line and exit status in the CLI, a ``gr.Error`` in the demo), never a
crash, a hang or a silently wrong result."""

from __future__ import annotations

import importlib
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from skimage import data

from lpipdiff.cli import main
from lpipdiff.faces import FaceRestorer, NoFaceError
from lpipdiff.image_io import InvalidImageError, list_images
from lpipdiff.loading import ModelLoadError, load_pipeline

from conftest import UTKFACE_VAL, tiny_pipeline

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
    truncated.write_bytes(list_images(UTKFACE_VAL)[0].read_bytes()[:900])
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
    return FaceRestorer(tiny_pipeline(face_size=32, patch_size=16))


@pytest.fixture(scope="module")
def photo():
    return data.astronaut()  # uint8 RGB, one face of about 110 px


def restore(restorer, image, **kwargs):
    return restorer.restore(image, generator=torch.Generator().manual_seed(0), num_inference_steps=1, **kwargs).image


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
    "a bad step count": (lambda p: p, {"num_inference_steps": 2.5}, ValueError, "whole number"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", RESTORER_ERRORS)
def test_face_restorer_errors(case, restorer, photo):
    make, kwargs, error, message = RESTORER_ERRORS[case]
    with pytest.raises(error, match=message):
        restorer.restore(make(photo), **kwargs)


@pytest.mark.slow
def test_face_restorer_bounds_the_output_size():
    big = FaceRestorer(tiny_pipeline(face_size=32, patch_size=16), upscale=8)
    with pytest.raises(InvalidImageError, match="megapixels"):
        big.restore(np.zeros((1200, 1200, 3), np.uint8))


@pytest.mark.slow
def test_one_face_is_found_once_in_a_large_photo(restorer, photo):
    """A 3000-pixel version of the photo: detection runs downscaled, and overlapping detections merge."""
    large = np.asarray(PIL.Image.fromarray(photo).resize((3000, 3000), PIL.Image.LANCZOS))
    result = restorer.restore(large, num_inference_steps=1)
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
    assert main(["restore", str(FACE), "-o", str(tmp_path), "--model", str(saved_pipeline), "--stride", "0"]) == 1
    assert "patch_stride" in capsys.readouterr().err


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
def demo_app(tmp_path_factory):
    model = tmp_path_factory.mktemp("model")
    tiny_pipeline(face_size=32, patch_size=16).save_pretrained(model)
    os.environ["LPIPDIFF_MODEL"] = str(model)
    import app

    importlib.reload(app)
    yield app
    os.environ.pop("LPIPDIFF_MODEL", None)
    importlib.reload(app)


class Listening:
    """A watchdog whose client never leaves (the request function is called directly here)."""

    def start(self):
        pass

    def check(self):
        pass


DEMO_CASES = {
    "no upload": (dict(image_path=None), "upload an image first"),
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
def test_demo(case, demo_app, files, tmp_path):
    import gradio as gr

    wide = tmp_path / "wide.png"
    PIL.Image.fromarray(np.full((400, 1200, 3), 90, np.uint8)).save(wide)
    request = dict(image_path=str(FACE), mode="Auto", steps=1, scheduler="ddim", strength=1.0, stride=8, seed=0,
                   samples=1, detail=1.0, fidelity=0.3, watchdog=Listening(), progress=lambda *args, **kwargs: None)
    changes, message = DEMO_CASES[case]
    request.update(changes)
    if request["image_path"] in ("text", "bomb"):
        request["image_path"] = str(files[request["image_path"]])
    elif request["image_path"] == "wide":
        request["image_path"] = str(wide)
    with pytest.raises(gr.Error, match=message) as raised:
        demo_app.restore_request(**request)
    assert str(files["text"].parent) not in str(raised.value)  # no server paths in the page
