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
A record is one ``write()`` of one whole line: ``{"input", "output", "status", "size", "mtime_ns",
"faces", "seconds", "error", "process", "time"}`` with status ``started``, ``done`` or ``failed``
(``skipped`` for a subfolder left out, with why). A process that is killed loses at most its
unfinished line, which readers skip; a whole line that is not a valid record (a field of the wrong
type) is skipped with a warning. The manifest, its parts folder and its part files are never
followed through a symbolic link (that would append to, and at the merge delete, files elsewhere).

Resuming: an input whose output exists and whose last record is ``done`` for the same file (same
size and modification time) is skipped; a changed input is redone. An output named by a ``done``
or unfinished (``started``: killed while writing it) record is ours and may be replaced; one that
no such record names (a ``failed`` run wrote nothing) is somebody's file and is kept unless
``--overwrite``. One run at a time writes into an output folder (a ``flock`` on
``OUT/.lpipdiff.lock``). The main process shows one progress bar for the whole job, counting every
process's records.
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

from ..io.safe_files import write_text
from .work import WorkItem

MANIFEST = "lpipdiff-manifest.jsonl"
PARTS = ".lpipdiff-manifest"
LOCK = ".lpipdiff.lock"
FINAL = ("done", "failed")
STATUSES = ("started", "interrupted", "skipped", *FINAL)
# The type every field of a record must have; a record with another is damaged (a hand edit, a
# tool of another kind) and skipped with a warning, never a crash of every later run.
FIELD_TYPES = {"input": str, "output": str, "status": str, "time": (int, float), "size": (int, type(None)),
               "mtime_ns": (int, type(None)), "faces": (int, type(None)), "seconds": (int, float, type(None)),
               "error": (str, type(None)), "process": int}
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class ManifestError(OSError):
    """The manifest cannot be used safely (a link where a file of ours should be); the message says why."""


def valid_record(record) -> bool:
    if not isinstance(record, dict) or not isinstance(record.get("input"), str):
        return False
    if any(name in record and not isinstance(record[name], kinds) or isinstance(record.get(name), bool)
           for name, kinds in FIELD_TYPES.items()):
        return False
    return record.get("status") in STATUSES


def read_records(path: Path, start: int = 0, damaged: list | None = None) -> tuple[list[dict], int]:
    """The whole-line records of a manifest file from byte ``start``; and where they end. Lines that
    are whole but not a valid record go to ``damaged``."""
    try:
        # Non-blocking: opening a named pipe for reading would otherwise wait for a writer, maybe forever.
        handle = os.open(path, os.O_RDONLY | NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        return [], start
    except OSError as error:
        raise ManifestError(f"{path}: cannot read the manifest ({error.strerror or error})") from None
    if not stat.S_ISREG(os.fstat(handle).st_mode):
        os.close(handle)
        raise ManifestError(f"{path}: not a regular file where lpipdiff keeps its manifest (remove it, or write "
                            "elsewhere)")
    with os.fdopen(handle, "rb") as file:
        file.seek(start)
        data = file.read()
    end = data.rfind(b"\n") + 1  # a torn last line (a killed process) is not a record
    records = []
    for line in data[:end].splitlines():
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: a line nested thousands deep
            record = None
        if valid_record(record):
            records.append(record)
        elif damaged is not None and line.strip():
            damaged.append(line)
    return records, start + end


def input_stamp(path: Path) -> dict:
    """What tells a changed input from the one an output was made from: its size and modification time."""
    try:
        info = path.stat()
    except OSError:
        return {"size": None, "mtime_ns": None}
    return {"size": info.st_size, "mtime_ns": info.st_mtime_ns}


class Manifest:
    """The job's records under ``output_dir``: this process's part file, and reading every part."""

    def __init__(self, output_dir: Path, process: int):
        self.output_dir, self.process = output_dir, process
        self.parts = output_dir / PARTS
        self.merged = output_dir / MANIFEST
        self.path = self.parts / f"part-{process:05d}.jsonl"
        self.warnings: list[str] = []

    def check(self) -> None:
        """Refuse a manifest that is a link, or a folder of parts that is or holds one: following it
        would append to, and at the merge delete, files outside the output folder."""
        links = [p for p in (self.merged, self.parts) if p.is_symlink()]
        if self.parts.is_dir() and not self.parts.is_symlink():
            links += [p for p in self.parts.iterdir() if p.is_symlink()]
        if links:
            raise ManifestError(f"{links[0]}: a symbolic link where lpipdiff keeps its manifest; it was not "
                                "followed (remove it, or write elsewhere)")

    def part_files(self) -> list[Path]:
        if not self.parts.is_dir() or self.parts.is_symlink():
            return []
        return sorted(p for p in self.parts.glob("part-*.jsonl") if not p.is_symlink())

    def latest(self) -> dict[str, list[dict]]:
        """Every record of earlier runs, by input, oldest first; damaged records are skipped, and
        counted in ``warnings``."""
        damaged: list = []
        records = read_records(self.merged, damaged=damaged)[0]
        for part in self.part_files():
            records += read_records(part, damaged=damaged)[0]
        if damaged:
            self.warnings.append(f"{self.output_dir}: {len(damaged)} damaged manifest record(s) skipped")
        by_input: dict[str, list[dict]] = {}
        for record in sorted(records, key=lambda r: r.get("time", 0)):
            by_input.setdefault(record["input"], []).append(record)
        return by_input

    def write(self, item: WorkItem, status: str, **fields) -> None:
        self.append({"input": item.key, "output": str(item.output.resolve()), "status": status,
                     **input_stamp(item.input), "faces": None, "seconds": None, "error": None, **fields})

    def write_skipped(self, folder: Path, why: str) -> None:
        """A subfolder of an input that was left out (unreadable, or a link leading out of the input)."""
        self.append({"input": str(folder.absolute()), "status": "skipped", "error": why})

    def append(self, record: dict) -> None:
        record = {**record, "process": self.process, "time": time.time()}
        line = (json.dumps(record) + "\n").encode("utf-8")
        if self.parts.is_symlink():
            self.check()
        self.parts.mkdir(parents=True, exist_ok=True)
        try:
            handle = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | NOFOLLOW, 0o666)
        except OSError:
            if self.path.is_symlink():
                self.check()
            raise
        try:
            os.write(handle, line)  # one write of one whole line
        finally:
            os.close(handle)

    def merge(self) -> Path:
        """One record per input (its last final one; ``started`` alone reads ``interrupted``) in
        ``OUT/lpipdiff-manifest.jsonl``, replaced atomically; the parts are then removed."""
        self.check()
        lines = []
        for _, records in sorted(self.latest().items()):
            final = [r for r in records if r.get("status") in (*FINAL, "skipped")]
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


def owns(records: list[dict], item: WorkItem) -> bool:
    """Whether an earlier run wrote the file at ``item.output``: its last record for this input names
    that output and is ``done``, or ``started``/``interrupted`` (killed while writing it). A run that
    failed wrote nothing, so a file there is somebody's."""
    if not records:
        return False
    last = records[-1]
    return last.get("status") in ("done", "started", "interrupted") and last.get("output") == str(
        item.output.resolve())


def up_to_date(records: list[dict], item: WorkItem) -> bool:
    """Whether the last record says ``done`` for this very input: same output, same size and time."""
    if not records or records[-1].get("status") != "done" or not owns(records, item):
        return False
    last = records[-1]
    if "size" not in last:  # written before inputs were stamped
        return True
    return input_stamp(item.input) == {"size": last.get("size"), "mtime_ns": last.get("mtime_ns")}


class OutputLock:
    """One run at a time per output folder: an exclusive ``flock`` on ``OUT/.lpipdiff.lock``, held
    until :meth:`release` (or the process ends, which frees it even after a kill)."""

    def __init__(self, output_dir: Path):
        self.path = output_dir / LOCK
        self.handle: int | None = None

    def acquire(self) -> str | None:
        """Take the lock; a message when another run holds it, or it cannot be taken."""
        import fcntl

        try:
            handle = os.open(self.path, os.O_RDWR | os.O_CREAT | NOFOLLOW, 0o666)
        except OSError as error:
            return f"{self.path}: cannot take the output folder's lock ({error.strerror or error})"
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(handle, 64).decode("ascii", "replace").strip()
            os.close(handle)
            by = f" (process {holder})" if holder else ""
            return (f"{self.path.parent}: another lpipdiff run is writing here{by}; wait for it to finish, "
                    "or write elsewhere")
        os.ftruncate(handle, 0)
        os.write(handle, str(os.getpid()).encode())
        self.handle = handle
        return None

    def release(self, remove: bool = False) -> None:
        """Free the lock; ``remove`` also deletes the lock file (a plain run leaves nothing behind)."""
        if self.handle is not None:
            if remove:
                self.path.unlink(missing_ok=True)
            os.close(self.handle)
            self.handle = None


def merged_summary(merged: Path, items) -> tuple[int, int]:
    """How many of ``items`` the merged manifest records as restored, and as not restored."""
    keys = {item.key for item in items}
    final = [r for r in read_records(merged)[0] if r["input"] in keys]
    restored = sum(r.get("status") == "done" for r in final)
    return restored, len(final) - restored
