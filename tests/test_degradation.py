import numpy as np
import pytest

from lpipdiff.evaluation.metrics import psnr
from lpipdiff.evaluation.pairs import make_test_set
from lpipdiff.io.images import list_images, load_image_file
from lpipdiff.training.degradation import PRESETS, Degradation, image_seed


def test_same_seed_same_degradation(val_faces):
    degradation = Degradation("moderate", face_size=64)
    first = degradation(val_faces[0], np.random.default_rng(7))
    again = degradation(val_faces[0], np.random.default_rng(7))
    other = degradation(val_faces[0], np.random.default_rng(8))
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    assert first.shape == val_faces[0].shape and first.dtype == np.float32
    assert 0 <= first.min() and first.max() <= 1


def test_severe_destroys_more_than_moderate(val_faces):
    scores = {}
    for preset in PRESETS:
        degradation = Degradation(preset, face_size=64, color=False)
        scores[preset] = np.mean([psnr(degradation(f, image_seed(0, str(i))), f) for i, f in enumerate(val_faces)])
    assert scores["severe"] < scores["moderate"] - 1.0


def test_blur_scales_with_face_size():
    assert Degradation("moderate", face_size=512).kernel_size == 41
    assert Degradation("moderate", face_size=128).kernel_size == 11
    assert Degradation("moderate", face_size=32).kernel_size == 3


def test_a_preset_loses_as_much_at_128_as_at_512(val_faces):
    """Degrading at 512 and shrinking to 128 should look like degrading at 128 directly."""
    import cv2

    from conftest import UTKFACE_VAL

    face = cv2.resize(load_image_file(list_images(UTKFACE_VAL)[0]), (512, 512), interpolation=cv2.INTER_CUBIC)
    small = cv2.resize(face, (128, 128), interpolation=cv2.INTER_AREA)
    for preset in PRESETS:
        big, little = Degradation(preset, 512, color=False), Degradation(preset, 128, color=False)

        def shrink(image):
            return cv2.resize(image, (128, 128), interpolation=cv2.INTER_AREA)

        at_512 = np.mean([psnr(shrink(big(face, image_seed(s, "x"))), small) for s in range(12)])
        at_128 = np.mean([psnr(little(small, image_seed(s, "x")), small) for s in range(12)])
        assert abs(at_512 - at_128) < 1.0, (preset, at_512, at_128)


def test_unknown_preset():
    with pytest.raises(ValueError, match="moderate"):
        Degradation("apocalyptic")


@pytest.mark.shared
def test_test_set_is_reproducible_and_independent_of_order(tmp_path):
    from conftest import UTKFACE_VAL

    source = tmp_path / "faces"
    source.mkdir()
    for path in list_images(UTKFACE_VAL)[:3]:
        (source / path.name).write_bytes(path.read_bytes())
    names = make_test_set(source, tmp_path / "a", "severe", face_size=48, seed=3)
    (source / "zzz_extra.png").write_bytes((source / sorted(p.name for p in source.iterdir())[0]).read_bytes())
    make_test_set(source, tmp_path / "b", "severe", face_size=48, seed=3)
    assert len(names) == 3
    for name in names:
        a = load_image_file(tmp_path / "a" / "degraded" / name)
        assert a.shape == (48, 48, 3)
        assert np.array_equal(a, load_image_file(tmp_path / "b" / "degraded" / name))
        assert not np.array_equal(a, load_image_file(tmp_path / "a" / "clean" / name))
    tail = make_test_set(source, tmp_path / "c", "severe", face_size=48, seed=3, limit=2, offset=1)
    assert tail == names[1:]
    assert np.array_equal(load_image_file(tmp_path / "c" / "degraded" / tail[0]),
                          load_image_file(tmp_path / "a" / "degraded" / tail[0]))
