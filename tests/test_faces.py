"""Whole-photo restoration on a real photograph (scikit-image's public-domain astronaut)."""

import numpy as np
import pytest
from skimage import data

from lpipdiff.faces.restorer import FaceRestorer, NoFaceError
from lpipdiff.model.sampling import SamplingOptions

from conftest import face_restorer, tiny_pipeline

pytestmark = pytest.mark.slow  # face detection and whole photos

@pytest.fixture(scope="module")
def restorer():
    return face_restorer(tiny_pipeline(face_size=32, patch_size=16))


@pytest.fixture(scope="module")
def astronaut():
    return data.astronaut().astype(np.float32) / 255.0


def outside(boxes, shape, margin=0.6):
    """Mask of pixels well away from every detected face box."""
    mask = np.ones(shape[:2], dtype=bool)
    for left, top, right, bottom in boxes:
        w, h = right - left, bottom - top
        mask[
            max(0, int(top - margin * h)) : int(bottom + margin * h),
            max(0, int(left - margin * w)) : int(right + margin * w),
        ] = False
    return mask


def test_finds_aligns_and_pastes_back_one_face(restorer, astronaut):
    result = restorer.restore(astronaut, sampling=SamplingOptions(fidelity=None, steps=2))
    assert len(result.faces) == len(result.restored_faces) == 1
    assert result.faces[0].shape == (32, 32, 3) and result.image.shape == astronaut.shape
    left, top, right, bottom = result.boxes[0]
    assert 150 < left < 200 and 250 < right < 300 and 40 < top < 80  # her face, not the flag or the suit
    away = outside(result.boxes, astronaut.shape)
    assert np.abs(result.image - astronaut)[away].max() <= 2 / 255
    face = (slice(int(top), int(bottom)), slice(int(left), int(right)))
    assert np.abs(result.image[face] - astronaut[face]).mean() > 1 / 255  # the face itself was replaced


def test_collage_with_several_faces_and_upscaling(astronaut):
    collage = np.concatenate([astronaut, astronaut[:, ::-1], astronaut], axis=1)
    restorer = face_restorer(tiny_pipeline(face_size=32, patch_size=16), upscale=2)
    result = restorer.restore(collage, SamplingOptions(fidelity=None, steps=2))
    assert len(result.faces) == 3
    assert result.image.shape == (1024, 3072, 3)
    largest = face_restorer(tiny_pipeline(face_size=32, patch_size=16), only_largest=True)
    assert len(largest.restore(collage, SamplingOptions(fidelity=None, steps=1)).faces) == 1


def test_no_face_is_a_clear_error(restorer, astronaut):
    sky = np.full((256, 256, 3), 0.5, dtype=np.float32)
    with pytest.raises(NoFaceError, match="no face found"):
        restorer.restore(sky, SamplingOptions(fidelity=None, steps=1))
    small_only = face_restorer(tiny_pipeline(face_size=32, patch_size=16), min_face_size=400)
    with pytest.raises(NoFaceError, match="at least 400"):
        small_only.restore(astronaut, SamplingOptions(fidelity=None, steps=1))


def test_bad_options():
    with pytest.raises(ValueError, match="detector"):
        face_restorer(tiny_pipeline(), detector="haar")
    with pytest.raises(ValueError, match="upscale"):
        face_restorer(tiny_pipeline(), upscale=20)


def test_missing_detector_weights_offline_is_a_clear_error(tmp_path, monkeypatch):
    import urllib.error

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr("facexlib.detection.load_file_from_url", offline)  # what a machine without network gets
    with pytest.raises(OSError, match=r"could not load the mobilenet face detector .* --face-weights"):
        FaceRestorer(tiny_pipeline(), weights_dir=tmp_path)  # an empty folder: facexlib tries to download


@pytest.mark.shared  # the CLI's detector weights ($LPIPDIFF_FACEXLIB_WEIGHTS, which conftest sets)
def test_cli_whole_photo_restores_every_face_of_a_group(tmp_path, astronaut):
    from lpipdiff.cli.commands import main
    from lpipdiff.io.images import load_image_file, save_image

    save_image(np.concatenate([astronaut, astronaut[:, ::-1]], axis=1), tmp_path / "group.png")
    model = tmp_path / "model"
    tiny_pipeline(face_size=32, patch_size=16).save_pretrained(model)
    code = main(
        [
            "restore",
            str(tmp_path / "group.png"),
            "-o",
            str(tmp_path / "out"),
            "--whole-photo",
            "--model",
            str(model),
            "--steps",
            "1",
            "--upscale",
            "2",
        ]
    )
    assert code == 0
    assert load_image_file(tmp_path / "out" / "group_restored.png").shape == (1024, 2048, 3)
