"""How a command ends on a mistake its user can fix: one ``error:`` line, never a traceback."""

from __future__ import annotations

import errno
import sys


def report_errors(handler, args) -> int:
    """Run a command; the errors a user caused and can fix become one ``error:`` line (status 1 when
    outputs were kept, 2 for a model that cannot be used), never a traceback; so do a Ctrl-C (130) and
    a full disk (1), which every file written whole survives."""
    from ..checks import UsageError
    from ..io.images import InvalidImageError
    from ..io.safe_files import OutputExistsError
    from ..model.loading import ModelLoadError

    try:
        return handler(args)
    except KeyboardInterrupt:
        # Every file is written whole or not at all, and an archive's manifest parts are read by the next run.
        print("error: interrupted; the files written so far are kept", file=sys.stderr)
        return 130  # what a shell reports for a command stopped by Ctrl-C
    except OutputExistsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (ModelLoadError, InvalidImageError, UsageError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f" ({error.filename})" if error.filename else ""
        print(f"error: no space left on the disk{where}; free some and rerun the same command", file=sys.stderr)
        return 1
