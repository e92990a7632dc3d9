"""The batched torch degradation against the CPU one it stands in for during training."""

import cv2
import numpy as np
import pytest
import torch

from lpipdiff.evaluation.metrics import psnr
from lpipdiff.io.images import list_images, load_image_file, resize_array
from lpipdiff.training.degradation import PRESETS, Degradation, gaussian_kernel, image_seed, jpeg_roundtrip
from lpipdiff.training.degradation_torch import INTERPOLATIONS, BatchDegradation, ResizeMatrices, gaussian_kernels
from lpipdiff.training.jpeg_torch import jpeg_batch

from conftest import UTKFACE_VAL

pytestmark = [pytest.mark.slow, pytest.mark.shared]  # hundreds of degradations on real (UTKFace) faces

FACE = 128
DRAWS = 4  # degradations of each face, per implementation


@pytest.fixture(scope="module")
def faces():
    """48 real val faces at the training size, float RGB."""
    return np.stack([resize_array(load_image_file(p), FACE) for p in list_images(UTKFACE_VAL)[:48]])


def structure(image: np.ndarray) -> float:
    """Gradient energy after a Gaussian of sigma 2: what blur and downscaling remove, little swayed by noise."""
    gray = cv2.GaussianBlur(image.mean(axis=2).astype(np.float32), (0, 0), 2)
    return float(np.sqrt(np.mean(cv2.Sobel(gray, cv2.CV_32F, 1, 0) ** 2 + cv2.Sobel(gray, cv2.CV_32F, 0, 1) ** 2)))


def noise_level(image: np.ndarray) -> float:
    """Immerkaer's (1996) estimate of the std of white noise, from a Laplacian difference mask."""
    mask = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)
    response = cv2.filter2D(image.mean(axis=2).astype(np.float32), -1, mask)[1:-1, 1:-1]
    return float(np.sqrt(np.pi / 2) * np.abs(response).mean() / 6)


def damage(degraded, clean) -> dict[str, float]:
    return {
        "psnr": np.mean([psnr(d, c) for d, c in zip(degraded, clean)]),
        "structure": np.mean([structure(d) / structure(c) for d, c in zip(degraded, clean)]),
        "noise": np.mean([noise_level(d) for d in degraded]) * 255,
    }


# Tolerances: about three standard errors of the difference of two means of 192 draws (spread
# measured on these faces), well below the gap between the presets (5 dB, 0.15, 1.8).
TOLERANCE = {"psnr": 1.0, "structure": 0.06, "noise": 0.5}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_both_implementations_damage_real_faces_alike(faces, preset):
    cpu = Degradation(preset, face_size=FACE, color=False)
    clean = [face for _ in range(DRAWS) for face in faces]
    on_cpu = [cpu(face, image_seed(draw, str(i))) for draw in range(DRAWS) for i, face in enumerate(faces)]
    torch.manual_seed(0)
    batched = BatchDegradation((preset,), (1.0,), face_size=FACE, color=False)
    batch = torch.from_numpy(faces).permute(0, 3, 1, 2)
    in_torch = [image.permute(1, 2, 0).numpy() for _ in range(DRAWS) for image in batched(batch)]
    expected, got = damage(on_cpu, clean), damage(in_torch, clean)
    print(preset, {k: (round(expected[k], 3), round(got[k], 3)) for k in expected})
    for name, tolerance in TOLERANCE.items():
        assert abs(expected[name] - got[name]) < tolerance, (preset, name, expected[name], got[name])


def test_the_steps_match_their_cpu_counterparts(faces):
    sigma_x, sigma_y, angle = torch.tensor([[0.5, 2.0, 3.0], [0.5, 1.0, 3.5], [0.0, 1.0, 2.5]])
    for i, kernel in enumerate(gaussian_kernels(11, sigma_x, sigma_y, angle)):
        expected = gaussian_kernel(11, sigma_x[i].item(), sigma_y[i].item(), angle[i].item())
        assert np.allclose(kernel.numpy(), expected, atol=1e-7)

    matrices = ResizeMatrices("cpu")
    for size in (17, 64, 100, 300):
        for mode in INTERPOLATIONS:
            resize = matrices(FACE, size, mode).numpy()
            ours = np.stack([resize @ faces[0][..., c] @ resize.T for c in range(3)], axis=2)
            assert np.abs(ours - cv2.resize(faces[0], (size, size), interpolation=mode)).max() < 1e-4

    # JPEG: the approximation loses as much as libjpeg at every quality, on real faces.
    pixels = np.round(faces[:4] * 255)
    for quality in (30, 60, 95):
        ours = jpeg_batch(torch.from_numpy(pixels).permute(0, 3, 1, 2).float(), torch.full((4,), quality))
        ours = ours.permute(0, 2, 3, 1).numpy()
        libjpeg = np.stack([jpeg_roundtrip(p / 255, quality) * 255 for p in pixels])
        rmse = lambda a: np.sqrt(np.mean((a - pixels) ** 2))  # noqa: E731
        assert abs(rmse(ours) - rmse(libjpeg)) < 0.15 * rmse(libjpeg), (quality, rmse(ours), rmse(libjpeg))
        assert np.sqrt(np.mean((ours - libjpeg) ** 2)) < 2.0  # the same image, up to the decoder's rounding
