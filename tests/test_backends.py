"""The UNet's backends (lpipdiff.model.backends): ONNX export, ONNX Runtime / OpenVINO against torch, the choice."""

import numpy as np
import pytest
import torch

from lpipdiff.hub import publish as hub
from lpipdiff.model import backends
from lpipdiff.model.backends import BackendUNet, choose_backend, export_onnx, with_backend
from lpipdiff.model.folder_checks import ModelLoadError
from lpipdiff.model.loading import load_pipeline
from lpipdiff.model.sampling import sampling_pipeline

from conftest import generator, tiny_pipeline

# fp32 ONNX Runtime against fp32 torch: the same arithmetic in another order (measured: 2e-6 on the
# bundled model's outputs of about 0.8); bf16 (OpenVINO on a CPU with native bf16) is coarser.
FP32_TOLERANCE = 1e-4
BF16_TOLERANCE = 0.1


def unet_inputs(unet, count=5):
    size = unet.config.patch_size
    torch.manual_seed(1)
    return [torch.randn(count, c, size, size) for c in (3, 3, 2, 3)]


def torch_prediction(unet, inputs, timestep=321):
    with torch.no_grad():
        return unet(inputs[0], timestep, *inputs[1:])


def face(size=32):
    return np.random.default_rng(0).random((size, size, 3), dtype=np.float32)


def test_onnxruntime_unet_matches_torch_at_any_batch(tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    assert onnxruntime
    unet = tiny_pipeline().unet
    path = export_onnx(unet, tmp_path / "unet.onnx")
    fast = with_backend(unet, "onnxruntime", onnx_path=path, threads=1)
    assert isinstance(fast, BackendUNet) and fast.backend == "onnxruntime"
    for count in (1, 5, 12):  # the graph's batch is dynamic
        inputs = unet_inputs(unet, count)
        expected = torch_prediction(unet, inputs)
        got = fast(inputs[0], torch.tensor(321), *inputs[1:])
        assert got.shape == expected.shape
        assert (got - expected).abs().max() < FP32_TOLERANCE


def test_onnxruntime_pipeline_restores_a_face_like_torch(tmp_path):
    pytest.importorskip("onnxruntime")
    pipeline = tiny_pipeline()
    path = export_onnx(pipeline.unet, tmp_path / "unet.onnx")
    fast = sampling_pipeline(pipeline)
    fast.unet = with_backend(pipeline.unet, "onnxruntime", onnx_path=path, threads=1)
    expected = pipeline(face(), generator=generator(), output_type="np")
    got = fast(face(), generator=generator(), output_type="np")
    assert got.images.shape == expected.images.shape == (1, 32, 32, 3)
    assert np.isfinite(got.images).all()
    assert np.abs(got.images - expected.images).max() < FP32_TOLERANCE
    assert np.abs(got.uncertainty - expected.uncertainty).max() < FP32_TOLERANCE


def test_openvino_pipeline_restores_a_face_close_to_torch(tmp_path):
    pytest.importorskip("openvino")
    pipeline = tiny_pipeline()
    fast = sampling_pipeline(pipeline)
    fast.unet = with_backend(pipeline.unet, "openvino", cache_dir=tmp_path, threads=1)
    expected = pipeline(face(), generator=generator(), output_type="np")
    got = fast(face(), generator=generator(), output_type="np")
    assert np.isfinite(got.images).all()
    tolerance = BF16_TOLERANCE if backends.native_bf16() else FP32_TOLERANCE
    assert np.abs(got.images - expected.images).max() < tolerance
    assert list(tmp_path.glob("unet-*.onnx")), "the graph exported on the fly is cached"


def test_export_onnx_adds_the_unet_and_load_pipeline_samples_with_it(saved_pipeline, tmp_path):
    pytest.importorskip("onnxruntime")
    folder = hub.export(saved_pipeline, tmp_path / "export", repo_id="org/tiny", onnx=True)
    assert (folder / "unet" / "model.onnx").is_file()
    card = (folder / "README.md").read_text()
    assert 'backend="onnxruntime"' in card and "--backend onnxruntime" in card
    plain = load_pipeline(folder, device="cpu", backend="torch")
    fast = load_pipeline(folder, device="cpu", backend="onnxruntime", cache_dir=tmp_path / "unused")
    assert isinstance(fast.unet, BackendUNet)
    assert not (tmp_path / "unused").exists(), "the folder's own model.onnx is used, nothing exported"
    expected = plain(face(), generator=generator(), output_type="np").images
    got = fast(face(), generator=generator(), output_type="np").images
    assert np.abs(got - expected).max() < FP32_TOLERANCE


def test_a_gpu_keeps_torch_and_bf16_needs_a_native_bf16_cpu(monkeypatch):
    assert choose_backend("auto", "cuda") == "torch"
    with pytest.raises(ValueError, match="CPU only"):
        choose_backend("onnxruntime", "cuda")
    with pytest.raises(ValueError, match="backend must be one of"):
        choose_backend("tensorrt", "cpu")
    monkeypatch.setattr(backends, "native_bf16", lambda: False)
    with pytest.raises(ValueError, match="native bf16"):
        choose_backend("torch-bf16", "cpu")
    monkeypatch.setattr(backends, "installed", lambda name: True)
    assert choose_backend("auto", "cpu") == "onnxruntime"  # never bf16 without native bf16
    monkeypatch.setattr(backends, "native_bf16", lambda: True)
    assert choose_backend("auto", "cpu") == "openvino"
    monkeypatch.setattr(backends, "installed", lambda name: False)
    assert choose_backend("auto", "cpu") == "torch-bf16"
    monkeypatch.setattr(backends, "native_bf16", lambda: False)
    assert choose_backend("auto", "cpu") == "torch"


def test_a_backend_that_is_not_installed_is_a_load_error(saved_pipeline, monkeypatch):
    def missing(*args, **kwargs):
        raise ImportError("No module named 'onnxruntime'")

    monkeypatch.setattr(backends, "_onnxruntime", missing)
    monkeypatch.setattr("lpipdiff.model.loading.with_backend", lambda *a, **k: missing())
    with pytest.raises(ModelLoadError, match="not installed"):
        load_pipeline(saved_pipeline, device="cpu", backend="onnxruntime")


def test_the_onnx_unet_takes_one_timestep_for_all_patches(tmp_path):
    pytest.importorskip("onnxruntime")
    unet = tiny_pipeline().unet
    fast = with_backend(unet, "onnxruntime", onnx_path=export_onnx(unet, tmp_path / "u.onnx"), threads=1)
    inputs = unet_inputs(unet, 2)
    same = fast(inputs[0], torch.tensor([7, 7]), *inputs[1:])
    assert (same - torch_prediction(unet, inputs, 7)).abs().max() < FP32_TOLERANCE
    with pytest.raises(ValueError, match="one timestep"):
        fast(inputs[0], torch.tensor([7, 8]), *inputs[1:])
