"""The manifest of a resumable restore: many inputs, many processes, resumable.

``accelerate launch -m lpipdiff restore IN -o OUT ...`` (or ``lpipdiff restore --archive``, or
``--recursive``) keeps one. Every process plans the same work from the same inputs
(:func:`lpipdiff.cli.restore.plan_inputs`) and reads what earlier runs already did from the
manifest. After a barrier the remaining inputs are split between the processes with
accelerate's ``PartialState.split_between_processes``; each process has loaded the model once and
restores its share (:func:`lpipdiff.cli.restore.restore_items`), appending one JSON line per event
to its own part of the manifest.

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
import time
from pathlib import Path

from ..io.safe_files import write_text
from .restore import Progress, WorkItem

MANIFEST = "lpipdiff-manifest.jsonl"
PARTS = ".lpipdiff-manifest"
FINAL = ("done", "failed")


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

    def write(self, item: WorkItem, status: str, **fields) -> None:
        record = {"input": item.key, "output": str(item.output.resolve()), "status": status, "faces": None,
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


class JobProgress(Progress):
    """The job's one progress bar (main process): counts every process's final records."""

    def __init__(self, manifest: Manifest, total: int, enabled: bool):
        super().__init__(total, enabled)
        self.manifest = manifest
        self.offsets = {part: part.stat().st_size for part in manifest.part_files()}
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

    def advance(self) -> None:
        self.refresh()


def merged_summary(merged: Path, items) -> tuple[int, int]:
    """How many of ``items`` the merged manifest records as restored, and as not restored."""
    keys = {item.key for item in items}
    final = [r for r in read_records(merged)[0] if r["input"] in keys]
    restored = sum(r.get("status") == "done" for r in final)
    return restored, len(final) - restored
