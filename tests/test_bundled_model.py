"""The shipped weights: a real quality test, on real val faces the model never trained on."""

import numpy as np
import pytest
import torch

from lpipdiff.degradation import Degradation, image_seed
from lpipdiff.image_io import list_images, load_image_file, resize_array
from lpipdiff.loading import DEFAULT_MODEL, load_pipeline
from lpipdiff.metrics import FaceGeometry, psnr

from conftest import UTKFACE_VAL


@pytest.fixture(scope="module")
def bundled():
    pipeline = load_pipeline(device="cpu")
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def test_bundled_model_is_the_default_and_small(bundled):
    assert DEFAULT_MODEL.is_dir()
    weights = DEFAULT_MODEL / "unet" / "diffusion_pytorch_model.safetensors"
    assert weights.stat().st_size < 30_000_000
    assert bundled.unet.config.face_size == 128 and bundled.unet.config.patch_size == 64
    assert sum(p.numel() for p in bundled.unet.parameters()) < 15_000_000


def test_bundled_model_brings_severe_faces_closer_to_the_person(bundled):
    files = list_images(UTKFACE_VAL)[:4]
    clean = [resize_array(load_image_file(f), 128) for f in files]
    severe = Degradation("severe", face_size=128, color=False)
    degraded = [severe(c, image_seed(0, f.name)) for c, f in zip(clean, files)]
    generators = [torch.Generator().manual_seed(i) for i in range(4)]
    restored = bundled(degraded, num_inference_steps=20, generator=generators, output_type="np").images
    geometry = FaceGeometry()
    restored_identity = np.mean([geometry.identity_distance(r, c) for r, c in zip(restored, clean)])
    degraded_identity = np.mean([geometry.identity_distance(d, c) for d, c in zip(degraded, clean)])
    assert restored_identity < degraded_identity
    # It is a restoration, not a hallucination of someone else's face.
    assert np.mean([psnr(r, c) for r, c in zip(restored, clean)]) > 18
