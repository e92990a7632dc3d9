"""The demo's request values and messages: what the browser or an API client sends is checked
here, so a wrong value is a message the client receives (a ``gr.Error``), not Gradio's generic
"the upstream app raised an exception", and no message shows a path on the server."""

from __future__ import annotations

import math
import os
import re

# An absolute path with at least one folder (POSIX or Windows): only its last part is shown.
ABSOLUTE_PATH = re.compile(r"(?:[A-Za-z]:)?[/\\](?:[^\s'\"/\\]+[/\\])+([^\s'\"/\\,;)]+)")


def public_message(error, upload_path=None) -> str:
    """``error``'s text with the upload named by its file name and any other server path cut to its last part."""
    text = str(error)
    if upload_path:
        text = text.replace(str(upload_path), os.path.basename(str(upload_path)))
    return ABSOLUTE_PATH.sub(lambda match: match.group(1), text)


def number_payload(payload, name: str):
    """A number from an API payload (numbers, or text holding one); anything else is the client's
    mistake, said in one line."""
    import gradio as gr

    value = payload
    if isinstance(payload, str):
        try:
            value = float(payload.strip())
        except ValueError:
            value = None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise gr.Error(f"{name} must be a number, got {payload!r}", print_exception=False)
    return value


def guard_number_inputs(**components) -> None:
    """Check each numeric component's payload before Gradio's own preprocessing, which compares it
    with the bounds and fails with a bare ``TypeError`` on text or ``None``."""
    for name, component in components.items():
        original = component.preprocess

        def preprocess(payload, original=original, name=name):
            return original(number_payload(payload, name))

        component.preprocess = preprocess
