"""Background upscaling: small spandrel models with random weights, saved and loaded the way a
user's file is (no weights are downloaded: the short names are served from local files)."""

import os
import urllib.error

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from skimage import data

from lpipdiff.faces import upscaler as upscaler_module
from lpipdiff.faces.upscaler import KnownUpscaler, UpscalerError, load_upscaler, sha256_of
from lpipdiff.model.sampling import SamplingOptions

from conftest import face_restorer, tiny_pipeline


def compact(scale=2, num_conv=2):
    """Real-ESRGAN's SRVGGNetCompact, tiny: its receptive field is num_conv + 2 pixels."""
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(0)
    return Compact(num_feat=8, num_conv=num_conv, upscale=scale).eval()


def rrdb(scale=4):
    """ESRGAN's RRDBNet (Real-ESRGAN x4plus' architecture) with one block of few features."""
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(0)
    return ESRGAN(num_filters=8, num_blocks=1, scale=scale).eval()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("upscalers")
    save_file(compact().state_dict(), folder / "compact_x2.safetensors")
    save_file(rrdb().state_dict(), folder / "rrdb_x4.safetensors")
    torch.save({"params_ema": compact().state_dict()}, folder / "compact_x2.pth")  # Real-ESRGAN's own layout
    return folder


@pytest.fixture
def photo():
    return np.random.default_rng(0).random((150, 220, 3)).astype(np.float32)


def test_safetensors_and_weights_only_pth_load_through_one_path(weights, photo):
    from_safetensors = load_upscaler(weights / "compact_x2.safetensors", tile=4096)
    from_pth = load_upscaler(weights / "compact_x2.pth", tile=4096)
    assert from_safetensors.scale == from_pth.scale == 2
    assert type(from_safetensors.model.model).__name__ == "SRVGGNetCompact"
    assert np.array_equal(from_safetensors(photo), from_pth(photo))
    four = load_upscaler(weights / "rrdb_x4.safetensors")
    assert four.scale == 4 and four(photo).shape == (600, 880, 3)


def test_scale_factor_and_output_size(weights, photo):
    up = load_upscaler(weights / "compact_x2.safetensors", tile=64, overlap=16)
    assert up(photo).shape == (300, 440, 3)
    assert up(photo, 1.5).shape == (225, 330, 3)  # resized tile by tile to the asked size
    assert up(photo, 1).shape == photo.shape
    # A random Compact model adds its output to the nearest-neighbour upscale: close to the input.
    assert np.abs(up(photo, 1) - photo).mean() < 0.2


def test_tiled_equals_untiled(weights, photo):
    whole = load_upscaler(weights / "compact_x2.safetensors", tile=4096)(photo)
    # overlap 16: the outer quarter (4 px) of each overlap is dropped, the receptive field is 4 px.
    tiled = load_upscaler(weights / "compact_x2.safetensors", tile=64, overlap=16)
    assert tiled.tiles(*photo.shape[:2]) == 3 * 5  # starts 0, 48, 86 down; 0, 48, 96, 144, 156 across
    assert np.abs(tiled(photo) - whole).max() < 1e-5
    # RRDBNet sees much further than the overlap: tiles still agree closely, with no visible seam.
    rrdb_whole = load_upscaler(weights / "rrdb_x4.safetensors", tile=4096)(photo)
    rrdb_tiled = load_upscaler(weights / "rrdb_x4.safetensors", tile=64, overlap=16)(photo)
    assert np.abs(rrdb_tiled - rrdb_whole).max() < 0.02


def test_a_folder_resolves_to_its_weights_file(weights, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes((weights / "compact_x2.safetensors").read_bytes())
    assert load_upscaler(folder).scale == 2
    with pytest.raises(UpscalerError, match="no weights file"):
        load_upscaler(tmp_path / "model" / "..")  # tmp_path: no weights file directly inside
    with pytest.raises(UpscalerError, match="not a known upscaler"):
        load_upscaler("realesrgan-x8")


class RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this ran",))


def test_a_pickle_that_is_not_weights_only_is_refused(tmp_path, capfd):
    path = tmp_path / "model.pth"
    torch.save({"params": compact().state_dict(), "extra": RunsCode()}, path)
    with pytest.raises(UpscalerError, match=r"model.pth is refused: not a weights-only file .*posix.system"):
        load_upscaler(path)
    assert "this ran" not in capfd.readouterr().out


def test_files_that_are_not_upscalers(tmp_path):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a model")
    with pytest.raises(UpscalerError, match="cannot read weights"):
        load_upscaler(garbage)
    unknown = tmp_path / "unknown.safetensors"
    save_file({"layer.weight": torch.zeros(3, 3)}, unknown)
    with pytest.raises(UpscalerError, match="does not recognise"):
        load_upscaler(unknown)


@pytest.fixture
def served(weights, monkeypatch):
    """A short name whose 'release' is a local file (file:// URL), with its true checksum."""
    source = weights / "compact_x2.pth"
    known = KnownUpscaler("compact_x2.pth", source.as_uri(), sha256_of(source), source.stat().st_size, 2, "test")
    monkeypatch.setitem(upscaler_module.KNOWN_UPSCALERS, "test-x2", known)
    return known


def test_a_short_name_is_downloaded_once_into_the_cache_and_checked(served, tmp_path, monkeypatch):
    up = load_upscaler("test-x2", cache_dir=tmp_path)
    cached = tmp_path / served.sha256[:16] / "compact_x2.pth"
    assert up.scale == 2 and cached.is_file()

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(upscaler_module.urllib.request, "urlopen", offline)
    assert load_upscaler("test-x2", cache_dir=tmp_path).scale == 2  # from the cache, no network


def test_offline_without_the_weights_is_a_clear_message(served, tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(upscaler_module.urllib.request, "urlopen", offline)
    with pytest.raises(UpscalerError, match=r"'test-x2' is not in the cache .* could not be downloaded .* internet"):
        load_upscaler("test-x2", cache_dir=tmp_path)


def test_a_download_with_the_wrong_checksum_is_deleted(served, tmp_path, monkeypatch):
    wrong = KnownUpscaler(served.filename, served.url, "0" * 64, served.size, 2, "test")
    monkeypatch.setitem(upscaler_module.KNOWN_UPSCALERS, "test-x2", wrong)
    with pytest.raises(UpscalerError, match="not the pinned"):
        load_upscaler("test-x2", cache_dir=tmp_path)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_the_real_esrgan_names_are_pinned():
    for name in ("realesrgan-x2", "realesrgan-x4"):
        known = upscaler_module.KNOWN_UPSCALERS[name]
        assert known.url.startswith("https://github.com/xinntao/Real-ESRGAN/releases/download/")
        assert len(known.sha256) == 64 and int(known.sha256, 16)


@pytest.mark.slow
@pytest.mark.shared
def test_face_restorer_pastes_faces_onto_the_upscaled_background(weights):
    astronaut = data.astronaut().astype(np.float32) / 255.0
    up = load_upscaler(weights / "compact_x2.safetensors", tile=128, overlap=16)
    restorer = face_restorer(tiny_pipeline(face_size=32, patch_size=16), upscale=2, bg_upsampler=up)
    options = SamplingOptions(fidelity=None, steps=1)
    result = restorer.restore(astronaut, options)
    background = up(astronaut, 2)
    assert result.image.shape == background.shape == (1024, 1024, 3)
    left, top, right, bottom = (2 * v for v in result.boxes[0])
    away = np.ones(background.shape[:2], bool)
    height, width = bottom - top, right - left
    away[max(0, int(top - height)) : int(bottom + height), max(0, int(left - width)) : int(right + width)] = False
    assert np.abs(result.image - background)[away].max() <= 1 / 255  # the background is the upscaler's
    plain = restorer.restore(astronaut, options, background=False).image
    assert np.abs(plain - background)[away].mean() > 1 / 255  # and not the plain resize
    # No seam: across the face's pasted border the picture changes no more than inside the background.
    ring = np.zeros_like(away)
    ring[int(top - height / 2) : int(bottom + height / 2), int(left - width / 2) : int(right + width / 2)] = True
    ring[int(top) : int(bottom), int(left) : int(right)] = False
    steps = np.abs(np.diff(result.image, axis=1)).max(axis=2)
    background_steps = np.abs(np.diff(background, axis=1)).max(axis=2)
    assert np.percentile(steps[ring[:, 1:]], 99) <= np.percentile(background_steps[ring[:, 1:]], 99) + 0.05


@pytest.mark.slow
@pytest.mark.shared
def test_cli_whole_photo_with_a_background_upscaler(weights, tmp_path):
    from lpipdiff.cli.commands import main
    from lpipdiff.io.images import load_image_file, save_image

    save_image(data.astronaut().astype(np.float32) / 255, tmp_path / "photo.png")
    tiny_pipeline(face_size=32, patch_size=16).save_pretrained(tmp_path / "model")
    args = ["restore", str(tmp_path / "photo.png"), "--whole-photo", "--model", str(tmp_path / "model"),
            "--steps", "1", "--upscale", "2", "--bg-tile", "128"]
    assert main(args + ["-o", str(tmp_path / "out"), "--bg-upsampler", str(weights / "rrdb_x4.safetensors")]) == 0
    assert load_image_file(tmp_path / "out" / "photo_restored.png").shape == (1024, 1024, 3)
    assert main(args + ["-o", str(tmp_path / "bad"), "--bg-upsampler", str(tmp_path / "missing.pth")]) == 2


def test_cli_needs_whole_photo_for_a_background_upscaler(tmp_path, capsys):
    from lpipdiff.cli.commands import main

    assert main(["restore", str(tmp_path), "-o", str(tmp_path / "out"), "--bg-upsampler", "realesrgan-x4"]) == 2
    assert "add --whole-photo" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.shared
def test_demo_counts_the_background_and_falls_back_offline(weights, tmp_path):
    from lpipdiff.io.images import save_image
    from lpipdiff.serving.service import RestorationService, Watchdog
    from lpipdiff.serving.settings import ServingSettings

    from conftest import FACE_WEIGHTS

    save_image(data.astronaut().astype(np.float32) / 255, tmp_path / "photo.png")
    pipeline = tiny_pipeline(face_size=32, patch_size=16)

    def service(**settings):
        return RestorationService(ServingSettings(face_weights=str(FACE_WEIGHTS), bg_tile=128, **settings), pipeline)

    def run(svc, **values):
        request = svc.request(str(tmp_path / "photo.png"), "Whole photo", steps=1, fidelity=None, **values)
        return svc.restore(request, Watchdog(60, 60))

    served = service(bg_upsampler=str(weights / "compact_x2.safetensors"), bg_work_per_megapixel=100)
    result = run(served, upscale=2, background=True)
    assert result.restored.shape == (1024, 1024, 3) and "unavailable" not in result.status
    up = served.background_upscaler()
    assert served.background_work(up, 512, 512) == int(np.ceil(25 * 128 * 128 / 1e6 * 100))  # 5 x 5 tiles
    assert np.abs(result.restored[:100] - up(data.astronaut().astype(np.float32) / 255, 2)[:100]).max() <= 1 / 255
    job = served.submit(served.request(str(tmp_path / "photo.png"), "Whole photo", steps=1, background=True))
    job.result()
    assert served.lanes["heavy"]._threads and not served.lanes["light"]._threads  # the heavy lane took it
    too_dear = service(bg_upsampler=str(weights / "compact_x2.safetensors"), bg_work_per_megapixel=10**6)
    with pytest.raises(ValueError, match="turn background upscaling off"):
        run(too_dear, background=True)
    offline = service(bg_upsampler=str(tmp_path / "not-downloaded.pth"))
    result = run(offline, upscale=2, background=True)
    assert result.restored.shape == (1024, 1024, 3)
    assert "Background upscaling is unavailable" in result.status and "resized plainly" in result.status
