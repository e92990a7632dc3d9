"""Restoring files: one planner and one loop for every way the CLI restores (and degrades).

:func:`plan_inputs` turns the names a user gave into :class:`WorkItem` s (an input, its output,
and its kind: ``image`` or ``video``), the same in every process and every run; :func:`resume_plan` decides
which of them are left to do (from the archive's manifest, or from nothing for a plain run);
:func:`restore_items` is the loop that restores them, writing the manifest when there is one.
:func:`restore_command` is ``lpipdiff restore``: a plain run, or a resumable archive run (see
:mod:`lpipdiff.cli.archive`) shared between the processes of ``accelerate launch``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..io.images import SPECIAL_FILE, special_file
from ..io.safe_files import taken
from ..io.video import VIDEO_EXTENSIONS
from .archive import FINAL, Manifest, ManifestError, OutputLock, merged_summary, owns, read_records, up_to_date
from .work import WorkItem

# What a folder yields, by kind of work: the suffixes of its files, and the suffix of each output.
INPUT_SUFFIXES = {"image": (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"), "video": VIDEO_EXTENSIONS}
OUTPUT_SUFFIX = {"image": ".png", "video": ".mp4"}
# One bad file must not stop a batch: these end one file's work with its message (an unreadable
# image is an InvalidImageError, a ValueError).
FILE_ERRORS = (ValueError, OSError, RuntimeError, MemoryError)
NOTHING_TO_DO = "nothing to restore"


@dataclass
class InputPlan:
    """The work the named inputs make, one message per name that makes none (``problems``), and the
    subfolders left out with why (``skipped``: unreadable, or a link leading out of the input)."""

    items: list[WorkItem] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def warnings(self) -> list[str]:
        return [f"{folder}: {why}; its files were skipped" for folder, why in self.skipped]


def kind_of(path: Path, kinds: Iterable[str] = tuple(INPUT_SUFFIXES)) -> str | None:
    suffix = path.suffix.lower()
    return next((kind for kind in kinds if suffix in INPUT_SUFFIXES[kind]), None)


def hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def find_inputs(folder: Path, recursive: bool, skipped: list[tuple[Path, str]],
                kinds: Iterable[str] = ("image",)) -> list[Path]:
    """The input files of ``kinds`` in ``folder`` (and its subfolders when ``recursive``), sorted; hidden files and
    folders are skipped. A subfolder that cannot be read, or a link to a folder outside ``folder``,
    is left out and added to ``skipped`` with why."""
    found = []
    root = folder.resolve()

    def unreadable(error: OSError) -> None:
        skipped.append((Path(error.filename), f"cannot read this folder ({error.strerror or error})"))

    for current, folders, files in os.walk(folder, onerror=unreadable):
        current = Path(current)
        for name in sorted(folders):
            path = current / name
            if path.is_symlink() and not hidden(path, folder) and recursive:
                target = path.resolve()
                if target != root and root not in target.parents:
                    skipped.append((path, f"a link to a folder outside {folder}"))
        folders[:] = [] if not recursive else sorted(f for f in folders if not f.startswith("."))
        found += [current / name for name in files if not name.startswith(".") and kind_of(Path(name), kinds)
                  and (current / name).is_file()]
    return sorted(found)


def numbered_output(source: Path, folder: Path, suffix: str, kind: str, claimed: set[Path]) -> Path:
    """``FOLDER/STEM_SUFFIX.png`` (``.mp4`` for a video), else ``..._1.png``, ``..._2.png``: never a path in ``claimed``
    (the inputs, the outputs already planned), which it joins."""
    extension = OUTPUT_SUFFIX[kind]
    target = folder / f"{source.stem}_{suffix}{extension}"
    number = 1
    while target.resolve() in claimed:
        target = folder / f"{source.stem}_{suffix}_{number}{extension}"
        number += 1
    claimed.add(target.resolve())
    return target


def plan_inputs(inputs: Iterable[str | Path], output_dir: Path, recursive: bool = False, suffix: str = "restored",
                skip_output_tree: bool = False, kinds: Iterable[str] = ("image",)) -> InputPlan:
    """Every input of ``kinds`` (``image``, ``video``) with its output, the same in every process and
    every run; a video is one work item.

    Files named directly go to the top of ``output_dir``; a folder's files too, or with ``recursive``
    under the same subfolders. A file named twice (itself and in its folder) is done once. With
    ``skip_output_tree`` files inside ``output_dir`` are not inputs (a rerun must not restore the
    outputs of the last one).
    """
    plan = InputPlan()
    out_root = output_dir.resolve()
    pairs = []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            found = find_inputs(path, recursive, plan.skipped, kinds)
            if skip_output_tree:
                found = [p for p in found if out_root not in p.resolve().parents]
            if not found:
                extensions = sorted({s for kind in kinds for s in INPUT_SUFFIXES[kind]})
                what = " or ".join(f"{kind}s" for kind in kinds)
                plan.problems.append(f"{path}: folder has no {what} ({', '.join(extensions)})")
            pairs += [(p, p.relative_to(path).parent) for p in found]
        elif path.is_file():
            pairs.append((path, Path()))
        elif special_file(path):
            plan.problems.append(f"{path}: {SPECIAL_FILE}")
        else:
            plan.problems.append(f"{path}: no such file or folder")
    claimed = {p.resolve() for p, _ in pairs}
    seen = set()
    for source, folder in pairs:
        if source.resolve() in seen:
            continue
        seen.add(source.resolve())
        kind = kind_of(source, kinds) or "image"  # a file named directly is read as an image, or refused
        plan.items.append(WorkItem(source, numbered_output(source, output_dir / folder, suffix, kind, claimed), kind))
    return plan


def exists_message(item: WorkItem) -> str:
    return f"{item.input}: {item.output} exists; pass --overwrite to replace it"


def resume_plan(items: list[WorkItem], earlier: dict[str, list[dict]], overwrite: bool):
    """What is left to do: ``(todo, replace, done, problems)``. ``earlier`` holds the manifest's
    records by input (empty for a plain run): an input whose output exists and whose last record is
    ``done`` for the same input file (size and time) is done; ``replace`` holds the outputs this run
    may replace (those an earlier run wrote, see :func:`~lpipdiff.cli.archive.owns`, or any with
    ``overwrite``); an output file that no successful or unfinished record names is somebody's and
    is kept."""
    todo, replace, done, problems = [], set(), 0, []
    for item in items:
        records = earlier.get(item.key, [])
        exists = taken(item.output)
        if exists and up_to_date(records, item):
            done += 1
            continue
        if exists and not (owns(records, item) or overwrite):
            problems.append(exists_message(item))
            continue
        if exists:
            replace.add(item.output)
        todo.append(item)
    return todo, replace, done, problems


def report(problems: Iterable[str]) -> None:
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)


def summary(verb: str, count: int, total: int, output_dir: Path, plan: InputPlan | None = None) -> str:
    skipped = f"; {len(plan.skipped)} folder(s) skipped (see the warnings)" if plan and plan.skipped else ""
    return f"{verb} {count} of {total} inputs into {output_dir}{skipped}"


def prepare_output_folder(folder: Path) -> str | None:
    """Create the output folder; a message when it cannot take the outputs."""
    if folder.exists() and not folder.is_dir():
        return f"{folder}: exists and is not a folder"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return f"{folder}: cannot create the output folder ({error.strerror or error})"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{folder}: the output folder is not writable"
    return None


class Progress:
    """One process's progress bar over its items (``enabled=False``: messages only)."""

    def __init__(self, total: int, enabled: bool = True):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc="restore", unit="image", disable=not enabled)

    def advance(self) -> None:
        self.bar.update(1)

    def write(self, text: str) -> None:
        self.bar.write(text, file=sys.stderr)

    @contextlib.contextmanager
    def frames(self, name: str):
        """A second bar for the frames of one video (frames a second, time left); yields the
        ``on_frames(done, total)`` callback of :func:`~lpipdiff.faces.video.restore_video`."""
        from tqdm.auto import tqdm

        bar = tqdm(desc=name, unit="frame", leave=False, disable=self.bar.disable, position=1)

        def on_frames(done: int, total: int) -> None:
            bar.total = total or None
            bar.update(done - bar.n)

        try:
            yield on_frames
        finally:
            bar.close()

    def show_step(self, pipe, step, timestep, callback_kwargs):
        """A step callback of the pipeline: the step of the image under way."""
        self.bar.set_postfix_str(f"step {step + 1}/{pipe.num_timesteps}")
        return {}

    def finish(self) -> None:
        self.bar.close()


class NoSpaceError(OSError):
    """The disk of the outputs is full: the run stops (every later file would fail the same way)."""


def record_quietly(manifest, item: WorkItem, status: str, **fields) -> None:
    """A record when there is room for it (a full disk may refuse even one line)."""
    if manifest is not None:
        with contextlib.suppress(OSError):
            manifest.write(item, status, **fields)


def restore_items(items: Iterable[WorkItem], restore: Callable, save: Callable, progress: Progress,
                  manifest=None, file_errors: tuple = FILE_ERRORS) -> int:
    """The one loop: restore and save each item; returns how many failed.

    Args:
        restore: ``restore(item) -> (image, faces)``; ``file_errors`` end one item with its message.
        save: ``save(image, item)`` writes one output.
        manifest: an archive's :class:`~lpipdiff.cli.archive.Manifest`, which gets a ``started``
            record before each item and a ``done`` or ``failed`` one after it; None for a plain run.

    Raises:
        NoSpaceError: the disk is full (the item is recorded ``failed``, so a rerun redoes it).
        ManifestError: the manifest became unusable.
    """
    failed = 0
    for item in items:
        started = time.perf_counter()
        try:
            if manifest is not None:
                manifest.write(item, "started")
            image, faces = restore(item)
            item.output.parent.mkdir(parents=True, exist_ok=True)
            save(image, item)
        except file_errors as error:
            seconds = round(time.perf_counter() - started, 3)
            if isinstance(error, ManifestError):
                raise
            if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
                record_quietly(manifest, item, "failed", error="no space left", seconds=seconds)
                raise NoSpaceError(errno.ENOSPC, f"no space left on {item.output.parent}; free some and rerun "
                                   "the same command") from None
            failed += 1
            if manifest is not None:
                manifest.write(item, "failed", error=str(error), seconds=seconds)
            progress.write(f"error: {item.input}: {error}")
        else:
            if manifest is not None:
                manifest.write(item, "done", faces=faces, seconds=round(time.perf_counter() - started, 3))
        progress.advance()
    return failed


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

    @contextlib.contextmanager
    def following(self, poll: float = 0.5):
        """Keep the bar moving while this process waits for the others (a thread reads their
        records; a process that stopped early cannot leave it waiting)."""
        stop = threading.Event()

        def follow():
            while not stop.wait(poll):
                self.refresh()

        thread = threading.Thread(target=follow, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self.refresh()

    def advance(self) -> None:
        self.refresh()


# ---------------------------------------------------------------- lpipdiff restore


def load_restorers(args, sampling, device=None, videos: bool = False):
    """The pipeline and, for whole photos and ``videos``, the :class:`FaceRestorer` (with its background
    upscaler)."""
    from ..arguments.options import bg_upsampler, face_weights
    from ..model.loading import load_pipeline

    pipeline = load_pipeline(args.model, scheduler=sampling.scheduler, device=device or args.device,
                             backend=args.backend)
    restorer = None
    if args.whole_photo or videos:
        from ..faces.restorer import FaceRestorer

        upsampler = None
        if bg_upsampler(args):
            from ..faces.upscaler import load_upscaler

            upsampler = load_upscaler(bg_upsampler(args), device=pipeline.device, tile=args.bg_tile)
        restorer = FaceRestorer(pipeline, detector=args.detector, weights_dir=face_weights(args),
                                upscale=args.upscale, only_largest=args.only_largest,
                                min_face_size=args.min_face_size, detail=args.detail, bg_upsampler=upsampler)
    return pipeline, restorer


def restore_one(pipeline, restorer, sampling, progress: Progress, may_replace: Callable[[WorkItem], bool],
                max_seconds: float | None = None):
    """``restore(item) -> (image, faces)`` for one work item; a video is written in place as it is
    restored (``image`` None), replacing a file there only when ``may_replace(item)``."""
    from ..io.images import load_image_file
    from ..model.sampling import restore_faces

    callback = progress.show_step

    def restore(item: WorkItem):
        if item.kind == "video":
            from ..faces.video import restore_video

            with progress.frames(item.input.name) as on_frames:
                result = restore_video(item.input, item.output, restorer, sampling, overwrite=may_replace(item),
                                       max_seconds=max_seconds, on_frames=on_frames)
            if result.report.unreadable:
                progress.write(f"warning: {item.input}: {result.report.unreadable} unreadable frame(s), each "
                               "replaced by the frame before")
            if not result.faces:
                progress.write(f"note: {item.input}: no face in any frame; its frames were copied through")
            return None, result.faces
        image = load_image_file(item.input)
        if restorer is not None:
            result = restorer.restore(image, sampling, callback_on_step_end=callback)
            return result.image, len(result.faces)
        return restore_faces(pipeline, image, sampling, callback_on_step_end=callback).images[0], 1

    return restore


def agree(state, problem: str | None) -> str | None:
    """The main process's verdict, given to every process (and a barrier): none may go on alone."""
    if state is None or state.num_processes == 1:
        return problem
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([problem], from_process=0)[0]


def joined_processes(cpu: bool):
    """accelerate's ``PartialState``: this process, joined with the others a launcher started. A
    ``WORLD_SIZE`` left in the environment without its launcher's other variables is one UsageError."""
    from accelerate import PartialState

    from ..checks import UsageError

    try:
        return PartialState(cpu=cpu)
    except (ValueError, RuntimeError, KeyError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UsageError(
            f"$WORLD_SIZE is {os.environ.get('WORLD_SIZE')}, but the processes cannot be joined ({reason}); start "
            "them with accelerate launch or torchrun, or unset WORLD_SIZE for one process"
        ) from None


def restore_command(args, sampling, resumable: bool) -> int:
    """``lpipdiff restore``: plan, check the outputs, load the model once, restore, summarise.

    ``resumable`` (``--archive``, ``--recursive``, or several processes) keeps a manifest in the output
    folder that a rerun resumes from, and shares the work between the processes of ``accelerate
    launch``; a plain run keeps none and runs in this process. Either holds the output folder's lock
    while it runs.
    """
    import torch

    if resumable:
        state = joined_processes(cpu=not torch.cuda.is_available() or str(args.device or "").startswith("cpu"))
        main, device = state.is_main_process, args.device or state.device
    else:
        state, main, device = None, True, args.device
    output_dir = Path(args.output)
    plan = plan_inputs(args.inputs, output_dir, args.recursive, skip_output_tree=resumable, kinds=("image", "video"))
    lock = OutputLock(output_dir)
    problem = prepare_output_folder(output_dir) if main else None
    if main and not problem and plan.items:
        problem = lock.acquire()
    if main and not problem and plan.items and resumable:
        try:
            Manifest(output_dir, 0).check()
        except ManifestError as error:
            problem = str(error)
    problem = agree(state, problem)  # the output folder exists and is ours before any process plans in it
    if problem or not plan.items:
        lock.release(remove=not resumable)
        if main:
            report(plan.problems + ([problem] if problem else []) + [NOTHING_TO_DO] * (not plan.items))
        return 2 if problem else 1
    try:
        return restore_plan(args, sampling, plan, output_dir, state, device)
    finally:
        lock.release(remove=not resumable)


def restore_plan(args, sampling, plan: InputPlan, output_dir: Path, state, device) -> int:
    """Restore what ``plan`` holds and is left to do (``state``: accelerate's, for a resumable run)."""
    from ..io.images import save_image
    from ..model.loading import ModelLoadError

    main = state is None or state.is_main_process
    manifest = Manifest(output_dir, state.process_index) if state is not None else None
    try:
        earlier = manifest.latest() if manifest else {}
    except ManifestError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    todo, replace, done, skipped = resume_plan(plan.items, earlier, args.overwrite)
    problems = plan.problems + skipped
    if main:
        for warning in manifest.warnings if manifest else []:
            print(f"warning: {warning}", file=sys.stderr)
        for warning in plan.warnings():
            print(f"warning: {warning}", file=sys.stderr)
        report(problems)
        if done:
            print(f"{done} of {len(plan.items)} inputs were restored by an earlier run; skipping them", file=sys.stderr)
    if not (todo or done):
        if main:
            report([NOTHING_TO_DO])
        return 1
    try:
        videos = any(item.kind == "video" for item in todo)
        pipeline, restorer = load_restorers(args, sampling, device=device, videos=videos) if todo else (None, None)
    except (ModelLoadError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    def may_replace(item: WorkItem) -> bool:
        return args.overwrite or item.output in replace

    def save(image, item):
        if item.kind == "image":  # a video was written in place as it was restored
            save_image(image, item.output, overwrite=may_replace(item))

    if state is None:
        progress = Progress(len(todo))
        stopped = None
        try:
            restore = restore_one(pipeline, restorer, sampling, progress, may_replace, args.max_seconds)
            failed = restore_items(todo, restore, save, progress)
        except NoSpaceError as error:
            failed, stopped = None, error
        finally:  # a Ctrl-C too: a bar left open takes over later messages of this process
            progress.finish()
        if stopped is not None:
            print(f"error: {stopped.strerror}", file=sys.stderr)
            return 1
        print(summary("restored", len(todo) - failed, len(plan.items), output_dir, plan))
        return 1 if failed or problems else 0

    if main:
        for folder, why in plan.skipped:
            manifest.write_skipped(folder, why)
    progress = JobProgress(manifest, len(todo), main)
    state.wait_for_everyone()  # every process planned from the same records before anyone writes
    failed, stopped = 0, None
    try:
        with state.split_between_processes(todo) as share:
            try:
                if share:
                    restore = restore_one(pipeline, restorer, sampling, progress, may_replace, args.max_seconds)
                    failed = restore_items(share, restore, save, progress, manifest)
            except (NoSpaceError, ManifestError) as error:
                stopped = error
                progress.write(f"error: {error.strerror if isinstance(error, NoSpaceError) else error}")
        with progress.following():
            state.wait_for_everyone()
    finally:
        progress.finish()
    if not main:
        return 1 if failed or stopped else 0
    try:
        merged = manifest.merge()
    except OSError as error:  # a full disk: the parts stay, and the next run reads them
        print(f"error: the manifest could not be merged ({error.strerror or error}); its parts are kept in "
              f"{manifest.parts} and the next run resumes from them", file=sys.stderr)
        return 1
    restored, errors = merged_summary(merged, plan.items)
    print(f"{summary('restored', restored, len(plan.items), output_dir, plan)} ({len(todo)} this run, "
          f"{state.num_processes} process(es)); manifest: {merged}")
    return 1 if errors or problems or stopped else 0
