"""Writing outputs without losing anyone's files.

Every command that writes goes through here. Without ``overwrite`` a file is created
exclusively (``O_CREAT | O_EXCL | O_NOFOLLOW``): the check and the creation are one system
call, so a file that appears at the path while a batch runs, or a symlink (even a dangling
one) sitting there, is kept and reported, never replaced or written through. With
``overwrite`` the new content goes to a temporary file beside the target that is then
renamed over it: a symlink at the path is replaced by the file, its target is left alone.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterable
from pathlib import Path

EXCLUSIVE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)


class OutputExistsError(FileExistsError):
    """An output path is taken by a file this run did not write; that file was kept."""


def kept_message(path: Path | str) -> str:
    return f"{path} exists and was kept; pass --overwrite to replace it"


def taken(path: Path | str) -> bool:
    """Whether anything sits at ``path``, a dangling symlink included (``Path.exists`` follows links)."""
    return os.path.lexists(path)


def refuse_existing(paths: Iterable[Path | str], overwrite: bool) -> None:
    """Fail before any work when an output is taken, naming every file that will be kept."""
    if overwrite:
        return
    existing = [str(p) for p in paths if taken(p)]
    if existing:
        raise OutputExistsError(
            f"{', '.join(existing[:5])}{' and more' if len(existing) > 5 else ''} "
            f"exist{'s' if len(existing) == 1 else ''} and {'was' if len(existing) == 1 else 'were'} kept; "
            "pass --overwrite to replace them, or write elsewhere"
        )


def _temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.partial")


def _write_new(path: Path, data: bytes) -> None:
    try:
        handle = os.open(path, EXCLUSIVE, 0o666)
    except FileExistsError:
        raise OutputExistsError(kept_message(path)) from None
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
    except BaseException:
        path.unlink(missing_ok=True)  # ours, created a moment ago, and incomplete
        raise


def write_bytes(path: str | os.PathLike, data: bytes, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path``; see the module docstring for what ``overwrite`` changes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not overwrite:
        _write_new(path, data)
        return path
    if path.is_dir() and not path.is_symlink():
        raise IsADirectoryError(f"{path} is a folder; it was kept")
    partial = _temporary_name(path)
    _write_new(partial, data)
    try:
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | os.PathLike, text: str, overwrite: bool = False) -> Path:
    return write_bytes(path, text.encode("utf-8"), overwrite)


def install_tree(staging: Path, output: Path, overwrite: bool = False) -> list[Path]:
    """Move every file of the folder ``staging`` to the same place under ``output``.

    All clashes are reported before any file moves, so a refused install leaves ``output`` as
    it was; each file is still placed exclusively (a hard link, which never replaces nor
    follows what sits at its path) in case one appears meanwhile. Returns the files placed.
    """
    files = sorted(p for p in staging.rglob("*") if p.is_file() and not p.is_symlink())
    targets = [output / p.relative_to(staging) for p in files]
    folders = {output} | {output / q for p in files for q in p.relative_to(staging).parents}
    for folder in sorted(folders):
        if taken(folder) and not folder.is_dir():
            raise OutputExistsError(f"{folder} exists and is not a folder; it was kept")
    refuse_existing(targets, overwrite)
    for source, target in zip(files, targets):
        place_file(source, target, overwrite)
    shutil.rmtree(staging, ignore_errors=True)
    return targets


def partial_name(path: str | os.PathLike) -> Path:
    """A hidden temporary name beside ``path`` for a file written over time (a video), so that an
    interrupted write never leaves a file at ``path`` that looks complete."""
    return _temporary_name(Path(path))


def place_file(source: Path, target: Path, overwrite: bool = False) -> Path:
    """Move the finished file ``source`` to ``target`` (same file system): exclusively (a hard link,
    which never replaces nor follows what sits at ``target``), or replacing it with ``overwrite``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if overwrite:
        if target.is_dir() and not target.is_symlink():
            raise IsADirectoryError(f"{target} is a folder; it was kept")
        os.replace(source, target)
        return target
    try:
        os.link(source, target)
    except FileExistsError:
        raise OutputExistsError(kept_message(target)) from None
    except OSError:  # no hard links here (some network and FAT file systems): copy exclusively
        try:
            handle = os.open(target, EXCLUSIVE, 0o666)
        except FileExistsError:
            raise OutputExistsError(kept_message(target)) from None
        try:
            with os.fdopen(handle, "wb") as copy, open(source, "rb") as original:
                shutil.copyfileobj(original, copy)
        except BaseException:
            target.unlink(missing_ok=True)  # ours, created a moment ago, and incomplete
            raise
    source.unlink()
    return target
