"""The demo's Hugging Face Space as a folder: the app, the package, requirements, examples and the
README's front matter, with the model either bundled or named for the Space to download."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from ..config.environment import MODEL_ENV
from ..io.safe_files import install_tree
from . import HubError

PACKAGE = Path(__file__).resolve().parents[1]
# The Space is made from a checkout: the demo and its files sit beside the package.
ROOT = PACKAGE.parent
SPACE_FILES = ["app.py", "requirements.txt", "examples", "README.md"]


def space_front_matter(model_repo: str | None = None) -> str:
    """The Space's front matter: the README's own (one source), plus the model repo it loads."""
    readme = (ROOT / "README.md").read_text()
    if not readme.startswith("---\n"):
        raise HubError(f"{ROOT / 'README.md'} has no Space front matter")
    front = readme[: readme.index("\n---\n", 4) + 1]
    if model_repo:
        front += f"models:\n  - {model_repo}\n"
    return front + "---\n"


def space_folder(output: Path, model_repo: str | None = None, bundle_model=None, overwrite: bool = False) -> Path:
    """The Space's files: the demo, the package, requirements, README front matter and the model
    (bundled, or named by $LPIPDIFF_MODEL so the Space loads it from the model repo). Files already
    in ``output`` are kept and named unless ``overwrite`` (see :func:`~lpipdiff.hub.export.export`)."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise HubError(f"{output} exists and is not a folder")
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
    try:
        _write_space(staging, model_repo, bundle_model)
        install_tree(staging, output, overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output


def _write_space(output: Path, model_repo: str | None, bundle_model) -> None:
    from ..model.loading import DEFAULT_MODEL, resolve_model

    missing = [name for name in SPACE_FILES if not (ROOT / name).exists()]
    if missing:
        raise HubError(f"push-space works from a checkout of the repository; {', '.join(missing)} not found in {ROOT}")
    output.mkdir(parents=True, exist_ok=True)
    for name in SPACE_FILES[:-1]:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, output / name, dirs_exist_ok=True)
        else:
            shutil.copy(source, output / name)
    # With a model repo the Space downloads its weights; else it serves the bundled (or given) model.
    skip = ["__pycache__", DEFAULT_MODEL.parent.name] if model_repo or bundle_model else ["__pycache__"]
    shutil.copytree(PACKAGE, output / "lpipdiff", ignore=shutil.ignore_patterns(*skip), dirs_exist_ok=True)
    if bundle_model and not model_repo:
        bundled = output / "lpipdiff" / DEFAULT_MODEL.relative_to(PACKAGE)
        shutil.copytree(resolve_model(bundle_model), bundled, dirs_exist_ok=True)
    (output / "README.md").write_text(
        space_front_matter(model_repo) + "\n"
        "Identity-preserving blind face restoration (LPIP-Diff). Upload a degraded photo; faces are detected, "
        "restored patch by patch by a diffusion model and pasted back.\n"
    )
    if model_repo:
        (output / ".env.example").write_text(f"{MODEL_ENV}={model_repo}\n")
