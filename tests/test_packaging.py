"""The package works without the checkout: its wheel carries every module, the model card's
template and the default model; and the requirements files pin what pyproject.toml asks for."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lpipdiff"
REQUIREMENTS = sorted(ROOT.glob("requirements*.txt"))
# Packages whose private state the code sets itself (facexlib's FaceRestoreHelper attributes, in
# lpipdiff.faces.face_helper): pyproject.toml pins them exactly, as the requirements do.
EXACT = {"facexlib"}


@pytest.mark.slow  # builds a wheel
def test_the_wheel_carries_the_modules_and_the_bundled_model(tmp_path):
    # Built from a copy of what the build reads, so that nothing (build/, *.egg-info) is written
    # into the checkout and nothing left there from an earlier build is packed.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(PACKAGE, source / "lpipdiff", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
         str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = tmp_path.glob("lpipdiff-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}
    assert {"lpipdiff/hub/card.py", "lpipdiff/model/unet.py"} <= modules and modules <= names
    assert "lpipdiff/hub/model_card.md" in names
    bundled = PACKAGE / "bundled"
    model_files = {str(p.relative_to(ROOT)) for p in bundled.rglob("*") if p.is_file()}
    assert model_files and model_files <= names
    assert "lpipdiff/bundled/lpipdiff-utkface-128/unet/diffusion_pytorch_model.safetensors" in names


def requirement_pins() -> dict[str, set[str]]:
    """Every exact version the requirements files pin, by package."""
    pins = {}
    for path in REQUIREMENTS:
        for line in path.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line and not line.startswith("-"):
                requirement = Requirement(line)
                (spec,) = requirement.specifier  # the requirements files pin, one version each
                assert spec.operator == "==", f"{path.name}: {line} is not pinned"
                pins.setdefault(canonicalize_name(requirement.name), set()).add(spec.version)
    return pins


def pyproject_requirements() -> list[Requirement]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [line for lines in project.get("optional-dependencies", {}).values() for line in lines]
    return [Requirement(line) for line in project["dependencies"] + extras]


def test_pyproject_and_the_requirements_files_pin_the_same_versions():
    pins = requirement_pins()
    assert {name: versions for name, versions in pins.items() if len(versions) > 1} == {}
    named = pyproject_requirements()
    unpinned = {canonicalize_name(requirement.name) for requirement in named} - set(pins)
    assert not unpinned, f"pyproject.toml names packages no requirements file pins: {unpinned}"
    for requirement in named:
        (version,) = pins[canonicalize_name(requirement.name)]
        assert requirement.specifier.contains(version, prereleases=True), f"{requirement} vs =={version}"
        if canonicalize_name(requirement.name) in EXACT:
            assert str(requirement.specifier) == f"=={version}", f"{requirement}: pin it as the requirements do"
