import numpy as np
import PIL.Image
import pytest

from lpipdiff.cli.commands import main
from lpipdiff.io.images import load_image_file

from conftest import copy_val_faces

pytestmark = pytest.mark.slow  # command runs end to end

@pytest.fixture
def photos(tmp_path):
    return copy_val_faces(tmp_path / "in", 2)


def test_restore_files_and_folders_without_touching_inputs(tmp_path, photos, saved_pipeline, capsys):
    single = tmp_path / "single.png"
    PIL.Image.fromarray(np.zeros((40, 30, 3), dtype=np.uint8)).save(single)
    before = {p: p.read_bytes() for p in photos.iterdir()}
    code = main(
        ["restore", str(photos), str(single), "-o", str(photos), "--model", str(saved_pipeline), "--steps", "2"]
    )
    assert code == 0
    assert {p: p.read_bytes() for p in before} == before  # inputs untouched, even writing into their folder
    outputs = sorted(photos.glob("*_restored*.png"))
    assert len(outputs) == 3
    assert load_image_file(photos / "single_restored.png").shape == (40, 30, 3)
    assert "restored 3 of 3" in capsys.readouterr().out


def test_an_input_named_like_an_output_is_not_overwritten(tmp_path, saved_pipeline):
    folder = tmp_path / "in"
    folder.mkdir()
    face = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    PIL.Image.fromarray(face).save(folder / "a.png")
    PIL.Image.fromarray(face).save(folder / "a_restored.png")
    original = (folder / "a_restored.png").read_bytes()
    assert main(["restore", str(folder), "-o", str(folder), "--model", str(saved_pipeline), "--steps", "1"]) == 0
    assert (folder / "a_restored.png").read_bytes() == original
    assert (folder / "a_restored_1.png").is_file()


def test_unreadable_files_are_reported_and_the_rest_restored(tmp_path, photos, saved_pipeline, capsys):
    (photos / "broken.jpg").write_text("not a jpeg")
    code = main(
        [
            "restore",
            str(photos),
            str(tmp_path / "missing.png"),
            "-o",
            str(tmp_path / "out"),
            "--model",
            str(saved_pipeline),
            "--steps",
            "1",
            "--scheduler",
            "unipc",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert "broken.jpg" in captured.err and "missing.png" in captured.err
    assert len(list((tmp_path / "out").glob("*.png"))) == 2


def test_wrong_model_folder_exits_with_a_message(tmp_path, photos, capsys):
    assert main(["restore", str(photos), "-o", str(tmp_path / "out"), "--model", str(tmp_path)]) == 2
    assert "model_index.json" in capsys.readouterr().err


def test_degrade_copies_and_test_sets(tmp_path, photos):
    assert main(["degrade", str(photos), "-o", str(tmp_path / "deg"), "--preset", "severe"]) == 0
    written = sorted((tmp_path / "deg").iterdir())
    assert len(written) == 2 and all(p.name.endswith("_severe.png") for p in written)
    assert main(["degrade", str(photos), "-o", str(tmp_path / "set"), "--test-set", "--face-size", "64"]) == 0
    assert len(list((tmp_path / "set" / "clean").iterdir())) == 2
    assert load_image_file(next((tmp_path / "set" / "degraded").iterdir())).shape == (64, 64, 3)
