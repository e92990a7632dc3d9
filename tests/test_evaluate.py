"""`lpipdiff evaluate` end to end, on a tiny random model and real val faces."""

import json

import numpy as np
import pytest

from lpipdiff.cli.commands import main
from lpipdiff.evaluation.age_bands import band_of_name
from lpipdiff.evaluation.metrics import psnr
from lpipdiff.evaluation.pairs import load_pairs

from conftest import UTKFACE_VAL

# The evaluation command end to end, with dlib, ST-LPIPS and FID, on the UTKFace val faces.
pytestmark = [pytest.mark.slow, pytest.mark.shared]


def evaluate(tmp_path, model, *extra):
    output = tmp_path / "eval"
    arguments = ["evaluate", "--data", str(UTKFACE_VAL), "--output", str(output), "--model", str(model),
                 "--presets", "severe", "--steps", "2", "--no-fid", *extra]
    assert main(arguments) == 0
    return output, json.loads((output / "results.json").read_text())


def test_evaluate_reports_model_and_input_side_by_side(tmp_path, saved_pipeline):
    output, results = evaluate(tmp_path, saved_pipeline, "--limit", "3")
    rows = results["presets"]["severe"]
    assert set(rows) == {"degraded input", "LPIP-Diff"}
    assert rows["degraded input"]["n"] == rows["LPIP-Diff"]["n"] == 3
    names, clean, degraded = load_pairs(output / "pairs" / "severe")
    assert np.isclose(rows["degraded input"]["psnr"], np.mean([psnr(d, c) for d, c in zip(degraded, clean)]))
    # A random model restores nothing: it must score below the input it was given.
    assert rows["LPIP-Diff"]["psnr"] < rows["degraded input"]["psnr"]
    assert "| severe | LPIP-Diff | 3 |" in (output / "results.md").read_text()

    # Without --overwrite the results of the first run are kept, and nothing runs.
    with pytest.raises(AssertionError):
        evaluate(tmp_path, saved_pipeline, "--limit", "2", "--offset", "3")
    assert "| severe | LPIP-Diff | 3 |" in (output / "results.md").read_text()
    # Other faces in the same folder replace the old pairs (the evaluation's own) instead of mixing with them.
    _, results = evaluate(tmp_path, saved_pipeline, "--limit", "2", "--offset", "3", "--overwrite")
    assert results["presets"]["severe"]["LPIP-Diff"]["n"] == 2
    assert not set(names) & {p.name for p in (output / "pairs" / "severe" / "clean").iterdir()}


def test_evaluate_reports_every_figure_in_every_age_band(tmp_path, saved_pipeline):
    # Sorted val positions 301-303 are aged 5, 5 and 60: two bands with faces, two without.
    output, results = evaluate(tmp_path, saved_pipeline, "--limit", "3", "--offset", "301")
    names, clean, degraded = load_pairs(output / "pairs" / "severe")
    assert [band_of_name(n) for n in names] == ["0-12", "0-12", "60+"]
    bands = results["bands"]["severe"]
    assert list(bands) == ["0-12", "13-19", "20-59", "60+"]
    assert bands["13-19"]["LPIP-Diff"] == {"n": 0} and bands["20-59"]["degraded input"] == {"n": 0}
    children, old = bands["0-12"], bands["60+"]
    assert children["degraded input"]["n"] == 2 and old["LPIP-Diff"]["n"] == 1
    # The band's figure is the mean over the band's own faces.
    assert np.isclose(old["degraded input"]["psnr"], psnr(degraded[2], clean[2]))
    assert np.isclose(children["degraded input"]["psnr"], np.mean([psnr(degraded[i], clean[i]) for i in (0, 1)]))
    for method in ("degraded input", "LPIP-Diff"):
        overall = results["presets"]["severe"][method]
        for metric in ("identity", "lpips", "ssim", "same_person", "landmarks"):
            weighted = (2 * children[method][metric] + old[method][metric]) / 3
            assert np.isclose(weighted, overall[metric]), (method, metric)
    table = (output / "results.md").read_text()
    assert "| severe | 0-12 | LPIP-Diff | 2 |" in table and "| severe | 60+ | degraded input | 1 |" in table
    assert "13-19" not in table
