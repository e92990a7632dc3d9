"""Hub export and publishing, all offline."""

import json
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from lpipdiff.cli.commands import main
from lpipdiff.hub.export import export
from lpipdiff.hub.publish import push
from lpipdiff.hub.space import space_folder, space_front_matter

from conftest import generator

pytestmark = pytest.mark.slow  # exports, subprocesses without lpipdiff, offline Hub cache

ROOT = Path(__file__).resolve().parents[1]

# Runs in a fresh interpreter where `import lpipdiff` fails, as on a machine without the package.
WITHOUT_LPIPDIFF = """
import sys, numpy as np, torch
sys.modules["lpipdiff"] = None
from diffusers import DiffusionPipeline

source, face, out = sys.argv[1], np.load(sys.argv[2]), sys.argv[3]
pipe = DiffusionPipeline.from_pretrained(source, trust_remote_code=True)
assert type(pipe).__name__ == "LPIPDiffPipeline" and not type(pipe).__module__.startswith("lpipdiff")
pipe.set_progress_bar_config(disable=True)
images = pipe(face, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np").images
np.save(out, images)
"""


def run_without_lpipdiff(source, face, tmp_path, env=None):
    np.save(tmp_path / "face.npy", face)
    out = tmp_path / "out.npy"
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_LPIPDIFF, str(source), str(tmp_path / "face.npy"), str(out)],
        cwd=tmp_path,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return np.load(out)


@pytest.fixture
def exported(tmp_path, saved_pipeline):
    return export(saved_pipeline, tmp_path / "export", repo_id="org/lpipdiff-tiny")


def test_export_is_self_contained_and_gives_the_same_output(pipeline, exported, val_faces, tmp_path):
    for name in (
        "model_index.json",
        "pipeline_lpipdiff.py",
        "patches.py",
        "unet.py",
        "images.py",
        "README.md",
        "unet/lpipdiff_unet.py",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "scheduler/scheduler_config.json",
    ):
        assert (exported / name).is_file(), name
    assert not list(exported.rglob("*.bin")) and not list(exported.rglob("*.pkl"))
    expected = pipeline(val_faces[0], num_inference_steps=3, generator=generator(), output_type="np").images
    np.testing.assert_array_equal(run_without_lpipdiff(exported, val_faces[0], tmp_path), expected)
    # Where lpipdiff is installed, no remote code is needed.
    from lpipdiff import LPIPDiffPipeline

    local = LPIPDiffPipeline.from_pretrained(exported)
    local.set_progress_bar_config(disable=True)
    actual = local(val_faces[0], num_inference_steps=3, generator=generator(), output_type="np").images
    np.testing.assert_array_equal(actual, expected)


def test_resaving_a_remotely_loaded_pipeline_keeps_the_hub_layout(exported, tmp_path):
    script = (
        "import sys; sys.modules['lpipdiff'] = None\n"
        "from diffusers import DiffusionPipeline\n"
        f"pipe = DiffusionPipeline.from_pretrained({str(exported)!r}, trust_remote_code=True)\n"
        f"pipe.save_pretrained({str(tmp_path / 'again')!r})\n"
        f"DiffusionPipeline.from_pretrained({str(tmp_path / 'again')!r}, trust_remote_code=True)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    index = json.loads((tmp_path / "again" / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_lpipdiff", "LPIPDiffPipeline"]
    assert index["unet"] == ["lpipdiff_unet", "PatchFusionUNet"]


def test_repo_id_loads_from_a_prepopulated_offline_cache(pipeline, exported, val_faces, tmp_path):
    cache = tmp_path / "hub"
    revision = "0123456789abcdef0123456789abcdef01234567"
    snapshot = cache / "models--org--lpipdiff-tiny" / "snapshots" / revision
    __import__("shutil").copytree(exported, snapshot)
    (cache / "models--org--lpipdiff-tiny" / "refs").mkdir()
    (cache / "models--org--lpipdiff-tiny" / "refs" / "main").write_text(revision)
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    expected = pipeline(val_faces[0], num_inference_steps=3, generator=generator(), output_type="np").images
    np.testing.assert_array_equal(run_without_lpipdiff("org/lpipdiff-tiny", val_faces[0], tmp_path, env), expected)
    script = (
        "import numpy as np, torch\nfrom lpipdiff import LPIPDiffPipeline\n"
        "pipe = LPIPDiffPipeline.from_pretrained('org/lpipdiff-tiny')\npipe.set_progress_bar_config(disable=True)\n"
        f"face = np.load({str(tmp_path / 'face.npy')!r})\n"
        "out = pipe(face, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type='np').images\n"
        f"np.save({str(tmp_path / 'local.npy')!r}, out)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env={**os.environ, **env}, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_array_equal(np.load(tmp_path / "local.npy"), expected)


def test_model_card_names_usage_data_terms_and_citation(exported):
    card = (exported / "README.md").read_text()
    for needle in (
        "trust_remote_code=True",
        "lpipdiff restore",
        "app.py",
        "non-commercial",
        "UTKFace",
        "Limitations",
        "10.1109/ICASSP49660.2025.10888736",
        "library_name: diffusers",
    ):
        assert needle in card, needle
    assert "{{" not in card and "{%" not in card  # the template is rendered through


def test_model_card_includes_evaluation_when_present(saved_pipeline, tmp_path):
    evaluation = {
        "settings": {"fidelity": 0.3, "num_inference_steps": 10, "fusion": "window", "patch_stride": None},
        "presets": {"severe": {"degraded input": {"n": 4, "psnr": 20.0}, "LPIP-Diff": {"n": 4, "psnr": 21.5}}},
    }
    (saved_pipeline / "evaluation.json").write_text(json.dumps(evaluation))
    (saved_pipeline / "training_config.json").write_text(json.dumps({"steps": 1234, "wall_seconds": 3600, "args": {}}))
    card = (export(saved_pipeline, tmp_path / "out") / "README.md").read_text()
    assert "| severe | LPIP-Diff | 4 | 21.5 |" in card and "1234 steps" in card
    # The table says which sampler and how many faces its figures are for.
    assert "Sampler: fidelity 0.3, num_inference_steps 10, fusion window. 4 held-out faces" in card

    # The figures of every age band with faces, and the evaluation's notes, are on the card.
    evaluation["bands"] = {"severe": {
        "0-12": {"degraded input": {"n": 3, "psnr": 19.0}, "LPIP-Diff": {"n": 3, "psnr": 21.0}},
        "60+": {"degraded input": {"n": 0}, "LPIP-Diff": {"n": 0}},
    }}
    evaluation["notes"] = ["No face of these is over 60."]
    (saved_pipeline / "evaluation.json").write_text(json.dumps(evaluation))
    card = (export(saved_pipeline, tmp_path / "out2") / "README.md").read_text()
    assert "| severe | 0-12 | LPIP-Diff | 3 | 21 |" in card and "No face of these is over 60." in card
    assert "| severe | 60+ |" not in card


def test_push_uploads_everything_a_user_needs(saved_pipeline, monkeypatch):
    from huggingface_hub import HfApi

    api = mock.create_autospec(HfApi, instance=True)
    uploaded = {}

    def record(**kwargs):
        folder = Path(kwargs["folder_path"])
        uploaded.update({str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()})
        return mock.Mock(commit_url="https://huggingface.co/org/name/commit/1")

    api.upload_folder.side_effect = record
    monkeypatch.setattr("huggingface_hub.HfApi", lambda token=None: api)
    assert (
        push(saved_pipeline, "org/name", private=True, token="hf_test")
        == "https://huggingface.co/org/name/commit/1"
    )
    api.create_repo.assert_called_once_with("org/name", repo_type="model", private=True, exist_ok=True)
    assert {
        "model_index.json",
        "pipeline_lpipdiff.py",
        "unet/lpipdiff_unet.py",
        "README.md",
        "unet/diffusion_pytorch_model.safetensors",
        "scheduler/scheduler_config.json",
    } <= set(uploaded)


def test_push_space_uploads_app_package_and_front_matter(saved_pipeline, monkeypatch, tmp_path):
    folder = space_folder(tmp_path / "space", model_repo="org/name")
    readme = (folder / "README.md").read_text()
    assert "sdk: gradio" in readme and 'python_version: "3.11"' in readme and "app_file: app.py" in readme
    assert (folder / "lpipdiff" / "model" / "pipeline_lpipdiff.py").is_file() and (folder / "app.py").is_file()
    assert (folder / "requirements.txt").is_file() and list((folder / "examples").glob("*.png"))
    assert not (folder / "lpipdiff" / "bundled").exists()  # the Space downloads the model repo
    # Every file of the package travels, its non-Python files (the model card's template) included.
    package = ROOT / "lpipdiff"
    needed = {
        str(p.relative_to(package)) for p in package.rglob("*")
        if p.is_file() and not {"__pycache__", "bundled"} & set(p.parts)
    }
    assert "hub/model_card.md" in needed
    assert needed <= {str(p.relative_to(folder / "lpipdiff")) for p in (folder / "lpipdiff").rglob("*") if p.is_file()}
    assert readme.startswith(space_front_matter()[:-4]) and "models:\n  - org/name" in readme
    bundled = space_folder(tmp_path / "bundled", bundle_model=saved_pipeline)
    weights = bundled / "lpipdiff" / "bundled" / "lpipdiff-utkface-128" / "unet" / "diffusion_pytorch_model.safetensors"
    assert weights.read_bytes() == (saved_pipeline / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()


def test_push_without_token_or_network_fails_clearly(saved_pipeline, monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    assert main(["push", "--model", str(saved_pipeline), "--repo-id", "org/name"]) == 1
    assert "no Hugging Face token" in capsys.readouterr().err
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    assert main(["push", "--model", str(saved_pipeline), "--repo-id", "org/name", "--token", "hf_test"]) == 1
    assert "offline?" in capsys.readouterr().err


def test_remote_code_is_exactly_what_the_pipeline_file_imports(exported):
    """The copied modules are the pipeline file's relative imports, followed
    transitively through the package, flattened beside it with single-dot imports."""
    import ast

    package = ROOT / "lpipdiff"
    needed, todo = {}, [package / "model" / "pipeline_lpipdiff.py"]
    while todo:
        source = todo.pop()
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level >= 1:
                base = source.parents[node.level - 1]
                path = base.joinpath(*node.module.split(".")).with_suffix(".py")
                if path.stem not in needed:
                    needed[path.stem] = path
                    todo.append(path)
    copied = {p.stem for p in exported.glob("*.py")} - {"pipeline_lpipdiff"}
    assert copied == set(needed) and {"hub_layout", "defaults", "images"} <= copied
    for name in needed:
        text = (exported / f"{name}.py").read_text()
        assert "from .." not in text
        flat = [node for node in ast.walk(ast.parse(text)) if isinstance(node, ast.ImportFrom) and node.level]
        assert all(node.level == 1 and node.module in needed for node in flat), name


def test_from_pretrained_passes_every_keyword_on(exported):
    import torch

    from lpipdiff import LPIPDiffPipeline

    assert LPIPDiffPipeline.from_pretrained(exported, torch_dtype=torch.float16).unet.dtype == torch.float16
    with pytest.raises(OSError, match="fp8"):  # a variant that is not there is an error, not ignored
        LPIPDiffPipeline.from_pretrained(exported, variant="fp8")


def test_model_card_says_what_to_install_and_how_it_was_trained(saved_pipeline, tmp_path):
    record = {
        "steps": 2000,
        "wall_seconds": 7200,
        "machine": "one test machine",
        "args": {
            "data": "faces/",
            "prediction_type": "v_prediction",
            "residual": True,
            "batch_size": 16,
            "learning_rate": 3e-4,
            "lr_schedule": "cosine",
            "ema_decay": 0.999,
        },
        "segments": [{"steps": [0, 2000], "wall_seconds": 7200, "how": "the only segment"}],
    }
    (saved_pipeline / "training_config.json").write_text(json.dumps(record))
    card = (export(saved_pipeline, tmp_path / "out") / "README.md").read_text()
    install = next(line for line in card.splitlines() if line.startswith("pip install "))
    assert set(install.split()[2:]) == {"diffusers", "numpy", "opencv-python", "pillow", "torch", "huggingface_hub"}
    assert "2000 steps (2.00 h of wall time) on one test machine" in card and "the only segment" in card
    assert "briefly on CPU" not in card


def test_space_front_matter_is_the_readme_s_and_matches_the_pinned_gradio():
    import gradio

    front = space_front_matter()
    assert (ROOT / "README.md").read_text().startswith(front)
    assert f"sdk_version: {gradio.__version__}\n" in front


def test_exported_files_get_the_mode_of_a_new_file(exported):
    """safetensors writes its file 0600 (an atomic rename); everything exported gets the umask's mode."""
    umask = os.umask(0)
    os.umask(umask)
    modes = {path.name: path.stat().st_mode & 0o777 for path in exported.rglob("*") if path.is_file()}
    assert modes["diffusion_pytorch_model.safetensors"] == 0o666 & ~umask, modes
    assert set(modes.values()) == {0o666 & ~umask}
