"""Restoring an archive: planning, the resumable manifest, and 2 CPU processes through accelerate,
interrupted and resumed."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from lpipdiff.cli.archive import MANIFEST, PARTS, Manifest, read_records
from lpipdiff.cli.restore import WorkItem, plan_inputs, resume_plan

from conftest import tiny_pipeline

ROOT = Path(__file__).resolve().parents[1]


def make_tree(root: Path, count: int = 12, side: int = 32) -> list[Path]:
    """Random 'faces' in nested folders (a hidden folder too, which is skipped)."""
    rng = np.random.default_rng(0)
    made = []
    for i in range(count):
        folder = root / ["", "1950", "1950/summer", "1960"][i % 4]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"face{i:03d}.png"
        PIL.Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(path)
        made.append(path)
    (root / ".thumbnails").mkdir(exist_ok=True)
    PIL.Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / ".thumbnails" / "x.png")
    return made


def test_plan_keeps_the_folder_structure(tmp_path):
    made = make_tree(tmp_path / "in", 8)
    (tmp_path / "in" / "face000_restored.png").write_bytes(b"")  # an input named like an output
    plan = plan_inputs([str(tmp_path / "in")], tmp_path / "out", recursive=True, skip_output_tree=True)
    items = plan.items
    assert not plan.problems and len(items) == 9 and {item.kind for item in items} == {"image"}
    targets = {item.input.relative_to(tmp_path / "in"): item.output.relative_to(tmp_path / "out") for item in items}
    assert targets[Path("1950/summer/face002.png")] == Path("1950/summer/face002_restored.png")
    PIL.Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "in" / ".hidden.png")
    flat = plan_inputs([str(tmp_path / "in")], tmp_path / "out").items  # a plain restore's plan: hidden skipped too
    assert len(flat) == 3  # face000, face004 and the empty one: only the top folder
    assert plan_inputs([str(tmp_path / "in")], tmp_path / "out", True).items == items  # the same in every process
    assert all(made_one in {i.input for i in items} for made_one in made)


def test_torn_lines_are_not_records(tmp_path):
    path = tmp_path / "part.jsonl"
    path.write_text('{"input": "a", "status": "done"}\n{"input": "b", "sta')
    records, end = read_records(path)
    assert [r["input"] for r in records] == ["a"] and end == len('{"input": "a", "status": "done"}\n')


def test_resume_skips_what_is_done_and_keeps_other_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    items = [WorkItem(tmp_path / f"{name}.png", out / f"{name}_restored.png") for name in "abcde"]
    manifest = Manifest(out, 0)
    manifest.write(items[0], "started")
    manifest.write(items[0], "done", faces=1, seconds=0.1)
    items[0].output.write_bytes(b"done")
    manifest.write(items[1], "started")  # killed while writing its output
    items[1].output.write_bytes(b"half")
    items[2].output.write_bytes(b"somebody's")  # not this job's
    manifest.write(items[3], "failed", error="broken")
    todo, replace, done, problems = resume_plan(items, manifest.latest(), overwrite=False)
    assert done == 1 and [i.input.stem for i in todo] == ["b", "d", "e"] and replace == {items[1].output}
    assert len(problems) == 1 and "c_restored.png exists; pass --overwrite" in problems[0]
    todo, replace, _, _ = resume_plan(items, manifest.latest(), overwrite=True)
    assert [i.input.stem for i in todo] == ["b", "c", "d", "e"]
    merged = manifest.merge()
    assert not (out / PARTS).exists()
    final = {r["input"]: r["status"] for r in read_records(merged)[0]}
    assert final == {items[0].key: "done", items[1].key: "interrupted", items[3].key: "failed"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(inputs: Path, output: Path, model: Path) -> subprocess.Popen:
    """``accelerate launch`` of 2 CPU processes (accelerate's torchrun launcher, ``--multi_gpu``;
    without a GPU each process runs on the CPU), importing this checkout."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), "-m", "lpipdiff", "restore", str(inputs), "-o", str(output),
               "--recursive", "--model", str(model), "--steps", "20", "--fidelity", "none", "--seed", "7"]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def done_records(output: Path) -> list[dict]:
    records = read_records(output / MANIFEST)[0]
    for part in sorted((output / PARTS).glob("part-*.jsonl")) if (output / PARTS).is_dir() else []:
        records += read_records(part)[0]
    return [r for r in records if r["status"] == "done"]


def pixels(path: Path) -> np.ndarray:
    return np.asarray(PIL.Image.open(path), dtype=np.int16)


@pytest.mark.slow
def test_two_processes_interrupted_and_resumed_restore_each_input_once(tmp_path):
    from lpipdiff.cli.commands import main

    count = 24
    make_tree(tmp_path / "in", count)
    model = tmp_path / "model"
    tiny_pipeline(face_size=32, patch_size=16).save_pretrained(model)

    # One process, in this process: the reference.
    assert main(["restore", str(tmp_path / "in"), "-o", str(tmp_path / "one"), "--recursive", "--model", str(model),
                 "--steps", "20", "--fidelity", "none", "--seed", "7"]) == 0

    out = tmp_path / "two"
    first = launch(tmp_path / "in", out, model)
    deadline = time.monotonic() + 240
    while len(done_records(out)) < 3 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    # Interrupted mid-run as a preempted job is: SIGTERM to the launcher, which stops its workers
    # (torchrun starts each in a session of its own); they die without any cleanup of ours.
    os.killpg(first.pid, signal.SIGTERM)
    first.wait(timeout=60)
    before = {r["input"]: r for r in done_records(out)}
    time.sleep(2)
    assert {r["input"] for r in done_records(out)} == set(before), "a worker outlived the launcher"
    assert 3 <= len(before) < count, "the run should have been interrupted part-way"
    assert not (out / MANIFEST).exists()  # the merge happens only at the end of a whole run
    stamps = {r["output"]: os.stat(r["output"]).st_mtime_ns for r in before.values()}

    second = launch(tmp_path / "in", out, model)
    log = second.communicate(timeout=600)[0]
    assert second.returncode == 0, log
    assert f"{len(before)} of {count} inputs were restored by an earlier run" in log, log[-3000:]
    assert f"restored {count} of {count} inputs" in log and f"({count - len(before)} this run, 2 process" in log
    assert log.count("restore:") >= 1 and "[rank1]" not in log

    # Every input restored exactly once: those done before were not written again, the merged
    # manifest holds one done record per input, and there is exactly one output per input.
    assert {o: os.stat(o).st_mtime_ns for o in stamps} == stamps
    merged = [json.loads(line) for line in (out / MANIFEST).read_text().splitlines()]
    assert len(merged) == count and all(r["status"] == "done" and r["error"] is None for r in merged)
    assert {r["process"] for r in merged} == {0, 1} and all(r["faces"] == 1 and r["seconds"] > 0 for r in merged)
    outputs = sorted(p.relative_to(out) for p in out.rglob("*.png"))
    reference = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*.png"))
    assert outputs == reference and len(outputs) == count
    assert Path("1950/summer") in {p.parent for p in outputs}
    for relative in outputs:  # fixed seeds per file: the split does not change the result
        assert np.abs(pixels(out / relative) - pixels(tmp_path / "one" / relative)).max() <= 1, relative
    assert not list(out.rglob("*.partial")) and not list(out.rglob(".*.png"))
