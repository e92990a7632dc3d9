"""Faces larger than the model keep the input's detail; faces at the model's size are pasted as before."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from lpipdiff.faces.detail import keep_input_detail, low_band, output_scale
from lpipdiff.faces.face_helper import FaceHelper
from lpipdiff.faces.restorer import to_bgr_uint8, to_rgb_float
from lpipdiff.io.images import list_images, load_image_file
from lpipdiff.model.sampling import SamplingOptions

from conftest import UTKFACE_VAL, face_restorer, tiny_pipeline
from face_regions import face_mask, laplacian_energy, structure_energy

pytestmark = pytest.mark.slow  # the bundled model on whole photos

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def val_face_200():
    """A real 200 px val face, float in 0..255 like facexlib's crops."""
    return load_image_file(list_images(UTKFACE_VAL)[0]) * 255


@pytest.mark.shared
def test_a_model_that_returns_its_input_gives_back_the_input_crop(val_face_200):
    # The split is a Laplacian pyramid: restoration band + input detail band rebuild the crop.
    seen_by_model = cv2.resize(val_face_200, (128, 128), interpolation=cv2.INTER_AREA)
    rebuilt = keep_input_detail(seen_by_model, val_face_200)
    assert np.abs(rebuilt - val_face_200).max() < 1e-3
    # Without input detail the face is the restoration scaled up, which lacks the crop's fine detail.
    upscaled = keep_input_detail(seen_by_model, val_face_200, detail=0)
    assert np.abs(upscaled - val_face_200).mean() > 1
    assert np.array_equal(upscaled, cv2.resize(seen_by_model, (200, 200), interpolation=cv2.INTER_LANCZOS4))


@pytest.mark.shared
def test_the_restoration_supplies_the_band_the_model_sees(val_face_200):
    restored = cv2.GaussianBlur(val_face_200, (0, 0), 2)[::2, ::2][:100, :100]  # any 100 px "restoration"
    restored = cv2.resize(restored, (128, 128))
    face = keep_input_detail(restored, val_face_200)
    # Below the model's resolution the result is the restoration, not the input...
    upscaled = cv2.resize(restored, (200, 200), interpolation=cv2.INTER_LANCZOS4)
    from_restoration = np.abs(low_band(face, 128) - low_band(upscaled, 128))
    from_input = np.abs(low_band(face, 128) - low_band(val_face_200, 128))
    assert from_restoration.mean() < 0.25 * from_input.mean()  # 0.15: the bands overlap a little at the split
    # ...and above it, the input: the higher ``detail``, the more of the input's finest bands.
    def fine_detail(image):
        def energy(x):
            return np.abs(cv2.Laplacian(x.astype(np.float32), cv2.CV_32F)).mean()

        return energy(image) / energy(val_face_200)

    ratios = [fine_detail(keep_input_detail(restored, val_face_200, detail)) for detail in (0, 0.8, 1)]
    assert ratios[0] < ratios[1] < ratios[2] < 1.05  # 0.16, 0.51, 0.62 measured


@pytest.fixture(scope="module")
def bundled():
    from lpipdiff.model.loading import load_pipeline

    pipeline = load_pipeline(None, device="cpu")
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def test_a_face_larger_than_the_model_keeps_the_input_detail_and_is_still_restored(bundled):
    photo = load_image_file(EXAMPLES / "astronaut_photo_moderate.png")  # her face: 217 px at upscale 2
    restored = {}
    for detail in (0.0, 1.0):
        restorer = face_restorer(bundled, upscale=2, detail=detail)
        restored[detail] = restorer.restore(photo)  # the defaults
    affine = restored[1.0].affines[0]
    assert output_scale(affine, 2) > 1.5
    bicubic = cv2.resize(photo, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    mask = face_mask(affine, 2, 128, bicubic.shape)

    def ratios(measure):
        return {d: measure(r.image, mask) / measure(bicubic, mask) for d, r in restored.items()}

    # At least the input's detail that is not noise (docs/RESULTS.md: the structure ratio; 1.155 measured).
    assert ratios(structure_energy)[1.0] >= 1.0
    # The input's finest detail comes back above the model's resolution (Laplacian: 0.570 -> 0.678;
    # both below 1 because the restoration also removes the example's noise, which it counts).
    laplacian = ratios(laplacian_energy)
    assert laplacian[1.0] > laplacian[0.0] + 0.05, laplacian
    # Still restored: far from the bicubic upscale, close to the restoration below the model's resolution.
    change = np.abs(restored[1.0].image - bicubic)[mask].mean()
    assert change > 3 / 255
    assert np.abs(restored[1.0].image - restored[0.0].image)[mask].mean() < 0.5 * change


def old_paste_back(restorer, photo, result):
    """facexlib's paste-back of ``result``'s faces exactly as FaceRestorer did before lpipdiff.faces.detail."""
    helper = FaceHelper(restorer.detector, result.faces[0].shape[0], restorer.template, restorer.upscale)
    helper.read_image(to_bgr_uint8(photo))
    helper.affine_matrices = list(result.affines)
    helper.get_inverse_affine()
    for face in result.restored_faces:
        helper.add_restored_face(to_bgr_uint8(face))
    return to_rgb_float(helper.paste_faces_to_input_image())


@pytest.mark.parametrize("upscale", [1, 2])
def test_faces_at_or_below_the_model_size_are_pasted_exactly_as_before(upscale):
    photo = data.astronaut().astype(np.float32) / 255.0  # her face is about 110 px: 220 at upscale 2
    restorer = face_restorer(tiny_pipeline(face_size=256, patch_size=128), upscale=upscale)
    result = restorer.restore(photo, sampling=SamplingOptions(fidelity=None, steps=1))
    assert output_scale(result.affines[0], upscale) <= 1
    assert np.array_equal(result.image, old_paste_back(restorer, photo, result))


def test_detail_zero_is_the_old_paste_back_for_every_face():
    photo = data.astronaut().astype(np.float32) / 255.0
    restorer = face_restorer(tiny_pipeline(face_size=32, patch_size=16), upscale=2, detail=0)
    result = restorer.restore(photo, sampling=SamplingOptions(fidelity=None, steps=1))
    assert output_scale(result.affines[0], 2) > 4
    assert np.array_equal(result.image, old_paste_back(restorer, photo, result))
    with pytest.raises(ValueError, match="detail"):
        face_restorer(tiny_pipeline(), detail=2)
