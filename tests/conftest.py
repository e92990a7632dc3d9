import os
import shutil
from pathlib import Path

import pytest
import torch

from lpipdiff import LPIPDiffPipeline, PatchFusionUNet
from lpipdiff.config.environment import FACE_WEIGHTS_ENV
from lpipdiff.io.images import list_images, load_image_file, resize_array
from lpipdiff.model.sampling import build_scheduler

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
UTKFACE_VAL = SHARED / "data" / "utkface" / "val"
UTKFACE_TRAIN = SHARED / "data" / "utkface" / "train"
FACE_WEIGHTS = SHARED / "weights" / "facexlib"
# Tests marked "shared" need the development data and weights beside the checkout; elsewhere
# (a fresh clone) they are skipped with this reason and the rest run on data the repository makes.
SHARED_MISSING = (
    None if UTKFACE_VAL.is_dir() and FACE_WEIGHTS.is_dir()
    else f"needs ../shared beside the checkout ({SHARED}: UTKFace faces, facexlib weights)"
)
# The CLI reads the detector weights from the environment; its subprocesses in the tests inherit this.
os.environ.setdefault(FACE_WEIGHTS_ENV, str(FACE_WEIGHTS))


def pytest_collection_modifyitems(config, items):
    if SHARED_MISSING:
        for item in items:
            if item.get_closest_marker("shared"):
                item.add_marker(pytest.mark.skip(reason=SHARED_MISSING))


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="session")
def example_faces(tmp_path_factory) -> Path:
    """A folder of the repository's own example images (faces and photos), for tests that need a
    folder of images but not the development data."""
    folder = tmp_path_factory.mktemp("example_faces")
    for path in sorted(EXAMPLES.glob("*.png")):
        shutil.copy(path, folder / path.name)
    return folder


def skip_without_shared() -> None:
    if SHARED_MISSING:
        pytest.skip(SHARED_MISSING)


def tiny_unet(face_size=32, patch_size=16, **overrides) -> PatchFusionUNet:
    torch.manual_seed(0)
    config = dict(
        face_size=face_size,
        patch_size=patch_size,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
        attention_head_dim=8,
    )
    config.update(overrides)
    return PatchFusionUNet(**config).eval()


def tiny_pipeline(**overrides) -> LPIPDiffPipeline:
    pipeline = LPIPDiffPipeline(unet=tiny_unet(**overrides), scheduler=build_scheduler())
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture
def pipeline():
    return tiny_pipeline()


@pytest.fixture(scope="session")
def val_faces():
    """Eight real val faces, 64x64 float RGB."""
    skip_without_shared()
    return [resize_array(load_image_file(p), 64) for p in list_images(UTKFACE_VAL)[:8]]


@pytest.fixture
def saved_pipeline(tmp_path, pipeline):
    folder = tmp_path / "model"
    pipeline.save_pretrained(folder)
    return folder


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def copy_val_faces(folder: Path, count: int) -> Path:
    """A folder holding copies of the first ``count`` real val faces."""
    skip_without_shared()
    folder.mkdir(parents=True, exist_ok=True)
    for path in list_images(UTKFACE_VAL)[:count]:
        shutil.copy(path, folder / path.name)
    return folder


def face_restorer(pipeline, **settings):
    """A FaceRestorer with the development checkout's detector weights (skips without them)."""
    from lpipdiff.faces.restorer import FaceRestorer

    skip_without_shared()
    return FaceRestorer(pipeline, weights_dir=FACE_WEIGHTS, **settings)
