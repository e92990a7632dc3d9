"""The ``lpipdiff`` command line: its commands and the restore flow."""

from .commands import main

__all__ = ["main"]
