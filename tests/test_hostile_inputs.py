"""Hostile and unlucky conditions around the restore commands: links where the tool keeps its own
files, a manifest tampered with, two runs on one folder, a full disk, changed inputs, tampered
model folders and caches, environment variables that conflict with flags. Each case ends in one
clear line and loses no file that is not the tool's own. docs/BAD_INPUT.md lists them."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from lpipdiff.cli.archive import MANIFEST, PARTS, Manifest, OutputLock, read_records
from lpipdiff.cli.commands import main
from lpipdiff.cli.restore import plan_inputs


def faces(folder: Path, count: int, side: int = 32, seed: int = 0) -> Path:
    """``count`` random 'faces' in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        PIL.Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(folder / f"face{i}.png")
    return folder


def restore(inputs, output, model, *extra) -> int:
    return main(["restore", *map(str, inputs if isinstance(inputs, list) else [inputs]), "-o", str(output),
                 "--model", str(model), "--steps", "1", *extra])


# ---------------------------------------------------------------- files lost or replaced


def test_archive_never_follows_a_manifest_folder_that_is_a_link(tmp_path, saved_pipeline, capsys):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    theirs = elsewhere / "part-00000.jsonl"
    theirs.write_text("their own notes\n")
    (out / PARTS).symlink_to(elsewhere)
    assert restore(faces(tmp_path / "in", 2), out, saved_pipeline, "--archive") == 2
    assert "a symbolic link where lpipdiff keeps its manifest" in capsys.readouterr().err
    assert theirs.read_text() == "their own notes\n" and sorted(elsewhere.iterdir()) == [theirs]
    assert not list(out.glob("*.png"))


def test_archive_never_follows_a_part_file_that_is_a_link(tmp_path, saved_pipeline, capsys):
    out = tmp_path / "out"
    (out / PARTS).mkdir(parents=True)
    theirs = tmp_path / "notes.jsonl"
    theirs.write_text("their own notes\n")
    (out / PARTS / "part-00000.jsonl").symlink_to(theirs)
    assert restore(faces(tmp_path / "in", 2), out, saved_pipeline, "--archive") == 2
    assert "a symbolic link where lpipdiff keeps its manifest" in capsys.readouterr().err
    assert theirs.read_text() == "their own notes\n"


def test_a_failed_record_does_not_own_a_file_placed_there_later(tmp_path, saved_pipeline, capsys):
    inputs, out = faces(tmp_path / "in", 2), tmp_path / "out"
    out.mkdir()
    first = plan_inputs([inputs], out, skip_output_tree=True).items[0]
    Manifest(out, 0).write(first, "failed", error="not a readable image")
    first.output.write_bytes(b"the user's own file")
    assert restore(inputs, out, saved_pipeline, "--archive") == 1
    assert f"{first.output} exists; pass --overwrite" in capsys.readouterr().err
    assert first.output.read_bytes() == b"the user's own file"


def test_a_changed_input_is_restored_again(tmp_path, saved_pipeline, capsys):
    inputs, out = faces(tmp_path / "in", 2), tmp_path / "out"
    assert restore(inputs, out, saved_pipeline, "--archive") == 0
    before = (out / "face0_restored.png").read_bytes()
    faces(inputs, 1, seed=5)  # face0.png replaced by another picture
    stat = (inputs / "face0.png").stat()
    os.utime(inputs / "face0.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    capsys.readouterr()
    assert restore(inputs, out, saved_pipeline, "--archive") == 0
    assert "1 of 2 inputs were restored by an earlier run" in capsys.readouterr().err
    assert (out / "face0_restored.png").read_bytes() != before


@pytest.mark.parametrize("mode", [[], ["--archive"]])
def test_a_second_run_on_the_same_output_folder_is_refused(tmp_path, saved_pipeline, capsys, mode):
    inputs, out = faces(tmp_path / "in", 1), tmp_path / "out"
    out.mkdir()
    other = OutputLock(out)
    assert other.acquire() is None  # another run holds the folder
    assert restore(inputs, out, saved_pipeline, *mode) == 2
    assert f"{out}: another lpipdiff run is writing here (process {os.getpid()})" in capsys.readouterr().err
    assert not list(out.glob("*.png"))
    other.release()
    assert restore(inputs, out, saved_pipeline, *mode) == 0


def test_a_damaged_manifest_record_is_skipped_with_a_warning(tmp_path, saved_pipeline, capsys):
    inputs, out = faces(tmp_path / "in", 2), tmp_path / "out"
    assert restore(inputs, out, saved_pipeline, "--archive") == 0
    with open(out / MANIFEST, "a") as file:
        file.write(json.dumps({"input": "x", "status": "done", "time": "yesterday"}) + "\n")
        file.write(json.dumps({"input": 7, "status": "done", "time": 1.0}) + "\n")
    capsys.readouterr()
    assert restore(inputs, out, saved_pipeline, "--archive") == 0
    err = capsys.readouterr().err
    assert "2 damaged manifest record(s) skipped" in err and "2 of 2 inputs were restored by an earlier run" in err


def test_a_full_disk_stops_the_run_and_the_next_run_resumes(tmp_path, saved_pipeline, monkeypatch, capsys):
    from lpipdiff.io import images

    inputs, out = faces(tmp_path / "in", 3), tmp_path / "out"
    real, saved = images.save_image, []

    def disk_fills(image, path, overwrite=False):
        if saved:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        saved.append(path)
        return real(image, path, overwrite)

    monkeypatch.setattr(images, "save_image", disk_fills)
    assert restore(inputs, out, saved_pipeline, "--archive") == 1
    err = capsys.readouterr().err
    assert f"no space left on {out}" in err and err.count("No space left") == 0  # once, not once per file
    assert (out / MANIFEST).is_file() and not (out / PARTS).exists()  # merged, parts cleaned
    assert len(list(out.glob("*.png"))) == 1 and not list(out.glob("*.partial"))
    monkeypatch.undo()
    assert restore(inputs, out, saved_pipeline, "--archive") == 0
    assert "1 of 3 inputs were restored by an earlier run" in capsys.readouterr().err
    assert len(list(out.glob("*.png"))) == 3


def test_a_full_disk_in_a_plain_run_is_one_line(tmp_path, saved_pipeline, monkeypatch, capsys):
    from lpipdiff.io import images

    def full(image, path, overwrite=False):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(images, "save_image", full)
    out = tmp_path / "out"
    assert restore(faces(tmp_path / "in", 3), out, saved_pipeline) == 1
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and f"no space left on {out}" in err


def test_a_link_leaving_the_input_tree_is_said_not_skipped_silently(tmp_path, saved_pipeline, capsys):
    inputs, out = faces(tmp_path / "in", 1), tmp_path / "out"
    faces(tmp_path / "outside", 1)
    (inputs / "holiday").symlink_to(tmp_path / "outside")
    assert restore(inputs, out, saved_pipeline, "--recursive") == 0
    captured = capsys.readouterr()
    assert f"warning: {inputs / 'holiday'}: a link to a folder outside {inputs}" in captured.err
    assert "1 folder(s) skipped" in captured.out
    skipped = [r for r in read_records(out / MANIFEST)[0] if r["status"] == "skipped"]
    assert [Path(r["input"]).name for r in skipped] == ["holiday"]


def test_an_unreadable_subfolder_is_said_not_skipped_silently(tmp_path, saved_pipeline, monkeypatch, capsys):
    inputs, out = faces(tmp_path / "in", 1), tmp_path / "out"
    locked = faces(inputs / "locked", 1)
    real = os.scandir

    def scandir(path="."):
        if Path(path) == locked:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)  # as a folder of another user, unreadable to us, is
    assert restore(inputs, out, saved_pipeline, "--recursive") == 0
    captured = capsys.readouterr()
    assert f"warning: {locked}: cannot read this folder (Permission denied)" in captured.err
    assert "1 folder(s) skipped" in captured.out


# ---------------------------------------------------------------- tampered model folders and ONNX caches


def other_graph(path: Path) -> Path:
    """An ONNX graph of another tiny UNet (other weights, same shapes) at ``path``."""
    import torch

    from lpipdiff.model.backends import export_onnx

    from conftest import tiny_unet

    unet = tiny_unet()
    with torch.no_grad():
        for parameter in unet.parameters():
            parameter.add_(0.05)
    return export_onnx(unet, path)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "auto"])
def test_a_model_folder_graph_of_other_weights_is_refused(saved_pipeline, tmp_path, backend):
    pytest.importorskip("onnxruntime" if backend != "openvino" else "openvino")
    from lpipdiff.model.backends import choose_backend
    from lpipdiff.model.loading import ModelLoadError, load_pipeline

    if choose_backend(backend, "cpu") not in ("onnxruntime", "openvino"):
        pytest.skip(f"auto runs {choose_backend(backend, 'cpu')} on this CPU, which reads no ONNX graph")
    graph = other_graph(saved_pipeline / "unet" / "model.onnx")
    with pytest.raises(ModelLoadError, match="this ONNX graph was made from other weights than the UNet beside it"):
        load_pipeline(saved_pipeline, device="cpu", backend=backend, cache_dir=tmp_path / "cache")
    assert graph.is_file()  # the user's file is refused, not deleted


def test_a_model_folder_graph_of_other_weights_is_one_cli_line(saved_pipeline, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    other_graph(saved_pipeline / "unet" / "model.onnx")
    assert restore(faces(tmp_path / "in", 1), tmp_path / "out", saved_pipeline, "--backend", "onnxruntime") == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "model.onnx: this ONNX graph was made from other weights" in err


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_a_damaged_model_folder_graph_is_refused_naming_the_file(saved_pipeline, tmp_path, damage):
    pytest.importorskip("onnxruntime")
    from lpipdiff.model.backends import export_onnx
    from lpipdiff.model.loading import ModelLoadError, load_pipeline

    from conftest import tiny_unet

    graph = export_onnx(tiny_unet(), saved_pipeline / "unet" / "model.onnx")
    data = graph.read_bytes()
    graph.write_bytes({"garbage": b"\x08\xff" * 300, "truncated": data[: len(data) // 2], "empty": b""}[damage])
    with pytest.raises(ModelLoadError, match=r"model\.onnx: not a readable ONNX graph"):
        load_pipeline(saved_pipeline, device="cpu", backend="onnxruntime", cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("damage", ["other weights", "truncated", "garbage"])
def test_a_bad_cached_graph_is_exported_again(saved_pipeline, tmp_path, damage):
    pytest.importorskip("onnxruntime")
    import torch
    from test_backends import FP32_TOLERANCE, torch_prediction, unet_inputs

    from lpipdiff.model.backends import graph_weights, weights_hash
    from lpipdiff.model.loading import load_pipeline

    reference = load_pipeline(saved_pipeline, device="cpu", backend="torch")
    cache = tmp_path / "cache"
    cached = cache / f"unet-{weights_hash(reference.unet)}.onnx"
    cache.mkdir()
    if damage == "other weights":
        other_graph(cached)
    else:
        other_graph(tmp_path / "x.onnx")
        data = (tmp_path / "x.onnx").read_bytes()
        cached.write_bytes(data[: len(data) // 3] if damage == "truncated" else b"\x08\xff" * 300)
    fast = load_pipeline(saved_pipeline, device="cpu", backend="onnxruntime", cache_dir=cache)
    assert graph_weights(cached) == weights_hash(reference.unet)
    inputs = unet_inputs(reference.unet, 2)
    with torch.no_grad():
        expected = torch_prediction(reference.unet, inputs)
    assert (fast.unet(inputs[0], torch.tensor(321), *inputs[1:]) - expected).abs().max() < FP32_TOLERANCE
    assert sorted(p.name for p in cache.iterdir()) == [cached.name]  # no partial file left
