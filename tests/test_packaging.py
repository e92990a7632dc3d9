"""The package works without the checkout: its wheel carries every module and the default model."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # builds a wheel

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_carries_the_modules_and_the_bundled_model(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = tmp_path.glob("lpipdiff-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {f"lpipdiff/{p.name}" for p in (ROOT / "lpipdiff").glob("*.py")}
    assert modules <= names
    bundled = ROOT / "lpipdiff" / "bundled"
    model_files = {str(p.relative_to(ROOT)) for p in bundled.rglob("*") if p.is_file()}
    assert model_files and model_files <= names
    assert "lpipdiff/bundled/lpipdiff-utkface-128/unet/diffusion_pytorch_model.safetensors" in names
