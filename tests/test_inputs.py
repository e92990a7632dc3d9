"""Bad input gets a clear error, never a crash or a hang; odd-but-valid input just works."""

import numpy as np
import PIL.Image
import pytest
import torch

from lpipdiff.io.images import MAX_PIXELS, InvalidImageError, load_image_file, to_rgb_array
from lpipdiff.model.loading import ModelLoadError, load_pipeline

from conftest import UTKFACE_VAL, generator


def test_not_an_image_file(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("this is not a picture")
    with pytest.raises(InvalidImageError, match="not a readable image"):
        load_image_file(text)


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.touch()
    with pytest.raises(InvalidImageError, match="empty"):
        load_image_file(empty)
    with pytest.raises(InvalidImageError, match="no such file"):
        load_image_file(tmp_path / "missing.jpg")


@pytest.mark.shared
def test_truncated_jpeg(tmp_path):
    data = next(UTKFACE_VAL.iterdir()).read_bytes()
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(data[: len(data) // 3])
    with pytest.raises(InvalidImageError):
        load_image_file(broken)


def test_huge_image_is_refused_before_decoding(tmp_path):
    side = int(MAX_PIXELS**0.5) + 100
    huge = tmp_path / "huge.png"
    PIL.Image.new("L", (side, side)).save(huge)
    with pytest.raises(InvalidImageError, match="too large"):
        load_image_file(huge)
    with pytest.raises(InvalidImageError, match="too large"):
        to_rgb_array(np.zeros((side, side), dtype=np.uint8))


@pytest.mark.parametrize(
    "bad,message",
    [
        (np.zeros((0, 0, 3), dtype=np.uint8), "empty"),
        (np.zeros((4, 4, 3), dtype=np.uint8), "too small"),
        (np.zeros((16, 16, 2), dtype=np.uint8), "shape"),
        (np.full((16, 16, 3), np.nan, dtype=np.float32), "NaN"),
        (np.full((16, 16, 3), 255.0, dtype=np.float32), r"\[0, 1\]"),
        (np.zeros((16, 16, 3), dtype=np.int64), "pixel type"),
        ("no/such/file.png", "no such file"),
        ({"not": "an image"}, "expected a file path"),
        (torch.zeros(2, 16, 16), "channels"),
    ],
)
def test_bad_arrays_are_explained(bad, message):
    with pytest.raises(InvalidImageError, match=message):
        to_rgb_array(bad)


def test_grayscale_rgba_16bit_and_palette_images_become_rgb(tmp_path):
    base = np.arange(32 * 32, dtype=np.float64).reshape(32, 32) / (32 * 32 - 1)
    gray16 = tmp_path / "gray16.png"
    PIL.Image.fromarray((base * 65535).astype(np.uint16)).save(gray16)
    rgba = tmp_path / "rgba.png"
    PIL.Image.fromarray((np.dstack([base] * 4) * 255).astype(np.uint8), "RGBA").save(rgba)
    palette = tmp_path / "palette.gif"
    PIL.Image.fromarray((base * 255).astype(np.uint8)).convert("P").save(palette)
    for path in (gray16, rgba, palette):
        image = load_image_file(path)
        assert image.shape == (32, 32, 3) and image.dtype == np.float32
        np.testing.assert_allclose(image[..., 0], base, atol=1 / 255 + 1e-6)
    assert to_rgb_array((base * 65535).astype(np.uint16)).max() == pytest.approx(1.0)
    assert to_rgb_array(np.dstack([base] * 4).astype(np.float32)).shape == (32, 32, 3)


def test_pipeline_restores_grayscale_rgba_and_16bit_input(pipeline):
    rng = np.random.default_rng(0)
    inputs = [
        rng.integers(0, 256, (40, 40), dtype=np.uint8),
        rng.integers(0, 256, (40, 40, 4), dtype=np.uint8),
        rng.integers(0, 65536, (40, 40, 3), dtype=np.uint16),
        PIL.Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8), "L"),
    ]
    result = pipeline(inputs, num_inference_steps=2, generator=[generator(i) for i in range(4)], output_type="np")
    assert result.images.shape == (4, 40, 40, 3)


def test_pipeline_rejects_empty_and_missing_input(pipeline):
    with pytest.raises(InvalidImageError, match="empty list"):
        pipeline([], num_inference_steps=2)
    with pytest.raises(InvalidImageError, match="no image"):
        pipeline(None, num_inference_steps=2)


def test_wrong_model_folder_is_explained(tmp_path):
    with pytest.raises(ModelLoadError, match="no model_index.json"):
        load_pipeline(tmp_path)
    with pytest.raises(ModelLoadError, match="no such model folder"):
        load_pipeline(tmp_path / "missing")
    (tmp_path / "model_index.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        load_pipeline(tmp_path)
    (tmp_path / "model_index.json").write_text(
        '{"_class_name": "StableDiffusionPipeline", "vae": ["diffusers", "AutoencoderKL"]}'
    )
    with pytest.raises(ModelLoadError, match="not an LPIP-Diff pipeline"):
        load_pipeline(tmp_path)


def test_pickled_weights_are_never_loaded(saved_pipeline):
    weights = saved_pipeline / "unet" / "diffusion_pytorch_model.safetensors"
    state = __import__("safetensors.torch", fromlist=["load_file"]).load_file(weights)
    weights.unlink()
    torch.save(state, saved_pipeline / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(ModelLoadError):
        load_pipeline(saved_pipeline)


def test_corrupt_weights_are_explained(saved_pipeline):
    (saved_pipeline / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelLoadError, match="diffusion_pytorch_model.safetensors: not a safetensors file"):
        load_pipeline(saved_pipeline)
