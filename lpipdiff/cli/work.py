"""A unit of the restore commands' work: one input, its output and how it is made. Below both the
planner (:mod:`lpipdiff.cli.restore`) and the manifest (:mod:`lpipdiff.cli.archive`), which each
name it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WorkItem:
    """One unit of work: read ``input``, write ``output``; ``kind`` says how (``image``, ``video``)."""

    input: Path
    output: Path
    kind: str = "image"

    @property
    def key(self) -> str:
        """The input as the manifest names it."""
        return str(self.input.resolve())
