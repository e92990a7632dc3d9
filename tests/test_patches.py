import pytest
import torch

from lpipdiff.model.patches import PatchGrid, fusion_window, grid_starts


@pytest.mark.parametrize(
    "size,patch,stride", [(128, 64, 32), (100, 64, 30), (37, 16, 5), (64, 64, 8), (65, 64, 64), (17, 3, 2)]
)
def test_grid_covers_every_pixel_and_stays_inside(size, patch, stride):
    starts = grid_starts(size, patch, stride)
    assert starts[0] == 0 and starts[-1] == size - patch
    assert all(b - a <= stride for a, b in zip(starts, starts[1:]))
    covered = torch.zeros(size, dtype=torch.bool)
    for s in starts:
        covered[s : s + patch] = True
    assert covered.all()


def test_grid_rejects_impossible_geometry():
    with pytest.raises(ValueError, match="larger than the image"):
        grid_starts(32, 64, 16)
    with pytest.raises(ValueError, match="stride"):
        grid_starts(128, 64, 65)
    with pytest.raises(ValueError, match="fusion"):
        fusion_window(8, "median")


@pytest.mark.parametrize("fusion", ["uniform", "window"])
@pytest.mark.parametrize("height,width,patch,stride", [(128, 128, 64, 32), (100, 70, 32, 13), (37, 41, 16, 5)])
def test_crop_then_fuse_returns_the_image_exactly(fusion, height, width, patch, stride):
    grid = PatchGrid(height, width, patch, stride, fusion)
    images = torch.rand(2, 3, height, width)
    fused, spread = grid.fuse(grid.crop(images), return_spread=True)
    assert torch.equal(fused, images)
    assert spread.abs().max() < 1e-3


def test_crop_order_is_image_major_and_matches_positions():
    grid = PatchGrid(40, 40, 16, 12)
    images = torch.rand(2, 1, 40, 40)
    patches = grid.crop(images)
    assert patches.shape == (2 * grid.num_patches, 1, 16, 16)
    for b in range(2):
        for n, (top, left) in enumerate(grid.positions):
            assert torch.equal(patches[b * grid.num_patches + n], images[b, :, top : top + 16, left : left + 16])


def test_fusion_is_a_weighted_mean_and_spread_measures_disagreement():
    grid = PatchGrid(8, 8, 4, 2)  # 3x3 patches, centre pixel covered by four
    values = torch.arange(grid.num_patches, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 4, 4).contiguous()
    fused, spread = grid.fuse(values, return_spread=True)
    # Pixel (3, 3) lies in patches (0,0), (0,2), (2,0), (2,2) of the grid: indices 0, 1, 3, 4.
    assert fused[0, 0, 3, 3] == pytest.approx(2.0)
    assert spread[0, 0, 3, 3] == pytest.approx(torch.tensor([0.0, 1, 3, 4]).std(unbiased=False).item(), rel=1e-5)
    assert spread[0, 0, 0, 0] == 0  # one patch only


def test_window_weights_favour_patch_centres():
    weight = fusion_window(16, "window")
    assert weight.min() > 0
    assert weight[8, 8] > weight[0, 8] > weight[0, 0]
