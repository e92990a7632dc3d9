"""The ``lpipdiff`` command line.

The commands (``commands.py``, with the restore flow in ``restore.py`` and ``archive.py``) stand
above the pieces every command shares, the training and evaluate commands too: argument types
(``argtypes.py``), the shared options and help layout (``options.py``) and how a command ends on a
user's mistake (``errors.py``). Importing one of those pieces loads no command.
"""


def main(argv=None) -> int:
    """The ``lpipdiff`` entry point (``pyproject.toml``, ``python -m lpipdiff``)."""
    from .commands import main as run_command

    return run_command(argv)
