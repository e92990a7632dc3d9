"""Age bands of UTKFace names: parsing, per-band figures, weighted training draws."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lpipdiff.evaluation.age_bands import (
    BAND_NAMES,
    age_from_name,
    band_counts,
    band_of_age,
    band_of_name,
    band_shares,
    parse_band_weights,
    per_band,
    sampling_weights,
)
from lpipdiff.evaluation.reports import results_table
from lpipdiff.io.images import save_image
from lpipdiff.training.data import FacesInMemory, open_faces, pack_faces
from lpipdiff.training.train import build_parser, training_batches

from conftest import UTKFACE_VAL


def test_age_is_read_from_utkface_names_and_pair_names():
    assert age_from_name("65_1_0_20170110122011555.jpg.chip.jpg") == 65
    assert age_from_name("runs/pairs/severe/clean/1_0_2_20161219140530307.png") == 1
    assert age_from_name("116_0_0_x.jpg") == 116
    assert age_from_name("face.png") is None
    assert age_from_name("a_1_0.png") is None


@pytest.mark.parametrize("age, band", [(0, "0-12"), (12, "0-12"), (13, "13-19"), (19, "13-19"),
                                       (20, "20-59"), (59, "20-59"), (60, "60+"), (116, "60+")])
def test_band_edges(age, band):
    assert band_of_age(age) == band


def test_negative_age_is_refused_and_nameless_faces_have_no_band():
    with pytest.raises(ValueError):
        band_of_age(-1)
    assert band_of_name("photo.png") is None


@pytest.mark.shared
def test_every_val_face_has_a_band():
    names = [p.name for p in UTKFACE_VAL.iterdir()]
    counts = band_counts(names)
    assert sum(counts.values()) == len(names) > 300
    assert all(counts[band] > 0 for band in BAND_NAMES)


def test_per_band_means_counts_and_empty_bands():
    names = ["3_0_0_a.png", "8_1_0_b.png", "45_0_1_c.png", "no_age.png"]
    result = per_band(names, {"identity": [0.1, 0.3, 0.5, 0.9], "psnr": [20.0, 22.0, 30.0, 0.0]})
    assert result["0-12"] == {"n": 2, "identity": pytest.approx(0.2), "psnr": pytest.approx(21.0)}
    assert result["20-59"] == {"n": 1, "identity": 0.5, "psnr": 30.0}
    assert result["13-19"] == {"n": 0} and result["60+"] == {"n": 0}
    assert per_band(names, {"x": [1, 2, 3, 4]}, aggregate=max)["0-12"]["x"] == 2
    with pytest.raises(ValueError):
        per_band(names, {"identity": [0.1]})


def test_band_weights_parse_both_forms_and_refuse_nonsense():
    assert parse_band_weights("0,0,1,1") == {"0-12": 0.0, "13-19": 0.0, "20-59": 1.0, "60+": 1.0}
    assert parse_band_weights("60+=3, 20-59=2") == {"0-12": 0.0, "13-19": 0.0, "20-59": 2.0, "60+": 3.0}
    for bad in ("1,2,3", "0,0,0,0", "30-40=1", "1,1,-1,1", "0-12=1,2"):
        with pytest.raises(ValueError):
            parse_band_weights(bad)


def test_sampling_weights_give_each_band_weight_times_count():
    names = ["5_0_0_a.png"] * 3 + ["30_0_0_b.png"] * 1 + ["70_0_0_c.png"] * 2 + ["x.png"]
    p = sampling_weights(names, parse_band_weights("0-12=1,20-59=3,60+=0.5"))
    assert p.sum() == pytest.approx(1.0) and p[-1] == 0
    shares = band_shares(names, p)
    assert shares == pytest.approx({"0-12": 3 / 7, "13-19": 0.0, "20-59": 3 / 7, "60+": 1 / 7})
    with pytest.raises(ValueError):
        sampling_weights(["x.png"], parse_band_weights("1,1,1,1"))


def _faces_folder(tmp_path):
    """Six tiny faces, one flat grey level per band, named like UTKFace files."""
    levels = {"4_0_0_a": 0.1, "9_1_0_b": 0.1, "15_0_0_c": 0.3, "33_1_0_d": 0.6, "41_0_0_e": 0.6, "77_0_0_f": 0.9}
    for name, level in levels.items():
        save_image(np.full((16, 16, 3), level, np.float32), tmp_path / "faces" / f"{name}.jpg.chip.png")
    return tmp_path / "faces"


def test_weighted_draws_from_a_folder_or_a_pack_take_only_the_weighted_bands(tmp_path):
    folder = _faces_folder(tmp_path)
    pack = tmp_path / "faces.npz"
    pack_faces(folder, pack)
    for source in (folder, pack):
        faces = open_faces(source, 16)
        # sorted by name: 15, 33, 41, 4, 77, 9
        assert [band_of_name(n) for n in faces.names] == ["13-19", "20-59", "20-59", "0-12", "60+", "0-12"]
        torch.manual_seed(0)
        weights = sampling_weights(faces.names, parse_band_weights("0,0,1,1"))
        drawn = FacesInMemory(faces, "cpu", weights=weights).next(600)
        levels = drawn.float().mean(dim=(1, 2, 3)) / 255
        adults, old = (levels - 0.6).abs() < 0.02, (levels - 0.9).abs() < 0.02
        assert bool((adults | old).all())  # no child nor teenager is ever drawn
        assert 0.25 < old.float().mean() < 0.42  # 1 face of 3 adults: a third of the draws


def test_train_option_reaches_the_batches(tmp_path):
    folder = _faces_folder(tmp_path)
    args = build_parser().parse_args(["--data", str(folder), "--output", str(tmp_path / "run"),
                                      "--batch-size", "4", "--patches-per-face", "1", "--band-weights", "0,0,0,1"])
    config = SimpleNamespace(face_size=16, patch_size=8)
    torch.manual_seed(0)
    batch = next(training_batches(args.data, config, "cpu", args.batch_size, args.patches_per_face, 2**30,
                                  args.num_workers, args.band_weights))
    # Only the 60+ face (grey 0.9, so 0.8 in [-1, 1]) is ever drawn; flips do not change a flat face.
    assert torch.allclose(batch["clean"], torch.full_like(batch["clean"], 0.9 * 2 - 1), atol=0.02)


def test_results_table_has_a_row_per_band_with_faces():
    def rows(n, before=None, after=None):
        if not n:
            return {"degraded input": {"n": 0}, "LPIP-Diff": {"n": 0}}
        return {"degraded input": {"n": n, "identity": before}, "LPIP-Diff": {"n": n, "identity": after}}

    results = {
        "presets": {"severe": rows(3, 0.4, 0.3)},
        "bands": {"severe": {"0-12": rows(2, 0.5, 0.3), "13-19": rows(0), "60+": rows(1, 0.2, 0.3)}},
    }
    table = results_table(results)
    assert "| severe | 0-12 | LPIP-Diff | 2 | 0.3 |" in table
    assert "| severe | 60+ | degraded input | 1 | 0.2 |" in table
    assert "13-19" not in table
