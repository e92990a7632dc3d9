"""How a command ends on a mistake its user can fix: one ``error:`` line, never a traceback."""

from __future__ import annotations

import sys


def report_errors(handler, args) -> int:
    """Run a command; the errors a user caused and can fix become one ``error:`` line (status 1 when
    outputs were kept, 2 for a model that cannot be used), never a traceback."""
    from ..checks import UsageError
    from ..io.images import InvalidImageError
    from ..io.safe_files import OutputExistsError
    from ..model.loading import ModelLoadError

    try:
        return handler(args)
    except OutputExistsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (ModelLoadError, InvalidImageError, UsageError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
