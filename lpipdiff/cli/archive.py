"""Restoring an archive: many inputs, many processes, resumable.

``accelerate launch -m lpipdiff restore IN -o OUT ...`` (or ``lpipdiff restore --archive``, or
``--recursive``) comes here. Every process plans the same work from the same inputs: the outputs
(``--recursive`` keeps each input folder's structure under OUT) and what earlier runs already did
(the manifest). After a barrier the remaining inputs are split between the processes with
accelerate's ``PartialState.split_between_processes``; each process has loaded the model once and
restores its share, appending one JSON line per event to its own part of the manifest.

The manifest: ``OUT/.lpipdiff-manifest/part-RANK.jsonl`` while a job runs, merged at its end into
``OUT/lpipdiff-manifest.jsonl`` (written to a temporary file and renamed, so it is whole or absent).
A record is one ``write()`` of one whole line: ``{"input", "output", "status", "faces", "seconds",
"error", "process", "time"}`` with status ``started``, ``done`` or ``failed``. A process that is
killed loses at most its unfinished line, which readers skip.

Resuming: an input whose last record is ``done`` and whose output exists is skipped; one whose
output exists with only a ``started`` record (killed while writing it) is ours and is redone; an
output file that no record of this job names is somebody's file and is kept unless ``--overwrite``.
The main process shows one progress bar for the whole job, counting every process's records.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..io.safe_files import taken, write_text

MANIFEST = "lpipdiff-manifest.jsonl"
PARTS = ".lpipdiff-manifest"
FINAL = ("done", "failed")


@dataclass(frozen=True)
class Item:
    source: Path
    target: Path

    @property
    def key(self) -> str:
        return str(self.source.resolve())


def find_images(folder: Path, recursive: bool) -> list[Path]:
    """Image files in ``folder`` (and its subfolders when ``recursive``), sorted; hidden ones skipped."""
    from ..io.images import IMAGE_EXTENSIONS

    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        p for p in found
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def plan_archive(inputs: list[str], output_dir: Path, recursive: bool, suffix: str = "restored"):
    """Every input with its output, the same in every process and every run: folder inputs keep
    their structure under ``output_dir`` (``--recursive``), files go to its top. Returns the items
    and messages for bad names."""
    from ..io.images import IMAGE_EXTENSIONS

    pairs, problems = [], []
    out_root = output_dir.resolve()
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            found = [p for p in find_images(path, recursive) if out_root not in p.resolve().parents]
            if not found:
                problems.append(f"{path}: folder has no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
            pairs += [(p, p.relative_to(path).parent) for p in found]
        elif path.is_file():
            pairs.append((path, Path()))
        else:
            problems.append(f"{path}: no such file or folder")
    claimed = {p.resolve() for p, _ in pairs}
    items, seen = [], set()
    for source, folder in pairs:
        if source.resolve() in seen:
            continue  # named twice (a file and its folder)
        seen.add(source.resolve())
        target = output_dir / folder / f"{source.stem}_{suffix}.png"
        number = 1
        while target.resolve() in claimed:
            target = output_dir / folder / f"{source.stem}_{suffix}_{number}.png"
            number += 1
        claimed.add(target.resolve())
        items.append(Item(source, target))
    return items, problems


def read_records(path: Path, start: int = 0) -> tuple[list[dict], int]:
    """The whole-line records of a manifest file from byte ``start``; and where they end."""
    try:
        with open(path, "rb") as file:
            file.seek(start)
            data = file.read()
    except FileNotFoundError:
        return [], start
    end = data.rfind(b"\n") + 1  # a torn last line (a killed process) is not a record
    records = []
    for line in data[:end].splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "input" in record:
            records.append(record)
    return records, start + end


class Manifest:
    """The job's records under ``output_dir``: this process's part file, and reading every part."""

    def __init__(self, output_dir: Path, process: int):
        self.output_dir, self.process = output_dir, process
        self.parts = output_dir / PARTS
        self.merged = output_dir / MANIFEST
        self.path = self.parts / f"part-{process:05d}.jsonl"

    def part_files(self) -> list[Path]:
        return sorted(self.parts.glob("part-*.jsonl")) if self.parts.is_dir() else []

    def latest(self) -> dict[str, list[dict]]:
        """Every record of earlier runs, by input, oldest first."""
        records = read_records(self.merged)[0]
        for part in self.part_files():
            records += read_records(part)[0]
        by_input: dict[str, list[dict]] = {}
        for record in sorted(records, key=lambda r: r.get("time", 0)):
            by_input.setdefault(record["input"], []).append(record)
        return by_input

    def write(self, item: Item, status: str, **fields) -> None:
        record = {"input": item.key, "output": str(item.target.resolve()), "status": status, "faces": None,
                  "seconds": None, "error": None, **fields, "process": self.process, "time": time.time()}
        line = (json.dumps(record) + "\n").encode("utf-8")
        self.parts.mkdir(parents=True, exist_ok=True)
        handle = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        try:
            os.write(handle, line)  # one write of one whole line
        finally:
            os.close(handle)

    def merge(self) -> Path:
        """One record per input (its last final one; ``started`` alone reads ``interrupted``) in
        ``OUT/lpipdiff-manifest.jsonl``, replaced atomically; the parts are then removed."""
        lines = []
        for _, records in sorted(self.latest().items()):
            final = [r for r in records if r.get("status") in FINAL]
            record = final[-1] if final else {**records[-1], "status": "interrupted"}
            lines.append(json.dumps(record))
        write_text(self.merged, "".join(line + "\n" for line in lines), overwrite=True)
        for part in self.part_files():
            part.unlink(missing_ok=True)
        try:
            self.parts.rmdir()
        except OSError:
            pass
        return self.merged


def resume_plan(items: list[Item], earlier: dict[str, list[dict]], overwrite: bool):
    """What is left to do: ``(todo, replace, done, problems)``; ``replace`` holds the targets this
    job may replace (its own unfinished outputs, or any with ``overwrite``)."""
    todo, replace, done, problems = [], set(), 0, []
    for item in items:
        records = earlier.get(item.key, [])
        statuses = [r.get("status") for r in records]
        exists = taken(item.target)
        if statuses and statuses[-1] == "done" and exists:
            done += 1
            continue
        if exists and not (records or overwrite):
            problems.append(f"{item.source}: {item.target} exists; pass --overwrite to replace it")
            continue
        if exists:
            replace.add(item.target)
        todo.append(item)
    return todo, replace, done, problems


class JobProgress:
    """The job's one progress bar (main process): counts every process's final records."""

    def __init__(self, manifest: Manifest, total: int, enabled: bool):
        from tqdm.auto import tqdm

        self.manifest = manifest
        self.offsets = {part: part.stat().st_size for part in manifest.part_files()}
        self.bar = tqdm(total=total, desc="restore", unit="image", disable=not enabled)
        self.enabled, self.total = enabled, total

    def count(self) -> int:
        counted = 0
        for part in self.manifest.part_files():
            records, _ = read_records(part, self.offsets.get(part, 0))
            counted += sum(r.get("status") in FINAL for r in records)
        return counted

    def refresh(self) -> int:
        if not self.enabled:
            return 0
        count = self.count()
        self.bar.update(count - self.bar.n)
        return count

    def wait_for_all(self, poll: float = 0.5) -> None:
        while self.enabled and self.refresh() < self.total:
            time.sleep(poll)

    def close(self) -> None:
        self.bar.close()


def run_archive(items: list[Item], problems: list[str], output_dir: Path, restore: Callable, save: Callable,
                state, overwrite: bool = False, file_errors: tuple = (ValueError, OSError)) -> int:
    """Restore ``items`` on this process's share; returns the exit status.

    Args:
        restore: ``restore(path) -> (image, faces)``; ``file_errors`` end one file with its message.
        save: ``save(image, target, replace)`` writes one output.
        state: accelerate's ``PartialState`` (``process_index``, ``num_processes``, ...).
    """
    manifest = Manifest(output_dir, state.process_index)
    todo, replace, done, skipped = resume_plan(items, manifest.latest(), overwrite)
    problems = problems + skipped
    if state.is_main_process:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        if done:
            print(f"{done} of {len(items)} inputs were restored by an earlier run; skipping them", file=sys.stderr)
    progress = JobProgress(manifest, len(todo), state.is_main_process)
    state.wait_for_everyone()  # every process planned from the same records before anyone writes
    failed = 0
    with state.split_between_processes(todo) as share:
        for item in share:
            manifest.write(item, "started")
            started = time.perf_counter()
            try:
                image, faces = restore(item.source)
                item.target.parent.mkdir(parents=True, exist_ok=True)
                save(image, item.target, item.target in replace)
            except file_errors as error:
                failed += 1
                manifest.write(item, "failed", error=str(error), seconds=round(time.perf_counter() - started, 3))
                progress.bar.write(f"error: {item.source}: {error}", file=sys.stderr)
            else:
                manifest.write(item, "done", faces=faces, seconds=round(time.perf_counter() - started, 3))
            progress.refresh()
    progress.wait_for_all()
    progress.close()
    state.wait_for_everyone()
    if not state.is_main_process:
        return 1 if failed else 0
    merged = manifest.merge()
    keys = {item.key for item in items}
    final = [r for r in read_records(merged)[0] if r["input"] in keys]
    restored = sum(r.get("status") == "done" for r in final)
    errors = sum(r.get("status") != "done" for r in final)
    print(f"restored {restored} of {len(items)} images into {output_dir} ({len(todo)} this run, "
          f"{state.num_processes} process(es)); manifest: {merged}")
    return 1 if errors or problems else 0
