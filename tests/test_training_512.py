"""The training path at the 512-pixel geometry of docs/TRAINING.md (face 512, patch 128), tiny widths."""

import json

import numpy as np
import pytest
import torch

from lpipdiff.io.images import list_images, load_image_file, resize_array, save_image
from lpipdiff.model.loading import load_pipeline
from lpipdiff.training.degradation import Degradation
from lpipdiff.training.train import main

from conftest import UTKFACE_VAL

pytestmark = [pytest.mark.slow, pytest.mark.shared]  # a 512-geometry training run on UTKFace faces

TINY_512 = ["--face-size", "512", "--patch-size", "128", "--channels", "8,16", "--attention-levels", "",
            "--batch-size", "2", "--num-workers", "0", "--validate-every", "0"]


def test_a_tiny_512_model_trains_and_restores_a_512_face(tmp_path):
    faces = tmp_path / "faces512"
    for path in list_images(UTKFACE_VAL)[:4]:  # 200 px faces upscaled, standing in for FFHQ's 512+
        save_image(resize_array(load_image_file(path), 512), faces / f"{path.stem}.png")
    run = tmp_path / "run"
    main(["--data", str(faces), "--output", str(run), "--max-steps", "2", "--checkpoint-every", "2", *TINY_512])

    assert json.loads((run / "pipeline" / "training_config.json").read_text())["steps"] == 2
    pipeline = load_pipeline(run / "pipeline", device="cpu")
    pipeline.set_progress_bar_config(disable=True)
    assert (pipeline.unet.config.face_size, pipeline.unet.config.patch_size) == (512, 128)
    clean = resize_array(load_image_file(list_images(UTKFACE_VAL)[4]), 512)
    degraded = Degradation("moderate", face_size=512, color=False)(clean, np.random.default_rng(0))
    result = pipeline(degraded, num_inference_steps=1, generator=torch.Generator().manual_seed(0), output_type="np")
    restored = result.images[0]
    assert restored.shape == (512, 512, 3) and np.isfinite(restored).all()
    assert result.uncertainty[0].shape == (512, 512)
    assert np.abs(restored - degraded).mean() > 1e-3  # the model's output, not the input passed through
