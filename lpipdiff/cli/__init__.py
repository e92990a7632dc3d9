"""The ``lpipdiff`` command line: commands, argument types, shared options and the restore flow."""

from .commands import main

__all__ = ["main"]
