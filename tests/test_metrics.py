"""Each metric on known cases: identical images, a blurred copy, two different people."""

import cv2
import numpy as np
import pytest

from lpipdiff.evaluation.metrics import (
    SAME_PERSON_THRESHOLD,
    FaceGeometry,
    PerceptualDistance,
    frechet_distance,
    frechet_inception_distance,
    psnr,
    seam_contrast,
    ssim,
)
from lpipdiff.evaluation.reports import results_table


@pytest.fixture(scope="module")
def faces(val_faces):
    return [cv2.resize(f, (128, 128), interpolation=cv2.INTER_CUBIC).clip(0, 1) for f in val_faces]


def blurred(image, sigma=2.5):
    return cv2.GaussianBlur(image, (0, 0), sigma)


@pytest.fixture(scope="module")
def geometry():
    return FaceGeometry()


def test_psnr_and_ssim(faces):
    face = faces[0]
    assert psnr(face, face) == float("inf") and ssim(face, face) == pytest.approx(1.0)
    assert psnr(face, np.clip(face + 0.1, 0, 1)) == pytest.approx(20.0, abs=0.5)
    assert 0 < ssim(blurred(face), face) < ssim(blurred(face, 1.0), face) < 1


@pytest.mark.slow
def test_lpips(faces):
    lpips = PerceptualDistance()
    assert lpips(faces[0], faces[0]) == pytest.approx(0.0, abs=1e-6)
    assert lpips(blurred(faces[0], 1.0), faces[0]) < lpips(blurred(faces[0], 3.0), faces[0])
    assert lpips(faces[1], faces[0]) > lpips(blurred(faces[0], 1.0), faces[0])


@pytest.mark.slow
def test_identity_and_landmarks(faces, geometry):
    a, b = faces[0], faces[1]
    assert geometry.identity_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert geometry.identity_distance(blurred(a, 1.0), a) < SAME_PERSON_THRESHOLD
    different = [geometry.identity_distance(faces[i], faces[j]) for i in range(4) for j in range(i + 1, 4)]
    assert np.mean(different) > SAME_PERSON_THRESHOLD
    assert geometry.landmark_distance(a, a) == 0
    assert geometry.landmark_distance(blurred(a, 1.0), a) < geometry.landmark_distance(b, a)


@pytest.mark.slow
def test_fid(faces):
    assert abs(frechet_inception_distance(faces, faces)) < 1e-3
    assert (
        frechet_inception_distance([blurred(f, 3.0) for f in faces], faces)
        > frechet_inception_distance([blurred(f, 0.7) for f in faces], faces)
        > 1
    )


def test_seam_contrast_sees_a_step_along_the_patch_borders_and_not_the_face(faces):
    # A blurred face has errors that follow the face's own edges: no seam.
    smooth = [blurred(f, 1.0) for f in faces]
    assert 0.8 < seam_contrast(smooth, faces, patch_size=64, stride=32) < 1.2
    # The same with a 2 % step where the patch grid's column 64 begins: a seam.
    step = np.zeros((128, 128, 1), np.float32)
    step[:, 64:] = 0.02
    seamed = [s + step for s in smooth]
    assert seam_contrast(seamed, faces, patch_size=64, stride=32) > 1.5 * seam_contrast(smooth, faces, 64, 32)
    # A step elsewhere (column 48, inside the patches) is not on the grid's borders.
    step_inside = np.zeros((128, 128, 1), np.float32)
    step_inside[:, 48:] = 0.02
    off_grid = [s + step_inside for s in smooth]
    assert seam_contrast(off_grid, faces, 64, 32) < 1.1 * seam_contrast(smooth, faces, 64, 32)


def test_frechet_distance_matches_scipy_sqrtm():
    import scipy.linalg

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 16)), rng.normal(loc=0.3, scale=1.5, size=(150, 16))
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    expected = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(cov_a + cov_b - 2 * root)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)


def test_markdown_table():
    results = {
        "presets": {
            "severe": {
                "degraded input": {"n": 2, "psnr": 20.0},
                "LPIP-Diff": {"n": 2, "psnr": 21.25, "seconds_per_face": 1.5},
            }
        }
    }
    table = results_table(results)
    assert "| severe | LPIP-Diff | 2 | 21.25 | 1.5 |" in table and "PSNR" in table
