
"""The detail measures of the real-photo benchmark, on a real face: noise is not structure."""

import cv2
import numpy as np
import pytest

from lpipdiff.io.images import list_images, load_image_file

from conftest import UTKFACE_VAL
from face_regions import laplacian_energy, structure_energy


@pytest.mark.shared
def test_structure_energy_ignores_noise_and_sees_blur():
    face = load_image_file(list_images(UTKFACE_VAL)[0])  # 200 px, float RGB
    mask = np.zeros(face.shape[:2], bool)
    mask[20:180, 20:180] = True
    noisy = np.clip(face + np.random.default_rng(0).normal(0, 10 / 255, face.shape), 0, 1).astype(np.float32)
    blurred = cv2.GaussianBlur(face, (0, 0), 1.5)
    # The Laplacian counts the noise as detail (that is why the structure ratio exists)...
    assert laplacian_energy(noisy, mask) > 2 * laplacian_energy(face, mask)  # 3.15 x measured
    # ...the structure measure barely moves with it (1.13 x), and still falls when the face is blurred (0.67 x).
    assert abs(structure_energy(noisy, mask) / structure_energy(face, mask) - 1) < 0.25
    assert structure_energy(blurred, mask) < 0.8 * structure_energy(face, mask)
